"""Typed configs: dataclasses filled from YAML presets, files and dotted command-line overrides,
with errors that name the key and list the valid ones."""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import math
import os
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key and the fix."""


# ----------------------------------------------------------------------------------------------
# valid ranges of numeric settings


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric setting (each element of a list one): ``lo``/``hi`` bounds
    (None: unbounded), open or closed, always finite; ``ordered``: a list must be
    non-decreasing (a ``(low, high)`` pair)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    ordered: bool = False

    @classmethod
    def parse(cls, spec: str) -> Range:
        """``">0"``, ``">=1"``, ``"<=1"``, ``"[0,1]"``, ``"(0,1]"``, ``"[0,1)"``, ``"any"`` (any
        finite number), each optionally followed by ``" ordered"``."""
        text = spec.strip()
        ordered = text.endswith(" ordered")
        if ordered:
            text = text[: -len(" ordered")].strip()
        if text == "any":
            return cls(ordered=ordered)
        m = re.fullmatch(r"(>=|>|<=|<)\s*(-?[\d.e+-]+)", text)
        if m:
            op, v = m.group(1), float(m.group(2))
            if op.startswith(">"):
                return cls(lo=v, lo_open=op == ">", ordered=ordered)
            return cls(hi=v, hi_open=op == "<", ordered=ordered)
        m = re.fullmatch(r"([\[(])\s*(-?[\d.e+-]+)\s*,\s*(-?[\d.e+-]+)\s*([\])])", text)
        if m:
            return cls(float(m.group(2)), float(m.group(3)), m.group(1) == "(", m.group(4) == ")", ordered)
        raise ValueError(f"bad range spec {spec!r}")

    def contains(self, x: float) -> bool:
        if not math.isfinite(x):
            return False
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return False
        return not (self.hi is not None and (x >= self.hi if self.hi_open else x > self.hi))

    def describe(self) -> str:
        """E.g. ``a positive number (> 0)``, ``>= 1``, ``in [0, 1]``."""
        g = "{:g}".format
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{g(self.lo)}, {g(self.hi)}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            if self.lo == 0 and self.lo_open:
                return "a positive number (> 0)"
            return f"{'>' if self.lo_open else '>='} {g(self.lo)}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {g(self.hi)}"
        return "a finite number"


_RANGES: dict[type, dict[str, Range]] = {}


def ranges(**specs: str) -> Callable[[type], type]:
    """Class decorator (or ``ranges(...)(cls)`` for a class defined elsewhere): the valid
    range of each named numeric field of a config dataclass, as :meth:`Range.parse` reads it.
    :func:`validate` checks them (None values are not checked: they mean "unset"); subclasses
    inherit them."""
    parsed = {name: Range.parse(spec) for name, spec in specs.items()}

    def register(cls: type) -> type:
        _RANGES.setdefault(cls, {}).update(parsed)
        return cls

    return register


def field_ranges(cls: type) -> dict[str, Range]:
    """The ranges :func:`ranges` declared for ``cls`` and its base classes, by field name."""
    out: dict[str, Range] = {}
    for base in reversed(cls.__mro__):
        out.update(_RANGES.get(base, {}))
    return out


def _show(value: Any) -> str:
    """A setting's value as one writes it in an override (``[0.3, 1.0]``, ``null``, ``cpu``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _check_ranges(obj: Any, prefix: str) -> None:
    """The declared ranges of ``obj``'s own fields (not of its sub-sections)."""
    defaults = {f.name: f.default for f in dataclasses.fields(obj)}
    for name, rng in field_ranges(type(obj)).items():
        value = getattr(obj, name, None)
        if value is None or isinstance(value, bool):
            continue
        key = ".".join(filter(None, [prefix, name]))
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        example = defaults.get(name)
        ok_example = example is not None and example is not dataclasses.MISSING and not isinstance(example, bool)
        hint = f"; e.g. {key}={_show(example)} (the default)" if ok_example else ""
        for v in items:
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not rng.contains(float(v)):
                what = "each value of " + key if isinstance(value, (list, tuple)) else key
                finite = "" if isinstance(v, (int, float)) and math.isfinite(v) else "finite and "
                raise ConfigError(f"{what} must be {finite}{rng.describe()}, got {key}={_show(value)}{hint}")
        if rng.ordered and any(a > b for a, b in zip(items, items[1:])):
            raise ConfigError(f"{key} is a (low, high) range: the values must be in order (low <= high), "
                              f"got {key}={_show(value)}{hint}")


