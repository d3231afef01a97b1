"""Tiny stand-ins for tests of the training plumbing: a point dataset, its collate function and a
two-linear-layer JEPA. They run in milliseconds on a CPU, so a test of the Trainer (or of a
callback, a launcher, a fault policy) exercises the real loop without a real model.

    from jepa_core.testing import PointsDataset, collate_points, LinearJEPA
    Trainer(LinearJEPA(), PointsDataset(), collate_points, OptimConfig(...), TrainConfig(...), run_dir)
"""

from __future__ import annotations

import contextlib
import hashlib

import torch
from torch import nn
from torch.utils.data import Dataset

from jepa_core.data import CorruptSampleError, collate_stamped
from jepa_core.method import JEPAMethod
from jepa_core.target import EMATarget

__all__ = ["LinearJEPA", "PointsDataset", "collate_points", "nan_at_steps", "last_logged_step", "no_tf32", "one_error_line", "unranged_fields", "official_layout", "tensor_digest"]


class PointsDataset(Dataset):
    """``n`` fixed Gaussian points in ``d`` dimensions (``torch.randn`` from ``seed``); indices in
    ``corrupt`` raise :class:`jepa_core.data.CorruptSampleError`, like an unreadable file."""

    def __init__(self, n: int = 64, d: int = 4, corrupt=(), seed: int = 0):
        self.x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
        self.corrupt = set(corrupt)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        if i in self.corrupt:
            raise CorruptSampleError(f"sample {i} is unreadable")
        return self.x[i]


def collate_points(samples) -> dict:
    """``{"x", "num_bad"}``, or ``{"skip": True, "num_bad"}`` when every sample was corrupt."""
    x, _, bad = collate_stamped(samples)
    if x is None:
        return {"skip": True, "num_bad": bad}
    return {"x": x, "num_bad": bad}


class LinearJEPA(JEPAMethod):
    """Predict the EMA target's output of ``x`` from the encoder's output of ``x`` (squared error).

    ``hidden``: the encoder is ``Linear -> GELU -> Linear`` through that width instead of one
    Linear. ``nan_at_call``: from that forward call on the loss is NaN (fault-policy tests)."""

    def __init__(self, d: int = 4, hidden: int | None = None, nan_at_call: int | None = None):
        super().__init__()
        self.encoder = nn.Linear(d, d) if hidden is None else nn.Sequential(
            nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))
        self.predictor = nn.Linear(d, d)
        self.target_encoder = EMATarget(self.encoder)
        self.calls = 0
        self.nan_at_call = nan_at_call

    def forward(self, batch: dict) -> dict:
        self.calls += 1
        with torch.no_grad():
            h = self.target_encoder(batch["x"]).float()
        loss = ((self.predictor(self.encoder(batch["x"])).float() - h) ** 2).mean()
        if self.nan_at_call is not None and self.calls >= self.nan_at_call:
            loss = loss * float("nan")
        return {"loss": loss}


def nan_at_steps(*steps: int):
    """A ``Trainer(loss_hook=...)`` that makes the loss NaN at these 1-based optimizer steps
    (every micro-batch of them), to test the non-finite policies of any method:

        Trainer(..., loss_hook=nan_at_steps(3, 4))
    """
    bad = frozenset(steps)

    def hook(step: int, loss: torch.Tensor) -> torch.Tensor:
        return loss * float("nan") if step in bad else loss

    return hook


@contextlib.contextmanager
def no_tf32():
    """Exact fp32 on CUDA inside the block: TF32 off for matmuls and cuDNN convolutions (cuDNN
    uses it by default), for comparisons against the CPU."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def tensor_digest(tensors) -> str:
    """First 16 hex digits of the sha256 of the tensors' shapes and bytes, in order: a compact
    recorded value for regression tests (e.g. the masks a collator draws for a given seed)."""
    d = hashlib.sha256()
    for t in tensors:
        d.update(str(tuple(t.shape)).encode())
        d.update(t.detach().cpu().contiguous().numpy().tobytes())
    return d.hexdigest()[:16]


def official_layout(method: nn.Module, prefix: str, perturb: float = 0.01) -> dict:
    """``{"encoder", "predictor", "target_encoder"}`` state dicts of ``method`` with a DDP
    ``prefix`` (``"module."``: I-JEPA, ``"module.backbone."``: V-JEPA), the layout of an official
    checkpoint, for loader tests. With ``perturb`` the trainable weights first get that much
    Gaussian noise, so that a loader that rebuilt the init instead of loading would be caught."""
    if perturb:
        with torch.no_grad():
            for p in method.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p) * perturb)

    def prefixed(sd: dict) -> dict:
        return {prefix + k: v for k, v in sd.items()}

    obj = {p: prefixed(getattr(method, p).state_dict()) for p in ("encoder", "predictor")}
    obj["target_encoder"] = prefixed(method.target_encoder.module.state_dict())
    return obj


def last_logged_step(run_dir) -> int:
    """The last step in ``run_dir/metrics.csv`` (0 before the first row): what a test that kills
    or signals a training subprocess waits for."""
    import csv
    from pathlib import Path

    try:
        with open(Path(run_dir) / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    except (FileNotFoundError, ValueError):
        return 0
    return int(rows[-1]["step"]) if rows else 0


def one_error_line(stderr: str) -> str:
    """The single ``jepa: error:`` line of a command's stderr, asserting there is exactly one
    and no traceback (the CLI's contract for user errors)."""
    lines = [line for line in stderr.splitlines() if line.startswith("jepa: error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return lines[0]


def unranged_fields(cls: type) -> list[str]:
    """The numeric fields (int / float, optional or in tuples) of config dataclass ``cls`` and
    of its sections that declare no valid range (:func:`jepa_core.config.ranges`), as dotted
    keys: a test asserts it is empty so that a new setting cannot skip validation."""
    import dataclasses
    import typing

    from jepa_core.config import field_ranges

    def numeric(tp) -> bool:
        if typing.get_origin(tp) is typing.Literal:
            return False
        return tp in (int, float) or any(numeric(a) for a in typing.get_args(tp) if a not in (type(None), Ellipsis))

    hints, declared, out = typing.get_type_hints(cls), field_ranges(cls), []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            out += [f"{f.name}.{k}" for k in unranged_fields(tp)]
        elif numeric(tp) and f.name not in declared:
            out.append(f.name)
    return out


def run_pretrain(method: str, args: list[str], run_dir, nproc: int = 0, timeout: float = 300,
                 resume: bool = False):
    """``jepa pretrain <method> <args> --run-dir <run_dir>`` in a subprocess: a plain process
    (``nproc=0``) or ``torchrun --standalone --nproc_per_node=<nproc>`` (gloo on CPU), one
    thread each and none of the caller's torchrun variables; fails the test with the output's
    tail unless it exits 0. Returns the ``subprocess.CompletedProcess``."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    launch = [sys.executable] if nproc == 0 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd = [*launch, "-m", "jepa_core.cli", "pretrain", method, *args, "--run-dir", str(run_dir)]
    proc = subprocess.run(cmd + (["--resume"] if resume else []), capture_output=True, text=True, timeout=timeout,
                          env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc
