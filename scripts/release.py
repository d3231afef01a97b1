"""Release checks and steps for the workspace's packages, each versioned on its own.

    python scripts/release.py check-dist DIST_DIR [PACKAGE ...]   # wheel and sdist contents
    python scripts/release.py prepare PACKAGE VERSION              # changelog, bounds, bump

`nox -s build` and `nox -s release -- PACKAGE VERSION` call these (docs/releasing.md). The one
version source of a package is ``__version__`` in ``packages/<name>/src/<module>/__init__.py``
(hatchling reads it: ``[tool.hatch.version]``); packages depend on ``jepa-core~=X.Y.Z``
(compatible release), so a new jepa-core minor or major version needs its dependents' bounds
raised first, which :func:`check_bounds` enforces.
"""

from __future__ import annotations

import re
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("jepa-core", "jepa-image", "jepa-video", "jepa-skeleton", "jepa-eval")
_VERSION_LINE = re.compile(r'^__version__ = "([^"]+)"$', re.M)
_VERSION = re.compile(r"^\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?(?:\.post\d+)?(?:\.dev\d+)?$")


class ReleaseError(RuntimeError):
    pass


def module_name(package: str) -> str:
    return package.replace("-", "_")


def init_file(package: str, root: Path = ROOT) -> Path:
    return root / "packages" / package / "src" / module_name(package) / "__init__.py"


def _check_package(package: str) -> None:
    if package not in PACKAGES:
        raise ReleaseError(f"unknown package {package!r}; the packages are: {', '.join(PACKAGES)}")


def current_version(package: str, root: Path = ROOT) -> str:
    _check_package(package)
    m = _VERSION_LINE.search(init_file(package, root).read_text())
    if m is None:
        raise ReleaseError(f"{init_file(package, root)} has no line `__version__ = \"X.Y.Z\"`")
    return m.group(1)


def _key(version: str) -> tuple:
    """A sort key for the versions :data:`_VERSION` accepts (pre-releases before the release)."""
    m = re.match(r"^(\d+)\.(\d+)\.(\d+)(?:(a|b|rc)(\d+))?(?:\.post(\d+))?(?:\.dev(\d+))?$", version)
    if m is None:
        raise ReleaseError(f"version {version!r} is not of the form X.Y.Z[aN|bN|rcN][.postN][.devN]")
    major, minor, patch, pre, pre_n, post, dev = m.groups()
    pre_key = (0, {"a": 0, "b": 1, "rc": 2}[pre], int(pre_n)) if pre else (1, 0, 0)
    return (int(major), int(minor), int(patch), pre_key, int(post or -1), int(dev) if dev else 1 << 30)


