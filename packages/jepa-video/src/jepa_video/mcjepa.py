"""MC-JEPA (Bardes, Ponce, LeCun, 2023, arXiv 2307.12698): motion and content from one encoder.

One encoder makes a feature pyramid of each frame. A PWC-Net-style estimator predicts optical
flow coarse-to-fine on the pyramids of two frames; the flow is the predictor's latent
variable: warping frame t+1's features with it must give frame t's features at every level
(the JEPA prediction), with a photometric reconstruction of the frame, edge-aware smoothness
and forward-backward cycle consistency, and a variance-covariance term on every pyramid level
(without it the features collapse, paper appendix). In the same step a VICReg objective on two
augmented views of still images trains the content features through the same encoder.

No official code was released. From the paper, as summarised in detail by secondary sources:
the shared encoder (a ConvNeXt-T with a split stem, 6 levels), the PWC-style estimator with a
LayerNorm after every conv and clipped flows, the losses and their per-level application, the
batch-level mixing of flow and content batches, flow losses starting after 10 content-only
epochs, a flow/content balance near 0.1. Not stated in the sources we could check, so chosen
here (each a config key): the loss weights (those of an unofficial reimplementation where it
has them), the search radius, the estimator's widths and activation, the flow-clip bound.
Flow convention: :mod:`jepa_video.flow_ops` (``warp(frame_{t+1}, flow_{t->t+1})`` rebuilds
frame t).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal, cast

import torch
import torch.nn.functional as F
from jepa_core.config import BaseConfig, ConfigError, ranges
from jepa_core.data import epoch_of_batch
from jepa_core.masks import MaskCollator
from jepa_core.method import JEPAMethod
from jepa_core.registry import MethodSpec
from torch import nn
from torch.utils.data import Dataset

from jepa_video import flow_ops as FO
from jepa_video import mcjepa_losses as L
from jepa_video.mcjepa_nn import ConvNeXtPyramid, ConvPyramid, FlowEstimator

if TYPE_CHECKING:
    from jepa_video.flow_data import VideoFramePairs

# ---------------------------------------------------------------------------------------------
# config


@ranges(image_size=">=16", num_frames=">=2", train_clips=">=1", test_clips=">=1", batch_size=">=1",
        num_workers=">=0", crop_scale="(0,1] ordered", frame_gap=">=1")
@dataclass
class MCJEPADataConfig:
    dataset: Literal["synthetic", "video"] = "synthetic"
    """``synthetic``: :mod:`jepa_video.flow_data` clips with exact flow (no download);
    ``video``: unsupervised frame pairs ``(t, t + frame_gap)`` of the videos under ``root``
    (:class:`jepa_video.flow_data.VideoFramePairs`; the content stream's stills are frame t)."""
    root: str | None = None
    """``data.dataset=video``: a folder of videos, or an index file (``path label`` lines or
    the ``.npy`` / ``.csv`` indexes V-JEPA's ``data.index`` takes)."""
    frame_gap: int = 1  # data.dataset=video: the pair's second frame is frame t + frame_gap
    decoder: str = "auto"  # data.dataset=video: the video decoder (auto, pyav, decord, torchcodec)
    image_size: int = 64
    num_frames: int = 8
    train_clips: int = 1000
    test_clips: int = 100
    batch_size: int = 32  # frame pairs per step per process; as many still images
    crop_scale: tuple[float, float] = (0.3, 1.0)  # the content views' random-resized crop
    flow_root: str | None = None
    """The flow evaluation's data: None for the held-out synthetic pairs; a Sintel or KITTI 2015
    folder (``root/training/...``, :class:`jepa_eval.flow.FlowFolder`) to score on real flow."""
    num_workers: int = 0
    pin_memory: bool = False


@ranges(radius=">=1", max_flow=">0")
@dataclass
class MCJEPAModelConfig:
    encoder: Literal["convnext_t", "conv"] = "convnext_t"
    """``convnext_t``: the paper's ConvNeXt-T with a split stem, 6 levels; ``conv``: a small
    conv pyramid of ``channels`` (the CPU demo)."""
    channels: tuple[int, ...] = (16, 32, 48, 64)
    radius: int = 4  # cost-volume search radius (PWC-Net's; not stated)
    hidden: tuple[int, ...] = (128, 96, 64)  # the estimator's convs per level (not stated)
    max_flow: float | None = None  # clip per level, in that level's pixels (not stated)
    normalize_features: bool = True  # LayerNorm each pixel's features before the cost volume (not stated)
    input_mean: tuple[float, ...] = (0.485, 0.456, 0.406)  # frames in [0, 1] are normalised before the encoder
    input_std: tuple[float, ...] = (0.229, 0.224, 0.225)
    expander: tuple[int, ...] = (8192, 8192, 8192)  # VICReg expander (the paper's 8192 x 3)


@ranges(regression=">=0", photometric=">=0", smoothness=">=0", smoothness_order="[1,2]", cycle=">=0",
        content=">=0", flow_start_epoch=">=0", vicreg_sim=">=0", vicreg_var=">=0", vicreg_cov=">=0")
@dataclass
class MCJEPALossConfig:
    regression: float = 1.0  # feature-warp regression, every level (the paper's Eq. 2)
    photometric: float = 1.0  # L1 + L2 + SSIM of the frame (Eq. 3)
    smoothness: float = 75.0  # edge-aware (Eq. 4); weight and order from an unofficial code
    smoothness_order: int = 2
    cycle: float = 0.2  # forward-backward feature cycle (Eq. 5); weight from an unofficial code
    vc_std: tuple[float, ...] = (0.01, 0.01, 0.01, 0.01, 0.001, 0.0001)
    """Variance weight per pyramid level, finest first (Eq. 6; the paper's values are in a table
    we could not read: an unofficial code's; higher levels need less). Repeated for more levels."""
    vc_cov: tuple[float, ...] = (0.04, 0.04, 0.001, 0.0, 0.0, 0.0)
    variance_covariance: bool = True  # false: the paper's ablation (collapse)
    content: float = 0.1  # weight of the VICReg content loss (the paper's best balance, about 0.1)
    vicreg_sim: float = 25.0
    vicreg_var: float = 25.0
    vicreg_cov: float = 1.0
    flow_start_epoch: int = 10  # the paper: flow losses after 10 content-only epochs
    occlusion_mask: bool = False
    """Mask the photometric loss by forward-backward occlusion (not stated in the sources we could
    check). Off by default: from an early inconsistent flow pair it masks every pixel, and the
    photometric loss vanishes instead of teaching the flow."""


@dataclass
class MCJEPAConfig(BaseConfig):
    ARCHITECTURE_KEYS: ClassVar[tuple[str, ...]] = ("model.*",)

    method: str = "mcjepa"
    data: MCJEPADataConfig = field(default_factory=MCJEPADataConfig)
    model: MCJEPAModelConfig = field(default_factory=MCJEPAModelConfig)
    loss: MCJEPALossConfig = field(default_factory=MCJEPALossConfig)

    def check(self, prefix: str) -> None:
        stride = 64 if self.model.encoder == "convnext_t" else 2 ** len(self.model.channels)
        if self.data.image_size < stride:
            raise ConfigError(f"data.image_size={self.data.image_size} is smaller than the pyramid's coarsest "
                              f"stride {stride}; raise data.image_size or use fewer levels")


# ---------------------------------------------------------------------------------------------
# model


class NormalizedPyramid(nn.Module):
    """The pyramid encoder on frames in [0, 1], normalised first by ``mean`` / ``std`` (measured:
    on raw [0, 1] frames a randomly initialised conv pyramid's features are dominated by the
    local mean colour and an estimator trained on them *with* the true flow does not
    generalise in 300 steps; normalised, it does). ``forward`` returns the levels finest-first,
    ``pooled`` the content features; ``dims`` as the pyramid's."""

    def __init__(self, pyramid: nn.Module, mean, std):
        super().__init__()
        self.pyramid = pyramid
        self.dims: tuple[int, ...] = cast(tuple[int, ...], pyramid.dims)  # ConvPyramid / ConvNeXtPyramid
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.pyramid((x - self.mean) / self.std)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)[-1].mean(dim=(-2, -1))