def check_section(obj: Any, prefix: str) -> None:
    """The ranges of ``obj``'s own numeric fields, then its ``check(prefix)`` hook, if any
    (cross-field rules, e.g. heads dividing the width). Raises :class:`ConfigError`."""
    _check_ranges(obj, prefix)
    hook = getattr(obj, "check", None)
    if callable(hook):
        hook(prefix)


def validate(cfg: Any, prefix: str = "") -> None:
    """Check a whole config tree: every section (sub-dataclasses, lists of them as
    ``key[i]``), deepest first, by :func:`check_section`. Raises a :class:`ConfigError` naming
    the key, the value and the valid range."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = ".".join(filter(None, [prefix, f.name]))
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            validate(value, key)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                if dataclasses.is_dataclass(v) and not isinstance(v, type):
                    validate(v, f"{key}[{i}]")
    check_section(cfg, prefix)


#: ``train.device`` values: ``auto``, a device type, or a type with an index (``cuda:1``).
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|(cuda|xpu)(:\d+)?")


@ranges(
    epochs=">0", ipe=">=1", ipe_scale=">0", warmup=">=0", start_lr=">=0", lr=">=0", final_lr=">=0",
    weight_decay=">=0", final_weight_decay=">=0",
    ema="[0,1]",  # (start, end) momentum, not a (low, high) range: any order
    # betas: >= 0 here; a method's optimizer may check more (AdamW: [0, 1)), which the Trainer
    # reports as a ConfigError naming optim.betas.
    betas=">=0", eps=">0", clip_grad=">0", grad_accum=">=1", max_steps=">=1", lr_scale_batch=">=1",
)
@dataclass
class OptimConfig:
    """Optimisation and schedules, each a function of the optimizer step.

    The defaults are I-JEPA's ViT-H/14 ImageNet-1k recipe (ijepa:configs/in1k_vith14_ep300.yaml):
    300 epochs with 40 of warm-up. Every method's presets set their own; a Python user building
    ``OptimConfig()`` directly for a small run should set at least ``epochs``, ``warmup`` and
    ``lr``. The schedules span ``epochs x ipe`` steps; ``max_steps`` only cuts the run short."""

    epochs: float = 300  # training length (fractions allowed); the schedules span epochs x ipe steps
    ipe: int | None = None  # iterations per epoch; None = len(loader) (drop_last), as I-JEPA
    ipe_scale: float = 1.0  # schedules run over int(ipe_scale * epochs * ipe) steps
    warmup: float = 40  # epochs of linear LR warm-up
    start_lr: float = 2e-4  # LR at step 0, warmed up linearly to `lr`
    lr: float = 1e-3  # peak LR, reached after `warmup` epochs
    final_lr: float = 1e-6  # LR at the end of the cosine (lr_schedule=cosine / linear)
    lr_schedule: Literal["cosine", "constant", "linear"] = "cosine"  # linear: V-JEPA 2 cooldown
    weight_decay: float = 0.04  # AdamW weight decay at step 0 (biases and 1-D parameters: none)
    final_weight_decay: float = 0.4  # weight decay at the end, cosine from `weight_decay`
    ema: tuple[float, float] = (0.996, 1.0)  # EMA target momentum, linear from first to second over the run
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    eps: float = 1e-8  # AdamW epsilon
    clip_grad: float | None = None  # I-JEPA: none; V-JEPA: 10 after warm-up
    grad_accum: int = 1  # micro-batches per optimizer step
    max_steps: int | None = None
    """Stop after this many optimizer steps. The schedules keep their full ``epochs x ipe``
    length (LR, weight decay and EMA are where a full run has them at that step, not annealed):
    a cut, so that a stopped run continues exactly with ``--resume`` and a larger max_steps. To
    train a whole but shorter schedule, lower ``epochs`` (or ``ipe``) instead; the run logs the
    difference when max_steps cuts."""
    lr_scale_batch: int | None = None
    """Linear LR scaling: with a reference global batch here, ``start_lr``, ``lr`` and
    ``final_lr`` are multiplied by ``global batch / lr_scale_batch`` (global batch =
    ``data.batch_size`` x processes x ``grad_accum``). None: the LRs are used as given."""


@ranges(
    seed=">=0", checkpoint_every=">=1", keep_last=">=1", keep_checkpoints=">=1", log_every=">=1",
    num_threads=">=1", max_bad_fraction="[0,1]", max_nonfinite=">=0", max_nonfinite_consecutive=">=0",
    dist_timeout_s=">0", stop_check_every=">=1",
)
@dataclass
class TrainConfig:
    """How a run executes: device, precision, distribution, checkpoints, fault handling, logging.

    ``data.batch_size`` is per process and per micro-batch; one optimizer step sees
    ``data.batch_size x processes x optim.grad_accum`` samples, and every schedule counts
    optimizer steps, so a run has the same schedules at any world size with the same global batch.
    """

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 autocast on CUDA
    seed: int = 0
    draw_scope: Literal["global", "process"] = "global"
    """What a batch's masks and batch-level crops are drawn for: ``global``, the step's global
    batch (every process's samples, keyed by seed, step and a sample's slot in it), so N
    processes x B samples train exactly like 1 process x N*B and a run resumes on another number
    of processes; ``process``, each process's own batch keyed by its rank, as the official
    collators (one block size and one mask truncation per process batch)."""
    run_dir: str | None = None  # default runs/<method>-<preset>
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    """Under ``torchrun``: ``ddp`` (DistributedDataParallel over the trainable modules), ``fsdp``
    (FSDP2 ``fully_shard`` per transformer block and per module, EMA target sharded alike), or
    ``auto`` (= ddp). Without torchrun a single process runs and the strategy is unused."""
    checkpoint_every: int = 1000  # optimizer steps; a checkpoint is also written at the end
    keep_last: int = 2  # step-N.pt files kept beside latest.pt (older ones are deleted)
    keep_checkpoints: int | None = None  # deprecated name of keep_last; overrides it when set
    log_every: int = 10
    progress: bool = True
    tensorboard: bool = False
    wandb: bool | dict[str, Any] = False
    """Weights & Biases on rank 0 (``pip install jepa-core[wandb]``): true, or a mapping of
    ``wandb.init`` arguments (project, entity, name, tags, mode, ...). A requeued run continues
    the same W&B run (its id is kept in the run folder)."""
    per_rank_metrics: bool = False  # also write metrics-rank<r>.csv from every process
    num_threads: int | None = None  # torch intra-op threads on CPU
    max_bad_fraction: float = 0.01  # corrupt samples are skipped and counted; stop above this
    nonfinite: Literal["stop", "skip"] = "stop"
    """A NaN/inf loss or gradient norm: ``stop`` raises at the next log or checkpoint step (the
    last good checkpoint stays); ``skip`` drops that step's update (no optimizer step, no EMA
    update, gradients zeroed), counts it in metrics.csv (``skipped_nonfinite``) and goes on.
    ``skip`` costs one host sync per step."""
    max_nonfinite: int = 100  # skip: stop when more steps than this were skipped in total
    max_nonfinite_consecutive: int = 5  # skip: stop when more than this were skipped in a row
    compile: bool = False  # torch.compile the training forward (jepa_core.optim.maybe_compile)
    dist_timeout_s: float = 1800.0
    """Under ``torchrun``: seconds a collective (all-reduce, barrier) may wait for the other
    processes before it fails (``init_process_group(timeout=...)``), so a hung or stopped rank
    ends the run with an error instead of blocking the others forever."""
    stop_check_every: int = 10
    """Under ``torchrun``: every this many steps the ranks agree (one small all-reduce) whether a
    stop signal (SIGTERM, SIGINT, SIGUSR1) arrived, then all save and stop after the same step.
    Not every step: that would add a host sync to each step. A single process checks every step."""

    def __post_init__(self) -> None:
        if self.keep_checkpoints is not None:
            self.keep_last = self.keep_checkpoints
        # Also when built directly (Trainer(train=TrainConfig(...))), not only from a config file.
        check_section(self, "train")

    def check(self, prefix: str) -> None:
        """``device``: auto, cpu, cuda, cuda:N, mps, xpu (:data:`DEVICE_PATTERN`)."""
        if not (isinstance(self.device, str) and DEVICE_PATTERN.fullmatch(self.device)):
            raise ConfigError(f"{prefix}.device={self.device} is not a device this trainer runs on; valid: auto, cpu, "
                              f"cuda, cuda:N (the N-th GPU), mps, xpu; e.g. {prefix}.device=auto")


@ranges(
    batch_size=">=1", train_samples=">=1", last_layers=">=1", knn_k=">=1", knn_temperature=">0",
    attentive_depth=">=1", attentive_epochs=">=1", attentive_batch_size=">=1", attentive_lrs=">0",
    attentive_wds=">=0", lowshot_fractions="(0,1]", lowshot_seeds=">=0", finetune_epochs=">=1", finetune_lr=">0",
    finetune_last_blocks=">=1", finetune_fractions="(0,1]", dense_epochs=">=1", dense_lr=">0",
    dense_batch_size=">=1", dense_knn_k=">=1",
    monitor_every=">=0", monitor_samples=">=1",
)
@dataclass
class EvalConfig:
    """Evaluation after `jepa pretrain` and by `jepa eval`, by the evaluator the method names
    (``MethodSpec.evaluator``). ``enabled`` and the ``monitor_*`` keys are read by core; the
    others are the settings of jepa-eval's ``probes`` evaluator (frozen-encoder protocols:
    linear, knn, attentive, lowshot, finetune), which validates them before training. An
    evaluator with other settings reads them from a section of the method's own config."""

    enabled: bool = True
    protocols: tuple[str, ...] = ("linear", "knn")
    batch_size: int = 256
    train_samples: int | None = None  # labeled training samples for the probes; None = all
    last_layers: int = 1  # mean-pool each of the last k layers and concatenate (1 = I-JEPA protocol)
    knn_k: tuple[int, ...] = (10, 20, 200)
    knn_temperature: float = 0.07
    attentive_form: str | None = None  # the attentive probe's form; None: the evaluator's default (jepa-eval: V-JEPA 2's); the evaluator checks it and lists the valid ones
    attentive_depth: int | None = None  # None: the form's default depth
    attentive_epochs: int = 20
    # Official: 4 per GPU x 64 GPUs = 256 (jepa:configs/evals/*.yaml); small
    # labeled sets need small batches to give the probe enough steps (the video demo uses 16).
    attentive_batch_size: int = 64
    attentive_lrs: tuple[float, ...] = (5e-3, 3e-3, 1e-3, 3e-4, 1e-4)
    attentive_wds: tuple[float, ...] = (0.01, 0.1, 0.4, 0.8)
    lowshot_fractions: tuple[float, ...] = (0.01, 0.1)
    lowshot_seeds: tuple[int, ...] = (0, 1, 2)
    finetune_epochs: int = 5
    finetune_lr: float = 1e-3
    finetune_last_blocks: int | None = None  # None: the whole encoder
    # `finetune` also on a seeded class-balanced fraction of the training labels, once per fraction
    # (semi-supervised fine-tuning, e.g. (0.01, 0.1) as S-JEPA / MAMP); () = only on all labels
    finetune_fractions: tuple[float, ...] = ()
    # `dense` protocol (jepa-eval: linear segmentation probe and patch k-NN on patch tokens);
    # fixed settings, nothing is selected on the held-out split
    dense_epochs: int = 20  # linear segmentation probe epochs (AdamW, cosine schedule)
    dense_lr: float = 1e-2  # chosen on a validation split of the demo's training scenes (1e-3 underfits)
    dense_batch_size: int = 32  # scenes per step
    dense_knn_k: int = 10  # neighbours of the patch k-NN label transfer (votes weighted by exp(sim / knn_temperature))
    random_baseline: bool = True
    raw_baseline: bool = True
    monitor_every: int = 0  # >0: RankMe / feature-std / online probe every N steps while pretraining (needs enabled)
    monitor_samples: int = 1024
    plots: bool = True


