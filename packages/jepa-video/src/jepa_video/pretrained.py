"""Load Meta's V-JEPA and V-JEPA 2 checkpoints (and their Hugging Face and jepa forms) with
numerical parity.

One line::

    encoder = jepa_video.from_pretrained("vitl16.pth.tar")                    # V-JEPA, target encoder
    encoder, predictor = jepa_video.from_pretrained("vitl.pt", which="encoder", with_predictor=True)

Formats (detected from the contents, :func:`jepa_core.pretrained.detect_format`):

- official V-JEPA ``.pth.tar`` (jepa:app/vjepa/train.py) and V-JEPA 2 ``.pt``
  (vjepa2:app/vjepa/train.py): ``encoder``, ``predictor``, ``target_encoder`` with the
  ``module.backbone.`` prefix (DDP over ``MultiMaskWrapper`` / ``MultiSeqWrapper``); the names
  after it equal ours (the ``save_checkpoint`` of both train scripts);
- Hugging Face ``facebook/vjepa2-*`` (transformers:models/vjepa2/convert_vjepa2_to_hf.py):
  ``encoder.layer.{i}.attention.{query,key,value,proj}``, ``predictor.embeddings.mask_tokens``
  ``[n, 1, 1, D]``, ...; V-JEPA (1) has no Hugging Face port;
- the Trainer's ``step-N.pt``, ``jepa convert`` output, a bare encoder state dict.

V-JEPA vs V-JEPA 2: a file without ``pos_embed`` is V-JEPA 2 (3-D RoPE, vjepa2:src/models/
utils/modules.py ``RoPEAttention``); pass ``method=`` to override. These rules are the match
functions of the ``vjepa`` and ``vjepa2`` :class:`jepa_core.pretrained.Converter` records this
module registers (entry points ``jepa.converters``); a Hugging Face file is V-JEPA 2's by its
``config.json`` ``model_type: vjepa2`` or its key names. The architecture comes from
the shapes: width / depth / MLP ratio from the blocks, patch and tubelet from the Conv3d
weight, and, for V-JEPA, frames and resolution by matching ``pos_embed`` against the 3-D sin-cos
tables of every factorisation ``N = T' H' W'`` (``uniform_power`` found the same way,
jepa:src/models/utils/pos_embs.py). RoPE files store no resolution: V-JEPA 2 defaults to 256 px
(``img_size=384`` for the 384 models; a ``384`` in the file name is taken as a hint) and 64
frames (hubconf), which only set the predictor's RoPE grid; the encoder reads the grid from its
input. Head counts are not stored: official widths use the size tables (ViT-g: 16 heads in
V-JEPA, 22 in V-JEPA 2's ``vit_giant_xformers``; predictor = encoder heads in V-JEPA, 12 in
V-JEPA 2), other widths need ``num_heads=`` / ``pred_num_heads=``.

One description of the architecture: the shapes are read into the method's own config
(:class:`jepa_video.vjepa.VJEPAConfig` / ``VJEPA2Config``: ``model`` plus ``data.crop_size`` and
``data.frames_per_clip``, :func:`infer_config`) and the modules are built by the pretraining
builders, :func:`jepa_video.vjepa.build_encoder` and :func:`jepa_video.vjepa.build_predictor`.

``rope_fix_tiling=True`` builds the corrected (interleaved) RoPE instead of the official tiled
frequencies; released weights need the default (the RoPE attention of
vjepa2:src/models/utils/modules.py; vjepa2 PR #15).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jepa_core import pretrained as P
from jepa_core.nn.pos_embed import sincos_3d
from jepa_core.pretrained import CheckpointView, Converter, LoadInfo, PretrainedError
from jepa_core.sizes import CUSTOM, config_num_heads, resolve_vit_size, vit_size_name

from jepa_video.nn import VIDEO_VIT_SIZES, VideoVisionTransformer, VJEPA2Predictor, VJEPAPredictor

if TYPE_CHECKING:
    from jepa_video.vjepa import VJEPA2Config, VJEPAConfig

log = logging.getLogger(__name__)

OFFICIAL_PREFIX = "module.backbone."
METHODS = ("vjepa", "vjepa2")
# vit_giant_xformers, the released V-JEPA 2 ViT-g, has 22 heads (vjepa2:src/hub/backbones.py).
VJEPA2_HEADS = {**P.OFFICIAL_HEADS, 1408: 22}
VJEPA2_PRED_HEADS = 12  # pred_num_heads: 12 in every V-JEPA 2 config and the hub

__all__ = ["CONVERTERS", "Pretrained", "arch_of", "config_from_arch", "convert", "from_pretrained",
           "hf_to_parts", "infer_arch", "infer_config", "load_pretrained", "match_vjepa", "match_vjepa2",
           "parts_to_hf"]


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


def _vjepa():
    """jepa_video.vjepa, imported on first use (``import jepa_video`` stays light)."""
    from jepa_video import vjepa

    return vjepa


def infer_config(
    parts: dict,
    method: str,
    num_heads: int | None = None,
    pred_num_heads: int | None = None,
    img_size: int | None = None,
    num_frames: int | None = None,
    rope_fix_tiling: bool = False,
    path_hint: str = "",
) -> tuple[VJEPAConfig | VJEPA2Config, list[str]]:
    """The method's own config (``VJEPAConfig`` / ``VJEPA2Config``: ``model``, ``data.crop_size``,
    ``data.frames_per_clip``) of ``parts`` (our names), from the shapes; ``(config, notes)``.
    ``build_model(config)`` builds the same modules."""
    if method not in METHODS:
        raise PretrainedError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    V = _vjepa()
    notes: list[str] = []
    enc = P.encoder_weights(parts)
    use_rope = method == "vjepa2"
    vit = P.infer_vit(enc, 5, f"{method} encoder", num_heads, VJEPA2_HEADS if use_rope else P.OFFICIAL_HEADS,
                      wrong_rank={4: "this is an image checkpoint (patch_embed.proj.weight is 4-D {shape}: a Conv2d "
                                     "patch embedding); load it with jepa_image.from_pretrained"})
    dim, tubelet, patch = vit.embed_dim, vit.kernel[0], vit.patch_size
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
    name = vit_size_name(dim, vit.depth, vit.num_heads, vit.mlp_ratio, VIDEO_VIT_SIZES)
    model_cls = V.VJEPA2ModelConfig if use_rope else V.VJEPAModelConfig
    model = model_cls(
        encoder=name or CUSTOM, in_chans=vit.in_chans, patch_size=patch, tubelet_size=tubelet,
        uniform_power=uniform_power, use_rope=use_rope, rope_fix_tiling=bool(rope_fix_tiling and use_rope),
        **({} if name else dict(embed_dim=dim, depth=vit.depth, num_heads=vit.num_heads, mlp_ratio=vit.mlp_ratio)),
    )
    pred = parts.get("predictor")
    if pred:
        if "mask_token" in pred:
            raise PretrainedError("the predictor has one mask_token (an I-JEPA predictor); load it with jepa_image")
        ntok = P.block_count(pred, "mask_tokens.") if any(k.startswith("mask_tokens.") for k in pred) else 0
        if ntok == 0:
            raise PretrainedError("the predictor has no mask_tokens.{i}: use_mask_tokens=False predictors are "
                                  "not supported (no released checkpoint has them)")
        # V-JEPA: num_heads = encoder heads (jepa:app/vjepa/utils.py); V-JEPA 2: pred_num_heads 12
        pheads = pred_num_heads or (VJEPA2_PRED_HEADS if use_rope else vit.num_heads)
        pdim, pdepth, pheads, pratio = P.infer_predictor(pred, "video predictor", pheads)
        if use_rope and "predictor_pos_embed" in pred:
            notes.append("predictor_pos_embed is present but unused with RoPE: dropped")
        model.pred_emb_dim, model.pred_depth, model.pred_num_heads = pdim, pdepth, pheads
        model.pred_mlp_ratio, model.num_mask_tokens = pratio, ntok
    cfg = (V.VJEPA2Config if use_rope else V.VJEPAConfig)(model=model)
    cfg.data.crop_size, cfg.data.frames_per_clip = size, frames
    return cfg, notes


def arch_of(cfg: VJEPAConfig | VJEPA2Config, with_predictor: bool = True) -> dict:
    """The flat architecture summary of ``cfg`` (what :class:`LoadInfo` reports and
    ``jepa convert --to ours`` stores)."""
    m, d = cfg.model, cfg.data
    dim, depth, heads, ratio = resolve_vit_size(m.encoder, m.embed_dim, m.depth, m.num_heads, m.mlp_ratio,
                                                VIDEO_VIT_SIZES)
    arch: dict[str, Any] = dict(
        method=cfg.method, img_size=d.crop_size, num_frames=d.frames_per_clip, patch_size=m.patch_size,
        tubelet_size=m.tubelet_size, in_chans=m.in_chans, embed_dim=dim, depth=depth, num_heads=heads,
        mlp_ratio=ratio, use_rope=m.use_rope, uniform_power=m.uniform_power, rope_fix_tiling=m.rope_fix_tiling,
    )
    if with_predictor:
        arch.update(pred_embed_dim=m.pred_emb_dim, pred_depth=m.pred_depth, pred_num_heads=m.pred_num_heads or heads,
                    pred_mlp_ratio=m.pred_mlp_ratio or 4.0, num_mask_tokens=m.num_mask_tokens)
    return arch


def config_from_arch(arch: dict) -> VJEPAConfig | VJEPA2Config:
    """The inverse of :func:`arch_of`."""
    V = _vjepa()
    use_rope = bool(arch["use_rope"])
    model = (V.VJEPA2ModelConfig if use_rope else V.VJEPAModelConfig)(
        encoder=CUSTOM, embed_dim=arch["embed_dim"], depth=arch["depth"], num_heads=arch["num_heads"],
        mlp_ratio=arch["mlp_ratio"], in_chans=arch["in_chans"], patch_size=arch["patch_size"],
        tubelet_size=arch["tubelet_size"], uniform_power=arch["uniform_power"], use_rope=use_rope,
        rope_fix_tiling=arch["rope_fix_tiling"],
    )
    if "pred_embed_dim" in arch:
        model.pred_emb_dim, model.pred_depth = arch["pred_embed_dim"], arch["pred_depth"]
        model.pred_num_heads, model.pred_mlp_ratio = arch["pred_num_heads"], arch["pred_mlp_ratio"]
        model.num_mask_tokens = arch["num_mask_tokens"]
    cfg = (V.VJEPA2Config if use_rope else V.VJEPAConfig)(model=model)
    cfg.data.crop_size, cfg.data.frames_per_clip = arch["img_size"], arch["num_frames"]
    return cfg


def infer_arch(parts: dict, method: str, **hints) -> tuple[dict, list[str]]:
    """:func:`infer_config` (same ``hints``) as the flat :func:`arch_of` dict; ``(arch, notes)``."""
    cfg, notes = infer_config(parts, method, **hints)
    return arch_of(cfg, bool(parts.get("predictor"))), notes


def build_modules(
    cfg: VJEPAConfig | VJEPA2Config, img_size: int | None = None, num_frames: int | None = None,
    predictor: bool = True,
) -> tuple[VideoVisionTransformer, VJEPAPredictor | VJEPA2Predictor | None]:
    """Encoder (and predictor) of ``cfg``, optionally for another clip size, built by the
    pretraining builders (on the current default device, e.g. ``meta``)."""
    V = _vjepa()
    if img_size or num_frames:
        data = replace(cfg.data, crop_size=img_size or cfg.data.crop_size,
                       frames_per_clip=num_frames or cfg.data.frames_per_clip)
        # data keeps cfg.data's own class; mypy cannot pair the members of the cfg union
        cfg = replace(cfg, data=data)  # type: ignore[arg-type]
    encoder = V.build_encoder(cfg)
    return encoder, (V.build_predictor(cfg, encoder) if predictor else None)


def _drop_unused(parts: dict, arch: dict, ignored: list[str]) -> dict:
    if not arch["use_rope"]:
        return parts
    out = {}
    for p, sd in parts.items():
        drop = [k for k in sd if k in ("pos_embed", "predictor_pos_embed")]
        ignored += [f"{p}.{k}" for k in drop]
        out[p] = {k: v for k, v in sd.items() if k not in drop}
    return out


def _validate(parts: dict, cfg: VJEPAConfig | VJEPA2Config | dict, method: str | None = None) -> None:
    """Every key and shape of ``parts`` against the modules ``cfg`` (or an arch dict) builds."""
    cfg = config_from_arch(cfg) if isinstance(cfg, dict) else cfg
    method = method or cfg.method
    with torch.device("meta"):
        enc_m, pred_m = build_modules(cfg, predictor=bool(parts.get("predictor")))
        enc = P.expected_shapes(enc_m)
        pred = P.expected_shapes(pred_m) if pred_m is not None else None
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
        heads = config_num_heads(m, VIDEO_VIT_SIZES)
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
        method = recorded or ("vjepa2" if fmt == "hf" else _layout(parts))
    if method == "ijepa":
        raise PretrainedError(f"{raw.path!r} holds an image (I-JEPA) encoder; load it with jepa_image.from_pretrained")
    h = _hints_from(stored, run_cfg, raw.meta.get("hf_config") or {})
    h.update({k: v for k, v in hints.items() if v is not None and v is not False})
    cfg, notes = infer_config(parts, method, path_hint=raw.path, **h)
    arch = arch_of(cfg, bool(parts.get("predictor")))
    parts = _drop_unused(parts, arch, ignored)
    _validate(parts, cfg, method)
    info = LoadInfo(raw.path, fmt if raw.container != "hf-folder" else "hf", method, arch=arch,
                    parts=tuple(p for p in P.PARTS if parts.get(p)), notes=notes, ignored=ignored)
    return raw, parts, info, cfg


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

    ``which``: ``target_encoder`` (the official evaluations' choice, jepa:evals/video_classification_frozen/
    eval.py ``init_model``, ``checkpoint_key: target_encoder``) or
    ``encoder`` (the context encoder; what the V-JEPA 2 hub and Hugging Face weights use).
    ``method``: ``vjepa`` / ``vjepa2`` (default: from the file). ``img_size`` / ``num_frames``:
    for V-JEPA, build at another clip size (tables recomputed); for V-JEPA 2, the predictor's
    RoPE grid. ``rope_fix_tiling``: the corrected RoPE (does not match released weights).
    """
    raw, parts, info, cfg = _read(path, method, num_heads=num_heads, pred_num_heads=pred_num_heads,
                                  rope_fix_tiling=rope_fix_tiling, img_size=img_size, num_frames=num_frames)
    arch = info.arch
    if with_predictor and not parts.get("predictor"):
        raise PretrainedError(f"{info.path!r} holds no predictor ({info.format} layout: {', '.join(info.parts)}); "
                              "use with_predictor=False")
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
        encoder, predictor = build_modules(cfg, size, frames, predictor=with_predictor)
    P.load_into(encoder, enc_sd, f"{info.method} {which}").to(device)
    if predictor is not None:
        pred_sd = dict(parts["predictor"])
        if not arch["use_rope"]:
            pred_sd["predictor_pos_embed"] = _resized(pred_sd["predictor_pos_embed"], arch["pred_embed_dim"], old, new,
                                                      arch["uniform_power"], info.notes, "predictor_pos_embed")
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
    raw, parts, info, _ = _read(raw, method, **hints)
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


