"""`jepa pretrain vjepa` (tiny, in-process CLI): config errors are one `jepa: error:` line with
the fix and exit 2, no traceback; `--resume` refuses an architecture change (the crop size sets
the token grid) naming it old -> new, and records a changed learning rate (issue #13)."""

from __future__ import annotations

import json

import pytest
from jepa_core.cli import main
from jepa_core.testing import one_error_line, unranged_fields
from jepa_video.masks import MultiBlock3DMaskConfig
from jepa_video.vjepa import VJEPA2Config, VJEPAConfig

pytestmark = pytest.mark.fault

TINY = [
    "data.frames_per_clip=4", "data.crop_size=32", "data.batch_size=4", "data.num_workers=0",
    "data.pin_memory=false", "model.encoder=custom", "model.embed_dim=24", "model.depth=2", "model.num_heads=2",
    "model.patch_size=8", "model.pred_depth=1", "model.pred_emb_dim=12", "model.pred_num_heads=2",
    "train.device=cpu", "train.num_threads=1", "train.progress=false", "eval.enabled=false",
    "data.demo_clips=8", "data.demo_eval_clips=4", "baseline.image_encoder=null",
]


def _one_error_line(capsys) -> str:
    return one_error_line(capsys.readouterr().err)




@pytest.mark.parametrize("cls", [VJEPAConfig, VJEPA2Config, MultiBlock3DMaskConfig])
def test_every_numeric_setting_of_the_video_configs_has_a_range(cls):
    assert unranged_fields(cls) == []


@pytest.mark.parametrize(("override", "expected"), [
    ("data.batch_size=0", "data.batch_size must be >= 1, got data.batch_size=0"),
    ("model.num_heads=5", "model.num_heads=5 does not divide model.embed_dim=24 (each head gets embed_dim / "
                          "num_heads channels); pick a divisor, e.g. model.num_heads=4"),
    ("data.frames_per_clip=5", "data.frames_per_clip=5 is not a multiple of model.tubelet_size=2"),
    ("data.hflip=2", "data.hflip must be in [0, 1], got data.hflip=2"),
    ("mask=[{spatial_scale: [0.5, 0.2]}]", "mask[0].spatial_scale is a (low, high) range: the values must be in "
                                           "order (low <= high), got mask[0].spatial_scale=[0.5, 0.2]"),
    ("optim.max_steps=-5", "optim.max_steps must be >= 1, got optim.max_steps=-5"),
])
def test_config_error_is_one_line_with_the_fix_and_exit_2(tmp_path, capsys, override, expected):
    run = tmp_path / "run"
    rc = main(["pretrain", "vjepa", *TINY, f"data.root={tmp_path / 'demo'}", override, "--run-dir", str(run)])
    assert rc == 2
    line = _one_error_line(capsys)
    assert expected in line, line
    assert not (run / "checkpoints").exists()


def test_resume_refuses_a_new_crop_size_and_records_a_new_lr(tmp_path, capsys):
    run = tmp_path / "run"
    base = ["pretrain", "vjepa", *TINY, f"data.root={tmp_path / 'demo'}", "--run-dir", str(run)]
    assert main([*base, "optim.max_steps=1"]) == 0
    config = (run / "config.yaml").read_bytes()
    capsys.readouterr()
    assert main([*base, "optim.max_steps=2", "data.crop_size=48", "--resume"]) == 2
    line = _one_error_line(capsys)
    assert "the architecture differs from the run's (data.crop_size: 32 -> 48;" in line and "--restart" in line
    assert not (run / "config-history.jsonl").exists()
    assert main([*base, "optim.max_steps=2", "optim.lr=0.01", "--resume"]) == 0
    (entry,) = [json.loads(x) for x in (run / "config-history.jsonl").read_text().splitlines()]
    assert entry["step"] == 1 and entry["changes"]["optim.lr"][1] == 0.01
    assert entry["changes"]["optim.max_steps"] == [1, 2]
    assert (run / "config.yaml").read_bytes() == config
