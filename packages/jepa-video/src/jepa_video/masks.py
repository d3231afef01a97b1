"""V-JEPA 3-D multi-block masks, vectorised over the batch.

Follows the official generator (jepa:src/masks/multiblock3d.py, and
vjepa2:src/masks/multiseq_multiblock3d.py for V-JEPA 2, which uses the same ``_MaskGenerator``),
per batch and per mask configuration:

1. Three *independent* uniforms from the seeded generator, in this order: temporal scale ->
   ``t = max(1, int(T' * s_t))``; spatial scale -> ``k = int(H' * W' * s)``; aspect ``a`` ->
   ``h = round(sqrt(k a))``, ``w = round(sqrt(k / a))``, clamped to ``H'``, ``W'`` (a block may
   span the full extent, unlike I-JEPA). One ``(t, h, w)`` per batch.
2. For each sample, ``num_blocks`` tubes at ``top in [0, H'-h]``, ``left in [0, W'-w]``,
   ``start in [0, T'-t]`` (inclusive bounds). With ``temporal_scale = 1`` every tube spans all
   time steps. With ``max_temporal_keep < 1`` the time steps from
   ``max(1, int(T' * max_temporal_keep))`` on are removed from the context (and so belong to
   the target).
3. Target = the union of the blocks (one prediction set per configuration, not one per block,
   as in jepa:src/masks/multiblock3d.py); context = its complement. A sample whose context is
   empty is drawn again.
4. Indices are raster-sorted in (t, h, w); every context is truncated to the batch minimum (and
   to ``max_keep`` if set), every target to its batch minimum, keeping the earliest indices.

Differences from the official code (the distribution of one configuration is the same):

- Block positions come from a seeded generator (the official code uses the process-global
  RNG), so a batch's masks are a pure function of (seed, step) and the sample's slot in the
  global batch. By default the batch of steps 1 and 4 is the global batch (every process's
  samples), so the masks do not depend on the number of processes; the collator's
  ``scope="process"`` gives the official per-process batch.
- The Python loop over samples and blocks is replaced by batched tensor operations; the random
  stream differs.
- Official quirk kept by default (``share_size_draws=True``): every configuration's generator
  is seeded with the same per-step counter, so all configurations of a batch draw the *same*
  three uniforms (with the released fixed scales, the same aspect ratio). ``False`` gives each
  configuration its own size stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from jepa_core.masks.blocks import block_masks, block_table_np, draw_positions, first_k, span_table
from jepa_core.masks.collator import MaskCollator, StepSeeds

__all__ = ["POS_TAG", "SIZE_TAG", "VJEPA_MASK_CONFIGS", "MultiBlock3DMaskCollator", "MultiBlock3DMaskConfig",
           "MultiBlock3DMaskGenerator", "MultiBlock3DMaskSampler", "draw_positions", "first_k"]

# Generator tags, with the batch's seeds (jepa_core.masks.collator.StepSeeds): sizes ``(SIZE_TAG, 0 or config + 1)``, positions ``(POS_TAG, config)``.
SIZE_TAG = 0x73697A65  # "size"
POS_TAG = 0x706F73  # "pos"

MAX_RESAMPLE = 1000  # rounds of redrawing samples with an empty context before giving up


@dataclass(frozen=True)
class MultiBlock3DMaskConfig:
    """One mask configuration; field names are the official YAML keys (``mask`` section of
    jepa:configs/pretrain/vitl16.yaml).

    Defaults are config 0 of the released V-JEPA / V-JEPA 2 pretraining configs
    (jepa:configs/pretrain/vitl16.yaml, vjepa2:configs/train/vitl16/pretrain-256px-16f.yaml),
    not the official generator's class defaults (spatial 0.2-0.8, aspect 0.3-3, 1 block).
    """

    spatial_scale: tuple[float, float] = (0.15, 0.15)
    temporal_scale: tuple[float, float] = (1.0, 1.0)
    aspect_ratio: tuple[float, float] = (0.75, 1.5)
    num_blocks: int = 8
    max_temporal_keep: float = 1.0
    max_keep: int | None = None


# The two released configurations: "short-range" 8 x 15 % and "long-range" 2 x 70 %
# (jepa:configs/pretrain/vitl16.yaml, vjepa2:configs/train/vitl16/pretrain-256px-16f.yaml).
VJEPA_MASK_CONFIGS: tuple[MultiBlock3DMaskConfig, ...] = (
    MultiBlock3DMaskConfig(spatial_scale=(0.15, 0.15), num_blocks=8),
    MultiBlock3DMaskConfig(spatial_scale=(0.7, 0.7), num_blocks=2),
)


class MultiBlock3DMaskGenerator:
    """Samples ``(mask_enc [B, Kc], mask_pred [B, Kp])`` for one configuration on a
    ``frames x grid_h x grid_w`` token grid."""

    def __init__(self, cfg: MultiBlock3DMaskConfig, frames: int, grid_h: int, grid_w: int | None = None):
        self.cfg = cfg
        self.T, self.H, self.W = frames, grid_h, grid_h if grid_w is None else grid_w
        self.max_context_duration = max(1, int(self.T * cfg.max_temporal_keep))
        if cfg.num_blocks < 1:
            raise ValueError("num_blocks must be at least 1")
        if cfg.max_keep is not None and cfg.max_keep < 1:
            raise ValueError("max_keep must be positive")

    def block_size(self, generator: torch.Generator) -> tuple[int, int, int]:
        """(t, h, w) from three independent uniforms: temporal, spatial, aspect (in that order)."""
        cfg = self.cfg
        r_t, r_s, r_a = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
        s_t = cfg.temporal_scale[0] + r_t * (cfg.temporal_scale[1] - cfg.temporal_scale[0])
        t = max(1, int(self.T * s_t))
        s = cfg.spatial_scale[0] + r_s * (cfg.spatial_scale[1] - cfg.spatial_scale[0])
        k = int(self.H * self.W * s)
        a = cfg.aspect_ratio[0] + r_a * (cfg.aspect_ratio[1] - cfg.aspect_ratio[0])
        h = min(int(round(math.sqrt(k * a))), self.H)
        w = min(int(round(math.sqrt(k / a))), self.W)
        return min(t, self.T), h, w

    def union_of_blocks(self, batch_size: int, size: tuple[int, int, int], g: torch.Generator) -> torch.Tensor:
        """Boolean ``[B, T, H, W]``: True where some block (or the time cut) masks the token."""
        union = self._union(batch_size, size, g)
        return torch.from_numpy(union).view(batch_size, self.T, self.H, self.W)

    def _union(self, batch_size: int, size: tuple[int, int, int], g: torch.Generator,
               spatial: bool = False) -> np.ndarray:
        """:meth:`union_of_blocks` flattened to ``[B, N]``, as a numpy array: past the random
        draws (torch, seeded) the work is a handful of tiny array ops, for which numpy's
        per-call overhead is several times lower than torch's. ``spatial=True`` (only for
        :meth:`tiles_time`): the ``[B, H*W]`` union of one frame, which every frame repeats."""
        t, h, w = size
        top, left, start = draw_positions(g, (batch_size, self.cfg.num_blocks), self.H - h + 1, self.W - w + 1,
                                          self.T - t + 1)
        table = block_table_np(self.H, self.W, h, w)
        if table is not None:
            hw = table[top, left]  # [B, nb, H*W]
        else:
            hw = block_masks(torch.from_numpy(top), torch.from_numpy(left), h, w, self.H, self.W).numpy()
        if t == self.T:  # tubes over the whole clip (every released config): one spatial union
            sp = hw.any(1)
            if spatial:
                return sp
            union = np.tile(sp, (1, self.T))
        else:  # union over blocks of in_t x hw, as 0/1 float products (exact)
            in_t = span_table(self.T, t)[torch.from_numpy(start)].numpy()  # [B, nb, T]
            union = np.einsum("bnt,bnk->btk", in_t.astype(np.float32), hw.astype(np.float32)) > 0
            union = union.reshape(batch_size, -1)
        if self.max_context_duration < self.T:
            union[:, self.max_context_duration * self.H * self.W :] = True
        return union

    def tiles_time(self, size: tuple[int, int, int]) -> bool:
        """True when every frame has the same mask (tubes span the clip, no time cut)."""
        return size[0] == self.T and self.max_context_duration == self.T

    def sample_union(self, batch_size: int, size: tuple[int, int, int], g: torch.Generator) -> torch.Tensor:
        """Union masks ``[B, N]``, redrawing (vectorised over the bad rows) any empty context."""
        return torch.from_numpy(self._masks(batch_size, size, g)[0])

    def _masks(self, batch_size: int, size: tuple[int, int, int], g: torch.Generator):
        """``(union [B, N], its counts [B], complement [B, N])`` as numpy arrays, any row with an
        empty context redrawn (vectorised over the bad rows)."""
        t, h, w = size
        if h * w == 0:
            raise ValueError(f"mask config {self.cfg} gives empty {h}x{w} blocks on a {self.H}x{self.W} grid")
        if (t, h, w) == (self.T, self.H, self.W) or self.max_context_duration == 0:
            raise ValueError(f"mask config {self.cfg} masks every token: the context would always be empty")
        tiled = self.tiles_time(size)
        # Tiled configs work on one frame (T times fewer elements) and repeat it at the end.
        union = self._union(batch_size, size, g, spatial=tiled)
        for _ in range(MAX_RESAMPLE):
            counts = union.sum(1)
            bad = counts == union.shape[1]
            if not bad.any():
                break
            union[bad] = self._union(int(bad.sum()), size, g, spatial=tiled)
        else:
            raise RuntimeError(f"mask config {self.cfg}: context still empty after {MAX_RESAMPLE} redraws")
        if tiled:
            return np.tile(union, (1, self.T)), counts * self.T, np.tile(~union, (1, self.T))
        return union, counts, ~union

    def sample(
        self, batch_size: int, generator: torch.Generator, position_generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mask_enc [B, Kc], mask_pred [B, Kp])``: sizes from ``generator``, positions from
        ``position_generator`` (default: the same generator)."""
        size = self.block_size(generator)
        union, n_tgt, context = self._masks(batch_size, size, position_generator or generator)
        n_ctx = union.shape[1] - n_tgt
        k_tgt, k_ctx = int(n_tgt.min()), int(n_ctx.min())
        if self.cfg.max_keep is not None:
            k_ctx = min(k_ctx, self.cfg.max_keep)
        return first_k(context, k_ctx, n_ctx), first_k(union, k_tgt, n_tgt)


