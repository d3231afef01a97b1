"""I-JEPA (Assran et al., 2023): predict the representations of 4 target blocks of an image from
one context block, in the space of an EMA target encoder.

Faithful to the official code (ijepa:src/train.py, src/helper.py, src/models/vision_transformer.py,
src/masks/multiblock.py): official ViT sizes and state-dict names, the I-JEPA predictor, the
multi-block collator, smooth-L1 on layer-normed EMA targets, four AdamW parameter groups,
warm-up + cosine LR, cosine WD 0.04 -> 0.4, linear EMA 0.996 -> 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, Protocol

import torch
from jepa_core.config import BaseConfig, ConfigError, ranges
from jepa_core.losses import get_loss
from jepa_core.masks import MultiBlockMaskCollator, MultiBlockMaskConfig, apply_masks
from jepa_core.method import JEPAMethod
from jepa_core.nn import (
    VIT_SIZES,
    VisionTransformer,
    VisionTransformerPredictor,
    enable_activation_checkpointing,
    repeat_interleave_batch,
)
from jepa_core.registry import MethodSpec
from jepa_core.sigreg import SIGReg
from jepa_core.sizes import check_heads_divide, resolve_vit_size
from jepa_core.target import EMATarget, normalize_targets

from jepa_image import data as D

# ---------------------------------------------------------------------------------------------
# config


@ranges(image_size=">=1", crop_scale="(0,1] ordered", mean="any", std=">0", batch_size=">=1", num_workers=">=0")
@dataclass
class ImageDataConfig:
    dataset: Literal["imagefolder", "fashion_mnist", "fashion_mnist_demo"] = "imagefolder"
    root: str | None = None  # imagefolder: root/train/<class>/...; fashion_mnist: idx folder
    image_size: int = 224  # official crop_size
    crop_scale: tuple[float, float] = (0.3, 1.0)  # official RandomResizedCrop scale
    mean: tuple[float, ...] = D.IMAGENET_MEAN
    std: tuple[float, ...] = D.IMAGENET_STD
    batch_size: int = 128  # per process (official: 128 per GPU x 16 GPUs)
    num_workers: int = 10
    pin_memory: bool = True


@ranges(
    patch_size=">=1", in_chans=">=1", embed_dim=">=1", depth=">=1", num_heads=">=1", mlp_ratio=">0",
    pred_depth=">=1", pred_emb_dim=">=1", pred_num_heads=">=1", pred_mlp_ratio=">0", drop_path_rate="[0,1)",
    sigreg_weight="[0,1)", sigreg_slices=">=1",
)
@dataclass
class IJEPAModelConfig:
    encoder: str = "vit_huge"  # vit_tiny .. vit_giant, or "custom" with the fields below
    patch_size: int = 14
    in_chans: int = 3
    embed_dim: int | None = None  # override the size table (needed for "custom")
    depth: int | None = None
    num_heads: int | None = None
    mlp_ratio: float | None = None
    pred_depth: int = 12
    pred_emb_dim: int = 384
    pred_num_heads: int | None = None  # None: the encoder's head count, as the official helper
    pred_mlp_ratio: float | None = None  # None: 4.0, as the official vit_predictor
    pos_embed_order: Literal["wh", "hw"] = "wh"  # 2-D sin-cos order; I-JEPA: "wh" (column half first)
    drop_path_rate: float = 0.0
    loss: Literal["smooth_l1", "l2", "l1"] = "smooth_l1"
    activation_checkpointing: bool = False
    """Recompute the encoder's and predictor's block activations in the backward pass
    (``jepa_core.nn.enable_activation_checkpointing``): less memory, about one more forward of
    compute. Not in the official I-JEPA code (its default, off, is kept); same gradients."""
    sigreg_weight: float = 0.0
    """Not in the official I-JEPA code (0, the default, is the official loss): ``loss = (1 - w)
    * prediction loss + w * SIGReg`` of the context encoder's embeddings (LeJEPA's trade-off,
    arXiv 2511.08544; :class:`jepa_core.sigreg.SIGReg`, slices seeded by ``(train.seed, step)``)."""
    sigreg_on: Literal["pooled", "tokens"] = "pooled"
    """What SIGReg tests: ``pooled``, the mean of each image's context tokens (one row per image,
    as LeJEPA tests one embedding per view), or ``tokens``, every context token as a row."""
    sigreg_slices: int = 256  # random directions per step (the paper's listing)
    ema: bool = True
    """``false``: no EMA target encoder; the targets are the online encoder's output on the whole
    image under stop-gradient (``eval_encoder()`` is then the encoder). Not in the official code."""

    def check(self, prefix: str) -> None:
        """The widths split evenly into heads, and into the 2-D sin-cos table's four parts."""
        if type(self) is not IJEPAModelConfig and (self.sigreg_weight or not self.ema):
            raise ConfigError(f"{prefix}.sigreg_weight and {prefix}.ema are options of the ijepa method, not used "
                              f"by this one; leave {prefix}.sigreg_weight=0 and {prefix}.ema=true")
        dim, _, heads, _ = resolve_vit_size(self.encoder, self.embed_dim, self.depth, self.num_heads, self.mlp_ratio,
                                            VIT_SIZES, what=f"{prefix}.encoder")
        widths = ((dim, heads, "embed_dim", "num_heads"),
                  (self.pred_emb_dim, self.pred_num_heads or heads, "pred_emb_dim", "pred_num_heads"))
        check_heads_divide(prefix, *widths)
        for width, _, wkey, _ in widths:
            if width % 4:
                raise ConfigError(f"{prefix}.{wkey}={width} must be a multiple of 4 (the 2-D sin-cos position table "
                                  f"splits it into four parts); e.g. {prefix}.{wkey}={max(4, width - width % 4)}")


