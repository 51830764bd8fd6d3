"""The code's shape, as design.md asks it: one direction of imports, small modules, and the line
between the trainer (no pandas, no seaborn) and the report (never the trainer)."""

from __future__ import annotations

import ast

from conftest import REPO

PACKAGE = REPO / "harness"
MAX_LINES = 400


def imports(lazy: bool = True) -> dict[str, set[str]]:
    """Module -> the modules it imports (harness modules by short name, others by top package);
    with `lazy`, also the imports inside functions, else only what loading the module loads."""
    graph = {}
    for path in PACKAGE.glob("*.py"):
        found = set()
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree) if lazy else tree.body:
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "harness":
                    found |= {alias.name for alias in node.names}
                else:
                    found.add(node.module.removeprefix("harness.").split(".")[0])
            elif isinstance(node, ast.Import):
                found |= {alias.name.removeprefix("harness.").split(".")[0] for alias in node.names}
        graph[path.stem] = found - {path.stem}
    return graph


def test_no_import_cycle():
    graph = imports()
    local = {name: deps & set(graph) for name, deps in graph.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(dep == goal or (dep not in seen and reaches(dep, goal, seen | {dep})) for dep in local[start])

    assert not [name for name in local if reaches(name, name, set())]


def test_trainer_and_report_stay_apart():
    graph = imports(lazy=False)  # what importing each module loads

    def closure(name: str) -> set[str]:
        seen, todo = set(), [name]
        while todo:
            for dep in graph.get(todo.pop(), ()):
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return seen

    assert not closure("train") & {"pandas", "seaborn", "matplotlib", "collect", "analysis", "report", "figures"}
    assert not closure("report") & {"train", "sweep", "engine", "torch", "accelerate"}
    assert not closure("metrics") & {"torch", "pandas", "accelerate"}  # plain data
    assert not closure("results") & {"torch", "pandas"}  # the trainer's writer, and the report's reader


def test_no_module_is_long():
    lengths = {p.name: len(p.read_text().splitlines()) for p in PACKAGE.glob("*.py")}
    assert max(lengths.values()) <= MAX_LINES, lengths
