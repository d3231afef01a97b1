"""`jepa pretrain ijepa` (tiny, in-process CLI) turns user errors into one `jepa: error: ...` line
with the fix, no traceback, and exit code 2 (usage / config: nothing trained or written) or 1 (the
run failed while training or writing); `--debug` raises instead (issue #13, item 7)."""

from __future__ import annotations

import errno

import pytest
import torch
from jepa_core import trainer as trainer_mod
from jepa_core.cli import main
from jepa_core.config import ConfigError
from jepa_core.testing import one_error_line, unranged_fields
from jepa_image.ijepa import IJEPAConfig

pytestmark = pytest.mark.fault

TINY = [
    "model.encoder=custom", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
    "model.pred_depth=1", "model.pred_emb_dim=16", "model.patch_size=4",
    "data.batch_size=16", "data.num_workers=0", "data.pin_memory=false",
    "train.device=cpu", "train.num_threads=1", "train.progress=false", "eval.enabled=false",
    "train.checkpoint_every=2", "train.log_every=1", "optim.max_steps=4",
]


def _one_error_line(capsys) -> str:
    return one_error_line(capsys.readouterr().err)


def test_every_numeric_setting_of_the_image_configs_has_a_range():
    from jepa_image.dmtjepa import DMTJEPAConfig

    assert unranged_fields(IJEPAConfig) == []
    assert unranged_fields(DMTJEPAConfig) == []


@pytest.mark.parametrize(("override", "expected"), [
    # formerly ZeroDivisionError
    ("data.batch_size=0", "data.batch_size must be >= 1, got data.batch_size=0; e.g. data.batch_size="),
    ("train.checkpoint_every=0", "train.checkpoint_every must be >= 1, got train.checkpoint_every=0"),
    ("train.log_every=0", "train.log_every must be >= 1, got train.log_every=0"),
    # formerly "negative dimension" / "upper bound and lower bound inconsistent" tracebacks
    ("model.embed_dim=-8", "model.embed_dim must be >= 1, got model.embed_dim=-8"),
    ("data.image_size=-32", "data.image_size must be >= 1, got data.image_size=-32"),
    ("data.image_size=30", "data.image_size=30 is not a multiple of model.patch_size=4; e.g. data.image_size=28"),
    # formerly torch's device-string RuntimeError
    ("train.device=tpu", "train.device=tpu is not a device this trainer runs on; valid: auto, cpu, cuda, cuda:N"),
    # formerly "dim 32 is not divisible by num_heads 3"
    ("model.num_heads=3", "model.num_heads=3 does not divide model.embed_dim=32 (each head gets embed_dim / "
                          "num_heads channels); pick a divisor, e.g. model.num_heads=2"),
    ("model.pred_num_heads=3", "model.pred_num_heads=3 does not divide model.pred_emb_dim=16"),
    # formerly exit 0 with loss NaN after no step
    ("optim.max_steps=-5", "optim.max_steps must be >= 1, got optim.max_steps=-5"),
    ("data.crop_scale=[0.9,0.3]", "data.crop_scale is a (low, high) range: the values must be in order (low <= "
                                  "high), got data.crop_scale=[0.9, 0.3]"),
    ("mask.pred_mask_scale=[0.15,1.5]", "each value of mask.pred_mask_scale must be in (0, 1], got "
                                        "mask.pred_mask_scale=[0.15, 1.5]"),
    ("optim.betas=[0.9,1.5]", "the optimizer refuses these settings: Invalid beta parameter at index 1: 1.5; "
                              "check the optim.* keys (optim.betas=[0.9, 1.5]"),
])
def test_config_error_is_one_line_with_the_fix_and_exit_2(tmp_path, capsys, override, expected):
    run = tmp_path / "run"
    rc = main(["pretrain", "ijepa", *TINY, override, "--run-dir", str(run)])
    assert rc == 2
    line = _one_error_line(capsys)
    assert expected in line, line
    assert not (run / "checkpoints").exists()


def test_debug_raises_with_the_traceback(tmp_path):
    with pytest.raises(ConfigError, match="model.num_heads=3 does not divide"):
        main(["pretrain", "ijepa", *TINY, "model.num_heads=3", "--run-dir", str(tmp_path / "run"), "--debug"])


def test_nan_stop_is_one_line_naming_the_step_and_the_fix(tmp_path, capsys):
    # A learning rate of 1e30 sends the weights, then the loss, to inf/NaN at the second step.
    run = tmp_path / "run"
    rc = main(["pretrain", "ijepa", *TINY, "optim.warmup=0", "optim.start_lr=1e30", "optim.lr=1e30",
               "--run-dir", str(run)])
    assert rc == 1
    line = _one_error_line(capsys)
    assert "the loss became NaN or infinite by step 2; stopped without saving (no checkpoint was written yet)" in line
    for fix in ("Lower optim.lr", "optim.clip_grad", "train.precision=fp32", "train.nonfinite=skip"):
        assert fix in line, line
    assert not any((run / "checkpoints").glob("*.pt"))  # globbing a missing folder finds nothing too


def test_disk_full_while_writing_a_checkpoint_names_it(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        if isinstance(obj, dict) and obj.get("format") == "jepa-run":  # a checkpoint: the disk fills up
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save)
    rc = main(["pretrain", "ijepa", *TINY, "--run-dir", str(run)])
    assert rc == 1
    line = _one_error_line(capsys)
    assert f"cannot write the checkpoint {run / 'checkpoints' / 'step-2.pt'} (ENOSPC: No space left on device)" in line
    assert f"free space on the file system of {run / 'checkpoints'}" in line and "--resume" in line
    assert list((run / "checkpoints").iterdir()) == []  # the temporary file is removed, no torn checkpoint


def test_disk_full_while_writing_metrics_names_the_file(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    real_open = open

    def full_disk_open(file, mode="r", *args, **kwargs):
        if str(file).endswith("metrics.csv") and "a" in mode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(trainer_mod, "open", full_disk_open, raising=False)
    rc = main(["pretrain", "ijepa", *TINY, "--run-dir", str(run)])
    assert rc == 1
    line = _one_error_line(capsys)
    assert f"cannot write the metrics file {run / 'metrics.csv'} (ENOSPC: No space left on device)" in line, line