@dataclass
class BaseConfig:
    """The sections every method config has. A method's config class adds its ``data``,
    ``model`` (...) sections and may set the two resume rules below."""

    ARCHITECTURE_KEYS: ClassVar[tuple[str, ...]] = ("model.*",)
    """Dotted keys (``fnmatch`` patterns) that fix the architecture: the parameter shapes or
    what the weights compute. ``--resume`` refuses a change of any of them
    (:func:`config_changes`); a method adds the data keys that set its token grid."""
    RESUME_SAFE_KEYS: ClassVar[tuple[str, ...]] = ()
    """Exceptions to :attr:`ARCHITECTURE_KEYS` that only change how the same model is computed
    or regularised (activation checkpointing, drop-path rate): a resume may change them."""

    method: str = ""
    preset: str = ""
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ----------------------------------------------------------------------------------------------
# dict <-> dataclass


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"config key {key!r} expects {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key {key!r} must be one of {list(args)}, got {value!r}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} is a section; give a mapping, got {value!r}")
        return from_dict(tp, value, key)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} expects a list, got {value!r} ({type(value).__name__})")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"config key {key!r} expects {len(args)} values, got {len(value)}: {value!r}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} expects a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key!r} expects true/false, got {value!r} ({type(value).__name__})")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key {key!r} expects an integer, got {value!r} ({type(value).__name__})")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"config key {key!r} expects a number, got {value!r} ({type(value).__name__})")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key {key!r} expects a string, got {value!r} ({type(value).__name__})")
    return value


