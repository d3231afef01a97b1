"""`--resume` never loses progress, on the real tiny I-JEPA: checkpoint files that all fail stop
the run before anything is touched (each file named with its reason), a stray file that is not
a run checkpoint is skipped, and `--restart` starts over on purpose, keeping the old files."""

from __future__ import annotations

import builtins
import logging
import os
from pathlib import Path

import pytest
import torch
from jepa_core import checkpoint as ckpt
from jepa_core.checkpoint import CheckpointError
from jepa_core.cli import main
from jepa_core.config import ConfigError
from jepa_core.run import pretrain

pytestmark = pytest.mark.fault

TINY = [
    "model.encoder=custom", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
    "model.pred_depth=1", "model.pred_emb_dim=16", "model.patch_size=4",
    "data.batch_size=16", "data.num_workers=0", "data.pin_memory=false",
    "train.device=cpu", "train.num_threads=1", "train.progress=false", "eval.enabled=false",
    "train.checkpoint_every=2", "train.log_every=1", "train.keep_checkpoints=3",
]


def _run(tmp_path: Path, steps: int = 4) -> Path:
    """A finished run: checkpoints/step-2.pt, step-4.pt, latest.pt (= step-4), metrics.csv."""
    run = tmp_path / "run"
    pretrain("ijepa", overrides=TINY + [f"optim.max_steps={steps}"], run_dir=run)
    return run


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def _metric_steps(path: Path) -> list[int]:
    import csv

    with open(path, newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def _corrupt_all(run: Path) -> None:
    ck = run / "checkpoints"
    (ck / "latest.pt").unlink()  # a hard link to step-4.pt: give it its own (empty) contents
    (ck / "latest.pt").write_bytes(b"")
    data = (ck / "step-4.pt").read_bytes()
    (ck / "step-4.pt").write_bytes(data[: len(data) // 2])  # truncated
    (ck / "step-2.pt").write_bytes(b"\x00garbage" * 10)


def test_all_checkpoints_corrupt_stops_before_touching_anything(tmp_path):
    run = _run(tmp_path)
    _corrupt_all(run)
    before = _snapshot(run)
    with pytest.raises(CheckpointError) as ei:
        # another max_steps: a rewritten config.yaml would differ
        pretrain("ijepa", overrides=TINY + ["optim.max_steps=6"], run_dir=run, resume=True)
    msg = str(ei.value)
    for name in ("latest.pt", "step-4.pt", "step-2.pt"):
        assert f"{name}: corrupt or truncated (" in msg, msg
    assert "empty file" in msg and "--restart" in msg
    assert _snapshot(run) == before  # no training, no metrics.csv/config.yaml rewrite, no new files


@pytest.mark.parametrize("how", ["chmod", "open-raises"])
def test_permission_denied_is_reported_as_unreadable(tmp_path, monkeypatch, how):
    run = _run(tmp_path)
    files = sorted((run / "checkpoints").glob("*.pt"))
    before = _snapshot(run)
    if how == "chmod":
        for p in files:
            p.chmod(0)
        if any(os.access(p, os.R_OK) for p in files):
            for p in files:
                p.chmod(0o644)
            pytest.skip("chmod 000 does not stop this user (root) from reading")
    else:  # what a file we may not read does, also when the tests run as root
        real_open = builtins.open

        def deny(file, *args, **kwargs):
            if Path(str(file)).parent == run / "checkpoints":
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(ckpt, "open", deny, raising=False)
    try:
        with pytest.raises(CheckpointError) as ei:
            pretrain("ijepa", overrides=TINY + ["optim.max_steps=6"], run_dir=run, resume=True)
    finally:
        for p in files:
            p.chmod(0o644)
    msg = str(ei.value)
    for p in files:
        assert f"{p.name}: unreadable (PermissionError: " in msg, msg
    assert "corrupt" not in msg
    assert _snapshot(run) == before


def test_stray_file_without_model_is_skipped_and_the_newest_valid_one_used(tmp_path, caplog):
    run = _run(tmp_path)
    torch.save({"step": 999, "note": "not a run checkpoint"}, run / "checkpoints" / "step-999.pt")
    caplog.set_level(logging.INFO)
    resumed = pretrain("ijepa", overrides=TINY + ["optim.max_steps=6"], run_dir=run, resume=True)
    assert resumed["steps"] == 6
    assert "step-999.pt: not a jepa run checkpoint (missing model/optimizer)" in caplog.text
    assert any("resumed from" in r.getMessage() and r.getMessage().endswith("at step 4") for r in caplog.records)
    assert _metric_steps(run / "metrics.csv") == [1, 2, 3, 4, 5, 6]
    assert ckpt.load(run / "checkpoints" / "latest.pt")["step"] == 6


def test_restart_moves_the_old_run_aside_and_trains_from_zero(tmp_path):
    run = _run(tmp_path)
    before = _snapshot(run)
    with pytest.raises(ConfigError, match="--restart"):
        pretrain("ijepa", overrides=TINY + ["optim.max_steps=2"], run_dir=run)
    with pytest.raises(ConfigError, match="--resume and --restart"):
        pretrain("ijepa", overrides=TINY + ["optim.max_steps=2"], run_dir=run, resume=True, restart=True)
    assert _snapshot(run) == before
    summary = pretrain("ijepa", overrides=TINY + ["optim.max_steps=2"], run_dir=run, restart=True)
    assert summary["steps"] == 2
    (prev,) = run.glob("previous-*")
    for rel, data in before.items():
        if rel.startswith("checkpoints/") or rel == "metrics.csv":
            assert (prev / rel).read_bytes() == data, rel
    assert _metric_steps(run / "metrics.csv") == [1, 2]
    assert sorted(p.name for p in (run / "checkpoints").glob("*.pt")) == ["latest.pt", "step-2.pt"]
    assert ckpt.load(run / "checkpoints" / "latest.pt")["step"] == 2


def test_cli_prints_one_error_line_and_exits_2(tmp_path, capsys):
    run = _run(tmp_path)
    _corrupt_all(run)
    before = _snapshot(run)
    rc = main(["pretrain", "ijepa", *TINY, "optim.max_steps=6", "--run-dir", str(run), "--resume"])
    err = capsys.readouterr().err
    assert rc == 2
    lines = [line for line in err.splitlines() if line.startswith("jepa: error:")]
    assert len(lines) == 1, err
    assert "step-2.pt: corrupt or truncated" in lines[0] and "--restart" in lines[0]
    assert _snapshot(run) == before
    with pytest.raises(SystemExit) as ei:  # both flags: a usage error
        main(["pretrain", "ijepa", *TINY, "--run-dir", str(run), "--resume", "--restart"])
    assert ei.value.code == 2
    assert "--resume and --restart exclude each other" in capsys.readouterr().err
