"""docs/results-format.md's tables of every recorded number, written from the registry so the page
cannot drift from it: `python -m harness.record.reference` rewrites them (a test checks they are
current)."""

from __future__ import annotations

import sys

from harness.paths import REPO_ROOT
from harness.record.metrics import METRICS

PAGE = REPO_ROOT / "docs" / "results-format.md"
START, END = "<!-- generated from harness/record/metrics.py: start -->", "<!-- generated: end -->"
WHERE = {"epoch": "epochs.csv, one row per epoch", "check": "evals.csv, one row per validation check",
         "cell": "result.json `summary`, one per cell", "derived": "computed by the analysis (report.csv, tables)",
         "label": "identity columns of report.csv and the tables"}


def tables() -> str:
    """One markdown table per place a number lives, in registry order."""
    parts = []
    for level, title in WHERE.items():
        rows = [m for m in METRICS if m.level == level]
        parts += [f"### {title}", "", "| key | unit | over processes | over seeds | what |",
                  "| --- | --- | --- | --- | --- |"]
        parts += [f"| `{m.key}` | {m.unit or '—'} | {m.ranks if m.ranks != 'same' else '—'} | "
                  f"{', '.join(m.seeds) or '—'} | {m.doc.replace('|', '&#124;')} |" for m in rows]
        parts.append("")
    return "\n".join(parts)


def page_with_tables(text: str) -> str:
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{tables()}{END}{tail}"


if __name__ == "__main__":
    PAGE.write_text(page_with_tables(PAGE.read_text()))
    sys.exit(0)
