"""RankMe, LiDAR, feature spread and the collapse flag on features with known structure, and the
CollapseMonitor callback inside a real jepa_core Trainer."""

from __future__ import annotations

import csv
import math
from types import SimpleNamespace

import pytest
import torch
from jepa_core.config import OptimConfig, TrainConfig
from jepa_core.nn import VisionTransformer
from jepa_core.testing import LinearJEPA, PointsDataset, collate_points
from jepa_core.trainer import Trainer
from jepa_eval.monitors import CollapseMonitor, collapse_report, feature_std, lidar, rankme
from torch import nn
from torch.utils.data import TensorDataset


def test_rankme_isotropic_is_full_and_rank_one_is_one():
    g = torch.Generator().manual_seed(0)
    D = 64
    iso = torch.randn(4096, D, generator=g)
    assert 0.9 * D < rankme(iso) <= D
    rank_one = torch.randn(4096, 1, generator=g) * torch.randn(1, D, generator=g)
    assert rankme(rank_one) == pytest.approx(1.0, abs=0.01)
    # k equal directions -> ~k
    basis = torch.linalg.qr(torch.randn(D, 8, generator=g))[0].T  # 8 orthonormal rows
    rank8 = torch.randn(4096, 8, generator=g) @ basis
    assert 7.5 < rankme(rank8) < 8.01
    # tokens [N, T, D] are mean-pooled first
    assert rankme(iso.reshape(1024, 4, D)) == pytest.approx(rankme(iso.reshape(1024, 4, D).mean(1)))


def test_lidar_separated_surrogates_high_collapsed_one():
    g = torch.Generator().manual_seed(0)
    n, q, D = 128, 4, 16
    means = torch.randn(n, 1, D, generator=g) * 5.0
    separated = means + 0.1 * torch.randn(n, q, D, generator=g)
    assert lidar(separated) > 0.8 * D
    collapsed = torch.ones(n, q, D) * torch.randn(D, generator=g)
    assert lidar(collapsed) == pytest.approx(1.0, abs=1e-3)
    # collapsed onto one line: one discriminative direction
    line = torch.randn(n, q, 1, generator=g) * torch.randn(D, generator=g)
    assert lidar(line) == pytest.approx(1.0, abs=0.05)
    # classes separated along 4 directions only, views spread in all D: LiDAR counts the 4
    # discriminative directions, where the plain rank of the embeddings would see D
    basis = torch.linalg.qr(torch.randn(D, 4, generator=g))[0].T
    sub = (torch.randn(n, 1, 4, generator=g) * 5.0) @ basis + 0.1 * torch.randn(n, q, D, generator=g)
    assert lidar(sub) == pytest.approx(4.0, abs=0.3)
    assert rankme(sub.reshape(n * q, D) - sub.mean((0, 1))) > 4.5
    with pytest.raises(ValueError):
        lidar(torch.randn(8, D))


def test_feature_std_isotropic_and_constant():
    D = 32
    std, mean = feature_std(torch.randn(4096, D, generator=torch.Generator().manual_seed(0)))
    assert std.shape == (D,)
    assert mean == pytest.approx(1 / math.sqrt(D), rel=0.05)
    _, const = feature_std(torch.ones(100, D) * 3.0)
    assert const == pytest.approx(0.0, abs=1e-6)


class Constant(nn.Module):
    """A collapsed encoder: the same tokens whatever the input."""

    def __init__(self, n=4, d=32):
        super().__init__()
        self.tokens = nn.Parameter(torch.randn(1, n, d))

    def forward(self, x):
        return self.tokens.expand(x.shape[0], -1, -1)


def test_collapsed_encoder_is_flagged_and_random_vit_is_not():
    torch.manual_seed(0)
    images = torch.randn(256, 3, 16, 16)
    with torch.no_grad():
        rep_c = collapse_report(Constant()(images))
        vit = VisionTransformer(img_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=2, num_heads=4).eval()
        rep_v = collapse_report(vit(images))
    assert rep_c["collapsed"] is True
    assert rep_c["rankme"] < 1.01 and rep_c["feature_std_ratio"] < 1e-4
    assert rep_v["collapsed"] is False
    assert rep_v["rankme"] > 2 and rep_v["feature_std_ratio"] > 0.05
    assert set(rep_v) >= {"rankme", "rankme_ratio", "feature_std_mean", "feature_std_ratio", "collapsed"}
    assert rep_v["dim"] == 32 and rep_v["num_samples"] == 256


