"""S-JEPA (Abdelfattah & Alahi, "S-JEPA: A Joint Embedding Predictive Architecture for Skeletal
Action Recognition", ECCV 2024): a view encoder sees a partial, 2-D projected skeleton sequence;
a predictor fills in the latents of the masked joints; an EMA target encoder sees the full 3-D
sequence; a centred-softmax cross-entropy aligns predicted and target latents per masked token.

Backbone and masking follow MAMP (Mao et al., ICCV 2023; ``MAMP:model_mamp/transformer.py``),
which S-JEPA builds on: tokens of 4 frames x 1 joint with learned spatial and temporal
embeddings, each person a separate sample, an 8 x 256 transformer over the visible tokens,
motion-aware masking of 90 % of the tokens, a MAMP-decoder-like predictor (:mod:`jepa_skeleton.nn`,
:mod:`jepa_skeleton.masking`). MAMP's pretraining recipe (``MAMP:config/ntu60_xsub_joint/
pretrain_*.yaml``, ``MAMP:main_pretrain.py``) gives the presets: 120 frames, 400 epochs with 20 of
warm-up, AdamW (0.9, 0.95), LR 1e-3 -> 5e-4, weight decay 0.05, 128 sequences per step.

S-JEPA released no code. Where the paper does not say, this module chooses, each a config key:
the centre's momentum and the temperatures (:mod:`jepa_skeleton.losses`), the rotation range,
the dropped axes, the zeroed third channel and the target's rotation of the MAP view
(:mod:`jepa_skeleton.views`), the EMA schedule (jepa-core's linear 0.996 -> 1), and that the
motion of the masking is measured on the target's 3-D input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from jepa_core.config import BaseConfig, ConfigError, OptimConfig, ranges
from jepa_core.masks import MaskCollator, apply_masks
from jepa_core.method import JEPAMethod
from jepa_core.registry import MethodSpec
from jepa_core.target import EMATarget
from torch.utils.data import Dataset

from jepa_skeleton.losses import CenteredCrossEntropy
from jepa_skeleton.masking import SJEPASampler, motion_aware_masks
from jepa_skeleton.nn import SkeletonEncoder, SkeletonPredictor, persons_as_samples
from jepa_skeleton.views import project, rotate

# ---------------------------------------------------------------------------------------------
# config


@ranges(window=">=4", min_crop=">=1", p_interval="(0,1] ordered", num_bodies=">=1", synthetic_train=">=1", synthetic_test=">=1",
        synthetic_frames=">=4", synthetic_noise=">=0", batch_size=">=1", num_workers=">=0")
@dataclass
class SkeletonDataConfig:
    dataset: Literal["npz", "synthetic"] = "npz"
    """``npz``: MAMP's ``NTU60_XSub.npz``-style file at ``path`` (``x_train``, ``y_train``,
    ``x_test``, ``y_test``; :class:`jepa_skeleton.datasets.SkeletonArrays`); ``synthetic``:
    :class:`jepa_skeleton.synthetic.SyntheticSkeletonActions` (no download)."""
    path: str | None = None
    graph: str = "ntu25"  # the joint layout (jepa_skeleton.graph): its joint count sizes the model
    window: int = 120  # frames after MAMP's valid-crop-resize (window_size)
    p_interval: tuple[float, ...] = (0.5, 1.0)  # training crop ratio range (MAMP); evaluation: the transform's centre crop
    rotate: bool = True  # MAMP's random_rot augmentation of the training sequences
    min_crop: int = 64  # shortest training crop in frames (MAMP's valid_crop_resize: 64)
    num_bodies: int = 2  # persons per sequence (M)
    synthetic_train: int = 2000
    synthetic_test: int = 500
    synthetic_frames: int = 64
    synthetic_noise: float = 0.01
    synthetic_seed: int = 0  # held-out sequences are the ones after the training ones
    batch_size: int = 32  # per process (MAMP: 32 per GPU x 4 GPUs)
    num_workers: int = 8
    pin_memory: bool = True


@ranges(in_chans=">=1", t_patch=">=1", embed_dim=">=1", depth=">=1", num_heads=">=1", mlp_ratio=">0",
        pred_dim=">=1", pred_depth=">=1", pred_num_heads=">=1", drop_path_rate="[0,1)", mask_ratio="(0,1)",
        motion_tau=">=0")
@dataclass
class SJEPAModelConfig:
    in_chans: int = 3
    t_patch: int = 4  # frames per token (MAMP t_patch_size; 1 joint per token)
    embed_dim: int = 256
    depth: int = 8
    num_heads: int = 8
    mlp_ratio: float = 4.0
    pred_dim: int = 256
    pred_depth: int = 3  # MAMP: 3 for NTU-60, 5 for NTU-120
    pred_num_heads: int = 8
    drop_path_rate: float = 0.0
    mask_ratio: float = 0.9
    motion_tau: float = 0.80  # MAMP: 0.80 NTU-60, 0.75 NTU-120; 0: uniform random masking
    projection: bool = True
    """The Multi-Axis Projection view; false (ablation): the view encoder sees the masked 3-D sequence."""
    projection_angles: tuple[float, float, float] = (0.3, 0.3, 0.3)
    """Rotation range of the view about x, y, z in radians (not stated by the paper: MAMP's random_rot range)."""
    projection_axes: tuple[int, ...] = (0, 1, 2)  # the axes that may be dropped (not stated: all three)
    rotate_target: bool = True  # the target sees the view's rotated 3-D skeleton (not stated)
    centering: bool = True  # false (ablation): the centre stays zero


@ranges(student_temp=">0", teacher_temp=">0", center_momentum="[0,1)")
@dataclass
class SJEPALossConfig:
    student_temp: float = 0.1  # not stated by the paper (DINO's)
    teacher_temp: float = 0.06  # sharpening: below the student's (not stated)
    center_momentum: float = 0.9  # not stated (DINO's)


@dataclass
class SJEPAConfig(BaseConfig):
    ARCHITECTURE_KEYS: ClassVar[tuple[str, ...]] = ("model.*", "data.window", "data.graph")
    RESUME_SAFE_KEYS: ClassVar[tuple[str, ...]] = (
        "model.drop_path_rate", "model.mask_ratio", "model.motion_tau", "model.projection",
        "model.projection_angles", "model.projection_axes", "model.rotate_target", "model.centering")

    method: str = "sjepa"
    data: SkeletonDataConfig = field(default_factory=SkeletonDataConfig)
    model: SJEPAModelConfig = field(default_factory=SJEPAModelConfig)
    loss: SJEPALossConfig = field(default_factory=SJEPALossConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        epochs=400, warmup=20, start_lr=0.0, lr=1e-3, final_lr=5e-4, weight_decay=0.05, final_weight_decay=0.05,
        betas=(0.9, 0.95)))

    def check(self, prefix: str) -> None:
        m, d = self.model, self.data
        if d.window % m.t_patch:
            raise ConfigError(f"data.window={d.window} is not a multiple of model.t_patch={m.t_patch}; e.g. "
                              f"data.window={max(m.t_patch, d.window - d.window % m.t_patch)}")
        for width, heads, wkey, hkey in ((m.embed_dim, m.num_heads, "embed_dim", "num_heads"),
                                         (m.pred_dim, m.pred_num_heads, "pred_dim", "pred_num_heads")):
            if width % heads:
                raise ConfigError(f"model.{wkey}={width} is not divisible by model.{hkey}={heads}")
        axes = tuple(m.projection_axes)
        if not axes or len(set(axes)) != len(axes) or any(a not in range(m.in_chans) for a in axes):
            raise ConfigError(f"model.projection_axes={list(axes)} must be distinct channels in 0 .. {m.in_chans - 1}")
        if m.projection and m.in_chans != 3:
            raise ConfigError("model.projection rotates 3-D joints: it needs model.in_chans=3")
        if len(m.projection_angles) != 3 or any(not math.isfinite(a) or a < 0 for a in m.projection_angles):
            raise ConfigError(f"model.projection_angles={list(m.projection_angles)} must be 3 angles >= 0 (radians)")
        if len(d.p_interval) not in (1, 2):
            raise ConfigError(f"data.p_interval={list(d.p_interval)} must be [low, high] (or one value)")


