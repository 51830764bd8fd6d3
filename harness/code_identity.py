"""What a cell id covers of the user's code, so that results are never reused after it changed.

- A FILE.py:NAME: the file and every module it imports, directly or through another, that lives
  in the file's folder (a neighbour `layers.py`, a package `nets/`), found by reading their
  imports (nothing is run). A name that an installed module answers first (the folder comes last
  on the import path: training/workloads.py) is that module's, not the folder's. A file that
  imports no neighbour hashes as its bytes alone, so ids planned before this rule hold.
- A callable handed to harness.sweep: its source and code object (two lambdas on one line share a
  line of source, not their code), the values it captured (closure cells, defaults), and, by
  name, the functions and plain values of its module that it uses (a helper edited in a notebook
  cell), each followed the same way. Values are described by what they hold where they are plain
  data (numbers, text, tuples, lists, dicts of them), else by their type: never by an address,
  which would change the id at every run.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.machinery
import sys
import types
from pathlib import Path
from typing import Any

PLAIN = (type(None), bool, int, float, complex, str, bytes)


def file_sha256(path: Path) -> str:
    """The hash of the file and its import closure inside its folder."""
    digest = hashlib.sha256(path.read_bytes())
    for other in file_closure(path)[1:]:
        digest.update(b"\0" + str(other.relative_to(path.parent)).encode() + b"\0" + other.read_bytes())
    return digest.hexdigest()[:16]


def file_closure(path: Path) -> list[Path]:
    """The file, then every module of its folder it imports, transitively, in a stable order."""
    root, seen, todo = path.parent.resolve(), {path.resolve()}, [path.resolve()]
    while todo:
        current = todo.pop()
        try:
            tree = ast.parse(current.read_bytes())
        except (SyntaxError, ValueError, OSError):
            continue  # importing it fails too, and says so
        for found in (f for name in _imported(tree, current, root) for f in _files_of(name, root)):
            if found not in seen:
                seen.add(found)
                todo.append(found)
    return [path.resolve(), *sorted(seen - {path.resolve()})]


def _imported(tree: ast.Module, current: Path, root: Path) -> list[str]:
    """Dotted module names the file imports, relative ones made absolute from the folder."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = current.parent
                for _ in range(node.level - 1):
                    package = package.parent
                if package != root and root not in package.parents:
                    continue
                prefix = ".".join(package.relative_to(root).parts)
                base = ".".join(p for p in (prefix, base) if p)
            names += [base, *(f"{base}.{alias.name}" if base else alias.name for alias in node.names)]
    return [n for n in names if n]


def _files_of(dotted: str, root: Path) -> list[Path]:
    """The folder's files a dotted import loads (packages' __init__.py on the way), none where an
    installed or built-in module of that top-level name comes first on the import path."""
    top = dotted.split(".")[0]
    if top in sys.builtin_module_names or _installed_elsewhere(top, root):
        return []
    found, where = [], root
    for part in dotted.split("."):
        if (where / part / "__init__.py").is_file():
            where = where / part
            found.append(where / "__init__.py")
        elif (where / f"{part}.py").is_file():
            found.append(where / f"{part}.py")
            break
        else:
            break
    return [f.resolve() for f in found]


def _installed_elsewhere(top: str, root: Path) -> bool:
    others = [p for p in sys.path if p and Path(p).resolve() != root]
    try:
        return importlib.machinery.PathFinder.find_spec(top, others) is not None
    except (ImportError, ValueError):
        return False


def callable_identity(fn: Any, source: str) -> str:
    """A stable text of what an in-process callable computes (`source`: its own source)."""
    return "\n".join(_describe_function(fn, source, seen=set()))


def _describe_function(fn: Any, source: str, seen: set[int]) -> list[str]:
    import inspect  # kept local: only harness.sweep's in-process callables need it

    seen.add(id(fn))
    code = getattr(fn, "__code__", None)
    if code is None:  # a class or another callable: its source is what there is
        return [source]
    out = [source, repr(_code(code))]
    cells = [c.cell_contents for c in (fn.__closure__ or ()) if _filled(c)]
    out += [f"captured {_value(v, seen)}" for v in cells]
    out += [f"default {_value(v, seen)}" for v in (fn.__defaults__ or ())]
    out += [f"default {k}={_value(v, seen)}" for k, v in sorted((fn.__kwdefaults__ or {}).items())]
    module_globals = getattr(fn, "__globals__", {})
    for name in sorted(_names(code)):
        value = module_globals.get(name)
        if isinstance(value, types.FunctionType) and id(value) not in seen and \
                value.__module__ == fn.__module__:
            try:
                helper = inspect.getsource(value)
            except (OSError, TypeError):
                helper = value.__qualname__
            out += [f"uses {name}:", *_describe_function(value, helper, seen)]
        elif isinstance(value, (*PLAIN, tuple, list, dict)):
            out.append(f"uses {name} = {_value(value, seen)}")
    return out


def _code(code: types.CodeType) -> tuple:
    """A code object's instructions and constants, nested code objects included."""
    consts = tuple(_code(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts)
    return code.co_code, consts, code.co_names


def _names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _filled(cell) -> bool:
    try:
        return cell.cell_contents is not _UNBOUND
    except ValueError:  # a cell not yet bound
        return False


_UNBOUND = object()


def _value(value: Any, seen: set[int], depth: int = 0) -> str:
    if isinstance(value, PLAIN):
        return repr(value)
    if depth < 4 and isinstance(value, (tuple, list)):
        return f"{type(value).__name__}({', '.join(_value(v, seen, depth + 1) for v in value[:64])})"
    if depth < 4 and isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: repr(kv[0]))[:64]
        return "{" + ", ".join(f"{k!r}: {_value(v, seen, depth + 1)}" for k, v in items) + "}"
    if isinstance(value, types.FunctionType) and id(value) not in seen:
        described = "\n".join(_describe_function(value, value.__qualname__, seen))
        return "function " + hashlib.sha256(described.encode()).hexdigest()[:16]
    return f"<{type(value).__module__}.{type(value).__qualname__}>"
