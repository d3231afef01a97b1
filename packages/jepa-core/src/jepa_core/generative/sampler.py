"""Next-set-of-tokens generation loop, its schedules, and the training mask-ratio sampler.

The loop is MAR's / D-JEPA's iterative masked generation (``mar:models/mar.py`` ``sample_tokens``,
``djepa:models/djepa.py`` ``sample_tokens``), written generically so any method can plug in its
own condition predictor and per-token head:

1. every sample gets its own random generation order and starts with all tokens unknown;
2. at step k of K the method predicts a condition feature for every token from the tokens known
   so far; the number left unknown after the step is
   ``max(1, min(unknown - 1, floor(L cos(pi/2 (k+1)/K))))`` (so at least one token is revealed
   per step and one stays for the last step, which reveals the rest);
3. the tokens revealed at this step are drawn by the head from their conditions, with
   temperature and classifier-free guidance. The released guidance scale is linear in the
   fraction of tokens known *after* the step, ``1 + (cfg - 1) (L - unknown_after) / L``
   (MUSE-style); because the released clamp keeps ``unknown_after`` at 1 on the last step, that
   step uses ``(L - 1) / L`` rather than 1. This is reproduced.

Differences from the released loop: the order is drawn from a seeded ``torch.Generator`` (not
numpy's global state) and tokens are revealed from the front of the order (the released code
keeps the front masked and reveals from the back; for a uniformly random order the two are the
same distribution).

The mask-ratio sampler is the training-time draw of MAR and D-JEPA: a normal with mode 1.0 and
std 0.25 truncated to [0.7, 1.0] (``scipy.stats.truncnorm((0.7 - 1) / 0.25, 0, loc=1,
scale=0.25)`` in ``djepa:models/djepa.py``), whose mean is about 0.867; the released code
draws one ratio per batch and masks ``ceil(L r)`` tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def cosine_unknown_after(num_tokens: int, steps: int) -> list[int]:
    """Tokens left unknown after each step, as the released loop clamps them (last entry 1)."""
    if num_tokens < 1 or steps < 1:
        raise ValueError("num_tokens and steps must be positive")
    if steps > num_tokens:
        raise ValueError(
            f"steps ({steps}) > num_tokens ({num_tokens}): some step would reveal nothing"
        )
    unknown, out = num_tokens, []
    for k in range(steps):
        target = math.floor(num_tokens * math.cos(math.pi / 2 * (k + 1) / steps))
        unknown = max(1, min(unknown - 1, target))
        out.append(unknown)
    return out


def cosine_schedule_counts(num_tokens: int, steps: int) -> list[int]:
    """Tokens revealed at each of ``steps`` steps on the released cosine schedule.

    Every count is at least one and they sum to ``num_tokens``; ``steps <= num_tokens``.
    """
    unknown_after = cosine_unknown_after(num_tokens, steps)
    counts, unknown = [], num_tokens
    for k, after in enumerate(unknown_after):
        after = 0 if k == steps - 1 else after
        counts.append(unknown - after)
        unknown = after
    if min(counts) < 1:  # cannot happen for steps <= num_tokens; guarded for safety
        raise ValueError(f"schedule reveals nothing at some step: {counts}")
    return counts


def linear_cfg(scale: float, known: int, total: int) -> float:
    """Guidance scale ``1 + (scale - 1) known / total``: linear in the fraction of tokens known
    after the current step (the released ``cfg_schedule="linear"``)."""
    return 1.0 + (scale - 1.0) * known / total


def random_orders(
    batch: int,
    num_tokens: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """One uniformly random permutation of ``range(num_tokens)`` per sample: [B, L] long."""
    gen_device = generator.device if generator is not None else device
    keys = torch.rand(batch, num_tokens, generator=generator, device=gen_device)
    return keys.argsort(dim=1).to(device if device is not None else keys.device)


Condition = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


@torch.no_grad()
def generate_tokens(
    predict_condition: Callable[[torch.Tensor, torch.Tensor], Condition],
    head_sampler: Callable[..., torch.Tensor],
    num_tokens: int,
    token_dim: int,
    steps: int,
    batch: int,
    *,
    temperature: float = 1.0,
    cfg: float = 1.0,
    cfg_schedule: str = "linear",
    generator: torch.Generator | None = None,
    orders: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    on_step: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Generate ``batch`` sequences of ``num_tokens`` tokens of size ``token_dim``.

    Args:
        predict_condition: ``(tokens [B, L, d], known [B, L] bool) -> cond [B, L, c]``, or a
            pair ``(cond, uncond)`` for guidance (unknown tokens hold zeros).
        head_sampler: ``(cond [n, c], temperature=, cfg=, uncond=, generator=) -> [n, d]``, e.g.
            ``DiffusionLoss.sample`` or ``FlowMatchingLoss.sample``.
        steps: generation steps K (<= ``num_tokens``), revealing
            :func:`cosine_schedule_counts` tokens each.
        cfg, cfg_schedule: guidance scale and ``"linear"`` (released default; see the module
            docstring) or ``"constant"``; ``cfg == 1`` samples the conditional model only.
        generator: seeds the orders and the head's noise (same seed, same output).
        orders: optional [B, L] permutations to use instead of random ones.
        on_step: called as ``on_step(k, tokens, revealed_mask)`` after each step.

    Returns:
        tokens [B, L, d].
    """
    if cfg_schedule not in ("linear", "constant"):
        raise ValueError(f"unknown cfg_schedule {cfg_schedule!r}; valid: linear, constant")
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    counts = cosine_schedule_counts(num_tokens, steps)
    unknown_after = cosine_unknown_after(num_tokens, steps)
    if orders is None:
        orders = random_orders(batch, num_tokens, generator, device)
    orders = orders.to(device)
    if orders.shape != (batch, num_tokens):
        raise ValueError(f"orders must be [{batch}, {num_tokens}], got {tuple(orders.shape)}")
    rank = torch.empty_like(orders)
    rank.scatter_(1, orders, torch.arange(num_tokens, device=device).expand(batch, -1))

    tokens = torch.zeros(batch, num_tokens, token_dim, device=device, dtype=dtype)
    known = torch.zeros(batch, num_tokens, dtype=torch.bool, device=device)
    start = 0
    for k, count in enumerate(counts):
        out = predict_condition(tokens, known)
        cond, uncond = out if isinstance(out, tuple) else (out, None)
        reveal = (rank >= start) & (rank < start + count)
        start += count
        sel = reveal.nonzero(as_tuple=True)
        if cfg == 1.0:
            cfg_k, uncond_sel = 1.0, None
        else:
            if uncond is None:
                raise ValueError("cfg != 1 needs predict_condition to return (cond, uncond)")
            cfg_k = (
                linear_cfg(cfg, num_tokens - unknown_after[k], num_tokens)
                if cfg_schedule == "linear"
                else cfg
            )
            uncond_sel = uncond[sel]
        new = head_sampler(
            cond[sel], temperature=temperature, cfg=cfg_k, uncond=uncond_sel, generator=generator
        )
        tokens[sel] = new.to(dtype)
        known |= reveal
        if on_step is not None:
            on_step(k, tokens, reveal)
    return tokens


