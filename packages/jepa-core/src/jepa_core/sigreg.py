"""SIGReg: Sketched Isotropic Gaussian Regularization (LeJEPA; Balestriero & LeCun, 2025,
arXiv 2511.08544).

SIGReg pushes a batch of embeddings ``z`` of shape ``[N, D]`` toward the isotropic Gaussian
N(0, I). It draws ``M`` random unit directions ("slices") ``a_1..a_M``. For each slice it runs
the Epps-Pulley test of the 1-D projections ``p_n = <a_m, z_n>`` against N(0, 1), and averages
the M statistics (paper, Section 4 and Algorithm 1; ``lejepa:lejepa/multivariate/slicing.py``).
The Epps-Pulley statistic of one slice is

    T = N * integral over t of |phi_N(t) - exp(-t^2/2)|^2 * exp(-t^2/2) dt,

where ``phi_N(t) = mean_n exp(i t p_n)`` is the empirical characteristic function (ECF). Its
real part is ``mean cos(t p)`` and its imaginary part is ``mean sin(t p)``, so no complex
tensors are needed. ``exp(-t^2/2)`` is both the characteristic function of N(0, 1) and the
Gaussian window. The integral is a quadrature over a few nodes ``t_k`` (``lejepa:lejepa/
univariate/epps_pulley.py``). There are two variants, both multiplied by the number of samples
N:

- ``"paper"`` (default): Algorithm 1 of the paper. The trapezoid rule on
  ``linspace(-t_max, t_max, num_points)``, with ``t_max = 5`` and 17 points.
- ``"repo"``: the repository's ``EppsPulley`` and ``MINIMAL.md``. The trapezoid rule on
  ``linspace(0, t_max, num_points)``, with ``t_max = 3`` and 17 points, and all weights doubled.
  The integrand is even in t, so this is the trapezoid integral over ``[-t_max, t_max]``.

The integrand is even for any data: ``cos`` is even and ``sin^2`` is even. So both rules are
evaluated here on their nodes ``t >= 0``, with the weights of ``+t`` and ``-t`` merged. For
the paper grid this halves the work and gives the same value, up to rounding.

**Null value.** SIGReg has a floor above 0. For i.i.d. N(0, I) samples, each projection on a
unit direction is exactly N(0, 1). Then ``E[N |phi_N(t) - phi(t)|^2] = 1 - exp(-t^2)`` for
every N, so the expected statistic is ``sum_k w_k (1 - exp(-t_k^2))``, where ``w_k`` are the
quadrature weights times the window (:func:`isotropy_null_value`):

- 1.0594 on the paper grid;
- 1.0525 on the repository grid;
- ``sqrt(2 pi) (1 - 1/sqrt(3)) = 1.0594`` for the exact integral.

Collapsed embeddings (all rows equal to 0) give ``N * sum_k w_k (1 - exp(-t_k^2/2))^2``: 0.409 N
on the paper grid and 0.402 N on the repository grid. That value grows linearly with the batch.

**Slices.** The slices are redrawn at every call from a generator seeded by ``(seed, step)``.
Every rank draws the same slices, and they change from step to step. The repository uses a
step counter that it synchronises with an all-reduce(MAX). Here, pass ``step``, the optimizer
step, to :meth:`SIGReg.forward`, or pass your own ``generator``. Without either, the module
counts its own calls; under DDP it then synchronises that counter with an all-reduce(MAX) on
every call, as the repository does. The directions are drawn on the input's device, so CPU
and CUDA draw different slices for the same step. Each direction is drawn in float32 and its
norm is clamped before the division. The repository normalises in the input dtype, which can
divide by zero in bf16 (``lejepa`` PR #40, "Fix numerical instability of A matrix").

**Precision.** The statistic is always computed in float32 (float64 inputs stay float64),
inside a ``torch.autocast(enabled=False)`` region. The inputs are cast up first, so bf16
autocast and bf16 inputs give a finite value. The ECF terms are bounded by 1, and so are
their derivatives times ``1/t``.

**DDP.** When ``torch.distributed`` is initialised with more than one process, each rank sums
``cos(t p)`` and ``sin(t p)`` over its own rows. The sums and the row counts are all-reduced
(summed) before the error is formed, so every rank gets the statistic of the global batch and
N is the global batch size. The reduction is
:func:`torch.distributed.nn.functional.all_reduce`, which is differentiable. The gradient that
reaches the parameters after DDP's averaging is the gradient of the global-batch statistic.
Before that averaging, a rank's gradient with respect to its own rows is ``world_size`` times
that gradient, as with any per-rank loss that DDP averages. The repository averages the
per-rank means, which is only the global ECF when all ranks hold the same number of rows. Sums
and counts are exact for unequal batches as well.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn

from jepa_core.masks import mix_seed

__all__ = [
    "QUADRATURES",
    "SIGReg",
    "epps_pulley",
    "epps_pulley_quadrature",
    "isotropy_null_value",
    "sigreg_loss",
    "slice_directions",
]

QUADRATURES = ("paper", "repo")
DEFAULT_T_MAX = {"paper": 5.0, "repo": 3.0}
_SLICE_STREAM = 0x736C6963  # "slic": keeps the slice seeds apart from other (seed, step) streams
_NORM_EPS = 1e-12


def epps_pulley_quadrature(
    quadrature: str = "paper", t_max: float | None = None, num_points: int = 17
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes ``t >= 0`` and weights (window ``exp(-t^2/2)`` included) of the Epps-Pulley
    integral over the whole real line, as float64 tensors.

    ``"paper"``: the trapezoid rule on ``linspace(-t_max, t_max, num_points)`` (paper,
    Algorithm 1), folded onto ``t >= 0``. ``"repo"``: the trapezoid rule on ``linspace(0, t_max,
    num_points)`` with every weight doubled (``lejepa:lejepa/univariate/epps_pulley.py``).
    ``t_max`` defaults to 5 for ``"paper"`` and to 3 for ``"repo"``. The statistic of one slice
    is ``N * sum_k weights[k] * |ECF(t_k) - exp(-t_k^2/2)|^2``.
    """
    if quadrature not in QUADRATURES:
        raise ValueError(f"quadrature must be one of {QUADRATURES}, got {quadrature!r}")
    t_max = DEFAULT_T_MAX[quadrature] if t_max is None else float(t_max)
    if not (math.isfinite(t_max) and t_max > 0):
        raise ValueError(f"t_max must be a finite number > 0, got {t_max}")
    if int(num_points) != num_points or num_points < 2:
        raise ValueError(f"num_points must be an integer >= 2, got {num_points}")
    num_points = int(num_points)
    f64 = torch.float64
    if quadrature == "paper":
        t_full = torch.linspace(-t_max, t_max, num_points, dtype=f64)
        dt = 2 * t_max / (num_points - 1)
        w_full = torch.full((num_points,), dt, dtype=f64)
        w_full[[0, -1]] = dt / 2
        half = num_points // 2  # the nodes t >= 0: the centre (odd num_points) and above
        t = t_full[half:].abs()  # the centre node is -0.0 in some linspace roundings
        w = w_full[half:] + w_full.flip(0)[half:]  # +t and -t merged
        if num_points % 2:
            w[0] = w_full[half]  # t = 0 has no mirror
    else:
        t = torch.linspace(0, t_max, num_points, dtype=f64)
        dt = t_max / (num_points - 1)
        w = torch.full((num_points,), 2 * dt, dtype=f64)
        w[[0, -1]] = dt
    return t, w * torch.exp(-t.square() / 2)


