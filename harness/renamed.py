"""Settings that were renamed. A config (file, --set, sweep or variant key, or harness.sweep's
settings) giving the old name is read as the new one with one warning; a cell id hashes the old
name (harness/plan.py), so the cells planned under it keep their ids; records that carry the old
name read as the new (the field's validation alias in harness/config.py)."""

from __future__ import annotations

import sys

# settings that were renamed: old dotted key -> new; a config giving the old one is read as the
# new one with one warning, and a cell id hashes the old name (plan.RENAMED), so ids stay
RENAMED = {"train.warmup_steps": "train.untimed_steps"}


def rename_old_keys(raw: dict, source: str) -> None:
    """The renamed settings of a raw config (its sections, the sweep's and the variants' keys) under
    their new names, in place; one warning on stderr for each old name found."""
    for old, new in RENAMED.items():
        group, old_field = old.split(".")
        found = []
        section = raw.get(group)
        if isinstance(section, dict) and old_field in section:
            section[new.split(".")[1]] = section.pop(old_field)
            found.append(old)
        for keyed in [raw.get("sweep"), *(raw.get("variants") or {}).values()]:
            if isinstance(keyed, dict) and old in keyed:
                keyed[new] = keyed.pop(old)
                found.append(old)
        if found:
            print(f"warning: {source}: {old} is now {new} (the untimed first steps of each cell, not a "
                  f"learning-rate warm-up: that is optim.lr_warmup_steps); read as {new}", file=sys.stderr)