# ---------------------------------------------------------------------------------------------
# model


class SJEPA(JEPAMethod):
    """S-JEPA's training step over ``batch = {"skeletons" [B, 3, T, V, M], "gumbel" [B, M, N],
    "rotation" [B, 3, 3], "drop_axis" [B]}`` (:class:`jepa_skeleton.masking.SJEPASampler`). The
    Trainer hooks are :class:`~jepa_core.method.JEPAMethod`'s defaults: ``encoder`` and
    ``predictor`` trained, ``target_encoder`` their EMA and the encoder evaluated (the paper
    fine-tunes and tests the target encoder). ``criterion.center`` is the running centre."""

    def __init__(self, encoder: SkeletonEncoder, predictor: SkeletonPredictor, criterion: CenteredCrossEntropy,
                 model_cfg: SJEPAModelConfig):
        super().__init__()
        self.encoder, self.predictor = encoder, predictor
        self.target_encoder = EMATarget(encoder)
        self.criterion = criterion
        self.cfg = model_cfg

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """One S-JEPA step (ECCV 2024, Fig. 2)."""
        c = self.cfg
        # Views: the target's full 3-D sequence, and its rotated 2-D projection (MAP) for the view encoder.
        target_x, view_x = self.views(batch["skeletons"], batch["rotation"], batch["drop_axis"])
        # Masks: motion-aware, per person (MAMP); the view encoder sees only the visible tokens.
        visible, masked = motion_aware_masks(target_x, batch["gumbel"], c.mask_ratio, c.motion_tau, c.t_patch)
        z = self.encoder(persons_as_samples(view_x), visible)
        pred = self.predictor(z, visible, masked)  # latents of the masked tokens
        # Targets: the EMA target encoder on the unmasked 3-D sequence, at the masked tokens.
        with torch.no_grad():
            h = apply_masks(self.target_encoder(persons_as_samples(target_x)), [masked])
        # Centred, sharpened softmax of the targets against the softmax of the predictions.
        loss, entropy = self.criterion(pred, h)
        return {"loss": loss, "target_entropy": entropy, "visible_tokens": float(visible.shape[1])}

    def views(self, x: torch.Tensor, rotation: torch.Tensor, drop_axis: torch.Tensor):
        """``(target input, view input)``: with ``projection``, x rotated (for both, or only the
        view without ``rotate_target``) and the view's ``drop_axis`` zeroed; else x for both."""
        if not self.cfg.projection:
            return x, x
        rotated = rotate(x, rotation)
        return (rotated if self.cfg.rotate_target else x), project(rotated, drop_axis)


