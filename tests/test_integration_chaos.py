"""Issue #13 acceptance, the chaos test: a tiny real I-JEPA run (`jepa pretrain ijepa`, 60 steps,
a checkpoint every 2, a metrics row every step) is stopped 25 times by SIGKILL or SIGTERM and
resumed with `--resume` after each, then finishes; it must end bitwise equal to the same run
left alone (model, EMA target, optimizer, counters, RNG), with one metrics row per step holding
the uninterrupted run's values, and no file of the run folder unreadable after any of the stops.

The run goes through ``chaos_hooks.py`` (beside this file), which starts ``jepa`` with hooks
installed in that process only: asked for a point of a write (``JEPA_CHAOS_PAUSE_AT``), the
process stops there and tells the test, which signals it while the write is half done: inside
checkpoint writes (torn temporary file, before the atomic rename, before the ``latest.pt``
swap, before old files are deleted) and metrics writes (a half-appended row; resume's rewrite
of metrics.csv, half written and before its rename). The other stops come after a random time.
The schedule is drawn from a seeded RNG (``JEPA_CHAOS_SEED`` picks another one) and printed
with any failure.

A SIGTERM must save a checkpoint of the step it stopped at and exit 75 (one line on stderr); a
SIGKILL must leave the old files or the new ones, never a torn one: after every stop each
``checkpoints/*.pt`` loads as a run checkpoint, metrics.csv parses (a torn last row only after a
SIGKILL inside its append, and dropped by the resume), config.yaml loads.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from jepa_core import checkpoint as ckpt
from jepa_core.config import load_yaml
from jepa_core.testing import last_logged_step, tensor_digest

pytestmark = [pytest.mark.slow, pytest.mark.fault]

HOOKS = Path(__file__).with_name("chaos_hooks.py")
SEED = int(os.environ.get("JEPA_CHAOS_SEED", "13"))
STEPS = 60
EVERY = 2  # train.checkpoint_every
TINY = [
    "model.encoder=custom", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
    "model.pred_depth=1", "model.pred_emb_dim=16", "model.patch_size=4",
    "data.batch_size=16", "data.num_workers=0", "data.pin_memory=false",
    "train.device=cpu", "train.num_threads=1", "train.progress=false", "eval.enabled=false",
    f"train.checkpoint_every={EVERY}", "train.log_every=1", "train.keep_last=3", f"optim.max_steps={STEPS}",
]
#: metrics.csv columns that measure the machine rather than the run
VOLATILE = {"samples_per_s", "step_time_s", "elapsed_s", "peak_mem_mb"}
CKPT_POINTS = ("ckpt-save", "ckpt-rename", "ckpt-link", "ckpt-prune")
METRICS_POINTS = ("metrics-append", "metrics-rewrite-mid", "metrics-rewrite-rename")
#: 24 stops in random order: 8 inside checkpoint writes, 8 inside metrics writes, 8 at a random
#: time (6 once training runs, 2 from the process start, mostly during imports and set-up); then
#: one more once the training is over (plots, report), and a last resume that finishes the run.
PLAN = [*CKPT_POINTS * 2, "metrics-append", "metrics-append", *METRICS_POINTS * 2, *["time"] * 6, "startup", "startup"]
DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
STOP_LINE = "jepa: stopped by SIGTERM at step {} after saving a checkpoint; resume with --resume"


@dataclass
class Event:
    n: int
    point: str  # a chaos_hooks point, "time" (after fit has set up), "startup" (after the start)
    # or "post-fit" (after fit returned)
    sig: int
    target: str  # the step of the write (hook points), or the delay in seconds
    resume_from: int
    rc: int | None = None
    landed: str = ""  # what the stop hit: the paused write, or the temporary files it left
    resume_to: int | None = None

    def __str__(self) -> str:
        sig = signal.Signals(self.sig).name
        return (f"#{self.n:2d} {sig:7s} {self.point:22s} @{self.target:6s} from step {self.resume_from:2d} -> "
                f"rc {self.rc}, resumable at {self.resume_to}{'; ' + self.landed if self.landed else ''}")


def _env(control: Path | None = None, pause_at: str = "") -> dict:
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV and not k.startswith("JEPA_CHAOS")}
    env["OMP_NUM_THREADS"] = "1"
    if control is not None:
        env["JEPA_CHAOS_DIR"] = str(control)
        env["JEPA_CHAOS_PAUSE_AT"] = pause_at
    return env


def _cmd(run: Path, resume: bool) -> list[str]:
    return [sys.executable, str(HOOKS), "pretrain", "ijepa", *TINY, "--run-dir", str(run),
            *(["--resume"] if resume else [])]


def _marks(control: Path) -> list[str]:
    try:
        return (control / "marks").read_text().splitlines()
    except FileNotFoundError:
        return []


def _wait_mark(proc: subprocess.Popen, control: Path, prefix: str, timeout: float = 120) -> str | None:
    """The first mark line starting with ``prefix``, or None if the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [m for m in _marks(control) if m.startswith(prefix)]
        if found:
            return found[0]
        if proc.poll() is not None:
            return None
        time.sleep(0.005)
    raise AssertionError(f"no {prefix!r} mark after {timeout} s")