# The core mask section's ranges, declared here since I-JEPA is the method that uses it.
ranges(enc_mask_scale="(0,1] ordered", pred_mask_scale="(0,1] ordered", aspect_ratio=">0 ordered",
       num_enc_masks=">=1", num_pred_masks=">=1", min_keep=">=0", min_keep_context=">=0", buckets=">=0")(MultiBlockMaskConfig)


@dataclass
class IJEPAConfig(BaseConfig):
    # data.image_size sets the token grid (the position table's size); the rest of data does not.
    ARCHITECTURE_KEYS: ClassVar[tuple[str, ...]] = ("model.*", "data.image_size")
    RESUME_SAFE_KEYS: ClassVar[tuple[str, ...]] = ("model.activation_checkpointing", "model.drop_path_rate")

    method: str = "ijepa"
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    model: IJEPAModelConfig = field(default_factory=IJEPAModelConfig)
    mask: MultiBlockMaskConfig = field(default_factory=MultiBlockMaskConfig)

    def check(self, prefix: str) -> None:
        """The image is a whole number of patches."""
        check_whole_patches(self.data.image_size, self.model.patch_size)


def check_whole_patches(size: int, patch: int) -> None:
    """``data.image_size`` is a whole number of ``model.patch_size`` patches (the check of
    :class:`IJEPAConfig`, shared with the configs of the other image methods)."""
    if size % patch:
        raise ConfigError(f"data.image_size={size} is not a multiple of model.patch_size={patch}; e.g. "
                          f"data.image_size={max(patch, size - size % patch)}")


# ---------------------------------------------------------------------------------------------
# model


