"""The official JEPA code next to ours in the benchmark cases (repository only, never in a wheel).

Nothing of the official code is bundled (it is CC-BY-NC): the user passes paths to checkouts of
facebookresearch/ijepa, /jepa and /vjepa2 (``--official-ijepa PATH`` etc., see
:func:`add_arguments`), and their ``src`` package is imported from there. :func:`adapters` makes
the ``Context.official`` mapping that the method packages' cases (``jepa_image.bench``,
``jepa_video.bench``) read: upstream repo name -> :class:`Official`, whose ``mask_collator`` and
``step`` give the official equivalent of a case.
All three name their package ``src``, so each import purges ``src.*`` from ``sys.modules``
before and after. ``timm`` and ``einops`` (imported by vjepa2 but not needed here: drop path is
0 and ``rearrange`` is unused) are stubbed when not installed. Nothing in their code needs CUDA
for the parts used here; their ``torch.cuda.amp.autocast`` is replaced by ``torch.autocast`` on
the benchmark device in the steps below.

The official training steps are written here in our own words after their ``train.py``
(ijepa:src/train.py, jepa:app/vjepa/train.py, vjepa2:app/vjepa/train.py): target encoder under
no_grad + parameter-free layer norm, the context encoder once per mask configuration, the
predictor, the loss, backward, AdamW (their four parameter groups, torch's default
implementation), and the EMA over ``zip(encoder.parameters(), target.parameters())``.
``step`` is the compute of their step (no logging); ``step_as_train_py`` adds what their loop
also does every iteration (per-parameter gradient-norm logging, AdamW moment logging and
``float(loss)``, each a host sync). Before timing, :meth:`Official.step` checks that both
sides give the same loss from the same weights, inputs and masks.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import sys
import types
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F


def _purge() -> None:
    for k in list(sys.modules):
        if k == "src" or k.startswith("src."):
            del sys.modules[k]


def _stub_missing() -> list[str]:
    added = []
    try:
        import timm.models.layers  # noqa: F401
    except ImportError:
        def drop_path(x, drop_prob: float = 0.0, training: bool = False):
            if drop_prob == 0.0 or not training:
                return x
            keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - drop_prob)
            return x * keep / (1 - drop_prob)

        for name in ("timm", "timm.models", "timm.models.layers"):
            sys.modules[name] = types.ModuleType(name)
            added.append(name)
        sys.modules["timm.models.layers"].drop_path = drop_path
    try:
        import einops  # noqa: F401
    except ImportError:
        mod = types.ModuleType("einops")

        def rearrange(*args, **kwargs):
            raise NotImplementedError("einops stub (not installed)")

        mod.rearrange = rearrange
        sys.modules["einops"] = mod
        added.append("einops")
    return added


@contextlib.contextmanager
def official(path: str | Path):
    """``import_module`` for ``src.*`` of an official checkout at ``path``."""
    path = str(Path(path).resolve())
    if not (Path(path) / "src").is_dir():
        raise FileNotFoundError(f"{path} is not an official JEPA checkout (no src/ folder)")
    _purge()
    stubs = _stub_missing()
    sys.path.insert(0, path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield importlib.import_module
    finally:
        sys.path.remove(path)
        _purge()
        for name in stubs:
            sys.modules.pop(name, None)


# ---------------------------------------------------------------------------------------------
# mask collators


def ijepa_mask_collator(path, img: int, patch: int, **overrides):
    """The official I-JEPA collator (ijepa:src/masks/multiblock.py) with the released config
    (ijepa:configs/in1k_vith14_ep300.yaml)."""
    with official(path) as imp:
        MaskCollator = imp("src.masks.multiblock").MaskCollator
    kw = dict(input_size=(img, img), patch_size=patch, enc_mask_scale=(0.85, 1.0), pred_mask_scale=(0.15, 0.2),
              aspect_ratio=(0.75, 1.5), nenc=1, npred=4, min_keep=10, allow_overlap=False)
    kw.update(overrides)
    return MaskCollator(**kw)


VIDEO_MASK_CFGS = [
    dict(spatial_scale=(0.15, 0.15), temporal_scale=(1.0, 1.0), aspect_ratio=(0.75, 1.5), num_blocks=8,
         max_temporal_keep=1.0, max_keep=None),
    dict(spatial_scale=(0.7, 0.7), temporal_scale=(1.0, 1.0), aspect_ratio=(0.75, 1.5), num_blocks=2,
         max_temporal_keep=1.0, max_keep=None),
]


def video_mask_collator(key: str, path, img: int, frames: int = 16, cfgs=None):
    """The official V-JEPA (``key="jepa"``, jepa:src/masks/multiblock3d.py) or V-JEPA 2
    (``"vjepa2"``, one clip length, vjepa2:src/masks/multiseq_multiblock3d.py) collator with the
    released two-configuration setting (jepa:configs/pretrain/vitl16.yaml,
    vjepa2:configs/train/vitl16/pretrain-256px-16f.yaml)."""
    cfgs = VIDEO_MASK_CFGS if cfgs is None else cfgs
    if key == "jepa":
        with official(path) as imp:
            MaskCollator = imp("src.masks.multiblock3d").MaskCollator
        return MaskCollator(cfgs, crop_size=(img, img), num_frames=frames, patch_size=16, tubelet_size=2)
    with official(path) as imp:
        MaskCollator = imp("src.masks.multiseq_multiblock3d").MaskCollator
    return MaskCollator(cfgs, dataset_fpcs=[frames], crop_size=(img, img), patch_size=(16, 16), tubelet_size=2)


# ---------------------------------------------------------------------------------------------
# training steps


_SIZE_NAMES = {192: "vit_tiny", 384: "vit_small", 768: "vit_base", 1024: "vit_large", 1280: "vit_huge"}


def _param_groups(encoder, predictor) -> list[dict]:
    """Their init_opt: decay / no-decay (bias or 1-D) for encoder and predictor."""
    def groups(m):
        ps = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
        return ([p for n, p in ps if not ("bias" in n or p.ndim == 1)],
                [p for n, p in ps if "bias" in n or p.ndim == 1])

    (ed, en), (pd, pn) = groups(encoder), groups(predictor)
    return [{"params": ed}, {"params": pd}, {"params": en, "WD_exclude": True, "weight_decay": 0},
            {"params": pn, "WD_exclude": True, "weight_decay": 0}]


def _load(module: torch.nn.Module, sd: dict, what: str) -> None:
    missing, unexpected = module.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{what}: official/ours state dicts differ: missing {missing}, unexpected {unexpected}")


class OfficialStep:
    """Their step on the same batch; ``loss()`` (no grad) for the equality check."""

    def __init__(self, encoder, predictor, forward_loss, ctx, ema_foreach: bool, loggers=(), unscale: bool = False):
        self.encoder, self.predictor = encoder, predictor
        self.target = copy.deepcopy(encoder)
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.forward_loss, self.ctx, self.ema_foreach, self.loggers = forward_loss, ctx, ema_foreach, loggers
        self.opt = torch.optim.AdamW(_param_groups(encoder, predictor), lr=1e-4, weight_decay=0.04)
        # Their train.py scales the loss under mixed precision on CUDA, bf16 included
        # (ijepa:src/helper.py init_opt, jepa and vjepa2:app/vjepa/utils.py init_opt); V-JEPA and
        # V-JEPA 2 also unscale before the (optional) clipping. The scaler's step reads found_inf
        # on the host: one sync per step, part of their step as written.
        self.scaler = torch.amp.GradScaler("cuda") if ctx.device.type == "cuda" and ctx.dtype is not None else None
        self.unscale = unscale

    def _autocast(self):
        c = self.ctx
        return torch.autocast(c.device.type, dtype=c.dtype, enabled=c.dtype is not None)

    def loss(self) -> torch.Tensor:
        with torch.no_grad(), self._autocast():
            return self.forward_loss(self.encoder, self.predictor, self.target)

    def step(self, as_train_py: bool = False):
        with self._autocast():
            loss = self.forward_loss(self.encoder, self.predictor, self.target)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if self.unscale:
                self.scaler.unscale_(self.opt)
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.opt.step()
        if as_train_py:
            for log in self.loggers:
                log(self)
        self.opt.zero_grad()
        m = 0.996
        with torch.no_grad():
            if self.ema_foreach:  # vjepa2
                qs, ks = list(self.encoder.parameters()), list(self.target.parameters())
                torch._foreach_mul_(ks, m)
                torch._foreach_add_(ks, qs, alpha=1 - m)
            else:  # ijepa, jepa
                for q, k in zip(self.encoder.parameters(), self.target.parameters()):
                    k.data.mul_(m).add_((1.0 - m) * q.detach().data)
        return float(loss) if as_train_py else loss

    def step_as_train_py(self):
        return self.step(as_train_py=True)


def ijepa_step_builder(path):
    with official(path) as imp:
        vt = imp("src.models.vision_transformer")
        apply_masks = imp("src.masks.utils").apply_masks
        repeat_interleave_batch = imp("src.utils.tensors").repeat_interleave_batch
        grad_logger = imp("src.utils.logging").grad_logger

    def build(ours, batch, ctx):
        e, p = ours.encoder, ours.predictor
        name = _SIZE_NAMES[e.embed_dim]
        encoder = getattr(vt, name)(img_size=[e.img_size], patch_size=e.patch_size)
        predictor = vt.vit_predictor(num_patches=e.num_patches, embed_dim=e.embed_dim,
                                     predictor_embed_dim=p.predictor_embed.out_features,
                                     depth=len(p.predictor_blocks), num_heads=p.predictor_blocks[0].attn.num_heads)
        _load(encoder, e.state_dict(), "I-JEPA encoder")
        _load(predictor, p.state_dict(), "I-JEPA predictor")
        encoder.to(ctx.device).train()
        predictor.to(ctx.device).train()
        imgs, masks_enc, masks_pred = batch["images"], batch["masks_enc"], batch["masks_pred"]

        def forward_loss(encoder, predictor, target):
            with torch.no_grad():
                h = target(imgs)
                h = F.layer_norm(h, (h.size(-1),))
                B = len(h)
                h = apply_masks(h, masks_pred)
                h = repeat_interleave_batch(h, B, repeat=len(masks_enc))
            z = encoder(imgs, masks_enc)
            z = predictor(z, masks_enc, masks_pred)
            return F.smooth_l1_loss(z, h)

        return OfficialStep(encoder, predictor, forward_loss, ctx, ema_foreach=False,
                            loggers=[lambda s: grad_logger(s.encoder.named_parameters())])

    return build


def video_step_builder(key: str, path):
    """V-JEPA (``key="jepa"``) or V-JEPA 2 (``"vjepa2"``)."""
    v2 = key == "vjepa2"
    with official(path) as imp:
        vt = imp("src.models.vision_transformer")
        pr = imp("src.models.predictor")
        apply_masks = imp("src.masks.utils").apply_masks
        if v2:
            wr = imp("src.utils.wrappers")
            Enc, Pred = wr.MultiSeqWrapper, wr.PredictorMultiSeqWrapper
        else:
            mm = imp("src.models.utils.multimask")
            Enc, Pred = mm.MultiMaskWrapper, mm.PredictorMultiMaskWrapper
            lg = imp("src.utils.logging")
            grad_logger, adamw_logger = lg.grad_logger, lg.adamw_logger

    def build(ours, batch, ctx):
        e, p = ours.encoder, ours.predictor
        name = _SIZE_NAMES[e.embed_dim]
        T, gh, gw = p.grid
        img, frames = gh * e.patch_size, T * e.tubelet_size
        common = dict(img_size=img, patch_size=e.patch_size, num_frames=frames, tubelet_size=e.tubelet_size,
                      uniform_power=True, use_sdpa=True)
        if v2:
            common.update(use_rope=True, use_activation_checkpointing=False)
        enc = getattr(vt, name)(**common)
        pred = pr.vit_predictor(use_mask_tokens=True, embed_dim=e.embed_dim,
                                predictor_embed_dim=p.predictor_embed_dim, depth=len(p.predictor_blocks),
                                num_heads=p.predictor_blocks[0].attn.num_heads, num_mask_tokens=p.num_mask_tokens,
                                zero_init_mask_tokens=True, **common)
        _load(enc, e.state_dict(), "video encoder")
        _load(pred, p.state_dict(), "video predictor")
        encoder, predictor = Enc(enc).to(ctx.device).train(), Pred(pred).to(ctx.device).train()
        clips, masks_enc, masks_pred = batch["videos"], list(batch["masks_enc"]), list(batch["masks_pred"])

        def forward_loss_v1(encoder, predictor, target):
            with torch.no_grad():
                h = target(clips)
                h = F.layer_norm(h, (h.size(-1),))
                h = apply_masks(h, masks_pred, concat=False)
            z = encoder(clips, masks_enc)
            z = predictor(z, h, masks_enc, masks_pred)
            loss_jepa = sum(torch.mean(torch.abs(zi - hi) ** 1.0) / 1.0 for zi, hi in zip(z, h)) / len(masks_pred)
            pstd_z = sum(torch.sqrt(zi.var(dim=1) + 0.0001) for zi in z) / len(z)
            loss_reg = torch.mean(F.relu(1.0 - pstd_z))
            return loss_jepa + 0.0 * loss_reg  # reg_coeff 0 in every config, still in the graph

        def forward_loss_v2(encoder, predictor, target):
            c, me, mp = [clips], [masks_enc], [masks_pred]
            with torch.no_grad():
                h = target(c)
                h = [F.layer_norm(hi, (hi.size(-1),)) for hi in h]
            z = encoder(c, me)
            z = predictor(z, me, mp)
            h = [apply_masks(hi, mi, concat=False) for hi, mi in zip(h, mp)]
            loss, n = 0, 0
            for zi, hi in zip(z, h):
                for zij, hij in zip(zi, hi):
                    loss += torch.mean(torch.abs(zij - hij) ** 1.0) / 1.0
                    n += 1
            return loss / n

        if v2:
            return OfficialStep(encoder, predictor, forward_loss_v2, ctx, ema_foreach=True, unscale=True)
        loggers = [lambda s: grad_logger(s.encoder.named_parameters()),
                   lambda s: grad_logger(s.predictor.named_parameters()),
                   lambda s: adamw_logger(s.opt)]
        return OfficialStep(encoder, predictor, forward_loss_v1, ctx, ema_foreach=False, loggers=loggers, unscale=True)

    return build


# ---------------------------------------------------------------------------------------------
# what the cases see: ctx.official[repo]


def check_same_loss(label: str, ours, batch: dict, theirs: OfficialStep, ctx) -> None:
    """Both sides' loss from the same weights, inputs and masks, before any step: equal up to
    fp32 rounding (an error in fp32, a warning under autocast)."""
    with torch.no_grad(), torch.autocast(ctx.device.type, dtype=ctx.dtype, enabled=ctx.dtype is not None):
        l_ours = ours(batch)["loss"].float().item()
    l_theirs = theirs.loss().float().item()
    ctx.log(f"  {label}: loss ours {l_ours:.6f} official {l_theirs:.6f} difference {l_ours - l_theirs:+.2e}")
    if abs(l_ours - l_theirs) > 1e-4 * max(1.0, abs(l_theirs)):
        if ctx.dtype is None:  # fp32: the same computation must give the same loss
            raise AssertionError(f"{label}: losses differ (ours {l_ours}, official {l_theirs})")
        ctx.log(f"  WARNING {label}: losses differ beyond fp32 rounding under {ctx.dtype} autocast")


class Official:
    """One official checkout (``repo``: ijepa, jepa or vjepa2) as the benchmark cases use it."""

    def __init__(self, repo: str, path: str | Path):
        if repo not in ("ijepa", "jepa", "vjepa2"):
            raise ValueError(f"unknown official repository {repo!r}")
        self.repo, self.path = repo, str(path)
        self._builder = None

    def mask_collator(self, img: int, patch: int = 16, frames: int = 16):
        if self.repo == "ijepa":
            return ijepa_mask_collator(self.path, img, patch)
        return video_mask_collator(self.repo, self.path, img, frames)

    def step(self, ours, batch: dict, ctx) -> OfficialStep:
        """Their step for our ``model`` (its weights copied), after the same-loss check."""
        if self._builder is None:
            self._builder = (ijepa_step_builder(self.path) if self.repo == "ijepa"
                             else video_step_builder(self.repo, self.path))
        theirs = self._builder(ours, batch, ctx)
        check_same_loss(f"{self.repo} step", ours, batch, theirs, ctx)
        return theirs


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--official-ijepa", metavar="PATH", help="a checkout of facebookresearch/ijepa")
    ap.add_argument("--official-jepa", metavar="PATH", help="a checkout of facebookresearch/jepa (V-JEPA)")
    ap.add_argument("--official-vjepa2", metavar="PATH", help="a checkout of facebookresearch/vjepa2")


def adapters(args: argparse.Namespace) -> dict[str, Official]:
    """``Context.official`` from the ``--official-*`` options."""
    paths = {"ijepa": args.official_ijepa, "jepa": args.official_jepa, "vjepa2": args.official_vjepa2}
    return {repo: Official(repo, path) for repo, path in paths.items() if path}


# ---------------------------------------------------------------------------------------------
# DMT-JEPA (DMTJEPA/DMTJEPA): the aggregation head


class ReleasedHeadMlp(torch.nn.Module):
    """The MLP that the released DMT-JEPA head names (``Mlp``) but neither defines nor imports
    (dmtjepa:src/models/local_agg_head.py), so that the module imports: ``fc1``, GELU, ``fc2``,
    hidden width as passed (``mlp_ratio`` 4 there), dropout ``drop`` (0 there)."""

    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=torch.nn.GELU, drop=0.0):
        super().__init__()
        self.fc1 = torch.nn.Linear(in_features, hidden_features or in_features)
        self.act = act_layer()
        self.fc2 = torch.nn.Linear(hidden_features or in_features, out_features or in_features)
        self.drop = torch.nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def dmtjepa_head_class(path):
    """The released ``LocalAggHead`` class of a DMTJEPA/DMTJEPA checkout at ``path``, with
    :class:`ReleasedHeadMlp` supplied as its missing ``Mlp`` (a builtin while the module is
    imported, where a class default argument needs it, then a global of the module, where its
    constructor looks it up)."""
    import builtins

    had = hasattr(builtins, "Mlp")
    saved = getattr(builtins, "Mlp", None)
    builtins.Mlp = ReleasedHeadMlp
    try:
        with official(path) as imp:
            module = imp("src.models.local_agg_head")
    finally:
        if had:
            builtins.Mlp = saved
        else:
            del builtins.Mlp
    module.Mlp = ReleasedHeadMlp
    return module.LocalAggHead
