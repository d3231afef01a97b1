"""Shared machinery for loading released JEPA weights: file reading, format detection, prefix
stripping, qkv split / merge, shape inference, key checks and the converter registry.

This package knows no method. Each method package describes its checkpoints with a
:class:`Converter` (a name, a ``match`` function that says whether a file is its own, and the
``convert`` / ``load`` functions) and registers it under the ``jepa.converters`` entry-point
group, or in-process with :func:`register_converter`. ``jepa convert`` and
:func:`find_converter` read a file, describe it generically (:class:`CheckpointView`) and let
the match functions decide which converter it belongs to; a name given by the user
(``--method``) or recorded in the file wins.

Formats recognised (the layouts the official training scripts save and the Hugging Face
transformers conversion scripts write):

- ``official``: a ``torch.save`` dict with ``encoder``, ``predictor``, ``target_encoder`` (plus
  ``opt``, ``scaler``, ``epoch``, ...), each a DDP state dict whose keys start with ``module.``
  or ``module.backbone.`` (DDP over a wrapper); once the prefix is stripped the names equal ours.
- ``hf``: a Hugging Face transformers layout, a flat tensor dict (``model.safetensors`` or
  ``pytorch_model.bin``, optionally beside a ``config.json``) in transformers' ViT naming
  (``encoder.layer.{i}.``, ``layers.{i}.``, ``embeddings.patch_embeddings.``, optionally under
  the model's base prefix); the converters map it.
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
import logging
import math
import re
import struct
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from jepa_core import checkpoint as ckpt
from jepa_core.checkpoint import CheckpointError

log = logging.getLogger(__name__)

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

    ``path`` may also be a released weights name (:func:`jepa_core.hub.list_pretrained`) or a
    Hugging Face id (``org/name``, ``hf://org/name``): :func:`jepa_core.hub.resolve` downloads
    and caches it.

    The format is decided from the file's contents, not its name. Errors name the file, what it
    looks like and what was expected.
    """
    if str(path).startswith("hf://") or not Path(path).expanduser().exists():
        from jepa_core.hub import HubError, resolve

        try:  # a known name (jepa_core.hub.list_pretrained) or a Hugging Face id: the cached download
            path = resolve(path)
        except HubError as e:
            raise PretrainedError(str(e)) from e
    path = Path(path).expanduser()
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


# transformers' ViT-family module names, optionally under the model's base prefix
# (``<model_type>.``); our own names use ``blocks.{i}.`` and ``patch_embed.``.
_HF_NAMES = re.compile(r"^(?:[A-Za-z0-9_]+\.)?(?:encoder\.layer\.\d+\.|layers\.\d+\.|embeddings\.patch_embeddings\.)")


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
        if any(_HF_NAMES.match(k) for k in keys) or isinstance(meta.get("hf_config"), Mapping):
            return "hf"
        if any(k.startswith(("encoder.", "target_encoder.", "predictor.")) for k in keys):
            return "jepa-weights"
        return "state_dict"
    top = ", ".join(f"{k}: {type(v).__name__}" for k, v in list(obj.items())[:12])
    raise PretrainedError(
        f"{raw.path!r} holds no JEPA weights: expected the entries encoder / predictor / target_encoder "
        f"(official), model (jepa), or a flat tensor dict (Hugging Face / state dict); found {{{top}}}. A "
        "method's own release layout (e.g. D-JEPA's model / model_ema) is read by its converter: pass "
        "--method NAME (`jepa list` shows the converters)"
    )


def strip_prefixes(sd: Mapping[str, torch.Tensor], prefixes: Iterable[str] = ("module.", "backbone.")) -> dict:
    """Remove leading ``module.`` / ``backbone.`` (in any order, repeatedly) from every key, as the
    official loaders do (their ``load_checkpoint`` helpers and the hub's ``_clean_backbone_key``)."""
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
    (the official ``Attention`` modules; the transformers conversion scripts split it this way)."""
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


# Official widths -> heads (the size tables of the upstream src/models/vision_transformer.py
# files). 1408 is ViT-g with 16 heads; a method whose ViT-g differs passes its own table.
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


def encoder_weights(parts: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The ``encoder`` weights of ``parts``, else the ``target_encoder`` ones (same shapes);
    an error if the file holds neither."""
    enc = parts.get("encoder") or parts.get("target_encoder")
    if not enc:
        raise PretrainedError("no encoder weights in the file")
    return dict(enc)


def patch_embedding_rank(parts: Mapping[str, Mapping[str, torch.Tensor]]) -> int:
    """The rank of ``patch_embed.proj.weight`` (4: a Conv2d patch embedding, 5: a Conv3d tubelet
    one), 0 if the encoder has none. What converters' match functions start from."""
    enc = parts.get("encoder") or parts.get("target_encoder") or {}
    w = enc.get("patch_embed.proj.weight")
    return int(w.ndim) if isinstance(w, torch.Tensor) else 0