class IJEPA(JEPAMethod):
    """I-JEPA training step over ``batch = {"images", "masks_enc", "masks_pred"}`` (the
    multi-block collator's context and target masks, ``[B, K]`` each). The Trainer hooks are
    :class:`~jepa_core.method.JEPAMethod`'s defaults: ``encoder`` and ``predictor`` trained with
    the official AdamW groups, ``target_encoder`` the encoder's EMA and the one evaluated; targets
    come from :meth:`targets`.

    Options not in the official code, off by default: ``sigreg_weight > 0`` adds SIGReg
    (``loss = (1 - w) * prediction + w * SIGReg`` of the context encoder's pooled or token
    embeddings, slices seeded by ``batch["step"]`` when the collator gives it); ``ema=False``
    drops the EMA target: the encoder makes the targets under ``torch.no_grad()`` and is the one
    evaluated."""

    encoder: VisionTransformer

    def __init__(self, encoder: VisionTransformer, predictor: VisionTransformerPredictor, loss: str = "smooth_l1",
                 activation_checkpointing: bool = False, sigreg_weight: float = 0.0, sigreg: SIGReg | None = None,
                 sigreg_on: str = "pooled", ema: bool = True):
        super().__init__()
        if not 0.0 <= sigreg_weight < 1.0:
            raise ValueError(f"sigreg_weight must be in [0, 1), got {sigreg_weight}")
        if sigreg_on not in ("pooled", "tokens"):
            raise ValueError(f"sigreg_on must be 'pooled' or 'tokens', got {sigreg_on!r}")
        self.encoder = encoder
        self.predictor = predictor
        # before checkpointing: the target needs none; without EMA the encoder makes the targets
        self.target_encoder = EMATarget(encoder) if ema else None
        self.loss_fn = get_loss(loss)
        self.sigreg_weight, self.sigreg_on = float(sigreg_weight), sigreg_on
        self.sigreg = (sigreg or SIGReg()) if sigreg_weight > 0 else None
        if activation_checkpointing:
            enable_activation_checkpointing(self.encoder.blocks)
            enable_activation_checkpointing(self.predictor.predictor_blocks)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """One I-JEPA step (paper Sec. 3; ijepa:src/train.py ``train_step``): the loss between
        the predictor's output for each target block, given the context block, and the
        target representations of those blocks."""
        images, masks_enc, masks_pred = batch["images"], batch["masks_enc"], batch["masks_pred"]
        # Targets: what the predictor must output at each target block; no gradients.
        with torch.no_grad():
            h = self.targets(images, masks_pred, len(masks_enc))
        # Context: the encoder sees only the context block; the predictor fills in the targets.
        # (valid_*: flags of masks padded to bucket lengths, mask.buckets > 0; else None.)
        valid_enc, valid_pred = batch.get("masks_enc_valid"), batch.get("masks_pred_valid")
        ctx = self.encoder(images, masks_enc, valid=valid_enc)
        z = self.predictor(ctx, masks_enc, masks_pred, valid_ctx=valid_enc, valid_tgt=valid_pred)
        if valid_pred is None:
            loss = self.loss_fn(z, h)
            out = {"context_tokens": masks_enc[0].shape[1], "target_tokens": masks_pred[0].shape[1]}
        else:  # the mean over the real target tokens only: the unpadded step's loss
            valid = repeat_interleave_batch(torch.cat(valid_pred, dim=0), images.shape[0], len(masks_enc))
            loss = self.loss_fn(z, h, valid)
            assert valid_enc is not None  # the bucketing collator sets both flag lists together
            out = {"context_tokens": valid_enc[0][0].sum(), "target_tokens": valid_pred[0][0].sum()}
        if self.sigreg is not None:  # optional (model.sigreg_weight > 0): LeJEPA's trade-off
            emb = ctx.mean(1) if self.sigreg_on == "pooled" else ctx.flatten(0, 1)
            step = batch.get("step")
            sig = self.sigreg(emb, step=None if step is None else int(step))
            out["pred_loss"], out["sigreg"] = loss.detach(), sig.detach()
            loss = (1 - self.sigreg_weight) * loss + self.sigreg_weight * sig
        return {"loss": loss, **out}

    def targets(self, images: torch.Tensor, masks_pred: list[torch.Tensor], n_context: int) -> torch.Tensor:
        """The prediction targets, ``[len(masks_pred) * n_context * B, K, D]`` in the predictor's
        output order: the EMA target encoder on the full image, layer-normed, gathered at each
        target block, each repeated for the ``n_context`` context masks (ijepa:src/train.py
        ``forward_target``). Called under ``torch.no_grad()``; a method that makes its targets
        another way (e.g. DMT-JEPA) overrides this alone."""
        h = normalize_targets(self.target_encoder(images) if self.target_encoder is not None else self.encoder(images))
        return repeat_interleave_batch(apply_masks(h, masks_pred), images.shape[0], repeat=n_context)


