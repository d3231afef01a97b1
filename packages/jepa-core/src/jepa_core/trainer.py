"""The training loop shared by every method: devices, precision, DDP, gradient accumulation and
clipping, per-iteration schedules, the EMA target update, checkpoints and resume, a NaN guard,
progress and metrics. The method's own algorithm lives in its ``forward(batch)``."""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset

from jepa_core import checkpoint as ckpt
from jepa_core.config import OptimConfig, TrainConfig
from jepa_core.data import StampedDataset, StepBatchSampler
from jepa_core.distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    init_distributed,
    resolve_device,
)
from jepa_core.method import JEPAMethod
from jepa_core.optim import adamw_kwargs, maybe_compile, param_groups
from jepa_core.schedules import (
    CosineWD,
    LinearDecay,
    LinearMomentum,
    WarmupConstant,
    WarmupCosine,
    schedule_length,
)

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped without overwriting good checkpoints."""


class TooManyBadSamplesError(RuntimeError):
    """More corrupt samples than ``train.max_bad_fraction`` allows."""


@dataclass
class TrainState:
    step: int = 0  # optimizer steps completed
    samples_seen: int = 0
    bad_samples: int = 0
    batches_consumed: int = 0  # loader batches used, skipped all-corrupt ones included


@dataclass
class FitResult:
    steps: int
    final_loss: float
    seconds: float
    samples_per_second: float
    run_dir: Path
    bad_samples: int = 0
    history: list[dict] = field(default_factory=list)


def move_to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)
    return batch


class Trainer:
    """Runs ``model`` on ``dataset`` (map-style) with ``collate_fn`` under the given configs.

    The data order, augmentations and masks of every step are functions of (seed, step, rank)
    (see :mod:`jepa_core.data`), and the checkpoint holds model, target, optimizer, step and
    RNG state, so ``fit(resume=True)`` continues exactly where a killed run stopped.
    Callbacks are called as ``cb(trainer, step, logs)`` after each logged step.
    """

    def __init__(
        self,
        model: JEPAMethod,
        dataset: Dataset,
        collate_fn: Callable,
        optim: OptimConfig,
        train: TrainConfig,
        run_dir: str | Path,
        batch_size: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        config_dict: dict | None = None,
        callbacks: list[Callable] | None = None,
    ):
        self.model, self.dataset, self.collate_fn = model, dataset, collate_fn
        self.optim_cfg, self.train_cfg = optim, train
        self.run_dir = Path(run_dir)
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.config_dict = config_dict or {}
        self.callbacks = list(callbacks or [])
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.state = TrainState()

    # -- setup ---------------------------------------------------------------------------------

    def _setup(self) -> None:
        tc, oc = self.train_cfg, self.optim_cfg
        if tc.num_threads:
            torch.set_num_threads(tc.num_threads)
        self.device = resolve_device(tc.device)
        self.dist: DistInfo = init_distributed(self.device)
        precision = tc.precision
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        self.amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        self.model.to(self.device)
        self.net = self.model
        if self.dist.initialized:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DDP(self.model, device_ids=ids)
        self.net = maybe_compile(self.net, tc.compile)
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model.trainable_modules()), lr=oc.start_lr, betas=oc.betas, eps=oc.eps,
            weight_decay=oc.weight_decay, **adamw_kwargs(self.device),
        )
        accum = max(1, oc.grad_accum)
        probe = StepBatchSampler(len(self.dataset), self.batch_size, 1, tc.seed, self.dist.rank, self.dist.world_size)
        loader_ipe = probe.steps_per_epoch // accum
        if loader_ipe < 1:
            raise ValueError("one epoch holds fewer micro-batches than optim.grad_accum; lower it")
        self.ipe = oc.ipe or loader_ipe
        T = schedule_length(oc.epochs, self.ipe, oc.ipe_scale)
        warm = int(oc.warmup * self.ipe)
        if oc.lr_schedule == "cosine":
            self.lr_schedule = WarmupCosine(oc.start_lr, oc.lr, oc.final_lr, warm, T)
        elif oc.lr_schedule == "linear":
            self.lr_schedule = LinearDecay(oc.lr, oc.final_lr, T)
        else:
            self.lr_schedule = WarmupConstant(oc.start_lr, oc.lr, warm)
        self.wd_schedule = CosineWD(oc.weight_decay, oc.final_weight_decay, T)
        self.momentum_schedule = LinearMomentum(oc.ema[0], oc.ema[1], T)
        self.warmup_steps = warm
        self.total_steps = int(oc.epochs * self.ipe)
        if oc.max_steps is not None:
            self.total_steps = min(self.total_steps, oc.max_steps)

    def _loader(self, start_batch: int) -> DataLoader:
        # Endless: a batch whose samples were all corrupt is skipped, so a run may need more
        # batches than steps; the position to resume from is the number of batches consumed.
        tc = self.train_cfg
        sampler = StepBatchSampler(
            len(self.dataset), self.batch_size, None, tc.seed, self.dist.rank, self.dist.world_size,
            start_step=start_batch,
        )
        return DataLoader(
            StampedDataset(self.dataset, tc.seed), batch_sampler=sampler, collate_fn=self.collate_fn,
            num_workers=self.num_workers, pin_memory=self.pin_memory and self.device.type == "cuda",
            persistent_workers=False, prefetch_factor=4 if self.num_workers else None,
        )

    # -- checkpoints -----------------------------------------------------------------------------

    def _rng_state(self) -> dict:
        state = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def save_checkpoint(self) -> Path | None:
        if self.dist.is_main:
            obj = {
                "format": "jepa-run",
                "version": 1,
                "step": self.state.step,
                "samples_seen": self.state.samples_seen,
                "bad_samples": self.state.bad_samples,
                "batches_consumed": self.state.batches_consumed,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "rng": self._rng_state(),
                "config": self.config_dict,
            }
            path = ckpt.atomic_save(obj, self.ckpt_dir / f"step-{self.state.step}.pt")
            ckpt.atomic_link(path, self.ckpt_dir / "latest.pt")
            for _, old in ckpt.step_checkpoints(self.ckpt_dir)[: -max(1, self.train_cfg.keep_checkpoints)]:
                old.unlink(missing_ok=True)
        barrier(self.dist)
        return self.ckpt_dir / "latest.pt"

    def _resume(self) -> bool:
        found = ckpt.latest_valid(self.ckpt_dir)
        if found is None:
            return False
        path, obj = found
        missing = [k for k in ("model", "optimizer", "step") if k not in obj]
        if missing:
            raise ckpt.CheckpointError(f"{path} is not a jepa run checkpoint (missing {missing})")
        self.model.load_state_dict(obj["model"])
        self.optimizer.load_state_dict(obj["optimizer"])
        if self.scaler and obj.get("scaler"):
            self.scaler.load_state_dict(obj["scaler"])
        rng = obj.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "python" in rng:
            random.setstate(_as_python_rng_state(rng["python"]))
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        accum = max(1, self.optim_cfg.grad_accum)
        self.state = TrainState(
            obj["step"], obj.get("samples_seen", 0), obj.get("bad_samples", 0),
            obj.get("batches_consumed", obj["step"] * accum),
        )
        if self.dist.is_main:
            log.info("resumed from %s at step %d", path, self.state.step)
        return True

    # -- the loop --------------------------------------------------------------------------------

    def fit(self, resume: bool = False) -> FitResult:
        self._setup()
        if resume and not self._resume() and self.dist.is_main:
            log.info("no checkpoint in %s; starting from scratch", self.ckpt_dir)
        tc, oc = self.train_cfg, self.optim_cfg
        accum = max(1, oc.grad_accum)
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        metrics = MetricsWriter(self.run_dir, self.state.step, enabled=self.dist.is_main, tensorboard=tc.tensorboard)
        bar = None
        if tc.progress and self.dist.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.total_steps, initial=self.state.step, desc="pretrain", unit="step", dynamic_ncols=True)
        autocast = (
            torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else contextlib.nullcontext()
        )
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        loss_sum = torch.zeros((), device=self.device)
        loss_count = 0
        extra_sums: dict[str, torch.Tensor] = {}
        history: list[dict] = []
        t_start = t_log = time.perf_counter()
        samples_at_log = samples_at_start = self.state.samples_seen
        last_loss = float("nan")
        self.model.train()
        data_iter = iter(self._loader(self.state.batches_consumed))

        for step in range(self.state.step, self.total_steps):
            lr, wd, m = self.lr_schedule.value(step), self.wd_schedule.value(step), self.momentum_schedule.value(step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
                if not group.get("WD_exclude", False):
                    group["weight_decay"] = wd
            for micro in range(accum):
                batch = move_to(self._next_batch(data_iter), self.device)
                sync_ctx = self.net.no_sync() if (isinstance(self.net, DDP) and micro < accum - 1) else contextlib.nullcontext()
                with sync_ctx:
                    with autocast:
                        out = self.net(batch)
                    loss = out["loss"]
                    scaled = loss.float() / accum
                    (self.scaler.scale(scaled) if self.scaler else scaled).backward()
                nonfinite |= ~torch.isfinite(loss.detach())
                loss_sum += loss.detach().float()
                loss_count += 1
                for k, v in out.items():
                    if k != "loss":
                        v = torch.as_tensor(v, device=self.device).detach().float()
                        extra_sums[k] = extra_sums.get(k, torch.zeros((), device=self.device)) + v
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            if oc.clip_grad is not None and step >= self.warmup_steps:
                # Encoder and predictor clipped separately, after warm-up (jepa:app/vjepa/train.py).
                for module in self.model.trainable_modules().values():
                    torch.nn.utils.clip_grad_norm_(module.parameters(), oc.clip_grad)
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.model.update_target(m)
            self.state.step = step + 1

            is_last = self.state.step == self.total_steps
            if self.state.step % tc.log_every == 0 or is_last:
                mean_loss = all_reduce_mean(loss_sum / max(loss_count, 1), self.dist)
                bad = bool(all_reduce_mean(nonfinite.float(), self.dist).item() > 0)
                if bad:
                    self._stop_nonfinite(step)
                last_loss = float(mean_loss)
                now = time.perf_counter()
                rate = (self.state.samples_seen - samples_at_log) * self.dist.world_size / max(now - t_log, 1e-9)
                row = {
                    "step": self.state.step,
                    "epoch": round(self.state.step / self.ipe, 4),
                    "loss": last_loss,
                    "lr": lr,
                    "wd": wd,
                    "momentum": m,
                    "samples_per_s": round(rate, 2),
                    "elapsed_s": round(now - t_start, 2),
                    "bad_samples": self.state.bad_samples,
                }
                for k, v in extra_sums.items():
                    row[k] = float(v) / max(loss_count, 1)
                metrics.write(row)
                history.append(row)
                if bar is not None:
                    bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.0f}", refresh=False)
                for cb in self.callbacks:
                    cb(self, self.state.step, row)
                loss_sum.zero_()
                loss_count = 0
                extra_sums = {}
                t_log, samples_at_log = now, self.state.samples_seen
            if bar is not None:
                bar.update(1)
            if self.state.step % tc.checkpoint_every == 0 or is_last:
                if bool(all_reduce_mean(nonfinite.float(), self.dist).item() > 0):
                    self._stop_nonfinite(step)
                self.save_checkpoint()
        if bar is not None:
            bar.close()
        metrics.close()
        seconds = time.perf_counter() - t_start
        return FitResult(
            steps=self.state.step, final_loss=last_loss, seconds=seconds,
            samples_per_second=(self.state.samples_seen - samples_at_start) * self.dist.world_size / max(seconds, 1e-9),
            run_dir=self.run_dir, bad_samples=self.state.bad_samples, history=history,
        )

    def _next_batch(self, data_iter) -> Any:
        """The next usable batch; counts corrupt samples and skips batches with none left."""
        while True:
            batch = next(data_iter)
            self.state.batches_consumed += 1
            if isinstance(batch, dict):
                self.state.bad_samples += int(batch.pop("num_bad", 0) or 0)
                skip = batch.pop("skip", False)
            else:
                skip = False
            n = 0 if skip else _batch_len(batch)
            self.state.samples_seen += n
            self._check_bad_samples()
            if not skip:
                return batch

    def _check_bad_samples(self) -> None:
        seen = self.state.samples_seen + self.state.bad_samples
        limit = self.train_cfg.max_bad_fraction
        # Judge the fraction only once enough samples were seen for it to mean something.
        if self.state.bad_samples and seen >= 100 and self.state.bad_samples / seen > limit:
            raise TooManyBadSamplesError(
                f"{self.state.bad_samples} of {seen} samples could not be read "
                f"(more than train.max_bad_fraction={limit}); check the dataset, or raise the limit"
            )

    def _stop_nonfinite(self, step: int) -> None:
        latest = self.ckpt_dir / "latest.pt"
        where = f"the last good checkpoint is {latest}" if latest.exists() else "no checkpoint was written yet"
        raise NonFiniteLossError(
            f"the loss became NaN or infinite by step {step + 1}; stopped without saving ({where}). "
            "Lower optim.lr, set optim.clip_grad, or check the inputs; resume with --resume."
        )


def _batch_len(batch: Any) -> int:
    if isinstance(batch, dict):
        for v in batch.values():
            if isinstance(v, torch.Tensor):
                return int(v.shape[0])
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return int(batch[0].shape[0])
    return 0


def _as_python_rng_state(state: Any) -> tuple:
    # weights_only loading gives lists where random.getstate() had tuples.
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


class MetricsWriter:
    """metrics.csv (one row per logged step; rows past a resume point are dropped) and,
    optionally, TensorBoard scalars."""

    def __init__(self, run_dir: Path, start_step: int, enabled: bool = True, tensorboard: bool = False):
        self.enabled = enabled
        self.path = run_dir / "metrics.csv"
        self.fields: list[str] | None = None
        self.file = None
        self.tb = None
        if not enabled:
            return
        kept: list[dict] = []
        if self.path.exists():
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                self.fields = reader.fieldnames
                kept = [r for r in reader if int(float(r["step"])) <= start_step]
        if self.fields:
            with open(self.path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self.fields)
                w.writeheader()
                w.writerows(kept)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.warning("train.tensorboard=true needs `pip install jepa-core[tensorboard]`; skipping it")
            else:
                self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        if self.fields is None:
            self.fields = list(row)
            with open(self.path, "w", newline="") as f:
                csv.DictWriter(f, fieldnames=self.fields).writeheader()
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore").writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
