"""Load Meta's V-JEPA and V-JEPA 2 checkpoints (and their Hugging Face and jepa forms) with
numerical parity.

One line::

    encoder = jepa_video.from_pretrained("vitl16.pth.tar")                    # V-JEPA, target encoder
    encoder, predictor = jepa_video.from_pretrained("vitl.pt", which="encoder", with_predictor=True)

Formats (detected from the contents, :func:`jepa_core.pretrained.detect_format`):

- official V-JEPA ``.pth.tar`` (jepa:app/vjepa/train.py) and V-JEPA 2 ``.pt``
  (vjepa2:app/vjepa/train.py): ``encoder``, ``predictor``, ``target_encoder`` with the
  ``module.backbone.`` prefix (DDP over ``MultiMaskWrapper`` / ``MultiSeqWrapper``); the names
  after it equal ours (reference B.6, C.6);
- Hugging Face ``facebook/vjepa2-*`` (transformers:models/vjepa2/convert_vjepa2_to_hf.py):
  ``encoder.layer.{i}.attention.{query,key,value,proj}``, ``predictor.embeddings.mask_tokens``
  ``[n, 1, 1, D]``, ...; V-JEPA (1) has no Hugging Face port;
- the Trainer's ``step-N.pt``, ``jepa convert`` output, a bare encoder state dict.

V-JEPA vs V-JEPA 2: a file without ``pos_embed`` is V-JEPA 2 (3-D RoPE, vjepa2:src/models/
utils/modules.py ``RoPEAttention``); pass ``method=`` to override. The architecture comes from
the shapes: width / depth / MLP ratio from the blocks, patch and tubelet from the Conv3d
weight, and, for V-JEPA, frames and resolution by matching ``pos_embed`` against the 3-D sin-cos
tables of every factorisation ``N = T' H' W'`` (``uniform_power`` found the same way,
jepa:src/models/utils/pos_embs.py). RoPE files store no resolution: V-JEPA 2 defaults to 256 px
(``img_size=384`` for the 384 models; a ``384`` in the file name is taken as a hint) and 64
frames (hubconf), which only set the predictor's RoPE grid; the encoder reads the grid from its
input. Head counts are not stored: official widths use the size tables (ViT-g: 16 heads in
V-JEPA, 22 in V-JEPA 2's ``vit_giant_xformers``; predictor = encoder heads in V-JEPA, 12 in
V-JEPA 2), other widths need ``num_heads=`` / ``pred_num_heads=``.

``rope_fix_tiling=True`` builds the corrected (interleaved) RoPE instead of the official tiled
frequencies; released weights need the default (reference C.1, vjepa2 PR #15).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jepa_core import pretrained as P
from jepa_core.nn.pos_embed import sincos_3d
from jepa_core.pretrained import LoadInfo, PretrainedError

from jepa_video.nn import VIDEO_VIT_SIZES, VideoVisionTransformer, VJEPA2Predictor, VJEPAPredictor

log = logging.getLogger(__name__)

OFFICIAL_PREFIX = "module.backbone."
METHODS = ("vjepa", "vjepa2")
# vit_giant_xformers, the released V-JEPA 2 ViT-g, has 22 heads (vjepa2:src/hub/backbones.py).
VJEPA2_HEADS = {**P.OFFICIAL_HEADS, 1408: 22}
VJEPA2_PRED_HEADS = 12  # pred_num_heads: 12 in every V-JEPA 2 config and the hub

__all__ = ["Pretrained", "from_pretrained", "load_pretrained", "convert", "hf_to_parts", "parts_to_hf",
           "infer_arch"]


@dataclass
class Pretrained:
    encoder: VideoVisionTransformer
    predictor: VJEPAPredictor | VJEPA2Predictor | None
    info: LoadInfo


# ---------------------------------------------------------------------------------------------
# Hugging Face layout (V-JEPA 2 only)

HF_RULES = [
    (r"encoder\.embeddings\.patch_embeddings\.proj\.(weight|bias)", r"E.patch_embed.proj.\1"),
    (r"encoder\.embeddings\.position_embeddings", r"E.pos_embed"),
    (r"encoder\.layer\.(\d+)\.(norm1|norm2)\.(weight|bias)", r"E.blocks.\1.\2.\3"),
    (r"encoder\.layer\.(\d+)\.attention\.(query|key|value|proj)\.(weight|bias)", r"E.blocks.\1.attn.\2.\3"),
    (r"encoder\.layer\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"E.blocks.\1.mlp.\2.\3"),
    (r"encoder\.layernorm\.(weight|bias)", r"E.norm.\1"),
    (r"predictor\.embeddings\.predictor_embeddings\.(weight|bias)", r"P.predictor_embed.\1"),
    (r"predictor\.embeddings\.mask_tokens", r"P.mask_tokens"),
    (r"predictor\.embeddings\.position_embeddings", r"P.predictor_pos_embed"),
    (r"predictor\.layer\.(\d+)\.(norm1|norm2)\.(weight|bias)", r"P.predictor_blocks.\1.\2.\3"),
    (r"predictor\.layer\.(\d+)\.attention\.(query|key|value|proj)\.(weight|bias)",
     r"P.predictor_blocks.\1.attn.\2.\3"),
    (r"predictor\.layer\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"P.predictor_blocks.\1.mlp.\2.\3"),
    (r"predictor\.layernorm\.(weight|bias)", r"P.predictor_norm.\1"),
    (r"predictor\.proj\.(weight|bias)", r"P.predictor_proj.\1"),
]


def hf_to_parts(tensors: dict, hf_config: dict | None = None) -> tuple[dict, list[str]]:
    """Hugging Face V-JEPA 2 keys -> ``{"encoder", "predictor"}`` in our names; the video
    classification head (``pooler.*``, ``classifier.*``) is ignored (see jepa_eval for probes)."""
    sd = P.strip_prefixes(tensors, ("vjepa2.",))
    renamed, unmatched = P.rename(sd, HF_RULES)
    ignored = [k for k in unmatched if k.startswith(("pooler.", "classifier."))]
    rest = [k for k in unmatched if k not in ignored]
    if rest:
        raise PretrainedError(f"unexpected keys in the Hugging Face V-JEPA 2 layout: {P._short(rest)}")
    qkv = r"(.*\.attn\.)(query|key|value)(\.weight|\.bias)"
    enc = P.fuse_qkv({k[2:]: v for k, v in renamed.items() if k.startswith("E.")}, qkv, "{0}qkv{1}")
    pred = {k[2:]: v for k, v in renamed.items() if k.startswith("P.")}
    if "mask_tokens" in pred:  # [n, 1, 1, D] -> mask_tokens.{i} [1, 1, D]
        for i, t in enumerate(pred.pop("mask_tokens")):
            pred[f"mask_tokens.{i}"] = t
    pred = P.fuse_qkv(pred, qkv, "{0}qkv{1}")
    return {p: sd for p, sd in (("encoder", enc), ("predictor", pred)) if sd}, ignored


def parts_to_hf(parts: dict) -> dict:
    """Ours -> the Hugging Face ``facebook/vjepa2-*`` layout (encoder = the official ``encoder``
    entry, as the hub model the converter starts from)."""
    out: dict[str, torch.Tensor] = {}

    def block(pre: str, rest: list[str], v):
        name, leaf = ".".join(rest[:-1]), rest[-1]
        if name == "attn.qkv":
            for n, t in zip(("query", "key", "value"), P.split_qkv(v)):
                out[f"{pre}attention.{n}.{leaf}"] = t
        elif name == "attn.proj":
            out[f"{pre}attention.proj.{leaf}"] = v
        else:
            out[f"{pre}{name}.{leaf}"] = v

    for k, v in (parts.get("encoder") or {}).items():
        if k.startswith("patch_embed.proj."):
            out["encoder.embeddings.patch_embeddings.proj." + k.split(".")[-1]] = v
        elif k == "pos_embed":
            continue  # RoPE models do not use it (the converter drops it too)
        elif k.startswith("norm."):
            out["encoder.layernorm." + k.split(".")[-1]] = v
        else:
            _, i, *rest = k.split(".")
            block(f"encoder.layer.{i}.", rest, v)
    pred = parts.get("predictor") or {}
    tokens = sorted((int(k.split(".")[1]), v) for k, v in pred.items() if k.startswith("mask_tokens."))
    if tokens:
        out["predictor.embeddings.mask_tokens"] = torch.stack([v for _, v in tokens])
    for k, v in pred.items():
        if k.startswith("mask_tokens.") or k == "predictor_pos_embed":
            continue
        if k.startswith("predictor_embed."):
            out["predictor.embeddings.predictor_embeddings." + k.split(".")[-1]] = v
        elif k.startswith("predictor_norm."):
            out["predictor.layernorm." + k.split(".")[-1]] = v
        elif k.startswith("predictor_proj."):
            out["predictor.proj." + k.split(".")[-1]] = v
        else:
            _, i, *rest = k.split(".")
            block(f"predictor.layer.{i}.", rest, v)
    return out


def hf_config(arch: dict) -> dict:
    """A ``config.json`` for transformers' ``VJEPA2Model`` (its field names)."""
    return {
        "model_type": "vjepa2", "architectures": ["VJEPA2Model"], "patch_size": arch["patch_size"],
        "crop_size": arch["img_size"], "frames_per_clip": arch["num_frames"], "tubelet_size": arch["tubelet_size"],
        "hidden_size": arch["embed_dim"], "in_chans": arch["in_chans"], "num_attention_heads": arch["num_heads"],
        "num_hidden_layers": arch["depth"], "mlp_ratio": arch["mlp_ratio"], "layer_norm_eps": 1e-6,
        "qkv_bias": True, "hidden_act": "gelu", "pred_hidden_size": arch.get("pred_embed_dim", 384),
        "pred_num_attention_heads": arch.get("pred_num_heads", 12), "pred_num_hidden_layers": arch.get("pred_depth", 12),
        "pred_num_mask_tokens": arch.get("num_mask_tokens", 10), "pred_mlp_ratio": arch.get("pred_mlp_ratio", 4.0),
    }


