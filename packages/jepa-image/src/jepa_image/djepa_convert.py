"""Released D-JEPA checkpoints <-> jepa runs: the ``djepa`` converter (`jepa convert`).

The released training script saves ``{"model": state_dict, "model_ema": state_dict, "optimizer",
"epoch", "scaler", "args"}`` (``djepa:main_djepa.py`` loads ``model`` and ``model_ema`` with
``strict=True``; with ``--compile`` the keys would carry ``_orig_mod.``, which is stripped here,
as is a DDP ``module.``). Its key layout is that of ``djepa:models/djepa.py`` ``DJEPA``, which
:class:`jepa_image.djepa.DJEPANet` keeps name for name, except for the denoiser, MAR's
``SimpleMLPAdaLN`` inside the diffusion loss (``mar:models/diffloss.py``)::

    diffloss.net.time_embed.mlp.{0,2}             diffloss.head.time_embed.mlp.{0,2}
    diffloss.net.cond_embed / input_proj          diffloss.head.cond_embed / input_proj
    diffloss.net.res_blocks.{i}.in_ln             diffloss.head.blocks.{i}.norm
    diffloss.net.res_blocks.{i}.mlp.{0,2}         diffloss.head.blocks.{i}.mlp.{0,2}
    diffloss.net.res_blocks.{i}.adaLN_modulation.1  diffloss.head.blocks.{i}.modulation.1
    diffloss.net.final_layer.linear               diffloss.head.final_layer.linear
    diffloss.net.final_layer.adaLN_modulation.1   diffloss.head.final_layer.modulation.1

``jepaloss.pred.{fc1,norm,fc2}`` (the projection) is the layout of a MAR-derived repository
with the same calls (the released repository lacks ``models/jepaloss.py``); a file without it
is a model trained without the JEPA loss. The architecture is read from the shapes; head counts
are not stored: 12 (width 768), 16 (1024, 1280) as released, or ``--num-heads`` /
``--pred-num-heads``. Which head: a final layer of ``2 x token_dim`` outputs is the Gaussian
head (noise + variance), of ``token_dim`` the flow-matching one. The files of the Hugging Face
repository ``densechen/d-jepa-imagenet`` were not available to check against this layout.

Output ``ours``: a checkpoint `jepa sample` and `jepa eval` load directly (``model`` with
``net.*`` the online weights and ``ema.module.*`` the EMA ones, ``config`` the D-JEPA config
inferred, tokenizer settings of the released KL-16 VAE); ``official``: the released layout
(``model`` and ``model_ema``); ``safetensors``: ours, flat, the config in the metadata.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from jepa_core import checkpoint as ckpt
from jepa_core.config import to_dict
from jepa_core.pretrained import (
    CheckpointView,
    Converter,
    LoadInfo,
    PretrainedError,
    write_safetensors,
)

METHOD = "djepa"
RELEASED_HEADS = {768: 12, 1024: 16, 1280: 16}  # djepa:models/djepa.py factories
_HEAD_RULES = [  # released (MAR) -> ours
    (r"^diffloss\.net\.res_blocks\.(\d+)\.in_ln\.", r"diffloss.head.blocks.\1.norm."),
    (r"^diffloss\.net\.res_blocks\.(\d+)\.mlp\.", r"diffloss.head.blocks.\1.mlp."),
    (r"^diffloss\.net\.res_blocks\.(\d+)\.adaLN_modulation\.1\.", r"diffloss.head.blocks.\1.modulation.1."),
    (r"^diffloss\.net\.final_layer\.adaLN_modulation\.1\.", r"diffloss.head.final_layer.modulation.1."),
    (r"^diffloss\.net\.final_layer\.linear\.", r"diffloss.head.final_layer.linear."),
    (r"^diffloss\.net\.(time_embed|cond_embed|input_proj)\.", r"diffloss.head.\1."),
]
_BACK_RULES = [  # ours -> released
    (r"^diffloss\.head\.blocks\.(\d+)\.norm\.", r"diffloss.net.res_blocks.\1.in_ln."),
    (r"^diffloss\.head\.blocks\.(\d+)\.mlp\.", r"diffloss.net.res_blocks.\1.mlp."),
    (r"^diffloss\.head\.blocks\.(\d+)\.modulation\.1\.", r"diffloss.net.res_blocks.\1.adaLN_modulation.1."),
    (r"^diffloss\.head\.final_layer\.modulation\.1\.", r"diffloss.net.final_layer.adaLN_modulation.1."),
    (r"^diffloss\.head\.final_layer\.linear\.", r"diffloss.net.final_layer.linear."),
    (r"^diffloss\.head\.(time_embed|cond_embed|input_proj)\.", r"diffloss.net.\1."),
]
_SIGNATURE = ("z_proj.weight", "buffer", "fake_latent", "class_emb.weight", "decoder_embed.weight")


def _strip(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        for pre in ("module.", "_orig_mod."):
            while k.startswith(pre):
                k = k[len(pre):]
        out[k] = v
    return out


def _rename(sd: Mapping[str, torch.Tensor], rules) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        for pat, rep in rules:
            new, n = re.subn(pat, rep, k)
            if n:
                k = new
                break
        out[k] = v
    return out


def released_to_ours(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One released state dict (``model`` or ``model_ema``) in :class:`~jepa_image.djepa.DJEPANet` names."""
    return _rename(_strip(sd), _HEAD_RULES)


