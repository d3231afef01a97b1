"""SIGReg (jepa_core.sigreg): known answers (the null value, collapsed batches, the closed-form
Epps-Pulley integral, both quadrature variants written out), step-seeded slices, bf16 safety,
covariance driven to I, and two gloo processes against one process on the global batch.

Run as a script under torchrun, this file is also the worker of the distributed test.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from jepa_core.sigreg import (
    SIGReg,
    epps_pulley,
    epps_pulley_quadrature,
    isotropy_null_value,
    sigreg_loss,
    slice_directions,
)

DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- known answers


def test_null_values_of_both_grids_and_of_the_exact_integral():
    exact = math.sqrt(2 * math.pi) * (1 - 1 / math.sqrt(3))  # integral of (1 - e^{-t^2}) e^{-t^2/2}
    assert exact == pytest.approx(1.0594258, abs=1e-7)
    assert isotropy_null_value("paper") == pytest.approx(1.0594231, abs=1e-6)  # [-5, 5], 17 points
    assert isotropy_null_value("repo") == pytest.approx(1.0524642, abs=1e-6)  # [0, 3] doubled, 17
    # a fine, wide grid converges to the exact integral
    assert isotropy_null_value("repo", t_max=10, num_points=2001) == pytest.approx(exact, abs=1e-6)
    assert SIGReg(quadrature="repo").null_value() == isotropy_null_value("repo")


@pytest.mark.parametrize("quadrature", ["paper", "repo"])
def test_standard_normal_samples_give_the_null_value(quadrature):
    """The expected statistic of N(0, I) samples is the null value for any N: averaged over
    64 views of 128 samples in D=16 and 4 steps (about 2x10^5 samples), within 0.05."""
    m = SIGReg(num_slices=64, quadrature=quadrature)
    g = _gen(0)
    values = torch.stack([m(torch.randn(64, 128, 16, generator=g), step=s) for s in range(4)])
    null = isotropy_null_value(quadrature)
    print(f"{quadrature}: measured {values.mean():.4f} (per call {values.tolist()}), null {null:.4f}")
    assert float(values.mean()) == pytest.approx(null, abs=0.05)
    # one batch, as a training step sees it: 512 x 64, 256 slices
    one = SIGReg(num_slices=256, quadrature=quadrature)(torch.randn(512, 64, generator=g), step=0)
    assert 0.7 < float(one) < 1.5


@pytest.mark.parametrize("quadrature", ["paper", "repo"])
def test_collapsed_batches_score_far_more_and_grow_with_n(quadrature):
    t, w = epps_pulley_quadrature(quadrature)
    per_sample = float((w * (1 - torch.exp(-t.square() / 2)).square()).sum())  # ECF = 1 at every t
    assert per_sample == pytest.approx(0.4089 if quadrature == "paper" else 0.4020, abs=1e-4)
    m = SIGReg(num_slices=32, quadrature=quadrature)
    null = isotropy_null_value(quadrature)
    for n in (64, 256, 1024):
        value = float(m(torch.zeros(n, 8), step=0))
        assert value == pytest.approx(n * per_sample, rel=1e-5)
        assert value > 20 * null
    # rank 1: every sample on one line, N(0, 1) along it
    g = _gen(1)
    line = torch.randn(1, 8, generator=g)
    line = line / line.norm()
    small, big = (float(m(torch.randn(n, 1, generator=g) * line, step=0)) for n in (128, 1024))
    assert small > 10 * null and big > 5 * small


def test_an_anisotropic_batch_scores_far_more():
    g = _gen(2)
    z = torch.randn(512, 8, generator=g)
    m = SIGReg(num_slices=64)
    iso = float(m(z, step=0))
    scaled = z.clone()
    scaled[:, 0] *= 3
    shifted = z + 1.0
    assert iso < 1.6
    assert float(m(scaled, step=0)) > 10 * iso
    assert float(m(shifted, step=0)) > 10 * iso


def _closed_form(x: torch.Tensor) -> float:
    """N * integral over R of |ECF(t) - e^{-t^2/2}|^2 e^{-t^2/2} dt, in closed form (O(N^2))."""
    x = x.double()
    n = len(x)
    pair = torch.exp(-(x[:, None] - x[None, :]).square() / 2).sum() * math.sqrt(2 * math.pi) / n**2
    cross = torch.exp(-x.square() / 4).sum() * 2 * math.sqrt(math.pi) / n
    return float(n * (pair - cross + math.sqrt(2 * math.pi / 3)))


def test_a_fine_grid_converges_to_the_closed_form_integral():
    g = _gen(3)
    for x in (torch.randn(200, generator=g), 0.5 * torch.randn(200, generator=g) + 0.3):
        exact = _closed_form(x)
        for q in ("paper", "repo"):
            fine = float(epps_pulley(x.double(), quadrature=q, t_max=10, num_points=801))
            assert fine == pytest.approx(exact, rel=1e-6)


def test_both_variants_match_the_sources_written_out():
    """The folded t >= 0 evaluation equals the paper's full-grid trapezoid (Algorithm 1) and the
    repository's [0, t_max] doubled-weight sum, written out here independently."""
    g = _gen(4)
    z = torch.randn(96, 12, generator=g).double() * 1.3 + 0.2
    a = slice_directions(12, 40, step=7).double()
    p = z @ a  # [N, M]

    def sq_err(t):
        x_t = p[..., None] * t
        phi = torch.exp(-t.square() / 2)
        return (x_t.cos().mean(0) - phi).square() + x_t.sin().mean(0).square()  # [M, T]

    t = torch.linspace(-5, 5, 17, dtype=torch.float64)
    paper = torch.trapezoid(sq_err(t) * torch.exp(-t.square() / 2), t, dim=-1) * len(z)
    t = torch.linspace(0, 3, 17, dtype=torch.float64)
    w = torch.full((17,), 2 * 3 / 16, dtype=torch.float64)
    w[[0, -1]] = 3 / 16
    repo = (sq_err(t) @ (w * torch.exp(-t.square() / 2))) * len(z)
    for q, ref in (("paper", paper), ("repo", repo)):
        got = sigreg_loss(z, a, quadrature=q, reduction="none")
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(epps_pulley(p, quadrature=q), ref, rtol=1e-12, atol=1e-12)
        assert float(sigreg_loss(z, a, quadrature=q)) == pytest.approx(float(ref.mean()), rel=1e-12)
    # an even number of paper points has no node at 0 and folds as well
    t, _ = epps_pulley_quadrature("paper", num_points=16)
    assert len(t) == 8 and float(t.min()) > 0


