"""I-JEPA (Assran et al., 2023): predict the representations of 4 target blocks of an image from
one context block, in the space of an EMA target encoder.

Faithful to the official code (facebookresearch/ijepa; reference part A): official ViT sizes
and state-dict names, the I-JEPA predictor, the multi-block collator, smooth-L1 on
layer-normed EMA targets, four AdamW parameter groups, warm-up + cosine LR, cosine WD 0.04 ->
0.4, linear EMA 0.996 -> 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from jepa_core.config import BaseConfig
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
from jepa_core.target import EMATarget, normalize_targets

from jepa_image import data as D

# ---------------------------------------------------------------------------------------------
# config


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
    drop_path_rate: float = 0.0
    loss: Literal["smooth_l1", "l2", "l1"] = "smooth_l1"
    activation_checkpointing: bool = False
    """Recompute the encoder's and predictor's block activations in the backward pass
    (``jepa_core.nn.enable_activation_checkpointing``): less memory, about one more forward of
    compute. Not in the official I-JEPA code (its default, off, is kept); same gradients."""


@dataclass
class IJEPAConfig(BaseConfig):
    method: str = "ijepa"
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    model: IJEPAModelConfig = field(default_factory=IJEPAModelConfig)
    mask: MultiBlockMaskConfig = field(default_factory=MultiBlockMaskConfig)


# ---------------------------------------------------------------------------------------------
# model


class IJEPA(JEPAMethod):
    def __init__(self, encoder: VisionTransformer, predictor: VisionTransformerPredictor, loss: str = "smooth_l1",
                 activation_checkpointing: bool = False):
        super().__init__()
        self.encoder = encoder
        self.predictor = predictor
        self.target_encoder = EMATarget(encoder)  # before checkpointing: the target needs none
        self.loss_fn = get_loss(loss)
        if activation_checkpointing:
            enable_activation_checkpointing(self.encoder.blocks)
            enable_activation_checkpointing(self.predictor.predictor_blocks)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        images, masks_enc, masks_pred = batch["images"], batch["masks_enc"], batch["masks_pred"]
        B = images.shape[0]
        # Targets: the EMA encoder on the full image, layer-normed, gathered at each target block.
        with torch.no_grad():
            h = normalize_targets(self.target_encoder(images))
            h = repeat_interleave_batch(apply_masks(h, masks_pred), B, repeat=len(masks_enc))
        # Context: the encoder sees only the context block; the predictor fills in the targets.
        z = self.encoder(images, masks_enc)
        z = self.predictor(z, masks_enc, masks_pred)
        loss = self.loss_fn(z, h)
        return {"loss": loss, "context_tokens": masks_enc[0].shape[1], "target_tokens": masks_pred[0].shape[1]}


def build_encoder(m: IJEPAModelConfig, image_size: int) -> VisionTransformer:
    if m.encoder == "custom":
        if None in (m.embed_dim, m.depth, m.num_heads):
            raise ValueError("model.encoder=custom needs model.embed_dim, model.depth and model.num_heads")
        dim, depth, heads, ratio = m.embed_dim, m.depth, m.num_heads, m.mlp_ratio or 4.0
    else:
        if m.encoder not in VIT_SIZES:
            raise ValueError(f"unknown model.encoder {m.encoder!r}; valid: {', '.join(VIT_SIZES)}, custom")
        dim, depth, heads, ratio = VIT_SIZES[m.encoder]
        dim, depth, heads = m.embed_dim or dim, m.depth or depth, m.num_heads or heads
        ratio = m.mlp_ratio or ratio
    return VisionTransformer(
        img_size=image_size, patch_size=m.patch_size, in_chans=m.in_chans, embed_dim=dim, depth=depth,
        num_heads=heads, mlp_ratio=ratio, drop_path_rate=m.drop_path_rate, pos_embed_order="wh",
    )


def build_model(cfg: IJEPAConfig) -> IJEPA:
    encoder = build_encoder(cfg.model, cfg.data.image_size)
    predictor = VisionTransformerPredictor(
        num_patches=encoder.num_patches, embed_dim=encoder.embed_dim, predictor_embed_dim=cfg.model.pred_emb_dim,
        depth=cfg.model.pred_depth, num_heads=cfg.model.pred_num_heads or encoder.num_heads,
        drop_path_rate=cfg.model.drop_path_rate, pos_embed_order="wh",
    )
    return IJEPA(encoder, predictor, cfg.model.loss, cfg.model.activation_checkpointing)


# ---------------------------------------------------------------------------------------------
# data


def _raw_dataset(cfg: IJEPAConfig, split: str, transform):
    d = cfg.data
    if d.dataset == "imagefolder":
        if not d.root:
            raise FileNotFoundError("data.dataset=imagefolder needs data.root (a folder with train/<class>/<image>)")
        return D.ImageFolder(d.root, "train" if split == "train" else "val", transform)
    images, labels = D.load_fashion_mnist(d.dataset, d.root, split)
    return D.TensorImages(images, labels, transform)


def _in_memory(cfg: IJEPAConfig) -> bool:
    return cfg.data.dataset in ("fashion_mnist", "fashion_mnist_demo")


def train_collate(cfg: IJEPAConfig, rank: int = 0) -> MultiBlockMaskCollator:
    """The multi-block mask collator; for in-memory datasets it also applies the pretraining
    crop to the whole batch (:class:`jepa_image.data.BatchRandomResizedCrop`)."""
    d = cfg.data
    batch_tf = D.BatchRandomResizedCrop(d.image_size, d.crop_scale, mean=d.mean, std=d.std) if _in_memory(cfg) else None
    return MultiBlockMaskCollator(
        cfg.mask, d.image_size, cfg.model.patch_size, seed=cfg.train.seed, rank=rank, batch_transform=batch_tf
    )


def build_train_data(cfg: IJEPAConfig, rank: int = 0, world_size: int = 1):
    d = cfg.data
    # In-memory images stay uint8 per sample; the collator crops the whole batch at once.
    tf = None if _in_memory(cfg) else D.pretrain_transform(d.image_size, d.crop_scale, d.mean, d.std)
    return _raw_dataset(cfg, "train", tf), train_collate(cfg, rank)


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


def on_run_start(cfg: IJEPAConfig, run_dir: Path, dataset) -> None:
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
)
