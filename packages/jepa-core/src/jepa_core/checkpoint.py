"""Checkpoints: atomic writes, safe loading (``weights_only=True``), safetensors export."""

from __future__ import annotations

import errno
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

_TEST_DELAY_ENV = "JEPA_TEST_CHECKPOINT_DELAY_S"


class CheckpointError(RuntimeError):
    """A file that is not a usable checkpoint; the message says which file and why.

    ``reason`` (when set) is the short why, e.g. ``unreadable (PermissionError: ...)``,
    ``corrupt or truncated (...)`` or ``not a jepa run checkpoint (missing model)``."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason


class StorageError(OSError):
    """Writing a run file failed because its file system is full, over quota, read-only or
    not writable by us; the message names the file and the fix (``errno`` is the cause's)."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}


def raise_storage_error(e: OSError, path: str | Path, what: str = "file") -> None:
    """Raise a :class:`StorageError` for ``e`` (met while writing ``what`` at ``path``) when it
    is a lack of space or of write access; return otherwise (the caller re-raises ``e``)."""
    if isinstance(e, StorageError) or e.errno not in _NO_SPACE | _NOT_WRITABLE:
        return
    cause = f"{errno.errorcode.get(e.errno, e.errno)}: {e.strerror or e}"
    where = Path(path).parent
    if e.errno in _NO_SPACE:
        fix = f"free space on the file system of {where} (or give another --run-dir)"
    else:
        fix = f"make {where} writable (or give another --run-dir)"
    raise StorageError(
        e.errno, f"cannot write the {what} {path} ({cause}); {fix}, then run again: --resume continues from "
                 "the last complete checkpoint, which was kept", str(path),
    ) from e


def state_dict_mismatch(expected: dict[str, Any], saved: dict[str, Any], limit: int = 4) -> list[str]:
    """How ``saved`` (a checkpoint's model state dict) does not fit ``expected`` (the model's):
    entries of other shapes (``name: checkpoint [..] vs model [..]``), then missing and
    unexpected names; at most ``limit`` of each, and an empty list when it fits."""
    def shape(t: Any) -> list[int]:  # a tensor, or a shape (torch.Size, tuple)
        return list(t) if isinstance(t, (tuple, list)) else list(getattr(t, "shape", ()))

    out = [f"{k}: checkpoint {shape(saved[k])} vs model {shape(v)}"
           for k, v in expected.items() if k in saved and shape(saved[k]) != shape(v)][:limit]
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    for label, names in (("missing in the checkpoint", missing), ("not in the model", unexpected)):
        if names:
            more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
            out.append(f"{label}: {', '.join(names[:limit])}{more}")
    return out


def check_fits(expected: dict[str, Any], saved: dict[str, Any], path: str | Path, run_dir: str | Path,
               explain=None) -> None:
    """Raise a :class:`CheckpointError` when the model state dict ``saved`` (tensors or shapes)
    of the checkpoint ``path`` of the run ``run_dir`` does not fit ``expected`` (the model's),
    naming the parameters that differ and the way out. ``explain(missing, unexpected)`` (e.g.
    :meth:`jepa_core.method.JEPAMethod.explain_checkpoint_mismatch`) may give a method's own
    reason and fix instead of the generic one."""
    mismatch = state_dict_mismatch(expected, saved)
    if mismatch:
        run_dir = Path(run_dir)
        if explain is not None:
            reason = explain([k for k in expected if k not in saved], [k for k in saved if k not in expected])
            if reason:
                raise CheckpointError(f"the checkpoint {path} of the run {run_dir} does not fit the model: {reason}")
        raise CheckpointError(
            f"the checkpoint {path} does not fit the model this config builds ({'; '.join(mismatch)}): the run in "
            f"{run_dir} was trained with other architecture settings (model.* keys, or the data sizes that set the "
            f"token grid). Resume with the run's config ({run_dir / 'config.yaml'}, and config-effective.yaml when "
            "present), or start over with --restart or another --run-dir"
        )


#: The entries a checkpoint needs to resume a run from it.
RUN_KEYS = ("model", "optimizer", "step")


def _file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the process umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, flush and fsync it, rename it over
    ``path`` (``os.replace``, atomic on POSIX), then fsync the folder so the rename is durable.

    A crash or kill at any moment leaves either the old file or the new one, never a torn one
    (at worst a hidden ``.<name>.*.tmp`` file, which :func:`remove_stale_temp_files` deletes).
    """
    path = Path(path)
    try:
        return _atomic_save(obj, path)
    except OSError as e:  # a full disk names the checkpoint, not a temporary file
        raise_storage_error(e, path, "checkpoint")
        raise


def _atomic_save(obj: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _file_mode())  # mkstemp makes 0600; a checkpoint is an ordinary file (0644 under umask 022)
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        if _TEST_DELAY_ENV in os.environ:  # fault-injection tests: widen the write window
            time.sleep(float(os.environ[_TEST_DELAY_ENV]))
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files of writes that a crash interrupted (``.*.tmp``, ``.*.link``)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if p.name.startswith(".") and p.suffix in (".tmp", ".link")]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def atomic_link(src: str | Path, dst: str | Path) -> Path:
    """Make ``dst`` the same file as ``src`` (a hard link, renamed into place atomically), so
    ``latest.pt`` costs no second write; copies where hard links are not supported."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link")
    try:
        tmp.unlink(missing_ok=True)
        os.link(src, tmp)
        os.replace(tmp, dst)
    except OSError:
        tmp.unlink(missing_ok=True)
        atomic_save(torch.load(src, map_location="cpu", weights_only=True), dst)
    return dst


