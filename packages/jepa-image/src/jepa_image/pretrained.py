"""Load Meta's I-JEPA checkpoints (and their Hugging Face and jepa forms) with numerical parity.

One line::

    encoder = jepa_image.from_pretrained("IN1K-vit.h.14-300e.pth.tar")          # target encoder
    encoder, predictor = jepa_image.from_pretrained(path, which="encoder", with_predictor=True)

The format is read from the file's contents (:func:`jepa_core.pretrained.detect_format`):

- official ``.pth.tar`` (ijepa:src/train.py ``save_checkpoint``): ``encoder``, ``predictor``,
  ``target_encoder`` with the DDP ``module.`` prefix; parameter names equal ours;
- Hugging Face ``facebook/ijepa_*`` (``model.safetensors``, one encoder: the official
  ``encoder`` entry, transformers:models/ijepa/convert_ijepa_to_hf.py), in the ViT key layout
  of the hub files (``encoder.layer.{i}.attention.attention.{query,key,value}``, ...) or the
  transformers >= 5 module names (``layers.{i}.attention.{q,k,v,o}_proj``, ...);
- the Trainer's ``step-N.pt``, ``jepa convert`` output (torch or safetensors), a bare state dict.

The architecture comes from the shapes: width and depth from the blocks, patch size and input
channels from ``patch_embed.proj.weight``, resolution from ``pos_embed`` (N = (img/patch)^2),
the 2-D table order by comparing ``pos_embed`` with both sin-cos orders (I-JEPA: column half
first, ijepa:src/models/vision_transformer.py ``get_2d_sincos_pos_embed``), MLP ratio from
``fc1``, predictor width / depth from its Linears. Head counts are not stored in any file: they
come from the official size table (ViT-g: 16 heads, ijepa:src/models/vision_transformer.py
``vit_giant``) or ``num_heads=``; the predictor uses the encoder's head count as
ijepa:src/helper.py ``init_model`` does.

One description of the architecture: the shapes are read into I-JEPA's own
:class:`jepa_image.ijepa.IJEPAConfig` (``model`` + ``data.image_size``, :func:`infer_config`)
and the modules are built by the pretraining builders, :func:`jepa_image.ijepa.build_encoder`
and :func:`jepa_image.ijepa.build_predictor`. This module also provides the ``ijepa``
:class:`jepa_core.pretrained.Converter` (entry point ``jepa.converters``): a file is I-JEPA's
if its encoder has a 2-D (Conv2d) patch embedding, or if it is in the Hugging Face I-JEPA
layout (``config.json`` ``model_type: ijepa``, or ViT key names).

At another ``img_size`` the position tables are recomputed (exact: they are fixed sin-cos
functions; the official ``interpolate_pos_encoding`` in ijepa:src/models/vision_transformer.py
assumes a class token and fails there), or resampled bicubically if the stored table is not the
analytic one.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jepa_core import pretrained as P
from jepa_core.nn import VIT_SIZES, VisionTransformer, VisionTransformerPredictor
from jepa_core.nn.pos_embed import Order2D, sincos_2d
from jepa_core.pretrained import CheckpointView, Converter, LoadInfo, PretrainedError
from jepa_core.sizes import CUSTOM, config_num_heads, resolve_vit_size, vit_size_name

from jepa_image import ijepa
from jepa_image.ijepa import IJEPAConfig, IJEPAModelConfig

log = logging.getLogger(__name__)

METHOD = "ijepa"
OFFICIAL_PREFIX = "module."  # DDP over the bare model (ijepa:src/train.py)

__all__ = ["CONVERTER", "Pretrained", "arch_of", "config_from_arch", "convert", "from_pretrained", "hf_to_parts",
           "infer_arch", "infer_config", "load_pretrained", "match", "parts_to_hf"]


@dataclass
class Pretrained:
    encoder: VisionTransformer
    predictor: VisionTransformerPredictor | None
    info: LoadInfo


# ---------------------------------------------------------------------------------------------
# Hugging Face layout

_ENC = r"(?:encoder\.layer|layers)\.(\d+)\."
HF_RULES = [
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (_ENC + r"layernorm_before\.(weight|bias)", r"blocks.\1.norm1.\2"),
    (_ENC + r"layernorm_after\.(weight|bias)", r"blocks.\1.norm2.\2"),
    (_ENC + r"attention\.attention\.(query|key|value)\.(weight|bias)", r"blocks.\1.attn.\2.\3"),
    (_ENC + r"attention\.(q_proj|k_proj|v_proj)\.(weight|bias)", r"blocks.\1.attn.\2.\3"),
    (_ENC + r"attention\.output\.dense\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (_ENC + r"attention\.o_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (_ENC + r"intermediate\.dense\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (_ENC + r"output\.dense\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    (_ENC + r"mlp\.(fc1|fc2)\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
    (r"layernorm\.(weight|bias)", r"norm.\1"),
]


def hf_to_parts(tensors: dict, hf_config: dict | None = None) -> tuple[dict, list[str]]:
    """Hugging Face I-JEPA keys -> ``{"encoder": ours}``; pooler / classifier keys are ignored."""
    sd = P.strip_prefixes(tensors, ("ijepa.",))
    renamed, unmatched = P.rename(sd, HF_RULES)
    ignored = [k for k in unmatched if k.startswith(("pooler.", "classifier."))]
    rest = [k for k in unmatched if k not in ignored]
    if rest:
        raise PretrainedError(f"unexpected keys in the Hugging Face I-JEPA layout: {P._short(rest)}")
    enc = P.fuse_qkv(renamed, r"(blocks\.\d+\.attn\.)(query|key|value|q_proj|k_proj|v_proj)(\.weight|\.bias)",
                     "{0}qkv{1}")
    return {"encoder": enc}, ignored


def parts_to_hf(encoder: dict) -> dict:
    """Ours -> the Hugging Face hub layout of ``facebook/ijepa_*`` (the key mapping and the row
    split of transformers:models/ijepa/convert_ijepa_to_hf.py)."""
    out = {}
    for k, v in encoder.items():
        if k == "pos_embed":
            out["embeddings.position_embeddings"] = v
        elif k.startswith("patch_embed.proj."):
            out["embeddings.patch_embeddings.projection." + k.split(".")[-1]] = v
        elif k.startswith("norm."):
            out["layernorm." + k.split(".")[-1]] = v
        else:
            _, i, *rest = k.split(".")
            name, leaf = ".".join(rest[:-1]), rest[-1]
            pre = f"encoder.layer.{i}."
            if name == "attn.qkv":
                for n, t in zip(("query", "key", "value"), P.split_qkv(v)):
                    out[f"{pre}attention.attention.{n}.{leaf}"] = t
            else:
                new = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.output.dense",
                       "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}[name]
                out[f"{pre}{new}.{leaf}"] = v
    return out


def hf_config(arch: dict) -> dict:
    """A ``config.json`` for transformers' ``IJepaModel`` (its field names)."""
    return {
        "model_type": "ijepa", "architectures": ["IJepaModel"], "hidden_size": arch["embed_dim"],
        "num_hidden_layers": arch["depth"], "num_attention_heads": arch["num_heads"],
        "intermediate_size": int(arch["embed_dim"] * arch["mlp_ratio"]), "mlp_ratio": arch["mlp_ratio"],
        "image_size": arch["img_size"], "patch_size": arch["patch_size"], "num_channels": arch["in_chans"],
        "layer_norm_eps": 1e-6, "qkv_bias": True, "hidden_act": "gelu",
    }


