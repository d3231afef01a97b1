"""Typed configs: from_dict / to_dict, overrides, YAML loading and the error messages."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest
from jepa_core.config import (
    BaseConfig,
    ConfigError,
    EvalConfig,
    OptimConfig,
    TrainConfig,
    deep_merge,
    dump_yaml,
    from_dict,
    load_yaml,
    parse_overrides,
    to_dict,
)


def test_defaults_are_ijepa_vith14():
    o = OptimConfig()
    assert (o.start_lr, o.lr, o.final_lr) == (2e-4, 1e-3, 1e-6)
    assert (o.weight_decay, o.final_weight_decay) == (0.04, 0.4)
    assert o.ema == (0.996, 1.0) and o.betas == (0.9, 0.999) and o.eps == 1e-8
    assert o.warmup == 40 and o.epochs == 300 and o.ipe_scale == 1.0 and o.clip_grad is None


def test_unknown_key_names_key_and_lists_valid_keys():
    with pytest.raises(ConfigError) as ei:
        from_dict(BaseConfig, {"optim": {"lrr": 1e-3}})
    msg = str(ei.value)
    assert "optim.lrr" in msg
    for name in (f.name for f in dataclasses.fields(OptimConfig)):
        assert name in msg
    with pytest.raises(ConfigError) as ei:
        from_dict(BaseConfig, {"trian": {}})
    assert "trian" in str(ei.value) and "optim" in str(ei.value) and "train" in str(ei.value)


@pytest.mark.parametrize(
    "data,key",
    [
        ({"optim": {"lr": "abc"}}, "optim.lr"),
        ({"train": {"seed": 1.5}}, "train.seed"),
        ({"train": {"seed": True}}, "train.seed"),
        ({"train": {"log_every": False}}, "train.log_every"),
        ({"optim": {"lr": True}}, "optim.lr"),
        ({"train": {"progress": "yes"}}, "train.progress"),
        ({"train": {"precision": "fp8"}}, "train.precision"),
        ({"optim": {"ema": [0.9]}}, "optim.ema"),
        ({"optim": {"ema": 0.9}}, "optim.ema"),
        ({"optim": {"ema": [0.9, "x"]}}, "optim.ema[1]"),
        ({"optim": {"ipe": True}}, "optim.ipe"),
        ({"optim": {"clip_grad": "ten"}}, "optim.clip_grad"),
        ({"train": {"device": 0}}, "train.device"),
        ({"eval": 3}, "eval"),
    ],
)
def test_wrong_type_names_key(data, key):
    with pytest.raises(ConfigError) as ei:
        from_dict(BaseConfig, data)
    assert repr(key) in str(ei.value)


def test_coercions():
    cfg = from_dict(
        BaseConfig,
        {
            "optim": {"ema": [0.99, 1], "lr": 1, "ipe": None, "clip_grad": 10, "max_steps": 5.0},
            "train": {"seed": 3.0, "num_threads": None},
            "eval": {"knn_k": [1, 2, 3]},
        },
    )
    assert cfg.optim.ema == (0.99, 1.0) and isinstance(cfg.optim.ema, tuple)
    assert all(isinstance(v, float) for v in cfg.optim.ema)
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.clip_grad == 10.0
    assert cfg.optim.max_steps == 5 and isinstance(cfg.optim.max_steps, int)
    assert cfg.train.seed == 3 and isinstance(cfg.train.seed, int)
    assert cfg.eval.knn_k == (1, 2, 3) and isinstance(cfg.eval.knn_k, tuple)
    assert cfg.train == dataclasses.replace(TrainConfig(), seed=3)


def test_parse_overrides():
    d = parse_overrides(
        [
            "optim.lr=1e-3",
            "optim.betas=[0.5, 2]",
            "train.progress=false",
            "train.tensorboard=true",
            "train.seed=7",
            "train.run_dir=runs/a.b",
            "optim.clip_grad=",
            "mask.aspect_ratio=[1e-1, 2e-1]",
        ]
    )
    assert d["optim"]["lr"] == 1e-3 and isinstance(d["optim"]["lr"], float)
    assert d["optim"]["betas"] == [0.5, 2]
    assert d["train"]["progress"] is False and d["train"]["tensorboard"] is True
    assert d["train"]["seed"] == 7 and isinstance(d["train"]["seed"], int)
    assert d["train"]["run_dir"] == "runs/a.b"
    assert d["optim"]["clip_grad"] is None
    # exponent floats inside a list are numbers too, like a scalar override
    assert d["mask"]["aspect_ratio"] == [0.1, 0.2]
    cfg = from_dict(BaseConfig, {k: v for k, v in d.items() if k != "mask"})
    assert cfg.optim.lr == 1e-3 and cfg.optim.betas == (0.5, 2.0)
    assert cfg.train.progress is False and cfg.train.seed == 7


def test_parse_overrides_rejects_missing_equals():
    with pytest.raises(ConfigError, match="optim.lr"):
        parse_overrides(["optim.lr"])


def test_round_trip():
    cfg = from_dict(
        BaseConfig, {"method": "x", "optim": {"lr": 5e-4, "ema": [0.99, 1.0]}, "train": {"seed": 9}}
    )
    d = to_dict(cfg)
    assert d["optim"]["ema"] == [0.99, 1.0]  # tuples become lists for YAML
    assert from_dict(BaseConfig, d) == cfg
    assert from_dict(BaseConfig, to_dict(BaseConfig())) == BaseConfig()


def test_yaml_round_trip_and_exponent_floats(tmp_path):
    cfg = from_dict(BaseConfig, {"optim": {"lr": 1e-5, "final_lr": 1e-7}})
    p = tmp_path / "c.yaml"
    dump_yaml(cfg, p)
    assert from_dict(BaseConfig, load_yaml(p)) == cfg
    q = tmp_path / "d.yaml"
    q.write_text("optim:\n  lr: 1e-3\n  betas: [0.9, 1e-2]\ntrain:\n  device: cpu\n")
    d = load_yaml(q)
    assert d["optim"]["lr"] == 1e-3 and d["optim"]["betas"] == [0.9, 0.01]
    assert d["train"]["device"] == "cpu"


def test_load_yaml_errors(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as ei:
        load_yaml(missing)
    assert str(missing) in str(ei.value)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(lst)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_yaml(empty) == {}


def test_deep_merge():
    base = {"a": {"x": 1, "y": 2}, "b": 1}
    out = deep_merge(base, {"a": {"y": 3, "z": 4}, "c": 5})
    assert out == {"a": {"x": 1, "y": 3, "z": 4}, "b": 1, "c": 5}
    assert base == {"a": {"x": 1, "y": 2}, "b": 1}  # not mutated


@dataclass
class _MaskCfg:
    scale: tuple[float, float] = (0.1, 0.2)


@dataclass
class _Cfg(BaseConfig):
    mask: _MaskCfg = field(default_factory=_MaskCfg)


def test_subclass_sections():
    cfg = from_dict(_Cfg, parse_overrides(["mask.scale=[1e-1, 0.3]"]))
    assert cfg.mask.scale == (0.1, 0.3)
    with pytest.raises(ConfigError, match="mask.size"):
        from_dict(_Cfg, {"mask": {"size": 1}})
    assert isinstance(cfg.eval, EvalConfig)