def isotropy_null_value(
    quadrature: str = "paper", t_max: float | None = None, num_points: int = 17
) -> float:
    """The expected SIGReg / Epps-Pulley statistic of i.i.d. standard normal samples.

    The value is ``sum_k w_k (1 - exp(-t_k^2))``, because ``E[N |ECF(t) - exp(-t^2/2)|^2] =
    1 - exp(-t^2)`` for any sample size N. It holds for every N, every dimension and every
    number of slices, since each projection of N(0, I) on a unit direction is N(0, 1). It is
    the mean of the statistic; a single draw scatters around it. Values: 1.05942 with
    ``"paper"`` (t in [-5, 5], 17 points), 1.05246 with ``"repo"`` ([0, 3], 17 points), and
    ``sqrt(2 pi) (1 - 1/sqrt(3)) = 1.05943`` for the exact integral. SIGReg cannot go below
    about this value on a batch of samples, and embeddings at this level are
    indistinguishable from N(0, I) by the test.
    """
    t, w = epps_pulley_quadrature(quadrature, t_max, num_points)
    return float((w * (1 - torch.exp(-t.square()))).sum())


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _statistic(proj: torch.Tensor, t: torch.Tensor, w: torch.Tensor, sync: bool) -> torch.Tensor:
    """Epps-Pulley statistics of ``proj`` ``[..., N, K]`` (samples on dim -2): ``[..., K]``.
    Runs in ``proj``'s dtype; ``t`` and ``w`` are already in it."""
    x_t = proj.unsqueeze(-1) * t  # [..., N, K, P]
    cos_sum, sin_sum = x_t.cos().sum(-3), x_t.sin().sum(-3)  # [..., K, P]
    count = torch.tensor(float(proj.shape[-2]), dtype=proj.dtype, device=proj.device)
    if sync and _distributed():
        import torch.distributed.nn.functional as dist_fn

        # one collective for the sums and the count; autograd-aware (backward: all-reduce sum)
        flat = torch.cat([cos_sum.reshape(-1), sin_sum.reshape(-1), count.reshape(1)])
        flat = dist_fn.all_reduce(flat, op=dist.ReduceOp.SUM)
        n = cos_sum.numel()
        cos_sum, sin_sum = flat[:n].view_as(cos_sum), flat[n : 2 * n].view_as(sin_sum)
        count = flat[2 * n].detach()
    phi = torch.exp(-t.square() / 2)
    err = (cos_sum / count - phi).square() + (sin_sum / count).square()
    return (err @ w) * count


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32) if x.is_floating_point() else torch.float32


