"""The skeleton transformer of S-JEPA, after MAMP's (Mao et al., ICCV 2023;
``MAMP:model_mamp/transformer.py``): tokens of ``t_patch`` frames x 1 joint, embedded by one
linear map of their ``t_patch x C`` values, plus a learned spatial (per joint) and a learned
temporal (per token time) embedding; a plain pre-norm transformer over the visible tokens only;
a MAMP-decoder-like predictor that puts mask tokens at the masked positions.

Layouts: a skeleton batch is ``[B, C, T, V, M]`` (channels, frames, joints, persons). Each
person is a separate sample, as MAMP's ``forward`` does (``[B * M, C, T, V]``,
:func:`persons_as_samples`). Tokens are ordered time-major: token ``t * V + v`` holds frames
``t_patch * t .. t_patch * (t + 1) - 1`` of joint ``v``; each token's values are ordered
(frame, channel), as MAMP's ``patchify``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jepa_core.masks import apply_masks
from jepa_core.nn.encoder import MaskedEncoder
from jepa_core.nn.layers import Block, LayerNorm, build_blocks, trunc_normal_init_
from torch import nn

__all__ = ["SkeletonEmbed", "SkeletonEncoder", "SkeletonPredictor", "patchify", "persons_as_samples"]


def persons_as_samples(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, T, V, M] -> [B * M, C, T, V]`` (sample-major: rows ``b * M .. b * M + M - 1``
    are the persons of sample b)."""
    b, c, t, v, m = x.shape
    return x.permute(0, 4, 1, 2, 3).reshape(b * m, c, t, v)


