"""Flow-matching loss and ODE sampler for per-token denoising heads.

D-JEPA's ``flow`` head (``djepa:models/djepa.py`` selects ``FlowMatchLoss``; its file is not in
the released repository). The formulation follows the MAR-derived implementation with the same
call signatures (``JEPA-T:models/diffloss/flow_match/{flowloss,flow_match}.py``, adapted from
Lumina-T2X ``transport.py``):

- time 0 is noise, time 1 is data: x_t = t x + (1 - t) eps with t ~ U(0, 1) per token;
- the head predicts the velocity v = x - eps; the loss is the per-token mean-squared error
  (mean over channels), then a (masked) mean over tokens;
- the head receives the raw t in [0, 1] (``time_scale`` 1; set e.g. 1000 to feed a
  diffusion-like range instead);
- sampling integrates dx/dt = v from eps at t = 0 to t = 1 on a uniform grid, optionally warped
  by the time shift t -> t / (t + s - s t) (``time_shift`` s, 1 = none); the upstream uses
  ``torchdiffeq`` Euler on ``linspace(0, 1, num_sampling_steps)``, i.e. ``num_sampling_steps - 1``
  Euler steps: here ``sample_steps`` counts solver steps, so the released ``"100"`` is
  ``sample_steps=99``;
- classifier-free guidance mixes the velocities of the conditional and unconditional halves of
  one doubled batch that shares x_t (as MAR does for the noise);
- the upstream sampler ignores the temperature; ``temperature_scales_noise=True`` opts in to
  scaling the initial noise by it instead.

``batch_mul`` repeats each token with fresh noise and t, as D-JEPA's ``diffusion_batch_mul``
does for both heads.
"""

from __future__ import annotations

import torch
from torch import nn

from .diffusion import _randn, guided, sampling_start


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """t / (t + s - s t); s > 1 spends more steps near t = 0 (noise)."""
    if shift == 1.0:
        return t
    return t / (t + shift - shift * t)


class FlowMatchingLoss(nn.Module):
    """Per-token rectified-flow loss with an Euler or Heun sampler.

    Args:
        head: ``head(x_t [N, d], t [N], cond [N, c]) -> [N, d]`` (velocity).
        token_dim: d; read from ``head.token_dim`` when omitted.
        sample_steps: ODE solver steps.
        sampler: ``"euler"`` (upstream) or ``"heun"`` (second order, two head calls per step).
        batch_mul: copies of each token with fresh noise and t in :meth:`loss`.
        time_shift: the sampling-grid warp s (upstream ``time_shifting_factor``, default 1).
        time_scale: the head sees ``t * time_scale``.
    """

    def __init__(
        self,
        head: nn.Module,
        token_dim: int | None = None,
        sample_steps: int = 100,
        sampler: str = "euler",
        batch_mul: int = 4,
        time_shift: float = 1.0,
        time_scale: float = 1.0,
        temperature_scales_noise: bool = False,
    ):
        super().__init__()
        if sampler not in ("euler", "heun"):
            raise ValueError(f"unknown sampler {sampler!r}; valid: euler, heun")
        if sample_steps < 1 or batch_mul < 1:
            raise ValueError("sample_steps and batch_mul must be >= 1")
        if time_shift <= 0:
            raise ValueError("time_shift must be positive")
        self.head = head
        self.token_dim: int = int(token_dim if token_dim is not None else head.token_dim)  # type: ignore[arg-type]  # head: a Module
        out_dim = getattr(head, "out_dim", self.token_dim)
        if out_dim != self.token_dim:
            raise ValueError(f"head.out_dim is {out_dim}; flow matching needs {self.token_dim}")
        self.sample_steps = sample_steps
        self.sampler = sampler
        self.batch_mul = batch_mul
        self.time_shift = time_shift
        self.time_scale = time_scale
        self.temperature_scales_noise = temperature_scales_noise

    def loss_per_token(self, target, cond, generator=None) -> torch.Tensor:
        """Velocity MSE of each row (no repetition): ``[N]``."""
        n = target.shape[0]
        gen_device = generator.device if generator is not None else target.device
        t = torch.rand(n, generator=generator, device=gen_device, dtype=torch.float32)
        t = t.to(target.device)
        noise = _randn(target.shape, generator, target.device, target.dtype)
        tt = t.to(target.dtype)[:, None]
        xt = tt * target + (1 - tt) * noise
        v = self.head(xt, t * self.time_scale, cond)
        return ((v - (target - noise)) ** 2).mean(dim=-1)

    def loss(self, target, cond, mask=None, generator=None) -> torch.Tensor:
        """Scalar loss of ``target`` [N, d] given ``cond`` [N, c]; ``mask`` [N] weights rows."""
        k = self.batch_mul
        per = self.loss_per_token(target.repeat(k, 1), cond.repeat(k, 1), generator)
        if mask is None:
            return per.mean()
        m = mask.reshape(-1).to(per.dtype).repeat(k)
        return (per * m).sum() / m.sum()

    forward = loss

    def time_grid(self, device=None) -> torch.Tensor:
        """The ``sample_steps + 1`` solver times from 0 to 1 (float32)."""
        grid = torch.linspace(0, 1, self.sample_steps + 1, device=device)
        return shift_time(grid, self.time_shift)

    def _velocity(self, x, t, c_in, double, cfg):
        n = x.shape[0]
        tm = torch.full((n,), float(t), device=x.device) * self.time_scale
        if not double:
            return self.head(x, tm, c_in)
        out = self.head(torch.cat([x, x], 0), torch.cat([tm, tm], 0), c_in)
        return guided(out[:n], out[n:], cfg)

    @torch.no_grad()
    def sample(
        self,
        cond: torch.Tensor,
        temperature: float = 1.0,
        cfg=1.0,
        uncond: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Draw one token per row of ``cond`` [N, c] -> [N, d] (see :class:`DiffusionLoss`
        ``sample`` for ``uncond`` / ``cfg``; ``cfg == 1`` is exactly the conditional model)."""
        x, c_in, double = sampling_start(cond, uncond, cfg, self.token_dim, noise, generator)
        if self.temperature_scales_noise:
            x = x * temperature
        grid = self.time_grid().tolist()
        for k in range(self.sample_steps):
            t0, t1 = grid[k], grid[k + 1]
            dt = t1 - t0
            v0 = self._velocity(x, t0, c_in, double, cfg)
            if self.sampler == "euler":
                x = x + dt * v0
            else:
                x_pred = x + dt * v0
                v1 = self._velocity(x_pred, t1, c_in, double, cfg)
                x = x + dt * 0.5 * (v0 + v1)
        return x