def _hidden(run: Path) -> dict[str, float]:
    """Temporary files of interrupted writes (name -> mtime)."""
    out = {}
    for folder in (run, run / "checkpoints"):
        if folder.is_dir():
            for p in folder.iterdir():
                if p.name.startswith(".") and p.suffix in (".tmp", ".link"):
                    out[str(p.relative_to(run))] = p.stat().st_mtime
    return out


def _segment(run: Path, control: Path, ev: Event | None, resume: bool) -> tuple[int, str]:
    """Start the run, stop it as ``ev`` says (None: let it finish); its exit status and stderr."""
    control.mkdir(exist_ok=True)
    for name in ("marks", "release"):
        (control / name).unlink(missing_ok=True)
    hook = ev is not None and ev.point not in ("time", "startup", "post-fit")
    before = _hidden(run)
    err_path = control / "stderr.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(_cmd(run, resume), env=_env(control, f"{ev.point}@{ev.target}" if hook else ""),
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        if ev is not None:
            if hook:
                paused = _wait_mark(proc, control, "paused ")
                assert paused is not None, f"{ev}: the run ended without reaching the write {ev.point}@{ev.target}"
                ev.landed = "inside " + paused.split(" ", 1)[1]
            else:
                if ev.point in ("time", "post-fit"):
                    _wait_mark(proc, control, "prepared " if ev.point == "time" else "fit-done ")
                time.sleep(float(ev.target))
            if proc.poll() is None:
                os.kill(proc.pid, ev.sig)
                if hook and ev.sig == signal.SIGTERM:
                    time.sleep(0.05)  # the handler runs while the write waits, then it goes on
                    (control / "release").touch()
            elif not hook:
                ev.landed = "the run had ended before the signal"
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if ev is not None:
        left = sorted(k for k, t in _hidden(run).items() if before.get(k) != t)
        if left and not hook:
            ev.landed = "by chance inside a write: left " + ", ".join(left)
        elif left:
            ev.landed += "; left " + ", ".join(left)
    return proc.returncode, err_path.read_text()


def _metrics(path: Path) -> tuple[list[str], list[dict], str | None]:
    """metrics.csv: its header, its complete rows and a torn last line (None when there is none).
    Raises ValueError for anything else that does not parse."""
    text = path.read_text()
    if not text:
        return [], [], None
    lines = text.split("\r\n") if "\r\n" in text else text.split("\n")
    torn = lines.pop() or None  # what follows the last line break
    if not lines:
        raise ValueError(f"metrics.csv without a complete header: {text!r}")
    header = next(csv.reader([lines[0]]))
    rows = []
    for line in lines[1:]:
        values = next(csv.reader([line]))
        if len(values) != len(header):
            raise ValueError(f"metrics.csv row with {len(values)} fields under a {len(header)}-field header: {line!r}")
        rows.append(dict(zip(header, values)))
    return header, rows, torn


def _same_values(row: dict, ref: dict) -> dict:
    """The columns where ``row`` differs from the uninterrupted run's row (machine timings aside)."""
    return {k: (row.get(k), ref[k]) for k in ref if k not in VOLATILE and row.get(k) != ref[k]}


