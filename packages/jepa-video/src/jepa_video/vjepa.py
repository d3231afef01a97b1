"""V-JEPA (Bardes et al., 2024) and V-JEPA 2 (Assran et al., 2025): predict, in the space of an
EMA target encoder, the features of the masked spatio-temporal tubes of a clip from the
features of the visible ones.

One training step (:meth:`VJEPA.forward`), as in the papers and the official code
(jepa:app/vjepa/train.py, vjepa2:app/vjepa/train.py):

1. targets ``h = LN(target_encoder(clips))`` (the encoder's own final norm, then a
   parameter-free layer norm), gathered at each mask configuration's target tokens;
2. context ``z_i = encoder(clips, context mask i)`` for each configuration ``i`` (the
   official code runs the encoder once per configuration; here one packed pass with a
   block-diagonal attention mask, :meth:`VideoVisionTransformer.forward_multi`, which equals it
   up to float summation order);
3. predictions ``p_i = predictor(z_i, context mask i, target mask i, mask_index)``, with
   ``mask_index = i`` for V-JEPA and ``0`` for V-JEPA 2 (the official quirk: V-JEPA 2 indexes
   the mask token by clip-length group, so with one group both configurations share
   ``mask_tokens[0]``; ``model.mask_token_per_config`` switches it);
4. loss = mean over configurations of ``mean(|p_i - h_i| ** p) / p`` with ``p = loss_exp`` (1:
   L1).

The two methods differ only in their defaults (model: sin-cos table vs. 3-D RoPE, predictor
heads and mask tokens, init rescale; data: ``frame_step 4`` at 224 px vs. ``fps 4`` at 256 px;
optimisation: warm-up + cosine LR, cosine WD 0.04 -> 0.4, linear EMA 0.998 -> 1, clip 10 vs.
warm-up + constant LR, constant WD 0.04 and EMA 0.99925, no clipping). Presets:
``jepa_video/presets/vjepa_*.yaml`` and ``vjepa2_*.yaml``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from jepa_core.config import BaseConfig, ConfigError, ranges
from jepa_core.masks import apply_masks
from jepa_core.method import JEPAMethod
from jepa_core.nn import (
    enable_activation_checkpointing,  # re-exported: it lived here before moving to core
)
from jepa_core.registry import MethodSpec
from jepa_core.sigreg import SIGReg
from jepa_core.sizes import check_heads_divide, resolve_vit_size
from jepa_core.target import EMATarget, normalize_targets
from torch.utils.data import Dataset

from .baselines import FrameBaselineConfig, frame_baseline
from .datasets import ClipDataset, VideoFolder, VideoIndex
from .demo_data import DIRECTIONS, make_demo_videos, split_label
from .masks import VJEPA_MASK_CONFIGS, MultiBlock3DMaskCollator, MultiBlock3DMaskConfig
from .nn import VIDEO_VIT_SIZES, VideoVisionTransformer, VJEPA2Predictor, VJEPAPredictor
from .sampling import ClipSampler
from .transforms import VideoEvalTransform, VideoTrainTransform

log = logging.getLogger(__name__)

__all__ = [
    "VJEPA",
    "VJEPA2_SPEC",
    "VJEPA_SPEC",
    "LabelMap",
    "VJEPA2Config",
    "VJEPA2DataConfig",
    "VJEPA2ModelConfig",
    "VJEPAConfig",
    "VJEPAModelConfig",
    "FlowClipVideos",
    "VideoDataConfig",
    "WeightedDraw",
    "build_encoder",
    "build_eval_data",
    "build_model",
    "build_predictor",
    "build_train_data",
    "demo_dir",
    "enable_activation_checkpointing",
    "ensure_demo_videos",
    "eval_tasks",
    "flow_clips",
    "vjepa_loss",
]

# ---------------------------------------------------------------------------------------------
# config


@ranges(
    weights=">=0", frames_per_clip=">=1", frame_step=">=1", fps=">0", duration=">0", num_clips=">=1",
    crop_size=">=1", crop_scale="(0,1] ordered", aspect_ratio=">0 ordered", hflip="[0,1]", eval_short_side=">=1",
    batch_size=">=1", num_workers=">=0", demo_clips=">=1", demo_eval_clips=">=1", demo_frames=">=1",
    demo_size=">=1", demo_speeds=">0", demo_seed=">=0", demo_clutter=">=0", flow_objects=">=1", flow_object_speed=">=1",
    flow_camera_speed=">=0", flow_texture=">=0",
)
@dataclass
class VideoDataConfig:
    """Video data; defaults are V-JEPA's (jepa:configs/pretrain/vitl16.yaml, app/vjepa/transforms.py).

    ``dataset``: ``demo`` (moving-sprite mp4 files made on first use in ``root``, default
    ``runs/.jepa_video_demo``), ``flowclips`` (the harder synthetic clips of
    :mod:`jepa_video.flow_data`, rendered in memory: textured background under a panning
    camera, ``flow_objects`` tinted Fashion-MNIST items moving independently; labels of the
    clip's main item, :class:`FlowClipVideos`), ``folder`` (``root``: a folder of videos, classes from
    sub-folders) or ``index`` (``index``: official ``path label`` files, optional per-file
    ``weights`` as V-JEPA 2). The probes after pretraining read ``eval_train`` / ``eval_test``
    (a folder or an index file, by ``dataset``); the demo makes a held-out set with unseen
    sprites. Exactly one of ``frame_step``, ``fps``, ``duration`` is set.
    """

    dataset: Literal["demo", "flowclips", "folder", "index"] = "index"
    root: str | None = None
    index: tuple[str, ...] = ()
    weights: tuple[float, ...] | None = None  # per index file; None: uniform over samples (V-JEPA)
    eval_train: str | None = None
    eval_test: str | None = None
    frames_per_clip: int = 16
    frame_step: int | None = 4
    fps: float | None = None
    duration: float | None = None
    num_clips: int = 1
    crop_size: int = 224
    crop_scale: tuple[float, float] = (0.3, 1.0)
    aspect_ratio: tuple[float, float] = (0.75, 1.35)
    hflip: float = 0.5
    eval_short_side: int | None = None  # eval resize before the centre crop; None: crop * 256 / 224
    batch_size: int = 24  # per process
    num_workers: int = 12
    pin_memory: bool = True
    decoder: str = "auto"  # auto | pyav | decord | torchcodec
    # A video with fewer frames than a clip needs: "pad" repeats its last frame (the official
    # rule, logged once per file), "skip" leaves it out, counted like a corrupt sample.
    short_videos: Literal["pad", "skip"] = "pad"
    # Probe labels: the demo's index holds class * 8 + direction; "both" probes each (two tasks);
    # other datasets need "raw".
    label: Literal["both", "direction", "class", "raw"] = "raw"
    # demo set (dataset=demo): clips made with jepa_video.demo_data.make_demo_videos
    demo_clips: int = 400
    demo_eval_clips: int = 160
    demo_frames: int = 16
    demo_size: int = 32
    demo_speeds: tuple[float, ...] = (1.0,)
    demo_seed: int = 0
    # static sprites behind the moving one (make_demo_videos' clutter): 0 = black canvas; with
    # clutter only motion tells the object from the scene
    demo_clutter: int = 0
    # flow-clip set (dataset=flowclips; demo_clips / demo_eval_clips / demo_frames / demo_size /
    # demo_seed give its size and seed): jepa_video.flow_data.render_clip's scene. Speeds are
    # the largest |v| of the integer velocities (px per rendered frame): 1.5 gives the 8
    # compass moves (+-1, 0), (0, +-1), (+-1, +-1), one per direction class.
    flow_objects: int = 2
    flow_object_speed: float = 1.5
    flow_camera_speed: float = 1.5
    flow_texture: float = 0.45  # amplitude of the background's fine texture (render_clip's texture)


@dataclass
class VJEPA2DataConfig(VideoDataConfig):
    """V-JEPA 2 data defaults (vjepa2:configs/train/vitl16/pretrain-256px-16f.yaml)."""

    frame_step: int | None = None
    fps: float | None = 4
    crop_size: int = 256
    num_workers: int = 8


@ranges(
    embed_dim=">=1", depth=">=1", num_heads=">=1", mlp_ratio=">0", in_chans=">=1", patch_size=">=1",
    tubelet_size=">=1", pred_depth=">=1", pred_emb_dim=">=1", pred_num_heads=">=1", pred_mlp_ratio=">0",
    num_mask_tokens=">=1", drop_path_rate="[0,1)", loss_exp=">0", sigreg_weight="[0,1)", sigreg_slices=">=1",
)
@dataclass
class VJEPAModelConfig:
    """Encoder and predictor; defaults are V-JEPA ViT-L/16 (jepa:configs/pretrain/vitl16.yaml,
    src/models/vision_transformer.py, src/models/predictor.py)."""

    encoder: str = "vit_large"  # a name of jepa_core.nn.VIDEO_VIT_SIZES, or "custom"
    embed_dim: int | None = None  # override the size table (needed for "custom")
    depth: int | None = None
    num_heads: int | None = None
    mlp_ratio: float | None = None
    in_chans: int = 3
    patch_size: int = 16
    tubelet_size: int = 2
    pred_depth: int = 12
    pred_emb_dim: int = 384
    pred_num_heads: int | None = None  # None: the encoder's head count (V-JEPA)
    pred_mlp_ratio: float | None = None  # None: 4.0, as the official predictors
    num_mask_tokens: int = 2
    uniform_power: bool = True
    use_rope: bool = False
    rope_fix_tiling: bool = False  # False: the official tiled RoPE frequencies (vjepa2:src/models/utils/modules.py)
    rescale_init: bool = False  # V-JEPA's init_video_model undoes the depth rescale
    drop_path_rate: float = 0.0
    activation_checkpointing: bool = False
    loss_exp: float = 1.0
    # mask_tokens[i] for mask configuration i (V-JEPA) or mask_tokens[0] for all (V-JEPA 2)
    mask_token_per_config: bool = True
    packed_context: bool = True  # one encoder pass for all mask configs (False: one per config)
    init_checkpoint: str | None = None  # a jepa run checkpoint to start from (V-JEPA 2 cooldown)
    # Not in the official code (the defaults are the official loss): (1 - w) * loss + w * SIGReg of
    # the context encoder's pooled (per clip and mask config) or token embeddings (LeJEPA,
    # arXiv 2511.08544; jepa_core.sigreg.SIGReg), and no EMA target with ema=false (the encoder
    # makes the targets under stop-gradient and is the one evaluated).
    sigreg_weight: float = 0.0
    sigreg_on: Literal["pooled", "tokens"] = "pooled"
    sigreg_slices: int = 256
    ema: bool = True

    def check(self, prefix: str) -> None:
        """The encoder's and the predictor's widths split evenly into heads."""
        dim, _, heads, _ = resolve_vit_size(self.encoder, self.embed_dim, self.depth, self.num_heads,
                                            self.mlp_ratio, VIDEO_VIT_SIZES, what=f"{prefix}.encoder")
        check_heads_divide(prefix, (dim, heads, "embed_dim", "num_heads"),
                           (self.pred_emb_dim, self.pred_num_heads or heads, "pred_emb_dim", "pred_num_heads"))


@dataclass
class VJEPA2ModelConfig(VJEPAModelConfig):
    """V-JEPA 2 ViT-L/16 defaults (vjepa2:configs/train/vitl16/pretrain-256px-16f.yaml,
    src/models/vision_transformer.py, src/models/predictor.py): RoPE, 12 predictor heads, 10 mask tokens,
    the depth rescale kept, activation checkpointing on, mask_tokens[0] for both configs."""

    pred_num_heads: int | None = 12
    num_mask_tokens: int = 10
    use_rope: bool = True
    rescale_init: bool = True
    activation_checkpointing: bool = True
    mask_token_per_config: bool = False


# The video mask and frame-baseline sections' ranges (jepa_video.masks, jepa_video.baselines).
ranges(spatial_scale="(0,1] ordered", temporal_scale="(0,1] ordered", aspect_ratio=">0 ordered", num_blocks=">=1",
       max_temporal_keep="(0,1]", max_keep=">=1")(MultiBlock3DMaskConfig)
ranges(epochs=">=1", frames_per_clip=">=1")(FrameBaselineConfig)

# The crop size and clip length set the token grid (position table, RoPE positions).
_VIDEO_ARCHITECTURE = ("model.*", "data.crop_size", "data.frames_per_clip")
# Same model, computed or regularised otherwise; init_checkpoint only seeds a fresh run.
_VIDEO_RESUME_SAFE = ("model.activation_checkpointing", "model.packed_context", "model.drop_path_rate",
                      "model.init_checkpoint")


def _check_video_grid(cfg: VJEPAConfig | VJEPA2Config) -> None:
    d, m = cfg.data, cfg.model
    if d.crop_size % m.patch_size:
        raise ConfigError(f"data.crop_size={d.crop_size} is not a multiple of model.patch_size={m.patch_size}; e.g. "
                          f"data.crop_size={max(m.patch_size, d.crop_size - d.crop_size % m.patch_size)}")
    if d.frames_per_clip % m.tubelet_size:
        raise ConfigError(f"data.frames_per_clip={d.frames_per_clip} is not a multiple of model.tubelet_size="
                          f"{m.tubelet_size}; e.g. data.frames_per_clip="
                          f"{max(m.tubelet_size, d.frames_per_clip - d.frames_per_clip % m.tubelet_size)}")


@dataclass
class VJEPAConfig(BaseConfig):
    ARCHITECTURE_KEYS: ClassVar[tuple[str, ...]] = _VIDEO_ARCHITECTURE
    RESUME_SAFE_KEYS: ClassVar[tuple[str, ...]] = _VIDEO_RESUME_SAFE

    method: str = "vjepa"
    data: VideoDataConfig = field(default_factory=VideoDataConfig)
    model: VJEPAModelConfig = field(default_factory=VJEPAModelConfig)
    mask: tuple[MultiBlock3DMaskConfig, ...] = VJEPA_MASK_CONFIGS
    baseline: FrameBaselineConfig = field(default_factory=FrameBaselineConfig)

    def check(self, prefix: str) -> None:
        """Clips are a whole number of tubelets."""
        _check_video_grid(self)


@dataclass
class VJEPA2Config(BaseConfig):
    ARCHITECTURE_KEYS: ClassVar[tuple[str, ...]] = _VIDEO_ARCHITECTURE
    RESUME_SAFE_KEYS: ClassVar[tuple[str, ...]] = _VIDEO_RESUME_SAFE

    method: str = "vjepa2"
    data: VJEPA2DataConfig = field(default_factory=VJEPA2DataConfig)
    model: VJEPA2ModelConfig = field(default_factory=VJEPA2ModelConfig)
    mask: tuple[MultiBlock3DMaskConfig, ...] = VJEPA_MASK_CONFIGS
    baseline: FrameBaselineConfig = field(default_factory=FrameBaselineConfig)

    def check(self, prefix: str) -> None:
        """Clips are a whole number of tubelets."""
        _check_video_grid(self)


# ---------------------------------------------------------------------------------------------
# model


def vjepa_loss(pred: torch.Tensor, target: torch.Tensor, loss_exp: float = 1.0) -> torch.Tensor:
    """``mean(|pred - target| ** loss_exp) / loss_exp`` (jepa:app/vjepa/train.py ``loss_fn``)."""
    return (pred - target).abs().pow(loss_exp).mean() / loss_exp


class VJEPA(JEPAMethod):
    """V-JEPA / V-JEPA 2 training step over ``batch = {"videos", "masks_enc", "masks_pred"}``
    (one context and one target mask per configuration, ``[B, K]`` each).

    ``mask_token_per_config``: the predictor's mask token of configuration ``i`` is
    ``mask_tokens[i]`` (V-JEPA) or ``mask_tokens[0]`` (V-JEPA 2 with one clip-length group).
    Mask tokens that no configuration can use are frozen (``requires_grad=False``): they get no
    gradient in the official code either, and freezing them keeps DDP from waiting on them.
    The Trainer hooks are :class:`~jepa_core.method.JEPAMethod`'s defaults; targets come from
    :meth:`targets`.
    """

    def __init__(
        self,
        encoder: VideoVisionTransformer,
        predictor: VJEPAPredictor | VJEPA2Predictor,
        num_mask_configs: int = 2,
        mask_token_per_config: bool = True,
        loss_exp: float = 1.0,
        packed_context: bool = True,
        activation_checkpointing: bool = False,
        sigreg_weight: float = 0.0,
        sigreg: SIGReg | None = None,
        sigreg_on: str = "pooled",
        ema: bool = True,
    ):
        super().__init__()
        if not 0.0 <= sigreg_weight < 1.0 or sigreg_on not in ("pooled", "tokens"):
            raise ValueError(f"sigreg_weight must be in [0, 1) and sigreg_on 'pooled' or 'tokens', got "
                             f"{sigreg_weight}, {sigreg_on!r}")
        self.encoder = encoder
        self.predictor = predictor
        # before checkpointing: the target needs none; without EMA the encoder makes the targets
        self.target_encoder = EMATarget(encoder) if ema else None
        self.sigreg_weight, self.sigreg_on = float(sigreg_weight), sigreg_on
        self.sigreg = (sigreg or SIGReg()) if sigreg_weight > 0 else None
        self.num_mask_configs = num_mask_configs
        self.mask_token_per_config = mask_token_per_config
        self.loss_exp = loss_exp
        self.packed_context = packed_context
        used = {self.mask_index(i) % predictor.num_mask_tokens for i in range(num_mask_configs)}
        for i, token in enumerate(predictor.mask_tokens):
            token.requires_grad_(i in used)
        if activation_checkpointing:
            enable_activation_checkpointing(self.encoder.blocks)
            enable_activation_checkpointing(self.predictor.predictor_blocks)

    def mask_index(self, config: int) -> int:
        return config if self.mask_token_per_config else 0

    @staticmethod
    def _flatten_clips(videos: torch.Tensor, masks: list[torch.Tensor]):
        """``[B, num_clips, C, T, H, W]`` -> clip-major ``[num_clips * B, C, T, H, W]`` with the
        masks repeated per clip (the official loop shares a sample's masks across its clips)."""
        if videos.ndim == 5:
            return videos, masks
        n = videos.shape[1]
        return videos.transpose(0, 1).flatten(0, 1), [m.repeat(n, 1) for m in masks]

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        masks_enc, masks_pred = list(batch["masks_enc"]), list(batch["masks_pred"])
        if len(masks_enc) != self.num_mask_configs or len(masks_pred) != self.num_mask_configs:
            raise ValueError(f"expected {self.num_mask_configs} mask configurations, got "
                             f"{len(masks_enc)} context and {len(masks_pred)} target masks")
        clips, masks_enc = self._flatten_clips(batch["videos"], masks_enc)
        _, masks_pred = self._flatten_clips(batch["videos"], masks_pred)
        # Targets: what the predictor must output per configuration; no gradients.
        with torch.no_grad():
            targets = self.targets(clips, masks_pred)
        # Context: the encoder sees only each configuration's visible tokens.
        if self.packed_context:
            contexts = self.encoder.forward_multi(clips, masks_enc)
        else:
            contexts = [self.encoder(clips, m) for m in masks_enc]
        # Predictions of the masked tokens, one predictor call per configuration.
        preds = [
            self.predictor(z, m_enc, m_pred, mask_index=self.mask_index(i))
            for i, (z, m_enc, m_pred) in enumerate(zip(contexts, masks_enc, masks_pred))
        ]
        losses = [vjepa_loss(p, t, self.loss_exp) for p, t in zip(preds, targets)]
        loss = torch.stack(losses).mean()
        out = {"loss": loss}
        if self.sigreg is not None:  # optional (model.sigreg_weight > 0): LeJEPA's trade-off
            if self.sigreg_on == "pooled":  # [configs, B, D]: each configuration a view
                emb = torch.stack([z.mean(1) for z in contexts])
            else:
                emb = torch.cat([z.flatten(0, 1) for z in contexts])
            step = batch.get("step")  # seeds the slices; else SIGReg counts its calls
            sig = self.sigreg(emb, step=None if step is None else int(step))
            out["pred_loss"], out["sigreg"] = loss.detach(), sig.detach()
            out["loss"] = (1 - self.sigreg_weight) * loss + self.sigreg_weight * sig
        for i, (m_enc, m_pred) in enumerate(zip(masks_enc, masks_pred)):
            out[f"context_tokens_{i}"] = m_enc.shape[1]
            out[f"target_tokens_{i}"] = m_pred.shape[1]
        return out

    def targets(self, clips: torch.Tensor, masks_pred: list[torch.Tensor]) -> list[torch.Tensor]:
        """The prediction targets, one ``[B, K_i, D]`` per mask configuration: the EMA target
        encoder on the whole clip, layer-normed, gathered at the configuration's target tokens
        (jepa:app/vjepa/train.py ``forward_target``). Called under ``torch.no_grad()``; a method
        that makes its targets another way overrides this alone."""
        h = normalize_targets(self.target_encoder(clips) if self.target_encoder is not None else self.encoder(clips))
        return [apply_masks(h, m) for m in masks_pred]  # h is freed on return (peak memory)


def _encoder_dims(m: VJEPAModelConfig) -> tuple[int, int, int, float]:
    return resolve_vit_size(m.encoder, m.embed_dim, m.depth, m.num_heads, m.mlp_ratio, VIDEO_VIT_SIZES)


def build_encoder(cfg: VJEPAConfig | VJEPA2Config) -> VideoVisionTransformer:
    """The video ViT of ``cfg`` (tubelets of ``model.tubelet_size`` frames, sin-cos table or 3-D
    RoPE)."""
    m, d = cfg.model, cfg.data
    dim, depth, heads, ratio = _encoder_dims(m)
    return VideoVisionTransformer(
        img_size=d.crop_size, num_frames=d.frames_per_clip, patch_size=m.patch_size, tubelet_size=m.tubelet_size,
        in_chans=m.in_chans, embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=ratio,
        drop_path_rate=m.drop_path_rate, uniform_power=m.uniform_power, use_rope=m.use_rope,
        rope_fix_tiling=m.rope_fix_tiling, rescale_init=m.rescale_init,
    )


def build_predictor(
    cfg: VJEPAConfig | VJEPA2Config, encoder: VideoVisionTransformer
) -> VJEPAPredictor | VJEPA2Predictor:
    """The V-JEPA predictor (sin-cos table) or, with ``use_rope``, the V-JEPA 2 one (RoPE)."""
    m, d = cfg.model, cfg.data
    common: dict[str, Any] = dict(
        img_size=d.crop_size, num_frames=d.frames_per_clip, patch_size=m.patch_size, tubelet_size=m.tubelet_size,
        embed_dim=encoder.embed_dim, predictor_embed_dim=m.pred_emb_dim, depth=m.pred_depth,
        num_heads=m.pred_num_heads or encoder.num_heads, mlp_ratio=m.pred_mlp_ratio or 4.0,
        num_mask_tokens=m.num_mask_tokens, rescale_init=m.rescale_init,
    )
    if m.use_rope:
        return VJEPA2Predictor(rope_fix_tiling=m.rope_fix_tiling, **common)
    return VJEPAPredictor(uniform_power=m.uniform_power, **common)


def build_model(cfg: VJEPAConfig | VJEPA2Config) -> VJEPA:
    """The V-JEPA / V-JEPA 2 model of ``cfg``: encoder, predictor (one mask token per mask
    configuration or shared), EMA target, loss and the optional SIGReg term."""
    m = cfg.model
    if not cfg.mask:
        raise ConfigError("mask: give at least one mask configuration")
    if m.mask_token_per_config and m.num_mask_tokens < len(cfg.mask):
        log.warning("model.num_mask_tokens=%d < %d mask configs: tokens are shared (index mod %d)",
                    m.num_mask_tokens, len(cfg.mask), m.num_mask_tokens)
    encoder = build_encoder(cfg)
    predictor = build_predictor(cfg, encoder)
    model = VJEPA(
        encoder, predictor, num_mask_configs=len(cfg.mask), mask_token_per_config=m.mask_token_per_config,
        loss_exp=m.loss_exp, packed_context=m.packed_context, activation_checkpointing=m.activation_checkpointing,
        sigreg_weight=m.sigreg_weight, sigreg_on=m.sigreg_on, ema=m.ema,
        sigreg=SIGReg(num_slices=m.sigreg_slices, seed=cfg.train.seed) if m.sigreg_weight > 0 else None,
    )
    if m.init_checkpoint:
        from jepa_core import checkpoint as ckpt

        obj = ckpt.load(m.init_checkpoint)
        if "model" not in obj:
            raise ConfigError(f"model.init_checkpoint {m.init_checkpoint!r} is not a jepa run checkpoint")
        model.load_state_dict(obj["model"])
        log.info("initialised encoder, predictor and target from %s", m.init_checkpoint)
    return model


# ---------------------------------------------------------------------------------------------
# data


class LabelMap(Dataset):
    """``(clip, label)`` -> ``(clip, f(label))``: the demo's direction or class, or the label."""

    def __init__(self, dataset: Dataset, label: str = "raw"):
        if label not in ("both", "direction", "class", "raw"):
            raise ValueError(f"label must be both, direction, class or raw, got {label!r}")
        self.dataset, self.label = dataset, label

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int):
        clip, y = self.dataset[index]
        if self.label in ("raw", "both"):
            return clip, y
        cls, direction = split_label(y)
        return clip, direction if self.label == "direction" else cls


