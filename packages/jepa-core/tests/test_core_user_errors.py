"""User errors end `jepa` with one `jepa: error: ...` line and no traceback (issue #13, item 7),
on a toy method registered in-process (core alone: the I-JEPA and V-JEPA cases are in their
packages' tests): every numeric setting of the core sections has a declared range, values out of
it fail before training with the key, the value and the range named, a full disk names the file,
a NaN loss names the step and the fixes, and `--debug` shows the traceback instead.

Exit codes: 2 usage / config errors, 1 failures while running, as `jepa_core.cli` documents."""

from __future__ import annotations

import dataclasses
import errno
import typing

import pytest
import torch
from jepa_core import registry
from jepa_core import trainer as trainer_mod
from jepa_core.checkpoint import StorageError
from jepa_core.cli import main
from jepa_core.config import (
    BaseConfig,
    ConfigError,
    EvalConfig,
    OptimConfig,
    TrainConfig,
    field_ranges,
    from_dict,
    ranges,
)
from jepa_core.testing import LinearJEPA, PointsDataset, collate_points, one_error_line
from jepa_core.trainer import Trainer

pytestmark = pytest.mark.fault

TOY = "core_user_errors_toy"
RUN = ["optim.epochs=2", "optim.max_steps=4", "optim.warmup=0", "train.device=cpu", "train.progress=false",
       "train.num_threads=1", "train.log_every=1", "train.checkpoint_every=2"]


@pytest.fixture(autouse=True)
def toy_method():
    registry.register_method(registry.MethodSpec(
        name=TOY, config_cls=BaseConfig, build_model=lambda cfg: LinearJEPA(),
        build_train_data=lambda cfg, rank, world: (PointsDataset(), collate_points), evaluator=None,
    ))


def _one_error_line(capsys) -> str:
    return one_error_line(capsys.readouterr().err)


def _numeric(tp) -> bool:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Literal:
        return False
    return tp in (int, float) or any(_numeric(a) for a in args if a is not type(None) and a is not Ellipsis)


@pytest.mark.parametrize("cls", [OptimConfig, TrainConfig, EvalConfig])
def test_every_numeric_setting_of_the_core_sections_has_a_range(cls):
    hints = typing.get_type_hints(cls)
    numeric = [f.name for f in dataclasses.fields(cls) if _numeric(hints[f.name])]
    assert numeric, cls
    missing = [name for name in numeric if name not in field_ranges(cls)]
    assert not missing, f"{cls.__name__}: no declared range for {missing}"


@pytest.mark.parametrize(("override", "expected"), [
    ("train.log_every=0", "train.log_every must be >= 1, got train.log_every=0; e.g. train.log_every=10"),
    ("train.checkpoint_every=0", "train.checkpoint_every must be >= 1, got train.checkpoint_every=0"),
    ("optim.max_steps=-5", "optim.max_steps must be >= 1, got optim.max_steps=-5"),
    ("train.device=tpu", "train.device=tpu is not a device this trainer runs on; valid: auto, cpu, cuda"),
    ("train.max_bad_fraction=1.5", "train.max_bad_fraction must be in [0, 1], got train.max_bad_fraction=1.5"),
    ("optim.lr=.nan", "optim.lr must be finite and >= 0, got optim.lr=nan"),
    ("optim.ema=[0.996,1.2]", "each value of optim.ema must be in [0, 1], got optim.ema=[0.996, 1.2]"),
    ("eval.knn_k=[10,0]", "each value of eval.knn_k must be >= 1, got eval.knn_k=[10, 0]"),
    ("eval.lowshot_fractions=[0]", "each value of eval.lowshot_fractions must be in (0, 1]"),
])
def test_out_of_range_setting_is_one_line_exit_2_before_anything_is_written(tmp_path, capsys, override, expected):
    run = tmp_path / "run"
    rc = main(["pretrain", TOY, *RUN, override, "--run-dir", str(run)])
    assert rc == 2
    assert expected in _one_error_line(capsys)
    assert not run.exists()


@dataclasses.dataclass
class _Pair:
    scale: tuple[float, float] = (0.2, 0.9)


@dataclasses.dataclass
class _PairConfig:
    mask: _Pair = dataclasses.field(default_factory=_Pair)


ranges(scale="(0,1] ordered")(_Pair)


