"""The benchmark harness (jepa_core.bench) and the fast mask kernels it measures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from jepa_core import bench
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
    t = bench.interleaved([lambda: calls.append("a"), lambda: calls.append("b")], warmup=1, repeats=4)
    assert len(t) == 2 and all(x >= 0 for x in t)
    # warm-up a b, then rounds alternate which goes first
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]


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

    (t1, t2), speed = bench.interleaved([first, second], warmup=0, repeats=11, paired=True)
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


def test_write_report_replaces_its_own_section(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nintro\n")
    args = bench.parser().parse_args(["--output", str(path)])
    bench.write_report(args, "first\n")
    bench.write_report(args, "second\n")
    text = path.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n")
    assert "second" in text and "first" not in text and text.count("bench:cpu-fp32:start") == 1


def test_cli_runs_a_case_without_writing(capsys):
    assert bench.main(["--cases", "masks", "--repeats", "1", "--no-write"]) == 0
    out = capsys.readouterr().out
    assert "I-JEPA multi-block masks" in out and "3-D multi-block masks" in out
    assert "torch " + torch.__version__ in out and "Command: `jepa bench`" in out


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


def test_jepa_bench_subcommand(capsys):
    from jepa_core.cli import main

    assert main(["bench", "--cases", "masks", "--repeats", "1", "--no-write"]) == 0
    assert "| benchmark | ours (median) |" in capsys.readouterr().out
