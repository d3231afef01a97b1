"""Gaussian diffusion loss and sampler for per-token denoising heads.

This is the "diffusion loss" of MAR (``mar:models/diffloss.py`` ``DiffLoss`` with
``mar:diffusion/__init__.py`` ``create_diffusion`` and ``mar:diffusion/gaussian_diffusion.py``),
which D-JEPA uses as its ``gauss`` head (``djepa:models/djepa.py``):

- 1000 training steps on the improved-DDPM cosine schedule
  (alpha_bar(t) = cos^2((t/T + 0.008)/1.008 * pi/2), betas capped at 0.999);
- the head predicts the noise and a learned-range variance (``learn_sigma``): its second half
  v in [-1, 1] interpolates log-variance between the clipped posterior variance (v = -1) and
  beta_t (v = +1);
- training loss per token = mean over channels of (eps - eps_hat)^2 plus the variational-bound
  term in bits computed with the mean prediction detached (KL to the true posterior for t > 0,
  the discretised-Gaussian decoder NLL at t = 0), with t ~ U{0, ..., T-1};
- each token's target and condition are repeated ``batch_mul`` times with fresh t and noise
  (``diffusion_batch_mul``, 4 in D-JEPA's script), then a (masked) mean;
- sampling: ancestral sampling on the schedule respaced to ``sample_steps`` (100 in MAR and
  D-JEPA) evenly spaced original steps, x_0 prediction not clipped, the noise added at every
  step multiplied by ``temperature``;
- classifier-free guidance mixes the noise predictions, eps_u + cfg (eps_c - eps_u), of the
  conditional and unconditional halves of one doubled batch, both halves sharing the same x_t;
  the variance channel is the conditional half's.

The head is called as ``head(x_t, t, cond)`` with ``t`` the original step index (a float tensor).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Improved-DDPM cosine schedule (``mar:diffusion/gaussian_diffusion.py``), float64."""

    def alpha_bar(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = [
        min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), max_beta)
        for i in range(num_steps)
    ]
    return torch.tensor(betas, dtype=torch.float64)


def linear_betas(num_steps: int) -> torch.Tensor:
    """DDPM linear schedule scaled to ``num_steps`` (1e-4 .. 0.02 at 1000 steps), float64."""
    scale = 1000 / num_steps
    return torch.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=torch.float64)


BETA_SCHEDULES = {"cosine": cosine_betas, "linear": linear_betas}


def spaced_timesteps(num_steps: int, sample_steps: int) -> list[int]:
    """``sample_steps`` evenly spaced original steps, ``round(i (T-1) / (S-1))`` (one section of
    ``mar:diffusion/respace.py`` ``space_timesteps``)."""
    if not 1 <= sample_steps <= num_steps:
        raise ValueError(f"sample_steps must be in [1, {num_steps}], got {sample_steps}")
    if sample_steps == 1:
        return [0]
    stride = (num_steps - 1) / (sample_steps - 1)
    return sorted({round(i * stride) for i in range(sample_steps)})