class PyramidTokens(nn.Module):
    """An encoder for the probes: the coarsest pyramid level as tokens ``[B, h * w, C]`` (its
    mean is the pooled content feature)."""

    def __init__(self, pyramid: nn.Module):
        super().__init__()
        self.pyramid = pyramid
        self.embed_dim = cast(tuple[int, ...], pyramid.dims)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pyramid(x)[-1].flatten(2).transpose(1, 2)


class MCJEPA(JEPAMethod):
    """MC-JEPA over ``batch = {"pairs" [B, 2, 3, H, W], "views" [B, 2, 3, H, W], "epoch"}``:
    frame pairs for the flow losses, two augmented views of still images for VICReg. No EMA
    target: ``trainable_modules`` is ``encoder``, ``flow_estimator``, ``expander``."""

    def __init__(self, encoder: nn.Module, flow_estimator: FlowEstimator, expander: nn.Module,
                 loss: MCJEPALossConfig):
        super().__init__()
        self.encoder, self.flow_estimator, self.expander = encoder, flow_estimator, expander
        self.loss_cfg = loss
        self._flow_idle = False  # set by each forward: the step is before flow_start_epoch

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "flow_estimator": self.flow_estimator, "expander": self.expander}

    def eval_encoder(self) -> nn.Module:
        return PyramidTokens(self.encoder)

    def idle_parameters(self) -> list[nn.Parameter]:
        """The flow estimator's parameters while the last step was before ``flow_start_epoch``."""
        return list(self.flow_estimator.parameters()) if getattr(self, "_flow_idle", False) else []

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """One MC-JEPA step (arXiv 2307.12698, Eq. 7): flow losses on frame pairs (once
        ``flow_start_epoch`` is reached), plus the VICReg content loss on still images."""
        c = self.loss_cfg
        out: dict[str, torch.Tensor] = {}
        loss = batch["views"].new_zeros(())
        world = L.world_size() if self.training else 1  # evaluation on one rank: no collectives
        self._flow_idle = batch.get("epoch", 0) < c.flow_start_epoch
        if not self._flow_idle:
            flow_loss, out = self.flow_losses(batch["pairs"][:, 0], batch["pairs"][:, 1])
            loss = loss + flow_loss
        elif world > 1:
            # DDP (without find_unused_parameters) needs a gradient for every parameter it
            # wraps each step: before flow_start_epoch the estimator gets zeros, which the
            # Trainer then drops (idle_parameters), so AdamW leaves it alone as in one process
            loss = loss + 0.0 * sum(p.sum() for p in self.flow_estimator.parameters())
        v = batch["views"]
        # VICReg on the global batch (as the official VICReg's FullGatherLayer): the pooled
        # features of every process are gathered (gradients flow back to their process) and
        # the expander, its BatchNorm included, sees the whole global batch, so the content
        # loss and its gradients are those of one process with the global batch
        h1, h2 = self.encoder.pooled(v[:, 0]), self.encoder.pooled(v[:, 1])
        if world > 1:
            h1, h2 = L.gather_batch(h1), L.gather_batch(h2)
        content, _ = L.vicreg(self.expander(h1), self.expander(h2), c.vicreg_sim, c.vicreg_var, c.vicreg_cov)
        loss = loss + c.content * content
        return {"loss": loss, "content": content.detach(), **out}

    def flow_losses(self, frame_t: torch.Tensor, frame_t1: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Encode both frames, predict the flow both ways, and the flow objective."""
        c = self.loss_cfg
        _check_pair(frame_t, frame_t1)
        f_t, f_t1 = self.encoder(frame_t), self.encoder(frame_t1)
        fw, bw = self.flow_estimator(f_t, f_t1), self.flow_estimator(f_t1, f_t)
        # the JEPA prediction: frame t's features from frame t+1's, warped by the flow
        regression = L.feature_regression(f_t, f_t1, fw) + L.feature_regression(f_t1, f_t, bw)
        size = frame_t.shape[-2:]
        full_fw, full_bw = FO.upsample_flow(fw[0], size), FO.upsample_flow(bw[0], size)
        visible_t = visible_t1 = None
        if c.occlusion_mask:
            visible_t = FO.forward_backward_occlusion(full_fw.detach(), full_bw.detach())
            visible_t1 = FO.forward_backward_occlusion(full_bw.detach(), full_fw.detach())
        photometric = (L.photometric(frame_t, frame_t1, full_fw, visible_t)
                       + L.photometric(frame_t1, frame_t, full_bw, visible_t1))
        smooth = (L.smoothness(full_fw, frame_t, order=c.smoothness_order)
                  + L.smoothness(full_bw, frame_t1, order=c.smoothness_order))
        cycle = L.cycle_consistency(f_t, fw, bw)
        vc = frame_t.new_zeros(())
        if c.variance_covariance:
            for i, (a, b) in enumerate(zip(f_t, f_t1)):
                w_std, w_cov = _level(c.vc_std, i), _level(c.vc_cov, i)
                for x in (a, b):
                    var, cov = L.variance_covariance(x)
                    vc = vc + w_std * var + w_cov * cov
        total = (c.regression * regression + c.photometric * photometric + c.smoothness * smooth
                 + c.cycle * cycle + vc)
        # the collapse monitor: each level's per-channel std over batch and positions, averaged
        # over channels (``feature_std`` the coarsest, ``feature_std_l{i}`` finest first)
        stds = [x.detach().transpose(0, 1).flatten(1).std(dim=1).mean() for x in f_t]
        return total, {"regression": regression.detach(), "photometric": photometric.detach(),
                       "smoothness": smooth.detach(), "cycle": cycle.detach(), "vc": vc.detach(),
                       "feature_std": stds[-1], **{f"feature_std_l{i}": s for i, s in enumerate(stds)},
                       "flow_px": full_fw.detach().norm(dim=1).mean()}

    @torch.no_grad()
    def predict_flow(self, frame_t: torch.Tensor, frame_t1: torch.Tensor) -> torch.Tensor:
        """``flow_{t->t+1}`` at the frames' resolution ``[B, 2, H, W]``. The frames must have
        the same shape (a ValueError names both otherwise)."""
        _check_pair(frame_t, frame_t1)
        fw = self.flow_estimator(self.encoder(frame_t), self.encoder(frame_t1))
        return FO.upsample_flow(fw[0], frame_t.shape[-2:])


def _check_pair(frame_t: torch.Tensor, frame_t1: torch.Tensor) -> None:
    if frame_t.ndim != 4 or frame_t.shape != frame_t1.shape:
        raise ValueError(f"a frame pair needs two batches of frames [B, 3, H, W] of the same shape; got frame_t "
                         f"{tuple(frame_t.shape)} and frame_t1 {tuple(frame_t1.shape)} (resize or crop both to "
                         "one size first)")


def _level(weights: tuple[float, ...], i: int) -> float:
    return weights[min(i, len(weights) - 1)] if weights else 0.0


def build_encoder(m: MCJEPAModelConfig) -> NormalizedPyramid:
    """The feature pyramid of ``m`` (ConvNeXt-T or the small conv pyramid of the demo), with input
    normalisation."""
    pyramid = ConvNeXtPyramid() if m.encoder == "convnext_t" else ConvPyramid(3, m.channels)
    return NormalizedPyramid(pyramid, m.input_mean, m.input_std)


def build_model(cfg: MCJEPAConfig) -> MCJEPA:
    """The MC-JEPA model of ``cfg``: the shared pyramid encoder, the flow estimator
    (zero-initialised heads) and the VICReg expander; no EMA target."""
    m = cfg.model
    encoder = build_encoder(m)
    # zero-initialised flow heads: training starts from zero flow instead of random large flows
    estimator = FlowEstimator(encoder.dims, radius=m.radius, hidden=m.hidden, max_flow=m.max_flow, zero_init=True,
                              normalize=m.normalize_features)
    dims = (encoder.dims[-1],) + tuple(m.expander)
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers += [nn.BatchNorm1d(dims[i + 1]), nn.ReLU()]
    return MCJEPA(encoder, estimator, nn.Sequential(*layers), cfg.loss)


# ---------------------------------------------------------------------------------------------
# data


class PairsAndStills(Dataset):
    """Item i: ``({"pair": [2, 3, H, W], "still": [3, H, W]}, label)``: frame pair i of the
    synthetic clips, and a still frame of another clip (a fixed permutation), labelled with its
    largest object's class (the content stream; the paper draws it from ImageNet)."""

    def __init__(self, cfg: MCJEPAConfig, split: str):
        self.pairs = build_flow_eval_data(cfg, split)
        self.clips = self.pairs.clips
        self.perm = torch.randperm(len(self.pairs), generator=torch.Generator().manual_seed(cfg.train.seed))

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        f0, f1, _, _ = self.pairs[i]
        j = int(self.perm[i])
        per = self.clips.num_frames - 1  # pairs per clip
        clip = self.clips[j // per]
        still = clip["frames"][j % per]
        return {"pair": torch.stack([f0, f1]), "still": still}, int(clip["label"])


class ContentViews:
    """Batch transform: two random-resized crops (with flips) of each still image, drawn from
    the step's seeded generator, and the batch's ``epoch`` (``epoch_of(step)``, when given).

    In the global draw scope (``slots`` / ``total`` from :class:`jepa_core.masks.MaskCollator`)
    the crops are drawn for the whole global batch and each process applies those of its own
    samples' slots, so the views do not depend on the number of processes."""

    def __init__(self, size: int, scale: tuple[float, float], epoch_of: Callable[[int], int] | None = None):
        self.size, self.scale, self.epoch_of = size, tuple(scale), epoch_of

    def __call__(self, inputs: dict, generator: torch.Generator, slots: torch.Tensor | None = None,
                 total: int | None = None, step: int | None = None):
        still = inputs["still"]
        if slots is None:
            slots, total = torch.arange(still.shape[0]), still.shape[0]
        assert total is not None  # MaskCollator passes total with slots
        views = torch.stack([self._view(still, generator, slots, int(total)) for _ in range(2)], dim=1)
        fields: dict = {"views": views}
        if self.epoch_of is not None and step is not None:
            fields["epoch"] = self.epoch_of(step)
        return inputs["pair"], fields

    def _view(self, x: torch.Tensor, g: torch.Generator, slots: torch.Tensor, total: int) -> torch.Tensor:
        b, _, h, w = x.shape
        # the crop parameters of every sample of the global batch; this process's rows by slot
        area = (self.scale[0] + (self.scale[1] - self.scale[0]) * torch.rand(total, generator=g))[slots]
        side = (area.sqrt() * min(h, w)).clamp(min=4)
        top = torch.rand(total, generator=g)[slots] * (h - side)
        left = torch.rand(total, generator=g)[slots] * (w - side)
        flip = torch.rand(total, generator=g)[slots] < 0.5
        # affine grid over each crop box, bilinear resample to the output size
        theta = torch.zeros(b, 2, 3)
        sx = side / w
        theta[:, 0, 0] = torch.where(flip, -sx, sx)
        theta[:, 1, 1] = side / h
        theta[:, 0, 2] = (left + side / 2) / w * 2 - 1
        theta[:, 1, 2] = (top + side / 2) / h * 2 - 1
        grid = F.affine_grid(theta, [b, x.shape[1], self.size, self.size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def build_train_data(cfg: MCJEPAConfig, rank: int = 0, world_size: int = 1):
    """The training pairs and stills, and a :class:`MaskCollator` whose batch transform makes
    the content views and sets ``batch["epoch"]``: the Trainer's epoch of the batch's optimizer
    step (:func:`jepa_core.data.epoch_of_batch`, so with ``optim.grad_accum > 1`` the flow
    losses start at the first optimizer step of ``loss.flow_start_epoch``, on all its
    micro-batches alike)."""
    dataset = build_train_dataset(cfg)
    steps = max(1, len(dataset) // (cfg.data.batch_size * world_size))
    epoch_of = functools.partial(epoch_of_batch, steps_per_epoch=steps, grad_accum=cfg.optim.grad_accum,
                                 ipe=cfg.optim.ipe)
    views = ContentViews(cfg.data.image_size, cfg.data.crop_scale, epoch_of)
    collate = MaskCollator(None, seed=cfg.train.seed, rank=rank, input_key="pairs", batch_transform=views,
                           world_size=world_size, scope=cfg.train.draw_scope)
    return dataset, collate


def build_train_dataset(cfg: MCJEPAConfig) -> PairsAndStills | VideoFramePairs:
    """``data.dataset=synthetic``: :class:`PairsAndStills`; ``video``:
    :class:`jepa_video.flow_data.VideoFramePairs` over ``data.root``."""
    d = cfg.data
    if d.dataset == "video":
        from jepa_video.flow_data import VideoFramePairs

        if not d.root:
            raise ConfigError("data.dataset=video needs data.root: a folder of videos, or an index file "
                              "(`path label` lines, as V-JEPA's data.index)")
        return VideoFramePairs(d.root, d.image_size, frame_gap=d.frame_gap, backend=d.decoder)
    return PairsAndStills(cfg, "train")


class _Stills(Dataset):
    """``(still frame, class of its largest object)`` of the synthetic clips, for the probes."""

    def __init__(self, cfg: MCJEPAConfig, split: str):
        from jepa_video.flow_data import SyntheticFlowClips

        d = cfg.data
        self.clips = SyntheticFlowClips(split, d.train_clips if split == "train" else d.test_clips,
                                        d.num_frames, d.image_size, cfg.train.seed)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int):
        clip = self.clips[i]
        return clip["frames"][clip["frames"].shape[0] // 2], int(clip["label"])


def build_eval_data(cfg: MCJEPAConfig):
    """Still images with labels (training and held-out) for the content probes."""
    return _Stills(cfg, "train"), _Stills(cfg, "test")


def build_flow_eval_data(cfg: MCJEPAConfig, split: str = "test"):
    """Frame pairs with exact flow, ``(frame_t, frame_t1, flow, occluded)``: held-out ones, or the
    training pairs with ``split="train"`` (the mean-flow baseline)."""
    from jepa_video.flow_data import SyntheticFramePairs

    d = cfg.data
    return SyntheticFramePairs(split, d.test_clips if split == "test" else d.train_clips, d.num_frames,
                               d.image_size, cfg.train.seed)


def build_flow_train_data(cfg: MCJEPAConfig):
    """The training frame pairs with exact flow (for the mean-flow baseline)."""
    return build_flow_eval_data(cfg, "train")


SPEC = MethodSpec(
    name="mcjepa",
    config_cls=MCJEPAConfig,
    build_model=build_model,
    build_train_data=build_train_data,
    build_eval_data=build_eval_data,
    presets_package="jepa_video",
    default_preset="demo",
    description="MC-JEPA: optical flow and content from one encoder (Bardes et al. 2023)",
    evaluator="flow",
    extra={"flow_eval_data": build_flow_eval_data, "train_flow_data": build_flow_train_data},
)
