"""The step a :class:`MaskCollator` stamps, as a method sees it: a batch transform that takes
``step=`` gets the loader step (the same with and without DataLoader workers and after a
resume), and :func:`jepa_core.data.epoch_of_batch` turns it into the Trainer's epoch, counted
in optimizer steps (with ``optim.grad_accum > 1`` every micro-batch of an optimizer step is in
the same epoch, the epoch switching at the optimizer step where the Trainer's ``epoch`` column
does)."""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from jepa_core import registry
from jepa_core.config import BaseConfig
from jepa_core.data import Stamped, epoch_of_batch
from jepa_core.masks import MaskCollator
from jepa_core.method import JEPAMethod
from jepa_core.run import pretrain
from jepa_core.testing import PointsDataset
from torch import nn

SEEN: list[tuple[int, int]] = []  # (step, epoch) of every batch the method's forward got


class StepFields:
    """A batch transform that adds the batch's loader step and Trainer epoch."""

    def __init__(self, steps_per_epoch: int, grad_accum: int, ipe: int | None):
        self.epoch_of = functools.partial(epoch_of_batch, steps_per_epoch=steps_per_epoch, grad_accum=grad_accum,
                                          ipe=ipe)

    def __call__(self, x, generator, slots=None, total=None, step=None):
        return x, {"step": step, "epoch": self.epoch_of(step)}


class Recorder(JEPAMethod):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(4, 4)
        self.predictor = nn.Linear(4, 4)

    def forward(self, batch: dict) -> dict:
        SEEN.append((int(batch["step"]), int(batch["epoch"])))
        x = batch["x"]
        return {"loss": F.mse_loss(self.predictor(self.encoder(x)), x)}


@dataclass
class Data:
    n: int = 40
    batch_size: int = 8
    num_workers: int = 0


@dataclass
class StepConfig(BaseConfig):
    method: str = "coretest_step_hook"
    data: Data = field(default_factory=Data)


def _build_train_data(cfg, rank, world_size):
    steps = len(range(cfg.data.n)) // world_size // cfg.data.batch_size
    collate = MaskCollator(None, seed=cfg.train.seed, rank=rank, world_size=world_size, input_key="x",
                           batch_transform=StepFields(steps, cfg.optim.grad_accum, cfg.optim.ipe))
    return PointsDataset(cfg.data.n), collate


SPEC = registry.MethodSpec(name="coretest_step_hook", config_cls=StepConfig, build_model=lambda cfg: Recorder(),
                           build_train_data=_build_train_data, evaluator=None)
registry.register_method(SPEC)

RUN = ["optim.warmup=0", "optim.epochs=10", "train.device=cpu", "train.progress=false", "train.num_threads=1",
       "train.log_every=1"]


def _run(tmp_path, *extra: str, name: str = "run", resume: bool = False) -> list[tuple[int, int]]:
    SEEN.clear()
    pretrain(SPEC.name, overrides=RUN + list(extra), run_dir=tmp_path / name, resume=resume)
    return list(SEEN)


# ---------------------------------------------------------------------------------------------
# the collator


def test_a_transform_taking_step_gets_the_stamp_or_the_counter():
    got = []

    def transform(x, generator, step):
        got.append(step)
        return x

    collate = MaskCollator(None, input_key="x", batch_transform=transform)
    x = torch.zeros(4)
    samples = [Stamped(x, 7, 0), Stamped(x, 7, 1)]
    assert collate.step_of(samples) == 7
    collate(samples)
    assert got == [7] and collate.last_step == 7
    # unstamped samples: the collator's own count of batches, from 0
    assert collate.step_of([x, x]) is None
    collate([x, x])
    collate([x, x])
    assert got == [7, 0, 1] and collate.last_step == 1
    # the process scope and a slot-aware transform get it too; one without the keyword does not
    seen = {}

    def slot_aware(x, generator, slots=None, total=None, step=None):
        seen["slots"], seen["step"] = slots.tolist(), step
        return x

    MaskCollator(None, input_key="x", batch_transform=slot_aware, rank=1, world_size=2)(
        [Stamped(x, 3, 1), Stamped(x, 3, 3)])
    assert seen == {"slots": [1, 3], "step": 3}
    MaskCollator(None, input_key="x", batch_transform=lambda x, g, step: got.append(step) or x, scope="process")(
        [Stamped(x, 5, 0)])
    assert got[-1] == 5
    plain = MaskCollator(None, input_key="x", batch_transform=lambda x, g, **kw: (x, {"kw": sorted(kw)}))
    assert plain([Stamped(x, 2, 0)])["kw"] == []  # **kwargs alone does not ask for the step


def test_epoch_of_batch_counts_optimizer_steps():
    # 5 micro-batches an epoch, 2 per optimizer step: the Trainer's ipe is 2 optimizer steps
    epochs = [epoch_of_batch(s, 5, grad_accum=2) for s in range(10)]
    assert epochs == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    # micro-batches counted as epochs (step // 5) would split optimizer step 2 across epochs 0 and 1
    assert [s // 5 for s in (4, 5)] == [0, 1]
    assert [epoch_of_batch(s, 5) for s in (4, 5)] == [0, 1]  # no accumulation: micro-batch = step
    assert epoch_of_batch(9, 5, grad_accum=2, ipe=3) == 1  # optim.ipe overrides the length


# ---------------------------------------------------------------------------------------------
# what a method sees in a run


def test_a_method_sees_the_steps_and_epochs_with_and_without_workers(tmp_path):
    plain = _run(tmp_path, "optim.max_steps=12", name="plain")
    # 40 points, batches of 8: 5 steps an epoch
    assert plain == [(s, s // 5) for s in range(12)]
    workers = _run(tmp_path, "optim.max_steps=12", "data.num_workers=2", name="workers")
    assert workers == plain


def test_after_a_resume_the_method_sees_the_same_steps_and_epochs(tmp_path):
    whole = _run(tmp_path, "optim.max_steps=12", name="whole")
    first = _run(tmp_path, "optim.max_steps=7", name="cut")
    rest = _run(tmp_path, "optim.max_steps=12", name="cut", resume=True)
    assert first + rest == whole


@pytest.mark.parametrize("accum", [2, 3])
def test_with_grad_accum_the_epoch_switches_at_the_trainers_optimizer_step(tmp_path, accum):
    seen = _run(tmp_path, "optim.max_steps=6", f"optim.grad_accum={accum}")
    assert [s for s, _ in seen] == list(range(6 * accum))  # micro-batches
    ipe = 5 // accum  # the Trainer's optimizer steps per epoch (5 micro-batches an epoch)
    for opt_step in range(6):
        micro = seen[opt_step * accum:(opt_step + 1) * accum]
        assert {e for _, e in micro} == {opt_step // ipe}, (opt_step, micro)
    # the Trainer's own epoch column: the logged row of optimizer step k (1-based) is k / ipe
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv", newline="")))
    assert [float(r["epoch"]) for r in rows] == pytest.approx([k / ipe for k in range(1, 7)], abs=1e-4)
