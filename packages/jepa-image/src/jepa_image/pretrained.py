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
come from the official size table (ViT-g: 16 heads, reference A.1) or ``num_heads=``; the
predictor uses the encoder's head count as ijepa:src/helper.py ``init_model`` does.

At another ``img_size`` the position tables are recomputed (exact: they are fixed sin-cos
functions; the official ``interpolate_pos_encoding`` assumes a class token and fails there,
reference A.1), or resampled bicubically if the stored table is not the analytic one.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jepa_core import pretrained as P
from jepa_core.nn import VisionTransformer, VisionTransformerPredictor
from jepa_core.nn.pos_embed import sincos_2d
from jepa_core.nn.vit import VIT_SIZES
from jepa_core.pretrained import LoadInfo, PretrainedError

log = logging.getLogger(__name__)

METHOD = "ijepa"
OFFICIAL_PREFIX = "module."  # DDP over the bare model (ijepa:src/train.py)

__all__ = ["Pretrained", "from_pretrained", "load_pretrained", "convert", "hf_to_parts", "parts_to_hf",
           "infer_arch"]


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
        heads = m.get("num_heads") or (VIT_SIZES.get(m.get("encoder"), (0, 0, None))[2])
        h.update(num_heads=heads, pred_num_heads=m.get("pred_num_heads") or heads)
    if hf_cfg:
        h.update(num_heads=hf_cfg.get("num_attention_heads"))
    return {k: v for k, v in h.items() if v}


def _order_of(table: torch.Tensor, dim: int, grid: int, notes: list[str], what: str) -> tuple[str, bool]:
    for order in ("wh", "hw"):
        if P.table_matches(table, sincos_2d(dim, grid, order=order)):
            if order == "hw":
                notes.append(f"{what}: row-first 2-D table (V-JEPA's image convention), not I-JEPA's column-first")
            return order, True
    notes.append(f"{what} is not a fixed sin-cos table (kept as stored; resized bicubically at other sizes)")
    return "wh", False


def infer_arch(parts: dict, num_heads: int | None = None, pred_num_heads: int | None = None) -> tuple[dict, list[str]]:
    """The I-JEPA architecture of ``parts`` (our names) from the tensor shapes; ``(arch, notes)``."""
    notes: list[str] = []
    enc = parts.get("encoder") or parts.get("target_encoder")
    if not enc:
        raise PretrainedError("no encoder weights in the file")
    w = P.shape_of(enc, "patch_embed.proj.weight", "I-JEPA encoder")
    if len(w) == 5:
        raise PretrainedError(
            f"this is a video checkpoint (patch_embed.proj.weight is 5-D {list(w)}: a Conv3d tubelet embedding); "
            "load it with jepa_video.from_pretrained"
        )
    if len(w) != 4 or w[2] != w[3]:
        raise PretrainedError(f"patch_embed.proj.weight {list(w)} is not a square Conv2d patch embedding")
    dim, chans, patch = w[0], w[1], w[2]
    depth = P.block_count(enc, "blocks.")
    if depth == 0:
        raise PretrainedError("the encoder has no blocks.{i}.* weights")
    hidden = P.shape_of(enc, "blocks.0.mlp.fc1.weight", "I-JEPA encoder")[0]
    heads = P.heads_for(dim, num_heads, "I-JEPA encoder")
    pos = P.shape_of(enc, "pos_embed", "I-JEPA encoder")
    n = pos[1]
    grid = math.isqrt(n)
    if grid * grid != n or pos[2] != dim:
        raise PretrainedError(f"pos_embed {list(pos)} is not a square [1, N, {dim}] table")
    order, analytic = _order_of(enc["pos_embed"], dim, grid, notes, "pos_embed")
    arch = dict(method=METHOD, img_size=grid * patch, patch_size=patch, in_chans=chans, embed_dim=dim, depth=depth,
                num_heads=heads, mlp_ratio=P.mlp_ratio_for(dim, hidden), pos_embed_order=order)
    pred = parts.get("predictor")
    if pred:
        if "mask_tokens.0" in pred:
            raise PretrainedError("the predictor has mask_tokens.{i} (a V-JEPA predictor); load it with jepa_video")
        pdim = P.shape_of(pred, "predictor_embed.weight", "I-JEPA predictor")[0]
        pdepth = P.block_count(pred, "predictor_blocks.")
        phidden = P.shape_of(pred, "predictor_blocks.0.mlp.fc1.weight", "I-JEPA predictor")[0]
        pheads = pred_num_heads or heads  # ijepa:src/helper.py: num_heads=encoder.num_heads
        if pdim % pheads:
            raise PretrainedError(f"predictor width {pdim} is not divisible by {pheads} heads; pass pred_num_heads=")
        ppos = P.shape_of(pred, "predictor_pos_embed", "I-JEPA predictor")
        if ppos[1] != n:
            raise PretrainedError(f"predictor_pos_embed has {ppos[1]} positions, the encoder {n}")
        arch.update(pred_embed_dim=pdim, pred_depth=pdepth, pred_num_heads=pheads,
                    pred_mlp_ratio=P.mlp_ratio_for(pdim, phidden))
    return arch, notes


