"""harness/timing.py: a time measured while the machine was busy says so, in the record, the
report's first screen (with the command that trains it again), and predict's doubts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from conftest import harness, write_config

from harness import timing
from harness.prediction.forecast import disturbed_timings

# a second process of float32 matrix products, with more threads than this machine has cores: what
# a second training or a test suite beside the run does to a small machine
BURNER = ("import torch\ntorch.set_num_threads({threads})\na = torch.randn(512, 512)\n"
          "while True:\n    a = torch.tanh(a @ a)\n")


def epoch(seconds: float, share: float | None, per_image: float) -> dict:
    return {"train_seconds": seconds, "cpu_share": share, "time_per_image_s": per_image}


def test_each_rule_flags_its_own_disturbance_and_only_on_the_device_it_applies_to():
    quiet = [epoch(2.0, 0.97, 31e-6), epoch(2.0, 0.95, 30e-6), epoch(2.0, 0.96, 31e-6)]
    found = timing.conditions(quiet, [{"window_load_start": 1.9, "window_load_end": 2.1}], 2, "cpu")
    assert not found["timing_disturbed"] and found["timing_disturbed_reason"] is None
    assert 0.95 < found["cpu_share"] < 0.97 and found["load_average"] == 2.0 and found["time_spread"] < 1.05

    starved = [epoch(2.0, 0.97, 31e-6), epoch(4.0, 0.40, 30e-6), epoch(4.0, 0.50, 31e-6)]
    found = timing.conditions(starved, [], 2, "cpu")
    assert found["timing_disturbed"] and found["timing_disturbed_reason"].startswith("CPU share 55%")
    assert not timing.conditions(starved, [], 2, "cuda")["timing_disturbed"]  # a GPU's host thread waits
    assert not timing.conditions(starved, [], 2, "cpu", processes=2)["timing_disturbed"]  # ranks wait in all-reduce

    jumped = [epoch(2.0, 0.97, 90e-6), epoch(2.0, 0.97, 30e-6), epoch(2.0, 0.97, 210e-6)]  # epoch 1 left out
    found = timing.conditions(jumped, [], 2, "cpu")
    assert found["time_spread"] == 7.0 and "spread 7.0x" in found["timing_disturbed_reason"]

    cores = timing.machine_cores()
    crowded = [{"window_load_start": 2 * cores, "window_load_end": 2 * cores}]
    assert "load average" in timing.conditions(quiet, crowded, 1, "cuda")["timing_disturbed_reason"]


def test_predict_doubts_a_timing_pass_out_of_order_or_disturbed():
    # what a user saw unflagged: 115.8, 7.2 and 101.7 ms per step at batch 32, 64 and 128
    seen = [{"batch_size": b, "seconds_per_step": s} for b, s in ((32, 0.1158), (64, 0.0072), (128, 0.1017))]
    (doubt,) = disturbed_timings(seen)
    assert doubt["kind"] == "disturbed_timing" and "116 ms per step at batch 32 but 7.2 ms at batch 64" in doubt["text"]
    ordered = [{"batch_size": b, "seconds_per_step": s} for b, s in ((32, 0.007), (64, 0.008), (128, 0.011))]
    assert disturbed_timings(ordered) == []
    starved = [*ordered[:2], {**ordered[2], "timing_disturbed_reason": "CPU share 31% (below 75%)"}]
    assert "batch 128: CPU share 31%" in disturbed_timings(starved)[0]["text"]


def test_a_cell_timed_beside_a_busy_process_is_flagged_reported_retimed_and_trained_again(tmp_path):
    """Two cells trained beside a busy process: flagged, named on the first screen with the command
    that re-times them; `harness retime` (no training) brings their seconds per step back to what
    the same cell, trained again alone (--retrain, its record kept), measures."""
    config = write_config(tmp_path, {"name": "busy", "train": {"epochs": 2, "images_per_epoch": 6400},
                                     "data": {"val_size": 2000, "train_eval_size": 1000},
                                     "sweep": {"train.batch_size": [64, 128]}, "report": {"target": 0.5}})
    args = ("run", "--config", str(config), "--results-dir", str(tmp_path / "r"))
    burner = subprocess.Popen([sys.executable, "-c", BURNER.format(threads=3 * timing.machine_cores())])
    try:
        deadline = time.monotonic() + 120  # until every core has work, as the start-of-run warning reads it
        while os.getloadavg()[0] <= timing.machine_cores() and time.monotonic() < deadline:
            time.sleep(2)
        busy = harness(*args, timeout=1200)
    finally:
        burner.kill()
        burner.wait()
    assert busy.returncode == 0, busy.stderr[-2000:]
    assert "warning: the machine is busy before training starts (load average" in busy.stdout
    records = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "r" / "busy").glob("*/result.json")}
    assert len(records) == 2
    for record in records.values():
        summary = record["summary"]
        assert summary["timing_disturbed"] and "CPU share" in summary["timing_disturbed_reason"], summary
        assert summary["cpu_share"] < timing.MIN_CPU_SHARE and summary["cores_owned"] >= 1
    sweep = tmp_path / "r" / "busy"
    page = (sweep / "report.html").read_text()
    assert "The machine was busy while 2 of 2 cells were timed (batch 64 seed 0: CPU share" in page
    assert f"Next step: <code>harness retime {sweep}</code>" in page

    retimed = harness("retime", str(sweep), timeout=1200)  # the machine to itself again: no training
    assert retimed.returncode == 0, retimed.stderr[-2000:]
    assert retimed.stdout.splitlines()[-2].startswith("re-timed 2 batch sizes on ")
    doc = json.loads((sweep / "retime.json").read_text())
    per_step = {t["batch_size"]: t for t in doc["timings"]}
    assert sorted(per_step) == [64, 128] and all(t["steps"] >= 200 for t in per_step.values())
    busy_per_step = {r["settings"]["train"]["batch_size"]: r["summary"]["time_per_image_s"] *
                     r["settings"]["train"]["batch_size"] for r in records.values()}
    for batch, found in per_step.items():  # faster than beside the competitor (1.2x-10x here and in CI)
        assert found["seconds_per_step"] < busy_per_step[batch], (found, busy_per_step)
    page = (sweep / "report.html").read_text()
    assert "seconds per step re-timed by harness retime on " in page  # said on the first screen
    if not any(t["timing_disturbed_reason"] for t in doc["timings"]):  # as the re-timing itself found it
        assert "The machine was busy while" not in page
    assert len(list(sweep.glob("*/result.json"))) == 2  # nothing trained, nothing rewritten

    first = min(records, key=lambda i: records[i]["settings"]["train"]["batch_size"])
    again = harness(*args, "--retrain", first, "--no-report", timeout=1200)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{first}: training it again (--retrain); its record is kept as result.json.retrained-" in again.stdout
    cell = tmp_path / "r" / "busy" / first
    (kept,) = cell.glob("result.json.retrained-*")
    assert json.loads(kept.read_text()) == records[first]  # the disturbed record, as it was
    assert len(list(cell.glob("epochs.csv.retrained-*"))) == 1 and (cell / "epochs.csv").exists()
    assert json.loads((cell / "result.json").read_text())["finished_utc"] != records[first]["finished_utc"]
    assert "already done" in again.stdout  # the other cell stays as it is
    quiet = json.loads((cell / "result.json").read_text())["summary"]["time_per_image_s"] * 64
    assert 0.5 < per_step[64]["seconds_per_step"] / quiet < 2, (per_step[64], quiet)  # re-timed as it trains quiet

    wrong = harness(*args, "--retrain", "nosuchcell", timeout=300)
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1 and "--retrain: cell nosuchcell" in wrong.stderr
