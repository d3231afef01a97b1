"""The mask-token predictor of I-JEPA, V-JEPA and V-JEPA 2, with its query construction as a hook.

All three official predictors (ijepa:src/models/vision_transformer.py
``VisionTransformerPredictor``, jepa:src/models/predictor.py, vjepa2:src/models/predictor.py) do
the same: map context tokens to a narrow width and add their positions, append one query per
target position (a learned mask token plus the target's position), run full bidirectional
attention over [context, queries], and project the query outputs back to the encoder width.
:class:`MaskTokenPredictor` is that forward once; the position encoding (additive table or
RoPE), the number of mask tokens and the query construction (:meth:`MaskTokenPredictor.make_queries`)
are its configuration. Methods whose queries carry more than a position (IWM: transformation
parameters; action-conditioned prediction) pass a ``condition_embed`` module or override the
hooks (:meth:`MaskTokenPredictor.make_queries`, :meth:`MaskTokenPredictor.condition_tokens`).

State-dict names are the official ones: ``predictor_embed``, ``mask_token`` (one token) or
``mask_tokens.{i}``, ``predictor_pos_embed`` (frozen, only with an additive table),
``predictor_blocks.{i}.*``, ``predictor_norm``, ``predictor_proj``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from jepa_core.masks.buckets import key_padding_mask
from jepa_core.masks.ops import apply_masks
from jepa_core.nn.encoder import mask_list
from jepa_core.nn.interfaces import Masks, PositionEncoding
from jepa_core.nn.layers import (
    Block,
    LayerNorm,
    build_blocks,
    init_transformer_,
    repeat_interleave_batch,
)


class MaskTokenPredictor(nn.Module):
    """Narrow transformer over [context tokens, target queries] (:class:`jepa_core.nn.interfaces.Predictor`).

    ``positions``: position encoding on the fixed token ``grid`` (an additive table is stored as
    the frozen ``predictor_pos_embed``; RoPE positions come from the token indices).
    ``num_mask_tokens``: None = one ``mask_token`` parameter (I-JEPA), n = a ``mask_tokens``
    list picked by ``mask_index mod n`` (V-JEPA). ``zero_init_mask_tokens``: zeros (V-JEPA,
    V-JEPA 2) or trunc-normal(``init_std``) (I-JEPA). ``sort_tokens``: order [context, queries]
    by token index before the blocks and restore the order after (V-JEPA 2; with bidirectional
    attention and positions that travel with their tokens, a no-op up to float summation
    order). ``condition_embed``: optional module mapping a per-sample ``condition`` (e.g. a
    vector ``[B, C]``) to ``[B, predictor_embed_dim]``, added to every query of the sample.

    ``forward(z, masks_ctx, masks_tgt, mask_index=0, condition=None)``: ``z`` are the encoder
    outputs for the context masks, ``[len(masks_ctx) * B, K_ctx, embed_dim]`` (mask-major, as
    the encoder returns them). Each (target mask, context mask) pair is its own batch row; the
    output ``[len(masks_tgt) * len(masks_ctx) * B, K_tgt, embed_dim]`` is ordered (target mask,
    context mask, sample), so it lines up with
    ``repeat_interleave_batch(apply_masks(targets, masks_tgt), B, len(masks_ctx))``.
    """

    def __init__(
        self,
        positions: PositionEncoding | None,
        grid: Sequence[int],
        embed_dim: int = 768,
        predictor_embed_dim: int = 384,
        depth: int = 6,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        num_mask_tokens: int | None = None,
        zero_init_mask_tokens: bool = False,
        rescale_init: bool = False,
        sort_tokens: bool = False,
        init_std: float = 0.02,
        condition_embed: nn.Module | None = None,
    ):
        super().__init__()
        self.grid_size = tuple(int(g) for g in grid)
        self.num_patches = math.prod(self.grid_size)
        self.embed_dim, self.predictor_embed_dim = embed_dim, predictor_embed_dim
        self.num_heads, self.depth = num_heads, depth
        self.positions, self.sort_tokens = positions, sort_tokens
        self.predictor_embed = nn.Linear(embed_dim, predictor_embed_dim, bias=True)
        self._single_token = num_mask_tokens is None
        self.num_mask_tokens = 1 if num_mask_tokens is None else num_mask_tokens
        if self._single_token:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, predictor_embed_dim))
        else:
            self.mask_tokens = nn.ParameterList(
                nn.Parameter(torch.zeros(1, 1, predictor_embed_dim)) for _ in range(self.num_mask_tokens)
            )
        table = None if positions is None else positions.table(self.grid_size, predictor_embed_dim)
        self._additive = table is not None
        if table is not None:  # no attribute at all otherwise, as the official RoPE predictor
            self.predictor_pos_embed = nn.Parameter(table.unsqueeze(0), requires_grad=False)
        block = Block if positions is None else positions.block
        self.predictor_blocks = build_blocks(
            block, predictor_embed_dim, depth, num_heads, mlp_ratio, qkv_bias, drop_path_rate
        )
        self.predictor_norm = LayerNorm(predictor_embed_dim)
        self.predictor_proj = nn.Linear(predictor_embed_dim, embed_dim, bias=True)
        self.condition_embed = condition_embed
        init_transformer_(self, self.predictor_blocks, init_std, rescale_init)
        if not zero_init_mask_tokens:
            for token in self._mask_token_params():
                nn.init.trunc_normal_(token, std=init_std, a=-2.0, b=2.0)

    def _mask_token_params(self) -> list[nn.Parameter]:
        return [self.mask_token] if self._single_token else list(self.mask_tokens)

    def query_token(self, mask_index: int = 0) -> torch.Tensor:
        """The learned mask token ``[1, 1, d]`` for mask configuration ``mask_index``
        (``mask_tokens[mask_index mod num_mask_tokens]``, the official indexing)."""
        if self._single_token:
            return self.mask_token
        return self.mask_tokens[mask_index % self.num_mask_tokens]

    def make_queries(
        self, ids_tgt: torch.Tensor, mask_index: int = 0, condition: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Target queries ``[R, K_tgt, d]`` for target token indices ``ids_tgt [R, K_tgt]``.

        Default: mask token + the target's additive position (RoPE positions enter in the
        blocks instead), + ``condition_embed(condition)`` per row when a ``condition`` is given.
        ``condition`` arrives with one row per query row (repeated over the mask pairs by
        :meth:`forward`). Override to build other queries.
        """
        token = self.query_token(mask_index)
        if self._additive:
            queries = token + self.predictor_pos_embed[0][ids_tgt]
        else:
            queries = token.expand(ids_tgt.shape[0], ids_tgt.shape[1], -1)
        if condition is not None and self.condition_embed is not None:
            queries = queries + self.condition_embed(condition).unsqueeze(1)
        return queries

    def condition_tokens(self, condition: torch.Tensor) -> torch.Tensor | None:
        """Extra tokens ``[R, T_c, d]`` appended after the context from the per-row ``condition``
        (one row per query row, like :meth:`make_queries`'s), or None (default) for none. They
        take part in attention but are not returned; they need an additive position table."""
        return None

    def forward(
        self,
        z: torch.Tensor,
        masks_ctx: Masks,
        masks_tgt: Masks,
        mask_index: int = 0,
        condition: torch.Tensor | None = None,
        valid_ctx: Masks = None,
        valid_tgt: Masks = None,
    ) -> torch.Tensor:
        """Predictions ``[n_tgt x n_ctx x B, K_tgt, D]`` (rows: target mask, context mask,
        sample). ``valid_ctx`` / ``valid_tgt``: the ``[B, K]`` flags of bucketed (padded) masks
        (:mod:`jepa_core.masks.buckets`); padded context tokens and queries are no attention
        keys, so the valid queries' outputs equal the unpadded pass's."""
        if masks_ctx is None or masks_tgt is None:
            raise ValueError("the predictor needs the context and the target masks")
        masks_ctx, masks_tgt = mask_list(masks_ctx), mask_list(masks_tgt)
        n_ctx_masks, n_tgt_masks = len(masks_ctx), len(masks_tgt)
        B = z.shape[0] // n_ctx_masks
        x = self.predictor_embed(z)
        if self._additive:
            x = x + apply_masks(self.predictor_pos_embed.expand(B, -1, -1), masks_ctx)
        n_ctx = x.shape[1]
        # Rows (target mask, context mask, sample): sample fastest.
        ids_tgt = repeat_interleave_batch(torch.cat(masks_tgt, dim=0), B, n_ctx_masks)
        if condition is not None:
            if condition.shape[0] != B:
                raise ValueError(f"condition has {condition.shape[0]} rows, expected one per sample ({B})")
            condition = condition.repeat(n_tgt_masks * n_ctx_masks, *([1] * (condition.ndim - 1)))
        # Cast after building: under autocast the context is in the autocast dtype without an
        # additive table (it promotes to float32 with one), and the queries must match it.
        queries = self.make_queries(ids_tgt, mask_index, condition).to(x.dtype)
        x = x.repeat(n_tgt_masks, 1, 1)
        extra_tokens = None if condition is None else self.condition_tokens(condition)
        if condition is not None and extra_tokens is None and self.condition_embed is None \
                and type(self).make_queries is MaskTokenPredictor.make_queries:
            raise ValueError("a condition was given but this predictor has no condition_embed (nor a make_queries "
                             "or condition_tokens override that reads it)")
        if extra_tokens is not None:  # e.g. IWM's sequence conditioning: tokens beside the context
            if self.sort_tokens or not self._additive:
                raise ValueError("condition tokens need an additive position table and sort_tokens=False (they "
                                 "have no grid position)")
            x = torch.cat([x, extra_tokens.to(x.dtype)], dim=1)
            n_ctx = x.shape[1]
        x = torch.cat([x, queries], dim=1)
        ids = torch.cat([torch.cat(masks_ctx, dim=0).repeat(n_tgt_masks, 1), ids_tgt], dim=1)
        keys = None  # which tokens are attention keys: all, unless masks were padded to a bucket
        if valid_ctx is not None or valid_tgt is not None:
            v_ctx = (torch.cat(mask_list(valid_ctx), dim=0) if valid_ctx is not None
                     else torch.ones(z.shape[0], z.shape[1], dtype=torch.bool, device=z.device))
            v_tgt = (repeat_interleave_batch(torch.cat(mask_list(valid_tgt), dim=0), B, n_ctx_masks)
                     if valid_tgt is not None else torch.ones_like(ids_tgt, dtype=torch.bool))
            parts = [v_ctx.repeat(n_tgt_masks, 1)]
            if extra_tokens is not None:
                parts.append(torch.ones(x.shape[0], extra_tokens.shape[1], dtype=torch.bool, device=x.device))
            keys = torch.cat([*parts, v_tgt], dim=1)
        if self.sort_tokens:
            order = torch.argsort(ids, dim=1)
            ids = torch.gather(ids, 1, order)
            x = torch.gather(x, 1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
            keys = None if keys is None else torch.gather(keys, 1, order)
        context = None if self.positions is None else self.positions.attention_context(ids, self.grid_size)
        extra = () if context is None else (context,)  # one context (RoPE tables) for all blocks
        attn_mask = None if keys is None else key_padding_mask(keys)
        for blk in self.predictor_blocks:
            x = blk(x, *extra, attn_mask=attn_mask)  # full attention (as every official predictor) over the keys
        x = self.predictor_norm(x)
        if self.sort_tokens:
            # The queries sit at sorted slots inverse[:, n_ctx:]; gather them back in mask order.
            inverse = torch.argsort(order, dim=1)[:, n_ctx:]
            x = torch.gather(x, 1, inverse.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        else:
            x = x[:, n_ctx:]
        return self.predictor_proj(x)
