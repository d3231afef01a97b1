"""Checkpoint writing and safe loading."""

from __future__ import annotations

import os

import pytest
import torch
from jepa_core.checkpoint import CheckpointError, atomic_save, latest_valid, load, step_checkpoints


class _Custom:
    def __init__(self):
        self.x = 1


def _ckpt(step):
    return {"step": step, "model": {"w": torch.arange(6.0).reshape(2, 3) + step}, "meta": [1, "a"]}


def test_atomic_save_round_trip(tmp_path):
    p = atomic_save(_ckpt(3), tmp_path / "sub" / "a.pt")
    assert p == tmp_path / "sub" / "a.pt"
    obj = load(p)
    assert obj["step"] == 3 and obj["meta"] == [1, "a"]
    assert torch.equal(obj["model"]["w"], _ckpt(3)["model"]["w"])
    # no temporary files left behind, and overwriting replaces the content
    atomic_save(_ckpt(4), p)
    assert load(p)["step"] == 4
    assert sorted(os.listdir(tmp_path / "sub")) == ["a.pt"]


def test_atomic_save_failure_keeps_old_file(tmp_path):
    p = atomic_save(_ckpt(1), tmp_path / "a.pt")

    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_save({"x": Boom()}, p)
    assert load(p)["step"] == 1
    assert os.listdir(tmp_path) == ["a.pt"]


def test_load_random_bytes(tmp_path):
    p = tmp_path / "junk.pt"
    p.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError) as ei:
        load(p)
    assert str(p) in str(ei.value)


def test_load_truncated(tmp_path):
    p = atomic_save(_ckpt(2), tmp_path / "t.pt")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as ei:
        load(p)
    assert str(p) in str(ei.value)


def test_load_missing(tmp_path):
    p = tmp_path / "missing.pt"
    with pytest.raises(CheckpointError) as ei:
        load(p)
    assert str(p) in str(ei.value)


def test_load_refuses_pickled_objects(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"obj": _Custom()}, p)
    with pytest.raises(CheckpointError) as ei:
        load(p)
    assert str(p) in str(ei.value)


def test_load_non_dict(tmp_path):
    p = tmp_path / "t.pt"
    torch.save(torch.zeros(2), p)
    with pytest.raises(CheckpointError, match="not a checkpoint dict"):
        load(p)


def test_latest_valid_skips_corrupt_latest(tmp_path):
    for s in (10, 20, 30):
        atomic_save(_ckpt(s), tmp_path / f"step-{s}.pt")
    (tmp_path / "latest.pt").write_bytes(b"not a checkpoint")
    path, obj = latest_valid(tmp_path)
    assert path == tmp_path / "step-30.pt" and obj["step"] == 30
    # the newest step file corrupt too: the next one
    (tmp_path / "step-30.pt").write_bytes(b"\x00" * 10)
    path, obj = latest_valid(tmp_path)
    assert path == tmp_path / "step-20.pt" and obj["step"] == 20


def test_latest_valid_prefers_latest_and_handles_empty(tmp_path):
    assert latest_valid(tmp_path) is None
    assert latest_valid(tmp_path / "nope") is None
    atomic_save(_ckpt(5), tmp_path / "step-5.pt")
    atomic_save(_ckpt(7), tmp_path / "latest.pt")
    path, obj = latest_valid(tmp_path)
    assert path == tmp_path / "latest.pt" and obj["step"] == 7


def test_step_checkpoints_numeric_order(tmp_path):
    for s in (100, 9, 20):
        atomic_save(_ckpt(s), tmp_path / f"step-{s}.pt")
    (tmp_path / "step-x.pt").write_bytes(b"")
    (tmp_path / "other.pt").write_bytes(b"")
    assert [s for s, _ in step_checkpoints(tmp_path)] == [9, 20, 100]


def test_latest_valid_picks_highest_step(tmp_path):
    # a stale latest.pt (older step than a step file) loses; on a tie latest.pt wins
    atomic_save(_ckpt(7), tmp_path / "latest.pt")
    atomic_save(_ckpt(12), tmp_path / "step-12.pt")
    atomic_save(_ckpt(5), tmp_path / "step-5.pt")
    path, obj = latest_valid(tmp_path)
    assert path == tmp_path / "step-12.pt" and obj["step"] == 12
    atomic_save(_ckpt(12), tmp_path / "latest.pt")
    assert latest_valid(tmp_path)[0] == tmp_path / "latest.pt"


@pytest.mark.fault
def test_atomic_save_gives_ordinary_file_permissions(tmp_path):
    """Checkpoints are ordinary files (0644 under umask 022), not mkstemp's 0600."""
    old = os.umask(0o022)
    try:
        path = atomic_save({"x": torch.zeros(2)}, tmp_path / "a.pt")
        assert path.stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        assert atomic_save({"x": torch.zeros(2)}, tmp_path / "b.pt").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


@pytest.mark.fault
def test_metrics_rewrite_on_resume_is_atomic(tmp_path, monkeypatch):
    """A failure (a kill, a full disk) while metrics.csv is cut back to the resume step leaves
    the old file whole, not an empty or half-written one."""
    import csv

    from jepa_core.trainer import MetricsWriter

    path = tmp_path / "metrics.csv"
    path.write_text("step,loss\n" + "".join(f"{i},{1 / i}\n" for i in range(1, 6)))
    before = path.read_bytes()

    def fail(self, rows):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(csv.DictWriter, "writerows", fail)
    with pytest.raises(OSError):
        MetricsWriter(tmp_path, start_step=3)
    assert path.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))
    monkeypatch.undo()
    MetricsWriter(tmp_path, start_step=3).close()
    assert path.read_text().splitlines() == ["step,loss", "1,1.0", "2,0.5", "3,0.3333333333333333"]
    assert not list(tmp_path.glob(".*.tmp"))
