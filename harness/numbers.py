"""Numbers as users mean them, for every settings model: a float is finite and never a boolean
(YAML reads `1e-3` as a string, which a float accepts); a count is a true integer: not `true`, not
`1e23` (a float in YAML), and bounded."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field


def _not_a_boolean(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return value


Real = Annotated[float, BeforeValidator(_not_a_boolean)]
# every count has a ceiling: 2^53 is where a JSON reader's float stops being exact; the settings
# whose size is memory (an epoch's order of indices, a batch) have their own, lower ones
MAX_COUNT = 2**53
Count = Annotated[int, Field(strict=True, le=MAX_COUNT)]
