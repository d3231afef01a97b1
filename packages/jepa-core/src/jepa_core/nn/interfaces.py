"""What the parts of a JEPA model must provide, as ``typing.Protocol`` s.

Methods compose four parts: a :class:`Tokenizer` (input -> tokens), a :class:`PositionEncoding`
(an additive table, or a per-forward attention context such as RoPE tables), an
:class:`Encoder` (the masked transformer; :class:`jepa_core.nn.encoder.MaskedEncoder` builds one
from a tokenizer and a position encoding) and a :class:`Predictor`
(:class:`jepa_core.nn.predictor.MaskTokenPredictor`). Consumers such as jepa-eval rely on these
declarations only, so any module that provides them plugs in. All are ``runtime_checkable``:
``isinstance`` checks that the members exist (not their signatures).

Token masks, everywhere: ``None`` (all tokens), a LongTensor ``[B, K]`` of kept token indices
(on the tokenizer's flattened grid), or a list of them whose kept tokens are stacked on the
batch, mask-major (``[len(masks) * B, K, D]``), as the official ``apply_masks``
(ijepa:src/masks/utils.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

Masks = torch.Tensor | Sequence[torch.Tensor] | None


@runtime_checkable
class Encoder(Protocol):
    """A token encoder: ``forward(x, masks=None, return_layers=None)``.

    Returns ``[B', K, D]`` (``D = embed_dim``, ``B' = len(masks) * B`` for a list of masks) after
    the final norm, or with ``return_layers`` (block indices in ``range(depth)``) a list with
    one such tensor per requested block, each through the final norm. ``num_heads`` is the
    attention head count (attentive probes reuse it).
    """

    embed_dim: int
    num_heads: int
    depth: int

    def forward(
        self, x: torch.Tensor, masks: Masks = None, return_layers: Sequence[int] | None = None
    ) -> torch.Tensor | list[torch.Tensor]: ...


@runtime_checkable
class BlockwiseEncoder(Encoder, Protocol):
    """An :class:`Encoder` whose transformer blocks and final norm are exposed (partial
    fine-tuning of the last blocks, activation checkpointing)."""

    blocks: nn.ModuleList
    norm: nn.Module


@runtime_checkable
class Predictor(Protocol):
    """``forward(z, masks_ctx, masks_tgt, **conditioning) -> [len(masks_tgt) * len(masks_ctx) * B, K_tgt, D]``.

    ``z``: encoder outputs for the context masks, ``[len(masks_ctx) * B, K_ctx, D]``. Output rows
    are ordered (target mask, context mask, sample), so they line up with
    ``repeat_interleave_batch(apply_masks(targets, masks_tgt), B, len(masks_ctx))``.
    ``conditioning``: method-specific keywords, e.g. ``mask_index`` (V-JEPA), a per-sample
    ``condition`` vector (IWM transformation parameters, actions).
    """

    def forward(self, z: torch.Tensor, masks_ctx: Masks, masks_tgt: Masks, **conditioning: Any) -> torch.Tensor: ...


@runtime_checkable
class Tokenizer(Protocol):
    """A module mapping an input batch to tokens ``[B, N, D]``, N = prod(grid(x)), flattened
    in the grid's row-major order (token index = position on the flattened grid).

    ``grid(x)`` gives the token grid of ``x`` (e.g. ``(H', W')`` or ``(T', H', W')``) and raises
    ``ValueError`` with the expected layout when ``x`` has the wrong shape.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor: ...

    def grid(self, x: torch.Tensor) -> tuple[int, ...]: ...


@runtime_checkable
class PositionEncoding(Protocol):
    """Where token positions enter a transformer. Either or both of:

    - ``table(grid, dim)``: an additive ``[prod(grid), dim]`` table, or None. The model adds it
      to the tokens before masking (encoders) or to context tokens and target queries
      (predictors), and stores it for its nominal grid as a frozen parameter.
    - ``attention_context(ids, grid)``: an object handed to every block of a forward pass, or
      None. ``ids [B', K]`` are the token indices on the flattened ``grid``; RoPE returns its
      cos/sin tables here (``jepa_video.nn.rope.RoPE3D``).

    ``block`` builds the blocks: ``block(dim, num_heads, mlp_ratio, qkv_bias, drop_path)``. Models
    call a block as ``block(x, attn_mask=...)``, or ``block(x, context, attn_mask=...)`` when
    there is an attention context. ``attn_mask`` may be a :class:`jepa_core.nn.layers.Segments`
    (the packed multi-mask pass): attention must stay within each segment, and a context over
    pairs of tokens (an attention bias) must be cut to the segments by the block.
    """

    @property
    def block(self) -> Callable[..., nn.Module]: ...

    def table(self, grid: tuple[int, ...], dim: int) -> torch.Tensor | None: ...

    def attention_context(self, ids: torch.Tensor, grid: tuple[int, ...]) -> Any | None: ...
