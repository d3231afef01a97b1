"""Per-key help (`jepa config <method> --explain`): every leaf key with its value and the
meaning written beside the field (comment or attribute docstring), its range or choices."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from jepa_core import cli
from jepa_core.config import BaseConfig, OptimConfig, explain, field_docs, ranges


@ranges(width=">=1")
@dataclass
class _Model:
    width: int = 8  # channels of the first layer
    kind: Literal["a", "b"] = "a"
    depth: int = 2
    """Blocks, each
    two layers."""
    bare: float = 0.5


@dataclass
class _Cfg(BaseConfig):
    method: str = "toy"
    model: _Model = field(default_factory=_Model)


def test_field_docs_reads_comments_and_attribute_docstrings():
    docs = field_docs(_Model)
    assert docs == {"width": "channels of the first layer", "depth": "Blocks, each two layers."}
    assert "max_steps" in field_docs(OptimConfig) and "cut" in field_docs(OptimConfig)["max_steps"]


def test_explain_lists_every_leaf_with_meaning_range_and_choices():
    rows = {k: (v, m) for k, v, m in explain(_Cfg())}
    assert rows["model.width"] == (8, "channels of the first layer [>= 1]")
    assert rows["model.kind"] == ("a", "[one of: a, b]")
    assert rows["model.depth"] == (2, "Blocks, each two layers.")
    assert rows["model.bare"] == (0.5, "(float)")
    assert {"optim.lr", "train.seed", "eval.enabled"} <= set(rows)


def test_the_command_explains_a_prefix_and_refuses_an_unknown_one(capsys, monkeypatch):
    from jepa_core import registry

    monkeypatch.setattr(registry, "_LOCAL_METHODS", dict(registry._LOCAL_METHODS))  # undone after the test
    registry.register_method(registry.MethodSpec(name="toy_explain", config_cls=_Cfg, build_model=None,
                                                 build_train_data=None, build_eval_data=None))
    assert cli.main(["config", "toy_explain", "--explain", "optim.max_steps"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "optim.max_steps = null" and "schedules keep their full" in out[1]
    assert cli.main(["config", "toy_explain", "--explain", "model.w"]) == 0
    assert capsys.readouterr().out.splitlines() == ["model.width = 8", "    channels of the first layer [>= 1]"]
    assert cli.main(["config", "toy_explain", "--explain", "nope"]) == cli.EXIT_USAGE
    assert "the sections are: eval, method, model, optim, preset, train" in capsys.readouterr().err


def test_max_steps_cuts_the_run_and_says_the_schedules_keep_their_length(tmp_path, caplog):
    from jepa_core.config import TrainConfig
    from jepa_core.testing import LinearJEPA, PointsDataset, collate_points
    from jepa_core.trainer import Trainer

    optim = OptimConfig(epochs=2, warmup=0, lr=0.1, start_lr=0.1, final_lr=0.0, max_steps=3)
    train = TrainConfig(device="cpu", progress=False, checkpoint_every=100)
    with caplog.at_level(logging.INFO, logger="jepa_core.trainer"):
        fit = Trainer(LinearJEPA(), PointsDataset(64), collate_points, optim, train, tmp_path, 8).fit()
    assert fit.steps == 3
    assert "optim.max_steps=3 stops the run at step 3 of its 16-step schedules" in caplog.text