# ---------------------------------------------------------------------------------------------
# architecture from the weights


def _hints_from(stored: dict, run_cfg: dict, hf_cfg: dict) -> dict:
    h: dict[str, Any] = {}
    if stored:
        h.update(num_heads=stored.get("num_heads"), pred_num_heads=stored.get("pred_num_heads"))
    if run_cfg:
        m = run_cfg.get("model") or {}
        heads = config_num_heads(m, VIT_SIZES)
        h.update(num_heads=heads, pred_num_heads=m.get("pred_num_heads") or heads)
    if hf_cfg:
        h.update(num_heads=hf_cfg.get("num_attention_heads"))
    return {k: v for k, v in h.items() if v}


def _order_of(table: torch.Tensor, dim: int, grid: int, notes: list[str], what: str) -> tuple[Order2D, bool]:
    for order in ("wh", "hw"):
        if P.table_matches(table, sincos_2d(dim, grid, order=order)):
            if order == "hw":
                notes.append(f"{what}: row-first 2-D table (V-JEPA's image convention), not I-JEPA's column-first")
            return order, True
    notes.append(f"{what} is not a fixed sin-cos table (kept as stored; resized bicubically at other sizes)")
    return "wh", False


def infer_config(
    parts: dict, num_heads: int | None = None, pred_num_heads: int | None = None
) -> tuple[IJEPAConfig, list[str]]:
    """I-JEPA's own config (``model`` and ``data.image_size``) of ``parts`` (our names), from the
    tensor shapes; ``(config, notes)``. ``build_model(config)`` builds the same modules."""
    notes: list[str] = []
    enc = P.encoder_weights(parts)
    vit = P.infer_vit(enc, 4, "I-JEPA encoder", num_heads, wrong_rank={5: (
        "this is a video checkpoint (patch_embed.proj.weight is 5-D {shape}: a Conv3d tubelet embedding); "
        "load it with jepa_video.from_pretrained")})
    dim, patch = vit.embed_dim, vit.patch_size
    pos = P.shape_of(enc, "pos_embed", "I-JEPA encoder")
    n = pos[1]
    grid = math.isqrt(n)
    if grid * grid != n or pos[2] != dim:
        raise PretrainedError(f"pos_embed {list(pos)} is not a square [1, N, {dim}] table")
    order, _ = _order_of(enc["pos_embed"], dim, grid, notes, "pos_embed")
    name = vit_size_name(dim, vit.depth, vit.num_heads, vit.mlp_ratio, VIT_SIZES)
    sizes: dict[str, Any] = {} if name else dict(
        embed_dim=dim, depth=vit.depth, num_heads=vit.num_heads, mlp_ratio=vit.mlp_ratio)
    model = IJEPAModelConfig(
        encoder=name or CUSTOM, patch_size=patch, in_chans=vit.in_chans, pos_embed_order=order, **sizes,
    )
    pred = parts.get("predictor")
    if pred:
        if "mask_tokens.0" in pred:
            raise PretrainedError("the predictor has mask_tokens.{i} (a V-JEPA predictor); load it with jepa_video")
        # heads: the encoder's unless told (ijepa:src/helper.py init_model: num_heads=encoder.num_heads)
        pdim, pdepth, pheads, pratio = P.infer_predictor(pred, "I-JEPA predictor", pred_num_heads or vit.num_heads)
        ppos = P.shape_of(pred, "predictor_pos_embed", "I-JEPA predictor")
        if ppos[1] != n:
            raise PretrainedError(f"predictor_pos_embed has {ppos[1]} positions, the encoder {n}")
        model.pred_emb_dim, model.pred_depth, model.pred_num_heads, model.pred_mlp_ratio = pdim, pdepth, pheads, pratio
    cfg = IJEPAConfig(model=model)
    cfg.data.image_size = grid * patch
    return cfg, notes