def build_encoder(m: IJEPAModelConfig, image_size: int) -> VisionTransformer:
    """The encoder of ``m`` at ``image_size`` px (also what checkpoint loading builds,
    :func:`jepa_image.pretrained.load_pretrained`)."""
    dim, depth, heads, ratio = resolve_vit_size(m.encoder, m.embed_dim, m.depth, m.num_heads, m.mlp_ratio, VIT_SIZES)
    return VisionTransformer(
        img_size=image_size, patch_size=m.patch_size, in_chans=m.in_chans, embed_dim=dim, depth=depth,
        num_heads=heads, mlp_ratio=ratio, drop_path_rate=m.drop_path_rate, pos_embed_order=m.pos_embed_order,
    )


def build_predictor(m: IJEPAModelConfig, encoder: VisionTransformer) -> VisionTransformerPredictor:
    """The I-JEPA predictor of ``m`` on ``encoder``'s grid (heads default to the encoder's,
    ijepa:src/helper.py ``init_model``)."""
    return VisionTransformerPredictor(
        num_patches=encoder.num_patches, embed_dim=encoder.embed_dim, predictor_embed_dim=m.pred_emb_dim,
        depth=m.pred_depth, num_heads=m.pred_num_heads or encoder.num_heads, mlp_ratio=m.pred_mlp_ratio or 4.0,
        drop_path_rate=m.drop_path_rate, pos_embed_order=m.pos_embed_order,
    )


def build_model(cfg: IJEPAConfig) -> IJEPA:
    """The I-JEPA model of ``cfg``: encoder and predictor of ``cfg.model`` (the official init), the
    EMA target (or none with ``model.ema=false``), the loss and the optional SIGReg term."""
    m = cfg.model
    encoder = build_encoder(m, cfg.data.image_size)
    predictor = build_predictor(m, encoder)
    sigreg = SIGReg(num_slices=m.sigreg_slices, seed=cfg.train.seed) if m.sigreg_weight > 0 else None
    return IJEPA(encoder, predictor, m.loss, m.activation_checkpointing, sigreg_weight=m.sigreg_weight,
                 sigreg=sigreg, sigreg_on=m.sigreg_on, ema=m.ema)


# ---------------------------------------------------------------------------------------------
# data


class _ImageRunConfig(Protocol):
    """A run config with an image ``data`` section (I-JEPA's, IWM's, LeJEPA's)."""

    data: ImageDataConfig


def _raw_dataset(cfg: _ImageRunConfig, split: str, transform):
    d = cfg.data
    if d.dataset == "imagefolder":
        if not d.root:
            raise FileNotFoundError("data.dataset=imagefolder needs data.root (a folder with train/<class>/<image>)")
        return D.ImageFolder(d.root, "train" if split == "train" else "val", transform)
    images, labels = D.load_fashion_mnist(d.dataset, d.root, split)
    return D.TensorImages(images, labels, transform)


def _in_memory(cfg: IJEPAConfig) -> bool:
    return cfg.data.dataset in ("fashion_mnist", "fashion_mnist_demo")