def build_encoder(cfg: SJEPAConfig) -> SkeletonEncoder:
    from jepa_skeleton.graph import get_graph

    m = cfg.model
    return SkeletonEncoder(m.in_chans, cfg.data.window, get_graph(cfg.data.graph).num_joints, m.t_patch,
                           m.embed_dim, m.depth, m.num_heads, m.mlp_ratio, m.drop_path_rate)


def build_model(cfg: SJEPAConfig) -> SJEPA:
    m, lc = cfg.model, cfg.loss
    encoder = build_encoder(cfg)
    grid = encoder.grid_size  # (T / t_patch, V)
    predictor = SkeletonPredictor((grid[0], grid[1]), m.embed_dim, m.pred_dim, m.pred_depth, m.pred_num_heads,
                                  m.mlp_ratio)
    criterion = CenteredCrossEntropy(m.embed_dim, lc.student_temp, lc.teacher_temp, lc.center_momentum, m.centering)
    return SJEPA(encoder, predictor, criterion, m)


# ---------------------------------------------------------------------------------------------
# data


class Transformed(Dataset):
    """``(transform(x), label)`` of a dataset of ``(x, label)``, x as a float32 tensor."""

    def __init__(self, dataset, transform, classes=None):
        self.dataset, self.transform = dataset, transform
        if classes is not None:
            self.classes, self.num_classes = tuple(classes), len(classes)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        x, y = self.dataset[i]
        x = torch.as_tensor(x, dtype=torch.float32)
        return (x if self.transform is None else self.transform(x)), int(y)


