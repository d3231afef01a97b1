"""Make the checkpoint-parity test fixtures with Meta's OFFICIAL model code.

This script contains none of the official code: it imports it from a checkout given on the
command line (the repositories are CC-BY-NC (ijepa, jepa) / MIT (vjepa2); never copy them here).

    git clone https://github.com/facebookresearch/ijepa  /tmp/official/ijepa
    git clone https://github.com/facebookresearch/jepa   /tmp/official/jepa
    git clone https://github.com/facebookresearch/vjepa2 /tmp/official/vjepa2
    uv run python scripts/make_pretrained_fixtures.py ijepa  /tmp/official/ijepa
    uv run python scripts/make_pretrained_fixtures.py vjepa  /tmp/official/jepa
    uv run python scripts/make_pretrained_fixtures.py vjepa2 /tmp/official/vjepa2
    uv run python scripts/make_pretrained_fixtures.py probes-vjepa  /tmp/official/jepa
    uv run python scripts/make_pretrained_fixtures.py probes-vjepa2 /tmp/official/vjepa2

For each method it builds a small model with the official classes (fixed seed), perturbs every
learned tensor (so that biases, norms and mask tokens are all exercised), saves it in the
official checkpoint layout (``encoder`` / ``predictor`` / ``target_encoder`` with the DDP
prefixes, plus ``opt``, ``epoch``, ...), and records inputs, masks and the official outputs.
I-JEPA and V-JEPA 2 also get a Hugging Face layout copy, checked against transformers'
``IJepaModel`` / ``VJEPA2Model`` when transformers is importable (``--hf-path``).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import types
from functools import partial
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = {
    "ijepa": ROOT / "packages/jepa-image/tests/fixtures",
    "vjepa": ROOT / "packages/jepa-video/tests/fixtures",
    "vjepa2": ROOT / "packages/jepa-video/tests/fixtures",
    "probes-vjepa": ROOT / "packages/jepa-eval/tests/fixtures",
    "probes-vjepa2": ROOT / "packages/jepa-eval/tests/fixtures",
}
LN = partial(nn.LayerNorm, eps=1e-6)
B = 2


def perturb(module: nn.Module, gen: torch.Generator, scale: float = 0.05) -> None:
    """Add noise to every parameter but the fixed position tables."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "pos_embed" not in name:
                p.add_(torch.randn(p.shape, generator=gen) * scale)


def ddp(sd: dict, prefix: str) -> dict:
    return {prefix + k: v.detach().clone() for k, v in sd.items()}


def official_ckpt(enc, pred, tgt, prefix: str) -> dict:
    opt = torch.optim.AdamW(list(enc.parameters()) + list(pred.parameters()), lr=1e-3)
    return {
        "encoder": ddp(enc.state_dict(), prefix), "predictor": ddp(pred.state_dict(), prefix),
        "target_encoder": ddp(tgt.state_dict(), prefix), "opt": opt.state_dict(), "scaler": None,
        "epoch": 3, "loss": 0.25, "batch_size": B, "world_size": 1, "lr": 1e-3,
    }


def split_masks(n: int, sizes: list[int], gen: torch.Generator) -> list[torch.Tensor]:
    """Per sample, disjoint sorted index sets of the given sizes."""
    rows = [torch.randperm(n, generator=gen) for _ in range(B)]
    out, start = [], 0
    for s in sizes:
        out.append(torch.stack([r[start : start + s].sort().values for r in rows]))
        start += s
    return out


def import_official(path: str):
    sys.path.insert(0, str(Path(path).resolve()))
    if "timm" not in sys.modules:  # vjepa2 imports timm only for drop_path (rate 0 here)
        timm = types.ModuleType("timm")
        timm.models = types.ModuleType("timm.models")
        timm.models.layers = types.ModuleType("timm.models.layers")
        timm.models.layers.drop_path = lambda x, p=0.0, training=False: x
        sys.modules.update({"timm": timm, "timm.models": timm.models, "timm.models.layers": timm.models.layers})


def try_transformers(hf_path: str | None):
    if hf_path is None:
        return False
    if hf_path:
        sys.path.insert(0, hf_path)
    try:
        import transformers  # noqa: F401

        return True
    except Exception as e:  # noqa: BLE001
        print(f"transformers not importable ({e}); skipping the Hugging Face cross-check")
        return False


