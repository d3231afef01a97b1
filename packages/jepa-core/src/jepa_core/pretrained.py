"""Shared machinery for loading released JEPA weights: file reading, format detection, prefix
stripping, qkv split / merge, shape inference, key checks and the converter registry.

The method-specific mappings live in ``jepa_image.pretrained`` (I-JEPA) and
``jepa_video.pretrained`` (V-JEPA, V-JEPA 2); they register converters under the
``jepa.converters`` entry-point group so that ``jepa convert`` (in this package, which cannot
import them) can dispatch to them.

Formats recognised (reference A.6, B.6, C.6; the transformers conversion scripts):

- ``official``: a ``torch.save`` dict with ``encoder``, ``predictor``, ``target_encoder`` (plus
  ``opt``, ``scaler``, ``epoch``, ...), each a DDP state dict: keys start with ``module.``
  (I-JEPA, ijepa:src/train.py ``save_checkpoint``) or ``module.backbone.`` (V-JEPA and V-JEPA 2,
  DDP over ``MultiMaskWrapper`` / ``MultiSeqWrapper``; jepa:app/vjepa/train.py,
  vjepa2:app/vjepa/train.py). Once the prefix is stripped the names equal ours.
- ``hf``: the Hugging Face transformers layout (``facebook/ijepa_*``, ``facebook/vjepa2-*``),
  a flat tensor dict (``model.safetensors`` or ``pytorch_model.bin``, optionally beside a
  ``config.json``) with separate query / key / value Linears.
- ``jepa-run``: the Trainer's ``step-N.pt`` / ``latest.pt`` (``model`` = the method's state dict,
  ``config`` = the run config; jepa_core.trainer ``save_checkpoint``).
- ``jepa-weights``: what ``jepa convert --to ours`` writes (``model`` + ``arch``), as a torch
  file or as safetensors (flat ``encoder.*`` / ``predictor.*`` / ``target_encoder.module.*``
  tensors, the architecture in the safetensors metadata).
- ``state_dict``: a bare encoder state dict (optionally ``module.`` prefixed).

Nothing here unpickles code: torch files are read with ``weights_only=True``
(:func:`jepa_core.checkpoint.load`) and safetensors files by a small reader of the documented
format (8-byte little-endian header length, JSON header, raw little-endian data), so reading
needs no extra package.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from jepa_core import checkpoint as ckpt
from jepa_core.checkpoint import CheckpointError

PARTS = ("encoder", "predictor", "target_encoder")


class PretrainedError(CheckpointError):
    """A checkpoint that cannot be loaded as asked; the message names the problem and the fix."""


@dataclass
class LoadInfo:
    """What a loader found: file format, method, the architecture it built and what it assumed."""

    path: str
    format: str
    method: str = ""
    which: str = ""
    arch: dict = field(default_factory=dict)
    parts: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def summary(self) -> str:
        arch = ", ".join(f"{k}={v}" for k, v in self.arch.items())
        lines = [f"{self.path}: {self.format} checkpoint of {self.method or '?'} (parts: {', '.join(self.parts)})"]
        if self.which:
            lines.append(f"  weights from: {self.which}")
        lines.append(f"  architecture: {arch}")
        lines += [f"  note: {n}" for n in self.notes]
        if self.ignored:
            lines.append(f"  ignored keys: {_short(self.ignored)}")
        return "\n".join(lines)


def _short(keys: Iterable[str], n: int = 8) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


# ---------------------------------------------------------------------------------------------
# safetensors without the package (https://github.com/huggingface/safetensors, format spec)

_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file; a clear error if it is cut short or malformed."""
    path = Path(path)
    data = path.read_bytes()
    where = f"{str(path)!r}"
    if len(data) < 8:
        raise PretrainedError(f"{where} is not a safetensors file: only {len(data)} bytes")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8 or n > 100_000_000:
        raise PretrainedError(
            f"{where} is truncated or not a safetensors file: header says {n} bytes, file has {len(data) - 8}"
        )
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PretrainedError(f"{where} is not a safetensors file: bad JSON header ({e})") from e
    if not isinstance(header, dict):
        raise PretrainedError(f"{where} is not a safetensors file: the header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    body = memoryview(data)[8 + n :]
    out = {}
    for name, spec in header.items():
        try:
            dtype = _ST_DTYPES[spec["dtype"]]
            shape = [int(s) for s in spec["shape"]]
            start, end = (int(o) for o in spec["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise PretrainedError(f"{where}: malformed safetensors entry {name!r}: {spec!r}") from e
        if end > len(body) or start > end:
            raise PretrainedError(
                f"{where} is truncated: tensor {name!r} needs bytes {start}..{end} of {len(body)}; download it again"
            )
        numel = math.prod(shape)
        if (end - start) != numel * torch.empty((), dtype=dtype).element_size():
            raise PretrainedError(f"{where}: tensor {name!r} has {end - start} bytes for shape {shape} {spec['dtype']}")
        t = torch.frombuffer(bytearray(body[start:end]), dtype=dtype) if numel else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(shape)
    return out, {str(k): str(v) for k, v in meta.items()}


def write_safetensors(tensors: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``tensors`` as safetensors (readable by the ``safetensors`` package), atomically."""
    import os

    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        if t.dtype not in _ST_NAMES:
            raise PretrainedError(f"cannot write tensor {name!r} of dtype {t.dtype} as safetensors")
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _ST_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------
# reading and format detection


@dataclass
class RawCheckpoint:
    """A file's contents before any mapping: ``obj`` (dict), ``meta`` (safetensors metadata or a
    Hugging Face ``config.json``) and ``container`` (torch / safetensors / hf-folder)."""

    path: str
    obj: dict
    meta: dict
    container: str


def _sniff(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04":
        return "torch"  # torch.save zip archive
    if head[:1] == b"\x80":
        return "torch"  # legacy torch pickle
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    return "unknown"


def read_checkpoint(path: str | Path) -> RawCheckpoint:
    """Read a checkpoint file or Hugging Face model folder without running pickled code.

    The format is decided from the file's contents, not its name. Errors name the file, what it
    looks like and what was expected.
    """
    path = Path(path)
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                raw = read_checkpoint(path / name)
                cfg = path / "config.json"
                if cfg.is_file():
                    try:
                        raw.meta = {**raw.meta, "hf_config": json.loads(cfg.read_text())}
                    except json.JSONDecodeError as e:
                        raise PretrainedError(f"{str(cfg)!r} is not valid JSON: {e}") from e
                raw.container = "hf-folder"
                raw.path = str(path)
                return raw
        raise PretrainedError(
            f"{str(path)!r} is a folder without model.safetensors or pytorch_model.bin; pass a checkpoint file "
            "(.pth.tar, .pt, .safetensors) or a Hugging Face model folder"
        )
    if not path.is_file():
        raise PretrainedError(f"checkpoint {str(path)!r} does not exist")
    kind = _sniff(path)
    if kind == "safetensors":
        tensors, meta = read_safetensors(path)
        return RawCheckpoint(str(path), tensors, meta, "safetensors")
    if kind == "unknown":
        with open(path, "rb") as f:
            head = f.read(8)
        raise PretrainedError(
            f"{str(path)!r} is not a checkpoint: it is neither a torch file (.pt / .pth.tar, a zip archive) "
            f"nor safetensors (first bytes {head!r}); expected an official JEPA checkpoint, a Hugging Face "
            "model file or a jepa checkpoint"
        )
    try:  # never runs pickled code; the same messages as jepa_core.checkpoint.load
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(
            f"{str(path)!r} is not a readable checkpoint (truncated, corrupt or not a torch file): "
            f"{type(e).__name__}: {first}"
        ) from e
    if not isinstance(obj, dict):
        raise PretrainedError(f"{str(path)!r} holds a {type(obj).__name__}, not a checkpoint dict")
    return RawCheckpoint(str(path), obj, {}, "torch")


def _is_sd(x: Any) -> bool:
    return isinstance(x, Mapping) and len(x) > 0 and all(isinstance(v, torch.Tensor) for v in x.values())


def detect_format(raw: RawCheckpoint) -> str:
    """``official``, ``hf``, ``jepa-run``, ``jepa-weights`` or ``state_dict`` (see the module doc)."""
    obj, meta = raw.obj, raw.meta
    fmt = obj.get("format") if isinstance(obj.get("format"), str) else meta.get("format")
    if fmt in ("jepa-run", "jepa-weights"):
        return fmt
    if "model" in obj and "config" in obj and isinstance(obj["model"], Mapping):
        return "jepa-run"  # a Trainer checkpoint written before the format field
    if any(isinstance(obj.get(p), Mapping) for p in PARTS):
        return "official"
    if _is_sd(obj):
        keys = list(obj)
        if any(re.match(r"^(ijepa\.|vjepa2\.)?(encoder\.layer\.|layers\.\d+\.|embeddings\.patch_embeddings\.)", k)
               for k in keys):
            return "hf"
        if any(k.startswith(("encoder.", "target_encoder.", "predictor.")) for k in keys):
            return "jepa-weights"
        return "state_dict"
    top = ", ".join(f"{k}: {type(v).__name__}" for k, v in list(obj.items())[:12])
    raise PretrainedError(
        f"{raw.path!r} holds no JEPA weights: expected the entries encoder / predictor / target_encoder "
        f"(official), model (jepa), or a flat tensor dict (Hugging Face / state dict); found {{{top}}}"
    )


def strip_prefixes(sd: Mapping[str, torch.Tensor], prefixes: Iterable[str] = ("module.", "backbone.")) -> dict:
    """Remove leading ``module.`` / ``backbone.`` (in any order, repeatedly) from every key, as the
    official loaders do (vjepa2:src/hub/backbones.py ``_clean_backbone_key``; ijepa:src/helper.py)."""
    prefixes = tuple(prefixes)
    out = {}
    for k, v in sd.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if k.startswith(p):
                    k, changed = k[len(p) :], True
        out[k] = v
    return out


def add_prefix(sd: Mapping[str, torch.Tensor], prefix: str) -> dict:
    return {prefix + k: v for k, v in sd.items()}


def split_qkv(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows [0:D] = Q, [D:2D] = K, [2D:3D] = V of a fused ``qkv`` weight [3D, D] or bias [3D]
    (ijepa:src/models/vision_transformer.py ``Attention``; the HF converters split it this way)."""
    if t.shape[0] % 3:
        raise PretrainedError(f"a fused qkv tensor needs 3*D rows, got shape {tuple(t.shape)}")
    return tuple(t.chunk(3, dim=0))  # type: ignore[return-value]


def merge_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.cat([q, k, v], dim=0)


def rename(sd: Mapping[str, torch.Tensor], rules: list[tuple[str, str]]) -> tuple[dict, list[str]]:
    """Apply the first matching ``(regex, replacement)`` to each key; returns (renamed, unmatched)."""
    out, unmatched = {}, []
    for k, v in sd.items():
        for pat, rep in rules:
            if re.fullmatch(pat, k):
                out[re.sub(pat, rep, k)] = v
                break
        else:
            unmatched.append(k)
    return out, unmatched


def fuse_qkv(sd: Mapping[str, torch.Tensor], pattern: str, fmt: str) -> dict:
    """Merge ``{prefix}{q,k,v}{suffix}`` keys into one ``qkv`` key. ``pattern`` is a regex with
    groups (prefix, which, suffix) where ``which`` is the q/k/v name; ``fmt`` formats the fused key
    from (prefix, suffix), e.g. ``"{0}attn.qkv{1}"``."""
    out: dict = {}
    groups: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    names = {"query": 0, "key": 1, "value": 2, "q_proj": 0, "k_proj": 1, "v_proj": 2}
    for k, v in sd.items():
        m = re.fullmatch(pattern, k)
        if m:
            groups.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = v
        else:
            out[k] = v
    for (pre, suf), d in groups.items():
        got = sorted(d, key=lambda n: names[n])
        if len(got) != 3:
            raise PretrainedError(f"{pre}...{suf}: expected query, key and value, found only {', '.join(got)}")
        out[fmt.format(pre, suf)] = merge_qkv(*(d[n] for n in got))
    return out


# ---------------------------------------------------------------------------------------------
# shape inference


# Official widths -> heads (ijepa / jepa / vjepa2 src/models/vision_transformer.py; reference A.1,
# B.1, C.1). 1408 is ViT-g: 16 heads in I-JEPA and V-JEPA, 22 in V-JEPA 2 (vit_giant_xformers).
OFFICIAL_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16, 1664: 16}
OFFICIAL_MLP_RATIOS = {1408: 48 / 11}


def block_count(sd: Mapping[str, Any], prefix: str) -> int:
    """Number of ``{prefix}{i}.`` blocks; an error if the indices are not 0..n-1."""
    idx = {int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"(\d+)(?:\.|$)", k))}
    if idx and idx != set(range(len(idx))):
        missing = sorted(set(range(max(idx) + 1)) - idx)
        raise PretrainedError(f"blocks {prefix}{missing} are missing (found indices {sorted(idx)})")
    return len(idx)