class TruncatedNormalMaskRatio:
    """Mask ratios from N(loc, scale^2) truncated to [min_ratio, max_ratio] (inverse CDF)."""

    def __init__(
        self,
        min_ratio: float = 0.7,
        max_ratio: float = 1.0,
        loc: float = 1.0,
        scale: float = 0.25,
    ):
        if not 0.0 <= min_ratio < max_ratio <= 1.0:
            raise ValueError("need 0 <= min_ratio < max_ratio <= 1")
        if scale <= 0:
            raise ValueError("scale must be positive")
        self.min_ratio, self.max_ratio, self.loc, self.scale = min_ratio, max_ratio, loc, scale
        a = torch.tensor((min_ratio - loc) / scale, dtype=torch.float64)
        b = torch.tensor((max_ratio - loc) / scale, dtype=torch.float64)
        self._a, self._b = a, b
        self._cdf_a, self._cdf_b = torch.special.ndtr(a), torch.special.ndtr(b)

    @property
    def mean(self) -> float:
        """Analytic mean: loc + scale (phi(a) - phi(b)) / (Phi(b) - Phi(a))."""

        def pdf(x):
            return torch.exp(-0.5 * x**2) / math.sqrt(2 * math.pi)

        z = self._cdf_b - self._cdf_a
        return float(self.loc + self.scale * (pdf(self._a) - pdf(self._b)) / z)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` ratios (float64, on the generator's device or the CPU)."""
        device = generator.device if generator is not None else None
        u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        cdf_a, cdf_b = self._cdf_a.to(u.device), self._cdf_b.to(u.device)
        x = self.loc + self.scale * torch.special.ndtri(cdf_a + u * (cdf_b - cdf_a))
        return x.clamp(self.min_ratio, self.max_ratio)

    def num_masked(self, num_tokens: int, generator: torch.Generator | None = None) -> int:
        """One draw per batch, as released: ``ceil(num_tokens * r)`` tokens to mask."""
        r = float(self.sample(1, generator)[0])
        return max(0, min(num_tokens, math.ceil(num_tokens * r)))

    def sample_mask(
        self,
        batch: int,
        num_tokens: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """A training mask [B, L] (True = masked): one ratio per batch (as released), a random
        order per sample, ``ceil(L r)`` masked tokens in each."""
        k = self.num_masked(num_tokens, generator)
        return mask_by_order(random_orders(batch, num_tokens, generator, device), k)


def mask_by_order(orders: torch.Tensor, num_masked: int) -> torch.Tensor:
    """Bool mask [B, L], True on the first ``num_masked`` positions of each sample's order."""
    rank = torch.empty_like(orders)
    b, n = orders.shape
    rank.scatter_(1, orders, torch.arange(n, device=orders.device).expand(b, -1))
    return rank < num_masked


def mask_ratio_sampler(
    min_ratio: float = 0.7, max_ratio: float = 1.0, loc: float = 1.0, scale: float = 0.25
) -> TruncatedNormalMaskRatio:
    """The MAR / D-JEPA training mask-ratio distribution (defaults as released)."""
    return TruncatedNormalMaskRatio(min_ratio, max_ratio, loc, scale)