@dataclass(frozen=True)
class ViTShape:
    """What the weights of a ViT encoder say about it (:func:`infer_vit`)."""

    embed_dim: int
    in_chans: int
    kernel: tuple[int, ...]  # patch embedding kernel: (patch, patch) or (tubelet, patch, patch)
    depth: int
    num_heads: int
    mlp_ratio: float

    @property
    def patch_size(self) -> int:
        return self.kernel[-1]


def infer_vit(
    enc: Mapping[str, torch.Tensor],
    rank: int,
    what: str,
    num_heads: int | None = None,
    heads_table: Mapping[int, int] = OFFICIAL_HEADS,
    wrong_rank: Mapping[int, str] | None = None,
) -> ViTShape:
    """The shared opening of every architecture inference: the patch embedding
    (``patch_embed.proj.weight`` of ``rank`` 4 = Conv2d or 5 = Conv3d, square in space), the
    number of ``blocks.{i}``, the heads (``num_heads`` or the official width table) and the MLP
    ratio (from ``blocks.0.mlp.fc1``). ``wrong_rank`` maps another rank to the message that says
    which loader to use instead (``{shape}`` in it is replaced by the weight's shape)."""
    w = shape_of(enc, "patch_embed.proj.weight", what)
    if len(w) != rank and wrong_rank and len(w) in wrong_rank:
        raise PretrainedError(wrong_rank[len(w)].replace("{shape}", str(list(w))))
    kind = "a square Conv2d patch embedding" if rank == 4 else "a Conv3d tubelet embedding"
    if len(w) != rank or w[-1] != w[-2]:
        raise PretrainedError(f"patch_embed.proj.weight {list(w)} is not {kind}")
    dim, chans = w[0], w[1]
    depth = block_count(enc, "blocks.")
    if depth == 0:
        raise PretrainedError("the encoder has no blocks.{i}.* weights")
    hidden = shape_of(enc, "blocks.0.mlp.fc1.weight", what)[0]
    heads = heads_for(dim, num_heads, what, heads_table)
    return ViTShape(dim, chans, tuple(w[2:]), depth, heads, mlp_ratio_for(dim, hidden))


def infer_predictor(
    pred: Mapping[str, torch.Tensor], what: str, num_heads: int
) -> tuple[int, int, int, float]:
    """``(width, depth, heads, mlp_ratio)`` of a predictor with ``predictor_embed`` and
    ``predictor_blocks.{i}``; ``num_heads`` is the head count to use (not stored in any file)."""
    pdim = shape_of(pred, "predictor_embed.weight", what)[0]
    pdepth = block_count(pred, "predictor_blocks.")
    phidden = shape_of(pred, "predictor_blocks.0.mlp.fc1.weight", what)[0]
    if pdim % num_heads:
        raise PretrainedError(f"predictor width {pdim} is not divisible by {num_heads} heads; pass pred_num_heads=")
    return pdim, pdepth, num_heads, mlp_ratio_for(pdim, phidden)


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
    """Trilinear resampling of a ``[1, T*H*W, D]`` table, as the official video encoders'
    ``interpolate_pos_encoding`` does."""
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

ENTRY_POINT_GROUP = "jepa.converters"


@dataclass
class CheckpointView:
    """A file as every converter's ``match`` function sees it: the generic :func:`detect_format`
    result, the parts in our names where the layout is generic (``official``, ``jepa-*``,
    ``state_dict``; empty for ``hf``, whose mapping only its converter knows, and for
    ``other``, a layout none of the generic formats describes), the converter
    name a jepa file records, the Hugging Face ``config.json`` (if any) and the flat keys."""

    raw: RawCheckpoint
    format: str
    parts: dict[str, dict[str, torch.Tensor]]
    recorded: str = ""
    hf_config: dict = field(default_factory=dict)

    @property
    def path(self) -> str:
        return self.raw.path

    @property
    def keys(self) -> list[str]:
        """The top-level keys for flat layouts (``hf``, ``state_dict``, flat ``jepa-weights``)."""
        return [k for k, v in self.raw.obj.items() if isinstance(v, torch.Tensor)]

    @property
    def encoder(self) -> dict[str, torch.Tensor]:
        """The ``encoder`` (else ``target_encoder``) part; empty if there is none."""
        return dict(self.parts.get("encoder") or self.parts.get("target_encoder") or {})

    @property
    def patch_rank(self) -> int:
        """Rank of ``patch_embed.proj.weight`` (4: Conv2d, 5: Conv3d, 0: none)."""
        return patch_embedding_rank(self.parts)