def heads_for(width: int, override: int | None, what: str, table: Mapping[int, int] = OFFICIAL_HEADS) -> int:
    """The head count of a ``width``-wide ViT: ``override`` if given, else the official size table.

    Checkpoints do not store head counts, so a non-official width needs ``override``.
    """
    if override:
        if width % override:
            raise PretrainedError(f"{what}: width {width} is not divisible by {override} heads")
        return int(override)
    if width in table:
        return table[width]
    raise PretrainedError(
        f"{what}: cannot tell the number of attention heads from the weights (width {width} is not an "
        f"official ViT width: {', '.join(map(str, sorted(table)))}); pass the head count explicitly "
        "(num_heads=... / pred_num_heads=...)"
    )


def mlp_ratio_for(width: int, hidden: int) -> float:
    """A ratio with ``int(width * ratio) == hidden`` (what ``Block`` computes); the official 48/11
    for ViT-g."""
    r = OFFICIAL_MLP_RATIOS.get(width)
    if r is not None and int(width * r) == hidden:
        return r
    r = hidden / width
    return r if int(width * r) == hidden else (hidden + 0.5) / width


def shape_of(sd: Mapping[str, torch.Tensor], key: str, what: str) -> tuple[int, ...]:
    if key not in sd:
        near = [k for k in sd if k.split(".")[-1] == key.split(".")[-1]][:5]
        raise PretrainedError(
            f"{what}: no {key!r} in the weights (found {len(sd)} keys, e.g. {_short(near or sd, 5)})"
        )
    return tuple(sd[key].shape)


