"""`jepa` with fault-injection hooks, for tests/test_integration_chaos.py only (run as a script:
``python chaos_hooks.py pretrain ijepa ...``; nothing in the library imports it).

Without ``JEPA_CHAOS_DIR`` in the environment it is plain ``jepa``. With it, the hooks below are
installed in this process before the command runs, and:

- ``<dir>/marks`` gets a line ``prepared <step>`` once ``Trainer.fit`` has set up (the signal
  handlers are installed by then) and ``fit-done <step>`` when ``fit`` returns;
- with ``JEPA_CHAOS_PAUSE_AT=<point>@<step>`` the process stops at that point of that write,
  appends ``paused <point> <step>`` to the marks, and waits (up to 120 s) until ``<dir>/release``
  exists: the test sends its signal while the write is half done, then (for SIGTERM) releases
  it. ``<step>`` is ``*`` for the first occurrence.

The points, in the order a write goes through them:

checkpoint (``jepa_core.checkpoint``, step = the checkpoint's step)
    ``ckpt-save``     the temporary file holds half of the checkpoint's bytes (torn tmp file)
    ``ckpt-rename``   the temporary file is complete, before its atomic rename to step-N.pt
    ``ckpt-link``     step-N.pt renamed, before latest.pt is swapped to it
    ``ckpt-prune``    latest.pt swapped, before the old step-N.pt files are deleted
metrics (``jepa_core.trainer.MetricsWriter``)
    ``metrics-append``          half of the row of step N appended to metrics.csv (torn row)
    ``metrics-rewrite-mid``     resume's rewrite: the temporary copy holds only its header
    ``metrics-rewrite-rename``  resume's rewrite: the temporary copy complete, before its rename
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

POINTS = (
    "ckpt-save", "ckpt-rename", "ckpt-link", "ckpt-prune",
    "metrics-append", "metrics-rewrite-mid", "metrics-rewrite-rename",
)


class _Proxy:
    """A module stand-in: the given attributes, everything else from ``real``."""

    def __init__(self, real, **overrides):
        self._real = real
        self.__dict__.update(overrides)

    def __getattr__(self, name):
        return getattr(self._real, name)


class _File:
    """A file object whose ``write`` goes through ``hook(data, real_write)``."""

    def __init__(self, f, hook):
        self._f, self._hook = f, hook

    def write(self, data):
        return self._hook(data, self._f.write)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._f, name)


def install(control: Path, pause_at: str) -> None:
    import jepa_core.checkpoint as ckpt
    import jepa_core.trainer as trainer

    real_os, real_torch, real_open = ckpt.os, ckpt.torch, open
    want_point, _, want_step = pause_at.partition("@")
    if want_point and want_point not in POINTS:
        raise SystemExit(f"chaos_hooks: unknown point {want_point!r} (one of {', '.join(POINTS)})")
    state = {"done": False, "last_saved": None, "pruning": False}

    def mark(line: str) -> None:
        with real_open(control / "marks", "a") as f:
            f.write(line + "\n")

    def at(point: str, step) -> None:
        """Pause here if this is the point (and step) asked for, once per process."""
        if state["done"] or point != want_point or want_step not in ("*", str(step)):
            return
        state["done"] = True
        mark(f"paused {point} {step}")
        release = control / "release"
        deadline = time.monotonic() + 120
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.005)

    def halves(point: str, step, data, write, flush) -> None:
        cut = max(1, len(data) // 2)
        write(data[:cut])
        flush()
        at(point, step)
        write(data[cut:])

    # -- checkpoints -------------------------------------------------------------------------
    def save(obj, f, *args, **kwargs):
        step = obj.get("step") if isinstance(obj, dict) and obj.get("format") == "jepa-run" else None
        if step is None or not hasattr(f, "write"):
            return real_torch.save(obj, f, *args, **kwargs)
        state["last_saved"] = step
        buf = io.BytesIO()
        real_torch.save(obj, buf, *args, **kwargs)

        def flush():
            f.flush()
            real_os.fsync(f.fileno())

        halves("ckpt-save", step, buf.getvalue(), f.write, flush)

    def replace(src, dst, *args, **kwargs):
        name = Path(dst).name
        step = state["last_saved"]
        if name.startswith("step-") and name.endswith(".pt"):
            at("ckpt-rename", step)
        elif name == "latest.pt":
            at("ckpt-link", step)
            state["pruning"] = True
        return real_os.replace(src, dst, *args, **kwargs)

    real_step_checkpoints = ckpt.step_checkpoints

    def step_checkpoints(folder):
        if state["pruning"]:  # save_checkpoint lists the files to delete right after the link
            state["pruning"] = False
            at("ckpt-prune", state["last_saved"])
        return real_step_checkpoints(folder)

    ckpt.torch = _Proxy(real_torch, save=save)
    ckpt.os = _Proxy(real_os, replace=replace)
    ckpt.step_checkpoints = step_checkpoints

    # -- metrics.csv -------------------------------------------------------------------------
    def trainer_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        name = Path(str(file)).name
        if name == "metrics.csv" and mode == "a":
            def row(data, write):
                halves("metrics-append", data.split(",", 1)[0], data, write, f.flush)
            return _File(f, row)
        if name == ".metrics.csv.tmp" and mode == "w":
            first = [True]

            def tmp(data, write):
                n = write(data)
                if first[0]:  # the header
                    first[0] = False
                    f.flush()
                    at("metrics-rewrite-mid", "*")
                return n
            return _File(f, tmp)
        return f

    def trainer_replace(src, dst, *args, **kwargs):
        if Path(dst).name == "metrics.csv":
            at("metrics-rewrite-rename", "*")
        return real_os.replace(src, dst, *args, **kwargs)

    trainer.open = trainer_open
    trainer.os = _Proxy(real_os, replace=trainer_replace)

    # -- where fit is ------------------------------------------------------------------------
    real_prepare, real_fit = trainer.Trainer._prepare, trainer.Trainer.fit

    def prepare(self, *args, **kwargs):
        out = real_prepare(self, *args, **kwargs)
        mark(f"prepared {self.state.step}")
        return out

    def fit(self, *args, **kwargs):
        out = real_fit(self, *args, **kwargs)
        mark(f"fit-done {self.state.step}")
        return out

    trainer.Trainer._prepare = prepare
    trainer.Trainer.fit = fit


def main(argv: list[str]) -> int:
    control = os.environ.get("JEPA_CHAOS_DIR")
    if control:
        install(Path(control), os.environ.get("JEPA_CHAOS_PAUSE_AT", ""))
    from jepa_core.cli import main as jepa

    return jepa(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
