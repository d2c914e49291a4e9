"""The house rules of issue 10: small modules, no import cycles, a module map that is true."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "aecli"
MAX_LINES = 400  # STYLE.md: about 400 lines a module


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts).removesuffix(".__init__")
        found[name] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """aecli modules this file imports, at any depth (lazy imports count too)."""
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("aecli"):
            deps.add(node.module)
            deps |= {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
        elif isinstance(node, ast.Import):
            deps |= {a.name for a in node.names if a.name.startswith("aecli")}
    # The package's own __init__ holds only the version and a lazy attribute.
    return (deps & modules.keys()) - {"aecli"}


def test_no_module_is_longer_than_a_sitting() -> None:
    long = {
        name: n
        for name, path in _modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these by job: {long}"


def test_no_import_cycles() -> None:
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    # A package imports its own modules to re-export them: that is not a cycle.
    for name in list(graph):
        graph[name] = {d for d in graph[name] if not name.startswith(d + ".") or d == "aecli"}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                raise AssertionError(" -> ".join([*path[path.index(dep) :], dep]))
            if dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_the_readme_module_map_names_every_module() -> None:
    readme = (PACKAGE.parent / "README.md").read_text()
    section = readme[readme.index("## Where things live") :]
    section = section[: section.index("\n## ", 4)]
    for name, path in _modules().items():
        if path.name == "__init__.py" and name not in ("aecli.cli", "aecli.io"):
            continue
        short = str(path.relative_to(PACKAGE.parent)).removesuffix("/__init__.py")
        if path.parent != PACKAGE and path.name != "__init__.py":
            short = path.name  # a package's modules are listed in its row
        assert f"`{short}`" in section, f"README's module map lacks {short}"