def check_state_dict(
    expected: Mapping[str, tuple[int, ...]], got: Mapping[str, torch.Tensor], what: str, fix: str = ""
) -> None:
    """Raise :class:`PretrainedError` naming missing, unexpected and mis-shaped keys."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    wrong = [f"{k} {tuple(got[k].shape)} (expected {tuple(expected[k])})" for k in expected
             if k in got and tuple(got[k].shape) != tuple(expected[k])]
    if missing or unexpected or wrong:
        msg = [f"{what}: the weights do not match the architecture built from them"]
        if missing:
            msg.append(f"missing keys: {_short(missing)}")
        if unexpected:
            msg.append(f"unexpected keys: {_short(unexpected)}")
        if wrong:
            msg.append(f"shape mismatches: {_short(wrong, 5)}")
        if fix:
            msg.append(fix)
        raise PretrainedError("; ".join(msg))


def expected_shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def load_into(module: torch.nn.Module, sd: Mapping[str, torch.Tensor], what: str) -> torch.nn.Module:
    """Strictly load ``sd`` into ``module`` (built on any device, also ``meta``) by assignment,
    keeping each parameter's ``requires_grad``; errors name the offending keys."""
    check_state_dict(expected_shapes(module), sd, what)
    grads = {n: p.requires_grad for n, p in module.named_parameters()}
    module.load_state_dict(dict(sd), strict=True, assign=True)
    for n, p in module.named_parameters():
        p.requires_grad_(grads[n])
    return module