def arch_of(cfg: IJEPAConfig, with_predictor: bool = True) -> dict:
    """The flat architecture summary of ``cfg`` (what :class:`LoadInfo` reports and
    ``jepa convert --to ours`` stores)."""
    m = cfg.model
    dim, depth, heads, ratio = resolve_vit_size(m.encoder, m.embed_dim, m.depth, m.num_heads, m.mlp_ratio, VIT_SIZES)
    arch = dict(method=METHOD, img_size=cfg.data.image_size, patch_size=m.patch_size, in_chans=m.in_chans,
                embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=ratio, pos_embed_order=m.pos_embed_order)
    if with_predictor:
        arch.update(pred_embed_dim=m.pred_emb_dim, pred_depth=m.pred_depth, pred_num_heads=m.pred_num_heads or heads,
                    pred_mlp_ratio=m.pred_mlp_ratio or 4.0)
    return arch


def config_from_arch(arch: dict) -> IJEPAConfig:
    """The inverse of :func:`arch_of`."""
    model = IJEPAModelConfig(
        encoder=CUSTOM, embed_dim=arch["embed_dim"], depth=arch["depth"], num_heads=arch["num_heads"],
        mlp_ratio=arch["mlp_ratio"], patch_size=arch["patch_size"], in_chans=arch["in_chans"],
        pos_embed_order=arch.get("pos_embed_order", "wh"),
    )
    if "pred_embed_dim" in arch:
        model.pred_emb_dim, model.pred_depth = arch["pred_embed_dim"], arch["pred_depth"]
        model.pred_num_heads, model.pred_mlp_ratio = arch["pred_num_heads"], arch["pred_mlp_ratio"]
    cfg = IJEPAConfig(model=model)
    cfg.data.image_size = arch["img_size"]
    return cfg


def infer_arch(parts: dict, num_heads: int | None = None, pred_num_heads: int | None = None) -> tuple[dict, list[str]]:
    """:func:`infer_config` as the flat :func:`arch_of` dict; ``(arch, notes)``."""
    cfg, notes = infer_config(parts, num_heads, pred_num_heads)
    return arch_of(cfg, bool(parts.get("predictor"))), notes


