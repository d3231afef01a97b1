"""Methods, presets and evaluators of installed packages, found through entry points.

A package registers a :class:`MethodSpec` under the ``jepa.methods`` entry-point group
(``ijepa = "jepa_image.ijepa:SPEC"``) and evaluators under ``jepa.evaluators``; code that is
not an installed package calls :func:`register_method` / :func:`register_evaluator`. Nothing is
imported until asked for, so ``import jepa_core`` stays light.

Evaluators
----------
The evaluator that ``MethodSpec.evaluator`` names (default ``"probes"``, jepa-eval's frozen-
encoder probes; None: no evaluation) is called on rank 0 after `jepa pretrain` and by
`jepa eval`, with keyword arguments after the first four::

    evaluator(spec, cfg, model, device, out_dir=..., run_dir=...) -> dict | None

- ``spec``: the :class:`MethodSpec`; ``cfg``: the run's config (its ``eval`` section, or a
  section of the method's own config, holds the evaluator's settings);
- ``model``: the trained :class:`~jepa_core.method.JEPAMethod`, whole (gathered if it was
  sharded) and on ``device``: an encoder evaluator calls ``model.eval_encoder()``, a generative
  one its own sampling method;
- ``out_dir``: a folder for result files (``<run>/eval``), or None for none; ``run_dir``: the
  run folder (its metrics.csv), or None.

It returns ``{"results": JSON-able dict, "markdown": str}`` (optionally ``"title"``, the
heading of report.md's section), or None when it had nothing to evaluate. An evaluator may have
a ``check_config(cfg)`` attribute: `jepa pretrain` calls it before training, so that a bad
setting fails before the run rather than after it.

The ``jepa.evaluators`` group also holds ``monitor`` (jepa-eval), another kind: a factory
``make_monitor(dataset, eval_cfg) -> callback`` of the Trainer's collapse monitors, which
`jepa pretrain` uses when ``eval.monitor_every > 0``; no method names it as its evaluator.
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
    - ``evaluator``: the name of the evaluator run after pretraining and by `jepa eval` (see
      the module docstring for its call); default ``"probes"`` (jepa-eval: linear / k-NN /
      attentive probes of ``model.eval_encoder()``); None: the method is not evaluated.
    - ``presets_package``: the package whose ``presets/`` folder holds ``<name>_<preset>.yaml``.
    - ``on_run_start(cfg, run_dir, dataset)``: optional, e.g. to draw sample masks.

    What the ``probes`` evaluator reads:

    - ``build_eval_data(cfg)``: ``(train_set, test_set)`` of ``(input, label)`` without
      augmentation; None if the method has no labels (then there is nothing to probe).
    - ``eval_tasks(cfg)``: optional, ``{task name: labels -> task labels}`` when the eval labels
      hold several tasks (the video demo: motion direction and object class); the probes are
      trained per task on features extracted once. None or ``{}``: the labels as they are.
    - ``eval_baselines(cfg, device, run_dir)``: optional, more frozen encoders to probe beside the
      pretrained and the randomly initialised one, ``{row name: encoder}`` (the video methods add
      an image encoder applied frame by frame).
    - ``build_dense_eval_data(cfg)``: optional, ``(train_set, test_set)`` of ``(input, label map)``
      with a LongTensor label map ``[H, W]`` per input (a class per pixel) for the ``dense``
      protocol (patch-token segmentation probes), or None when the config has none.

    ``build_eval_data`` also feeds the collapse monitors (``eval.monitor_every``).

    Generative methods:

    - ``sample(run, **options) -> dict``: optional, what `jepa sample <run>` calls; ``run`` is
      :func:`jepa_core.run.load_run`'s dict (``spec``, ``cfg``, ``model``, ``run_dir``, ...) and
      the options are the command's: ``out_dir``, ``classes`` (text such as ``"0,3,5-7"`` or
      None), ``num`` (per class), ``cfg_scale``, ``temperature``, ``steps``, ``seed``,
      ``batch_size``, ``device`` (None: the run's or the method's default). It writes its files
      under ``out_dir`` and returns a JSON-able summary; bad options raise
      :class:`~jepa_core.config.ConfigError`. None: the method cannot sample.
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
    eval_tasks: Callable[[Any], dict[str, Callable] | None] | None = None
    eval_baselines: Callable[[Any, Any, Path | None], dict[str, Any]] | None = None
    evaluator: str | None = "probes"
    extra: dict = field(default_factory=dict)
    build_dense_eval_data: Callable[[Any], tuple[Any, Any] | None] | None = None
    sample: Callable[..., dict] | None = None

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
        """Preset (default: ``default_preset``, when the method has presets and no ``file`` is
        given), then a YAML file, then dotted overrides.

        A preset or file may start from another preset of the method with a top-level
        ``base: <preset>`` (e.g. ``demo_gpu`` is ``demo`` with a longer schedule); its own keys
        are merged over the base's, recursively."""
        data: dict = {}
        presets = self.preset_paths()
        if preset is None and file is None and presets:
            preset = self.default_preset
        if preset:
            data = self._preset_data(preset, presets)
        if file:
            data = deep_merge(data, self._with_base(load_yaml(file), str(file), presets, ()))
        if overrides:
            data = deep_merge(data, parse_overrides(overrides))
        data.setdefault("method", self.name)
        data.setdefault("preset", preset or (Path(file).stem if file else ""))
        if data["method"] != self.name:
            raise ConfigError(f"config is for method {data['method']!r}, not {self.name!r}")
        return from_dict(self.config_cls, data)

    def _preset_data(self, preset: str, presets: dict[str, Path], chain: tuple[str, ...] = ()) -> dict:
        if preset not in presets:
            raise ConfigError(
                f"unknown preset {preset!r} for method {self.name!r}; valid presets: {', '.join(presets) or 'none'}"
            )
        return self._with_base(load_yaml(presets[preset]), f"preset {preset!r}", presets, (*chain, preset))

    def _with_base(self, data: dict, what: str, presets: dict[str, Path], chain: tuple[str, ...]) -> dict:
        base = data.pop("base", None)
        if base is None:
            return data
        if not isinstance(base, str):
            raise ConfigError(f"{what}: 'base' names one preset of {self.name!r}, got {base!r}")
        if base in chain:
            raise ConfigError(f"{what}: 'base: {base}' makes a cycle ({' -> '.join((*chain, base))})")
        return deep_merge(self._preset_data(base, presets, chain), data)


def register_method(spec: MethodSpec) -> None:
    """Register a method in this process (for code that is not an installed package)."""
    _LOCAL_METHODS[spec.name] = spec


def register_evaluator(name: str, fn: Callable) -> None:
    """Register an evaluator in this process under ``name`` (the module docstring gives its
    call); it takes precedence over an installed one of the same name."""
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


def require_evaluator(name: str, method: str | None = None) -> Callable:
    """The evaluator registered under ``name``; a :class:`ConfigError` naming it, the installed
    evaluators and the fix when there is none."""
    fn = get_evaluator(name)
    if fn is not None:
        return fn
    whose = f" (MethodSpec.evaluator of method {method!r})" if method else ""
    installed = ", ".join(evaluators()) or "none"
    provider = "jepa-eval (`pip install jepa-eval`)" if name == "probes" else "the package that provides it"
    raise ConfigError(
        f"evaluator {name!r}{whose} is not installed; installed evaluators: {installed}. "
        f"Install {provider}, register it with jepa_core.registry.register_evaluator, "
        "or set eval.enabled=false"
    )
