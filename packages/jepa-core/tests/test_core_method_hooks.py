"""The JEPAMethod hooks and the evaluator a MethodSpec names: a method without any target and
with its own optimizer trains, checkpoints and resumes with the Trainer; `jepa_core.run` runs
the evaluator the spec names (or says clearly that it is not installed); the defaults are the
I-JEPA ones (LinearJEPA)."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from jepa_core import registry
from jepa_core.checkpoint import load
from jepa_core.config import BaseConfig, ConfigError, OptimConfig, TrainConfig
from jepa_core.method import JEPAMethod
from jepa_core.run import evaluate_model, evaluate_run, pretrain
from jepa_core.target import EMATarget
from jepa_core.testing import LinearJEPA, PointsDataset, collate_points
from jepa_core.trainer import Trainer
from torch import nn


class NoTargetJEPA(JEPAMethod):
    """No EMA target at all: predict the encoder's features of the reversed input from those of
    the input, with a variance term against collapse (VICReg style); SGD with momentum."""

    def __init__(self, d: int = 4):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(d, 8), nn.GELU(), nn.Linear(8, d))
        self.predictor = nn.Linear(d, d)

    def forward(self, batch: dict) -> dict:
        x = batch["x"]
        z, t = self.encoder(x), self.encoder(x.flip(-1))
        pred = F.mse_loss(self.predictor(z), t)
        var = F.relu(1 - z.std(0)).mean()
        return {"loss": pred + var, "pred_loss": pred.detach(), "var_loss": var.detach()}

    def build_optimizer(self, optim_cfg, lr, device):
        return torch.optim.SGD(
            [{"params": list(self.encoder.parameters())}, {"params": list(self.predictor.parameters())}],
            lr=lr, momentum=0.9, weight_decay=optim_cfg.weight_decay,
        )

    def update_target(self, momentum):
        raise AssertionError("a method without targets gets no target update")


OPTIM = dict(epochs=2, warmup=0.5, start_lr=0.01, lr=0.05, final_lr=0.001, clip_grad=1.0)


class Killed(RuntimeError):
    pass


def _fit(run_dir, max_steps=None, resume=False, kill_at=None):
    torch.manual_seed(0)
    model = NoTargetJEPA()

    def kill(trainer, step, row):
        if step == kill_at:
            raise Killed(step)

    tc = TrainConfig(device="cpu", progress=False, log_every=1, checkpoint_every=3, num_threads=1)
    tr = Trainer(model, PointsDataset(), collate_points, OptimConfig(**OPTIM, max_steps=max_steps), tc, run_dir,
                 batch_size=8, callbacks=[kill])
    return tr, tr.fit(resume=resume)


def test_a_method_without_target_and_with_sgd_trains_and_resumes_bitwise(tmp_path):
    ref, res = _fit(tmp_path / "ref")
    assert res.steps == 16 and isinstance(ref.optimizer, torch.optim.SGD)
    assert ref.momentum_schedule is None and not ref.has_targets
    rows = list(csv.DictReader(open(tmp_path / "ref" / "metrics.csv")))
    assert "momentum" not in rows[0] and {"lr", "wd", "pred_loss", "var_loss"} <= set(rows[0])
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    # the schedules drive SGD's groups as they drive AdamW's
    assert float(rows[0]["lr"]) == pytest.approx(ref.lr_schedule.value(0))
    for group in ref.optimizer.param_groups:
        assert group["lr"] == pytest.approx(float(rows[-1]["lr"]))
        assert group["weight_decay"] == pytest.approx(float(rows[-1]["wd"]))
    ck = load(tmp_path / "ref" / "checkpoints" / "latest.pt")
    assert {k.split(".")[0] for k in ck["model"]} == {"encoder", "predictor"}
    assert all("momentum_buffer" in s for s in ck["optimizer"]["state"].values())

    # killed after step 8 (last checkpoint: step 6), then resumed: the same weights and
    # optimizer state, bit for bit, as the uninterrupted run
    with pytest.raises(Killed):
        _fit(tmp_path / "run", kill_at=8)
    assert load(tmp_path / "run" / "checkpoints" / "latest.pt")["step"] == 6
    tr, res = _fit(tmp_path / "run", resume=True)
    assert res.steps == 16
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, tr.model.state_dict()[k]), k
    a, b = ref.optimizer.state_dict()["state"], tr.optimizer.state_dict()["state"]
    assert a.keys() == b.keys() and all(torch.equal(a[i]["momentum_buffer"], b[i]["momentum_buffer"]) for i in a)
    steps = [int(r["step"]) for r in csv.DictReader(open(tmp_path / "run" / "metrics.csv"))]
    assert steps == list(range(1, 17))


def test_linear_jepa_keeps_the_ijepa_defaults(tmp_path):
    torch.manual_seed(0)
    model = LinearJEPA()
    assert list(model.trainable_modules()) == ["encoder", "predictor"]
    assert model.target_modules() == {"target_encoder": model.target_encoder}
    assert model.eval_encoder() is model.target_encoder.module
    opt = model.build_optimizer(OptimConfig(betas=(0.9, 0.95)), 0.1, torch.device("cpu"))
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"] and opt.defaults["betas"] == (0.9, 0.95)
    assert [g["name"] for g in opt.param_groups] == ["encoder.decay", "predictor.decay", "encoder.no_decay",
                                                     "predictor.no_decay"]
    before = model.target_encoder.module.weight.detach().clone()
    with torch.no_grad():
        model.encoder.weight.add_(1.0)
    model.update_target(0.5)
    assert torch.allclose(model.target_encoder.module.weight, before + 0.5)
    tc = TrainConfig(device="cpu", progress=False, log_every=1, num_threads=1)
    tr = Trainer(model, PointsDataset(), collate_points, OptimConfig(epochs=1, max_steps=2), tc, tmp_path, batch_size=8)
    assert tr.fit().steps == 2 and tr.has_targets and tr.momentum_schedule is not None


def test_method_hook_defaults_without_target_or_modules():
    class EncoderOnly(JEPAMethod):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Linear(2, 2)

    m = EncoderOnly()
    assert m.target_modules() == {} and m.eval_encoder() is m.encoder
    assert list(m.trainable_modules()) == ["encoder"]
    m.update_target(0.9)  # no target: nothing to do
    with pytest.raises(NotImplementedError, match="override trainable_modules"):
        JEPAMethod().trainable_modules()
    assert isinstance(LinearJEPA().target_encoder, EMATarget)


def test_an_optimizer_hook_must_return_an_optimizer(tmp_path):
    class Bad(NoTargetJEPA):
        def build_optimizer(self, optim_cfg, lr, device):
            return [p for p in self.parameters()]

    tc = TrainConfig(device="cpu", progress=False)
    tr = Trainer(Bad(), PointsDataset(), collate_points, OptimConfig(max_steps=1), tc, tmp_path, batch_size=8)
    with pytest.raises(TypeError, match=r"Bad.build_optimizer returned list; it must return a torch.optim.Optimizer"):
        tr.fit()


# ---------------------------------------------------------------------------------------------
# evaluators named by the MethodSpec


@dataclass
class PointsData:
    batch_size: int = 8


@dataclass
class NoTargetConfig(BaseConfig):
    method: str = "coretest_notarget"
    data: PointsData = field(default_factory=PointsData)


def _spec(name: str, evaluator: str | None) -> registry.MethodSpec:
    spec = registry.MethodSpec(
        name=name, config_cls=NoTargetConfig, build_model=lambda cfg: NoTargetJEPA(),
        build_train_data=lambda cfg, rank, world: (PointsDataset(), collate_points), evaluator=evaluator,
    )
    registry.register_method(spec)
    return spec


RUN = ["optim.epochs=1", "optim.max_steps=3", "optim.warmup=0", "train.device=cpu", "train.progress=false",
       "train.num_threads=1"]


def test_pretrain_and_jepa_eval_call_the_evaluator_the_spec_names(tmp_path):
    calls, checked = [], []

    def sample_quality(spec, cfg, model, device, out_dir=None, run_dir=None):
        calls.append((spec.name, type(model).__name__, device.type, out_dir, run_dir))
        with torch.no_grad():
            score = float(model.encoder(torch.ones(1, 4)).abs().sum())  # e.g. a score of generated samples
        return {"results": {"score": score}, "markdown": f"score {score:.3f}", "title": "Sample quality"}

    sample_quality.check_config = lambda cfg: checked.append(cfg.method)
    registry.register_evaluator("coretest_sample_quality", sample_quality)
    spec = _spec("coretest_notarget", "coretest_sample_quality")
    summary = pretrain(spec.name, overrides=RUN, run_dir=tmp_path / "run")
    assert checked == ["coretest_notarget"]  # before training
    assert calls == [("coretest_notarget", "NoTargetJEPA", "cpu", tmp_path / "run" / "eval", tmp_path / "run")]
    assert summary["steps"] == 3 and set(summary["evaluation"]) == {"score"}
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Sample quality" in report and "score " in report
    # `jepa eval` of the run folder: the same evaluator on the checkpoint's weights
    (tmp_path / "run" / "eval").mkdir(exist_ok=True)
    (tmp_path / "run" / "eval" / "results.json").write_text('{"first": 1}')
    out = evaluate_run(tmp_path / "run")
    assert out["evaluation"] == summary["evaluation"] and out["step"] == 3 and len(calls) == 2
    # the earlier evaluation was kept beside the new one, not overwritten
    kept = [d for d in (tmp_path / "run").iterdir() if d.name.startswith("eval-")]
    assert len(kept) == 1 and (kept[0] / "results.json").read_text() == '{"first": 1}'
    # an explicit folder: written there, nothing moved
    out = evaluate_run(tmp_path / "run", out_dir=tmp_path / "other")
    assert out["out_dir"] == str(tmp_path / "other") and calls[-1][3] == tmp_path / "other"
    assert len([d for d in (tmp_path / "run").iterdir() if d.name.startswith("eval-")]) == 1


def test_a_spec_whose_evaluator_is_not_installed_is_a_clear_message(tmp_path, caplog):
    spec = _spec("coretest_missing_eval", "coretest_no_such_evaluator")
    cfg = spec.load_config(overrides=RUN)
    with pytest.raises(ConfigError) as ei:
        evaluate_model(spec, cfg, NoTargetJEPA(), torch.device("cpu"))
    msg = str(ei.value)
    assert "evaluator 'coretest_no_such_evaluator' (MethodSpec.evaluator of method 'coretest_missing_eval') is " \
           "not installed; installed evaluators: " in msg
    assert all(name in msg for name in registry.evaluators())
    assert "register_evaluator" in msg and "eval.enabled=false" in msg
    # `jepa pretrain` says so before training, trains, and skips the evaluation
    with caplog.at_level(logging.WARNING):
        summary = pretrain(spec.name, overrides=RUN, run_dir=tmp_path / "run")
    assert "coretest_no_such_evaluator" in caplog.text and "training without the evaluation" in caplog.text
    assert summary["steps"] == 3 and "evaluation" not in summary
    with pytest.raises(ConfigError, match="coretest_no_such_evaluator"):
        evaluate_run(tmp_path / "run")


def test_a_spec_without_evaluator_is_not_evaluated(tmp_path):
    spec = _spec("coretest_no_eval", None)
    summary = pretrain(spec.name, overrides=RUN, run_dir=tmp_path / "run")
    assert "evaluation" not in summary
    assert evaluate_model(spec, spec.load_config(), NoTargetJEPA(), torch.device("cpu")) is None
    with pytest.raises(ConfigError, match="method 'coretest_no_eval' has no evaluator"):
        evaluate_run(tmp_path / "run")


def test_a_run_of_an_older_version_with_a_retired_key_still_loads(tmp_path):
    import yaml
    from jepa_core.config import from_dict
    from jepa_core.run import load_run

    spec = _spec("coretest_retired", None)
    pretrain(spec.name, overrides=RUN, run_dir=tmp_path / "run")
    path = tmp_path / "run" / "config.yaml"
    data = yaml.safe_load(path.read_text())
    data["train"]["inject_nan_steps"] = []  # what older versions wrote
    path.write_text(yaml.safe_dump(data))
    assert load_run(tmp_path / "run")["step"] == 3
    # set by hand, the key fails with its replacement named
    with pytest.raises(ConfigError, match=r"unknown config key 'train.inject_nan_steps' .*valid keys: .*"
                                          r"\(NaN injection is a test hook now: Trainer\(loss_hook="):
        from_dict(NoTargetConfig, data)


class IdleHeadJEPA(NoTargetJEPA):
    """A ``head`` that joins the loss only with a zero weight (``0 * p.sum()``, what a method does
    for a module DDP wraps but this step does not use) and is declared idle."""

    def __init__(self, idle: bool):
        super().__init__()
        self.head, self.idle = nn.Linear(4, 4), idle

    def trainable_modules(self):
        return {"encoder": self.encoder, "predictor": self.predictor, "head": self.head}

    def forward(self, batch):
        out = super().forward(batch)
        out["loss"] = out["loss"] + 0.0 * sum(p.sum() for p in self.head.parameters())
        return out

    def build_optimizer(self, optim_cfg, lr, device):
        from jepa_core.optim import official_adamw

        return official_adamw(self.trainable_modules(), optim_cfg, lr, device)

    def idle_parameters(self):
        return list(self.head.parameters()) if self.idle else []


@pytest.mark.parametrize("idle", [True, False])
def test_idle_parameters_get_no_update(tmp_path, idle):
    """Declared idle: the zero gradients are dropped, AdamW neither decays the head nor keeps
    state for it (as for a parameter no loss reaches). Not declared: weight decay shrinks it."""
    torch.manual_seed(0)
    model = IdleHeadJEPA(idle)
    before = {k: v.clone() for k, v in model.head.state_dict().items()}
    tc = TrainConfig(device="cpu", progress=False, log_every=1, checkpoint_every=100, num_threads=1)
    optim = OptimConfig(epochs=1, warmup=0, lr=0.05, weight_decay=0.1, final_weight_decay=0.1)
    tr = Trainer(model, PointsDataset(), collate_points, optim, tc, tmp_path, batch_size=8)
    tr.fit()
    weight_same = torch.equal(model.head.weight, before["weight"])
    assert weight_same is idle
    has_state = [p in tr.optimizer.state for p in model.head.parameters()]
    assert has_state == [not idle] * 2
    assert all(p in tr.optimizer.state for p in model.encoder.parameters())