def build_modules(
    cfg: IJEPAConfig, img_size: int | None = None, predictor: bool = True
) -> tuple[VisionTransformer, VisionTransformerPredictor | None]:
    """Encoder (and predictor) of ``cfg`` at ``img_size`` (default ``cfg.data.image_size``),
    built by the pretraining builders (on the current default device, e.g. ``meta``)."""
    encoder = ijepa.build_encoder(cfg.model, img_size or cfg.data.image_size)
    return encoder, (ijepa.build_predictor(cfg.model, encoder) if predictor else None)


def _resized(table: torch.Tensor, dim: int, old: int, new: int, order: Order2D, notes: list[str], what: str):
    if old == new:
        return table
    if P.table_matches(table, sincos_2d(dim, old, order=order)):
        notes.append(f"{what}: {old}x{old} -> {new}x{new} grid, sin-cos table recomputed (exact)")
        return sincos_2d(dim, new, order=order).unsqueeze(0).to(table.dtype)
    notes.append(f"{what}: {old}x{old} -> {new}x{new} grid, resampled bicubically (the stored table is not sin-cos)")
    return P.resize_table_2d(table, (old, old), (new, new))


def _validate(parts: dict, cfg: IJEPAConfig | dict) -> None:
    """Every key and shape of ``parts`` against the modules ``cfg`` (or an arch dict) builds."""
    cfg = config_from_arch(cfg) if isinstance(cfg, dict) else cfg
    with torch.device("meta"):
        enc_m, pred_m = build_modules(cfg, predictor=bool(parts.get("predictor")))
        enc = P.expected_shapes(enc_m)
        pred = P.expected_shapes(pred_m) if pred_m is not None else None
    for p in ("encoder", "target_encoder"):
        if parts.get(p):
            P.check_state_dict(enc, parts[p], f"I-JEPA {p}", "is this an I-JEPA checkpoint?")
    if parts.get("predictor") and pred is not None:
        P.check_state_dict(pred, parts["predictor"], "I-JEPA predictor", "pass pred_num_heads= if the heads differ")


def _read(path_or_raw, **hints):
    raw = path_or_raw if isinstance(path_or_raw, P.RawCheckpoint) else P.read_checkpoint(path_or_raw)
    fmt = P.detect_format(raw)
    parts, ignored, stored, run_cfg = P.canonical_parts(raw, fmt, hf_to_parts)
    if stored.get("method") not in (None, METHOD) or (run_cfg.get("method") not in (None, METHOD)):
        m = stored.get("method") or run_cfg.get("method")
        raise PretrainedError(f"{raw.path!r} is a {m} checkpoint, not I-JEPA; load it with jepa_video.from_pretrained")
    h = _hints_from(stored, run_cfg, raw.meta.get("hf_config") or {})
    h.update({k: v for k, v in hints.items() if v})
    cfg, notes = infer_config(parts, h.get("num_heads"), h.get("pred_num_heads"))
    _validate(parts, cfg)
    info = LoadInfo(raw.path, fmt if raw.container != "hf-folder" else "hf", METHOD,
                    arch=arch_of(cfg, bool(parts.get("predictor"))),
                    parts=tuple(p for p in P.PARTS if parts.get(p)), notes=notes, ignored=ignored)
    if fmt == "hf":
        info.notes.append("Hugging Face I-JEPA files hold one encoder: the official `encoder` (context) entry")
    return raw, parts, info, cfg


