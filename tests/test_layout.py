"""The package's floors (docs/architecture.md, "Floors"): every import, at the top of a module or inside a
function, points down or sideways within a floor, never up, and no modules import each other in a
circle. A module's imports are read from its source (ast), so a function-local import counts as much
as a top-level one. And the package's tasks are `rnnbench.tasks`: a user's own tasks.py is no clash.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from conftest import FAST, REPO, run_cli

# Lowest first; a module may import from its own floor and the floors below it. `rnnbench` alone is the
# package's face (its version), importable from every floor.
FLOORS = (
    ("rnnbench.kernels", "rnnbench.errors"),
    ("rnnbench.tasks",),
    ("rnnbench.modules",),
    ("rnnbench.records",),
    ("rnnbench.report",),
    ("rnnbench.run",),
    ("rnnbench.evaluate", "rnnbench.sample", "rnnbench.fair", "rnnbench.bench", "rnnbench.__main__"),
)
SOURCES = {"rnnbench": REPO / "rnnbench", "rnnbench.tasks": REPO / "tasks"}


def module_files() -> dict[str, Path]:
    """Every module of the package by its import name (rnnbench.tasks from the top-level tasks/)."""
    found = {}
    for prefix, root in SOURCES.items():
        for path in root.rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((prefix, *parts))] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules `name` imports anywhere in its source (`from a import b` counts as a.b when
    a.b is a module, else as a)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            for alias in node.names:
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {t for t in targets if t in known and t != name}


def floor(name: str) -> int | None:
    for level, members in enumerate(FLOORS):
        if any(name == m or name.startswith(m + ".") for m in members):
            return level
    return None


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imports(name, path, set(files)) for name, path in files.items()}


def test_every_module_is_on_a_floor(graph):
    assert [name for name in graph if name != "rnnbench" and floor(name) is None] == []


def test_no_import_points_up(graph):
    upward = [f"{name} (floor {floor(name)}) imports {target} (floor {floor(target)})"
              for name, targets in graph.items() if name != "rnnbench"
              for target in targets if target != "rnnbench" and floor(target) > floor(name)]
    assert upward == []


def cycles(graph: dict[str, set[str]]) -> list[str]:
    """Depth-first search; a back edge closes a circle, reported with its modules in order."""
    state: dict[str, str] = {}
    found = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":  # on the current path: a circle
                found.append(" -> ".join([*path, name][[*path, name].index(target):] + [target]))
            elif target not in state:
                visit(target, [*path, name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    return found


def test_no_import_cycle(graph):
    assert cycles(graph) == []


def test_the_cycle_search_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a -> b -> c -> a"]
    assert cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_the_walk_sees_function_local_imports(tmp_path):
    """The check itself: an import inside a function is an edge (so a cycle cannot hide there)."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from rnnbench.run import app\n")
    assert imports("rnnbench.modules.m", module, {"rnnbench.run.app", "rnnbench.run"}) == {"rnnbench.run.app"}


def test_no_module_takes_another_modules_private_names():
    """`from x import _y`, or `x._y` on an imported module x: each module's private names stay its own."""
    files = module_files()
    reaching = []
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        modules = {}  # local name -> module, for `from rnnbench.a import b` with b a module, and `import a.b as c`
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rnnbench"):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        reaching.append(f"{name}: from {node.module} import {a.name}")
                    if f"{node.module}.{a.name}" in files:
                        modules[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                modules.update({a.asname: a.name for a in node.names if a.asname and a.name in files})
        reaching += [f"{name}: {node.value.id}._{node.attr[1:]}" for node in ast.walk(tree)
                     if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                     and node.value.id in modules and modules[node.value.id] != name
                     and node.attr.startswith("_") and not node.attr.startswith("__")]
    assert reaching == []


def test_there_is_no_top_level_tasks_package():
    """The tasks are rnnbench.tasks; the bare name `tasks` is left to the user."""
    import rnnbench.tasks.base

    assert Path(rnnbench.tasks.base.__file__).resolve() == REPO / "tasks" / "base.py"
    assert "tasks" not in sys.modules


def test_the_app_runs_from_a_folder_holding_a_tasks_py(tmp_path):
    (tmp_path / "tasks.py").write_text("raise SystemExit('the user tasks.py was imported')\n")
    # fresh: a new interpreter resolves every import from this folder, as a user's command does
    proc = run_cli("task=copy", "task.seq_len=10", *FAST, "train.threads=1", "logger.wandb.mode=disabled",
                   cwd=tmp_path, fresh=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list((tmp_path / "outputs").rglob("summary.json"))
