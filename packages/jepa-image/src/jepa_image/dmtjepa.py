"""DMT-JEPA (Mo & Yun, 2024, arXiv 2405.17995): I-JEPA whose targets are re-aggregated from
each token's most similar spatial neighbours by a small cross-attention head.

Everything but the targets is I-JEPA's (:mod:`jepa_image.ijepa`): encoder, predictor,
multi-block masks, data, optimizer groups and schedules, evaluation. Added
(dmtjepa:src/train.py, dmtjepa:src/models/local_agg_head.py): an online
:class:`~jepa_image.dmt_head.NeighbourAggregationHead` applied to the context encoder's output
("global" mode) and trained with it, and its EMA twin, which turns the layer-normed target
encoder output into the targets ("local" mode). Both heads follow the encoder's EMA schedule
and are saved in the run checkpoints (the released code does not save them).

Paper defaults, released-code behaviours behind flags (``dmt.*`` and ``model.loss``; see
:mod:`jepa_image.dmt_head`): ``dmt.query=image_mean`` with ``dmt.query_batch_mixup=true``,
``dmt.wrap=true`` and ``model.loss=smooth_l1`` reproduce the released code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from jepa_core.checkpoint import CheckpointError
from jepa_core.config import ConfigError, ranges
from jepa_core.masks import apply_masks
from jepa_core.nn import VIT_SIZES, repeat_interleave_batch
from jepa_core.sizes import resolve_vit_size
from jepa_core.target import EMATarget, normalize_targets
from torch import nn

from jepa_image import ijepa
from jepa_image.dmt_head import NeighbourAggregationHead, check_grid, check_window
from jepa_image.ijepa import IJEPA, IJEPAConfig, IJEPAModelConfig

# ---------------------------------------------------------------------------------------------
# config


@ranges(top_k=">=1", window=">=3", depth=">=1", num_heads=">=1", mlp_ratio=">0")
@dataclass
class DMTHeadConfig:
    """The aggregation head (dmtjepa:configs/*.yaml ``patch``: ``patch_k_num: 4``,
    ``patch_k_size: 3``; two blocks and the encoder's head count, dmtjepa:src/helper.py)."""

    top_k: int = 4  # neighbours kept per token
    window: int = 3  # odd side of the neighbourhood window
    depth: int = 2
    num_heads: int | None = None  # None: the encoder's
    mlp_ratio: float = 4.0
    query: Literal["neighbour_mean", "image_mean"] = "neighbour_mean"
    """``neighbour_mean``: the mean of the selected neighbours (the paper's framework figure);
    ``image_mean``: the mean of all tokens of the image (released code)."""
    query_batch_mixup: bool = False
    """With ``query=image_mean``: the released code's row order, in which token ``n`` of image ``b``
    gets the mean of image ``(b * N + n) mod B`` (for batch > 1 mostly another image)."""
    wrap: bool = False
    """False: clip the window at the borders (paper); True: indices modulo the grid (released code)."""

    def check(self, prefix: str) -> None:
        try:
            check_window(self.window, self.top_k)
        except ConfigError as e:
            raise ConfigError(f"{prefix}.window / {prefix}.top_k: {e}") from None
        if self.query_batch_mixup and self.query != "image_mean":
            raise ConfigError(f"{prefix}.query_batch_mixup=true reproduces the released image-mean query: set "
                              f"{prefix}.query=image_mean too, or {prefix}.query_batch_mixup=false")


@dataclass
class DMTJEPAModelConfig(IJEPAModelConfig):
    loss: Literal["smooth_l1", "l2", "l1"] = "l2"  # the paper (L2 in its framework figure); released code: smooth_l1


@dataclass
class DMTJEPAConfig(IJEPAConfig):
    ARCHITECTURE_KEYS: ClassVar[tuple[str, ...]] = ("model.*", "data.image_size", "dmt.*")

    method: str = "dmtjepa"
    model: DMTJEPAModelConfig = field(default_factory=DMTJEPAModelConfig)
    dmt: DMTHeadConfig = field(default_factory=DMTHeadConfig)

    def check(self, prefix: str) -> None:
        """I-JEPA's checks, then: the window fits the token grid, the head count divides the width."""
        super().check(prefix)
        if self.mask.buckets:
            raise ConfigError("mask.buckets applies to I-JEPA only: DMT-JEPA's head mixes context tokens, and "
                              "padded ones would enter it; keep mask.buckets=0")
        grid = self.data.image_size // self.model.patch_size
        try:
            check_grid((grid, grid), self.dmt.window)
        except ConfigError as e:
            raise ConfigError(f"dmt.window={self.dmt.window}: {e} (data.image_size / model.patch_size = {grid}); "
                              f"e.g. dmt.window=3, or a larger data.image_size") from None
        m = self.model
        dim, _, heads, _ = resolve_vit_size(m.encoder, m.embed_dim, m.depth, m.num_heads, m.mlp_ratio, VIT_SIZES)
        if self.dmt.num_heads and dim % self.dmt.num_heads:
            raise ConfigError(f"dmt.num_heads={self.dmt.num_heads} does not divide the encoder width {dim}; pick a "
                              f"divisor, or dmt.num_heads=null for the encoder's {heads} heads")


# ---------------------------------------------------------------------------------------------
# model


class DMTJEPA(IJEPA):
    """I-JEPA with DMT-JEPA's targets over ``batch = {"images", "masks_enc", "masks_pred"}``.

    Modules: ``encoder``, ``predictor``, ``head`` (trained, in this optimizer-group order; the
    released ``init_opt`` adds the head's groups after the encoder's and predictor's), and their
    EMA twins ``target_encoder`` and ``target_head``. Logs ``target_std`` and
    ``target_std_min``: the mean and the smallest per-dimension standard deviation of the
    targets over the micro-batch's target tokens (a collapse makes them go to 0); like every
    extra, the Trainer averages them over micro-batches and processes, so with several
    processes they are the mean of per-process statistics, not the statistic of the global batch.
    """

    target_encoder: EMATarget  # always built: DMT-JEPA has no ema=False mode

    def __init__(self, encoder, predictor, head: NeighbourAggregationHead, loss: str = "l2",
                 activation_checkpointing: bool = False):
        super().__init__(encoder, predictor, loss, activation_checkpointing)
        self.head = head
        self.target_head = EMATarget(head)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """One DMT-JEPA step (arXiv 2405.17995, method section and framework figure;
        dmtjepa:src/train.py ``train_step``)."""
        images, masks_enc, masks_pred = batch["images"], batch["masks_enc"], batch["masks_pred"]
        # Targets: EMA encoder on the whole image, each token re-aggregated from its neighbours.
        with torch.no_grad():
            h = self.targets(images, masks_pred, len(masks_enc))
            std = h.flatten(0, -2).float().std(0)
        # Context: encoder on the context block, the online head (global mode), the predictor.
        z = self.head(self.encoder(images, masks_enc))
        z = self.predictor(z, masks_enc, masks_pred)
        loss = self.loss_fn(z, h)
        return {"loss": loss, "target_std": std.mean(), "target_std_min": std.min(),
                "context_tokens": masks_enc[0].shape[1], "target_tokens": masks_pred[0].shape[1]}

    def targets(self, images: torch.Tensor, masks_pred: list[torch.Tensor], n_context: int) -> torch.Tensor:
        """The layer-normed EMA encoder output, aggregated by the EMA head over the token grid
        ("local" mode), gathered at each target block and repeated per context mask
        (dmtjepa:src/train.py ``forward_target``, which aggregates every token and then gathers;
        here only the target blocks' tokens are aggregated when they are fewer: the same values)."""
        h = normalize_targets(self.target_encoder(images))
        grid = self.token_grid(images)
        rows = torch.cat(list(masks_pred), dim=1)  # [B, sum of K]: the blocks' tokens, block by block
        if rows.shape[1] < h.shape[1]:
            t = self.target_head(h, grid=grid, rows=rows)
            t = torch.cat(t.split([m.shape[1] for m in masks_pred], dim=1), dim=0)  # mask-major, as apply_masks
        else:
            t = apply_masks(self.target_head(h, grid=grid), masks_pred)
        return repeat_interleave_batch(t, images.shape[0], repeat=n_context)

    def token_grid(self, images: torch.Tensor) -> tuple[int, int]:
        p = self.encoder.patch_size
        return images.shape[-2] // p, images.shape[-1] // p

    # -- Trainer hooks ------------------------------------------------------------------------

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "predictor": self.predictor, "head": self.head}

    def target_modules(self) -> dict[str, nn.Module]:
        return {"target_encoder": self.target_encoder, "target_head": self.target_head}

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """The EMA step of both twins with the same momentum (dmtjepa:src/train.py, step 3)."""
        self.target_encoder.update(self.encoder, momentum)
        self.target_head.update(self.head, momentum)

    def explain_checkpoint_mismatch(self, missing: list[str], unexpected: list[str]) -> str | None:
        """The heads-missing message when only head entries are missing (resume, ``jepa eval``)."""
        prefixes = [p for p in ("head.", "target_head.") if any(k.startswith(p) for k in missing)]
        if prefixes and not unexpected and all(k.startswith(("head.", "target_head.")) for k in missing):
            return missing_heads_message(prefixes)
        return None

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict``, with a clear error when the heads are missing (an
        I-JEPA checkpoint, or weights saved by the released DMT-JEPA code, which drops them)."""
        if strict:
            missing = [p for p in ("head.", "target_head.") if not any(k.startswith(p) for k in state_dict)]
            if missing:
                raise CheckpointError(missing_heads_message(missing))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def missing_heads_message(missing: list[str]) -> str:
    """The error text for a checkpoint without the DMT-JEPA heads (``missing`` parameter prefixes):
    what it is and how to load it."""
    return (f"the checkpoint has no DMT-JEPA head weights ({', '.join(p + '*' for p in missing)}): it is an I-JEPA "
            "checkpoint, or weights saved by the released DMT-JEPA code, whose save_checkpoint drops both heads "
            "(dmtjepa:src/train.py). A `jepa pretrain dmtjepa` checkpoint has them. To start from its encoder and "
            "predictor anyway with freshly initialised heads (what the released code does when it resumes), load "
            "it with model.load_state_dict(state_dict, strict=False), or jepa_image.dmtjepa.load_without_heads")


def load_without_heads(model: DMTJEPA, state_dict: dict) -> list[str]:
    """Load every entry but the heads (kept as initialised; the target head is set equal to the
    online head, as at the start of a run). Returns the head keys that were not in the file;
    any other missing or unexpected key is an error."""
    result = nn.Module.load_state_dict(model, state_dict, strict=False)
    other = [k for k in result.missing_keys if not k.startswith(("head.", "target_head."))]
    if other or result.unexpected_keys:
        raise CheckpointError(f"the checkpoint does not fit this model: missing {other[:4]}, "
                              f"unexpected {result.unexpected_keys[:4]}")
    if any(k.startswith("head.") for k in result.missing_keys):
        model.target_head.module.load_state_dict(model.head.state_dict())
    return [k for k in result.missing_keys if k.startswith(("head.", "target_head."))]


def build_head(cfg: DMTJEPAConfig, encoder) -> NeighbourAggregationHead:
    """The neighbour-aggregation head of ``cfg.dmt`` on the encoder's width (its head count by
    default)."""
    d = cfg.dmt
    heads = d.num_heads or encoder.num_heads
    if encoder.embed_dim % heads:
        raise ConfigError(f"dmt.num_heads={heads} does not divide the encoder width {encoder.embed_dim}; pick a "
                          "divisor, or null for the encoder's head count")
    return NeighbourAggregationHead(encoder.embed_dim, heads, top_k=d.top_k, window=d.window, depth=d.depth,
                                    mlp_ratio=d.mlp_ratio, query=d.query, query_batch_mixup=d.query_batch_mixup,
                                    wrap=d.wrap)


def build_model(cfg: DMTJEPAConfig) -> DMTJEPA:
    """The DMT-JEPA model of ``cfg``: I-JEPA's encoder and predictor plus the online head and its
    EMA copy."""
    encoder = ijepa.build_encoder(cfg.model, cfg.data.image_size)
    predictor = ijepa.build_predictor(cfg.model, encoder)
    return DMTJEPA(encoder, predictor, build_head(cfg, encoder), cfg.model.loss, cfg.model.activation_checkpointing)


# I-JEPA's spec with DMT-JEPA's config and model: the same training data and masks, evaluation
# data (dense scenes included), presets package, mask plots and evaluator.
SPEC = dataclasses.replace(
    ijepa.SPEC,
    name="dmtjepa",
    config_cls=DMTJEPAConfig,
    build_model=build_model,
    description="DMT-JEPA: I-JEPA with neighbour-aggregated targets (Mo & Yun 2024)",
)