class StepMultiBlockMaskCollator(MultiBlockMaskCollator):
    """:class:`MultiBlockMaskCollator` that also puts the batch's step in ``batch["step"]`` (it
    seeds SIGReg's slices when ``model.sigreg_weight > 0``: the same on every process, exact
    after a resume)."""

    def __call__(self, samples: list) -> dict:
        batch = super().__call__(samples)
        if not batch.get("skip"):
            batch["step"] = self.last_step
        return batch


def train_collate(cfg: IJEPAConfig, rank: int = 0, world_size: int = 1) -> MultiBlockMaskCollator:
    """The multi-block mask collator; for in-memory datasets it also applies the pretraining
    crop to the whole batch (:class:`jepa_image.data.BatchRandomResizedCrop`). Masks and crops
    are drawn for the global batch unless ``train.draw_scope=process``. With
    ``model.sigreg_weight > 0`` the batch also holds its ``step``."""
    d = cfg.data
    batch_tf = D.BatchRandomResizedCrop(d.image_size, d.crop_scale, mean=d.mean, std=d.std) if _in_memory(cfg) else None
    stamped = getattr(cfg.model, "sigreg_weight", 0.0) > 0
    return (StepMultiBlockMaskCollator if stamped else MultiBlockMaskCollator)(
        cfg.mask, d.image_size, cfg.model.patch_size, seed=cfg.train.seed, rank=rank, batch_transform=batch_tf,
        world_size=world_size, scope=cfg.train.draw_scope,
    )


def build_train_data(cfg: IJEPAConfig, rank: int = 0, world_size: int = 1):
    """``(dataset, collate_fn)`` for pretraining: the training images of ``cfg.data`` (I-JEPA's
    random-resized crop and flip) and the multi-block mask collator for this process (``rank``
    of ``world_size``)."""
    d = cfg.data
    # In-memory images stay uint8 per sample; the collator crops the whole batch at once.
    tf = None if _in_memory(cfg) else D.pretrain_transform(d.image_size, d.crop_scale, d.mean, d.std)
    return _raw_dataset(cfg, "train", tf), train_collate(cfg, rank, world_size)


def build_eval_data(cfg: IJEPAConfig):
    """Labeled train and held-out splits, without augmentation (resize + centre crop)."""
    d = cfg.data
    if d.dataset == "imagefolder":
        tf = D.eval_transform(d.image_size, d.mean, d.std)
    else:
        tf = D.normalize_transform(d.mean, d.std)
        if d.image_size != 28:
            tf = D.eval_transform(d.image_size, d.mean, d.std, resize_ratio=1.0)
    return _raw_dataset(cfg, "train", tf), _raw_dataset(cfg, "test", tf)


def build_dense_eval_data(cfg: IJEPAConfig):
    """Scenes of Fashion-MNIST items with per-pixel class maps for the ``dense`` protocol
    (:func:`jepa_image.dense_demo.build_dense_scenes`: rendered at ``data.image_size``, items from
    the run's Fashion-MNIST source, normalised like the eval data); None for an image folder."""
    d = cfg.data
    if d.dataset not in ("fashion_mnist", "fashion_mnist_demo"):
        return None
    from jepa_image.dense_demo import build_dense_scenes

    return build_dense_scenes(d.dataset, d.root, d.image_size, d.mean, d.std)


def on_run_start(cfg: IJEPAConfig, run_dir: Path, dataset) -> None:
    """Before training: a figure of sample masks on training images, ``<run>/plots/masks.png``."""
    from jepa_image.viz import plot_masks

    plot_masks(cfg, dataset, run_dir / "plots" / "masks.png")


SPEC = MethodSpec(
    name="ijepa",
    config_cls=IJEPAConfig,
    build_model=build_model,
    build_train_data=build_train_data,
    build_eval_data=build_eval_data,
    presets_package="jepa_image",
    default_preset="demo",
    description="I-JEPA: image, multi-block masks, smooth-L1 on EMA targets (Assran et al. 2023)",
    on_run_start=on_run_start,
    build_dense_eval_data=build_dense_eval_data,
)