def test_a_pair_out_of_order_names_the_range():
    with pytest.raises(ConfigError, match=r"mask.scale is a \(low, high\) range: the values must be in order \(low "
                                          r"<= high\), got mask.scale=\[0.9, 0.2\]; e.g. mask.scale=\[0.2, 0.9\]"):
        from_dict(_PairConfig, {"mask": {"scale": [0.9, 0.2]}})
    assert from_dict(_PairConfig, {"mask": {"scale": [0.5, 0.5]}}).mask.scale == (0.5, 0.5)


def test_trainer_built_directly_refuses_out_of_range_settings(tmp_path):
    # Formerly a ZeroDivisionError mid-run, or (max_steps) a run of no steps with loss NaN.
    with pytest.raises(ConfigError, match="train.log_every must be >= 1"):
        TrainConfig(log_every=0)
    with pytest.raises(ConfigError, match="optim.max_steps must be >= 1, got optim.max_steps=-5"):
        Trainer(LinearJEPA(), PointsDataset(), collate_points, OptimConfig(max_steps=-5),
                TrainConfig(device="cpu", progress=False), tmp_path / "run", batch_size=8)
    with pytest.raises(ConfigError, match="data.batch_size must be >= 1, got data.batch_size=0"):
        Trainer(LinearJEPA(), PointsDataset(), collate_points, OptimConfig(max_steps=2),
                TrainConfig(device="cpu", progress=False), tmp_path / "run", batch_size=0)


def test_debug_shows_the_traceback_instead(tmp_path, capsys, monkeypatch):
    args = ["pretrain", TOY, *RUN, "train.log_every=0", "--run-dir", str(tmp_path / "run")]
    with pytest.raises(ConfigError, match="train.log_every"):
        main(["--debug", *args])
    with pytest.raises(ConfigError, match="train.log_every"):
        main([*args, "--debug"])  # global: accepted after the subcommand too
    monkeypatch.setenv("JEPA_DEBUG", "1")
    with pytest.raises(ConfigError, match="train.log_every"):
        main(args)
    monkeypatch.delenv("JEPA_DEBUG")
    assert main(args) == 2
    _one_error_line(capsys)


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_writing_a_checkpoint_names_it_and_exits_1(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    real_save = torch.save

    def save(obj, f, *args, **kwargs):  # the toy run saves nothing but checkpoints
        real_save(obj, f, *args, **kwargs)  # the bytes landed in the temporary file, then the disk filled up
        _no_space()

    monkeypatch.setattr(torch, "save", save)
    rc = main(["pretrain", TOY, *RUN, "--run-dir", str(run)])
    assert rc == 1
    line = _one_error_line(capsys)
    assert f"cannot write the checkpoint {run / 'checkpoints' / 'step-2.pt'} (ENOSPC: No space left" in line, line
    assert "free space on the file system of" in line and "--resume" in line
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == []  # its temporary file removed


def test_disk_full_writing_metrics_names_the_file_and_exits_1(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    real_open = open

    def full_disk_open(file, mode="r", *args, **kwargs):
        if str(file).endswith("metrics.csv") and "a" in mode:
            _no_space()
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(trainer_mod, "open", full_disk_open, raising=False)
    rc = main(["pretrain", TOY, *RUN, "--run-dir", str(run)])
    assert rc == 1
    line = _one_error_line(capsys)
    assert f"cannot write the metrics file {run / 'metrics.csv'} (ENOSPC" in line, line
    with pytest.raises(StorageError) as ei:  # --debug: the same error, raised
        main(["--debug", "pretrain", TOY, *RUN, "--run-dir", str(tmp_path / "run2")])
    assert ei.value.errno == errno.ENOSPC


def test_nan_stop_is_one_line_naming_the_step_and_the_fixes(tmp_path, capsys, monkeypatch):
    registry.register_method(registry.MethodSpec(
        name=TOY, config_cls=BaseConfig, build_model=lambda cfg: LinearJEPA(nan_at_call=3),
        build_train_data=lambda cfg, rank, world: (PointsDataset(), collate_points), evaluator=None,
    ))
    run = tmp_path / "run"
    rc = main(["pretrain", TOY, *RUN, "--run-dir", str(run)])
    assert rc == 1
    line = _one_error_line(capsys)
    assert "the loss became NaN or infinite by step 3" in line
    for fix in ("optim.lr", "optim.clip_grad", "train.precision=fp32", "--resume"):
        assert fix in line, line
    assert str(run / "checkpoints" / "latest.pt") in line  # the good checkpoint of step 2 is kept