class WeightedDraw(Dataset):
    """Sample ``i`` is a draw, with replacement, from ``dataset`` in proportion to ``weights``
    (V-JEPA 2's per-dataset weights). The draw uses the global torch generator, which the
    trainer's ``StampedDataset`` seeds per (seed, step, index), so it is reproducible and
    resumable, and every step draws afresh."""

    def __init__(self, dataset: Dataset, weights):
        self.dataset = dataset
        self.weights = torch.as_tensor(weights, dtype=torch.float64)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int):
        j = int(torch.multinomial(self.weights, 1).item())
        return self.dataset[j]


class FlowClipVideos(Dataset):
    """The clips of :func:`jepa_video.flow_data.render_clip` as a labelled video set
    (``data.dataset=flowclips``): ``(transform(clip), class * 8 + direction)`` like the
    moving-sprite demo, so :class:`LabelMap` and :func:`eval_tasks` apply unchanged.

    Clip ``i`` of ``split`` is ``render_clip((seed, split code, i), frames, size, num_objects,
    sprites=split, ...)``, the seed scheme of :class:`jepa_video.flow_data.SyntheticFlowClips`:
    "train" and "test" never share a seed and use disjoint Fashion-MNIST items (first 40 / last
    10 per class). The label describes the clip's **main item**, the one with the most visible
    pixels over the clip (``render_clip``'s ``largest``): its object class and the compass class
    of its image-plane velocity (what the probe must read while the camera pans the textured
    background and the other items move their own ways). The ``frames`` rendered frames are
    sampled by ``sampler`` as a video at ``fps`` (frame_step / fps / duration as for files), then
    transformed. All clips are rendered at construction (about 4 ms for 16 frames at 32 px) and
    kept in memory as uint8 ``[T, H, W, 3]``; ``samples`` lists ``(name, label)`` and
    :meth:`load_clips` returns the sampled uint8 clips, as :class:`ClipDataset`.
    """

    def __init__(self, split: str, num_clips: int, frames: int, size: int, seed: int = 0, *,
                 num_objects: int = 2, max_object_speed: float = 1.5, max_camera_speed: float = 1.5,
                 texture: float = 0.45,
                 sampler: ClipSampler | None = None, transform=None, fps: float = 8.0,
                 generator: torch.Generator | None = None):
        import numpy as np

        from .flow_data import SPLITS, render_clip

        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.sampler = sampler if sampler is not None else ClipSampler(frames_per_clip=frames, frame_step=1)
        self.transform, self.fps, self.generator = transform, fps, generator
        self.clips: list = []
        self.samples: list[tuple[str, int]] = []
        for i in range(num_clips):
            c = render_clip((seed, SPLITS[split], i), frames, size, num_objects, sprites=split,
                            max_object_speed=max_object_speed, max_camera_speed=max_camera_speed,
                            texture=texture)
            k = c["largest"]
            self.clips.append(np.ascontiguousarray(c["frames"].transpose(0, 2, 3, 1)))
            self.samples.append((f"flowclip-{split}-{i:05d}", int(c["classes"][k]) * len(DIRECTIONS)
                                 + int(c["directions"][k])))

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        return [y for _, y in self.samples]

    def load_clips(self, index: int) -> list:
        """The sampled uint8 clips ``[T, H, W, 3]`` of clip ``index`` (before the transform)."""
        frames = self.clips[index]
        return [frames[idx] for idx in self.sampler(len(frames), self.fps, self.generator)]

    def __getitem__(self, index: int):
        clips = [self.transform(c, self.generator) if self.transform is not None else torch.from_numpy(c)
                 for c in self.load_clips(index)]
        clip = clips[0] if len(clips) == 1 else torch.stack(clips)
        return clip, self.samples[index][1]