def changelog_section(package: str, version: str, root: Path = ROOT) -> str:
    """The text of the ``## <version>`` section of the package's CHANGELOG.md (error if the
    section is missing or empty)."""
    path = root / "packages" / package / "CHANGELOG.md"
    if not path.is_file():
        raise ReleaseError(f"{path} is missing: every package keeps a CHANGELOG.md")
    text = path.read_text()
    m = re.search(rf"^## {re.escape(version)}\b.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    if m is None:
        raise ReleaseError(f"{path} has no section `## {version}`: add one with the release's changes first")
    body = m.group(1).strip()
    if not body:
        raise ReleaseError(f"the `## {version}` section of {path} is empty: list the release's changes")
    return body


def core_bounds(root: Path = ROOT) -> dict[str, str]:
    """``{package: "~=X.Y.Z"}``: each package's requirement on jepa-core."""
    out = {}
    for pkg in PACKAGES[1:]:
        text = (root / "packages" / pkg / "pyproject.toml").read_text()
        m = re.search(r'"jepa-core([^"]*)"', text)
        if m is None:
            raise ReleaseError(f"packages/{pkg}/pyproject.toml does not depend on jepa-core")
        out[pkg] = m.group(1).strip()
    return out


def check_bounds(core_version: str, root: Path = ROOT) -> None:
    """Every package's ``jepa-core~=X.Y.Z`` admits ``core_version`` (same X.Y, at least X.Y.Z)."""
    bad = []
    for pkg, spec in core_bounds(root).items():
        m = re.fullmatch(r"~=\s*(\d+)\.(\d+)\.(\d+)", spec)
        if m is None:
            bad.append(f"packages/{pkg}/pyproject.toml: `jepa-core{spec}` is not a compatible-release bound ~=X.Y.Z")
            continue
        lo = tuple(int(g) for g in m.groups())
        v = _key(core_version)[:3]
        if v[:2] != lo[:2] or v < lo:
            bad.append(f"packages/{pkg}/pyproject.toml: `jepa-core{spec}` excludes jepa-core {core_version}; "
                       f"raise it to `jepa-core~={v[0]}.{v[1]}.0` (and release {pkg})")
    if bad:
        raise ReleaseError("\n".join(bad))


def prepare(package: str, version: str, root: Path = ROOT) -> str:
    """Check and bump: ``version`` above the current one, its CHANGELOG section present, the
    jepa-core bounds admitting it (for jepa-core); then write ``__version__``. Returns the old
    version."""
    _check_package(package)
    old = current_version(package, root)
    if _key(version) <= _key(old):
        raise ReleaseError(f"{package}: the new version {version} must be above the current {old}")
    changelog_section(package, version, root)
    if package == "jepa-core":
        check_bounds(version, root)
    path = init_file(package, root)
    path.write_text(_VERSION_LINE.sub(f'__version__ = "{version}"', path.read_text(), count=1))
    return old


def _dist_version(name: str) -> str:
    # jepa_core-0.1.0-py3-none-any.whl / jepa_core-0.1.0.tar.gz
    return name.split("-")[1].removesuffix(".tar.gz")


def check_dist(dist: Path, packages: tuple[str, ...] = PACKAGES, root: Path = ROOT) -> list[str]:
    """Each package has exactly one wheel and one sdist in ``dist`` at its current version; the
    wheel holds LICENSE, ``py.typed``, every module and preset file of ``src/`` and metadata
    naming the version and licence; the sdist holds the sources, LICENSE, README and
    CHANGELOG. Returns the files checked; raises with every problem found."""
    problems: list[str] = []
    checked: list[str] = []
    for pkg in packages:
        _check_package(pkg)
        mod, version = module_name(pkg), current_version(pkg, root)
        wheels = sorted(dist.glob(f"{mod}-*.whl"))
        sdists = sorted(dist.glob(f"{mod}-*.tar.gz"))
        if [_dist_version(w.name) for w in wheels] != [version] or [_dist_version(s.name) for s in sdists] != [version]:
            problems.append(f"{pkg}: expected one wheel and one sdist of {version} in {dist}, found "
                            f"{[w.name for w in wheels + sdists]}")
            continue
        src = root / "packages" / pkg / "src" / mod
        expected = {f"{mod}/{p.relative_to(src).as_posix()}" for p in src.rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc",)}
        with zipfile.ZipFile(wheels[0]) as z:
            names = set(z.namelist())
            meta_name = next((n for n in names if n.endswith(".dist-info/METADATA")), None)
            meta = z.read(meta_name).decode() if meta_name else ""
        missing = sorted(expected - names)
        if missing:
            problems.append(f"{wheels[0].name}: missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if f"{mod}/py.typed" not in names:
            problems.append(f"{wheels[0].name}: no {mod}/py.typed")
        if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
            problems.append(f"{wheels[0].name}: no LICENSE in its .dist-info/licenses")
        if f"\nVersion: {version}\n" not in meta or "\nLicense-Expression: MIT\n" not in meta:
            problems.append(f"{wheels[0].name}: METADATA lacks `Version: {version}` or `License-Expression: MIT`")
        with tarfile.open(sdists[0]) as t:
            snames = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
        for need in ("LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", f"src/{mod}/__init__.py"):
            if need not in snames:
                problems.append(f"{sdists[0].name}: no {need}")
        checked += [wheels[0].name, sdists[0].name]
    if problems:
        raise ReleaseError("\n".join(problems))
    return checked


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["check-dist"] and len(args) >= 2:
            for name in check_dist(Path(args[1]), tuple(args[2:]) or PACKAGES):
                print(f"ok {name}")
            return 0
        if args[:1] == ["prepare"] and len(args) == 3:
            old = prepare(args[1], args[2])
            print(f"{args[1]}: {old} -> {args[2]}")
            return 0
        if args[:1] == ["version"] and len(args) == 2:
            print(current_version(args[1]))
            return 0
    except ReleaseError as e:
        print(f"release: error: {e}", file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
