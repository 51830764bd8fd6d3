"""`harness predict` against the grid it predicts, for the README: one markdown table per folder.

    python tests/benchmarks/predict_vs_grid.py results/proof/predict_fixed [more folders...]

Each folder holds predict.json (written before the grid ran) and the grid's cells. Prints, per
batch size, predicted vs measured steps and time to target and the error; the predicted and the
measured sweet spot; and what each cost in training seconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness.analysis import per_batch
from harness.analysis.collect import collect
from harness.report import page as report


def summarize(folder: Path) -> str:
    found = collect([folder])
    key = next(iter(found.predictions))
    section = report._section(found, key)
    doc, frame = found.predictions[key], section["per_batch_frame"]
    rows = per_batch.against_prediction(doc, frame)
    prediction = section["prediction"]
    lines = [f"**{key[1]}** ({doc['inputs']['learning_rate_source']}; target {doc['inputs']['target']}): "
             f"predicted sweet spot **{prediction['spot']}**, measured **{prediction['measured']}**; "
             f"S_min {doc['fit']['s_min']:,.0f} steps, B_noise {doc['fit']['b_noise']:,.0f} "
             f"(90% {doc['fit']['b_noise_interval'][0]:,.0f}-{doc['fit']['b_noise_interval'][1]:,.0f}), "
             f"B_simple {doc['b_simple'] or float('nan'):,.0f}; prediction {prediction['spent']:.1f} s of training vs "
             f"the grid's {prediction['grid_seconds']:.1f} s ({prediction['share']:.1%})", "",
             "| device | batch | predicted steps (90% for the grid's seed mean) | measured steps (± half the check "
             "interval) | inside | steps error | time/step error | predicted time (90%) | measured time | time error |",
             "| --- | ---: | ---: | ---: | :---: | ---: | ---: | ---: | ---: | ---: |"]
    device = (doc.get("environment") or {}).get("device_name") or "?"
    for r in rows.itertuples():
        measured = "not reached by every seed" if r.measured_crossing_steps != r.measured_crossing_steps else \
            f"{r.measured_crossing_steps:,.0f} (±{r.target_resolution_steps / 2:,.0f})"
        time_measured = "—" if r.measured_crossing_time_s != r.measured_crossing_time_s else \
            f"{r.measured_crossing_time_s:.3g} s"
        error = "—" if r.time_error != r.time_error else f"{r.time_error:+.0%}"
        steps_error = r.predicted_steps / r.measured_crossing_steps - 1
        per_step = (r.predicted_time_s / r.predicted_steps) / (r.time_per_image_s * r.batch_size) - 1
        steps_text = "—" if steps_error != steps_error else f"{steps_error:+.0%}"
        band = "" if r.predicted_steps_low != r.predicted_steps_low else \
            f" ({r.predicted_steps_low:,.0f}-{r.predicted_steps_high:,.0f})"
        unknown = r.steps_inside is None or r.steps_inside != r.steps_inside  # None or NaN
        inside = "—" if unknown else ("yes" if r.steps_inside else "no")
        lines.append(f"| {device} | {r.batch_size} | {r.predicted_steps:,.0f}{band} | {measured} | {inside} | "
                     f"{steps_text} | {per_step:+.0%} | "
                     f"{r.predicted_time_s:.3g} s ({r.predicted_time_low_s:.3g}-{r.predicted_time_high_s:.3g}) | "
                     f"{time_measured} | {error} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(summarize(Path(folder)) for folder in sys.argv[1:]))
