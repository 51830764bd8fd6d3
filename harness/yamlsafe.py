"""Reading a YAML config that anyone may have written: safe types only, bounded in size and in
alias expansion, and no key given twice (YAML would silently keep the last).

A config is a few dozen values; MAX_BYTES and MAX_VALUES leave room for any honest sweep and
refuse a 50 MB file or an alias bomb (a few lines whose aliases expand to billions of values)
before anything is built from them. A `--set KEY=VALUE` value is YAML too, read the same way
and put into the raw config here (apply_override), before the config is validated.
"""

from __future__ import annotations

import re
import reprlib
import stat
import unicodedata
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError

MAX_BYTES = 1 << 20  # 1 MiB
MAX_VALUES = 100_000  # scalars, lists and mappings, counted as if every alias were copied out
MAX_DEPTH = 64  # nesting: a config goes 3 deep; the parser and everything after it recurse


INT, FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"


class TooDeep(ConfigError):
    """Nested beyond MAX_DEPTH: said as it is, also for a `--set` value."""


class _NoDuplicates(yaml.SafeLoader):
    """YAML's safe types, with no key twice, and no base-60 numbers: YAML 1.1 reads
    `train.epochs: 12:30` as 750; here it is the text it looks like (and then refused as a number)."""

    yaml_implicit_resolvers = {first: [(tag, rx) for tag, rx in resolvers if tag not in (INT, FLOAT)]
                               for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"'{key}' is given twice (line {key_node.start_mark.line + 1}); keep one", None)
                seen.add(key)
        return super().construct_mapping(node, deep)


_NoDuplicates.add_implicit_resolver(INT, re.compile(r"""^(?:[-+]?0b[0-1_]+
    |[-+]?0[0-7_]+
    |[-+]?(?:0|[1-9][0-9_]*)
    |[-+]?0x[0-9a-fA-F_]+)$""", re.X), list("-+0123456789"))
_NoDuplicates.add_implicit_resolver(FLOAT, re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))


def load(text: str, source: str) -> Any:
    """The YAML document in `text`; ConfigError (one line) if it is too big, expands too far,
    repeats a key or is not YAML."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise ConfigError(f"{source}: {size:,} bytes; a config may have at most {MAX_BYTES:,} (1 MiB): it lists a "
                          f"sweep, not data")
    try:
        loader = _NoDuplicates(text)  # its reader refuses control characters here
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not readable YAML ({_first_line(exc)}); remove the control character") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded(node, {}, set()) > MAX_VALUES:
            raise ConfigError(f"{source}: its aliases (*name) expand to more than {MAX_VALUES:,} values; a config "
                              f"needs a few dozen: write the values out instead of nesting aliases")
        if _depth(node) > MAX_DEPTH:  # after the expansion bound: the walk then visits at most MAX_VALUES
            raise TooDeep(f"{source}: nested more than {MAX_DEPTH} deep; a config is a few sections of values")
        return loader.construct_document(node)
    except RecursionError:  # the composer recursed through hundreds of nested brackets
        raise TooDeep(f"{source}: nested more than {MAX_DEPTH} deep; a config is a few sections of values") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not readable YAML ({_first_line(exc)}); fix the file") from None
    finally:
        loader.dispose()


def _first_line(exc: yaml.YAMLError) -> str:
    lines = str(exc).strip().splitlines()
    return " ".join(lines[-2:]) if lines else type(exc).__name__


def _depth(root: yaml.Node) -> int:
    """How deep the node tree goes, walked without recursion (an alias cycle is cut at MAX_DEPTH)."""
    deepest, stack = 0, [(root, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        if isinstance(node, yaml.MappingNode):
            stack.extend((child, depth + 1) for pair in node.value for child in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
    return deepest


def _expanded(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """How many values the node stands for once every alias is copied out (memoised per node, so
    the count itself stays cheap; a node that contains itself counts as too many)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        return MAX_VALUES + 1
    if isinstance(node, yaml.ScalarNode):
        return 1
    open_nodes.add(key)
    children = [child for pair in node.value for child in pair] if isinstance(node, yaml.MappingNode) else node.value
    total = 1
    for child in children:
        total += _expanded(child, sizes, open_nodes)
        if total > MAX_VALUES:
            break
    open_nodes.discard(key)
    sizes[key] = total
    return total


def apply_override(raw: dict, override: str) -> None:
    """`a.b=v` sets raw[a][b]; `sweep.a.b=[..]` sets a swept key; pinning a swept key unsweeps it."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {override!r}: expected KEY=VALUE, e.g. --set train.epochs=3")
    key = key.strip()
    if any(unicodedata.category(ch) == "Cc" and ch not in "\t\n" for ch in text):
        raise ConfigError(f"--set {key}: value {short(text)} holds a control character; type the value as plain text")
    try:
        value = load(text, f"--set {key}")
    except TooDeep:
        raise
    except ConfigError:
        raise ConfigError(f"--set {key}: value {short(text)} is not valid YAML; quote strings, write lists as "
                          f"[a,b]") from None
    if key.startswith("sweep."):
        sweep = raw.setdefault("sweep", {})
        if not isinstance(sweep, dict):
            raise ConfigError("sweep: must be a mapping of setting -> list of values")
        sweep[key.removeprefix("sweep.")] = value if isinstance(value, list) else [value]
        return
    if isinstance(raw.get("sweep"), dict):
        raw["sweep"].pop(key, None)
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: '{part}' is not a section")
    node[leaf] = value


def short(value: Any) -> str:
    """A rejected value as typed, cut short (reprlib never builds the whole of a huge value)."""
    return SHORT.repr(value)


SHORT = reprlib.Repr()
SHORT.maxstring = SHORT.maxother = 60
SHORT.maxlist = SHORT.maxtuple = SHORT.maxdict = SHORT.maxset = 6
SHORT.maxlevel = 3


def file_kind(path: Path) -> str:
    """What a path that is not a regular file is, in words."""
    mode = path.stat().st_mode
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a file")