def flow_clips(cfg: VJEPAConfig | VJEPA2Config, split: str, sampler: ClipSampler, transform=None) -> FlowClipVideos:
    """The ``data.dataset=flowclips`` clips of ``split`` ("train" or "test")."""
    d = cfg.data
    n = d.demo_clips if split == "train" else d.demo_eval_clips
    return FlowClipVideos(split, n, d.demo_frames, d.demo_size, d.demo_seed, num_objects=d.flow_objects,
                          max_object_speed=d.flow_object_speed, max_camera_speed=d.flow_camera_speed,
                          texture=d.flow_texture,
                          sampler=sampler, transform=transform)


def demo_dir(cfg: VJEPAConfig | VJEPA2Config, split: str = "train") -> Path:
    """Where the demo clips of ``split`` live: ``data.root`` (default ``runs/.jepa_video_demo``,
    or ``<train.run_dir>/../.jepa_video_demo``), one sub-folder per generation setting."""
    d = cfg.data
    if d.root:
        base = Path(d.root)
    elif cfg.train.run_dir:
        base = Path(cfg.train.run_dir).parent / ".jepa_video_demo"
    else:
        base = Path("runs") / ".jepa_video_demo"
    n = d.demo_clips if split == "train" else d.demo_eval_clips
    speeds = "-".join(f"{s:g}" for s in d.demo_speeds)
    clutter = f"-c{d.demo_clutter}" if d.demo_clutter else ""  # old folders keep their names
    return base / f"{split}-n{n}-f{d.demo_frames}-s{d.demo_size}-v{speeds}{clutter}-seed{d.demo_seed}"