# ------------------------------------------------------------------------------------------------
# The callback in a real Trainer (jepa_core.testing's tiny method)


def _labeled(n=128, d=4):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(1))
    return TensorDataset(x, (x[:, 0] > 0).long())


def _fit(tmp_path, callbacks):
    torch.manual_seed(0)
    model = LinearJEPA()
    oc = OptimConfig(epochs=2, warmup=0.5, start_lr=0.01, lr=0.1, final_lr=0.001, ema=(0.9, 1.0))
    tc = TrainConfig(device="cpu", progress=False, log_every=1, checkpoint_every=100, num_threads=1)
    tr = Trainer(model, PointsDataset(), collate_points, oc, tc, tmp_path / "run", batch_size=8, callbacks=callbacks)
    return model, tr.fit()


def test_collapse_monitor_in_trainer_writes_monitors_csv(tmp_path):
    mon = CollapseMonitor(_labeled(), every_n_steps=4, num_samples=100, labels=True)
    model, res = _fit(tmp_path / "a", [mon])
    assert res.steps == 16
    # first logged step, every multiple of 4, and the last step
    rows = list(csv.DictReader(open(tmp_path / "a" / "run" / "monitors.csv")))
    assert [int(r["step"]) for r in rows] == [1, 4, 8, 12, 16]
    assert list(rows[0]) == ["step", "rankme", "rankme_ratio", "feature_std", "feature_std_ratio",
                             "collapsed", "online_probe_acc"]
    for r, h in zip(rows, mon.history):
        assert float(r["rankme"]) == pytest.approx(h["rankme"])
        assert 1.0 <= h["rankme"] <= 4.0 and h["collapsed"] == 0
        assert h["online_probe_acc"] >= 80.0  # a linear map of x keeps sign(x0) linearly readable
    # the same values were added to the logged rows (FitResult.history) ...
    by_step = {r["step"]: r for r in res.history}
    assert by_step[8]["rankme"] == pytest.approx(mon.history[2]["rankme"])
    assert "rankme" not in by_step[2]
    # ... but metrics.csv keeps its columns (it is written before the callbacks run)
    header = next(csv.reader(open(tmp_path / "a" / "run" / "metrics.csv")))
    assert "rankme" not in header and "loss" in header
    # the last values are those of the final EMA target encoder
    final = mon.compute(model.eval_encoder())
    assert final["rankme"] == pytest.approx(mon.history[-1]["rankme"])


def test_collapse_monitor_does_not_change_training(tmp_path):
    a, _ = _fit(tmp_path / "a", [CollapseMonitor(_labeled(), every_n_steps=2, num_samples=64, labels=True)])
    b, _ = _fit(tmp_path / "b", [])
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_collapse_monitor_flags_a_collapsed_encoder_and_drops_rows_past_resume(tmp_path, caplog):
    run = tmp_path / "run"
    run.mkdir()
    with open(run / "monitors.csv", "w") as f:  # a previous run that went to step 20
        f.write("step,rankme,rankme_ratio,feature_std,feature_std_ratio,collapsed\n")
        for s in (5, 10, 15, 20):
            f.write(f"{s},3,0.5,0.1,0.5,0\n")
    model = SimpleNamespace(eval_encoder=lambda: Constant(), encoder=None)
    trainer = SimpleNamespace(model=model, device=torch.device("cpu"), run_dir=run, total_steps=30,
                              dist=SimpleNamespace(is_main=True))
    mon = CollapseMonitor(TensorDataset(torch.randn(50, 3, 8, 8)), every_n_steps=5, num_samples=32)
    row = {"step": 11}
    with caplog.at_level("WARNING"):
        mon(trainer, 11, row)  # resumed at step 10: the first call after resume
    assert row["collapsed"] == 1 and "collapsed" in caplog.text
    mon(trainer, 12, {})  # not due (no multiple of 5 passed)
    mon(trainer, 15, {})
    steps = [int(r["step"]) for r in csv.DictReader(open(run / "monitors.csv"))]
    assert steps == [5, 10, 11, 15]