# ---------------------------------------------------------------------------------------------
# architecture from the weights


def _grid_from_table(table: torch.Tensor, dim: int):
    """``(T', H', uniform_power)`` whose 3-D sin-cos table equals ``table`` (square grids), or None."""
    n = table.shape[1]
    for t in range(1, n + 1):
        if n % t:
            continue
        g = round((n // t) ** 0.5)
        if g * g != n // t:
            continue
        for up in (True, False):
            if P.table_matches(table, sincos_3d(dim, t, g, g, uniform_power=up)):
                return t, g, up
    return None


def _heads(method: str, dim: int, override: int | None, what: str) -> int:
    return P.heads_for(dim, override, what, VJEPA2_HEADS if method == "vjepa2" else P.OFFICIAL_HEADS)


def infer_arch(
    parts: dict,
    method: str,
    num_heads: int | None = None,
    pred_num_heads: int | None = None,
    img_size: int | None = None,
    num_frames: int | None = None,
    rope_fix_tiling: bool = False,
    path_hint: str = "",
) -> tuple[dict, list[str]]:
    """The V-JEPA / V-JEPA 2 architecture of ``parts`` (our names) from the shapes; ``(arch, notes)``."""
    if method not in METHODS:
        raise PretrainedError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    notes: list[str] = []
    enc = parts.get("encoder") or parts.get("target_encoder")
    if not enc:
        raise PretrainedError("no encoder weights in the file")
    w = P.shape_of(enc, "patch_embed.proj.weight", "video encoder")
    if len(w) == 4:
        raise PretrainedError(
            f"this is an image checkpoint (patch_embed.proj.weight is 4-D {list(w)}: a Conv2d patch embedding); "
            "load it with jepa_image.from_pretrained"
        )
    if len(w) != 5 or w[3] != w[4]:
        raise PretrainedError(f"patch_embed.proj.weight {list(w)} is not a Conv3d tubelet embedding")
    dim, chans, tubelet, patch = w[0], w[1], w[2], w[3]
    depth = P.block_count(enc, "blocks.")
    if depth == 0:
        raise PretrainedError("the encoder has no blocks.{i}.* weights")
    hidden = P.shape_of(enc, "blocks.0.mlp.fc1.weight", "video encoder")[0]
    heads = _heads(method, dim, num_heads, f"{method} encoder")
    use_rope = method == "vjepa2"
    uniform_power = True
    if not use_rope:
        if "pos_embed" not in enc:
            raise PretrainedError("V-JEPA encoder without pos_embed: this is a V-JEPA 2 (RoPE) checkpoint; "
                                  "load it with method='vjepa2' (or leave method unset)")
        pos = P.shape_of(enc, "pos_embed", "V-JEPA encoder")
        # The stored grid is found from the table itself; img_size / num_frames (the size to run
        # at) only name it when the table is not a sin-cos one.
        found = _grid_from_table(enc["pos_embed"], dim)
        if found is None:
            if not (num_frames and img_size):
                raise PretrainedError(
                    f"pos_embed {list(pos)} matches no 3-D sin-cos table of a square grid; pass num_frames= and "
                    "img_size= to say which grid it belongs to"
                )
            t, g = num_frames // tubelet, img_size // patch
            if t * g * g != pos[1]:
                raise PretrainedError(f"pos_embed has {pos[1]} positions, not {t}x{g}x{g} for "
                                      f"num_frames={num_frames}, img_size={img_size}")
            notes.append("pos_embed is not a fixed sin-cos table (kept as stored; trilinear at other sizes)")
        else:
            t, g, uniform_power = found
        frames, size = t * tubelet, g * patch
    else:
        if "pos_embed" in enc:
            notes.append("pos_embed is present but unused with RoPE: dropped (as the official hub loader does)")
        size = img_size or (384 if re.search(r"384", Path(path_hint).name) else 256)
        frames = num_frames or 64
        if not img_size:
            notes.append(f"RoPE checkpoints store no resolution: assumed {size} px for the predictor's RoPE grid "
                         "(pass img_size=...); the encoder reads the grid from its input")
    arch: dict[str, Any] = dict(
        method=method, img_size=size, num_frames=frames, patch_size=patch, tubelet_size=tubelet, in_chans=chans,
        embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=P.mlp_ratio_for(dim, hidden), use_rope=use_rope,
        uniform_power=uniform_power, rope_fix_tiling=bool(rope_fix_tiling and use_rope),
    )
    pred = parts.get("predictor")
    if pred:
        if "mask_token" in pred:
            raise PretrainedError("the predictor has one mask_token (an I-JEPA predictor); load it with jepa_image")
        pdim = P.shape_of(pred, "predictor_embed.weight", "video predictor")[0]
        pdepth = P.block_count(pred, "predictor_blocks.")
        phidden = P.shape_of(pred, "predictor_blocks.0.mlp.fc1.weight", "video predictor")[0]
        ntok = P.block_count(pred, "mask_tokens.") if any(k.startswith("mask_tokens.") for k in pred) else 0
        if ntok == 0:
            raise PretrainedError("the predictor has no mask_tokens.{i}: use_mask_tokens=False predictors are "
                                  "not supported (no released checkpoint has them)")
        # V-JEPA: num_heads = encoder heads (jepa:app/vjepa/utils.py); V-JEPA 2: pred_num_heads 12
        pheads = pred_num_heads or (VJEPA2_PRED_HEADS if use_rope else heads)
        if pdim % pheads:
            raise PretrainedError(f"predictor width {pdim} is not divisible by {pheads} heads; pass pred_num_heads=")
        if use_rope and "predictor_pos_embed" in pred:
            notes.append("predictor_pos_embed is present but unused with RoPE: dropped")
        arch.update(pred_embed_dim=pdim, pred_depth=pdepth, pred_num_heads=pheads,
                    pred_mlp_ratio=P.mlp_ratio_for(pdim, phidden), num_mask_tokens=ntok)
    return arch, notes


def build_encoder(arch: dict, img_size: int | None = None, num_frames: int | None = None) -> VideoVisionTransformer:
    return VideoVisionTransformer(
        img_size=img_size or arch["img_size"], num_frames=num_frames or arch["num_frames"],
        patch_size=arch["patch_size"], tubelet_size=arch["tubelet_size"], in_chans=arch["in_chans"],
        embed_dim=arch["embed_dim"], depth=arch["depth"], num_heads=arch["num_heads"], mlp_ratio=arch["mlp_ratio"],
        uniform_power=arch["uniform_power"], use_rope=arch["use_rope"], rope_fix_tiling=arch["rope_fix_tiling"],
    )


def build_predictor(arch: dict, img_size: int | None = None, num_frames: int | None = None):
    common = dict(
        img_size=img_size or arch["img_size"], num_frames=num_frames or arch["num_frames"],
        patch_size=arch["patch_size"], tubelet_size=arch["tubelet_size"], embed_dim=arch["embed_dim"],
        predictor_embed_dim=arch["pred_embed_dim"], depth=arch["pred_depth"], num_heads=arch["pred_num_heads"],
        mlp_ratio=arch["pred_mlp_ratio"], num_mask_tokens=arch["num_mask_tokens"],
    )
    if arch["use_rope"]:
        return VJEPA2Predictor(rope_fix_tiling=arch["rope_fix_tiling"], **common)
    return VJEPAPredictor(uniform_power=arch["uniform_power"], **common)


def _drop_unused(parts: dict, arch: dict, ignored: list[str]) -> dict:
    if not arch["use_rope"]:
        return parts
    out = {}
    for p, sd in parts.items():
        drop = [k for k in sd if k in ("pos_embed", "predictor_pos_embed")]
        ignored += [f"{p}.{k}" for k in drop]
        out[p] = {k: v for k, v in sd.items() if k not in drop}
    return out


def _validate(parts: dict, arch: dict, method: str) -> None:
    with torch.device("meta"):
        enc = P.expected_shapes(build_encoder(arch))
        pred = P.expected_shapes(build_predictor(arch)) if "pred_embed_dim" in arch else None
    name = "V-JEPA 2" if method == "vjepa2" else "V-JEPA"
    other = "vjepa" if method == "vjepa2" else "vjepa2"
    for p in ("encoder", "target_encoder"):
        if parts.get(p):
            P.check_state_dict(enc, parts[p], f"{name} {p}", f"is this a {name} checkpoint? (try method={other!r})")
    if parts.get("predictor") and pred is not None:
        P.check_state_dict(pred, parts["predictor"], f"{name} predictor", "pass pred_num_heads= if the heads differ")


def _hints_from(stored: dict, run_cfg: dict, hf_cfg: dict) -> dict:
    h: dict[str, Any] = {}
    if stored:
        h.update({k: stored.get(k) for k in ("num_heads", "pred_num_heads", "img_size", "num_frames",
                                             "rope_fix_tiling")})
    if run_cfg:
        m, d = run_cfg.get("model") or {}, run_cfg.get("data") or {}
        heads = m.get("num_heads") or (VIDEO_VIT_SIZES.get(m.get("encoder"), (0, 0, None))[2])
        h.update(num_heads=heads, pred_num_heads=m.get("pred_num_heads") or heads, img_size=d.get("crop_size"),
                 num_frames=d.get("frames_per_clip"), rope_fix_tiling=m.get("rope_fix_tiling"))
    if hf_cfg:
        h.update(num_heads=hf_cfg.get("num_attention_heads"), pred_num_heads=hf_cfg.get("pred_num_attention_heads"),
                 img_size=hf_cfg.get("crop_size"), num_frames=hf_cfg.get("frames_per_clip"))
    return {k: v for k, v in h.items() if v}


def _read(path_or_raw, method: str | None = None, **hints):
    raw = path_or_raw if isinstance(path_or_raw, P.RawCheckpoint) else P.read_checkpoint(path_or_raw)
    fmt = P.detect_format(raw)
    parts, ignored, stored, run_cfg = P.canonical_parts(raw, fmt, hf_to_parts)
    recorded = stored.get("method") or run_cfg.get("method")
    if recorded == "ijepa":
        raise PretrainedError(f"{raw.path!r} is an I-JEPA checkpoint; load it with jepa_image.from_pretrained")
    if method is None:
        method = recorded or ("vjepa2" if fmt == "hf" else P.guess_method(parts))
    if method == "ijepa":
        raise PretrainedError(f"{raw.path!r} holds an image (I-JEPA) encoder; load it with jepa_image.from_pretrained")
    h = _hints_from(stored, run_cfg, raw.meta.get("hf_config") or {})
    h.update({k: v for k, v in hints.items() if v is not None and v is not False})
    arch, notes = infer_arch(parts, method, path_hint=raw.path, **h)
    parts = _drop_unused(parts, arch, ignored)
    _validate(parts, arch, method)
    info = LoadInfo(raw.path, fmt if raw.container != "hf-folder" else "hf", method, arch=arch,
                    parts=tuple(p for p in P.PARTS if parts.get(p)), notes=notes, ignored=ignored)
    return raw, parts, info


def _resized(table, dim, old, new, uniform_power, notes, what):
    if old == new:
        return table
    if P.table_matches(table, sincos_3d(dim, *old, uniform_power=uniform_power)):
        notes.append(f"{what}: grid {old} -> {new}, sin-cos table recomputed (exact)")
        return sincos_3d(dim, *new, uniform_power=uniform_power).unsqueeze(0).to(table.dtype)
    notes.append(f"{what}: grid {old} -> {new}, resampled trilinearly (the stored table is not sin-cos)")
    return P.resize_table_3d(table, old, new)


def load_pretrained(
    path: str | Path,
    which: str = "target_encoder",
    with_predictor: bool = False,
    method: str | None = None,
    img_size: int | None = None,
    num_frames: int | None = None,
    num_heads: int | None = None,
    pred_num_heads: int | None = None,
    rope_fix_tiling: bool = False,
    dtype: torch.dtype | None = torch.float32,
    device: str | torch.device = "cpu",
) -> Pretrained:
    """Build the V-JEPA / V-JEPA 2 encoder (and predictor) of a checkpoint; see the module doc.

    ``which``: ``target_encoder`` (the official evaluations' choice, reference B.5, C.5) or
    ``encoder`` (the context encoder; what the V-JEPA 2 hub and Hugging Face weights use).
    ``method``: ``vjepa`` / ``vjepa2`` (default: from the file). ``img_size`` / ``num_frames``:
    for V-JEPA, build at another clip size (tables recomputed); for V-JEPA 2, the predictor's
    RoPE grid. ``rope_fix_tiling``: the corrected RoPE (does not match released weights).
    """
    raw, parts, info = _read(path, method, num_heads=num_heads, pred_num_heads=pred_num_heads,
                             rope_fix_tiling=rope_fix_tiling, img_size=img_size, num_frames=num_frames)
    arch = info.arch
    parts = P.cast_parts(parts, dtype)
    which, enc_sd = P.pick_encoder(parts, which, info.notes)
    info.which = which
    size, frames = img_size or arch["img_size"], num_frames or arch["num_frames"]
    if size % arch["patch_size"] or frames % arch["tubelet_size"]:
        raise PretrainedError(f"clip {frames}x{size} is not a multiple of the tubelet "
                              f"{arch['tubelet_size']}x{arch['patch_size']}")
    old = (arch["num_frames"] // arch["tubelet_size"], arch["img_size"] // arch["patch_size"],
           arch["img_size"] // arch["patch_size"])
    new = (frames // arch["tubelet_size"], size // arch["patch_size"], size // arch["patch_size"])
    if not arch["use_rope"]:
        enc_sd["pos_embed"] = _resized(enc_sd["pos_embed"], arch["embed_dim"], old, new, arch["uniform_power"],
                                       info.notes, "pos_embed")
    with torch.device("meta"):
        encoder = build_encoder(arch, size, frames)
    P.load_into(encoder, enc_sd, f"{info.method} {which}").to(device)
    predictor = None
    if with_predictor:
        if not parts.get("predictor"):
            raise PretrainedError(f"{info.path!r} holds no predictor ({info.format} layout: {', '.join(info.parts)}); "
                                  "use with_predictor=False")
        pred_sd = dict(parts["predictor"])
        if not arch["use_rope"]:
            pred_sd["predictor_pos_embed"] = _resized(pred_sd["predictor_pos_embed"], arch["pred_embed_dim"], old, new,
                                                      arch["uniform_power"], info.notes, "predictor_pos_embed")
        with torch.device("meta"):
            predictor = build_predictor(arch, size, frames)
        P.load_into(predictor, pred_sd, f"{info.method} predictor").to(device)
        predictor.eval()
    encoder.eval()
    encoder.pretrained_info = info  # type: ignore[attr-defined]
    log.info("%s", info.summary())
    return Pretrained(encoder, predictor, info)


def from_pretrained(path: str | Path, which: str = "target_encoder", with_predictor: bool = False, **kwargs):
    """The encoder of a V-JEPA / V-JEPA 2 checkpoint (official, Hugging Face or ours), or
    ``(encoder, predictor)`` with ``with_predictor=True``. What was found is logged and kept in
    ``encoder.pretrained_info``. Options: see :func:`load_pretrained`."""
    out = load_pretrained(path, which=which, with_predictor=with_predictor, **kwargs)
    return (out.encoder, out.predictor) if with_predictor else out.encoder


def convert(raw, out: Path, to: str = "ours", method: str | None = None, **hints) -> LoadInfo:
    """Write the checkpoint ``raw`` (a path or a :class:`jepa_core.pretrained.RawCheckpoint`) as
    ``ours``, ``safetensors``, ``official`` or ``hf`` (V-JEPA 2); tensors are copied bit for bit."""
    raw, parts, info = _read(raw, method, **hints)
    out = Path(out)
    if to == "hf":
        if info.method != "vjepa2":
            raise PretrainedError("V-JEPA (1) has no Hugging Face layout; use --to ours, safetensors or official")
        out.mkdir(parents=True, exist_ok=True)
        which, enc = P.pick_encoder(parts, "encoder", info.notes)
        P.write_safetensors(parts_to_hf({"encoder": enc, "predictor": parts.get("predictor") or {}}),
                            out / "model.safetensors", {"format": "pt"})
        (out / "config.json").write_text(json.dumps(hf_config(info.arch), indent=2))
        info.notes.append(f"wrote the {which} and the predictor (the Hugging Face model holds one encoder)")
    else:
        extra = {"epoch": raw.obj["epoch"]} if to == "official" and "epoch" in raw.obj else None
        P.write_parts(parts, info.arch, info.method, out, to, OFFICIAL_PREFIX, extra)
    return info