# ---------------------------------------------------------------------------------------------
# the converters (entry points jepa.converters: vjepa, vjepa2)

# transformers' V-JEPA 2 names (VJEPA2Model, base prefix ``vjepa2.``;
# transformers:models/vjepa2/convert_vjepa2_to_hf.py)
_HF_KEYS = re.compile(r"^(?:vjepa2\.)?(?:encoder\.embeddings\.patch_embeddings\.proj\.|"
                      r"(?:encoder|predictor)\.layer\.\d+\.attention\.(?:query|key|value|proj)\.|"
                      r"predictor\.embeddings\.)")


def _layout(parts: dict) -> str:
    """``vjepa`` (Conv3d tubelets + ``pos_embed``), ``vjepa2`` (Conv3d, no ``pos_embed``: RoPE);
    for anything else an error naming the right loader."""
    rank = P.patch_embedding_rank(parts)
    if rank == 5:
        enc = parts.get("encoder") or parts.get("target_encoder") or {}
        return "vjepa" if "pos_embed" in enc else "vjepa2"
    if rank == 4:
        raise PretrainedError("this file holds an image (I-JEPA) encoder (a Conv2d patch embedding); "
                              "load it with jepa_image.from_pretrained")
    enc = parts.get("encoder") or parts.get("target_encoder") or {}
    raise PretrainedError(
        "no ViT encoder in the weights (no patch_embed.proj.weight after removing module./backbone. prefixes; "
        f"found e.g. {P._short(enc, 5)}): this is not a V-JEPA / V-JEPA 2 checkpoint"
    )