# ---------------------------------------------------------------------------------------------
# position tables at other sizes


def resize_table_2d(table: torch.Tensor, old: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    """Bicubic resampling of a ``[1, H*W, D]`` table (row-major) to another grid; the fallback
    for tables that are not the analytic sin-cos (which is recomputed exactly instead)."""
    D = table.shape[-1]
    t = table.reshape(1, old[0], old[1], D).permute(0, 3, 1, 2).float()
    t = F.interpolate(t, size=new, mode="bicubic", align_corners=False)
    return t.permute(0, 2, 3, 1).reshape(1, new[0] * new[1], D).to(table.dtype)


def resize_table_3d(table: torch.Tensor, old: tuple[int, int, int], new: tuple[int, int, int]) -> torch.Tensor:
    """Trilinear resampling of a ``[1, T*H*W, D]`` table, as V-JEPA's ``interpolate_pos_encoding``
    (jepa:src/models/vision_transformer.py)."""
    D = table.shape[-1]
    t = table.reshape(1, *old, D).permute(0, 4, 1, 2, 3).float()
    t = F.interpolate(t, size=new, mode="trilinear", align_corners=False)
    return t.permute(0, 2, 3, 4, 1).reshape(1, new[0] * new[1] * new[2], D).to(table.dtype)


def table_matches(table: torch.Tensor, reference: torch.Tensor, atol: float = 1e-5) -> bool:
    return tuple(table.shape[-2:]) == tuple(reference.shape[-2:]) and bool(
        (table.reshape(reference.shape).double() - reference.double()).abs().max() <= atol
    )


# ---------------------------------------------------------------------------------------------
# parts, method guessing, writing


def jepa_parts(model_sd: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Split a ``JEPAMethod.state_dict()`` (``encoder.*``, ``predictor.*``,
    ``target_encoder.module.*``) into the three parts."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in model_sd.items():
        for p, pre in (("target_encoder", "target_encoder.module."), ("target_encoder", "target_encoder."),
                       ("encoder", "encoder."), ("predictor", "predictor.")):
            if k.startswith(pre):
                parts.setdefault(p, {})[k[len(pre):]] = v
                break
    return parts


def official_parts(obj: Mapping[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
    return {p: strip_prefixes(obj[p]) for p in PARTS if isinstance(obj.get(p), Mapping) and obj[p]}


def canonical_parts(
    raw: RawCheckpoint, fmt: str, hf_mapper: Callable[[dict, dict], tuple[dict, list[str]]] | None = None
) -> tuple[dict[str, dict[str, torch.Tensor]], list[str], dict, dict]:
    """``(parts, ignored keys, stored arch, run config)`` of a file, in our (= the official,
    prefix-free) parameter names. ``hf_mapper(tensors, hf_config)`` maps the Hugging Face layout."""
    obj, meta = raw.obj, raw.meta
    if fmt == "official":
        return official_parts(obj), [], {}, {}
    if fmt == "jepa-run":
        return jepa_parts(obj["model"]), [], {}, dict(obj.get("config") or {})
    if fmt == "jepa-weights":
        if isinstance(obj.get("model"), Mapping):
            return jepa_parts(obj["model"]), [], dict(obj.get("arch") or {}), {}
        # flat: our safetensors export (arch in the metadata) or a bare JEPAMethod.state_dict()
        return jepa_parts(obj), [], json.loads(meta.get("arch", "{}")), {}
    if fmt == "hf":
        if hf_mapper is None:
            raise PretrainedError(f"{raw.path!r} is in the Hugging Face layout, which this method does not have")
        parts, ignored = hf_mapper(obj, meta.get("hf_config") or {})
        return parts, ignored, {}, {}
    return {"encoder": strip_prefixes(obj)}, [], {}, {}


def cast_parts(parts: Mapping[str, Mapping[str, torch.Tensor]], dtype: torch.dtype | None) -> dict:
    if dtype is None:
        return {p: dict(sd) for p, sd in parts.items()}
    return {p: {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()} for p, sd in parts.items()}


def pick_encoder(parts: Mapping[str, Mapping[str, torch.Tensor]], which: str, notes: list[str]) -> tuple[str, dict]:
    """The encoder weights asked for; falls back to the other encoder (with a note) when the file
    holds only one, as the official evals fall back from ``target_encoder`` to ``encoder``."""
    if which not in ("target_encoder", "encoder"):
        raise PretrainedError(f"which must be 'target_encoder' or 'encoder', got {which!r}")
    if parts.get(which):
        return which, dict(parts[which])
    other = "encoder" if which == "target_encoder" else "target_encoder"
    if parts.get(other):
        notes.append(f"no {which} in the file; using {other}")
        return other, dict(parts[other])
    raise PretrainedError("the file holds no encoder weights (neither encoder nor target_encoder)")


def guess_method(parts: Mapping[str, Mapping[str, torch.Tensor]]) -> str:
    """``ijepa``, ``vjepa`` or ``vjepa2`` from the shapes (patch embedding, position table)."""
    enc = parts.get("encoder") or parts.get("target_encoder") or {}
    w = enc.get("patch_embed.proj.weight")
    if w is None:
        raise PretrainedError(
            "no ViT encoder in the weights (no patch_embed.proj.weight after removing module./backbone. "
            f"prefixes; found e.g. {_short(enc, 5)}): this is not an I-JEPA / V-JEPA / V-JEPA 2 checkpoint"
        )
    if w.ndim == 4:
        return "ijepa"
    if w.ndim == 5:
        return "vjepa" if "pos_embed" in enc else "vjepa2"
    raise PretrainedError(f"patch_embed.proj.weight has shape {tuple(w.shape)}: neither Conv2d nor Conv3d")


def write_parts(
    parts: Mapping[str, Mapping[str, torch.Tensor]],
    arch: Mapping[str, Any],
    method: str,
    path: str | Path,
    to: str,
    official_prefix: str,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write canonical parts as ``ours`` (torch), ``safetensors`` or ``official`` (DDP prefixes)."""
    path = Path(path)
    if to == "ours":
        model = {}
        for p, sd in parts.items():
            pre = "target_encoder.module." if p == "target_encoder" else f"{p}."
            model.update(add_prefix(sd, pre))
        obj = {"format": "jepa-weights", "version": 1, "method": method, "arch": dict(arch), "model": model}
        return ckpt.atomic_save(obj, path)
    if to == "safetensors":
        flat = {}
        for p, sd in parts.items():
            pre = "target_encoder.module." if p == "target_encoder" else f"{p}."
            flat.update(add_prefix(sd, pre))
        meta = {"format": "jepa-weights", "version": "1", "method": method, "arch": json.dumps(dict(arch))}
        return write_safetensors(flat, path, meta)
    if to == "official":
        obj = {p: add_prefix(sd, official_prefix) for p, sd in parts.items()}
        obj.update(extra or {})
        return ckpt.atomic_save(obj, path)
    raise PretrainedError(f"unknown target format {to!r}; valid: ours, safetensors, official, hf")


# ---------------------------------------------------------------------------------------------
# converter registry (entry points: jepa.converters)

_LOCAL_CONVERTERS: dict[str, Callable] = {}


def register_converter(method: str, fn: Callable) -> None:
    """``fn(raw: RawCheckpoint, out: Path, to: str, **hints) -> LoadInfo``."""
    _LOCAL_CONVERTERS[method] = fn


def converters() -> list[str]:
    eps = {ep.name for ep in metadata.entry_points(group="jepa.converters")}
    return sorted(eps | set(_LOCAL_CONVERTERS))


def get_converter(method: str) -> Callable:
    if method in _LOCAL_CONVERTERS:
        return _LOCAL_CONVERTERS[method]
    eps = {ep.name: ep for ep in metadata.entry_points(group="jepa.converters")}
    if method not in eps:
        pkg = "jepa-image" if method == "ijepa" else "jepa-video"
        raise PretrainedError(
            f"no converter for {method!r} is installed (installed: {', '.join(converters()) or 'none'}); "
            f"pip install {pkg}"
        )
    return eps[method].load()


def raw_method(raw: RawCheckpoint, fmt: str) -> str:
    """The method a file is for: recorded in jepa files, else guessed from the shapes."""
    if fmt in ("jepa-run", "jepa-weights"):
        m = raw.obj.get("method") or raw.meta.get("method") or (raw.obj.get("config") or {}).get("method")
        if m:
            return str(m)
    if fmt == "hf":
        cfg = raw.meta.get("hf_config") or {}
        mt = cfg.get("model_type")
        if mt in ("ijepa", "vjepa2"):
            return mt
        return "vjepa2" if any(".embeddings.patch_embeddings.proj." in k or k.startswith("predictor.")
                               for k in raw.obj) else "ijepa"
    if fmt == "official":
        return guess_method(official_parts(raw.obj))
    if fmt == "jepa-weights":
        return guess_method(jepa_parts(raw.obj))
    return guess_method({"encoder": strip_prefixes(raw.obj)})


def convert(src: str | Path, dst: str | Path, to: str = "ours", method: str | None = None, **hints) -> LoadInfo:
    """Convert a checkpoint between formats (what ``jepa convert`` runs)."""
    raw = read_checkpoint(src)
    fmt = detect_format(raw)
    method = method or raw_method(raw, fmt)
    return get_converter(method)(raw, Path(dst), to, method=method, **hints)