def load_pretrained(
    path: str | Path,
    which: str = "target_encoder",
    with_predictor: bool = False,
    img_size: int | None = None,
    num_heads: int | None = None,
    pred_num_heads: int | None = None,
    dtype: torch.dtype | None = torch.float32,
    device: str | torch.device = "cpu",
) -> Pretrained:
    """Build the I-JEPA encoder (and predictor) of a checkpoint; see the module doc.

    ``which``: ``target_encoder`` (the EMA encoder, what evaluations use) or ``encoder`` (the context encoder, what the Hugging Face weights hold). ``img_size``: run
    at another resolution (position tables recomputed). ``num_heads`` / ``pred_num_heads``: for
    non-official widths (the files store no head counts). ``dtype``: cast floating weights
    (None keeps the stored dtype).
    """
    raw, parts, info, cfg = _read(path, num_heads=num_heads, pred_num_heads=pred_num_heads)
    arch = info.arch
    if with_predictor and not parts.get("predictor"):
        raise PretrainedError(
            f"{info.path!r} holds no predictor ({info.format} layout: {', '.join(info.parts)}); "
            "use with_predictor=False, or an official .pth.tar file"
        )
    parts = P.cast_parts(parts, dtype)
    which, enc_sd = P.pick_encoder(parts, which, info.notes)
    info.which = which
    size = img_size or arch["img_size"]
    if size % arch["patch_size"]:
        raise PretrainedError(f"img_size {size} is not a multiple of the patch size {arch['patch_size']}")
    old, new = arch["img_size"] // arch["patch_size"], size // arch["patch_size"]
    enc_sd["pos_embed"] = _resized(enc_sd["pos_embed"], arch["embed_dim"], old, new, arch["pos_embed_order"],
                                   info.notes, "pos_embed")
    with torch.device("meta"):
        encoder, predictor = build_modules(cfg, size, predictor=with_predictor)
    P.load_into(encoder, enc_sd, f"I-JEPA {which}").to(device)
    if predictor is not None:
        pred_sd = dict(parts["predictor"])
        pred_sd["predictor_pos_embed"] = _resized(pred_sd["predictor_pos_embed"], arch["pred_embed_dim"], old, new,
                                                  arch["pos_embed_order"], info.notes, "predictor_pos_embed")
        P.load_into(predictor, pred_sd, "I-JEPA predictor").to(device)
    encoder.eval()
    if predictor is not None:
        predictor.eval()
    encoder.pretrained_info = info  # type: ignore[attr-defined]
    log.info("%s", info.summary())
    return Pretrained(encoder, predictor, info)


def from_pretrained(path: str | Path, which: str = "target_encoder", with_predictor: bool = False, **kwargs):
    """The encoder of an I-JEPA checkpoint (official, Hugging Face or ours), or ``(encoder,
    predictor)`` with ``with_predictor=True``. What was found is logged and kept in
    ``encoder.pretrained_info``. Options: see :func:`load_pretrained`."""
    out = load_pretrained(path, which=which, with_predictor=with_predictor, **kwargs)
    return (out.encoder, out.predictor) if with_predictor else out.encoder


def convert(raw, out: Path, to: str = "ours", method: str = METHOD, **hints) -> LoadInfo:
    """Write the checkpoint ``raw`` (a path or :class:`jepa_core.pretrained.RawCheckpoint`) as
    ``ours``, ``safetensors``, ``official`` or ``hf``; tensors are copied bit for bit."""
    raw, parts, info, _ = _read(raw, **hints)
    out = Path(out)
    if to == "hf":
        out.mkdir(parents=True, exist_ok=True)
        which, enc = P.pick_encoder(parts, "encoder", info.notes)
        P.write_safetensors(parts_to_hf(enc), out / "model.safetensors", {"format": "pt"})
        (out / "config.json").write_text(json.dumps(hf_config(info.arch), indent=2))
        info.notes.append(f"wrote the {which} only (the Hugging Face I-JEPA model has no predictor)")
    else:
        extra = {"epoch": raw.obj["epoch"]} if to == "official" and "epoch" in raw.obj else None
        P.write_parts(parts, info.arch, METHOD, out, to, OFFICIAL_PREFIX, extra)
    return info


# ---------------------------------------------------------------------------------------------
# the converter (entry point jepa.converters: ijepa)

# transformers' I-JEPA names (IJepaModel, base prefix ``ijepa.``): the ViT layout of the hub files
# or the transformers >= 5 module names (transformers:models/ijepa/convert_ijepa_to_hf.py)
_HF_KEYS = re.compile(r"^(?:ijepa\.)?(?:embeddings\.patch_embeddings\.projection\.|"
                      r"encoder\.layer\.\d+\.attention\.attention\.|layers\.\d+\.attention\.[qkvo]_proj\.)")


def match(view: CheckpointView) -> float:
    """Whether a file is I-JEPA's: an encoder with a 2-D (Conv2d) patch embedding; in the
    Hugging Face layout, ``model_type: ijepa`` in ``config.json`` (2) or I-JEPA key names (1)."""
    if view.format == "hf":
        model_type = view.hf_config.get("model_type")
        if model_type:
            return 2.0 if model_type == METHOD else 0.0
        return 1.0 if any(_HF_KEYS.match(k) for k in view.keys) else 0.0
    return 1.0 if view.patch_rank == 4 else 0.0


CONVERTER = Converter(
    name=METHOD, match=match, convert=convert, load=from_pretrained, package="jepa-image",
    description="I-JEPA: official .pth.tar, Hugging Face facebook/ijepa_*, jepa files",
)
CONVERTERS = {METHOD: CONVERTER}