def test_views_are_tested_one_by_one_with_the_same_slices():
    g = _gen(5)
    z = torch.randn(3, 64, 8, generator=g)
    m = SIGReg(num_slices=16, reduction="none")
    per_view = m(z, step=2)
    assert per_view.shape == (3, 16)
    for v in range(3):
        torch.testing.assert_close(per_view[v], m(z[v], step=2))
    torch.testing.assert_close(SIGReg(num_slices=16)(z, step=2), per_view.mean())


# ----------------------------------------------------------------------------- slices


def test_same_step_same_slices_other_step_other_slices():
    a, b, c = (slice_directions(32, 64, seed=0, step=s) for s in (5, 5, 6))
    assert a.shape == (32, 64) and a.dtype == torch.float32
    torch.testing.assert_close(a.norm(dim=0), torch.ones(64))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert not torch.allclose(a, slice_directions(32, 64, seed=1, step=5))
    m = SIGReg(num_slices=64)
    z = torch.randn(128, 32, generator=_gen(6))
    torch.testing.assert_close(m.directions(32, 5), a)
    assert float(m(z, step=5)) == float(m(z, step=5)) != float(m(z, step=6))
    # a generator overrides the step
    g1, g2 = _gen(11), _gen(11)
    assert float(m(z, generator=g1)) == float(m(z, generator=g2))