def ours_to_released(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return _rename(sd, _BACK_RULES)


def is_released(sd) -> bool:
    return isinstance(sd, Mapping) and all(k in _strip(sd) for k in _SIGNATURE)


def _count(sd, prefix: str) -> int:
    idx = {int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(idx) + 1 if idx else 0


def _heads(width: int, hint: int | None, what: str) -> int:
    if hint:
        return int(hint)
    if width in RELEASED_HEADS:
        return RELEASED_HEADS[width]
    raise PretrainedError(f"the {what} width {width} is not a released D-JEPA size, and head counts are not stored "
                          f"in the file; pass --num-heads (encoder) and --pred-num-heads (predictor)")


def infer_config(sd: Mapping[str, torch.Tensor], num_heads: int | None = None, pred_num_heads: int | None = None,
                 latent_channels: int = 16, vae_stride: int = 16):
    """The :class:`~jepa_image.djepa.DJEPAConfig` of a state dict in our names (shapes only)."""
    from jepa_core import registry

    D, tdim = sd["z_proj.weight"].shape
    Dd = sd["decoder_embed.weight"].shape[0]
    seq = sd["encoder_pos_embed_learned"].shape[1]
    side = math.isqrt(seq)
    if side * side != seq:
        raise PretrainedError(f"encoder_pos_embed_learned has {seq} positions, not a square grid")
    p = math.isqrt(tdim // latent_channels)
    if p * p * latent_channels != tdim:
        raise PretrainedError(f"tokens of dim {tdim} are not p x p cells of {latent_channels} latent channels")
    width = sd["diffloss.head.input_proj.weight"].shape[0]
    out = sd["diffloss.head.final_layer.linear.weight"].shape[0]
    if out not in (tdim, 2 * tdim):
        raise PretrainedError(f"the denoiser outputs {out} values per token; expected {2 * tdim} (Gaussian) or "
                              f"{tdim} (flow matching)")
    heads = _heads(D, num_heads, "encoder")
    m = {
        "embed_dim": D, "depth": _count(sd, "encoder_blocks."), "num_heads": heads,
        "decoder_embed_dim": Dd, "decoder_depth": _count(sd, "decoder_blocks."),
        "decoder_num_heads": _heads(Dd, pred_num_heads or (num_heads if Dd == D else None), "predictor"),
        "mlp_ratio": sd["encoder_blocks.0.mlp.fc1.weight"].shape[0] / D,
        "qk_norm": "encoder_blocks.0.attn.q_norm.weight" in sd,
        "buffer_size": sd["buffer"].shape[1],
        "head": "gauss" if out == 2 * tdim else "flow",
        "head_width": width, "head_depth": _count(sd, "diffloss.head.blocks."),
        "jepa_weight": 1.0 if "jepaloss.pred.fc1.weight" in sd else 0.0,
    }
    preset = {768: "b", 1024: "l", 1280: "h"}.get(D, "b")
    overrides = [f"model.{k}={json.dumps(v) if isinstance(v, bool) else v}" for k, v in m.items()] + [
        f"data.num_classes={sd['class_emb.weight'].shape[0]}", f"data.image_size={side * p * vae_stride}",
        f"tokenizer.patch_size={p}", f"tokenizer.latent_channels={latent_channels}",
        f"tokenizer.vae_stride={vae_stride}"]
    return registry.get_method(METHOD).load_config(preset, overrides=overrides)


def _released_parts(obj: Mapping) -> tuple[dict, dict | None, list[str]]:
    """(online, ema or None, notes) in our names from a released file or a bare state dict."""
    notes = []
    if is_released(obj.get("model")):
        online = released_to_ours(obj["model"])
        ema = released_to_ours(obj["model_ema"]) if is_released(obj.get("model_ema")) else None
        if ema is None:
            notes.append("no model_ema in the file: the EMA copy starts as the online weights")
    elif is_released(obj):
        online, ema = released_to_ours(obj), None
        notes.append("a bare state dict: used for both the online weights and the EMA copy")
    else:
        raise PretrainedError("not a released D-JEPA checkpoint: expected model / model_ema state dicts with "
                              f"{', '.join(_SIGNATURE)} (djepa:models/djepa.py)")
    return online, ema, notes


def _ours_parts(obj: Mapping) -> tuple[dict, dict, dict]:
    model = obj["model"] if isinstance(obj.get("model"), Mapping) else obj
    online = {k[len("net."):]: v for k, v in model.items() if k.startswith("net.")}
    ema = {k[len("ema.module."):]: v for k, v in model.items() if k.startswith("ema.module.")}
    if not online:
        raise PretrainedError("not a D-JEPA run checkpoint: no net.* weights")
    cfg = obj.get("config") if isinstance(obj.get("config"), Mapping) else None
    if cfg is None and isinstance(obj.get("__metadata_config__"), str):
        cfg = json.loads(obj["__metadata_config__"])
    return online, ema or dict(online), dict(cfg or {})


def convert(raw, out: Path, to: str = "ours", method: str = METHOD, num_heads: int | None = None,
            pred_num_heads: int | None = None, **hints) -> LoadInfo:
    """``jepa convert``: a released file (or a bare released state dict) -> ``ours`` /
    ``safetensors``; one of ours (run checkpoint, converter output) -> ``official`` (the
    released layout) or the other two. Loads the weights into a model built from the inferred
    config (strict), so a layout mismatch fails here, naming the keys."""
    from jepa_image import djepa

    obj = raw.obj
    notes: list[str] = []
    meta_cfg = raw.meta.get("config") if isinstance(raw.meta, Mapping) else None
    if is_released(obj.get("model")) or is_released(obj):
        online, ema, notes = _released_parts(obj)
        ema = ema if ema is not None else dict(online)
        cfg = infer_config(online, num_heads, pred_num_heads)
        fmt = "official"
    else:
        online, ema, cfg_dict = _ours_parts(obj)
        if not cfg_dict and meta_cfg:
            cfg_dict = json.loads(meta_cfg)
        from jepa_core.config import from_dict

        cfg = from_dict(djepa.DJEPAConfig, cfg_dict) if cfg_dict else infer_config(online, num_heads, pred_num_heads)
        fmt = "jepa"
    model = djepa.build_model(cfg)
    state = {**{f"net.{k}": v for k, v in online.items()}, **{f"ema.module.{k}": v for k, v in ema.items()}}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise PretrainedError(f"{raw.path!r} does not fit the D-JEPA model its shapes describe: missing "
                              f"{missing[:6]}, unexpected {unexpected[:6]}")
    model.load_state_dict(state)  # shapes checked here
    m = cfg.model
    arch = {"embed_dim": m.embed_dim, "depth": m.depth, "num_heads": m.num_heads, "decoder": f"{m.decoder_depth}x"
            f"{m.decoder_embed_dim}", "head": f"{m.head} {m.head_depth}x{m.head_width}", "buffer": m.buffer_size,
            "classes": cfg.data.num_classes, "tokens": djepa.grid_side(cfg) ** 2, "jepa_loss": m.jepa_weight > 0}
    out = Path(out)
    if to == "ours":
        ckpt.atomic_save({"format": "jepa-run", "version": 1, "method": METHOD, "model": state,
                          "config": to_dict(cfg), "step": 0}, out)
    elif to == "safetensors":
        write_safetensors({k: v.contiguous() for k, v in state.items()}, out,
                          {"format": "jepa-weights", "method": METHOD, "config": json.dumps(to_dict(cfg))})
    elif to == "official":
        ckpt.atomic_save({"model": ours_to_released(online), "model_ema": ours_to_released(ema)}, out)
    else:
        raise PretrainedError(f"D-JEPA checkpoints convert to ours, safetensors or official, not {to!r}")
    return LoadInfo(str(raw.path), fmt, METHOD, "model + model_ema", arch, ("model", "model_ema"), notes)


def match(view: CheckpointView) -> float:
    obj = view.raw.obj
    if is_released(obj.get("model")) or is_released(obj):
        return 1.0
    model = obj.get("model") if isinstance(obj.get("model"), Mapping) else obj
    if isinstance(model, Mapping) and "net.z_proj.weight" in model and "net.buffer" in model:
        return 1.0
    return 0.0


CONVERTER = Converter(METHOD, match, convert, package="jepa-image",
                      description="D-JEPA (released djepa-imagenet layout: model / model_ema)")

__all__ = ["CONVERTER", "convert", "infer_config", "is_released", "match", "ours_to_released", "released_to_ours"]