@torch.no_grad()
def make_ijepa(official: str, out: Path, has_hf: bool) -> dict:
    import_official(official)
    from src.models.vision_transformer import VisionTransformer, vit_predictor

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    enc = VisionTransformer(img_size=[48], patch_size=8, embed_dim=64, depth=2, num_heads=4, mlp_ratio=4,
                            qkv_bias=True, norm_layer=LN)
    pred = vit_predictor(num_patches=36, embed_dim=64, predictor_embed_dim=32, depth=2, num_heads=4)
    perturb(enc, gen)
    perturb(pred, gen)
    tgt = copy.deepcopy(enc)
    perturb(tgt, gen, 0.01)  # the EMA target drifts from the context encoder
    for m in (enc, pred, tgt):
        m.eval()
    x = torch.randn(B, 3, 48, 48, generator=gen)
    ctx_m, t1, t2 = split_masks(36, [20, 6, 6], gen)
    ctx = enc(x, [ctx_m])
    io = {"x": x, "masks_enc": [ctx_m], "masks_pred": [t1, t2], "enc_full": enc(x), "target_full": tgt(x),
          "ctx": ctx, "pred": pred(ctx, [ctx_m], [t1, t2])}
    torch.save(official_ckpt(enc, pred, tgt, "module."), out / "ijepa_tiny.pth.tar")
    torch.save(io, out / "ijepa_tiny_io.pt")
    # The Hugging Face copy: the official `encoder` entry, renamed as convert_ijepa_to_hf.py does.
    from jepa_core.pretrained import write_safetensors
    from jepa_image.pretrained import hf_config, infer_arch, parts_to_hf

    sd = {k: v.clone() for k, v in enc.state_dict().items()}
    arch, _ = infer_arch({"encoder": sd}, num_heads=4)
    hf_dir = out / "ijepa_tiny_hf"
    hf_dir.mkdir(exist_ok=True)
    hf_sd = parts_to_hf(sd)
    write_safetensors(hf_sd, hf_dir / "model.safetensors", {"format": "pt"})
    (hf_dir / "config.json").write_text(json.dumps(hf_config(arch), indent=2) + "\n")
    report = {"ijepa": {"enc_full_max": float(io["enc_full"].abs().max())}}
    if has_hf:
        from transformers import IJepaModel

        model = IJepaModel.from_pretrained(str(hf_dir)).eval()
        diff = (model(pixel_values=x).last_hidden_state - io["enc_full"]).abs().max().item()
        report["ijepa"]["transformers_vs_official_encoder"] = diff
    return report


def _video_common(official: str, use_rope: bool):
    import_official(official)
    import src.models.predictor as P
    import src.models.vision_transformer as V

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(2 if use_rope else 3)
    kw = dict(patch_size=8, num_frames=4, tubelet_size=2)
    if use_rope:
        enc = V.VisionTransformer(img_size=(32, 32), embed_dim=64, depth=2, num_heads=4, mlp_ratio=4, qkv_bias=True,
                                  norm_layer=LN, use_rope=True, use_sdpa=True, **kw)
        pred = P.vit_predictor(img_size=(32, 32), embed_dim=64, predictor_embed_dim=48, depth=2, num_heads=2,
                               use_mask_tokens=True, num_mask_tokens=10, zero_init_mask_tokens=True, use_rope=True, **kw)
    else:
        enc = V.VisionTransformer(img_size=32, embed_dim=64, depth=2, num_heads=4, mlp_ratio=4, qkv_bias=True,
                                  norm_layer=LN, uniform_power=True, **kw)
        pred = P.vit_predictor(img_size=32, embed_dim=64, predictor_embed_dim=48, depth=2, num_heads=4,
                               uniform_power=True, use_mask_tokens=True, num_mask_tokens=2,
                               zero_init_mask_tokens=True, **kw)
    perturb(enc, gen)
    perturb(pred, gen)
    tgt = copy.deepcopy(enc)
    perturb(tgt, gen, 0.01)
    for m in (enc, pred, tgt):
        m.eval()
    x = torch.randn(B, 3, 4, 32, 32, generator=gen)
    c0, p0 = split_masks(32, [20, 12], gen)
    c1, p1 = split_masks(32, [8, 24], gen)
    return enc, pred, tgt, x, [c0, c1], [p0, p1], gen


@torch.no_grad()
def make_vjepa(official: str, out: Path, has_hf: bool) -> dict:
    enc, pred, tgt, x, mc, mp, _ = _video_common(official, use_rope=False)
    h = tgt(x)
    ctxs = [enc(x, masks=m) for m in mc]  # MultiMaskWrapper: one encoder pass per mask config
    preds = [pred(z, h, m_c, m_p, mask_index=i) for i, (z, m_c, m_p) in enumerate(zip(ctxs, mc, mp))]
    io = {"x": x, "masks_enc": mc, "masks_pred": mp, "enc_full": enc(x), "target_full": h, "ctx": ctxs,
          "pred": preds}
    torch.save(official_ckpt(enc, pred, tgt, "module.backbone."), out / "vjepa_tiny.pth.tar")
    torch.save(io, out / "vjepa_tiny_io.pt")
    return {"vjepa": {"enc_full_max": float(io["enc_full"].abs().max())}}