def recorded_name(raw: RawCheckpoint, fmt: str) -> str:
    """The method / converter name a jepa file records (``method`` of a ``jepa-weights`` file or of
    a run's config); empty for other formats."""
    if fmt not in ("jepa-run", "jepa-weights"):
        return ""
    cfg = raw.obj.get("config")
    m = raw.obj.get("method") or raw.meta.get("method") or (cfg.get("method") if isinstance(cfg, Mapping) else None)
    return str(m) if isinstance(m, str) else ""


def view_checkpoint(raw: RawCheckpoint, fmt: str | None = None) -> CheckpointView:
    """Describe ``raw`` for the match functions (see :class:`CheckpointView`). A file in none of
    the generic layouts (e.g. D-JEPA's released ``model`` / ``model_ema``) gets the format
    ``"other"`` and no parts: only a method's own converter can recognise it."""
    if fmt is None:
        try:
            fmt = detect_format(raw)
        except PretrainedError:
            return CheckpointView(raw, "other", {})
    parts = {} if fmt == "hf" else canonical_parts(raw, fmt)[0]
    hf_cfg = raw.meta.get("hf_config")
    return CheckpointView(raw, fmt, parts, recorded_name(raw, fmt), dict(hf_cfg) if isinstance(hf_cfg, Mapping) else {})


def _never(view: CheckpointView) -> bool:
    return False


@dataclass(frozen=True)
class Converter:
    """One method's checkpoints: how to recognise them and what to do with them.

    - ``name``: what ``jepa convert --method`` and ``method=`` take, and what jepa files record;
    - ``match(view: CheckpointView) -> bool | float``: whether (or how surely: the highest
      positive score wins) a file is this method's; False / 0: not mine;
    - ``convert(raw, out: Path, to: str, method: str, **hints) -> LoadInfo``: write ``raw`` as
      ``ours``, ``safetensors``, ``official`` (or ``hf``, where the method has that layout);
    - ``load(path, **kwargs)``: optional, the method's ``from_pretrained``;
    - ``package``: the distribution that provides it (for messages).
    """

    name: str
    match: Callable[[CheckpointView], bool | float]
    convert: Callable[..., LoadInfo]
    load: Callable[..., Any] | None = None
    package: str = ""
    description: str = ""

    def label(self) -> str:
        return f"{self.name} ({self.package})" if self.package else self.name


_LOCAL_CONVERTERS: dict[str, Converter] = {}


def register_converter(
    converter: Converter | str,
    convert: Callable[..., LoadInfo] | None = None,
    *,
    match: Callable[[CheckpointView], bool | float] | None = None,
    load: Callable[..., Any] | None = None,
    package: str = "",
    description: str = "",
) -> Converter:
    """Register a converter in this process (it takes precedence over an installed one of the
    same name): a :class:`Converter`, or ``register_converter(name, convert, match=...)``.
    Without ``match``, an installed converter of the same name lends its match function (this
    replaces only its ``convert``); otherwise the converter is used only when asked for by name.
    Returns it."""
    if not isinstance(converter, Converter):
        if convert is None:
            raise TypeError("register_converter(name, convert, match=...) needs the convert function")
        name = str(converter)
        if match is None:
            installed = _entry_point_converters().get(name)
            match = installed.match if installed is not None else _never
        converter = Converter(name, match, convert, load, package, description)
    _LOCAL_CONVERTERS[converter.name] = converter
    return converter


def unregister_converter(name: str) -> None:
    """Remove an in-process converter (installed ones come back into view)."""
    _LOCAL_CONVERTERS.pop(name, None)


def _from_entry_point(ep: metadata.EntryPoint) -> Converter:
    """The :class:`Converter` an entry point names. An entry point that names another object
    (a package's convert function, as before converters were records) is resolved through its
    module's ``CONVERTERS`` table; failing that, a callable becomes a by-name-only converter."""
    obj = ep.load()
    package = ep.dist.name if getattr(ep, "dist", None) is not None else ""
    if not isinstance(obj, Converter):
        table = getattr(sys.modules.get(getattr(obj, "__module__", "") or ""), "CONVERTERS", None)
        if isinstance(table, Mapping) and isinstance(table.get(ep.name), Converter):
            obj = table[ep.name]
        elif callable(obj):
            obj = Converter(ep.name, _never, obj)
        else:
            raise PretrainedError(f"entry point {ep.name} = {ep.value} is not a jepa_core.pretrained.Converter")
    if obj.name != ep.name:
        obj = replace(obj, name=ep.name)
    return obj if obj.package else replace(obj, package=package)


