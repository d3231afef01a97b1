"""I-JEPA multi-block masks, vectorised over the batch.

Follows the official collator (ijepa:src/masks/multiblock.py) step for step:

1. One target-block size and one context-block size per *batch*, each from a single uniform
   ``r`` that sets both the scale and the aspect ratio (the official correlation quirk);
   ``h = round(sqrt(k * a))``, ``w = round(sqrt(k / a))``, then shrunk until ``h < H`` and
   ``w < W``. The context block is square (aspect (1, 1)).
2. Positions ``top ~ U{0, H - h - 1}``, ``left ~ U{0, W - w - 1}`` (the official exclusive upper
   bound: a block never touches the last row or column).
3. The context block is intersected with the complement of every target block (context and
   targets disjoint) and accepted only if it keeps *more than* ``min_keep`` tokens; after 20
   failed tries the last complement is dropped from the constraint, and so on.
4. Indices are raster-sorted; every mask of a kind is truncated to the batch minimum, keeping
   the first indices in raster order.

Differences, each behind a flag with the official behaviour as default:

- ``fix_position_bound=True`` uses inclusive position bounds and lets a block span the whole
  grid (ijepa PR #40 / #59).
- ``min_keep_context`` sets a separate minimum for the context (the official ``min_keep``
  applies to targets and context alike, which makes small grids with small targets hang).

Not reproduced: the official code draws positions from the process-global RNG; we draw them
from the seeded per-batch generator, so a batch's masks are a pure function of (seed, step) and
the sample's slot in the global batch, and a resumed run sees the same masks. By default the
"batch" of steps 1 and 4 is the global batch (every process's samples: one block size and one
truncation per global batch, whatever the number of processes); ``scope="process"`` on the
collator gives the official per-process batch. The Python loop over images is replaced by batched
tensor operations (the distribution is the same; the random stream is not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from jepa_core.masks.blocks import block_masks, first_k, to_indices
from jepa_core.masks.blocks import paint_blocks as _paint_blocks  # noqa: F401  (old import path)
from jepa_core.masks.buckets import bucket_length, default_buckets, pad_masks
from jepa_core.masks.collator import MaskCollator, StepSeeds, mix_seed

__all__ = ["MASK_TAG", "MultiBlockMaskCollator", "MultiBlockMaskConfig", "MultiBlockMaskGenerator",
           "MultiBlockMaskSampler", "block_masks", "first_k", "mix_seed", "to_indices"]

TRIES_PER_LEVEL = 20  # official `timeout` before a target complement is dropped
MASK_TAG = 0x6D61736B  # "mask": the tag of the one generator of a batch's 2-D masks


@dataclass
class MultiBlockMaskConfig:
    """Defaults are the released I-JEPA configs (ijepa:configs/*.yaml ``mask`` section), not the
    class defaults of the official collator (which are scale 0.2-0.8, aspect 0.3-3, npred 2)."""

    enc_mask_scale: tuple[float, float] = (0.85, 1.0)
    pred_mask_scale: tuple[float, float] = (0.15, 0.2)
    aspect_ratio: tuple[float, float] = (0.75, 1.5)
    num_enc_masks: int = 1
    num_pred_masks: int = 4
    min_keep: int = 10
    allow_overlap: bool = False
    fix_position_bound: bool = False
    min_keep_context: int | None = None
    buckets: int = 0
    """0 (official): every batch's masks are as long as its shortest one, a new length per batch.
    N > 0: context and target masks are padded to one of N lengths each
    (:mod:`jepa_core.masks.buckets`, flags ``masks_enc_valid`` / ``masks_pred_valid``), so a
    compiled step (``train.compile``) sees at most N shapes; loss and gradients are the same."""


class MultiBlockMaskGenerator:
    """Samples ``(masks_enc, masks_pred)`` for a batch on a ``grid_h x grid_w`` token grid."""

    def __init__(self, cfg: MultiBlockMaskConfig, grid_h: int, grid_w: int | None = None):
        self.cfg = cfg
        self.H, self.W = grid_h, grid_w if grid_w is not None else grid_h
        self.min_keep_ctx = cfg.min_keep if cfg.min_keep_context is None else cfg.min_keep_context
        self._validate()

    def _validate(self) -> None:
        """Fail at construction on a config whose smallest blocks can never keep enough tokens
        (the official collator would loop forever); block sizes are step functions of r."""
        cfg = self.cfg
        for r in torch.linspace(0, 1, 1001).tolist():
            g = _FixedDraw(r)
            self._check_sizes(self.block_size(g, cfg.pred_mask_scale, cfg.aspect_ratio),
                              self.block_size(g, cfg.enc_mask_scale, (1.0, 1.0)))

    def _check_sizes(self, target: tuple[int, int], context: tuple[int, int]) -> None:
        from jepa_core.config import ConfigError

        (ph, pw), (eh, ew) = target, context
        if ph * pw <= self.cfg.min_keep:
            raise ConfigError(
                f"target blocks of {ph}x{pw} tokens can never keep more than mask.min_keep={self.cfg.min_keep} "
                f"tokens on a {self.H}x{self.W} token grid (the official collator would loop forever); "
                "lower mask.min_keep, raise mask.pred_mask_scale, or use a smaller patch"
            )
        if eh * ew <= self.min_keep_ctx:
            raise ConfigError(
                f"context blocks of {eh}x{ew} tokens can never keep more than {self.min_keep_ctx} tokens "
                f"on a {self.H}x{self.W} token grid; lower mask.min_keep_context / mask.min_keep"
            )

    def block_size(self, generator: torch.Generator | _FixedDraw, scale, aspect) -> tuple[int, int]:
        r = generator.draw() if isinstance(generator, _FixedDraw) else torch.rand(1, generator=generator).item()
        mask_scale = scale[0] + r * (scale[1] - scale[0])
        k = int(self.H * self.W * mask_scale)
        a = aspect[0] + r * (aspect[1] - aspect[0])  # the same r: the official quirk
        h, w = int(round(math.sqrt(k * a))), int(round(math.sqrt(k / a)))
        if self.cfg.fix_position_bound:
            h, w = min(h, self.H), min(w, self.W)
        else:
            h, w = min(h, self.H - 1), min(w, self.W - 1)
        return max(h, 1), max(w, 1)

    def _positions(self, shape: tuple[int, ...], h: int, w: int, g: torch.Generator):
        """Random top-left corners of h x w blocks (official bounds unless fix_position_bound)."""
        extra = 1 if self.cfg.fix_position_bound else 0
        top = torch.randint(0, max(self.H - h + extra, 1), shape, generator=g)
        left = torch.randint(0, max(self.W - w + extra, 1), shape, generator=g)
        return top, left

    def _paint(self, top: torch.Tensor, left: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Boolean blocks of size h x w at (top, left): ``[*top.shape, H, W]``."""
        return block_masks(top, left, h, w, self.H, self.W).unflatten(-1, (self.H, self.W))

    def _blocks(self, shape: tuple[int, ...], h: int, w: int, g: torch.Generator) -> torch.Tensor:
        """Boolean blocks of size h x w at random positions: ``[*shape, H, W]``."""
        top, left = self._positions(shape, h, w, g)
        return self._paint(top, left, h, w)

    def _context(self, B: int, h: int, w: int, complements: torch.Tensor | None, g) -> torch.Tensor:
        """One context mask per sample, ``[B, H, W]``, by the official relax-after-20-tries rule.

        Vectorised over the batch and the tries: the kept count of every candidate block is a
        box sum of the allowed region (an integral image), so only the chosen block is painted.
        The random draws are those of painting every candidate (same stream, same result).
        """
        n_regions = 0 if complements is None else complements.shape[1]
        top_out = torch.zeros(B, dtype=torch.long)
        left_out = torch.zeros(B, dtype=torch.long)
        allowed_out = torch.ones(B, self.H * self.W, dtype=torch.bool)
        todo = torch.arange(B)
        stride = self.W + 1
        for dropped in range(n_regions + 1):
            if len(todo) == 0:
                break
            top, left = self._positions((len(todo), TRIES_PER_LEVEL), h, w, g)
            keep = n_regions - dropped
            if keep > 0:
                # The region the context may use: outside the first `keep` target blocks.
                assert complements is not None  # keep > 0 needs target blocks
                rows = complements if len(todo) == B else complements[todo]
                allowed = rows[:, :keep].all(dim=1)  # [b, H, W]
                S = F.pad(allowed.to(torch.int32).cumsum(-2).cumsum(-1), (1, 0, 1, 0)).flatten(1)
                bottom, right = top + h, left + w
                count = (S.gather(1, bottom * stride + right) - S.gather(1, top * stride + right)
                         - S.gather(1, bottom * stride + left) + S.gather(1, top * stride + left))
                valid = count > self.min_keep_ctx  # [b, tries]
            else:
                valid = torch.full(top.shape, h * w > self.min_keep_ctx)
            has = valid.any(dim=1)
            first = valid.to(torch.int8).argmax(dim=1)
            done = todo[has]
            top_out[done] = top[has, first[has]]
            left_out[done] = left[has, first[has]]
            if keep > 0:
                allowed_out[done] = allowed[has].flatten(1)
            todo = todo[~has]
        # The last level has no constraint, and sample() checked that a bare block keeps more
        # than the minimum, so every row is done by now.
        out = block_masks(top_out, left_out, h, w, self.H, self.W) & allowed_out
        return out.view(B, self.H, self.W)

    def sample(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        cfg = self.cfg
        ph, pw = self.block_size(generator, cfg.pred_mask_scale, cfg.aspect_ratio)
        eh, ew = self.block_size(generator, cfg.enc_mask_scale, (1.0, 1.0))
        self._check_sizes((ph, pw), (eh, ew))
        targets = self._blocks((batch_size, cfg.num_pred_masks), ph, pw, generator)  # [B, P, H, W]
        complements = None if cfg.allow_overlap else ~targets
        contexts = torch.stack(
            [self._context(batch_size, eh, ew, complements, generator) for _ in range(cfg.num_enc_masks)], 1
        )
        return to_indices(contexts.flatten(2)), to_indices(targets.flatten(2))


class _FixedDraw:
    """Stands in for a generator in :meth:`MultiBlockMaskGenerator._validate`."""

    def __init__(self, r: float):
        self.r = r

    def draw(self) -> float:
        return self.r


class MultiBlockMaskSampler:
    """:class:`jepa_core.masks.collator.MaskSampler` of I-JEPA multi-block masks: one generator
    per batch, ``seeds.generator(MASK_TAG)`` (so one block size per batch: the global batch, or
    the process's in the official ``"process"`` scope); returns
    ``{"masks_enc": [LongTensor [B, Kc]] * num_enc_masks, "masks_pred": [LongTensor [B, Kp]] * num_pred_masks}``."""

    def __init__(self, cfg: MultiBlockMaskConfig, grid_h: int, grid_w: int | None = None):
        self.generator = MultiBlockMaskGenerator(cfg, grid_h, grid_w)
        self.buckets_enc: tuple[int, ...] = ()
        self.buckets_pred: tuple[int, ...] = ()
        if cfg.buckets:
            g = self.generator
            # the largest target block any draw can give (block sizes are step functions of r)
            sizes = (g.block_size(_FixedDraw(r), cfg.pred_mask_scale, cfg.aspect_ratio)
                     for r in torch.linspace(0, 1, 1001).tolist())
            most = max(h * w for h, w in sizes)
            self.buckets_enc = default_buckets(g.H * g.W, cfg.buckets)
            self.buckets_pred = default_buckets(most, cfg.buckets)

    def __call__(self, batch_size: int, seeds: StepSeeds, inputs=None) -> dict:
        masks_enc, masks_pred = self.generator.sample(batch_size, seeds.generator(MASK_TAG))
        if not self.buckets_enc:
            return {"masks_enc": masks_enc, "masks_pred": masks_pred}
        enc = [pad_masks(m, bucket_length(m.shape[1], self.buckets_enc)) for m in masks_enc]
        pred = [pad_masks(m, bucket_length(m.shape[1], self.buckets_pred)) for m in masks_pred]
        return {"masks_enc": [m for m, _ in enc], "masks_pred": [m for m, _ in pred],
                "masks_enc_valid": [v for _, v in enc], "masks_pred_valid": [v for _, v in pred]}


class MultiBlockMaskCollator(MaskCollator):
    """``collate_fn`` that batches ``(image, label)`` samples and adds I-JEPA masks: a
    :class:`jepa_core.masks.collator.MaskCollator` with a :class:`MultiBlockMaskSampler` on the
    ``input_size / patch_size`` token grid.

    Returns ``{"images", "labels", "masks_enc", "masks_pred", "num_bad"}`` (plus any fields of
    the batch transform), or ``{"skip": True, "num_bad": n}`` when every sample of the batch was
    corrupt. ``batch_transform``: optional ``f(images, generator) -> images`` applied to the
    collated batch (e.g. a batched random-resized crop), seeded like the masks. ``world_size``
    and ``scope``: see :class:`jepa_core.masks.collator.MaskCollator`.
    """

    def __init__(
        self,
        cfg: MultiBlockMaskConfig,
        input_size: int | tuple[int, int],
        patch_size: int,
        seed: int = 0,
        rank: int = 0,
        batch_transform=None,
        input_key: str = "images",
        world_size: int = 1,
        scope: str = "global",
    ):
        h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
        sampler = MultiBlockMaskSampler(cfg, h // patch_size, w // patch_size)
        super().__init__(sampler, seed=seed, rank=rank, input_key=input_key, batch_transform=batch_transform,
                         world_size=world_size, scope=scope)

    @property
    def generator(self) -> MultiBlockMaskGenerator:
        return self.sampler.generator

    @generator.setter
    def generator(self, value: MultiBlockMaskGenerator) -> None:
        self.sampler.generator = value