def patchify(x: torch.Tensor, t_patch: int) -> torch.Tensor:
    """``[B', C, T, V] -> [B', T // t_patch, V, t_patch * C]``: each token's values, (frame, channel)
    ordered (MAMP ``patchify``)."""
    b, c, t, v = x.shape
    if t % t_patch:
        raise ValueError(f"{t} frames are not a multiple of the temporal patch {t_patch}")
    return x.reshape(b, c, t // t_patch, t_patch, v).permute(0, 2, 4, 3, 1).reshape(b, t // t_patch, v, t_patch * c)


class SkeletonEmbed(nn.Module):
    """The tokenizer (:class:`jepa_core.nn.interfaces.Tokenizer`): ``[B', C, T, V] -> [B', T' * V, D]``.

    A linear map of each token's ``t_patch x C`` values (MAMP's Conv2d with kernel = stride
    ``(t_patch, 1)``, written as the equal linear map) plus the learned position embeddings:
    ``spatial_embed [V, D]`` (one per joint) and ``temporal_embed [T', D]`` (one per token time),
    trunc-normal with std 0.02 as MAMP's ``pos_embed`` / ``temp_embed``."""

    def __init__(self, in_chans: int, num_frames: int, num_joints: int, t_patch: int, embed_dim: int):
        super().__init__()
        if num_frames % t_patch:
            raise ValueError(f"num_frames={num_frames} is not a multiple of t_patch={t_patch}")
        self.in_chans, self.num_frames, self.num_joints, self.t_patch = in_chans, num_frames, num_joints, t_patch
        self.proj = nn.Linear(t_patch * in_chans, embed_dim)
        self.spatial_embed = nn.Parameter(torch.zeros(num_joints, embed_dim))
        self.temporal_embed = nn.Parameter(torch.zeros(num_frames // t_patch, embed_dim))
        nn.init.trunc_normal_(self.spatial_embed, std=0.02)
        nn.init.trunc_normal_(self.temporal_embed, std=0.02)

    def grid(self, x: torch.Tensor) -> tuple[int, int]:
        if x.ndim != 4 or x.shape[1] != self.in_chans or x.shape[2] != self.num_frames or x.shape[3] != self.num_joints:
            raise ValueError(f"expected skeletons [B, C={self.in_chans}, T={self.num_frames}, V={self.num_joints}] "
                             f"(persons as samples), got {tuple(x.shape)}")
        return self.num_frames // self.t_patch, self.num_joints

    def positions(self) -> torch.Tensor:
        """The position table ``[T' * V, D]``, time-major (spatial + temporal)."""
        return (self.temporal_embed[:, None, :] + self.spatial_embed[None, :, :]).flatten(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.grid(x)
        tokens = self.proj(patchify(x, self.t_patch)).flatten(1, 2)
        return tokens + self.positions()


class SkeletonEncoder(MaskedEncoder):
    """MAMP's encoder (:class:`jepa_core.nn.interfaces.BlockwiseEncoder`): :class:`SkeletonEmbed`,
    ``depth`` pre-norm blocks (qkv bias, MLP ratio 4) on the kept tokens, a final LayerNorm.

    ``forward(x [B', C, T, V], masks=None)``: tokens of each person-sample; ``masks`` ``[B', K]``
    are kept token indices (the encoder sees only those). ``forward(x [B, C, T, V, M])`` (what the
    probes call): every person encoded as a sample, the tokens averaged over the persons, ``[B,
    T' * V, D]``; their mean over tokens is MAMP's linear-probe feature (mean over persons, time
    and joints, ``MAMP:model/transformer.py``)."""

    def __init__(self, in_chans: int = 3, num_frames: int = 120, num_joints: int = 25, t_patch: int = 4,
                 embed_dim: int = 256, depth: int = 8, num_heads: int = 8, mlp_ratio: float = 4.0,
                 drop_path_rate: float = 0.0):
        embed = SkeletonEmbed(in_chans, num_frames, num_joints, t_patch, embed_dim)
        super().__init__(embed, None, (num_frames // t_patch, num_joints), embed_dim, depth, num_heads, mlp_ratio,
                         qkv_bias=True, drop_path_rate=drop_path_rate)
        # the trunc-normal init of MaskedEncoder reset the Linear layers only; the tables keep theirs

    def forward(self, x: torch.Tensor, masks=None, return_layers: Sequence[int] | None = None, valid=None):
        if x.ndim != 5:
            return super().forward(x, masks, return_layers, valid)
        if masks is not None:
            raise ValueError("masks index person-samples: pass skeletons [B * M, C, T, V] (persons_as_samples)")
        b, m = x.shape[0], x.shape[-1]
        out = super().forward(persons_as_samples(x), None, return_layers)

        def mean_over_persons(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, m, *t.shape[1:]).mean(1)

        return [mean_over_persons(t) for t in out] if isinstance(out, list) else mean_over_persons(out)


class SkeletonPredictor(nn.Module):
    """The predictor, shaped like MAMP's decoder (``MAMP:model_mamp/transformer.py``
    ``forward_decoder``): a linear map of the context tokens to the predictor width, a learned
    mask token at every masked position, its own learned spatial and temporal embeddings, blocks
    over the whole sequence, a LayerNorm, and a linear map back to the encoder width (MAMP maps to
    the 12 coordinates of a token; S-JEPA predicts the target encoder's latents).

    ``forward(z [B', K, D], visible [B', K], masked [B', N - K]) -> [B', N - K, D]``: predictions at
    the masked positions, in the order of ``masked``."""

    def __init__(self, grid: tuple[int, int], embed_dim: int = 256, pred_dim: int = 256, depth: int = 3,
                 num_heads: int = 8, mlp_ratio: float = 4.0):
        super().__init__()
        self.grid = tuple(grid)
        self.num_tokens = grid[0] * grid[1]
        self.embed = nn.Linear(embed_dim, pred_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, pred_dim))
        self.spatial_embed = nn.Parameter(torch.zeros(grid[1], pred_dim))
        self.temporal_embed = nn.Parameter(torch.zeros(grid[0], pred_dim))
        self.blocks = build_blocks(Block, pred_dim, depth, num_heads, mlp_ratio, True, 0.0)
        self.norm = LayerNorm(pred_dim)
        self.proj = nn.Linear(pred_dim, embed_dim)
        trunc_normal_init_(self)
        for p in (self.mask_token, self.spatial_embed, self.temporal_embed):
            nn.init.trunc_normal_(p, std=0.02)

    def forward(self, z: torch.Tensor, visible: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        b, _, _ = z.shape
        ctx = self.embed(z)
        d = ctx.shape[-1]
        x = self.mask_token.to(ctx.dtype).expand(b, self.num_tokens, d).clone()
        x = x.scatter(1, visible.unsqueeze(-1).expand(-1, -1, d), ctx)
        pos = (self.temporal_embed[:, None, :] + self.spatial_embed[None, :, :]).flatten(0, 1)
        x = x + pos
        for blk in self.blocks:
            x = blk(x)
        return self.proj(apply_masks(self.norm(x), [masked]))