def _entry_point_converters(skip: Iterable[str] = ()) -> dict[str, Converter]:
    out: dict[str, Converter] = {}
    skip = set(skip)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in out or ep.name in skip:
            continue
        try:
            out[ep.name] = _from_entry_point(ep)
        except Exception as e:  # a broken plug-in must not hide the others
            log.warning("skipping converter %s (%s): %s: %s", ep.name, ep.value, type(e).__name__, e)
    return out


def installed_converters() -> dict[str, Converter]:
    """Every converter: the ``jepa.converters`` entry points, then the in-process ones (which
    replace installed ones of the same name). An entry point that fails to load is skipped with a
    warning."""
    out = _entry_point_converters(skip=_LOCAL_CONVERTERS)
    out.update(_LOCAL_CONVERTERS)
    return dict(sorted(out.items()))


def converters() -> list[str]:
    """The names of the installed converters."""
    return list(installed_converters())


def _installed_text(convs: Mapping[str, Converter]) -> str:
    return ", ".join(c.label() for c in convs.values()) or "none (install a method package, e.g. jepa-image)"


def get_converter(name: str) -> Converter:
    """The converter called ``name``; a clear error listing the installed ones otherwise."""
    convs = installed_converters()
    if name not in convs:
        raise PretrainedError(
            f"no converter named {name!r} is installed (installed: {_installed_text(convs)}); "
            "pass one of these names (--method NAME / method=NAME), or install the package that provides it"
        )
    return convs[name]


def _describe(view: CheckpointView) -> str:
    if view.format == "hf":
        mt = view.hf_config.get("model_type")
        return f"a Hugging Face checkpoint{f' (model_type {mt!r})' if mt else ''}, keys e.g. {_short(view.keys, 4)}"
    enc = view.encoder
    if enc:
        w = enc.get("patch_embed.proj.weight")
        pe = f"patch_embed.proj.weight {list(w.shape)}" if isinstance(w, torch.Tensor) else "no patch_embed.proj.weight"
        return f"a {view.format} checkpoint with parts {', '.join(view.parts)} ({pe})"
    return f"a {view.format} checkpoint without encoder weights (keys e.g. {_short(view.keys or view.raw.obj, 4)})"


def match_converters(view: CheckpointView, convs: Mapping[str, Converter] | None = None) -> dict[str, float]:
    """Each converter's match score for ``view`` (0: no match). A match function that raises
    counts as no match (logged)."""
    convs = installed_converters() if convs is None else convs
    scores = {}
    for name, c in convs.items():
        try:
            scores[name] = float(c.match(view) or 0.0)
        except Exception as e:
            log.warning("converter %s: match failed on %s: %s: %s", name, view.path, type(e).__name__, e)
            scores[name] = 0.0
    return scores


def find_converter(src: str | Path | RawCheckpoint, method: str | None = None) -> tuple[Converter, RawCheckpoint]:
    """The converter for a file: ``method`` if given, else the name the file records, else the
    one whose match function scores highest. Errors list the installed converters and say how to
    pick one when none or several match."""
    convs = installed_converters()
    if method:
        conv = get_converter(method)
        raw = src if isinstance(src, RawCheckpoint) else read_checkpoint(src)
        return conv, raw
    raw = src if isinstance(src, RawCheckpoint) else read_checkpoint(src)
    view = view_checkpoint(raw)
    if view.recorded:
        if view.recorded not in convs:
            raise PretrainedError(
                f"{raw.path!r} was written for {view.recorded!r}, but no converter of that name is installed "
                f"(installed: {_installed_text(convs)}); install the package that provides it, or pass --method"
            )
        return convs[view.recorded], raw
    scores = match_converters(view, convs)
    best = max(scores.values(), default=0.0)
    winners = [n for n, sc in scores.items() if sc > 0 and sc == best]
    if not winners and view.format == "other":
        detect_format(raw)  # raises: what a generic layout needs, and how to pick a converter
    if not winners:
        raise PretrainedError(
            f"no installed converter recognises {raw.path!r} ({_describe(view)}); installed: {_installed_text(convs)}; "
            "if it is one of these methods' checkpoints, pick the converter with --method NAME (method=NAME)"
        )
    if len(winners) > 1:
        raise PretrainedError(
            f"{raw.path!r} ({_describe(view)}) matches several converters: "
            f"{', '.join(convs[n].label() for n in winners)}; pick one with --method NAME (method=NAME) "
            f"(installed: {_installed_text(convs)})"
        )
    return convs[winners[0]], raw


def convert(src: str | Path, dst: str | Path, to: str = "ours", method: str | None = None, **hints) -> LoadInfo:
    """Convert a checkpoint between formats (what ``jepa convert`` runs): the converter is
    :func:`find_converter`'s choice."""
    if method:
        get_converter(method)  # a wrong name fails before the file is read
    conv, raw = find_converter(src, method)
    return conv.convert(raw, Path(dst), to, method=conv.name, **hints)