RETIRED_KEYS: dict[str, str] = {
    "train.inject_nan_steps": "NaN injection is a test hook now: Trainer(loss_hook=jepa_core.testing.nan_at_steps(...))",
}
"""Keys that configs no longer have, with what replaced them: a config that sets one fails
with that hint; :func:`drop_retired_keys` removes them from configs saved by older runs."""


def drop_retired_keys(data: dict) -> dict:
    """A copy of ``data`` without the :data:`RETIRED_KEYS` (for the config of a run written by
    an older version: its config.yaml or checkpoint)."""
    out = copy.deepcopy(data)
    for dotted in RETIRED_KEYS:
        *path, last = dotted.split(".")
        node: Any = out
        for p in path:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict; unknown keys, wrong types and (for a whole
    config, ``prefix=""``) values out of range (:func:`validate`) raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        where = f"section {prefix!r}" if prefix else "the top level"
        key = ".".join(filter(None, [prefix, unknown[0]]))
        hint = f" ({RETIRED_KEYS[key]})" if key in RETIRED_KEYS else ""
        raise ConfigError(f"unknown config key {key!r} in {where}; valid keys: {', '.join(names)}{hint}")
    kwargs = {k: _coerce(v, hints[k], ".".join(filter(None, [prefix, k]))) for k, v in data.items()}
    obj = cls(**kwargs)
    if not prefix:  # once, over the whole tree (the sections' cross-field rules need their siblings)
        validate(obj)
    return obj


