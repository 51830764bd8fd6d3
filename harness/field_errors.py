"""pydantic's first error as one line: the dotted field, what is wrong, how to fix it."""

from __future__ import annotations

from typing import Any

from harness.yamlsafe import short


def field_error(error: dict, root: Any) -> str:
    """One line for pydantic's first error: the dotted field, what is wrong, how to fix it."""
    loc = ".".join(_printable(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        section = ".".join(str(p) for p in error["loc"][:-1])
        return f"unknown key '{loc}'; valid keys: {', '.join(_valid_keys(section, root))}"
    if error["loc"] and error["loc"][-1] == "[key]":  # a mapping's key YAML read as a number or a boolean
        key, parent = error.get("input"), ".".join(_printable(part) for part in error["loc"][:-2])
        typed = str(key).lower() if isinstance(key, bool) else short(key)
        return (f"{parent}: the key {typed} is read as a {type(key).__name__}, not a name; quote it in the config "
                f"('{typed}': VALUE)")
    message = error["msg"].removeprefix("Value error, ")
    got = error.get("input")
    shown = f" (got {short(got)})" if not isinstance(got, dict) and error["type"] != "value_error" else ""
    where = f"{loc}: " if loc else ""
    return f"{where}{message}{shown}; fix it in the config file or with --set {loc or 'KEY'}=VALUE"


def _printable(part: Any) -> str:
    """A key as typed, or quoted where it holds a newline or another unprintable character."""
    text = str(part)
    return text if text.isprintable() else repr(text)


def _valid_keys(section: str, root: Any) -> list[str]:
    model = root
    for part in filter(None, section.split(".")):
        model = model.model_fields[part].annotation
    return list(model.model_fields)
