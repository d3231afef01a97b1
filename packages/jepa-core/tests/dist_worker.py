"""A tiny JEPA run for the distributed and fault-tolerance tests: started by `torchrun` (or plain
python for one process) from test_core_distributed.py and test_core_faults.py. Not a test file.

    python dist_worker.py RUN_DIR [--batch-size 16] [--accum 1] [--steps 12] [--strategy auto]
                          [--resume] [--checkpoint-every 1] [--step-sleep 0]
"""

from __future__ import annotations

import argparse
import time

import torch
from jepa_core.config import OptimConfig, TrainConfig
from jepa_core.data import collate_stamped
from jepa_core.distributed import shutdown_distributed
from jepa_core.method import JEPAMethod
from jepa_core.target import EMATarget
from jepa_core.testing import nan_at_steps
from jepa_core.trainer import Trainer
from torch import nn
from torch.utils.data import Dataset

D = 8


class Points(Dataset):
    """Fixed points plus per-sample noise drawn from the global RNG, which the trainer seeds per
    (seed, step, index): the same sample gets the same noise on any rank, after any resume."""

    def __init__(self, n: int = 256):
        self.x = torch.randn(n, D, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i] + 0.1 * torch.randn(D)


def collate(samples):
    x, _, bad = collate_stamped(samples)
    return {"x": x, "num_bad": bad}


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(D, 2 * D)
        self.blocks = nn.ModuleList([nn.Linear(2 * D, 2 * D) for _ in range(2)])
        self.norm = nn.LayerNorm(2 * D)

    def forward(self, x):
        h = self.stem(x)
        for blk in self.blocks:
            h = h + torch.tanh(blk(h))
        return self.norm(h)


class TinyJEPA(JEPAMethod):
    """Predict the EMA target's features of the clean input from the encoder's features of a
    randomly masked input (the mask comes from the per-sample-seeded noise's sign)."""

    def __init__(self):
        super().__init__()
        self.encoder = Encoder()
        self.predictor = nn.Sequential(nn.Linear(2 * D, 2 * D), nn.GELU(), nn.Linear(2 * D, 2 * D))
        self.target_encoder = EMATarget(self.encoder)

    def forward(self, batch):
        x = batch["x"]
        with torch.no_grad():
            h = nn.functional.layer_norm(self.target_encoder(x), (2 * D,))
        z = self.predictor(self.encoder(x * (x > -0.5)))
        return {"loss": nn.functional.smooth_l1_loss(z, h)}


class Sleepy:
    """A callback that slows each logged step down, so a test can kill the run mid-way."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, trainer, step, row):
        time.sleep(self.seconds)


def train(run_dir, resume=False, batch_size=16, accum=1, steps=12, strategy="auto", checkpoint_every=1000,
          step_sleep=0.0, nonfinite="stop", nan_steps=(), slow_until_resumed=False) -> dict:
    """One run; returns where it started and ended. ``slow_until_resumed``: sleep ``step_sleep``
    per step only in a run that did not resume (the launcher test interrupts that one)."""
    torch.manual_seed(0)
    model = TinyJEPA()
    oc = OptimConfig(epochs=100, warmup=0.5, start_lr=0.01, lr=0.05, final_lr=0.001, weight_decay=0.04,
                     final_weight_decay=0.4, ema=(0.9, 1.0), grad_accum=accum, max_steps=steps,
                     clip_grad=1.0)
    tc = TrainConfig(device="cpu", progress=False, log_every=1, checkpoint_every=checkpoint_every,
                     num_threads=1, strategy=strategy, keep_last=3, nonfinite=nonfinite, per_rank_metrics=True)
    sleep = step_sleep if not (slow_until_resumed and resume) else 0.0
    callbacks = [Sleepy(sleep)] if sleep else []
    tr = Trainer(model, Points(), collate, oc, tc, run_dir, batch_size=batch_size, callbacks=callbacks,
                 loss_hook=nan_at_steps(*nan_steps) if nan_steps else None)
    try:
        res = tr.fit(resume=resume)
        out = {"first_step": res.history[0]["step"] if res.history else None, "steps": res.steps,
               "resume": resume, "rank": tr.dist.rank, "world_size": tr.dist.world_size}
    finally:
        info = tr.dist
        del tr, model
        shutdown_distributed(info)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--accum", type=int, default=1)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--strategy", default="auto")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--checkpoint-every", type=int, default=1000)
    ap.add_argument("--step-sleep", type=float, default=0.0)
    ap.add_argument("--nonfinite", default="stop")
    ap.add_argument("--nan-steps", default="")
    a = ap.parse_args()
    train(a.run_dir, a.resume, a.batch_size, a.accum, a.steps, a.strategy, a.checkpoint_every, a.step_sleep,
          a.nonfinite, tuple(int(s) for s in a.nan_steps.split(",") if s))


if __name__ == "__main__":
    main()