def build_encoder(arch: dict, img_size: int | None = None) -> VisionTransformer:
    return VisionTransformer(
        img_size=img_size or arch["img_size"], patch_size=arch["patch_size"], in_chans=arch["in_chans"],
        embed_dim=arch["embed_dim"], depth=arch["depth"], num_heads=arch["num_heads"], mlp_ratio=arch["mlp_ratio"],
        pos_embed_order=arch["pos_embed_order"],
    )


def build_predictor(arch: dict, img_size: int | None = None) -> VisionTransformerPredictor:
    grid = (img_size or arch["img_size"]) // arch["patch_size"]
    return VisionTransformerPredictor(
        num_patches=grid * grid, embed_dim=arch["embed_dim"], predictor_embed_dim=arch["pred_embed_dim"],
        depth=arch["pred_depth"], num_heads=arch["pred_num_heads"], mlp_ratio=arch["pred_mlp_ratio"],
        pos_embed_order=arch["pos_embed_order"],
    )


def _resized(table: torch.Tensor, dim: int, old: int, new: int, order: str, notes: list[str], what: str):
    if old == new:
        return table
    if P.table_matches(table, sincos_2d(dim, old, order=order)):
        notes.append(f"{what}: {old}x{old} -> {new}x{new} grid, sin-cos table recomputed (exact)")
        return sincos_2d(dim, new, order=order).unsqueeze(0).to(table.dtype)
    notes.append(f"{what}: {old}x{old} -> {new}x{new} grid, resampled bicubically (the stored table is not sin-cos)")
    return P.resize_table_2d(table, (old, old), (new, new))


def _validate(parts: dict, arch: dict) -> None:
    with torch.device("meta"):
        enc = P.expected_shapes(build_encoder(arch))
        pred = P.expected_shapes(build_predictor(arch)) if "pred_embed_dim" in arch else None
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
    arch, notes = infer_arch(parts, h.get("num_heads"), h.get("pred_num_heads"))
    _validate(parts, arch)
    info = LoadInfo(raw.path, fmt if raw.container != "hf-folder" else "hf", METHOD, arch=arch,
                    parts=tuple(p for p in P.PARTS if parts.get(p)), notes=notes, ignored=ignored)
    if fmt == "hf":
        info.notes.append("Hugging Face I-JEPA files hold one encoder: the official `encoder` (context) entry")
    return raw, parts, info


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

    ``which``: ``target_encoder`` (the EMA encoder the official evaluations use, reference A.5)
    or ``encoder`` (the context encoder, what the Hugging Face weights hold). ``img_size``: run
    at another resolution (position tables recomputed). ``num_heads`` / ``pred_num_heads``: for
    non-official widths (the files store no head counts). ``dtype``: cast floating weights
    (None keeps the stored dtype).
    """
    raw, parts, info = _read(path, num_heads=num_heads, pred_num_heads=pred_num_heads)
    arch = info.arch
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
        encoder = build_encoder(arch, size)
    P.load_into(encoder, enc_sd, f"I-JEPA {which}").to(device)
    predictor = None
    if with_predictor:
        if not parts.get("predictor"):
            raise PretrainedError(
                f"{info.path!r} holds no predictor ({info.format} layout: {', '.join(info.parts)}); "
                "use with_predictor=False, or an official .pth.tar file"
            )
        pred_sd = dict(parts["predictor"])
        pred_sd["predictor_pos_embed"] = _resized(pred_sd["predictor_pos_embed"], arch["pred_embed_dim"], old, new,
                                                  arch["pos_embed_order"], info.notes, "predictor_pos_embed")
        with torch.device("meta"):
            predictor = build_predictor(arch, size)
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
    raw, parts, info = _read(raw, **hints)
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