def load(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict:
    """Load a checkpoint with ``weights_only=True`` (never runs pickled code).

    ``.safetensors`` files are read by :func:`jepa_core.pretrained.read_safetensors` (a flat tensor dict; no extra needed). ``mmap``
    maps the tensors from the file instead of reading them (a cheap validity check). A file that
    cannot be opened raises a :class:`CheckpointError` with reason ``unreadable (...)``, one that
    does not parse ``corrupt or truncated (...)``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        # One safetensors path for the whole library, with no extra to install: jepa_core.pretrained's
        # reader of the documented format (tested against the safetensors package).
        from jepa_core.pretrained import read_safetensors

        try:
            tensors, _ = read_safetensors(path)
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(f"{str(path)!r} is not a readable safetensors file: {e}") from e
        device = torch.device(map_location) if isinstance(map_location, (str, torch.device)) else None
        return {k: v.to(device) for k, v in tensors.items()} if device is not None and device.type != "cpu" else tensors
    try:  # a file we may not open (permissions) is unreadable, not corrupt
        with open(path, "rb") as f:
            empty = not f.read(1)
    except OSError as e:
        reason = f"unreadable ({_why(e)})"
        raise CheckpointError(f"{str(path)!r} is {reason}: check its owner and permissions", reason) from e
    if empty:
        reason = "corrupt or truncated (empty file, 0 bytes)"
        raise CheckpointError(f"{str(path)!r} is not a readable checkpoint: {reason}", reason)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:
        if mmap and "mmap" in str(e):  # an old (non-zip) torch file: read it the usual way
            return load(path, map_location)
        reason = f"corrupt or truncated ({_why(e)})"
        raise CheckpointError(
            f"{str(path)!r} is not a readable checkpoint (truncated, corrupt or not a torch file): {_why(e)}", reason
        ) from e
    if not isinstance(obj, dict):
        reason = f"not a jepa run checkpoint (holds a {type(obj).__name__}, not a checkpoint dict)"
        raise CheckpointError(f"{str(path)!r} holds a {type(obj).__name__}, not a checkpoint dict", reason)
    return obj


def _why(e: BaseException) -> str:
    """``Type: first line of the message`` (torch's weights-only refusal: its actual cause, not
    its advice to load with ``weights_only=False``)."""
    text = str(e).splitlines()[0] if str(e) else ""
    if text.startswith("Weights only load failed"):
        detail = str(e).split("WeightsUnpickler error:", 1)[-1].strip().split("\n\n")[0].strip()
        cause = detail if "WeightsUnpickler error:" in str(e) and detail else "see torch.load"
        text = f"not loadable with weights_only=True: {cause}"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def save_safetensors(state_dict: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write a flat tensor dict as safetensors (contiguous copies; shared storage is split)."""
    from jepa_core.pretrained import write_safetensors  # the one writer (no extra needed)

    return write_safetensors(state_dict, path)


_STEP_FILE = re.compile(r"^step-(\d+)\.pt$")


def step_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """``step-N.pt`` files in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_FILE.match(p.name))]
    return sorted(found)


def latest_valid(
    folder: str | Path, required: tuple[str, ...] = (), strict: bool = False, mmap: bool = False
) -> tuple[Path, dict] | None:
    """The newest checkpoint in ``folder`` that loads (``latest.pt`` first, then ``step-N.pt``
    newest first); unreadable files, and files without the ``required`` entries (e.g.
    :data:`RUN_KEYS`), are reported and skipped. None when there is no checkpoint file; with
    ``strict``, a folder whose checkpoint files all fail raises a :class:`CheckpointError` that
    lists each file and why."""
    import logging

    logger = logging.getLogger(__name__)
    folder = Path(folder)
    candidates = [folder / "latest.pt"] + [p for _, p in reversed(step_checkpoints(folder))]
    best: tuple[int, Path, dict] | None = None
    failed: list[tuple[Path, str]] = []
    for p in candidates:
        if not p.is_file():
            continue
        try:
            obj = load(p, mmap=mmap)
        except CheckpointError as e:
            logger.warning("skipping unreadable checkpoint: %s", e)
            failed.append((p, e.reason or str(e)))
            continue
        missing = [k for k in required if k not in obj]
        if missing:
            reason = f"not a jepa run checkpoint (missing {'/'.join(missing)})"
            logger.warning("skipping checkpoint %s: %s", p, reason)
            failed.append((p, reason))
            continue
        step = int(obj.get("step", -1))
        if best is None or step > best[0]:
            best = (step, p, obj)
    if best is None and failed and strict:
        listing = "; ".join(f"{p.name}: {reason}" for p, reason in failed)
        raise CheckpointError(
            f"no usable checkpoint in {folder} ({len(failed)} file(s), none loads as a jepa run checkpoint: "
            f"{listing}). Nothing was changed. Fix the files (e.g. their permissions), or start over on purpose "
            "with --restart (jepa_core.run.pretrain(..., restart=True)), which moves checkpoints/ and metrics.csv "
            "into <run>/previous-<time>/"
        )
    return None if best is None else (best[1], best[2])
