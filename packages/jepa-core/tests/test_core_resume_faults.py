"""Resume never loses progress (tiny synthetic method, in process): checkpoint files that all fail
raise before metrics.csv is touched, with each file's reason; unreadable is not corrupt; a file
without model/optimizer/step is skipped in favour of the newest valid one."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest
import torch
from jepa_core import checkpoint as ckpt
from jepa_core.checkpoint import RUN_KEYS, CheckpointError, atomic_save, latest_valid
from jepa_core.config import OptimConfig, TrainConfig
from jepa_core.testing import LinearJEPA, PointsDataset, collate_points
from jepa_core.trainer import Trainer

pytestmark = pytest.mark.fault


def _fit(tmp_path, max_steps, resume=False):
    torch.manual_seed(0)
    oc = OptimConfig(epochs=2, max_steps=max_steps)
    tc = TrainConfig(device="cpu", progress=False, log_every=1, checkpoint_every=2, num_threads=1)
    tr = Trainer(LinearJEPA(), PointsDataset(), collate_points, oc, tc, tmp_path / "run", batch_size=8)
    return tr, tr.fit(resume=resume)


def _deny(monkeypatch, folder: Path) -> None:
    real_open = builtins.open

    def deny(file, *args, **kwargs):
        if Path(str(file)).parent == folder:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(ckpt, "open", deny, raising=False)


def test_load_reports_permission_denied_as_unreadable(tmp_path, monkeypatch):
    p = atomic_save({"step": 1}, tmp_path / "step-1.pt")
    _deny(monkeypatch, tmp_path)
    with pytest.raises(CheckpointError) as ei:
        ckpt.load(p)
    assert ei.value.reason.startswith("unreadable (PermissionError: ")
    assert "permissions" in str(ei.value) and "corrupt" not in str(ei.value)


def test_latest_valid_skips_files_without_run_keys(tmp_path, caplog):
    atomic_save({"step": 4, "model": {}, "optimizer": {}}, tmp_path / "step-4.pt")
    atomic_save({"step": 999}, tmp_path / "step-999.pt")
    assert latest_valid(tmp_path)[0].name == "step-999.pt"  # no requirement: the old behaviour
    path, obj = latest_valid(tmp_path, required=RUN_KEYS)
    assert path.name == "step-4.pt" and obj["step"] == 4
    assert "step-999.pt: not a jepa run checkpoint (missing model/optimizer)" in caplog.text


def test_latest_valid_strict_lists_every_file(tmp_path, monkeypatch):
    assert latest_valid(tmp_path, strict=True) is None  # no checkpoint files: nothing to complain about
    (tmp_path / "latest.pt").write_bytes(b"")
    (tmp_path / "step-2.pt").write_bytes(b"\x00garbage")
    atomic_save({"step": 6}, tmp_path / "step-6.pt")
    atomic_save(torch.zeros(2), tmp_path / "step-8.pt")
    with pytest.raises(CheckpointError) as ei:
        latest_valid(tmp_path, required=RUN_KEYS, strict=True)
    msg = str(ei.value)
    assert "latest.pt: corrupt or truncated (empty file, 0 bytes)" in msg
    assert "step-2.pt: corrupt or truncated (" in msg
    assert "step-6.pt: not a jepa run checkpoint (missing model/optimizer)" in msg
    assert "step-8.pt: not a jepa run checkpoint (holds a Tensor" in msg
    assert "--restart" in msg and "\n" not in msg


def test_fit_resume_with_only_unusable_checkpoints_raises_and_keeps_metrics(tmp_path, monkeypatch):
    _fit(tmp_path, 4)
    run = tmp_path / "run"
    metrics = (run / "metrics.csv").read_bytes()
    ck = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}
    _deny(monkeypatch, run / "checkpoints")
    with pytest.raises(CheckpointError) as ei:
        _fit(tmp_path, 6, resume=True)
    for name in ("latest.pt", "step-2.pt", "step-4.pt"):
        assert f"{name}: unreadable (PermissionError: " in str(ei.value)
    assert (run / "metrics.csv").read_bytes() == metrics
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()} == ck


def test_fit_resume_falls_back_past_a_stray_file(tmp_path):
    _fit(tmp_path, 4)
    torch.save({"step": 999}, tmp_path / "run" / "checkpoints" / "step-999.pt")
    tr, res = _fit(tmp_path, 6, resume=True)
    assert res.steps == 6 and ckpt.load(tmp_path / "run" / "checkpoints" / "latest.pt")["step"] == 6