class MultiBlock3DMaskSampler:
    """:class:`jepa_core.masks.collator.MaskSampler` of V-JEPA multi-block masks, one
    :class:`MultiBlock3DMaskGenerator` per configuration on a ``frames x grid_h x grid_w`` token
    grid. Configuration i draws its sizes from ``seeds.generator(SIZE_TAG, 0 if
    share_size_draws else i + 1)`` and its positions from ``seeds.generator(POS_TAG, i)``.
    Returns ``{"masks_enc": [LongTensor [B, Kc_i]], "masks_pred": [LongTensor [B, Kp_i]]}``, one
    entry per configuration."""

    def __init__(
        self,
        cfgs: tuple[MultiBlock3DMaskConfig, ...] | list[MultiBlock3DMaskConfig],
        frames: int,
        grid_h: int,
        grid_w: int | None = None,
        share_size_draws: bool = True,
    ):
        self.generators = [MultiBlock3DMaskGenerator(c, frames, grid_h, grid_w) for c in cfgs]
        self.share_size_draws = share_size_draws

    def masks(self, batch_size: int, seeds: StepSeeds) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        masks_enc, masks_pred = [], []
        for i, gen in enumerate(self.generators):
            g_size = seeds.generator(SIZE_TAG, 0 if self.share_size_draws else i + 1)
            enc, pred = gen.sample(batch_size, g_size, seeds.generator(POS_TAG, i))
            masks_enc.append(enc)
            masks_pred.append(pred)
        return masks_enc, masks_pred

    def __call__(self, batch_size: int, seeds: StepSeeds, inputs=None) -> dict:
        masks_enc, masks_pred = self.masks(batch_size, seeds)
        return {"masks_enc": masks_enc, "masks_pred": masks_pred}


