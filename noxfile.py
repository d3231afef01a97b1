"""Test, lint and benchmark sessions. `nox` runs the default sessions: one test session per
package (each installs only that package and its dependencies, from uv.lock) and lint.

    nox                     # all default sessions
    nox -s tests-jepa-core  # one package
    nox -s bench            # benchmarks (not run by default)
    nox -s tests-jepa-core -- -m "not slow"   # pytest arguments after --
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = [
    "tests-jepa-core", "tests-jepa-image", "tests-jepa-video", "tests-jepa-skeleton", "tests-jepa-eval",
    "tests-integration", "lint",
]

# package: the extras its tests need (plots: the PNGs a run writes; torchcodec: tested where
# FFmpeg's libraries are installed, .ci/run installs them, skipped elsewhere)
PACKAGES = {"jepa-core": ["plots", "safetensors", "slurm"], "jepa-image": ["plots"], "jepa-video": ["torchcodec"],
            "jepa-skeleton": [], "jepa-eval": []}
ENV = {"UV_COMPILE_BYTECODE": "1", "UV_PYTHON_DOWNLOADS": "never"}


def _sync(session: nox.Session, *args: str) -> None:
    """Install from the lock into the session's venv (uv sync --frozen: never re-resolves)."""
    env = dict(ENV, UV_PROJECT_ENVIRONMENT=session.virtualenv.location)
    session.run_install("uv", "sync", "--frozen", "--python", session.virtualenv.location, *args, env=env,
                        external=True)


for _pkg, _extras in PACKAGES.items():

    @nox.session(name=f"tests-{_pkg}", python="3.11")
    def _tests(session: nox.Session, pkg: str = _pkg, extras: list[str] = _extras) -> None:
        extra_args = [a for e in extras for a in ("--extra", e)]
        _sync(session, "--package", pkg, *extra_args, "--no-default-groups", "--group", "test")
        session.run("pytest", f"packages/{pkg}", *session.posargs)


@nox.session(name="tests-integration", python="3.11")
def tests_integration(session: nox.Session) -> None:
    """Cross-package tests (tests/) and the benchmark scripts' tests (benchmarks/tests; the
    official comparisons need JEPA_OFFICIAL_* checkouts): every package installed together, as
    `uv run` does."""
    _sync(session, "--all-packages", "--group", "dev")
    session.run("pytest", "tests", "benchmarks/tests", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff, and the package layering (scripts/check_layering.py: who may import whom)."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "packages", "tests", "benchmarks", "scripts", "noxfile.py")
    session.run("python", "scripts/check_layering.py")


@nox.session(python="3.11", default=False)
def bench(session: nox.Session) -> None:
    """Speed and memory benchmarks (the packages' `jepa bench` cases; `-- --official-ijepa PATH
    ...` to compare with official checkouts, benchmarks/official.py); results go to BENCHMARKS.md."""
    _sync(session, "--all-packages", "--no-default-groups", "--group", "test")
    session.run("python", "benchmarks/run.py", *session.posargs)
