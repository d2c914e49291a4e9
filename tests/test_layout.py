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
        if path.name == "__init__.py" and name not in ("aecli.cli", "aecli.io", "aecli.training"):
            continue
        short = str(path.relative_to(PACKAGE.parent)).removesuffix("/__init__.py")
        if path.parent != PACKAGE and path.name != "__init__.py":
            short = path.name  # a package's modules are listed in its row
        assert f"`{short}`" in section, f"README's module map lacks {short}"


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """A function's lines from its first statement after the docstring to its last."""
    body = node.body
    first = body[0]
    if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant):
        body = body[1:]
    return body[-1].end_lineno - body[0].lineno + 1 if body else 0  # type: ignore[operator]


def test_no_function_body_is_longer_than_a_screenful() -> None:
    """Issue 38: no function body in the package over 100 lines (signature, docstring aside)."""
    long = {
        f"{path.relative_to(PACKAGE.parent)}:{node.name}": lines
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and (lines := _body_lines(node)) > 100
    }
    assert not long, f"split these: {long}"


def _private_training_imports(path: Path) -> list[str]:
    """The private modules of aecli.training that ``path`` imports, named or from the package."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("aecli.training._"):
                found.append(node.module)
            elif node.module == "aecli.training":
                found += [f"aecli.training.{a.name}" for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("aecli.training._")]
    return found


def test_training_is_reached_through_its_face() -> None:
    """Issue 38: outside aecli/training, only the package's __init__ is imported: the CLI,
    the estimator, the rest of the package and the benchmarks. The tests of the private
    modules themselves live in tests/training/, as scikit-learn keeps a subpackage's."""
    root = PACKAGE.parent
    training = PACKAGE / "training"
    files = [*PACKAGE.rglob("*.py"), *(root / "benchmarks").rglob("*.py")]
    files += [p for p in (root / "tests").rglob("*.py") if "training" not in p.parts]
    offenders = {
        str(path.relative_to(root)): found
        for path in files
        if training not in path.parents and (found := _private_training_imports(path))
    }
    assert not offenders, offenders


def test_no_test_patches_a_private_training_function() -> None:
    """Faults come in through public doors (a model registered for a kind, a signal, a
    stop callback), never by replacing the trainer's own functions."""
    root = PACKAGE.parent
    for path in (root / "tests").rglob("*.py"):
        text = path.read_text()
        for module in _private_training_imports(path):
            alias = module.rsplit(".", 1)[-1]
            assert f"setattr({alias}," not in text.replace(" ", ""), (path, module)
        assert "aecli.training._" not in "".join(
            line for line in text.splitlines() if "setattr" in line
        ), path
