"""The house's shape, checked over the import graph: folders are the pipeline's stages, and each
stage imports only the stages before it. Reading results (analysis/, report/) never needs the
trainer; the trainer never needs pandas; the Slurm adapter never needs either."""

from __future__ import annotations

import ast

from conftest import REPO

PACKAGE = REPO / "harness"
MAX_LINES = 400
CORE = {"config", "optim", "numbers", "plan", "checks", "errors", "yamlsafe", "workload", "builtins", "spec",
        "paths", "quality", "renamed", "timing", "code_identity", "field_errors",
        "batch_plan", "rules"}  # the top: what a sweep is
# the commands, harness.sweep and the package face that offers it
ENTRY = {"cli", "commands", "parser", "run", "api", "__init__"}
# stage -> the stages its modules may import (itself included); "core" is the top-level modules above
MAY_IMPORT = {
    "core": {"core"},
    "record": {"record", "core"},
    "training": {"training", "record", "core"},
    "analysis": {"analysis", "record", "core"},
    "report": {"report", "analysis", "record", "core"},
    "prediction": {"prediction", "training", "analysis", "record", "core"},
    "cluster": {"cluster", "core"},
}


def module_name(path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def stage(module: str) -> str:
    head = module.split(".")[0]
    return "entry" if head in ENTRY else "core" if head in CORE else head


def imports(lazy: bool = True) -> dict[str, set[str]]:
    """Module -> what it imports: harness modules by dotted name below harness (training.steps),
    others by top package; with `lazy`, also the imports inside functions, else only what loading
    the module loads."""
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        found = set()
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree) if lazy else tree.body:
            if isinstance(node, ast.ImportFrom) and node.module:
                base = node.module.removeprefix("harness").lstrip(".")
                if not node.module.startswith("harness"):
                    found.add(node.module.split(".")[0])
                    continue
                for alias in node.names:  # `from harness.training import steps` names a module
                    name = f"{base}.{alias.name}".lstrip(".")
                    found.add(name if name in modules else base or "__init__")
            elif isinstance(node, ast.Import):
                found |= {alias.name.removeprefix("harness.").split(".")[0] for alias in node.names}
        graph[module_name(path)] = found - {module_name(path)}
    return graph


def closure(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph.get(todo.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_every_module_lives_in_a_known_stage():
    assert {stage(m) for m in imports()} <= set(MAY_IMPORT) | {"entry"}


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a harness module from a stage that may not import it."""
    return sorted(f"{m} -> {d}" for m, deps in graph.items() if stage(m) != "entry"
                  for d in deps if d in graph and stage(d) not in MAY_IMPORT[stage(m)])


def test_each_stage_imports_only_the_stages_before_it():
    assert violations(imports()) == []


def test_no_import_cycle():
    graph = imports()
    local = {name: deps & set(graph) for name, deps in graph.items()}
    assert not [name for name in local if name in closure(local, name)]


def test_what_loading_each_side_pulls_in():
    graph = imports(lazy=False)  # what importing each module loads
    by_stage = lambda name: [m for m in graph if stage(m) == name]  # noqa: E731
    for module in by_stage("training"):
        assert not closure(graph, module) & {"pandas", "seaborn", "matplotlib", "jinja2"}, module
    for module in by_stage("analysis") + by_stage("report"):
        assert not closure(graph, module) & {"torch", "accelerate"}, module
    for module in by_stage("record"):
        assert not closure(graph, module) & {"torch", "pandas", "accelerate"}, module  # the writer and the reader
    assert not closure(graph, "prediction.forecast") & {"torch", "accelerate"}  # the pure part of predict
    assert not closure(graph, "record.metrics") & {"pydantic", "numpy"}  # plain data


def test_the_rule_sees_a_wrong_import():
    """The rule would pass on an empty graph: it must name an edge that breaks it, and the real
    graph must hold the edges it is about."""
    graph = imports()
    assert "training.steps" in graph["training.cell_run"] and "analysis.per_batch" in graph["report.page"]
    assert violations(graph | {"report.page": graph["report.page"] | {"training.steps"}}) == [
        "report.page -> training.steps"]
    assert violations(graph | {"prediction.forecast": {"report.page"}}) == ["prediction.forecast -> report.page"]


def test_no_module_is_long():
    lengths = {module_name(p): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert max(lengths.values()) <= MAX_LINES, lengths


def test_only_the_command_imports_the_command():
    """cli.py is the shell's face: the library (api, spec, every stage) never reaches into it.
    run.py is the same command as a script for `accelerate launch`, so it calls cli.main."""
    graph = imports()
    assert sorted(m for m, found in graph.items() if "cli" in found) == ["run"]


def test_the_code_passes_ruff():
    """pyproject.toml's [tool.ruff] rules over the package, the tests and the examples."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]


def test_a_record_of_many_fields_is_built_by_name():
    """A dataclass or NamedTuple of the package with more than 4 fields takes at most 3 arguments
    by position (a Metric's key, level and unit); the rest by name, so no call reads
    `ShortRun(..., False, None, 0, 0, 0.0, 0.0, None, [])`."""
    fields = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and (any("dataclass" in ast.unparse(d) for d in node.decorator_list)
                                                   or any(ast.unparse(b) == "NamedTuple" for b in node.bases)):
                fields[node.name] = sum(isinstance(s, ast.AnnAssign) and "ClassVar" not in ast.unparse(s.annotation)
                                        for s in node.body)
    wide = {name for name, count in fields.items() if count > 4}
    assert {"ShortRun", "Metric", "Recommendation", "LoopState"} <= wide
    offenders = []
    for path in [*PACKAGE.rglob("*.py"), *(REPO / "tests").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and len(node.args) > 3:
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in wide:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {name}")
    assert offenders == []