def _layout_or_none(view: CheckpointView) -> str:
    return _layout(view.parts) if view.patch_rank == 5 else ""


def match_vjepa(view: CheckpointView) -> float:
    """V-JEPA's files: a 3-D (Conv3d) patch embedding and a ``pos_embed`` table (no HF layout)."""
    return 1.0 if view.format != "hf" and _layout_or_none(view) == "vjepa" else 0.0


def match_vjepa2(view: CheckpointView) -> float:
    """V-JEPA 2's files: a 3-D patch embedding without ``pos_embed`` (RoPE); in the Hugging Face
    layout, ``model_type: vjepa2`` in ``config.json`` (2) or V-JEPA 2 key names (1)."""
    if view.format == "hf":
        model_type = view.hf_config.get("model_type")
        if model_type:
            return 2.0 if model_type == "vjepa2" else 0.0
        return 1.0 if any(_HF_KEYS.match(k) for k in view.keys) else 0.0
    return 1.0 if _layout_or_none(view) == "vjepa2" else 0.0


VJEPA_CONVERTER = Converter(
    name="vjepa", match=match_vjepa, convert=convert, load=partial(from_pretrained, method="vjepa"),
    package="jepa-video",
    description="V-JEPA: official .pth.tar (3-D sin-cos pos_embed), jepa files",
)
VJEPA2_CONVERTER = Converter(
    name="vjepa2", match=match_vjepa2, convert=convert, load=partial(from_pretrained, method="vjepa2"),
    package="jepa-video",
    description="V-JEPA 2: official .pt (3-D RoPE), Hugging Face facebook/vjepa2-*, jepa files",
)
CONVERTERS = {c.name: c for c in (VJEPA_CONVERTER, VJEPA2_CONVERTER)}