class GaussianDiffusion:
    """The tables of a discrete Gaussian diffusion (float64 on the CPU, cast when used).

    ``timesteps`` lists the original step indices kept (all of them for training); the betas of a
    respaced chain are recomputed from the kept cumulative alphas, as in
    ``mar:diffusion/respace.py``.
    """

    def __init__(self, betas: torch.Tensor, timesteps: Sequence[int] | None = None):
        betas = betas.to(torch.float64)
        if timesteps is not None:
            abar_full = torch.cumprod(1 - betas, 0)
            kept = abar_full[list(timesteps)]
            prev = torch.cat([torch.ones(1, dtype=torch.float64), kept[:-1]])
            betas = 1 - kept / prev
            self.timestep_map = torch.tensor(list(timesteps), dtype=torch.float64)
        else:
            self.timestep_map = torch.arange(len(betas), dtype=torch.float64)
        self.num_steps = len(betas)
        self.betas = betas
        alphas = 1 - betas
        self.alphas_cumprod = torch.cumprod(alphas, 0)
        self.alphas_cumprod_prev = torch.cat(
            [torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]]
        )
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1 - self.alphas_cumprod).sqrt()
        self.sqrt_recip_alphas_cumprod = (1 / self.alphas_cumprod).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1 / self.alphas_cumprod - 1).sqrt()
        self.posterior_variance = (
            betas * (1 - self.alphas_cumprod_prev) / (1 - self.alphas_cumprod)
        )
        if self.num_steps > 1:
            self.posterior_log_variance_clipped = torch.log(
                torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
            )
        else:  # a one-step chain has no posterior variance to clip to; use beta
            self.posterior_log_variance_clipped = torch.log(betas)
        self.posterior_mean_coef1 = betas * self.alphas_cumprod_prev.sqrt() / (
            1 - self.alphas_cumprod
        )
        self.posterior_mean_coef2 = (
            (1 - self.alphas_cumprod_prev) * alphas.sqrt() / (1 - self.alphas_cumprod)
        )
        self.log_betas = torch.log(betas)

    def _take(self, table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if t.device.type != "cpu":  # keep one copy of each table per device
            cache = self.__dict__.setdefault("_device_tables", {})
            key = (id(table), t.device)
            if key not in cache:
                cache[key] = (table, table.to(t.device))
            table = cache[key][1]
        out = table[t].to(like.dtype)
        return out.view(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return (
            self._take(self.sqrt_alphas_cumprod, t, x0) * x0
            + self._take(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise
        )

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor):
        """Mean and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = (
            self._take(self.posterior_mean_coef1, t, xt) * x0
            + self._take(self.posterior_mean_coef2, t, xt) * xt
        )
        return mean, self._take(self.posterior_log_variance_clipped, t, xt)

    def predict_x0(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return (
            self._take(self.sqrt_recip_alphas_cumprod, t, xt) * xt
            - self._take(self.sqrt_recipm1_alphas_cumprod, t, xt) * eps
        )

    def log_variance(self, t: torch.Tensor, like: torch.Tensor, v: torch.Tensor | None):
        """Learned-range log-variance for v in [-1, 1], or beta_t (MAR's fixed-large) if None."""
        max_log = self._take(self.log_betas, t, like)
        if v is None:
            fixed_large = torch.cat([self.posterior_variance[1:2], self.betas[1:]]).log()
            return self._take(fixed_large, t, like) if self.num_steps > 1 else max_log
        min_log = self._take(self.posterior_log_variance_clipped, t, like)
        frac = (v + 1) / 2
        return frac * max_log + (1 - frac) * min_log

    def p_mean_log_variance(self, xt, t, eps, v, clip: float | None = None):
        """Mean and log-variance of p(x_{t-1} | x_t) from a noise prediction; ``clip``: the x_0
        prediction is clamped to [-clip, clip] first (guided-diffusion's ``clip_denoised``; MAR
        and D-JEPA: no clipping)."""
        x0 = self.predict_x0(xt, t, eps)
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
        mean, _ = self.q_posterior(x0, xt, t)
        return mean, self.log_variance(t, xt, v)


def _normal_kl(mean1, logvar1, mean2, logvar2):
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def _approx_std_normal_cdf(x):
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _discretized_gaussian_log_likelihood(x, mean, log_scale):
    """Log-probability of the 1/255-wide bin around x in [-1, 1] (nats), as in
    ``mar:diffusion/diffusion_utils.py``; the edge bins extend to infinity."""
    centered = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = _approx_std_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = _approx_std_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(
        x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta)
    )


def _randn(shape, generator, device, dtype):
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)


def _randint(high, n, generator, device):
    gen_device = generator.device if generator is not None else device
    return torch.randint(0, high, (n,), generator=generator, device=gen_device).to(device)


def sampling_start(cond: torch.Tensor, uncond: torch.Tensor | None, cfg, token_dim: int,
                   noise: torch.Tensor | None, generator: torch.Generator | None):
    """What both per-token samplers start from: ``(x, c_in, double)``, the initial noise
    ``[N, token_dim]`` (``noise`` or drawn from ``generator``), the head's conditioning (cond and
    uncond stacked when guidance is on) and whether guidance is on (``uncond`` given and ``cfg``
    not the float 1)."""
    dtype = cond.dtype if cond.is_floating_point() else torch.float32
    x = noise if noise is not None else _randn((cond.shape[0], token_dim), generator, cond.device, dtype)
    double = uncond is not None and (torch.is_tensor(cfg) or cfg != 1.0)
    c_in = torch.cat([cond, uncond], 0) if double and uncond is not None else cond
    return x, c_in, double


def guided(cond_out: torch.Tensor, uncond_out: torch.Tensor, cfg) -> torch.Tensor:
    """uncond + cfg (cond - uncond), exactly ``cond_out`` wherever cfg == 1.

    ``cfg`` is a float or a tensor of per-row scales [N].
    """
    if not torch.is_tensor(cfg):
        if cfg == 1.0:
            return cond_out
        return uncond_out + cfg * (cond_out - uncond_out)
    scale = cfg.to(cond_out.device, cond_out.dtype).view(-1, *([1] * (cond_out.ndim - 1)))
    mixed = uncond_out + scale * (cond_out - uncond_out)
    return torch.where(scale == 1, cond_out, mixed)


class DiffusionLoss(nn.Module):
    """MAR / D-JEPA per-token diffusion loss around a denoising head.

    Args:
        head: ``head(x_t [N, d], t [N], cond [N, c]) -> [N, d]`` or ``[N, 2d]`` with
            ``learn_sigma`` (e.g. :class:`~jepa_core.generative.heads.DenoisingMLP` with
            ``out_dim = 2 * token_dim``).
        token_dim: d; read from ``head.token_dim`` when omitted.
        schedule: ``"cosine"`` (MAR, D-JEPA) or ``"linear"``.
        train_steps: T, 1000.
        sample_steps: steps of the respaced sampling chain, 100.
        batch_mul: copies of each token with fresh noise and t in :meth:`loss`.
        learn_sigma: the head predicts the variance channel and the loss adds the VB term (MAR);
            otherwise noise MSE only and sampling with beta_t (MAR's fixed-large variance).
        clip_denoised: sampling clamps each step's x_0 prediction to [-c, c] (None: as
            released, no clamp). For data with a known range (pixels in [-1, 1]): near t = T the
            x_0 prediction divides the noise error by sqrt(alpha_bar_T) ~ 1e-4, and a head that
            is not yet accurate there makes an unclamped respaced chain diverge.
    """

    def __init__(
        self,
        head: nn.Module,
        token_dim: int | None = None,
        schedule: str = "cosine",
        train_steps: int = 1000,
        sample_steps: int = 100,
        batch_mul: int = 4,
        learn_sigma: bool = True,
        clip_denoised: float | None = None,
    ):
        super().__init__()
        if schedule not in BETA_SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(BETA_SCHEDULES)}")
        if batch_mul < 1:
            raise ValueError("batch_mul must be >= 1")
        self.head = head
        self.token_dim: int = int(token_dim if token_dim is not None else head.token_dim)  # type: ignore[arg-type]  # head: a Module
        self.learn_sigma = learn_sigma
        expected = 2 * self.token_dim if learn_sigma else self.token_dim
        out_dim = getattr(head, "out_dim", expected)
        if out_dim != expected:
            raise ValueError(
                f"head.out_dim is {out_dim}; learn_sigma={learn_sigma} needs {expected}"
            )
        self.batch_mul = batch_mul
        self.clip_denoised = clip_denoised
        betas = BETA_SCHEDULES[schedule](train_steps)
        self.train_diffusion = GaussianDiffusion(betas)
        self.sample_diffusion = GaussianDiffusion(
            betas, spaced_timesteps(train_steps, sample_steps)
        )

    def _split(self, out: torch.Tensor):
        if self.learn_sigma:
            return out[:, : self.token_dim], out[:, self.token_dim :]
        return out, None

    def loss_per_token(
        self,
        target: torch.Tensor,
        cond: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Loss of each row (no repetition): ``[N]`` = noise MSE (+ VB bits)."""
        diff = self.train_diffusion
        n = target.shape[0]
        t = _randint(diff.num_steps, n, generator, target.device)
        noise = _randn(target.shape, generator, target.device, target.dtype)
        xt = diff.q_sample(target, t, noise)
        eps, v = self._split(self.head(xt, t.float(), cond))
        loss = ((noise - eps) ** 2).mean(dim=-1)
        if v is not None:
            mean, log_var = diff.p_mean_log_variance(xt, t, eps.detach(), v)
            true_mean, true_log_var = diff.q_posterior(target, xt, t)
            kl = _normal_kl(true_mean, true_log_var, mean, log_var).mean(-1) / math.log(2.0)
            nll = -_discretized_gaussian_log_likelihood(target, mean, 0.5 * log_var)
            nll = nll.mean(-1) / math.log(2.0)
            loss = loss + torch.where(t == 0, nll, kl)
        return loss

    def loss(
        self,
        target: torch.Tensor,
        cond: torch.Tensor,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Scalar loss of ``target`` [N, d] given ``cond`` [N, c]; ``mask`` [N] weights rows
        (D-JEPA passes all tokens with the mask, MAR-style masked mean)."""
        k = self.batch_mul
        per = self.loss_per_token(target.repeat(k, 1), cond.repeat(k, 1), generator)
        if mask is None:
            return per.mean()
        m = mask.reshape(-1).to(per.dtype).repeat(k)
        return (per * m).sum() / m.sum()

    forward = loss

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
        """Draw one token per row of ``cond`` [N, c] -> [N, d].

        With ``uncond`` [N, c] the head runs on the doubled batch (cond half, uncond half) and the
        noise prediction is guided with ``cfg`` (float or [N]); a float ``cfg == 1`` skips the
        unconditional half, so it is exactly the conditional model (rows of a tensor ``cfg``
        equal to 1 take the conditional output). The random stream (initial noise, then one draw
        per step) does not depend on ``uncond`` or ``cfg``.
        """
        diff = self.sample_diffusion
        n, device = cond.shape[0], cond.device
        x, c_in, double = sampling_start(cond, uncond, cfg, self.token_dim, noise, generator)
        for i in reversed(range(diff.num_steps)):
            t = torch.full((n,), i, device=device, dtype=torch.long)
            t_model = diff.timestep_map.to(device=device, dtype=torch.float32)[t]
            if double:
                out = self.head(torch.cat([x, x], 0), torch.cat([t_model, t_model], 0), c_in)
                out_c, out_u = out[:n], out[n:]
                eps_c, v = self._split(out_c)
                eps_u, _ = self._split(out_u)
                eps = guided(eps_c, eps_u, cfg)
            else:
                eps, v = self._split(self.head(x, t_model, c_in))
            mean, log_var = diff.p_mean_log_variance(x, t, eps, v, self.clip_denoised)
            z = _randn(x.shape, generator, device, x.dtype)
            x = mean + torch.exp(0.5 * log_var) * z * temperature if i else mean
        return x
