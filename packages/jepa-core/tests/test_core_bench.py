"""The benchmark helpers and runner (jepa_core.benchmark) and the fast mask kernels they measure.

The method cases are tested where they live (jepa-image, jepa-video); the official comparison
in benchmarks/tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from jepa_core import benchmark as bench
from jepa_core.masks.multiblock import _paint_blocks, block_masks, first_k
from jepa_core.optim import adamw_kwargs, maybe_compile


def _reference_first_k(masks: torch.Tensor, k: int) -> torch.Tensor:
    return torch.argsort((~masks).to(torch.uint8), dim=-1, stable=True)[:, :k]


@pytest.mark.parametrize("density", [0.05, 0.5, 0.95])
def test_first_k_equals_stable_argsort(density):
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(37, 211, generator=g) < density
    masks[:, :3] = True  # at least 3 per row
    k = int(masks.sum(1).min())
    ref = _reference_first_k(masks, k)
    for out in (first_k(masks, k), first_k(masks.numpy(), k), first_k(masks, k, masks.sum(1)),
                first_k(masks, 2)):
        assert out.dtype == torch.long
        torch.testing.assert_close(out, ref[:, : out.shape[1]], rtol=0, atol=0)
    assert first_k(masks, 0).shape == (37, 0)


def test_block_masks_table_equals_painting():
    g = torch.Generator().manual_seed(1)
    for n_h, n_w, h, w in ((14, 14, 5, 7), (16, 12, 16, 1), (8, 8, 1, 1)):
        top = torch.randint(0, n_h - h + 1, (6, 4), generator=g)
        left = torch.randint(0, n_w - w + 1, (6, 4), generator=g)
        out = block_masks(top, left, h, w, n_h, n_w)
        assert torch.equal(out, _paint_blocks(top, left, h, w, n_h, n_w))
        assert (out.sum(-1) == h * w).all()


def test_interleaved_medians_and_order():
    calls = []
    t, speed = bench.interleaved([lambda: calls.append("a"), lambda: calls.append("b")], warmup=1, repeats=4)
    assert len(t) == 2 and all(x >= 0 for x in t) and speed > 0
    # warm-up a b, then rounds alternate which goes first
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
    t, speed = bench.interleaved([lambda: None], warmup=0, repeats=3)
    assert len(t) == 1 and speed is None


def test_paired_speedup_is_the_median_of_per_round_ratios():
    import time

    # The first function's duration drifts upwards 4x over the run; the second always takes twice
    # as long as the first did in its round: the per-round ratio stays near 2 (2, or 2 / 1.15 when
    # the second runs first), while the drift itself is 4x.
    state = {"d": 0.010}  # 10 ms: sleep overshoot on a loaded machine stays small beside it

    def first():
        time.sleep(state["d"])

    def second():
        time.sleep(2 * state["d"])
        state["d"] *= 1.15

    (t1, t2), speed = bench.interleaved([first, second], warmup=0, repeats=11)
    assert 1.4 < speed < 2.6  # near 2 although the durations drift 4x
    assert t2 > t1
    rows = [bench.Row("x", 0.010, 0.030, speedup=2.5)]
    assert "| x | 10.00 ms | 30.00 ms | 0.400 | **2.50x** |" in bench.table(rows)


def test_peak_memory_sees_a_temporary_allocation():
    def fn():
        x = torch.ones(4 << 20)  # 16 MiB, freed on return
        return float(x[0])

    peak = bench.peak_memory(fn, torch.device("cpu"))
    assert 16 * 2**20 <= peak < 64 * 2**20


def test_table_reports_ratio_and_speedup():
    rows = [bench.Row("x", 0.010, 0.030, mem_ours=2**20, mem_theirs=2 * 2**20), bench.Row("y", 0.5)]
    text = bench.table(rows)
    assert "| x | 10.00 ms | 30.00 ms | 0.333 | **3.00x** | 1 MiB | 2 MiB |" in text
    assert "| y | 500.00 ms |  |  |  |" in text


def test_single_thread_restores_the_thread_count():
    n = torch.get_num_threads()
    with bench.single_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == n


@pytest.fixture
def local_cases(monkeypatch):
    """An empty in-process registry, so that registered cases do not leak into other tests."""
    monkeypatch.setattr(bench, "_LOCAL", [])
    return bench


def _case(rows_seen: list):
    def fn(ctx):
        rows_seen.append(ctx)
        t, _ = bench.interleaved([lambda: None], ctx.warmup, ctx.repeats)
        return [bench.Row("no-op", t[0], note=f"sizes {','.join(ctx.sizes)}")]

    return fn


def test_registered_cases_run_by_name_and_default(local_cases, capsys):
    seen = []
    fn = _case(seen)
    extra = bench.BenchCase("extra", fn, default=False)
    local_cases.register(bench.BenchCase("noop", fn), extra)
    local_cases.register(extra)  # registering twice keeps one
    known = local_cases.cases()
    assert known["noop"][0].fn is fn and known["extra"] == [extra]
    assert local_cases.main(["--quick"]) == 0  # default cases only
    out = capsys.readouterr().out
    assert "| no-op |" in out and "sizes tiny" in out and len(seen) == 1
    assert "torch " + torch.__version__ in out and "Command: `jepa bench`" in out
    assert seen[0].repeats == 3 and seen[0].methods == () and seen[0].wants("anything")
    local_cases.main(["--cases", "noop,extra", "--repeats", "1", "--methods", "ijepa", "--sizes", "a,b"])
    assert len(seen) == 3 and seen[1].repeats == 1 and seen[1].sizes == ("a", "b")
    assert seen[1].wants("ijepa") and not seen[1].wants("vjepa")
    with pytest.raises(SystemExit, match="unknown case 'nope'"):
        local_cases.main(["--cases", "nope"])


def test_step_row_times_two_steps_with_memory():
    ctx = bench.Context(repeats=2, warmup=0)
    ours = lambda: torch.ones(1 << 20).sum()  # noqa: E731  4 MiB
    theirs = lambda: torch.ones(2 << 20).sum()  # noqa: E731  8 MiB
    row = bench.step_row(ctx, "step", [ours, theirs], n_items=4)
    assert row.theirs is not None and row.speedup > 0 and row.mem_theirs > row.mem_ours >= 4 * 2**20
    assert row.note.endswith("samples/s")
    assert bench.step_row(ctx, "alone", [ours], 4).theirs is None


def test_train_step_runs_the_trainer_step_of_a_method():
    from jepa_core.method import JEPAMethod
    from jepa_core.target import EMATarget

    class Tiny(JEPAMethod):
        def __init__(self):
            super().__init__()
            self.encoder, self.predictor = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
            self.target_encoder = EMATarget(self.encoder)

        def forward(self, batch):
            return {"loss": (self.predictor(self.encoder(batch["x"])) - self.target_encoder(batch["x"])).square().mean()}

    torch.manual_seed(0)
    model = Tiny()
    before = [p.detach().clone() for p in model.target_encoder.parameters()]
    step = bench.train_step(model, {"x": torch.randn(8, 4)}, bench.Context())
    assert step().ndim == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.target_encoder.parameters()))


def test_jepa_bench_subcommand(local_cases, capsys):
    from jepa_core.cli import main

    local_cases.register(bench.BenchCase("noop", _case([])))
    assert main(["bench", "--cases", "noop", "--repeats", "1"]) == 0
    assert "| benchmark | ours (median) |" in capsys.readouterr().out


def test_help_and_list_do_not_import_the_bench_machinery():
    import subprocess
    import sys

    code = ("import contextlib, io, sys\nfrom jepa_core.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    main(['list'])\n    with contextlib.suppress(SystemExit):\n        main(['--help'])\n"
            "assert 'bench' in out.getvalue()\n"
            "print(sorted(m for m in sys.modules if m.startswith('jepa') and 'bench' in m))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_core_imports_no_modality_package():
    from pathlib import Path

    import jepa_core

    root = Path(jepa_core.__file__).parent
    bad = [f"{p.relative_to(root)}: {line.strip()}" for p in root.rglob("*.py")
           for line in p.read_text().splitlines()
           if any(f"{kw} jepa_{m}" in line for kw in ("import", "from") for m in ("image", "video", "eval"))]
    assert not bad, bad


def test_adamw_kwargs_and_compile_flag():
    assert adamw_kwargs("cpu") == {"fused": True}
    assert adamw_kwargs(torch.device("cuda", 0)) == {"fused": True}
    assert adamw_kwargs("meta") == {"foreach": True}
    net = torch.nn.Linear(2, 2)
    assert maybe_compile(net, False) is net
    assert maybe_compile(net, True) is not net  # compiled lazily, on the first call


def test_fused_adamw_matches_default():
    torch.manual_seed(0)
    a = torch.nn.Linear(8, 4)
    b = torch.nn.Linear(8, 4)
    b.load_state_dict(a.state_dict())
    oa = torch.optim.AdamW(a.parameters(), lr=1e-2, foreach=False)
    ob = torch.optim.AdamW(b.parameters(), lr=1e-2, **adamw_kwargs("cpu"))
    x = torch.randn(16, 8)
    for _ in range(3):
        for m, o in ((a, oa), (b, ob)):
            m(x).square().mean().backward()
            o.step()
            o.zero_grad()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)


def test_numpy_is_the_cpu_backend_of_first_k():
    m = np.zeros((2, 5), dtype=bool)
    m[0, [1, 3]] = True
    m[1, [0, 4]] = True
    assert first_k(m, 2).tolist() == [[1, 3], [0, 4]]