def test_without_a_step_the_call_counter_stands_in():
    z = torch.randn(64, 8, generator=_gen(7))
    m = SIGReg(num_slices=16)
    first, second = float(m(z)), float(m(z))
    assert m.calls == 2
    assert first == float(m(z, step=0)) and second == float(m(z, step=1)) and first != second
    with pytest.raises(ValueError, match="step"):
        slice_directions(8, 4)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="quadrature"):
        SIGReg(quadrature="simpson")
    with pytest.raises(ValueError, match="num_points"):
        SIGReg(num_points=1)
    with pytest.raises(ValueError, match="t_max"):
        SIGReg(t_max=0)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        SIGReg()(torch.zeros(4), step=0)
    with pytest.raises(ValueError, match="directions"):
        sigreg_loss(torch.zeros(4, 3), torch.zeros(2, 5))


# ----------------------------------------------------------------------------- precision


def test_bf16_autocast_and_large_norms_stay_finite_in_float32():
    g = _gen(8)
    lin = torch.nn.Linear(16, 16)
    x = torch.randn(64, 16, generator=g) * 1e4
    m = SIGReg(num_slices=128)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = lin(x) * 1e3  # bf16, norms about 1e7
        assert z.dtype == torch.bfloat16
        loss = m(z, step=0)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in lin.parameters())
    # one dimension, bf16 input (the case of lejepa PR #40): unit slices, a finite value
    z1 = torch.randn(2, 64, 1, generator=g).bfloat16().requires_grad_()
    out = SIGReg(num_slices=1024)(z1, step=5433)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    out.backward()
    assert torch.isfinite(z1.grad).all()
    # float64 stays float64; a bf16-cast module keeps its float64 nodes
    assert m(torch.randn(32, 16, generator=g).double(), step=0).dtype == torch.float64
    assert m.to(torch.bfloat16).t.dtype == torch.float64