def _stat(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _check(run: Path, ref_header: list[str], ref_rows: dict[int, dict], ref_config: dict, ev: Event,
           metrics_before: tuple | None) -> tuple[int, list[str]]:
    """After a stop: the step a resume continues from, and every problem with the run folder. A
    torn last row in metrics.csv is allowed after a SIGKILL inside its append, and stays until a
    resume rewrites the file (``metrics_before``: the file as the stopped run found it)."""
    problems = []
    resumable = 0
    folder = run / "checkpoints"
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        if p.name.startswith("."):
            continue  # an interrupted write's temporary file: removed when the next run starts
        try:
            obj = ckpt.load(p)
        except ckpt.CheckpointError as e:
            problems.append(f"unreadable checkpoint {p.name}: {e}")
            continue
        if obj.get("format") != "jepa-run" or any(k not in obj for k in ckpt.RUN_KEYS):
            problems.append(f"{p.name} is not a run checkpoint: keys {sorted(obj)}")
            continue
        if p.name != "latest.pt" and p.name != f"step-{obj['step']}.pt":
            problems.append(f"{p.name} holds step {obj['step']}")
        resumable = max(resumable, int(obj["step"]))
    steps = [int(p.name[5:-3]) for p in folder.glob("step-*.pt")] if folder.is_dir() else []
    if (folder / "latest.pt").exists() and steps and ckpt.load(folder / "latest.pt")["step"] < max(steps) - EVERY:
        problems.append(f"latest.pt lags: step {ckpt.load(folder / 'latest.pt')['step']}, files {sorted(steps)}")

    path = run / "metrics.csv"
    if path.exists():
        try:
            header, rows, torn = _metrics(path)
        except (ValueError, csv.Error, StopIteration) as e:
            problems.append(f"unreadable metrics.csv: {e}")
        else:
            if header and header != ref_header:
                problems.append(f"metrics.csv header {header} != {ref_header}")
            got = [int(r["step"]) for r in rows]
            if got != list(range(1, len(got) + 1)):
                problems.append(f"metrics.csv steps {got}")
            elif got and got[-1] < resumable:
                problems.append(f"metrics.csv ends at step {got[-1]} but a checkpoint of step {resumable} exists")
            for r in rows:
                diff = _same_values(r, ref_rows[int(r["step"])])
                if diff:
                    problems.append(f"metrics.csv step {r['step']} differs from the uninterrupted run: {diff}")
            if torn is not None and _stat(path) != metrics_before:
                killed_in_append = ev.point == "metrics-append" and ev.sig == signal.SIGKILL
                if not killed_in_append:
                    problems.append(f"metrics.csv ends in a torn row {torn!r} after {ev}")
                elif torn.split(",", 1)[0] != str(len(got) + 1):
                    problems.append(f"torn row {torn!r} is not the row of step {len(got) + 1}")
                else:
                    ev.landed += f"; left a torn row {torn[:12]!r}..."
    config = run / "config.yaml"
    if config.exists():
        try:
            data = load_yaml(config)
        except Exception as e:
            problems.append(f"unreadable config.yaml ({type(e).__name__}: {e}); size {config.stat().st_size} bytes")
        else:
            if data != ref_config:
                problems.append("config.yaml differs from the uninterrupted run's")
    return resumable, problems


def _check_exit(run: Path, ev: Event, err: str) -> list[str]:
    """The exit status the signal should give (SIGTERM: 75 once fit has its handlers, with a
    checkpoint of the last step it logged)."""
    tail = err.rstrip().splitlines()[-1] if err.strip() else ""
    done = ev.resume_to == STEPS
    if ev.sig == signal.SIGKILL:
        ok = ev.rc == -signal.SIGKILL or (ev.rc == 0 and done)
    elif ev.rc == 75:
        ok = tail == STOP_LINE.format(ev.resume_to) and "Traceback" not in err
        ok = ok and last_logged_step(run) == ev.resume_to
        if ok and ev.point != "startup":  # the stop saved the step it stopped at
            ok = ev.resume_to >= ev.resume_from + (ev.point == "time" or ev.point.startswith("metrics-rewrite"))
    elif ev.point in ("time", "startup", "post-fit"):
        # no handler yet (imports, set-up) or no longer (fit returned: plots, report)
        ok = ev.rc in (-signal.SIGTERM, 0) and (ev.point == "startup" or done)
    else:
        ok = False  # a SIGTERM inside fit's writes must save and exit 75
    return [] if ok else [f"exit status {ev.rc} for {ev}; stderr ends:\n{err[-2500:]}"]


def _target(rng: random.Random, point: str, r: int, run: Path) -> tuple[str, str]:
    if point == "time":
        return point, f"{rng.uniform(0.0, 0.25):.3f}"
    if point == "startup":
        return point, f"{rng.uniform(0.3, 3.0):.3f}"
    if point == "post-fit":
        return point, f"{rng.uniform(0.0, 0.3):.3f}"
    if point.startswith("metrics-rewrite"):
        # resume rewrites metrics.csv only once it has a header
        if (run / "metrics.csv").exists() and (run / "metrics.csv").stat().st_size > 0:
            return point, "*"
        point = "metrics-append"
    if point == "metrics-append":
        return point, str(min(STEPS, r + rng.randint(1, 3)))
    return point, str(min(STEPS, (r // EVERY + 1) * EVERY + EVERY * rng.choice([0, 0, 1])))


def _state(run: Path) -> dict:
    return ckpt.load(run / "checkpoints" / "latest.pt")


def _diff_states(a, b, where: str = "") -> list[str]:
    """Where two checkpoint objects differ (tensors bitwise)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b))
        return [] if same else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where}: keys {sorted(set(a) ^ set(b), key=str)}"]
        return [d for k in a for d in _diff_states(a[k], b[k], f"{where}/{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff_states(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def test_chaos_kills_and_sigterms_end_bitwise_equal_to_an_uninterrupted_run(tmp_path):
    t_start = time.monotonic()
    ref = tmp_path / "ref"
    done = subprocess.run(_cmd(ref, False), env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ref_header, ref_list, ref_torn = _metrics(ref / "metrics.csv")
    assert ref_torn is None and [int(r["step"]) for r in ref_list] == list(range(1, STEPS + 1))
    ref_rows = {int(r["step"]): r for r in ref_list}
    ref_config = load_yaml(ref / "config.yaml")

    rng = random.Random(SEED)
    plan = list(PLAN)
    rng.shuffle(plan)
    while plan[0].startswith("metrics-rewrite"):  # the first start has no metrics.csv to rewrite
        plan.append(plan.pop(0))
    run, control = tmp_path / "run", tmp_path / "control"
    events: list[Event] = []
    problems: list[str] = []
    r = 0

    def report() -> str:
        lines = [f"seed {SEED} (JEPA_CHAOS_SEED), {len(events)} stops:"] + [str(e) for e in events]
        return "\n".join(lines + ["problems:"] + problems[:30])

    for n, point in enumerate([*plan, "post-fit"], 1):
        sig = signal.SIGKILL if rng.random() < 0.6 else signal.SIGTERM
        point, target = _target(rng, point, r, run)
        ev = Event(n, point, sig, target, r)
        events.append(ev)
        metrics_before = _stat(run / "metrics.csv")
        ev.rc, err = _segment(run, control, ev, resume=n > 1)
        ev.resume_to, found = _check(run, ref_header, ref_rows, ref_config, ev, metrics_before)
        problems += [f"after {ev}: {p}" for p in found] + _check_exit(run, ev, err)
        if ev.sig == signal.SIGKILL and ev.point in ("ckpt-save", "metrics-append"):
            # the injection itself: a SIGKILL there leaves a half-written file behind
            torn = "left checkpoints/.step-" if ev.point == "ckpt-save" else "left a torn row"
            if torn not in ev.landed:
                problems.append(f"{ev}: the kill did not leave the half-written file the test meant to leave")
        assert not problems, report()
        assert ev.resume_to >= r, f"a stop lost saved progress\n{report()}"
        r = ev.resume_to

    rc, err = _segment(run, control, None, resume=True)  # the rest, undisturbed
    assert rc == 0, f"the last resume failed (rc {rc}):\n{err[-3000:]}\n{report()}"
    wall = time.monotonic() - t_start

    # -- the counts the acceptance asks for ----------------------------------------------------
    signalled = [e for e in events if "ended before" not in e.landed]
    in_ckpt = [e for e in signalled if e.point in CKPT_POINTS or "/.step-" in e.landed or ".latest.pt" in e.landed]
    in_metrics = [e for e in signalled if e.point in METRICS_POINTS or ".metrics.csv" in e.landed]
    summary = (f"{len(signalled)} stops ({sum(e.sig == signal.SIGKILL for e in signalled)} SIGKILL, "
               f"{sum(e.sig == signal.SIGTERM for e in signalled)} SIGTERM), {len(in_ckpt)} inside checkpoint "
               f"writes, {len(in_metrics)} inside metrics writes, {wall:.0f} s")
    print("\n" + summary + "\n" + report())
    assert len(signalled) >= 20, report()
    assert events[-1].resume_to == STEPS, f"the stop after the training did not find it finished\n{report()}"
    assert len(in_ckpt) >= 3 and len(in_metrics) >= 3, f"{summary}\n{report()}"
    assert {e.sig for e in in_ckpt} == {e.sig for e in in_metrics} == {signal.SIGKILL, signal.SIGTERM}, report()

    # -- the end: bitwise the uninterrupted run ------------------------------------------------
    final, expected = _state(run), _state(ref)
    assert final["step"] == expected["step"] == STEPS
    for part in ("encoder", "predictor", "target_encoder"):
        mine = [v for k, v in final["model"].items() if k.startswith(part + ".")]
        theirs = [v for k, v in expected["model"].items() if k.startswith(part + ".")]
        assert mine and tensor_digest(mine) == tensor_digest(theirs), f"{part} differs\n{report()}"
    differ = _diff_states({k: v for k, v in final.items() if k != "config"},
                          {k: v for k, v in expected.items() if k != "config"})
    assert not differ, f"the final checkpoint differs from the uninterrupted run's at {differ[:20]}\n{report()}"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == \
        sorted(p.name for p in (ref / "checkpoints").iterdir()), report()
    for step in (STEPS - EVERY, STEPS - 2 * EVERY):  # the kept older files too
        a = ckpt.load(run / "checkpoints" / f"step-{step}.pt")
        b = ckpt.load(ref / "checkpoints" / f"step-{step}.pt")
        assert not _diff_states(a["model"], b["model"]) and not _diff_states(a["optimizer"], b["optimizer"]), step

    header, rows, torn = _metrics(run / "metrics.csv")
    assert header == ref_header and torn is None
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1)), "a step is missing or logged twice"
    diffs = {int(r["step"]): d for r in rows if (d := _same_values(r, ref_rows[int(r["step"])]))}
    assert not diffs, f"metrics differ from the uninterrupted run: {diffs}"
    assert _hidden(run) == {}, f"temporary files left after the run finished: {_hidden(run)}"
    assert load_yaml(run / "config.yaml") == ref_config
    history = run / "config-history.jsonl"
    assert not history.exists(), f"a resume with the same config recorded changes: {history.read_text()[:2000]}"
    assert (run / "report.md").is_file()


def test_a_resume_after_the_last_step_reports_the_runs_final_loss(tmp_path):
    run, control, steps = tmp_path / "run", tmp_path / "control", 4
    overrides = [o for o in TINY if not o.startswith("optim.max_steps=")] + [f"optim.max_steps={steps}"]
    cmd = [sys.executable, str(HOOKS), "pretrain", "ijepa", *overrides, "--run-dir", str(run)]
    control.mkdir()
    # SIGTERM inside the checkpoint write of the last step: it is saved, then the run stops (75)
    proc = subprocess.Popen(cmd, env=_env(control, f"ckpt-save@{steps}"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_mark(proc, control, "paused ") == f"paused ckpt-save {steps}"
        os.kill(proc.pid, signal.SIGTERM)
        time.sleep(0.05)
        (control / "release").touch()
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 75 and err.rstrip().splitlines()[-1] == STOP_LINE.format(steps), err[-2000:]
    assert not (run / "report.md").exists()
    done = subprocess.run([*cmd, "--resume"], env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    _, rows, _ = _metrics(run / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, steps + 1))
    report = (run / "report.md").read_text()
    assert f"- steps: {steps}, final loss {float(rows[-1]['loss']):.5f}" in report, report
    assert "nothing left to train" in report and "0.0 samples/s" not in report, report