def to_dict(obj: Any) -> Any:
    """Plain nested dict/list form (tuples become lists) for YAML."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_overrides(items: list[str]) -> dict:
    """``["optim.lr=1e-3", "mask.aspect_ratio=[0.5,2]"]`` -> nested dict; values parsed as YAML."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:  # also refuses python tags: safe_load never builds objects
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({_first_line(e)})") from e
        # YAML reads 1e-3 as a string; numbers with exponents should be numbers.
        if isinstance(value, str):
            try:
                value = float(value) if any(c in value for c in "eE.") else value
            except ValueError:
                pass
        elif isinstance(value, (list, dict)):
            value = _fix_yaml_floats(value)  # "[1e-4, 2]": YAML leaves 1e-4 a string
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def _fix_yaml_floats(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _fix_yaml_floats(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_fix_yaml_floats(v) for v in d]
    if isinstance(d, str):
        try:
            return float(d) if any(c in d for c in "eE") and d[0] in "0123456789.-+" else d
        except ValueError:
            return d
    return d


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    with open(path) as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:  # also refuses python tags: safe_load never builds objects
            raise ConfigError(f"config file {str(path)!r} is not valid YAML ({_first_line(e)})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    return _fix_yaml_floats(data)


def dump_yaml(obj: Any, path: str | Path) -> None:
    """Write ``obj`` (a config or a dict) as YAML, atomically: a kill mid-write leaves the old
    file (or none), never a truncated one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w") as f:
            yaml.safe_dump(to_dict(obj), f, sort_keys=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _first_line(e: Exception) -> str:
    return " ".join(str(e).split())[:300]


# ----------------------------------------------------------------------------------------------
# comparing the config of a run with the config of its resume

#: Keys never compared on resume: where the run folder is says nothing about the run.
RESUME_IGNORED_KEYS = ("train.run_dir",)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "m": [{"k": 2}]}`` -> ``{"a.b": 1, "m[0].k": 2}``: nested mappings and
    lists of mappings to dotted keys; other lists (tuples as lists) stay values."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(data, (list, tuple)) and data and all(isinstance(v, dict) for v in data):
        out = {f"{prefix}.len": len(data)}  # so that a dropped entry is a change too
        for i, v in enumerate(data):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: list(data) if isinstance(data, tuple) else data}


_UNSET = "(unset)"


def config_changes(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """The settings that differ between two configs (plain dicts, :func:`to_dict` form), as
    ``{dotted key: (old, new)}`` in ``new``'s key order (a key only one of them has is
    ``"(unset)"`` in the other); :data:`RESUME_IGNORED_KEYS` are left out."""
    a, b = flatten(to_dict(old)), flatten(to_dict(new))
    out: dict[str, tuple[Any, Any]] = {}
    for key in list(b) + [k for k in a if k not in b]:
        if key in RESUME_IGNORED_KEYS:
            continue
        va, vb = a.get(key, _UNSET), b.get(key, _UNSET)
        if va != vb:
            out[key] = (va, vb)
    return out


def is_architecture_key(cfg_cls: type, key: str) -> bool:
    """Whether a dotted ``key`` of a ``cfg_cls`` config fixes the architecture
    (``cfg_cls.ARCHITECTURE_KEYS`` less ``RESUME_SAFE_KEYS``, ``fnmatch`` patterns)."""
    arch = getattr(cfg_cls, "ARCHITECTURE_KEYS", BaseConfig.ARCHITECTURE_KEYS)
    safe = getattr(cfg_cls, "RESUME_SAFE_KEYS", ())
    return any(fnmatch.fnmatchcase(key, p) for p in arch) and not any(fnmatch.fnmatchcase(key, p) for p in safe)


def describe_changes(changes: dict[str, tuple[Any, Any]]) -> str:
    """``optim.lr: 0.001 -> 0.002; train.seed: 0 -> 1``."""
    return "; ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, (a, b) in changes.items())


# ---------------------------------------------------------------------------------------------
# per-key help (`jepa config <method> --explain`, the docs' configuration reference)


def field_docs(cls: type) -> dict[str, str]:
    """``{field: meaning}`` of a config dataclass (and its bases), read from its source: the
    comment on a field's line, and the string literal under it (an attribute docstring), joined."""
    import ast
    import inspect
    import io
    import textwrap
    import tokenize

    docs: dict[str, str] = {}
    for base in reversed([c for c in cls.__mro__ if dataclasses.is_dataclass(c)]):
        try:
            src = textwrap.dedent(inspect.getsource(base))
        except (OSError, TypeError):
            continue
        comments = {tok.start[0]: tok.string.lstrip("#").strip()
                    for tok in tokenize.generate_tokens(io.StringIO(src).readline) if tok.type == tokenize.COMMENT}
        body = next((n for n in ast.parse(src).body if isinstance(n, ast.ClassDef)), None)
        if body is None:
            continue
        stmts = body.body
        for i, node in enumerate(stmts):
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            parts = [comments[ln] for ln in range(node.lineno, (node.end_lineno or node.lineno) + 1) if ln in comments]
            nxt = stmts[i + 1] if i + 1 < len(stmts) else None
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                parts.append(" ".join(nxt.value.value.split()))
            if parts:
                docs[node.target.id] = " ".join(parts)
    return docs


def explain(cfg: Any, prefix: str = "") -> list[tuple[str, Any, str]]:
    """``[(dotted key, value, meaning)]`` for every leaf of a config (nested configs recursed);
    the meaning is :func:`field_docs`' text plus the allowed range (``@ranges``), or the type."""
    rows: list[tuple[str, Any, str]] = []
    docs = field_docs(type(cfg))
    bounds = field_ranges(type(cfg))
    try:
        hints = typing.get_type_hints(type(cfg))
    except Exception:  # an annotation that does not resolve: no choices shown
        hints = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            rows += explain(value, key + ".")
            continue
        meaning = docs.get(f.name, "")
        choices = typing.get_args(hints.get(f.name)) if typing.get_origin(hints.get(f.name)) is Literal else ()
        if choices:
            meaning = f"{meaning} [one of: {', '.join(map(str, choices))}]".strip()
        if f.name in bounds:
            meaning = f"{meaning} [{bounds[f.name].describe()}]".strip()
        if not meaning:
            meaning = f"({_annotation_name(f.type)})"
        rows.append((key, to_dict(value), meaning))
    return rows


def _annotation_name(t: Any) -> str:
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))
