"""The training loop shared by every method: devices, precision, DDP or FSDP2, gradient
accumulation and clipping, per-iteration schedules, the EMA target update, checkpoints and
resume, a NaN/inf policy, bad-sample accounting, progress and metrics. The method's own
algorithm lives in its ``forward(batch)``."""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import random
import resource
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
    TrainableStep,
    all_reduce_mean,
    all_reduce_sum,
    barrier,
    broadcast_module_state,
    fully_shard_method,
    init_distributed,
    resolve_device,
    resolve_strategy,
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
    skipped_nonfinite: int = 0  # steps whose update was dropped (train.nonfinite=skip)


@dataclass
class FitResult:
    steps: int
    final_loss: float
    seconds: float
    samples_per_second: float
    run_dir: Path
    bad_samples: int = 0
    skipped_nonfinite: int = 0
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
        # Only the trainable modules go to the engine; the EMA target gets no gradients.
        self.strategy = resolve_strategy(tc.strategy, self.dist)
        self.net: torch.nn.Module = self.model
        self.fsdp_roots: list = []
        if self.strategy == "ddp":
            broadcast_module_state(self.model.target_encoder, self.dist)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DDP(TrainableStep(self.model), device_ids=ids)
        elif self.strategy == "fsdp":
            self.fsdp_roots = fully_shard_method(self.model, self.device, self.dist)
        if self.dist.is_main and self.dist.initialized:
            log.info("strategy %s over %d processes", self.strategy, self.dist.world_size)
        elif tc.strategy != "auto":
            log.info("train.strategy=%s applies under torchrun; this is a single process", tc.strategy)
        self.net = maybe_compile(self.net, tc.compile)
        accum = max(1, oc.grad_accum)
        self.global_batch = self.batch_size * self.dist.world_size * accum
        lr_scale = self.global_batch / oc.lr_scale_batch if oc.lr_scale_batch else 1.0
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model.trainable_modules()), lr=oc.start_lr * lr_scale, betas=oc.betas,
            eps=oc.eps, weight_decay=oc.weight_decay, **adamw_kwargs(self.device),
        )
        probe = StepBatchSampler(len(self.dataset), self.batch_size, 1, tc.seed, self.dist.rank, self.dist.world_size)
        loader_ipe = probe.steps_per_epoch // accum
        if loader_ipe < 1:
            raise ValueError("one epoch holds fewer micro-batches than optim.grad_accum; lower it")
        self.ipe = oc.ipe or loader_ipe
        T = schedule_length(oc.epochs, self.ipe, oc.ipe_scale)
        warm = int(oc.warmup * self.ipe)
        start_lr, ref_lr, final_lr = oc.start_lr * lr_scale, oc.lr * lr_scale, oc.final_lr * lr_scale
        if oc.lr_schedule == "cosine":
            self.lr_schedule = WarmupCosine(start_lr, ref_lr, final_lr, warm, T)
        elif oc.lr_schedule == "linear":
            self.lr_schedule = LinearDecay(ref_lr, final_lr, T)
        else:
            self.lr_schedule = WarmupConstant(start_lr, ref_lr, warm)
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

    def full_state_dicts(self) -> tuple[dict, dict]:
        """Model and optimizer state dicts in their unsharded form. Under FSDP this is a
        collective (every rank must call it) that gathers onto rank 0's CPU
        (``torch.distributed.checkpoint.state_dict.get_model_state_dict`` with
        ``full_state_dict=True, cpu_offload=True``); the other ranks get empty dicts. The
        optimizer state is then keyed by parameter name instead of number."""
        if self.strategy != "fsdp":
            return self.model.state_dict(), self.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return (
            get_model_state_dict(self.model, options=opts),
            get_optimizer_state_dict(self.model, self.optimizer, options=opts),
        )

    def save_checkpoint(self) -> Path | None:
        model_sd, optim_sd = self.full_state_dicts()
        if self.dist.is_main:
            obj = {
                "format": "jepa-run",
                "version": 1,
                "step": self.state.step,
                "samples_seen": self.state.samples_seen,
                "bad_samples": self.state.bad_samples,
                "batches_consumed": self.state.batches_consumed,
                "skipped_nonfinite": self.state.skipped_nonfinite,
                "model": model_sd,
                "optimizer": optim_sd,
                "optimizer_keys": "names" if self.strategy == "fsdp" else "ids",
                "world_size": self.dist.world_size,
                "data_layout": [self.batch_size * self.dist.world_size, max(1, self.optim_cfg.grad_accum)],
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "rng": self._rng_state(),
                "config": self.config_dict,
            }
            path = ckpt.atomic_save(obj, self.ckpt_dir / f"step-{self.state.step}.pt")
            ckpt.atomic_link(path, self.ckpt_dir / "latest.pt")
            for _, old in ckpt.step_checkpoints(self.ckpt_dir)[: -max(1, self.train_cfg.keep_last)]:
                old.unlink(missing_ok=True)
        barrier(self.dist)
        return self.ckpt_dir / "latest.pt"

    def _load_states(self, obj: dict) -> None:
        by_name = obj.get("optimizer_keys") == "names"
        if self.strategy != "fsdp" and not by_name:
            self.model.load_state_dict(obj["model"])
            self.optimizer.load_state_dict(obj["optimizer"])
            return
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        optim_sd = obj["optimizer"] if by_name else self._optimizer_state_by_name(obj["optimizer"])
        opts = StateDictOptions(full_state_dict=True)
        set_model_state_dict(self.model, obj["model"], options=opts)
        set_optimizer_state_dict(self.model, self.optimizer, optim_sd, options=opts)

    def _optimizer_state_by_name(self, sd: dict) -> dict:
        """A ``torch.optim`` state dict (parameters numbered in param-group order) keyed by
        parameter name instead, the form ``set_optimizer_state_dict`` takes."""
        names = {id(p): n for n, p in self.model.named_parameters()}
        order = [names[id(p)] for g in self.optimizer.param_groups for p in g["params"]]
        saved = [i for g in sd["param_groups"] for i in g["params"]]
        if len(saved) != len(order):
            raise ckpt.CheckpointError(
                f"the checkpoint's optimizer has {len(saved)} parameters, this model trains {len(order)}"
            )
        to_name = dict(zip(saved, order))
        return {
            "state": {to_name[i]: v for i, v in sd["state"].items()},
            "param_groups": [dict(g, params=[to_name[i] for i in g["params"]]) for g in sd["param_groups"]],
        }

    def _resume(self) -> bool:
        found = ckpt.latest_valid(self.ckpt_dir)
        if found is None:
            return False
        path, obj = found
        missing = [k for k in ("model", "optimizer", "step") if k not in obj]
        if missing:
            raise ckpt.CheckpointError(f"{path} is not a jepa run checkpoint (missing {missing})")
        self._load_states(obj)
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
            obj.get("batches_consumed", obj["step"] * accum), obj.get("skipped_nonfinite", 0),
        )
        if self.dist.is_main:
            log.info("resumed from %s at step %d", path, self.state.step)
            # Ranks interleave the epoch permutation, so the data order only depends on the
            # samples per loader step over all ranks and on the micro-batches per step.
            layout = (self.batch_size * self.dist.world_size, accum)
            saved = tuple(obj.get("data_layout", layout))
            if saved != layout:
                log.warning(
                    "the checkpoint was written with %d samples per loader step over all processes and "
                    "%d micro-batches per step, this run has %d and %d: the weights and schedules continue, "
                    "but the data order from here on differs from the original run", *saved, *layout,
                )
        return True

    # -- the loop --------------------------------------------------------------------------------

    def fit(self, resume: bool = False) -> FitResult:
        self._setup()
        if self.dist.is_main:
            for p in ckpt.remove_stale_temp_files(self.ckpt_dir):
                log.info("removed %s, left by an interrupted checkpoint write", p.name)
        barrier(self.dist)
        if resume and not self._resume() and self.dist.is_main:
            log.info("no checkpoint in %s; starting from scratch", self.ckpt_dir)
        tc, oc = self.train_cfg, self.optim_cfg
        accum = max(1, oc.grad_accum)
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        barrier(self.dist)
        metrics = MetricsWriter(
            self.run_dir, self.state.step, enabled=self.dist.is_main, tensorboard=tc.tensorboard,
            wandb=tc.wandb, config=self.config_dict,
        )
        rank_metrics = None
        if tc.per_rank_metrics:
            rank_metrics = MetricsWriter(self.run_dir, self.state.step, name=f"metrics-rank{self.dist.rank}.csv")
        bar = None
        if tc.progress and self.dist.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.total_steps, initial=self.state.step, desc="pretrain", unit="step", dynamic_ncols=True)
        autocast = (
            torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else contextlib.nullcontext()
        )
        skip_mode = tc.nonfinite == "skip"
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        loss_sum = torch.zeros((), device=self.device)
        loss_count = 0
        extra_sums: dict[str, torch.Tensor | float] = {}
        history: list[dict] = []
        t_start = t_log = time.perf_counter()
        step_at_log = self.state.step
        samples_at_log = samples_at_start = self.state.samples_seen
        last_loss = float("nan")
        consecutive_skips = 0
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.model.train()
        data_iter = iter(self._loader(self.state.batches_consumed))

        for step in range(self.state.step, self.total_steps):
            lr, wd, m = self.lr_schedule.value(step), self.wd_schedule.value(step), self.momentum_schedule.value(step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
                if not group.get("WD_exclude", False):
                    group["weight_decay"] = wd
            inject = (step + 1) in tc.inject_nan_steps
            step_bad = torch.zeros((), dtype=torch.bool, device=self.device)
            step_loss = torch.zeros((), device=self.device)
            step_extras: dict[str, torch.Tensor | float] = {}
            for micro in range(accum):
                batch = move_to(self._next_batch(data_iter), self.device)
                last = micro == accum - 1
                for root in self.fsdp_roots:
                    root.set_requires_gradient_sync(last)
                no_sync = isinstance(self.net, DDP) and not last
                with self.net.no_sync() if no_sync else contextlib.nullcontext():
                    with autocast:
                        out = self.net(batch)
                    loss = out["loss"]
                    if inject:
                        loss = loss * float("nan")
                    scaled = loss.float() / accum
                    (self.scaler.scale(scaled) if self.scaler else scaled).backward()
                step_bad |= ~torch.isfinite(loss.detach())
                step_loss += loss.detach().float()
                for k, v in out.items():
                    if k != "loss":
                        v = v.detach().float() if isinstance(v, torch.Tensor) else float(v)
                        step_extras[k] = step_extras.get(k, 0.0) + v
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            if oc.clip_grad is not None and step >= self.warmup_steps:
                # Encoder and predictor clipped separately, after warm-up (jepa:app/vjepa/train.py).
                for module in self.model.trainable_modules().values():
                    norm = torch.nn.utils.clip_grad_norm_(module.parameters(), oc.clip_grad, foreach=True)
                    if skip_mode:
                        step_bad |= ~torch.isfinite(_full(norm))
            skip = False
            if skip_mode:
                # One host sync per step, agreed by all ranks: every rank skips or none does.
                skip = bool(all_reduce_sum(step_bad.float(), self.dist).item() > 0)
            if skip:
                self.optimizer.zero_grad(set_to_none=True)
                if self.scaler:
                    self.scaler.update()
                self.state.skipped_nonfinite += 1
                consecutive_skips += 1
                self._check_skips(step, consecutive_skips)
            else:
                consecutive_skips = 0
                if self.scaler:
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.model.update_target(m)
                nonfinite |= step_bad
                loss_sum += step_loss
                loss_count += accum
                for k, v in step_extras.items():
                    extra_sums[k] = extra_sums.get(k, 0.0) + v
            self.state.step = step + 1

            is_last = self.state.step == self.total_steps
            if self.state.step % tc.log_every == 0 or is_last:
                local_loss = loss_sum / max(loss_count, 1)
                mean_loss = all_reduce_mean(local_loss, self.dist)
                if bool(all_reduce_mean(nonfinite.float(), self.dist).item() > 0):
                    self._stop_nonfinite(step)
                counts = all_reduce_sum(
                    torch.tensor([self.state.bad_samples, self.state.samples_seen], dtype=torch.float64,
                                 device=self.device), self.dist,
                ).tolist()
                last_loss = float(mean_loss) if loss_count else float("nan")
                now = time.perf_counter()
                dt = max(now - t_log, 1e-9)
                local_rate = (self.state.samples_seen - samples_at_log) / dt
                row = {
                    "step": self.state.step,
                    "epoch": round(self.state.step / self.ipe, 4),
                    "loss": last_loss,
                    "lr": lr,
                    "wd": wd,
                    "momentum": m,
                    "samples_per_s": round(local_rate * self.dist.world_size, 2),
                    "step_time_s": round(dt / max(self.state.step - step_at_log, 1), 5),
                    "elapsed_s": round(now - t_start, 2),
                    "bad_samples": int(counts[0]),
                    "skipped_nonfinite": self.state.skipped_nonfinite,
                    "peak_mem_mb": round(_peak_memory_mb(self.device), 1),
                }
                for k, v in extra_sums.items():
                    row[k] = float(v) / max(loss_count, 1)
                metrics.write(row)
                if rank_metrics is not None:
                    rank_metrics.write(dict(
                        row, loss=float(local_loss) if loss_count else float("nan"),
                        samples_per_s=round(local_rate, 2), bad_samples=self.state.bad_samples,
                        rank=self.dist.rank,
                    ))
                history.append(row)
                if bar is not None:
                    bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}", img_s=f"{row['samples_per_s']:.0f}",
                                    refresh=False)
                for cb in self.callbacks:
                    cb(self, self.state.step, row)
                loss_sum.zero_()
                loss_count = 0
                extra_sums = {}
                t_log, samples_at_log, step_at_log = now, self.state.samples_seen, self.state.step
            if bar is not None:
                bar.update(1)
            if self.state.step % tc.checkpoint_every == 0 or is_last:
                if bool(all_reduce_mean(nonfinite.float(), self.dist).item() > 0):
                    self._stop_nonfinite(step)
                self.save_checkpoint()
        if bar is not None:
            bar.close()
        metrics.close()
        if rank_metrics is not None:
            rank_metrics.close()
        seconds = time.perf_counter() - t_start
        return FitResult(
            steps=self.state.step, final_loss=last_loss, seconds=seconds,
            samples_per_second=(self.state.samples_seen - samples_at_start) * self.dist.world_size / max(seconds, 1e-9),
            run_dir=self.run_dir, bad_samples=self.state.bad_samples,
            skipped_nonfinite=self.state.skipped_nonfinite, history=history,
        )

    def _check_skips(self, step: int, consecutive: int) -> None:
        tc = self.train_cfg
        total = self.state.skipped_nonfinite
        if consecutive > tc.max_nonfinite_consecutive or total > tc.max_nonfinite:
            raise NonFiniteLossError(
                f"the loss or gradients were NaN/inf at step {step + 1}: {consecutive} steps in a row and "
                f"{total} in all were skipped (limits train.max_nonfinite_consecutive="
                f"{tc.max_nonfinite_consecutive}, train.max_nonfinite={tc.max_nonfinite}). Lower optim.lr, "
                "set optim.clip_grad, or check the inputs; resume with --resume."
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


def _full(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a (replicated) DTensor, e.g. a grad norm under FSDP2."""
    full_tensor = getattr(t, "full_tensor", None)
    return full_tensor() if callable(full_tensor) else t


def _peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: ``torch.cuda.max_memory_allocated`` on CUDA, else the peak
    resident set size (``resource.getrusage``, KiB on Linux)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    optionally, TensorBoard scalars and Weights & Biases."""

    def __init__(
        self, run_dir: Path, start_step: int, enabled: bool = True, tensorboard: bool = False,
        wandb: bool | dict = False, config: dict | None = None, name: str = "metrics.csv",
    ):
        self.enabled = enabled
        self.path = run_dir / name
        self.fields: list[str] | None = None
        self.tb = None
        self.wandb = None
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
        if wandb:
            self.wandb = _start_wandb(run_dir, wandb if isinstance(wandb, dict) else {}, config or {})

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        if self.fields is None:
            self.fields = list(row)
            with open(self.path, "w", newline="") as f:
                csv.DictWriter(f, fieldnames=self.fields).writeheader()
        elif any(k not in self.fields for k in row):
            # A resumed run of an older version logs new columns: rewrite the header.
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
            self.fields = self.fields + [k for k in row if k not in self.fields]
            with open(self.path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self.fields)
                w.writeheader()
                w.writerows(rows)
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore").writerow(row)
        scalars = {k: v for k, v in row.items()
                   if k != "step" and isinstance(v, (int, float)) and math.isfinite(v)}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, row["step"])
        if self.wandb is not None:
            self.wandb.log(scalars, step=row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _start_wandb(run_dir: Path, settings: dict, config: dict):
    """``wandb.init`` with a run id kept in the run folder, so that a resumed (or requeued)
    run continues the same W&B run (``resume="allow"``)."""
    try:
        import wandb
    except ImportError as e:
        raise ImportError(
            "train.wandb is set but Weights & Biases is not installed: `pip install jepa-core[wandb]` "
            "(or set train.wandb=false)"
        ) from e
    id_file = run_dir / "wandb-id.txt"
    if id_file.is_file():
        run_id = id_file.read_text().strip()
    else:
        run_id = settings.get("id") or wandb.util.generate_id()
        id_file.write_text(run_id)
    kwargs = {"name": run_dir.name, "dir": str(run_dir), "config": config, "resume": "allow"}
    kwargs.update(settings)
    kwargs["id"] = run_id
    return wandb.init(**kwargs)