def test_bf16_value_is_close_to_the_float32_value():
    z = torch.randn(256, 16, generator=_gen(9))
    m = SIGReg(num_slices=64)
    ref = float(m(z, step=3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = float(m(z.bfloat16(), step=3))
    assert got == pytest.approx(ref, rel=0.05)


# ----------------------------------------------------------------------------- optimisation


def test_gradient_descent_on_free_points_makes_them_isotropic():
    """Adam on 512 free points in D=8, starting anisotropic (covariance eigenvalues 0.25..2.4)
    and off-centre: SIGReg alone brings the covariance to I and the mean to 0.

    The start keeps the points within a few units of the centre: the statistic's gradient on a
    point far out (|p| >> 3 on most slices) is several times smaller than on the bulk (the
    Gaussian window), so far tails are pulled in slowly."""
    g = _gen(10)
    scale = torch.tensor([1.6, 1.4, 1.2, 1.0, 0.8, 0.7, 0.6, 0.5])
    z0 = torch.randn(512, 8, generator=g) * scale + torch.tensor([1.0, -0.5] + [0.0] * 6)
    eig0 = torch.linalg.eigvalsh(torch.cov(z0.T))
    assert float(eig0.min()) < 0.3 and float(eig0.max()) > 2.0
    z = z0.clone().requires_grad_()
    m = SIGReg(num_slices=64)
    opt = torch.optim.Adam([z], lr=0.02)
    start = float(m(z0, step=0))
    for step in range(300):
        loss = m(z, step=step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        eig = torch.linalg.eigvalsh(torch.cov(z.T))
        mean = z.mean(0)
        end = float(SIGReg(num_slices=256)(z, step=10**6))  # fresh slices
    print(f"start {start:.2f}, end {end:.3f}; eigenvalues {eig.tolist()}; |mean| {mean.norm():.3f}")
    assert start > 10 and end < 1.2
    assert float(eig.min()) > 0.7 and float(eig.max()) < 1.3
    assert float(mean.norm()) < 0.15


# ----------------------------------------------------------------------------- distributed

N_GLOBAL, N_RANK0, D, M, STEP = 24, 9, 6, 32, 3  # unequal local batches: 9 and 15 rows


def _global_data():
    g = _gen(12)
    z = torch.randn(N_GLOBAL, D, generator=g) * torch.linspace(0.5, 2.0, D) + 0.3
    x = torch.randn(2, N_GLOBAL, D, generator=g)  # two views, inputs of a linear layer
    lin = torch.nn.Linear(D, 5)
    with torch.no_grad():
        for p, v in zip(lin.parameters(), torch.randn(5 * D + 5, generator=g).split([5 * D, 5])):
            p.copy_(v.view_as(p))
    return z, x, lin


def _rows(rank: int) -> slice:
    return slice(0, N_RANK0) if rank == 0 else slice(N_RANK0, N_GLOBAL)


def _losses(z, x, lin, counter_calls: bool):
    """The statistic of free points z ([N, D]) and of a linear layer's outputs on two views
    ([2, N, 5]); the third value is the first call of a module without step (counter 0)."""
    m = SIGReg(num_slices=M)
    out = {"z": m(z, step=STEP), "views": SIGReg(num_slices=M, quadrature="repo")(lin(x), step=STEP)}
    if counter_calls:
        out["counter"] = SIGReg(num_slices=M)(z)
    return out


def _worker(out_path: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    z, x, lin = _global_data()
    rows = _rows(rank)
    z_local = z[rows].clone().requires_grad_()
    ddp = DistributedDataParallel(lin)
    losses = _losses(z_local, x[:, rows], ddp, counter_calls=True)
    (losses["z"] + losses["views"]).backward()
    result = {
        "world": world,
        "losses": {k: v.detach() for k, v in losses.items()},
        "z_grad": z_local.grad,
        "param_grads": [p.grad for p in lin.parameters()],
    }
    torch.save(result, f"{out_path}.{rank}")
    dist.barrier()
    del ddp
    dist.destroy_process_group()


@pytest.mark.distributed
def test_two_processes_give_the_global_batch_statistic_and_gradient(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    env["OMP_NUM_THREADS"] = "1"
    out = tmp_path / "result"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(Path(__file__)), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    ranks = [torch.load(f"{out}.{r}", weights_only=True) for r in range(2)]

    # one process, the concatenated global batch
    z, x, lin = _global_data()
    z = z.clone().requires_grad_()
    ref = _losses(z, x, lin, counter_calls=True)
    (ref["z"] + ref["views"]).backward()
    for res in ranks:
        assert res["world"] == 2
        for k in ("z", "views", "counter"):
            torch.testing.assert_close(res["losses"][k], ref[k].detach(), rtol=1e-5, atol=1e-5, msg=k)
        # DDP averages the parameter gradients: the global-batch gradient
        for got, want in zip(res["param_grads"], (p.grad for p in lin.parameters())):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # each rank's gradient on its own rows is world_size x the global gradient (which DDP's
    # averaging divides back); the rows of both ranks together give the whole gradient
    z_grad = torch.cat([ranks[0]["z_grad"], ranks[1]["z_grad"]]) / 2
    torch.testing.assert_close(z_grad, z.grad, rtol=1e-5, atol=1e-5)


def test_a_one_process_group_changes_nothing(tmp_path, monkeypatch):
    import torch.distributed as dist

    for k in DIST_ENV:
        monkeypatch.delenv(k, raising=False)
    z = torch.randn(32, 8, generator=_gen(13))
    before = float(SIGReg(num_slices=16)(z, step=1))
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert float(SIGReg(num_slices=16)(z, step=1)) == before
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    _worker(sys.argv[1])
