"""Methods, presets and evaluators of installed packages, found through entry points.

A package registers a :class:`MethodSpec` under the ``jepa.methods`` entry-point group
(``ijepa = "jepa_image.ijepa:SPEC"``) and evaluators under ``jepa.evaluators``. Nothing is
imported until asked for, so ``import jepa_core`` stays light.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from jepa_core.config import (
    BaseConfig,
    ConfigError,
    deep_merge,
    from_dict,
    load_yaml,
    parse_overrides,
)

_LOCAL_METHODS: dict[str, MethodSpec] = {}
_LOCAL_EVALUATORS: dict[str, Callable] = {}


@dataclass
class MethodSpec:
    """What `jepa pretrain <name>` needs to know about a method.

    - ``build_model(cfg)``: the method module (a :class:`jepa_core.method.JEPAMethod`).
    - ``build_train_data(cfg, rank, world_size)``: ``(dataset, collate_fn)`` for pretraining.
    - ``build_eval_data(cfg)``: ``(train_set, test_set)`` of ``(input, label)`` without
      augmentation, for the probes at the end of a run; None if the method has no labels.
    - ``presets_package``: the package whose ``presets/`` folder holds ``<name>_<preset>.yaml``.
    - ``on_run_start(cfg, run_dir, dataset)``: optional, e.g. to draw sample masks.
    - ``eval_tasks(cfg)``: optional, ``{task name: labels -> task labels}`` when the eval labels
      hold several tasks (the video demo: motion direction and object class); the probes are
      trained per task on features extracted once. None or ``{}``: the labels as they are.
    - ``eval_baselines(cfg, device, run_dir)``: optional, more frozen encoders to probe beside the
      pretrained and the randomly initialised one, ``{row name: encoder}`` (the video methods add
      an image encoder applied frame by frame).
    """

    name: str
    config_cls: type
    build_model: Callable[[Any], Any]
    build_train_data: Callable[[Any, int, int], tuple[Any, Callable]]
    build_eval_data: Callable[[Any], tuple[Any, Any]] | None = None
    presets_package: str | None = None
    default_preset: str = "demo"
    description: str = ""
    on_run_start: Callable[[Any, Path, Any], None] | None = None
    eval_tasks: Callable[[Any], dict[str, Callable]] | None = None
    eval_baselines: Callable[[Any, Any, Path | None], dict[str, Any]] | None = None
    extra: dict = field(default_factory=dict)

    def preset_paths(self) -> dict[str, Path]:
        if not self.presets_package:
            return {}
        folder = resources.files(self.presets_package) / "presets"
        out = {}
        for entry in folder.iterdir():
            name = entry.name
            if name.startswith(self.name + "_") and name.endswith(".yaml"):
                out[name[len(self.name) + 1 : -5]] = Path(str(entry))
        return dict(sorted(out.items()))

    def load_config(
        self, preset: str | None = None, file: str | Path | None = None, overrides: list[str] | None = None
    ) -> BaseConfig:
        """Preset (default: ``default_preset``), then a YAML file, then dotted overrides."""
        data: dict = {}
        presets = self.preset_paths()
        preset = preset if preset is not None else (self.default_preset if file is None else None)
        if preset:
            if preset not in presets:
                raise ConfigError(
                    f"unknown preset {preset!r} for method {self.name!r}; valid presets: {', '.join(presets) or 'none'}"
                )
            data = load_yaml(presets[preset])
        if file:
            data = deep_merge(data, load_yaml(file))
        if overrides:
            data = deep_merge(data, parse_overrides(overrides))
        data.setdefault("method", self.name)
        data.setdefault("preset", preset or Path(file).stem if (preset or file) else "")
        if data["method"] != self.name:
            raise ConfigError(f"config is for method {data['method']!r}, not {self.name!r}")
        return from_dict(self.config_cls, data)


def register_method(spec: MethodSpec) -> None:
    """Register a method in this process (for code that is not an installed package)."""
    _LOCAL_METHODS[spec.name] = spec


def register_evaluator(name: str, fn: Callable) -> None:
    _LOCAL_EVALUATORS[name] = fn


def _entry_points(group: str) -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=group)}


def methods() -> list[str]:
    return sorted(set(_LOCAL_METHODS) | set(_entry_points("jepa.methods")))


def get_method(name: str) -> MethodSpec:
    if name in _LOCAL_METHODS:
        return _LOCAL_METHODS[name]
    eps = _entry_points("jepa.methods")
    if name not in eps:
        known = ", ".join(methods()) or "none (install jepa-image, jepa-video, ...)"
        raise ConfigError(f"unknown method {name!r}; installed methods: {known}")
    spec = eps[name].load()
    if not isinstance(spec, MethodSpec):
        raise TypeError(f"entry point jepa.methods:{name} is not a MethodSpec")
    return spec


def evaluators() -> list[str]:
    return sorted(set(_LOCAL_EVALUATORS) | set(_entry_points("jepa.evaluators")))


def get_evaluator(name: str) -> Callable | None:
    """The evaluator registered under ``name``, or None if no installed package provides it."""
    if name in _LOCAL_EVALUATORS:
        return _LOCAL_EVALUATORS[name]
    eps = _entry_points("jepa.evaluators")
    return eps[name].load() if name in eps else None
