"""What `harness predict` writes and prints: predict.json (atomic), its reuse by --verify, and the
few lines that end the command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.config import SweepConfig
from harness.prediction.forecast import PREDICT_SCHEMA_VERSION
from harness.record import documents, results
from harness.record.schema import Invalid


def write(sweep_dir: Path, doc: dict[str, Any], vouched: bool = True) -> Path:
    """predict.json; a prediction that doubts itself, made without --force, goes beside it as
    predict.doubted.json where the folder already holds one with a sweet spot (a forced one, or a
    trusted one of another config): what was measured is kept, and so is what --verify reuses."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    path = sweep_dir / "predict.json"
    if not vouched and _has_sweet_spot(path):
        path = sweep_dir / "predict.doubted.json"
    results.write_document(path, doc)
    return path


def _has_sweet_spot(path: Path) -> bool:
    try:
        return bool(documents.read_prediction(path).get("sweet_spot"))
    except Invalid:
        return False


def reusable(config: SweepConfig, sweep_dir: Path, force: bool = False) -> dict[str, Any] | None:
    """The folder's predict.json, when it was made from this very config and has a sweet spot it
    does not doubt (or `force`)."""
    try:
        doc = documents.read_prediction(sweep_dir / "predict.json")
    except Invalid:
        return None
    written = _as_read(doc.get("config"))
    same = written is not None and written.model_dump(mode="json") == config.model_dump(mode="json")
    trusted = force or not doc.get("doubts")
    current = doc["schema_version"] == PREDICT_SCHEMA_VERSION
    return doc if same and trusted and doc.get("sweet_spot") and current else None


def _as_read(written: Any) -> SweepConfig | None:
    """A written config as this version reads it: settings added since it was written take their
    defaults (a predict.json without doubts stopped every short run where it settled, so a later
    setting such as predict.short_run_cap at its default would have made the same runs)."""
    try:
        return SweepConfig.model_validate(written)
    except ValueError:  # pydantic's ValidationError is a ValueError: not a config this version reads
        return None


def format_prediction(doc: dict[str, Any]) -> str:
    """The predicted sweet spot with its neighbours, in one short table."""
    rows, spot = doc["fit"]["predictions"], doc["sweet_spot"]
    shown = {spot["batch_size"], *spot["neighbours"]}
    lines = [f"predicted sweet spot: batch size {spot['batch_size']} (B_noise {doc['fit']['b_noise']:,.0f}, "
             f"S_min {doc['fit']['s_min']:,.0f} steps; B_simple {doc['b_simple'] or float('nan'):,.0f})",
             f"{'batch':>7} {'steps to target (90%)':>26} {'ms/step':>9} {'time to target (90%)':>26} {'wins':>6}"]
    if doc["fit"]["predictions"][0]["steps_interval"] is None:
        lines[1] = lines[1].replace("(90%)", "     ")
    for r in rows:
        if r["batch_size"] not in shown:
            continue
        steps, time_s = f"{r['steps_to_target']:,.0f}", f"{r['time_to_target_s']:.3g} s"
        if r["steps_interval"]:
            steps += f" ({r['steps_interval'][0]:,.0f}-{r['steps_interval'][1]:,.0f})"
            time_s += f" ({r['time_interval_s'][0]:.3g}-{r['time_interval_s'][1]:.3g})"
        mark = ">" if r["batch_size"] == spot["batch_size"] else " "
        per_step = r["time_to_target_s"] / r["steps_to_target"] * 1e3
        beyond = "" if r.get("within_budget", True) else f"  beyond its epochs ({r['budget_steps']:,} steps)"
        wins = "" if r["win_share"] is None else f"{r['win_share']:.0%}"
        lines.append(f"{mark}{r['batch_size']:>6} {steps:>26} {per_step:>9.3f} {time_s:>26} {wins:>6}{beyond}")
    lines += [f"unreliable ({d['kind']}): {d['text']}" for d in doc.get("doubts", [])]
    cost = doc["cost"]
    lines.append(f"cost: {cost['train_seconds']:.1f} s of training, {cost['check_seconds']:.1f} s of checks, "
                 f"{cost['wall_seconds']:.1f} s wall")
    return "\n".join(lines)


def headline(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    """The prediction as plain data: what `--json` prints and `line` words."""
    spot = doc.get("sweet_spot") or {}
    rows = {r["batch_size"]: r for r in (doc.get("fit") or {}).get("predictions", [])}
    best = rows.get(spot.get("batch_size"), {})
    return {"prediction": str(path), "predicted_sweet_spot": spot.get("batch_size"),
            "neighbours": spot.get("neighbours", []), "target": doc["inputs"]["target"],
            "time_to_target_s": best.get("time_to_target_s"), "interval_s": best.get("time_interval_s"),
            "steps_to_target": best.get("steps_to_target"), "win_share": best.get("win_share"),
            "short_runs": len(doc.get("short_runs", [])), "train_seconds": doc["cost"]["train_seconds"]}


def line(h: dict[str, Any]) -> str:
    """`predicted sweet spot: batch 128 (neighbours 64, 256): 0.97 val in 2.0 s [1.9-2.1] | 3 short
    runs, 21 s of training | prediction: results/default/predict.json`."""
    if h["predicted_sweet_spot"] is None:
        return f"no predicted sweet spot | prediction: {h['prediction']}"
    low, high = h["interval_s"] or (None, None)
    spread = f" [{low:.3g}-{high:.3g}]" if low is not None and high is not None else ""
    return (f"predicted sweet spot: batch {h['predicted_sweet_spot']} (neighbours "
            f"{', '.join(map(str, h['neighbours']))}): {h['target']:g} val in {h['time_to_target_s']:.3g} s{spread} | "
            f"{h['short_runs']} short runs, {h['train_seconds']:.3g} s of training | prediction: {h['prediction']}")