def skeleton_transform(cfg: SJEPAConfig, train: bool):
    """MAMP's preprocessing (:class:`jepa_skeleton.preprocess.MAMPTransform`): valid-frame crop
    (random ratio in ``data.p_interval`` for training, centre crop otherwise) resized to
    ``data.window`` frames, random rotation for training with ``data.rotate``."""
    from jepa_skeleton.graph import get_graph
    from jepa_skeleton.preprocess import MAMPTransform

    d = cfg.data
    kw: dict[str, Any] = {"p_interval": tuple(d.p_interval)} if train else {}
    return MAMPTransform(train=train, window=d.window, rotate=d.rotate and train, graph=get_graph(d.graph),
                         min_length=d.min_crop, **kw)


def skeleton_dataset(cfg: SJEPAConfig, split: str, train_transform: bool) -> Dataset:
    """The ``split`` ("train" or "test") sequences with MAMP's training or evaluation transform."""
    d = cfg.data
    tf = skeleton_transform(cfg, train_transform)
    if d.dataset == "synthetic":
        from jepa_skeleton.synthetic import ACTIONS, generate_arrays

        # generated once, in memory; held-out sequences follow the training ones (as write_npz)
        n = d.synthetic_train if split == "train" else d.synthetic_test
        start = 0 if split == "train" else d.synthetic_train
        x, y = generate_arrays(n, seed=d.synthetic_seed, num_frames=d.synthetic_frames, num_bodies=d.num_bodies,
                               noise=d.synthetic_noise, start=start)
        return Transformed(list(zip(torch.from_numpy(x), y.tolist())), tf, classes=ACTIONS)
    if not d.path:
        raise FileNotFoundError("data.dataset=npz needs data.path: a MAMP-style .npz (x_train, y_train, x_test, "
                                "y_test; see the jepa-skeleton README for converting NTU RGB+D)")
    from jepa_skeleton.datasets import SkeletonArrays

    return SkeletonArrays(d.path, split=split, transform=tf, graph=d.graph)


def train_collate(cfg: SJEPAConfig, rank: int = 0, world_size: int = 1) -> MaskCollator:
    """The collator: skeletons, labels, and the step-seeded Gumbel noise and view parameters of
    :class:`jepa_skeleton.masking.SJEPASampler` (drawn for the global batch by default)."""
    m = cfg.model
    sampler = SJEPASampler(m.t_patch, m.projection_angles, m.projection_axes)
    return MaskCollator(sampler, seed=cfg.train.seed, rank=rank, input_key="skeletons", world_size=world_size,
                        scope=cfg.train.draw_scope)


def build_train_data(cfg: SJEPAConfig, rank: int = 0, world_size: int = 1):
    return skeleton_dataset(cfg, "train", True), train_collate(cfg, rank, world_size)


def build_eval_data(cfg: SJEPAConfig):
    """Labelled training and held-out sequences, both with the evaluation transform (centre
    crop, no rotation): no augmentation."""
    return skeleton_dataset(cfg, "train", False), skeleton_dataset(cfg, "test", False)


SPEC = MethodSpec(
    name="sjepa",
    config_cls=SJEPAConfig,
    build_model=build_model,
    build_train_data=build_train_data,
    build_eval_data=build_eval_data,
    presets_package="jepa_skeleton",
    default_preset="demo",
    description="S-JEPA: skeletons, 2-D projected masked view -> 3-D EMA target latents, centred softmax CE "
                "(Abdelfattah & Alahi 2024)",
)