class MultiBlock3DMaskCollator(MaskCollator):
    """``collate_fn`` that batches ``(video, label)`` samples (or bare videos) and adds V-JEPA
    masks: a :class:`jepa_core.masks.collator.MaskCollator` with a
    :class:`MultiBlock3DMaskSampler` on the ``num_frames / tubelet_size x input_size /
    patch_size`` token grid.

    Returns ``{input_key: videos, "labels", "masks_enc": [per config], "masks_pred": [per
    config], "num_bad"}`` (plus any fields of the batch transform) or ``{"skip": True,
    "num_bad": n}`` when every sample was corrupt. ``batch_transform``: optional
    ``f(videos, generator) -> videos`` applied to the collated batch, seeded like the masks.
    ``world_size`` and ``scope``: see :class:`jepa_core.masks.collator.MaskCollator` (the
    default ``"global"`` draws the masks of the global batch, one size and one truncation for
    all processes; ``"process"`` is the official per-process batch). Official constructor arguments: ``(cfgs_mask, crop_size, num_frames, patch_size,
    tubelet_size)`` (jepa:src/masks/multiblock3d.py).
    """

    def __init__(
        self,
        cfgs: tuple[MultiBlock3DMaskConfig, ...] | list[MultiBlock3DMaskConfig] = VJEPA_MASK_CONFIGS,
        input_size: int | tuple[int, int] = 224,
        num_frames: int = 16,
        patch_size: int = 16,
        tubelet_size: int = 2,
        seed: int = 0,
        rank: int = 0,
        share_size_draws: bool = True,
        input_key: str = "videos",
        batch_transform=None,
        world_size: int = 1,
        scope: str = "global",
    ):
        h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
        sampler = MultiBlock3DMaskSampler(cfgs, num_frames // tubelet_size, h // patch_size, w // patch_size,
                                          share_size_draws)
        super().__init__(sampler, seed=seed, rank=rank, input_key=input_key, batch_transform=batch_transform,
                         world_size=world_size, scope=scope)

    @property
    def generators(self) -> list[MultiBlock3DMaskGenerator]:
        return self.sampler.generators

    @property
    def share_size_draws(self) -> bool:
        return self.sampler.share_size_draws

    @share_size_draws.setter
    def share_size_draws(self, value: bool) -> None:
        self.sampler.share_size_draws = value

    def masks(self, batch_size: int, step: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``(masks_enc, masks_pred)`` of the batch at ``step``, one entry per configuration."""
        return self.sampler.masks(batch_size, self.step_seeds(step))
