"""Checkpoints of a run started from Python are first-class (release-readiness issue): with
`Trainer(..., config=cfg)` they carry the method and config, `config.yaml` is written, and
`jepa eval` / `jepa convert` take them; without a config the errors say what the file is and
what to pass."""

from __future__ import annotations

import pytest
import torch
from jepa_core.config import ConfigError
from jepa_core.pretrained import convert
from jepa_core.run import load_run
from jepa_core.trainer import Trainer
from jepa_image import ijepa

OVERRIDES = ["model.embed_dim=32", "model.depth=1", "model.num_heads=2", "model.pred_depth=1",
             "model.pred_emb_dim=16", "data.batch_size=8", "optim.epochs=1", "optim.ipe=2", "optim.warmup=0",
             "train.progress=false", "train.num_threads=1"]


def _cfg():
    return ijepa.SPEC.load_config("demo", overrides=OVERRIDES)


def _train(run_dir, with_config: bool):
    torch.manual_seed(0)
    cfg = _cfg()
    model = ijepa.build_model(cfg)
    dataset, collate = ijepa.build_train_data(cfg)
    kw = {"config": cfg} if with_config else {}
    Trainer(model, dataset, collate, cfg.optim, cfg.train, run_dir, cfg.data.batch_size, **kw).fit()
    return cfg


def test_a_trainer_given_its_config_writes_loadable_checkpoints(tmp_path):
    run_dir = tmp_path / "run"
    cfg = _train(run_dir, with_config=True)
    assert (run_dir / "config.yaml").is_file()
    obj = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    assert obj["method"] == "ijepa" and obj["config"]["model"]["embed_dim"] == cfg.model.embed_dim == 32
    assert obj["model_class"] == "jepa_image.ijepa.IJEPA"
    for path in (run_dir, run_dir / "checkpoints" / "latest.pt"):
        run = load_run(path)
        assert run["spec"].name == "ijepa" and run["step"] == 2
    info = convert(run_dir / "checkpoints" / "latest.pt", tmp_path / "weights.pt")
    assert info.method == "ijepa" and (tmp_path / "weights.pt").is_file()


def test_without_a_config_the_error_names_the_model_and_the_fix(tmp_path, caplog):
    run_dir = tmp_path / "run"
    with caplog.at_level("WARNING"):
        _train(run_dir, with_config=False)
    assert "Trainer without config=" in caplog.text
    assert not (run_dir / "config.yaml").exists()
    with pytest.raises(ConfigError, match=r"holds jepa_image.ijepa.IJEPA's weights but no config .*Trainer\(\.\.\., "
                                          r"config=cfg\).*config.yaml"):
        load_run(run_dir / "checkpoints" / "latest.pt")
    with pytest.raises(ConfigError, match="but no config"):
        load_run(run_dir)
    # the fix the message gives: the run's config beside the checkpoints
    from jepa_core.config import dump_yaml

    dump_yaml(_cfg(), run_dir / "config.yaml")
    assert load_run(run_dir / "checkpoints" / "latest.pt")["spec"].name == "ijepa"
