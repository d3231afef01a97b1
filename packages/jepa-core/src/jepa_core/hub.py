"""Released weights by name: ``from_pretrained("ijepa_vith14_in1k")``,
``from_pretrained("facebook/vjepa2-vitl-fpc64-256")`` or ``from_pretrained("hf://facebook/ijepa_vith14_1k")``.

:func:`resolve` turns what a user passes into a local file or folder that
:func:`jepa_core.pretrained.read_checkpoint` reads:

1. an existing path: itself;
2. a known name (:func:`list_pretrained`; official file from Meta's URL) or a Hugging Face id
   (``org/repo``, or ``hf://org/repo``; a known name's Hugging Face id works too): the cached
   copy, downloaded on first use;
3. anything else: an error saying it is not a path, not a known name, and (offline) not cached.

Cache: ``cache_dir``, else ``$JEPA_CACHE``, else ``~/.cache/jepa``. An official file lives at
``<cache>/<name>/<file name>`` (written atomically, by ``torch.hub.download_url_to_file``); a
Hugging Face model is a snapshot (``config.json``, ``*.safetensors``) under ``<cache>/hf``
through ``huggingface_hub`` (the ``hub`` extra of jepa-core). Offline (``offline=True``,
``JEPA_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``) only the cache is read.

The table holds the weights the official repositories release (ijepa:README.md,
jepa:README.md, vjepa2:README.md; Hugging Face ids from transformers' conversion scripts
models/ijepa/convert_ijepa_to_hf.py and models/vjepa2/convert_vjepa2_to_hf.py). They are
Meta's files under Meta's licences (CC-BY-NC 4.0 for I-JEPA and V-JEPA, see each repository):
this module only fetches what the user asks for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PretrainedWeights", "HubError", "list_pretrained", "get_weights", "resolve", "cache_dir"]


class HubError(FileNotFoundError):
    """A name that is neither a file, a known name nor a reachable Hugging Face id."""


@dataclass(frozen=True)
class PretrainedWeights:
    name: str
    method: str  # the converter that reads it (jepa_core.pretrained converters: ijepa, vjepa, vjepa2)
    description: str
    url: str | None = None  # the official file
    hf_id: str | None = None  # the Hugging Face transformers model

    @property
    def filename(self) -> str | None:
        return self.url.rsplit("/", 1)[-1] if self.url else None


_FB = "https://dl.fbaipublicfiles.com"
_TABLE = (
    PretrainedWeights("ijepa_vith14_in1k", "ijepa", "I-JEPA ViT-H/14, 224 px, ImageNet-1k, 300 epochs",
                      f"{_FB}/ijepa/IN1K-vit.h.14-300e.pth.tar", "facebook/ijepa_vith14_1k"),
    PretrainedWeights("ijepa_vith16_448_in1k", "ijepa", "I-JEPA ViT-H/16, 448 px, ImageNet-1k, 300 epochs",
                      f"{_FB}/ijepa/IN1K-vit.h.16-448px-300e.pth.tar", "facebook/ijepa_vith16_1k"),
    PretrainedWeights("ijepa_vith14_in22k", "ijepa", "I-JEPA ViT-H/14, 224 px, ImageNet-22k",
                      f"{_FB}/ijepa/IN22K-vit.h.14-900e.pth.tar", "facebook/ijepa_vith14_22k"),
    PretrainedWeights("ijepa_vitg16_in22k", "ijepa", "I-JEPA ViT-g/16, 224 px, ImageNet-22k",
                      f"{_FB}/ijepa/IN22K-vit.g.16-600e.pth.tar", "facebook/ijepa_vitg16_22k"),
    PretrainedWeights("vjepa_vitl16", "vjepa", "V-JEPA ViT-L/16, 224 px, VideoMix2M",
                      f"{_FB}/jepa/vitl16/vitl16.pth.tar"),
    PretrainedWeights("vjepa_vith16", "vjepa", "V-JEPA ViT-H/16, 224 px, VideoMix2M",
                      f"{_FB}/jepa/vith16/vith16.pth.tar"),
    PretrainedWeights("vjepa_vith16_384", "vjepa", "V-JEPA ViT-H/16, 384 px, VideoMix2M",
                      f"{_FB}/jepa/vith16-384/vith16-384.pth.tar"),
    PretrainedWeights("vjepa2_vitl16", "vjepa2", "V-JEPA 2 ViT-L/16, 256 px",
                      f"{_FB}/vjepa2/vitl.pt", "facebook/vjepa2-vitl-fpc64-256"),
    PretrainedWeights("vjepa2_vith16", "vjepa2", "V-JEPA 2 ViT-H/16, 256 px",
                      f"{_FB}/vjepa2/vith.pt", "facebook/vjepa2-vith-fpc64-256"),
    PretrainedWeights("vjepa2_vitg16", "vjepa2", "V-JEPA 2 ViT-g/16, 256 px",
                      f"{_FB}/vjepa2/vitg.pt", "facebook/vjepa2-vitg-fpc64-256"),
    PretrainedWeights("vjepa2_vitg16_384", "vjepa2", "V-JEPA 2 ViT-g/16, 384 px",
                      f"{_FB}/vjepa2/vitg-384.pt", "facebook/vjepa2-vitg-fpc64-384"),
)
_BY_NAME = {w.name: w for w in _TABLE}
_BY_HF = {w.hf_id: w for w in _TABLE if w.hf_id}


def list_pretrained(method: str | None = None) -> list[str]:
    """The known names (of ``method`` only, if given), sorted."""
    return sorted(w.name for w in _TABLE if method is None or w.method == method)


def get_weights(name: str) -> PretrainedWeights:
    """The table entry of a known name or of its Hugging Face id."""
    w = _BY_NAME.get(name) or _BY_HF.get(name.removeprefix("hf://"))
    if w is None:
        raise HubError(f"{name!r} is not a known weights name; known: {', '.join(list_pretrained())}")
    return w


def cache_dir(path: str | Path | None = None) -> Path:
    """``path``, else ``$JEPA_CACHE``, else ``~/.cache/jepa``."""
    return Path(path or os.environ.get("JEPA_CACHE") or Path.home() / ".cache" / "jepa").expanduser()


def _offline(offline: bool | None) -> bool:
    if offline is not None:
        return offline
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes") for k in ("JEPA_OFFLINE", "HF_HUB_OFFLINE"))


def _looks_like_hf_id(s: str) -> bool:
    parts = s.split("/")
    return len(parts) == 2 and all(parts) and not s.startswith((".", "~")) and not any(c in s for c in " \\:")


def _hf_snapshot(repo_id: str, cache: Path, offline: bool) -> Path:
    from jepa_core.extras import require

    snapshot_download = require("huggingface_hub", extra="hub",
                                purpose=f"loading the Hugging Face model {repo_id!r}").snapshot_download
    try:
        return Path(snapshot_download(repo_id, cache_dir=str(cache / "hf"), local_files_only=offline,
                                      allow_patterns=["config.json", "*.safetensors", "pytorch_model.bin"]))
    except Exception as e:  # huggingface_hub's errors: not found, offline and not cached, no network
        why = " ".join(str(e).split())[:300]
        where = "is not in the cache and downloads are off (offline)" if offline else "could not be fetched"
        raise HubError(f"{repo_id!r} does not exist as a local path, is not a known weights name, and as a "
                       f"Hugging Face id it {where} (cache {cache / 'hf'}): {why}") from e


def resolve(name_or_path: str | Path, cache: str | Path | None = None, *, offline: bool | None = None,
            prefer: str = "official") -> Path:
    """The local file or folder for ``name_or_path`` (see the module doc), downloading it if
    needed. ``prefer``: for a known name with both, ``official`` (Meta's file: encoder,
    predictor and target encoder) or ``hf`` (the transformers model: one encoder)."""
    s = str(name_or_path)
    path = Path(s).expanduser()
    if not s.startswith("hf://") and path.exists():
        return path
    root, off = cache_dir(cache), _offline(offline)
    w = _BY_NAME.get(s)
    if w is not None and w.url and not (prefer == "hf" and w.hf_id):
        target = root / w.name / str(w.filename)
        if target.is_file():
            return target
        if off:
            raise HubError(f"{s!r} is a known name but is not in the cache ({target}) and downloads are off "
                           "(offline); put the file there, or unset JEPA_OFFLINE / HF_HUB_OFFLINE")
        import torch.hub

        target.parent.mkdir(parents=True, exist_ok=True)
        try:  # writes a temporary file and renames it: no partial file is left at `target`
            torch.hub.download_url_to_file(w.url, str(target), progress=True)
        except Exception as e:
            raise HubError(f"could not download {s!r} from {w.url} to {target}: {e}") from e
        return target
    repo = w.hf_id if w is not None else s.removeprefix("hf://").strip("/")
    if repo and (s.startswith("hf://") or _looks_like_hf_id(repo)):
        return _hf_snapshot(repo, root, off)
    raise HubError(
        f"{s!r} does not exist (looked at {path.resolve()}), is not a known weights name "
        f"({', '.join(list_pretrained())}) and not a Hugging Face id (org/name or hf://org/name)"
    )
