"""Method registry and config loading through a MethodSpec."""

from __future__ import annotations

import pytest
from jepa_core.config import BaseConfig, ConfigError
from jepa_core.registry import (
    MethodSpec,
    get_evaluator,
    get_method,
    methods,
    register_evaluator,
    register_method,
)


def _spec(name="coretest_method"):
    return MethodSpec(
        name=name,
        config_cls=BaseConfig,
        build_model=lambda cfg: None,
        build_train_data=lambda c, r, w: (None, None),
    )


def test_register_and_get_method():
    spec = _spec()
    register_method(spec)
    assert get_method("coretest_method") is spec
    assert "coretest_method" in methods()
    with pytest.raises(ConfigError) as ei:
        get_method("no_such_method_xyz")
    assert "no_such_method_xyz" in str(ei.value) and "coretest_method" in str(ei.value)


def test_register_evaluator():
    fn = lambda *a: 1  # noqa: E731
    register_evaluator("coretest_eval", fn)
    assert get_evaluator("coretest_eval") is fn
    assert get_evaluator("no_such_eval_xyz") is None


def test_load_config_file_then_overrides(tmp_path):
    spec = _spec("coretest_cfg")
    f = tmp_path / "my.yaml"
    f.write_text("optim:\n  lr: 1e-4\n  epochs: 3\ntrain:\n  seed: 4\n")
    cfg = spec.load_config(file=f, overrides=["optim.lr=2e-3", "train.progress=false"])
    assert cfg.method == "coretest_cfg"
    assert cfg.optim.lr == 2e-3 and cfg.optim.epochs == 3.0 and cfg.train.seed == 4
    assert cfg.train.progress is False
    with pytest.raises(ConfigError, match="optim.nope"):
        spec.load_config(file=f, overrides=["optim.nope=1"])
    g = tmp_path / "other.yaml"
    g.write_text("method: somethingelse\n")
    with pytest.raises(ConfigError, match="somethingelse"):
        spec.load_config(file=g)


def test_unknown_preset_lists_none():
    with pytest.raises(ConfigError, match="unknown preset"):
        _spec().load_config(preset="big")


def test_preset_base_merges_the_named_preset_under_its_keys(tmp_path, monkeypatch):
    spec = _spec("coretest_base")
    files = {
        "demo": "optim:\n  lr: 1.0e-4\n  epochs: 3\ntrain:\n  seed: 4\n",
        "demo_gpu": "base: demo\noptim:\n  epochs: 50\ntrain:\n  device: cuda\n",
        "demo_gpu_long": "base: demo_gpu\noptim:\n  epochs: 200\n",
        "loop_a": "base: loop_b\n",
        "loop_b": "base: loop_a\n",
        "bad": "base: [demo]\n",
        "orphan": "base: nope\n",
    }
    for name, text in files.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    monkeypatch.setattr(spec, "preset_paths", lambda: {n: tmp_path / f"{n}.yaml" for n in files})
    gpu = spec.load_config("demo_gpu")
    assert (gpu.optim.lr, gpu.optim.epochs, gpu.train.seed, gpu.train.device) == (1e-4, 50, 4, "cuda")
    assert gpu.preset == "demo_gpu"
    long = spec.load_config("demo_gpu_long", overrides=["train.seed=7"])
    assert (long.optim.lr, long.optim.epochs, long.train.device, long.train.seed) == (1e-4, 200, "cuda", 7)
    user = tmp_path / "mine.yaml"
    user.write_text("base: demo\noptim:\n  lr: 3.0e-4\n")  # a user's file may start from a preset too
    mine = spec.load_config(file=user)
    assert (mine.optim.lr, mine.optim.epochs, mine.train.seed) == (3e-4, 3, 4)
    with pytest.raises(ConfigError, match=r"cycle \(loop_a -> loop_b -> loop_a\)"):
        spec.load_config("loop_a")
    with pytest.raises(ConfigError, match="'base' names one preset"):
        spec.load_config("bad")
    with pytest.raises(ConfigError, match="unknown preset 'nope'.*valid presets: .*demo_gpu"):
        spec.load_config("orphan")
