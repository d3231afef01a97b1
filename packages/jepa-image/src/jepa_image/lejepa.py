"""LeJEPA (Balestriero & LeCun, 2025, arXiv 2511.08544): multi-crop views, a ViT and a projector,
trained with the prediction loss of every view to the centre of the global views plus SIGReg,
with no EMA teacher, no stop-gradient and no predictor.

The step (paper Sec. 4-5 and its LeJEPA listing; code galilai-group/lejepa, CC BY-NC 4.0, read
for facts, not copied):

1. ``V = num_global + num_local`` views of each image (:class:`MultiCropViews`): the global
   views at ``data.image_size`` with random-resized crops of ``data.crop_scale`` of the image,
   the local views at ``views.local_size`` with crops of ``views.local_scale``; every view gets
   its own horizontal flip, colour jitter, grayscale, Gaussian blur and solarisation (the code
   README's "GOTO" hyperparameters).
2. The encoder embeds each view: the mean of its patch tokens (the ViT has no class token; the
   README's rule when there is none). The projector (an MLP with BatchNorm) maps each embedding
   to ``z_v`` in ``R^K``.
3. Prediction loss: the centres ``mu = mean over the global views of z_v`` (per sample), and
   ``L_pred = mean over views, samples and dimensions of (z_v - mu)^2``. Gradients flow into the
   centres too (no stop-gradient).
4. ``L_SIGReg = mean over views of SIGReg(z_v)`` (:class:`jepa_core.sigreg.SIGReg`): the same
   random slices for every view, redrawn every step from ``(train.seed, step)``, so every
   process draws the same slices.
5. ``loss = (1 - lambda) L_pred + lambda L_SIGReg`` (``loss.lamb``; the paper's single
   trade-off hyperparameter; lejepa MINIMAL.md and the paper's listing).

Linear probes read the backbone (``eval_encoder()`` is the encoder), not the projector.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal, cast

import torch
from jepa_core.config import BaseConfig, ConfigError, OptimConfig, ranges, validate
from jepa_core.masks import MaskCollator
from jepa_core.method import JEPAMethod
from jepa_core.nn import VIT_SIZES, VisionTransformer, enable_activation_checkpointing
from jepa_core.registry import MethodSpec
from jepa_core.sigreg import QUADRATURES, SIGReg
from jepa_core.sizes import check_heads_divide, resolve_vit_size
from torch import nn

from jepa_image import data as D
from jepa_image import ijepa
from jepa_image.ijepa import ImageDataConfig
from jepa_image.iwm_views import IWMViewConfig, apply_view, sample_view_params

__all__ = [
    "LeJEPA", "LeJEPAConfig", "LeJEPALossConfig", "LeJEPAModelConfig", "LeJEPAViewConfig", "MultiCropViews",
    "SPEC", "build_encoder", "build_model", "build_projector", "build_train_data", "multi_crop_transform",
    "train_collate",
]

# ---------------------------------------------------------------------------------------------
# config


@ranges(num_global=">=1", num_local=">=0", local_size=">=1", local_scale="(0,1] ordered", hflip_p="[0,1]",
        jitter_p="[0,1]", brightness=">=0", contrast=">=0", saturation=">=0", hue="[0,0.5]", grayscale_p="[0,1]",
        blur_p="[0,1]", blur_sigma=">0 ordered", solarize_p="[0,1]", solarize_threshold="[0,1]")
@dataclass
class LeJEPAViewConfig:
    """The views. Global views: ``data.image_size`` px, crop scale ``data.crop_scale``. Defaults:
    the lejepa code README's "GOTO" hyperparameters (2 global views at 224 px with scale
    (0.3, 1), 6 local views at 98 px with scale (0.05, 0.3); flip 0.5, colour jitter
    (0.4, 0.4, 0.2, 0.1) with p 0.8, grayscale 0.2, blur 0.5, solarise 0.2 at 128 / 255). The
    blur's sigma range is not stated there; (0.1, 2) is the usual one (and I-JEPA's)."""

    num_global: int = 2
    num_local: int = 6
    local_size: int = 98
    local_scale: tuple[float, float] = (0.05, 0.3)
    hflip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.2
    solarize_threshold: float = 0.5  # 128 / 255

    def check(self, prefix: str) -> None:
        for name in ("local_scale", "blur_sigma"):
            if len(getattr(self, name)) != 2:
                raise ConfigError(f"{prefix}.{name} is a (low, high) pair, got {prefix}.{name}="
                                  f"{list(getattr(self, name))}")

    def photometric(self) -> IWMViewConfig:
        """These settings as the batched photometric ops' config (:mod:`jepa_image.iwm_views`:
        jitter in the order brightness, contrast, saturation, hue, then grayscale, blur,
        solarise; on one-channel images saturation, hue and grayscale are the identity)."""
        return IWMViewConfig(
            hflip_p=self.hflip_p, jitter_p=self.jitter_p, brightness=self.brightness, contrast=self.contrast,
            saturation=self.saturation, hue=self.hue, grayscale_p=self.grayscale_p, blur_p=self.blur_p,
            blur_sigma=cast(tuple[float, float], tuple(self.blur_sigma)), solarize_p=self.solarize_p,
            solarize_threshold=self.solarize_threshold,
        )


@ranges(patch_size=">=1", in_chans=">=1", embed_dim=">=1", depth=">=1", num_heads=">=1", mlp_ratio=">0",
        drop_path_rate="[0,1)", proj_hidden_dim=">=1", proj_layers=">=1", proj_dim=">=1")
@dataclass
class LeJEPAModelConfig:
    encoder: str = "vit_large"  # vit_tiny .. vit_giant, or "custom" with the fields below
    patch_size: int = 14
    in_chans: int = 3
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    mlp_ratio: float | None = None
    pos_embed_order: Literal["wh", "hw"] = "wh"
    drop_path_rate: float = 0.0
    proj_hidden_dim: int = 2048  # the lejepa projector: Linear-BN-ReLU blocks, then a Linear
    proj_layers: int = 3  # Linear layers in the projector (1: a single Linear)
    proj_dim: int = 128  # K, where the losses live (MINIMAL.md: 16; IN-1k ablations: 64-1024)
    activation_checkpointing: bool = False

    def check(self, prefix: str) -> None:
        dim, _, heads, _ = resolve_vit_size(self.encoder, self.embed_dim, self.depth, self.num_heads, self.mlp_ratio,
                                            VIT_SIZES, what=f"{prefix}.encoder")
        check_heads_divide(prefix, (dim, heads, "embed_dim", "num_heads"))
        if dim % 4:
            raise ConfigError(f"{prefix}.embed_dim={dim} must be a multiple of 4 (the 2-D sin-cos position table "
                              f"splits it into four parts); e.g. {prefix}.embed_dim={max(4, dim - dim % 4)}")


@ranges(lamb="[0,1]", num_slices=">=1", t_max=">0", num_points=">=2")
@dataclass
class LeJEPALossConfig:
    lamb: float = 0.05  # lambda: (1 - lambda) L_pred + lambda SIGReg (IN-1k ablations: 0.05)
    num_slices: int = 1024  # random directions per step (paper listing: 256; README: 1024)
    quadrature: Literal["paper", "repo"] = "paper"  # jepa_core.sigreg.epps_pulley_quadrature
    t_max: float | None = None  # None: 5 for "paper", 3 for "repo"
    num_points: int = 17

    def check(self, prefix: str) -> None:
        if self.quadrature not in QUADRATURES:
            raise ConfigError(f"{prefix}.quadrature must be one of {list(QUADRATURES)}, got {self.quadrature!r}")


@dataclass
class LeJEPAConfig(BaseConfig):
    ARCHITECTURE_KEYS: ClassVar[tuple[str, ...]] = ("model.*", "data.image_size")
    RESUME_SAFE_KEYS: ClassVar[tuple[str, ...]] = ("model.activation_checkpointing", "model.drop_path_rate")

    method: str = "lejepa"
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    model: LeJEPAModelConfig = field(default_factory=LeJEPAModelConfig)
    views: LeJEPAViewConfig = field(default_factory=LeJEPAViewConfig)
    loss: LeJEPALossConfig = field(default_factory=LeJEPALossConfig)
    # the lejepa README: AdamW, lr 5e-4, weight decay 5e-2 (ViT), warm-up then cosine to lr / 1000
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        epochs=100, warmup=10, start_lr=0.0, lr=5e-4, final_lr=5e-7, weight_decay=0.05, final_weight_decay=0.05))

    def check(self, prefix: str) -> None:
        """Both view sizes are whole numbers of patches."""
        patch = self.model.patch_size
        for key, size in (("data.image_size", self.data.image_size), ("views.local_size", self.views.local_size)):
            if size % patch:
                raise ConfigError(f"{key}={size} is not a multiple of model.patch_size={patch}; e.g. "
                                  f"{key}={max(patch, size - size % patch)}")


# ---------------------------------------------------------------------------------------------
# views


class MultiCropViews:
    """Batch transform for :class:`jepa_core.masks.MaskCollator`: the LeJEPA views of a batch.

    ``crop=True``: the input is a uint8 batch ``[B, C, H, W]`` (in-memory data); each view's
    random-resized crop (``BatchRandomResizedCrop``'s box rule and resampling) and flip are drawn
    here. ``crop=False``: the input is a list of ``V`` uint8 batches, one per view, already
    cropped and flipped per sample (:func:`multi_crop_transform`, for image folders).

    Returns ``(global views [B, num_global, C, G, G], {"local_images": [B, num_local, C, L, L],
    "step": step})`` (no ``local_images`` without local views), normalised. Each view ``v``
    draws from two generators seeded by integers drawn first from the collator's generator
    (itself seeded by ``(seed, step)``): crop + flip, then the photometric parameters. All are
    drawn for the ``total`` samples of the global batch and ``slots`` picks this process's rows,
    so the views are a function of ``(seed, step)`` and the sample's slot only.
    """

    def __init__(self, views: LeJEPAViewConfig, global_size: int, global_scale, mean, std, crop: bool = True):
        validate(views)
        self.views, self.crop = views, crop
        self.sizes = [global_size] * views.num_global + [views.local_size] * views.num_local
        self.scales = [tuple(global_scale)] * views.num_global + [tuple(views.local_scale)] * views.num_local
        self.photo = views.photometric()
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    @property
    def num_views(self) -> int:
        return len(self.sizes)

    def __call__(self, inputs, generator: torch.Generator, slots: torch.Tensor | None = None,
                 total: int | None = None, step: int | None = None):
        V = self.num_views
        if self.crop:
            if not isinstance(inputs, torch.Tensor) or inputs.dtype != torch.uint8 or inputs.ndim != 4:
                raise TypeError("MultiCropViews(crop=True) takes a uint8 batch [B, C, H, W]")
            B, C = inputs.shape[:2]
        else:
            if not isinstance(inputs, (list, tuple)) or len(inputs) != V:
                raise TypeError(f"MultiCropViews(crop=False) takes a list of {V} view batches (one per view)")
            B, C = inputs[0].shape[:2]
        n = B if total is None else total
        rows = torch.arange(B) if slots is None else torch.as_tensor(slots, dtype=torch.long)
        seeds = torch.randint(0, 2**62, (V, 2), generator=generator).tolist()
        out = []
        for v in range(V):
            g_geo, g_photo = (torch.Generator().manual_seed(s) for s in seeds[v])
            if self.crop:
                crop = D.BatchRandomResizedCrop(self.sizes[v], self.scales[v], mean=(0.0,) * C, std=(1.0,) * C)
                x = crop(inputs, g_geo, slots=rows, total=n).clamp_(0, 1)
                flipped = (torch.rand(n, generator=g_geo, dtype=torch.float64) < self.views.hflip_p)[rows]
                x = torch.where(flipped.view(-1, 1, 1, 1), x.flip(-1), x)
            else:
                x = inputs[v]
                x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
            params = sample_view_params(self.photo, n, g_photo, source=True)[rows]
            out.append((apply_view(x, params, self.photo) - self.mean) / self.std)
        ng = self.views.num_global
        fields: dict = {"step": step}
        if V > ng:
            fields["local_images"] = torch.stack(out[ng:], 1)
        return torch.stack(out[:ng], 1), fields


def multi_crop_transform(views: LeJEPAViewConfig, global_size: int, global_scale=(0.3, 1.0)):
    """The per-sample geometric part for image folders (torchvision v2, the global RNG, which the
    Trainer seeds per sample from ``(seed, step, index)``): one RandomResizedCrop + flip per
    view, as uint8 tensors; :class:`MultiCropViews` with ``crop=False`` does the rest on the
    batch."""
    from torchvision.transforms import v2

    def one(size, scale):
        return v2.Compose([v2.RandomResizedCrop(size, scale=tuple(scale), antialias=True),
                           v2.RandomHorizontalFlip(views.hflip_p), v2.ToDtype(torch.uint8, scale=True),
                           v2.ToPureTensor()])

    tfs = [one(global_size, global_scale)] * views.num_global + [one(views.local_size, views.local_scale)] * views.num_local
    to_image = v2.ToImage()

    def transform(img):
        img = to_image(img)
        return tuple(tf(img) for tf in tfs)

    return transform


# ---------------------------------------------------------------------------------------------
# model


def build_projector(in_dim: int, hidden: int, out_dim: int, layers: int) -> nn.Sequential:
    """``layers - 1`` blocks of Linear, BatchNorm1d, ReLU, then a Linear to ``out_dim``: the
    projector of the lejepa examples (an MLP with BatchNorm; e.g. 512 -> 2048 -> 2048 -> K)."""
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
        d = hidden
    mods.append(nn.Linear(d, out_dim))
    return nn.Sequential(*mods)


class LeJEPA(JEPAMethod):
    """LeJEPA training step over ``batch = {"images": [B, Vg, C, G, G], "local_images":
    [B, Vl, C, L, L] (optional), "step": int (optional)}``.

    ``encoder`` and ``projector`` are trained (AdamW, the official no-decay groups); there is no
    target (no EMA, no momentum schedule) and ``eval_encoder()`` is the encoder. ``step`` seeds
    SIGReg's slices; without it the SIGReg module counts its calls.
    """

    def __init__(self, encoder: VisionTransformer, projector: nn.Module, lamb: float = 0.05,
                 sigreg: SIGReg | None = None, activation_checkpointing: bool = False):
        super().__init__()
        if not 0.0 <= lamb <= 1.0:
            raise ValueError(f"lamb must be in [0, 1], got {lamb}")
        self.encoder = encoder
        self.projector = projector
        self.lamb = float(lamb)
        self.sigreg = sigreg if sigreg is not None else SIGReg()
        if activation_checkpointing:
            enable_activation_checkpointing(self.encoder.blocks)

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "projector": self.projector}

    def embed(self, views: torch.Tensor) -> torch.Tensor:
        """Backbone embeddings ``[V, B, D]`` of views ``[B, V, C, H, W]`` (one encoder pass over
        all of them): the mean of each view's patch tokens."""
        B, V = views.shape[:2]
        h = self.encoder(views.flatten(0, 1)).mean(1)
        return h.view(B, V, -1).transpose(0, 1)

    def project(self, batch: dict) -> torch.Tensor:
        """Projections ``[V, B, K]`` of every view, the global views first."""
        emb = [self.embed(batch["images"])]
        if batch.get("local_images") is not None:
            emb.append(self.embed(batch["local_images"]))
        h = torch.cat(emb, 0)
        V, B = h.shape[:2]
        return self.projector(h.flatten(0, 1)).view(V, B, -1)

    def losses(self, z: torch.Tensor, num_global: int, step: int | None = None) -> dict[str, torch.Tensor]:
        """``{"loss", "pred_loss", "sigreg"}`` of projections ``z`` ``[V, B, K]`` whose first
        ``num_global`` views are the global ones. With ``lamb = 0`` SIGReg is only logged (no
        gradient flows through it); with ``lamb = 1`` the prediction loss is only logged."""
        centres = z[:num_global].mean(0)
        pred = (z - centres).square().mean()
        if self.lamb > 0:
            sig = self.sigreg(z, step=step)
        else:
            with torch.no_grad():
                sig = self.sigreg(z.detach(), step=step)
        loss = pred if self.lamb == 0 else (1 - self.lamb) * pred + self.lamb * sig
        return {"loss": loss, "pred_loss": pred.detach(), "sigreg": sig.detach()}

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        z = self.project(batch)
        step = batch.get("step")
        out = self.losses(z, batch["images"].shape[1], None if step is None else int(step))
        out["proj_std"] = z.detach().float().std(1).mean()  # per-dimension spread; 0 = collapse
        return out


def build_encoder(m: LeJEPAModelConfig, image_size: int) -> VisionTransformer:
    """The ViT of ``m`` (a named size or custom widths) for ``image_size`` inputs."""
    dim, depth, heads, ratio = resolve_vit_size(m.encoder, m.embed_dim, m.depth, m.num_heads, m.mlp_ratio, VIT_SIZES)
    return VisionTransformer(
        img_size=image_size, patch_size=m.patch_size, in_chans=m.in_chans, embed_dim=dim, depth=depth,
        num_heads=heads, mlp_ratio=ratio, drop_path_rate=m.drop_path_rate, pos_embed_order=m.pos_embed_order,
    )


def build_model(cfg: LeJEPAConfig) -> LeJEPA:
    """The LeJEPA model of ``cfg``: encoder, projector, SIGReg (slices seeded by ``train.seed`` and
    the step) and the trade-off ``loss.lamb``."""
    m, lo = cfg.model, cfg.loss
    encoder = build_encoder(m, cfg.data.image_size)
    projector = build_projector(encoder.embed_dim, m.proj_hidden_dim, m.proj_dim, m.proj_layers)
    sigreg = SIGReg(num_slices=lo.num_slices, quadrature=lo.quadrature, t_max=lo.t_max, num_points=lo.num_points,
                    seed=cfg.train.seed)
    return LeJEPA(encoder, projector, lo.lamb, sigreg, m.activation_checkpointing)


# ---------------------------------------------------------------------------------------------
# data


def _in_memory(cfg: LeJEPAConfig) -> bool:
    return cfg.data.dataset in ("fashion_mnist", "fashion_mnist_demo")


def train_collate(cfg: LeJEPAConfig, rank: int = 0, world_size: int = 1) -> MaskCollator:
    """The views of each batch, drawn for the global batch from ``(train.seed, step)`` (per
    process with ``train.draw_scope=process``); no masks."""
    d = cfg.data
    views = MultiCropViews(cfg.views, d.image_size, d.crop_scale, d.mean, d.std, crop=_in_memory(cfg))
    return MaskCollator(None, seed=cfg.train.seed, rank=rank, batch_transform=views, world_size=world_size,
                        scope=cfg.train.draw_scope)


def build_train_data(cfg: LeJEPAConfig, rank: int = 0, world_size: int = 1):
    """``(dataset, collate_fn)`` for pretraining: the training images and the multi-crop view
    collator (views drawn from (seed, step) for the global batch)."""
    d = cfg.data
    tf = None if _in_memory(cfg) else multi_crop_transform(cfg.views, d.image_size, d.crop_scale)
    return ijepa._raw_dataset(cfg, "train", tf), train_collate(cfg, rank, world_size)


SPEC = MethodSpec(
    name="lejepa",
    config_cls=LeJEPAConfig,
    build_model=build_model,
    build_train_data=build_train_data,
    build_eval_data=ijepa.build_eval_data,
    presets_package="jepa_image",
    default_preset="demo",
    description="LeJEPA: multi-crop views, prediction to the global-view centres + SIGReg, no EMA "
                "(Balestriero & LeCun 2025)",
    build_dense_eval_data=ijepa.build_dense_eval_data,
)