def ensure_demo_videos(cfg: VJEPAConfig | VJEPA2Config, split: str = "train") -> Path:
    """The index file of the demo clips of ``split`` ("train": training sprites; "test":
    held-out sprites), written on first use (into a temporary folder, then renamed, so
    concurrent processes do not see half a set)."""
    d = cfg.data
    out = demo_dir(cfg, split)
    index = out / "index.csv"
    if index.is_file():
        return index
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    n = d.demo_clips if split == "train" else d.demo_eval_clips
    seed = d.demo_seed if split == "train" else d.demo_seed + 1
    log.info("writing %d demo clips to %s", n, out)
    make_demo_videos(tmp, n, frames=d.demo_frames, size=d.demo_size, speeds=tuple(d.demo_speeds),
                     sprites=split, clutter=d.demo_clutter, seed=seed)
    try:
        tmp.rename(out)
    except OSError:  # another process finished first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return index


def _sampler(d: VideoDataConfig, train: bool) -> ClipSampler:
    return ClipSampler(
        frames_per_clip=d.frames_per_clip, frame_step=d.frame_step, fps=d.fps, duration=d.duration,
        num_clips=d.num_clips if train else 1, random_clip_sampling=train, short_videos=d.short_videos,
    )


def _dataset(cfg, source: str | tuple[str, ...] | None, train: bool, what: str, weights=None) -> ClipDataset:
    d = cfg.data
    if d.label != "raw" and d.dataset not in ("demo", "flowclips"):  # "both", "direction", "class": demo labels
        raise ConfigError(f"data.label={d.label!r} is for the demo set; use data.label=raw with dataset={d.dataset}")
    transform: VideoTrainTransform | VideoEvalTransform
    if train:
        transform = VideoTrainTransform(d.crop_size, d.crop_scale, d.aspect_ratio, d.hflip)
    else:
        transform = VideoEvalTransform(d.crop_size, d.eval_short_side)
    kwargs: dict[str, Any] = dict(sampler=_sampler(d, train), transform=transform, backend=d.decoder)
    if d.dataset == "folder":
        if not source:
            raise ConfigError(f"data.dataset=folder needs {what} (a folder of videos)")
        assert not isinstance(source, tuple)  # data.root / data.eval_*: one folder
        return VideoFolder(source, **kwargs)
    if not source:
        raise ConfigError(f"data.dataset=index needs {what} (official `path label` index files)")
    return VideoIndex(source, weights, **kwargs)


