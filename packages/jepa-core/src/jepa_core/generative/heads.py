"""Per-token denoising heads: a residual MLP modulated by AdaLN on (time + condition).

The network follows MAR's ``SimpleMLPAdaLN`` (``mar:models/diffloss.py``), which D-JEPA reuses
for both its diffusion and flow-matching losses (``djepa:models/djepa.py`` builds it through
``GaussDiffLoss`` / ``FlowMatchLoss``):

- ``input_proj``: Linear(token_dim -> width);
- time: a sinusoidal embedding of 256 frequencies (``[cos, sin]``, max period 10000) followed by
  Linear-SiLU-Linear to ``width``; condition: Linear(cond_dim -> width); ``y = t_emb + c_emb``;
- ``depth`` residual blocks: LayerNorm(eps 1e-6) -> modulate(shift, scale) -> Linear-SiLU-Linear,
  added back through a gate; (shift, scale, gate) come from SiLU -> Linear(width -> 3 width) on y;
- final layer: LayerNorm without affine -> modulate -> Linear(width -> out_dim).
- Initialisation: Xavier-uniform linears with zero bias, N(0, 0.02) for the two time-MLP weights,
  and zeros for every modulation linear and the output linear (the head starts at output 0).

The widths D-JEPA uses (``djepa:models/djepa.py`` factories): B 6 blocks x 1024, L 8 x 1280,
H 12 x 1536, with ``token_dim`` 16 and ``cond_dim`` the decoder width. The Gaussian head has
``out_dim = 2 * token_dim`` (noise plus the learned-variance interpolation channel), the
flow-matching head ``out_dim = token_dim``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) times ``t`` [N] -> [N, dim].

    Frequencies ``exp(-log(max_period) * i / (dim // 2))``; the cosines come first, then the
    sines, and an odd ``dim`` is padded with one zero column (as in ``mar:models/diffloss.py``).
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of the time followed by Linear-SiLU-Linear."""

    def __init__(self, width: int, frequency_dim: int = 256):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(
            nn.Linear(frequency_dim, width), nn.SiLU(), nn.Linear(width, width)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        first: nn.Linear = self.mlp[0]  # type: ignore[assignment]  # Sequential indexing is untyped
        return self.mlp(timestep_embedding(t, self.frequency_dim).to(first.weight.dtype))


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class AdaLNResBlock(nn.Module):
    """x + gate * MLP(modulate(LN(x), shift, scale)), with (shift, scale, gate) from y."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(y).chunk(3, dim=-1)
        return x + gate * self.mlp(_modulate(self.norm(x), shift, scale))


class AdaLNFinalLayer(nn.Module):
    """Linear(modulate(LN(x), shift, scale)); the LayerNorm has no affine parameters."""

    def __init__(self, width: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(width, out_dim)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(y).chunk(2, dim=-1)
        return self.linear(_modulate(self.norm(x), shift, scale))


class DenoisingMLP(nn.Module):
    """Per-token denoiser ``head(x_t [N, token_dim], t [N], cond [N, cond_dim]) -> [N, out_dim]``.

    ``t`` is whatever time the loss feeds (the diffusion step index 0..T-1 for
    :class:`~jepa_core.generative.diffusion.DiffusionLoss`, the flow time for
    :class:`~jepa_core.generative.flow_matching.FlowMatchingLoss`). ``out_dim`` defaults to
    ``token_dim``; a diffusion loss with learned variance needs ``2 * token_dim``.
    ``grad_checkpointing`` recomputes each residual block in the backward pass.
    """

    def __init__(
        self,
        token_dim: int,
        cond_dim: int,
        width: int,
        depth: int,
        out_dim: int | None = None,
        frequency_dim: int = 256,
        grad_checkpointing: bool = False,
    ):
        super().__init__()
        if min(token_dim, cond_dim, width, depth) < 1:
            raise ValueError("token_dim, cond_dim, width and depth must be positive")
        self.token_dim = token_dim
        self.cond_dim = cond_dim
        self.width = width
        self.depth = depth
        self.out_dim = token_dim if out_dim is None else out_dim
        self.grad_checkpointing = grad_checkpointing
        self.time_embed = TimestepEmbedder(width, frequency_dim)
        self.cond_embed = nn.Linear(cond_dim, width)
        self.input_proj = nn.Linear(token_dim, width)
        self.blocks = nn.ModuleList(AdaLNResBlock(width) for _ in range(depth))
        self.final_layer = AdaLNFinalLayer(width, self.out_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for layer in (self.time_embed.mlp[0], self.time_embed.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)  # type: ignore[arg-type]  # Sequential items: Linear
        modulations: list = [*(b.modulation[-1] for b in self.blocks), self.final_layer.modulation[-1]]  # type: ignore[index]
        for layer in modulations:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.input_proj(x)
        y = self.time_embed(t) + self.cond_embed(cond)
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                h = torch.utils.checkpoint.checkpoint(block, h, y, use_reentrant=False)
            else:
                h = block(h, y)
        return self.final_layer(h, y)
