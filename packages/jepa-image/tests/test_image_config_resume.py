"""`--resume` compares the new config with the run's, on the real tiny I-JEPA (issue #13): an
architecture change (model.*, data.image_size) is refused with one line naming each key old ->
new and touching nothing; other changes are allowed with a warning and recorded
(config-history.jsonl, config-effective.yaml) while config.yaml stays as the run started; an
identical config resumes silently; a checkpoint whose tensors do not fit is named, with the
parameter and the run folder, instead of a size-mismatch traceback."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from jepa_core import checkpoint as ckpt
from jepa_core.cli import main
from jepa_core.testing import one_error_line

pytestmark = pytest.mark.fault

TINY = [
    "model.encoder=custom", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
    "model.pred_depth=1", "model.pred_emb_dim=16", "model.patch_size=4",
    "data.batch_size=16", "data.num_workers=0", "data.pin_memory=false",
    "train.device=cpu", "train.num_threads=1", "train.progress=false", "eval.enabled=false",
    "train.checkpoint_every=2", "train.log_every=1",
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A tiny run of 2 steps (checkpoints/step-2.pt, latest.pt), made once and copied per test."""
    run = tmp_path_factory.mktemp("template") / "run"
    assert main(["pretrain", "ijepa", *TINY, "optim.max_steps=2", "--run-dir", str(run)]) == 0
    return run


@pytest.fixture
def run(finished_run, tmp_path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(finished_run, dest)
    return dest


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def _resume(run: Path, *overrides: str) -> int:
    return main(["pretrain", "ijepa", *TINY, *overrides, "--run-dir", str(run), "--resume"])


def _one_error_line(capsys) -> str:
    return one_error_line(capsys.readouterr().err)


def test_architecture_change_is_refused_naming_each_key_and_nothing_is_touched(run, capsys):
    before = _snapshot(run)
    rc = _resume(run, "optim.max_steps=4", "model.embed_dim=48", "model.depth=3", "data.image_size=32",
                 "optim.lr=0.002")
    assert rc == 2
    line = _one_error_line(capsys)
    assert f"--resume of {run}: the architecture differs from the run's" in line
    for change in ("model.embed_dim: 32 -> 48", "model.depth: 2 -> 3", "data.image_size: 28 -> 32"):
        assert change in line, line
    assert "optim.lr" not in line  # not an architecture key: only the refused ones are named
    assert "--restart" in line and "--run-dir" in line
    assert _snapshot(run) == before  # config.yaml, checkpoints, metrics.csv as they were
    # The way out it names: --restart keeps the old run's files aside, config included.
    assert main(["pretrain", "ijepa", *TINY, "optim.max_steps=2", "model.embed_dim=48", "--run-dir", str(run),
                 "--restart"]) == 0
    (prev,) = run.glob("previous-*")
    assert yaml.safe_load((prev / "config.yaml").read_text())["model"]["embed_dim"] == 32
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["embed_dim"] == 48


def test_other_changes_warn_are_recorded_and_config_yaml_is_kept(run, capsys, caplog):
    original = (run / "config.yaml").read_bytes()
    caplog.set_level(logging.INFO)
    # Identical config: resumes silently, no record.
    assert _resume(run, "optim.max_steps=2") == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "--resume" in r.getMessage()]
    assert not (run / "config-history.jsonl").exists() and not (run / "config-effective.yaml").exists()
    caplog.clear()
    # lr, seed and length changed, and activation checkpointing (same model, computed otherwise).
    changed = ["optim.max_steps=4", "optim.lr=0.002", "train.seed=3", "model.activation_checkpointing=true"]
    assert _resume(run, *changed) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "--resume" in r.getMessage()]
    assert len(warnings) == 1, warnings
    for change in ("optim.lr: 0.0005 -> 0.002", "train.seed: 0 -> 3", "optim.max_steps: 2 -> 4",
                   "model.activation_checkpointing: false -> true"):
        assert change in warnings[0], warnings[0]
    assert (run / "config.yaml").read_bytes() == original  # as the run started, not overwritten
    (entry,) = [json.loads(line) for line in (run / "config-history.jsonl").read_text().splitlines()]
    assert entry["step"] == 2 and entry["time"]
    assert entry["changes"] == {"optim.lr": [0.0005, 0.002], "optim.max_steps": [2, 4], "train.seed": [0, 3],
                                "model.activation_checkpointing": [False, True]}
    effective = yaml.safe_load((run / "config-effective.yaml").read_text())
    assert effective["optim"]["lr"] == 0.002 and effective["train"]["seed"] == 3
    assert ckpt.load(run / "checkpoints" / "latest.pt")["step"] == 4
    # The next resume compares with the config its checkpoint was trained with: only the new change.
    caplog.clear()
    assert _resume(run, *changed[1:], "optim.max_steps=5") == 0
    lines = (run / "config-history.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["changes"] == {"optim.max_steps": [4, 5]}
    assert json.loads(lines[1])["step"] == 4
    assert yaml.safe_load((run / "config-effective.yaml").read_text())["optim"]["max_steps"] == 5


def test_checkpoint_of_other_shapes_names_the_parameter_and_the_run(run, capsys):
    # A checkpoint whose recorded config matches the new one but whose tensors do not (e.g. written
    # by an older version, or edited): the shape check names what does not fit.
    ck = run / "checkpoints"
    obj = ckpt.load(ck / "latest.pt")
    obj["config"]["model"]["embed_dim"] = 48
    (ck / "latest.pt").unlink()
    for name in ("latest.pt", "step-2.pt"):
        torch.save(obj, ck / name)
    before = _snapshot(run)
    rc = _resume(run, "optim.max_steps=4", "model.embed_dim=48")
    assert rc == 2
    line = _one_error_line(capsys)
    assert f"the checkpoint {ck / 'latest.pt'} does not fit the model this config builds" in line, line
    assert "encoder.patch_embed.proj.weight: checkpoint [32, 1, 4, 4] vs model [48, 1, 4, 4]" in line, line
    assert f"the run in {run} was trained with other architecture settings" in line
    assert "--restart" in line
    assert _snapshot(run) == before
