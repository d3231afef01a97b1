"""The world_model evaluator (IWM, arXiv 2403.00504): MRR, predictor fine-tuning, the evaluator and
its config check, on a fake world model implementing the WorldModel protocol."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
from jepa_core import registry
from jepa_core.config import ConfigError, EvalConfig
from jepa_core.registry import MethodSpec
from jepa_eval.pretrain import evaluate_encoders
from jepa_eval.world_model import (
    WorldModel,
    chance_mrr,
    check_config,
    evaluate_world_model,
    mean_reciprocal_rank,
    predictor_finetune,
    world_model_mrr,
)
from torch import nn
from torch.utils.data import TensorDataset

C = 4  # classes


def _images(n_per_class: int, seed: int) -> TensorDataset:
    """C noisy copies of C fixed 1x4x4 prototypes: an easy, labelled image set."""
    protos = torch.rand(C, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 2
    y = torch.arange(C).repeat(n_per_class)
    x = protos[y] + 0.05 * torch.randn(len(y), 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    return TensorDataset(x, y)


class FakeWM:
    """The WorldModel protocol on a toy: tokens = a fixed linear map of each image row; an action
    is a random scalar added to every token of the target; the predictor applies it exactly
    ("exact"), ignores it ("ignore") or applies it with noise ("noisy")."""

    def __init__(self, encoder: nn.Module, predictor: nn.Module, mode: str = "exact"):
        self.encoder, self.predictor, self.mode = encoder, predictor, mode
        self.last: nn.Module | None = None

    @torch.no_grad()
    def encode(self, images):
        return self.encoder(images[:, 0])  # [B, 4 rows, D]

    def finetune_predictor(self, pretrained=True):
        p = copy.deepcopy(self.predictor)
        if not pretrained:
            p.reset_parameters()
        self.last = p
        return p

    @torch.no_grad()
    def world_model_batch(self, images, n_candidates, generator):
        z = self.encode(images).flatten(1)[:, None]  # [B, 1, F]
        a = torch.rand(len(z), n_candidates, 1, generator=generator)
        cand = z + a
        if self.mode == "exact":
            return cand.clone(), cand
        if self.mode == "ignore":
            return z.expand_as(cand), cand
        return cand + 0.3 * torch.randn(cand.shape, generator=generator), cand


def _wm(mode="exact", seed=0, dim=8) -> FakeWM:
    torch.manual_seed(seed)
    return FakeWM(nn.Linear(4, dim), nn.Linear(dim, dim), mode)


# ------------------------------------------------------------------------------------------------
# MRR


def test_mrr_hand_computed():
    # One image, candidates c = [0, 1, 3] (F = 1), predictions p = [0.4, 2.6, -1]:
    # j=0: |0.4-c| = [0.4, 0.6, 2.6], true 0.4, none closer -> rank 1
    # j=1: |2.6-c| = [2.6, 1.6, 0.4], true 1.6, c2 closer   -> rank 2
    # j=2: |-1-c|  = [1, 2, 4],       true 4, c0 c1 closer  -> rank 3
    cand = torch.tensor([[[0.0], [1.0], [3.0]]])
    pred = torch.tensor([[[0.4], [2.6], [-1.0]]])
    assert mean_reciprocal_rank(pred, cand) == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)  # 11/18
    # A tie counts for the prediction: j=1 at 0.5 is 0.5 from c0 and c1 -> rank 1.
    pred_tie = torch.tensor([[[0.4], [0.5], [-1.0]]])
    assert mean_reciprocal_rank(pred_tie, cand) == pytest.approx((1 + 1 + 1 / 3) / 3)
    # Two images: the mean over every (image, candidate).
    both = mean_reciprocal_rank(torch.cat([pred, cand]), torch.cat([cand, cand]))
    assert both == pytest.approx((11 / 18 + 1) / 2)


def test_mrr_perfect_and_action_ignoring_predictors():
    g = torch.Generator().manual_seed(0)
    cand = torch.randn(3, 10, 5, generator=g)
    assert mean_reciprocal_rank(cand.clone(), cand) == 1.0
    ignoring = torch.randn(3, 1, 5, generator=g).expand(3, 10, 5)  # the same prediction for every action
    assert mean_reciprocal_rank(ignoring, cand) == pytest.approx(chance_mrr(10), rel=1e-12)
    with pytest.raises(ValueError, match=r"\[B, N, F\]"):
        mean_reciprocal_rank(cand, cand[:, :5])


def test_chance_mrr():
    assert chance_mrr(1) == 1.0
    assert chance_mrr(2) == 0.75
    assert chance_mrr(3) == pytest.approx(11 / 18)
    assert chance_mrr(256) == pytest.approx(0.02393, abs=1e-5)


def test_world_model_mrr_on_the_fake():
    data = _images(10, seed=1)
    assert isinstance(_wm(), WorldModel)
    assert world_model_mrr(_wm("exact"), data, 16, 20, 8, seed=0) == 1.0
    assert world_model_mrr(_wm("ignore"), data, 16, 20, 8, seed=0) == pytest.approx(chance_mrr(16), rel=1e-9)
    a = world_model_mrr(_wm("noisy"), data, 16, 20, 8, seed=0)
    b = world_model_mrr(_wm("noisy"), data, 16, 20, 8, seed=0)
    c = world_model_mrr(_wm("noisy"), data, 16, 20, 8, seed=1)
    assert a == b and a != c
    assert chance_mrr(16) < a < 1.0


def test_world_model_mrr_reads_only_n_images():
    seen = []

    class Counting(FakeWM):
        def world_model_batch(self, images, n_candidates, generator):
            seen.append(len(images))
            return super().world_model_batch(images, n_candidates, generator)

    world_model_mrr(Counting(nn.Linear(4, 8), nn.Linear(8, 8)), _images(10, seed=1), 4, 13, 5, seed=0)
    assert seen == [5, 5, 3]


# ------------------------------------------------------------------------------------------------
# Predictor fine-tuning

FT = dict(epochs=30, lr=1e-2, predictor_lr_scale=0.1, weight_decay=0.01, batch_size=16, seed=0)


def test_predictor_finetune_learns_and_trains_only_the_predictor():
    train, test = _images(12, seed=1), _images(5, seed=2)
    wm = _wm(seed=3)
    enc0 = copy.deepcopy(wm.encoder.state_dict())
    pred0 = copy.deepcopy(wm.predictor.state_dict())
    acc = predictor_finetune(wm, train, test, pretrained=True, **FT)
    assert acc >= 90.0
    for k, v in wm.encoder.state_dict().items():  # frozen encoder
        assert torch.equal(v, enc0[k]), k
    for k, v in wm.predictor.state_dict().items():  # the model's own predictor is untouched
        assert torch.equal(v, pred0[k]), k
    assert not torch.allclose(wm.last.weight, pred0["weight"])  # the fine-tuned copy moved
    first = copy.deepcopy(wm.last.state_dict())
    assert predictor_finetune(wm, train, test, pretrained=True, **FT) == acc  # deterministic
    assert all(torch.equal(v, first[k]) for k, v in wm.last.state_dict().items())


def test_predictor_lr_scale_applies_to_the_pretrained_predictor_only():
    train, test = _images(4, seed=1), _images(2, seed=2)
    wm = _wm(seed=3)
    ft = {**FT, "epochs": 2, "predictor_lr_scale": 1e-12}
    predictor_finetune(wm, train, test, pretrained=True, **ft)
    assert (wm.last.weight - wm.predictor.weight).abs().max() < 1e-8
    predictor_finetune(wm, train, test, pretrained=False, **ft)
    trained = wm.last
    with torch.random.fork_rng():
        torch.manual_seed(ft["seed"])
        reinit = wm.finetune_predictor(pretrained=False)
    assert not torch.allclose(reinit.weight, wm.predictor.weight)  # a re-initialised start ...
    assert (trained.weight - reinit.weight).abs().max() > 1e-3  # ... trained at the full lr


# ------------------------------------------------------------------------------------------------
# The evaluator


@dataclass
class WMEval:
    mrr: bool = True
    mrr_candidates: int = 8
    mrr_images: int = 8
    predictor_finetune: bool = True
    finetune_epochs: int = 3
    finetune_lr: float = 1e-2
    predictor_lr_scale: float = 0.1
    finetune_weight_decay: float = 0.01
    finetune_batch_size: int = 16
    random_predictor: bool = True


class Rows(nn.Module):
    def __init__(self, lin: nn.Module):
        super().__init__()
        self.lin = lin

    def forward(self, x):
        return self.lin(x[:, 0])


class ToyMethod(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder, self.predictor = nn.Linear(4, 8), nn.Linear(8, 8)

    def eval_encoder(self):
        return Rows(self.encoder)


def _spec(extra=True, built: list | None = None) -> MethodSpec:
    def make(m, cfg):
        if built is not None:
            built.append(m.encoder.weight.detach().clone())
        return FakeWM(m.encoder, m.predictor, "noisy")

    return MethodSpec(name="evaltest_iwm", config_cls=object, build_model=lambda cfg: ToyMethod(),
                      build_train_data=lambda cfg, r, w: (None, None),
                      build_eval_data=lambda cfg: (_images(6, 1), _images(3, 2)), evaluator="world_model",
                      extra={"world_model": make} if extra else {})


def _cfg(**wm):
    return SimpleNamespace(eval=EvalConfig(protocols=("linear",), batch_size=32, raw_baseline=False, plots=False),
                           train=SimpleNamespace(seed=0, max_bad_fraction=0.01), world_model_eval=WMEval(**wm))


def test_evaluate_world_model(tmp_path):
    built: list = []
    spec, cfg = _spec(built=built), _cfg()
    torch.manual_seed(0)
    model = spec.build_model(cfg)
    out = evaluate_world_model(spec, cfg, model, out_dir=tmp_path)
    torch.manual_seed(cfg.train.seed + 1)  # the random-init row: the probes' rule
    assert len(built) == 2 and torch.equal(built[1], ToyMethod().encoder.weight)
    assert torch.equal(built[0], model.encoder.weight)
    probes = evaluate_encoders(spec, cfg, model)
    res = out["results"]
    assert set(res) == {"pretrained", "random init", "world_model"}
    for row in ("pretrained", "random init"):  # the probes' rows, unchanged
        assert {k: v for k, v in res[row].items() if k != "seconds"} == \
               {k: v for k, v in probes["results"][row].items() if k != "seconds"}
    wm = res["world_model"]
    assert list(wm["rows"]) == ["pretrained", "random init", "pretrained encoder, re-initialised predictor",
                                "chance (action ignored)"]
    assert set(wm["rows"]["pretrained"]) == {"mrr", "predictor_finetune"}
    assert set(wm["rows"]["random init"]) == {"mrr"}
    assert set(wm["rows"]["pretrained encoder, re-initialised predictor"]) == {"predictor_finetune"}
    assert wm["rows"]["chance (action ignored)"]["mrr"] == round(chance_mrr(8), 4)
    assert chance_mrr(8) < wm["rows"]["pretrained"]["mrr"] <= 1.0
    assert wm["settings"]["mrr_candidates"] == 8
    md = out["markdown"]
    assert md.startswith(probes["markdown"]) and "### World model" in md
    assert "| row | MRR | predictor fine-tuning top-1 (%) |" in md
    assert f"| pretrained | {wm['rows']['pretrained']['mrr']:.4f} | " in md
    assert (tmp_path / "world_model.json").exists()
    off = evaluate_world_model(spec, _cfg(mrr=False, predictor_finetune=False), model)
    assert "world_model" not in off["results"]


def test_evaluator_is_registered_and_checks_its_config():
    assert registry.get_evaluator("world_model") is evaluate_world_model
    assert evaluate_world_model.check_config is check_config
    check_config(_cfg())
    for key, bad in (("finetune_lr", 0.0), ("predictor_lr_scale", -1.0), ("mrr_candidates", 1),
                     ("mrr_images", 0), ("finetune_epochs", 2.5), ("mrr", 1)):
        with pytest.raises(ConfigError, match=rf"world_model_eval\.{key} must be"):
            check_config(_cfg(**{key: bad}))
    with pytest.raises(ConfigError, match="attentive_form"):  # the probes' check runs too
        check_config(SimpleNamespace(eval=EvalConfig(attentive_form="nope"), world_model_eval=WMEval()))
    with pytest.raises(ConfigError, match="world_model_eval"):
        check_config(SimpleNamespace(eval=EvalConfig()))


def test_evaluator_without_an_adapter():
    spec = _spec(extra=False)
    with pytest.raises(ConfigError, match=r"extra\['world_model'\]"):
        evaluate_world_model(spec, _cfg(), spec.build_model(None))
