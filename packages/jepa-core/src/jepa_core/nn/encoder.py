"""The masked transformer encoder every method composes: tokenizer + position encoding + blocks.

:class:`MaskedEncoder` is the ViT encoder of I-JEPA / V-JEPA / V-JEPA 2 without a class token
(ijepa:src/models/vision_transformer.py ``VisionTransformer``,
jepa:src/models/vision_transformer.py, vjepa2:src/models/vision_transformer.py) with the
input-specific parts plugged in: a :class:`jepa_core.nn.interfaces.Tokenizer` (2-D patches,
3-D tubelets, or a method's own) and a :class:`jepa_core.nn.interfaces.PositionEncoding` (a
fixed additive table, RoPE inside the attention, or None when the tokenizer already adds
positions). ``VisionTransformer`` and ``VideoVisionTransformer`` are configurations of it.

State-dict names are the official ones: ``patch_embed.*`` (the tokenizer), ``pos_embed`` (a
frozen parameter, only with an additive table), ``blocks.{i}.*``, ``norm.*``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from jepa_core.masks.buckets import key_padding_mask
from jepa_core.masks.ops import apply_masks
from jepa_core.nn.interfaces import Masks, PositionEncoding
from jepa_core.nn.layers import Block, LayerNorm, Segments, build_blocks, init_transformer_


def mask_list(masks: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """One mask or a list of masks, as a list."""
    return [masks] if isinstance(masks, torch.Tensor) else list(masks)


class MaskedEncoder(nn.Module):
    """Transformer encoder over the kept tokens of a mask (:class:`jepa_core.nn.interfaces.Encoder`).

    ``tokenizer``: module with ``forward(x) -> [B, N, D]`` and ``grid(x)``; stored as
    ``patch_embed`` (the official name). ``positions``: a position encoding or None.
    ``grid``: the nominal token grid; an additive table is stored for it as the frozen
    ``pos_embed`` (and recomputed for inputs of another grid). The blocks are
    ``positions.block`` (plain :class:`jepa_core.nn.layers.Block` without positions). Init: the
    official trunc-normal, with the depth rescale of ``attn.proj`` / ``mlp.fc2`` if
    ``rescale_init``.

    ``forward(x, masks=None, return_layers=None)``: the table is added before masking; RoPE
    positions are the kept token indices. :meth:`forward_multi` runs several mask
    configurations in one packed pass.
    """

    def __init__(
        self,
        tokenizer: nn.Module,
        positions: PositionEncoding | None,
        grid: Sequence[int],
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        rescale_init: bool = False,
        init_std: float = 0.02,
    ):
        super().__init__()
        self.embed_dim, self.num_heads, self.depth = embed_dim, num_heads, depth
        self.grid_size = tuple(int(g) for g in grid)
        self.num_patches = math.prod(self.grid_size)
        self.positions = positions
        self.patch_embed = tokenizer
        table = None if positions is None else positions.table(self.grid_size, embed_dim)
        # A frozen Parameter, not a buffer, so it is saved like the official checkpoints save it.
        self.pos_embed = None if table is None else nn.Parameter(table.unsqueeze(0), requires_grad=False)
        block = Block if positions is None else positions.block
        self.blocks = build_blocks(block, embed_dim, depth, num_heads, mlp_ratio, qkv_bias, drop_path_rate)
        self.norm = LayerNorm(embed_dim)
        init_transformer_(self, self.blocks, init_std, rescale_init)

    # -- embedding -------------------------------------------------------------------------

    def token_grid(self, x: torch.Tensor) -> tuple[int, ...]:
        """The token grid of input ``x`` (checks its shape)."""
        return tuple(self.patch_embed.grid(x))

    def position_table(self, *grid: int) -> torch.Tensor:
        """The additive table ``[1, prod(grid), D]`` for a token grid: the stored ``pos_embed``
        for the nominal grid, else recomputed (exact for a fixed function such as sin-cos; the
        official ``interpolate_pos_encoding`` resamples instead)."""
        if self.pos_embed is None:
            raise RuntimeError("this encoder has no additive position table")
        if tuple(grid) == self.grid_size:
            return self.pos_embed
        return self.positions.table(tuple(grid), self.embed_dim).to(self.pos_embed).unsqueeze(0)

    def embed(self, x: torch.Tensor, grid: tuple[int, ...] | None = None) -> torch.Tensor:
        """Tokens ``[B, N, D]`` plus the additive table, if any, before masking."""
        grid = self.token_grid(x) if grid is None else grid
        tokens = self.patch_embed(x)
        if self.pos_embed is not None:
            tokens = tokens + self.position_table(*grid)
        return tokens

    def attention_context(self, ids: torch.Tensor, grid: tuple[int, ...]):
        """The per-forward context the blocks receive (RoPE tables), or None."""
        return None if self.positions is None else self.positions.attention_context(ids, grid)

    # -- transformer -----------------------------------------------------------------------

    def run_blocks(
        self,
        x: torch.Tensor,
        context=None,
        attn_mask: torch.Tensor | Segments | None = None,
        return_layers: Sequence[int] | None = None,
    ) -> torch.Tensor | list[torch.Tensor]:
        """The blocks and the final norm over tokens ``x``; ``return_layers``: the normed output
        of each listed block instead."""
        extra = () if context is None else (context,)
        outs = []
        for i, blk in enumerate(self.blocks):
            x = blk(x, *extra, attn_mask=attn_mask)
            if return_layers is not None and i in return_layers:
                outs.append(self.norm(x))
        if return_layers is not None:
            return outs
        return self.norm(x)

    def forward(
        self,
        x: torch.Tensor,
        masks: Masks = None,
        return_layers: Sequence[int] | None = None,
        valid: Masks = None,
    ) -> torch.Tensor | list[torch.Tensor]:
        """``valid``: with bucketed (padded) masks (:mod:`jepa_core.masks.buckets`), their
        ``[B, K]`` flags, one per mask; padded tokens are no attention keys, so every valid
        token's output equals the unpadded pass's (outputs at padded slots are to be dropped)."""
        grid = self.token_grid(x)
        x = self.embed(x, grid)
        attn_mask = None
        if masks is None:
            ids = torch.arange(x.shape[1], device=x.device)
        else:
            masks = mask_list(masks)
            x = apply_masks(x, masks)
            ids = masks[0] if len(masks) == 1 else torch.cat(masks, dim=0)  # positions = kept indices
            if valid is not None:
                attn_mask = key_padding_mask(torch.cat(mask_list(valid), dim=0))
        return self.run_blocks(x, self.attention_context(ids, grid), attn_mask, return_layers)

    @staticmethod
    def _final(out: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """``run_blocks``' output without ``return_layers``: one tensor."""
        assert isinstance(out, torch.Tensor)
        return out

    def forward_multi(self, x: torch.Tensor, masks: Sequence[torch.Tensor], packed: bool = True) -> list[torch.Tensor]:
        """Encode the same inputs under several mask configurations: one ``[B, K_i, D]`` per mask.

        The official ``MultiMaskWrapper`` runs the whole encoder once per mask configuration
        (jepa:src/models/utils/multimask.py, vjepa2:src/utils/wrappers.py). Here the tokenizer always
        runs once, and with ``packed=True`` the kept tokens of all configurations are
        concatenated along the token axis of each sample, so one pass serves all configurations
        with no padding: every per-token op (LayerNorm, qkv, proj, MLP) runs once over all of
        them, and attention runs per configuration (:class:`jepa_core.nn.layers.Segments`; a
        block-diagonal mask would spend the FLOPs of the masked-out pairs and rule out the flash
        kernels). The result equals separate passes (up to float summation order);
        ``packed=False`` runs the blocks once per mask.
        """
        grid = self.token_grid(x)
        tokens = self.embed(x, grid)
        masks = list(masks)
        if not packed or len(masks) == 1:
            return [self._final(self.run_blocks(apply_masks(tokens, m), self.attention_context(m, grid))) for m in masks]
        lengths = [m.shape[1] for m in masks]
        seq = torch.cat([apply_masks(tokens, m) for m in masks], dim=1)
        tokens = None  # type: ignore[assignment]  # keep only the gathered tokens alive (peak memory; `del` would break torch.compile graphs)
        ids = torch.cat(masks, dim=1)
        out = self._final(self.run_blocks(seq, self.attention_context(ids, grid), Segments(lengths)))
        return list(out.split(lengths, dim=1))