def epps_pulley(
    x: torch.Tensor,
    *,
    quadrature: str = "paper",
    t_max: float | None = None,
    num_points: int = 17,
    sync: bool = True,
) -> torch.Tensor:
    """Epps-Pulley statistic of 1-D samples against N(0, 1).

    ``x``: ``[N]``, which returns a scalar, or ``[..., N, K]`` with the samples on dim -2,
    which returns ``[..., K]``, one statistic per column. The statistic is computed in float32,
    or float64 for float64 inputs, with autocast off. ``sync``: under an initialised process
    group with more than one process, sum the ECF and the counts over the ranks, so the
    statistic is that of the samples of all ranks together. The quadrature is described in
    :func:`epps_pulley_quadrature`.
    """
    squeeze = x.ndim == 1
    if squeeze:
        x = x.unsqueeze(-1)
    dtype = _compute_dtype(x)
    t, w = (v.to(device=x.device, dtype=dtype) for v in epps_pulley_quadrature(quadrature, t_max, num_points))
    with torch.autocast(device_type=x.device.type, enabled=False):
        out = _statistic(x.to(dtype), t, w, sync)
    return out.squeeze(-1) if squeeze else out


def slice_directions(
    dim: int,
    num_slices: int,
    *,
    seed: int = 0,
    step: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``num_slices`` random unit directions in R^dim, as the columns of a float32
    ``[dim, num_slices]`` tensor.

    The directions are drawn from ``generator`` if one is given. Otherwise they are drawn from
    a fresh generator on ``device`` (default CPU), seeded by :func:`jepa_core.masks.mix_seed` of
    ``seed``, a tag of this stream and ``step``: the same ``(seed, step)`` gives the same directions on every rank, and another step gives
    others. The entries are drawn in float32 from N(0, 1). Each column is divided by its norm,
    which is clamped at 1e-12, so no column is ever NaN (``lejepa`` PR #40).
    """
    if generator is None:
        if step is None:
            raise ValueError("slice_directions needs a step (seeded with (seed, step)) or a generator")
        device = torch.device("cpu") if device is None else torch.device(device)
        generator = torch.Generator(device=device).manual_seed(mix_seed(seed, _SLICE_STREAM, step))
    a = torch.randn(dim, num_slices, generator=generator, device=generator.device, dtype=torch.float32)
    a = a / a.norm(dim=0, keepdim=True).clamp_min(_NORM_EPS)
    return a if device is None else a.to(device)


def _check_embeddings(z: torch.Tensor) -> None:
    if z.ndim not in (2, 3):
        raise ValueError(f"SIGReg expects embeddings [N, D] or [V, N, D], got shape {tuple(z.shape)}")
    if z.shape[-2] < 1 or z.shape[-1] < 1:
        raise ValueError(f"SIGReg needs at least one sample and one dimension, got shape {tuple(z.shape)}")


def _reduce(stats: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return stats.mean()
    if reduction == "sum":
        return stats.sum()
    return stats


def sigreg_loss(
    z: torch.Tensor,
    directions: torch.Tensor,
    *,
    quadrature: str = "paper",
    t_max: float | None = None,
    num_points: int = 17,
    reduction: str = "mean",
    sync: bool = True,
) -> torch.Tensor:
    """SIGReg of embeddings ``z`` (``[N, D]``, or ``[V, N, D]`` for V views) on given slices
    ``directions`` ``[D, M]``: the Epps-Pulley statistic of each projection ``z @ directions``.

    Each view is tested on its own, with N samples. The result is averaged over views and slices
    (``reduction="mean"``, the default), summed (``"sum"``), or returned as it is (``"none"``:
    ``[M]`` or ``[V, M]``). The functional form of :class:`SIGReg`, which draws the directions
    itself.
    """
    _check_embeddings(z)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if directions.ndim != 2 or directions.shape[0] != z.shape[-1]:
        raise ValueError(f"directions must be [D={z.shape[-1]}, M], got shape {tuple(directions.shape)}")
    dtype = _compute_dtype(z)
    t, w = (v.to(device=z.device, dtype=dtype) for v in epps_pulley_quadrature(quadrature, t_max, num_points))
    with torch.autocast(device_type=z.device.type, enabled=False):
        proj = z.to(dtype) @ directions.to(device=z.device, dtype=dtype)
        stats = _statistic(proj, t, w, sync)
    return _reduce(stats, reduction)


class SIGReg(nn.Module):
    """SIGReg as a loss module: ``SIGReg(num_slices=256)(z, step=step)`` returns a scalar.

    Args:
        num_slices: M, the number of random directions drawn per call. The paper's listing uses
            256, the repository's README 1024.
        quadrature: ``"paper"`` (trapezoid on [-t_max, t_max], t_max 5) or ``"repo"``
            (trapezoid on [0, t_max] with doubled weights, t_max 3); see
            :func:`epps_pulley_quadrature`.
        t_max: the end of the integration range; None for the variant's default.
        num_points: the number of quadrature nodes of the variant's grid (17 in both sources).
        seed: mixed with the step into the seed of the directions.
        reduction: ``"mean"`` over views and slices (the sources' choice), ``"sum"``, or
            ``"none"`` (``[M]`` or ``[V, M]``).
        sync: under DDP, compute the statistic of the global batch (see the module docstring).

    ``forward(z, step=None, generator=None)``. ``z`` is ``[N, D]``, or ``[V, N, D]``; each of the
    V views is tested on its own with the same slices. ``step``: the optimizer step. The slices
    are drawn from ``(seed, step)``, the same on every rank, and other at every step. Pass it
    when the module is called once per step or when a run must resume exactly. ``generator``:
    draw the slices from this generator instead. With neither, the module's own call counter
    stands in for the step, and under DDP it is synchronised with an all-reduce(MAX). The
    counter is not saved in the state dict.
    The result is float32 (float64 for float64 inputs), even under autocast.
    """

    def __init__(
        self,
        num_slices: int = 256,
        quadrature: str = "paper",
        t_max: float | None = None,
        num_points: int = 17,
        seed: int = 0,
        reduction: str = "mean",
        sync: bool = True,
    ):
        super().__init__()
        if int(num_slices) != num_slices or num_slices < 1:
            raise ValueError(f"num_slices must be an integer >= 1, got {num_slices}")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        t, w = epps_pulley_quadrature(quadrature, t_max, num_points)
        self.num_slices = int(num_slices)
        self.quadrature = quadrature
        self.t_max = DEFAULT_T_MAX[quadrature] if t_max is None else float(t_max)
        self.num_points = int(num_points)
        self.seed = int(seed)
        self.reduction = reduction
        self.sync = sync
        self.calls = 0  # the stand-in step when forward gets neither step nor generator
        # float64 masters, plain attributes rather than buffers: module.to(torch.bfloat16) must
        # not round the nodes; cast (and cached) per device and compute dtype
        self.t, self.weights = t, w
        self._cast: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def extra_repr(self) -> str:
        return (f"num_slices={self.num_slices}, quadrature={self.quadrature!r}, t_max={self.t_max}, "
                f"num_points={self.num_points}, seed={self.seed}, reduction={self.reduction!r}")

    def null_value(self) -> float:
        """:func:`isotropy_null_value` of this module's quadrature: the expected value on
        N(0, I) samples."""
        return isotropy_null_value(self.quadrature, self.t_max, self.num_points)

    def _step(self, device: torch.device) -> int:
        step = self.calls
        if self.sync and _distributed():
            counter = torch.tensor([step], dtype=torch.int64, device=device)
            dist.all_reduce(counter, op=dist.ReduceOp.MAX)
            step = int(counter.item())
        self.calls = step + 1
        return step

    def directions(self, dim: int, step: int, device: torch.device | str | None = None) -> torch.Tensor:
        """The ``[dim, num_slices]`` slices that ``forward`` draws for ``step`` on ``device``."""
        return slice_directions(dim, self.num_slices, seed=self.seed, step=step, device=device)

    def forward(
        self, z: torch.Tensor, step: int | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        _check_embeddings(z)
        if generator is not None:
            a = slice_directions(z.shape[-1], self.num_slices, generator=generator, device=z.device)
        else:
            if step is None:
                step = self._step(z.device)
            a = self.directions(z.shape[-1], int(step), z.device)
        dtype = _compute_dtype(z)
        key = (z.device, dtype)
        if key not in self._cast:
            self._cast[key] = (self.t.to(z.device, dtype), self.weights.to(z.device, dtype))
        t, w = self._cast[key]
        with torch.autocast(device_type=z.device.type, enabled=False):
            stats = _statistic(z.to(dtype) @ a.to(dtype), t, w, self.sync)
        return _reduce(stats, self.reduction)