def _train_source_dataset(cfg: VJEPAConfig | VJEPA2Config, sampler: ClipSampler) -> ClipDataset | FlowClipVideos:
    """The training videos read with ``sampler`` (for :func:`jepa_video.baselines.write_frames`)."""
    d = cfg.data
    if d.dataset == "demo":
        return VideoIndex(ensure_demo_videos(cfg, "train"), sampler=sampler, backend=d.decoder)
    if d.dataset == "flowclips":
        return flow_clips(cfg, "train", sampler)
    if d.dataset == "folder":
        assert d.root is not None  # build_train_data (run first) raised a ConfigError without it
        return VideoFolder(d.root, sampler=sampler, backend=d.decoder)
    return VideoIndex(d.index, sampler=sampler, backend=d.decoder)


def eval_tasks(cfg: VJEPAConfig | VJEPA2Config) -> dict[str, Callable[[int], int]] | None:
    """The demo or the flow clips with ``data.label=both``: probe the motion direction and the
    object class of the same clips (``MethodSpec.eval_tasks``)."""
    if cfg.data.dataset in ("demo", "flowclips") and cfg.data.label == "both":
        return {"motion direction": lambda y: y % len(DIRECTIONS), "object class": lambda y: y // len(DIRECTIONS)}
    return None


def build_train_data(cfg: VJEPAConfig | VJEPA2Config, rank: int = 0, world_size: int = 1):
    """``(dataset, collate)``: clips with the official random-resized crop and flip, and the
    step-stamped 3-D multi-block mask collator (masks drawn for the global batch, a function of
    seed, step and slot, unless ``train.draw_scope=process``)."""
    d = cfg.data
    ds: Dataset
    if d.dataset == "demo":
        ds = LabelMap(VideoIndex(ensure_demo_videos(cfg, "train"), sampler=_sampler(d, True), backend=d.decoder,
                                 transform=VideoTrainTransform(d.crop_size, d.crop_scale, d.aspect_ratio, d.hflip)),
                      d.label)
    elif d.dataset == "flowclips":
        tf = VideoTrainTransform(d.crop_size, d.crop_scale, d.aspect_ratio, d.hflip)
        ds = LabelMap(flow_clips(cfg, "train", _sampler(d, True), tf), d.label)
    else:
        source = d.root if d.dataset == "folder" else d.index
        if d.weights is not None and d.dataset != "index":
            raise ConfigError("data.weights needs data.dataset=index (one weight per index file)")
        what = "data.root" if d.dataset == "folder" else "data.index"
        ds = _dataset(cfg, source, True, what, d.weights)
        if d.weights is not None:
            assert isinstance(ds, VideoIndex)  # data.weights needs data.dataset=index (checked above)
            ds = WeightedDraw(ds, ds.sample_weights)
    collate = MultiBlock3DMaskCollator(
        cfg.mask, d.crop_size, d.frames_per_clip, cfg.model.patch_size, cfg.model.tubelet_size,
        seed=cfg.train.seed, rank=rank, world_size=world_size, scope=cfg.train.draw_scope,
    )
    return ds, collate


def build_eval_data(cfg: VJEPAConfig | VJEPA2Config):
    """Labeled ``(train, test)`` clips without augmentation (one centre clip, centre crop). The
    demo: training sprites / held-out sprites, labelled by ``data.label`` (default: motion
    direction, 8 classes)."""
    d = cfg.data
    if d.dataset == "demo":
        tf = VideoEvalTransform(d.crop_size, d.eval_short_side)
        sets = [VideoIndex(ensure_demo_videos(cfg, s), sampler=_sampler(d, False), transform=tf, backend=d.decoder)
                for s in ("train", "test")]
        return LabelMap(sets[0], d.label), LabelMap(sets[1], d.label)
    if d.dataset == "flowclips":
        tf = VideoEvalTransform(d.crop_size, d.eval_short_side)
        return tuple(LabelMap(flow_clips(cfg, s, _sampler(d, False), tf), d.label) for s in ("train", "test"))
    if not (d.eval_train and d.eval_test):
        raise ConfigError("the probes need data.eval_train and data.eval_test (a folder or index file each), "
                          "or eval.enabled=false")
    return (_dataset(cfg, d.eval_train, False, "data.eval_train"),
            _dataset(cfg, d.eval_test, False, "data.eval_test"))


def on_run_start(cfg: VJEPAConfig | VJEPA2Config, run_dir: Path, dataset) -> None:
    """Make sure the demo's held-out clips exist too (the training clips were written by
    :func:`build_train_data`, which runs first)."""
    if cfg.data.dataset == "demo" and cfg.eval.enabled:
        ensure_demo_videos(cfg, "test")


VJEPA_SPEC = MethodSpec(
    name="vjepa",
    config_cls=VJEPAConfig,
    build_model=build_model,
    build_train_data=build_train_data,
    build_eval_data=build_eval_data,
    presets_package="jepa_video",
    default_preset="demo",
    description="V-JEPA: video, 3-D multi-block masks, L1 on EMA targets (Bardes et al. 2024)",
    on_run_start=on_run_start,
    eval_tasks=eval_tasks,
    eval_baselines=frame_baseline,
)

# The same pipeline; only the config class (defaults) differs.
VJEPA2_SPEC = replace(
    VJEPA_SPEC,
    name="vjepa2",
    config_cls=VJEPA2Config,
    description="V-JEPA 2: V-JEPA with 3-D RoPE, constant LR/WD/EMA and a cooldown (Assran et al. 2025)",
)