@torch.no_grad()
def make_vjepa2(official: str, out: Path, has_hf: bool) -> dict:
    enc, pred, tgt, x, mc, mp, gen = _video_common(official, use_rope=True)
    from src.masks.utils import apply_masks

    full = enc(x)
    ctxs = [enc(x, masks=[m]) for m in mc]
    # mask_index i: the token of clip-length group i; with one group the trainer passes 0 for both
    preds = [pred(z, [m_c], [m_p], mask_index=i) for i, (z, m_c, m_p) in enumerate(zip(ctxs, mc, mp))]
    x2 = torch.randn(1, 3, 6, 24, 40, generator=gen)  # more frames, non-square: RoPE from the input grid
    # transformers' VJEPA2Model: the predictor reads the full encoding gathered at the context,
    # with mask_tokens[1] (the official predictor's default mask_index).
    pred_hf = pred(apply_masks(full, [mc[0]]), [mc[0]], [mp[0]], mask_index=1)
    io = {"x": x, "masks_enc": mc, "masks_pred": mp, "enc_full": full, "target_full": tgt(x), "ctx": ctxs,
          "pred": preds, "x2": x2, "enc_x2": enc(x2), "pred_hf": pred_hf}
    torch.save(official_ckpt(enc, pred, tgt, "module.backbone."), out / "vjepa2_tiny.pt")
    torch.save(io, out / "vjepa2_tiny_io.pt")
    from jepa_core.pretrained import write_safetensors
    from jepa_video.pretrained import hf_config, infer_arch, parts_to_hf

    parts = {"encoder": {k: v.clone() for k, v in enc.state_dict().items()},
             "predictor": {k: v.clone() for k, v in pred.state_dict().items()}}
    arch, _ = infer_arch(parts, "vjepa2", num_heads=4, pred_num_heads=2, img_size=32, num_frames=4)
    hf_dir = out / "vjepa2_tiny_hf"
    hf_dir.mkdir(exist_ok=True)
    write_safetensors(parts_to_hf(parts), hf_dir / "model.safetensors", {"format": "pt"})
    (hf_dir / "config.json").write_text(json.dumps(hf_config(arch), indent=2) + "\n")
    report = {"vjepa2": {"enc_full_max": float(full.abs().max())}}
    if has_hf:
        from transformers import VJEPA2Model

        model = VJEPA2Model.from_pretrained(str(hf_dir)).eval()
        o = model(x.transpose(1, 2), context_mask=[mc[0]], target_mask=[mp[0]])
        report["vjepa2"]["transformers_vs_official_encoder"] = (o.last_hidden_state - full).abs().max().item()
        report["vjepa2"]["transformers_vs_official_predictor"] = (
            o.predictor_output.last_hidden_state - pred_hf).abs().max().item()
    return report


@torch.no_grad()
def make_probes(official: str, out: Path, form: str) -> dict:
    import_official(official)
    from src.models.attentive_pooler import AttentiveClassifier

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(4)
    depth, n = (1, 1) if form == "vjepa" else (4, 2)
    probes = [AttentiveClassifier(embed_dim=32, num_heads=4, depth=depth, num_classes=5) for _ in range(n)]
    for p in probes:
        perturb(p, gen)
        p.eval()
    tokens = torch.randn(B, 12, 32, generator=gen)
    io = {"tokens": tokens, "logits": [p(tokens) for p in probes]}
    if form == "vjepa":
        obj = {"classifier": ddp(probes[0].state_dict(), "module."), "opt": None, "scaler": None, "epoch": 20,
               "batch_size": 4, "world_size": 1, "lr": 1e-3}
        name = "vjepa_probe_tiny.pth.tar"
    else:
        obj = {"classifiers": [ddp(p.state_dict(), "module.") for p in probes], "opt": [None] * n,
               "scaler": [None] * n, "epoch": 20, "batch_size": 4, "world_size": 1}
        name = "vjepa2_probe_tiny.pt"
    torch.save(obj, out / name)
    torch.save(io, out / (name.replace(".pth.tar", "").replace(".pt", "") + "_io.pt"))
    return {f"probe-{form}": {"logits_max": max(float(v.abs().max()) for v in io["logits"])}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=sorted(FIXTURES))
    ap.add_argument("official", help="checkout of the official repository (its `src` package is imported)")
    ap.add_argument("--out", help="output folder (default: the package's tests/fixtures)")
    ap.add_argument("--hf-path", help="a folder to put on sys.path for transformers (optional cross-check)")
    args = ap.parse_args()
    out = Path(args.out or FIXTURES[args.what])
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    has_hf = try_transformers(args.hf_path)  # before the official imports (they stub timm)
    if args.what == "ijepa":
        report = make_ijepa(args.official, out, has_hf)
    elif args.what == "vjepa":
        report = make_vjepa(args.official, out, has_hf)
    elif args.what == "vjepa2":
        report = make_vjepa2(args.official, out, has_hf)
    else:
        report = make_probes(args.official, out, args.what.split("-")[1])
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
