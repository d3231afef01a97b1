"""Test, lint and benchmark sessions. `nox` runs the default sessions: one test session per
package (each installs only that package and its dependencies, from uv.lock) and lint.

    nox                     # all default sessions
    nox -s tests-jepa-core  # one package
    nox -s bench            # benchmarks (not run by default)
    nox -s build            # every wheel and sdist, checked, each installed alone in a fresh venv
    nox -s docs             # the documentation site into site/ (mkdocs build --strict)
    nox -s release -- jepa-image 0.2.0   # bump, check the changelog, build, tag (docs/releasing.md)
    nox -s tests-jepa-core -- -m "not slow"   # pytest arguments after --
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = [
    "tests-jepa-core", "tests-jepa-image", "tests-jepa-video", "tests-jepa-skeleton", "tests-jepa-eval",
    "tests-integration", "lint", "build", "docs",
]

# package: the extras its tests need (plots: the PNGs a run writes; torchcodec: tested where
# FFmpeg's libraries are installed, .ci/run installs them, skipped elsewhere)
PACKAGES = {"jepa-core": ["plots", "safetensors", "slurm", "hub"], "jepa-image": ["plots"], "jepa-video": ["torchcodec"],
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
        session.run("pytest", f"packages/{pkg}", "--durations=10", *session.posargs)  # slowest tests in the CI log


@nox.session(name="tests-integration", python="3.11")
def tests_integration(session: nox.Session) -> None:
    """Cross-package tests (tests/) and the benchmark scripts' tests (benchmarks/tests; the
    official comparisons need JEPA_OFFICIAL_* checkouts): every package installed together, as
    `uv run` does."""
    _sync(session, "--all-packages", "--group", "dev")
    session.run("pytest", "tests", "benchmarks/tests", "--durations=10", *session.posargs)


# The modules mypy checks in `nox -s lint` (settings: [tool.mypy] in pyproject.toml).
TYPECHECKED = [f"packages/{pkg}/src/{pkg.replace('-', '_')}" for pkg in PACKAGES]


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff, the package layering (scripts/check_layering.py: who may import whom) and mypy on
    the type-checked packages (TYPECHECKED, against the locked torch)."""
    # every package (mypy follows the imports between them); the optional backends stay out, their
    # imports are typed as missing ([tool.mypy] ignore_missing_imports)
    _sync(session, "--all-packages", "--no-default-groups", "--group", "test")
    session.install("ruff>=0.6", "mypy>=1.11")
    session.run("ruff", "check", "packages", "tests", "benchmarks", "scripts", "examples", "noxfile.py",
                "hubconf.py")
    session.run("python", "scripts/check_layering.py")
    session.run("mypy", *TYPECHECKED)


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """The documentation site (mkdocs.yml; docs/): scripts/gen_docs.py writes the generated
    reference pages (config keys from the config classes, `jepa <command> --help`, the package
    READMEs) into docs/reference/generated/, then `mkdocs build --strict` (any warning fails)
    builds site/."""
    _sync(session, "--all-packages", "--group", "dev")  # gen_docs imports the packages
    # after the sync, which removes what the lock does not list; ruff formats the signatures
    session.install("mkdocs-material>=9.5,<10", "mkdocstrings[python]>=1.0,<2", "mkdocstrings-python>=2.0,<3", "ruff>=0.6")
    session.run("python", "scripts/gen_docs.py")
    session.run("mkdocs", "build", "--strict", *session.posargs, env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session(python="3.11", default=False)
def bench(session: nox.Session) -> None:
    """Speed and memory benchmarks (the packages' `jepa bench` cases; `-- --official-ijepa PATH
    ...` to compare with official checkouts, benchmarks/official.py); results go to BENCHMARKS.md."""
    _sync(session, "--all-packages", "--no-default-groups", "--group", "test")
    session.run("python", "benchmarks/run.py", *session.posargs)


# What each package's installed wheel must show: an import and the `jepa list` entries it adds.
SMOKE = {"jepa-core": ("jepa_core", ["evaluators:"]), "jepa-image": ("jepa_image", ["ijepa", "iwm"]),
         "jepa-video": ("jepa_video", ["vjepa", "mcjepa"]), "jepa-skeleton": ("jepa_skeleton", ["sjepa"]),
         "jepa-eval": ("jepa_eval", ["probes"])}
DIST = Path(".nox/dist")


def _release_script(*args: str) -> str:
    return subprocess.run([sys.executable, "scripts/release.py", *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def _build(session: nox.Session, packages: list[str]) -> None:
    shutil.rmtree(DIST, ignore_errors=True)
    for pkg in packages:
        session.run("uv", "build", "--package", pkg, "--out-dir", str(DIST), env=ENV, external=True)
    session.install("twine>=6.1")
    session.run("twine", "check", "--strict", *sorted(str(f) for f in DIST.glob("*.whl")),
                *sorted(str(f) for f in DIST.glob("*.tar.gz")))
    session.run("python", "scripts/release.py", "check-dist", str(DIST), *packages)
    # Each wheel alone in a fresh venv (with the jepa-core wheel it needs), third-party versions
    # pinned to uv.lock's so the install comes from uv's cache, then its smoke test.
    constraints = DIST / "constraints.txt"
    session.run("uv", "export", "--frozen", "--all-packages", "--no-emit-workspace", "--no-hashes", "--no-header",
                "--no-annotate", "--all-extras", "-o", str(constraints), env=ENV, external=True, silent=True)
    core_wheel = next(DIST.glob("jepa_core-*.whl"), None) if "jepa-core" in packages else None
    for pkg in packages:
        module, listed = SMOKE[pkg]
        version = _release_script("version", pkg)
        venv = DIST / f"venv-{pkg}"
        session.run("uv", "venv", "-q", "--python", "3.11", str(venv), env=ENV, external=True)
        wheels = sorted({str(next(DIST.glob(f"{module}-*.whl")))} | ({str(core_wheel)} if core_wheel else set()))
        session.run("uv", "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "-c", str(constraints),
                    *wheels, env=ENV, external=True)
        py, jepa = str(venv / "bin" / "python"), str(venv / "bin" / "jepa")
        session.run(py, "-c", f"import {module}; assert {module}.__version__ == {version!r}, {module}.__version__; "
                    f"import importlib.metadata as m; assert m.version({pkg!r}) == {version!r}", external=True)
        out = session.run(jepa, "list", external=True, silent=True) or ""
        missing = [name for name in listed if name not in out]
        if missing:
            session.error(f"{pkg}: `jepa list` in its own venv does not show {missing}:\n{out}")
        session.run(jepa, "--version", external=True)
        shutil.rmtree(venv)


@nox.session(python="3.11")
def build(session: nox.Session) -> None:
    """Build every package (or those named after --) with `uv build --package`, check the
    distributions (twine check --strict; scripts/release.py check-dist: LICENSE, py.typed, every
    source and preset file, version), install each wheel alone in a fresh venv and run its smoke
    test (import, version, `jepa list` shows its methods)."""
    packages = session.posargs or list(PACKAGES)
    unknown = [p for p in packages if p not in PACKAGES]
    if unknown:
        session.error(f"unknown package(s) {unknown}; the packages are: {', '.join(PACKAGES)}")
    if "jepa-core" not in packages:
        packages = ["jepa-core", *packages]  # the others need its wheel
    _build(session, packages)


@nox.session(python="3.11", default=False)
def release(session: nox.Session) -> None:
    """`nox -s release -- <package> <version>`: on a clean work tree, check the version and the
    package's CHANGELOG section, bump ``__version__``, build and check the package's wheel and
    sdist (as `nox -s build`), commit the bump and tag ``<package>-v<version>``. Pushing the tag
    and uploading ``.nox/dist`` stay manual (docs/releasing.md)."""
    if len(session.posargs) != 2:
        session.error("usage: nox -s release -- <package> <version>, e.g. nox -s release -- jepa-image 0.2.0")
    package, version = session.posargs
    if subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, check=True).stdout.strip():
        session.error("the work tree has uncommitted changes: commit or stash them before a release")
    session.run("python", "scripts/release.py", "prepare", package, version)
    _build(session, ["jepa-core", package] if package != "jepa-core" else ["jepa-core"])
    init = f"packages/{package}/src/{package.replace('-', '_')}/__init__.py"
    session.run("git", "commit", "-m", f"Release {package} {version}", "--", init, external=True)
    session.run("git", "tag", "-a", f"{package}-v{version}", "-m", f"{package} {version}", external=True)
    session.log(f"tagged {package}-v{version}; push it with `git push origin {package}-v{version}` and upload "
                f"the {package} files of {DIST} with `twine upload`")
