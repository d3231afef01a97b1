"""Check the import layering of the workspace packages (run by ``nox -s lint``).

The rules:

* A package's code (``packages/<pkg>/src``, ``tests`` and ``scripts``) imports only itself,
  the workspace packages named in its own ``pyproject.toml`` dependencies, the standard
  library and the third-party names listed under ``[tool.layering] third-party`` in the root
  ``pyproject.toml``. A cross-package test belongs in the root ``tests/`` folder, which (like
  ``benchmarks/`` and ``scripts/``) is not checked.
* The dependency table itself: a package may depend only on the workspace packages listed
  under ``[tool.layering] shared`` (today ``jepa-core``), and those depend on no workspace
  package. So ``jepa-core`` imports no modality package and not ``jepa-eval``, and no
  package imports a sibling. A new package (``packages/jepa-skeleton``) is picked up from
  its ``pyproject.toml``; the checker needs no edit.

Every ``import x`` / ``from x import y`` counts, wherever it is (inside functions, under
``if TYPE_CHECKING:``, in ``try:``), and so do string literals passed to
``importlib.import_module``, ``__import__`` and ``pytest.importorskip``; so do the targets of
the package's ``[project.entry-points]``. Each violation is printed as
``path:line: jepa_image imports jepa_video (allowed: jepa_core)``; the exit status is 1 when
there is any.

    python scripts/check_layering.py [--root DIR]
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

CHECKED_DIRS = ("src", "tests", "scripts")
# calls whose first (string) argument names a module that gets imported
IMPORT_CALLS = {"import_module", "__import__", "importorskip"}
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _norm(name: str) -> str:
    """PEP 503 normalised distribution name (``Jepa_Core`` -> ``jepa-core``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Package:
    name: str  # distribution name, normalised: jepa-core
    module: str  # top-level import name: jepa_core
    path: Path  # packages/jepa-core
    deps: frozenset[str]  # workspace packages (normalised names) in dependencies / extras
    dep_lines: dict[str, int]  # where each workspace dependency is declared in pyproject.toml
    entry_points: tuple[tuple[str, int], ...]  # (target module, line in pyproject.toml)


@dataclass(frozen=True, order=True)
class Violation:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def _line_of(text: str, value: str) -> int:
    """The line of pyproject.toml that holds the string ``value`` (1 when not found)."""
    lines = text.splitlines()
    for needle in (f'"{value}"', f"'{value}'", value):
        for i, line in enumerate(lines, 1):
            if needle in line:
                return i
    return 1


def _module_name(path: Path, project: dict, tool: dict) -> str:
    wheel = tool.get("hatch", {}).get("build", {}).get("targets", {}).get("wheel", {})
    if wheel.get("packages"):
        return Path(wheel["packages"][0]).name
    src = path / "src"
    found = [Path(p).parent.name for p in src.glob("*/__init__.py")] if src.is_dir() else []
    return sorted(found)[0] if found else project["name"].replace("-", "_")


def load_packages(root: Path, names: set[str] | None = None) -> dict[str, Package]:
    """Every ``packages/*/pyproject.toml`` of the workspace, keyed by normalised name."""
    raw = {}
    for pyproject in sorted((root / "packages").glob("*/pyproject.toml")):
        text = pyproject.read_text()
        data = tomllib.loads(text)
        raw[_norm(data["project"]["name"])] = (pyproject.parent, text, data)
    workspace = set(raw)
    packages = {}
    for name, (path, text, data) in raw.items():
        project, tool = data["project"], data.get("tool", {})
        reqs = list(project.get("dependencies", []))
        for extra in project.get("optional-dependencies", {}).values():
            reqs += extra
        for group in data.get("dependency-groups", {}).values():
            reqs += [r for r in group if isinstance(r, str)]
        deps, dep_lines = set(), {}
        for req in reqs:
            m = _REQ_NAME.match(req)
            if m and _norm(m.group(1)) in workspace and _norm(m.group(1)) != name:
                deps.add(_norm(m.group(1)))
                dep_lines[_norm(m.group(1))] = _line_of(text, req)
        eps = []
        for group in project.get("entry-points", {}).values():
            for target in group.values():
                eps.append((target.split(":")[0].strip(), _line_of(text, target)))
        packages[name] = Package(name, _module_name(path, project, tool), path, frozenset(deps),
                                 dep_lines, tuple(eps))
    return packages


def _string_arg(call: ast.Call) -> str | None:
    func = call.func
    fname = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if fname not in IMPORT_CALLS or not call.args:
        return None
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and not arg.value.startswith("."):
        return arg.value
    return None


def imports_of(source: str, filename: str = "<file>") -> list[tuple[int, str]]:
    """(line, absolute module name) for every import in ``source``; relative imports skipped."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and (name := _string_arg(node)):
            found.append((node.lineno, name))
    return sorted(found)


def _is_local(top: str, file: Path, pkg_dir: Path) -> bool:
    """A module next to the file, or in the package's tests/ or scripts/ (conftest helpers)."""
    for folder in {file.parent, pkg_dir / "tests", pkg_dir / "scripts"}:
        if (folder / f"{top}.py").is_file() or (folder / top / "__init__.py").is_file():
            return True
    return False


def check(root: Path) -> tuple[list[Violation], int]:
    """All violations under ``root`` and the number of files checked."""
    root = root.resolve()
    pyproject = root / "pyproject.toml"
    layering = tomllib.loads(pyproject.read_text()).get("tool", {}).get("layering", {}) \
        if pyproject.is_file() else {}
    shared = {_norm(n) for n in layering.get("shared", ["jepa-core"])}
    third_party = set(layering.get("third-party", []))
    packages = load_packages(root)
    by_module = {p.module: p for p in packages.values()}
    violations: list[Violation] = []

    def rel(path: Path) -> str:
        return path.relative_to(root).as_posix()

    # 1. the dependency table: only shared packages as dependencies; shared ones depend on none
    for pkg in packages.values():
        may = set() if pkg.name in shared else shared
        for dep in sorted(pkg.deps - may):
            ok = ", ".join(sorted(may)) if may else "no workspace package"
            violations.append(Violation(rel(pkg.path / "pyproject.toml"), pkg.dep_lines[dep],
                                        f"{pkg.name} depends on {dep} (allowed: {ok})"))

    # 2. imports in each package's own files, and its entry points
    n_files = 0
    for pkg in packages.values():
        # a dependency that breaks rule 1 does not make its imports legal
        allowed = {pkg.module} | {packages[d].module for d in pkg.deps
                                  if pkg.name not in shared and d in shared}

        def visit(where: str, line: int, module: str, file: Path | None,
                  pkg: Package = pkg, allowed: set[str] = allowed) -> None:
            top = module.split(".")[0]
            others = ", ".join(sorted(allowed - {pkg.module}))
            if top in by_module:
                if top not in allowed:
                    violations.append(Violation(where, line, f"{pkg.module} imports {top} "
                                                f"(allowed: {others or 'no other workspace package'})"))
            elif top in sys.stdlib_module_names or top in third_party:
                return
            elif file is not None and _is_local(top, file, pkg.path):
                return
            else:
                violations.append(Violation(
                    where, line, f"{pkg.module} imports unknown module {top} (not a workspace "
                    "package, the standard library or a name in [tool.layering] third-party "
                    "of the root pyproject.toml)"))

        for target, line in pkg.entry_points:
            visit(rel(pkg.path / "pyproject.toml"), line, target, None)
        for sub in CHECKED_DIRS:
            for file in sorted((pkg.path / sub).rglob("*.py")):
                n_files += 1
                try:
                    found = imports_of(file.read_text(), str(file))
                except SyntaxError as e:
                    violations.append(Violation(rel(file), e.lineno or 1, f"syntax error: {e.msg}"))
                    continue
                for line, module in found:
                    visit(rel(file), line, module, file)
    return sorted(set(violations)), n_files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                    help="workspace root (the folder holding packages/); default: this repo")
    args = ap.parse_args(argv)
    violations, n_files = check(args.root)
    for v in violations:
        print(v)
    n_pkgs = len(load_packages(args.root.resolve()))
    print(f"check_layering: {n_files} files in {n_pkgs} packages, {len(violations)} violation(s)",
          file=sys.stderr)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
