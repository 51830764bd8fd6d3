"""harness predict: the fit on synthetic steps with a known answer, a tiny real prediction end to
end with --verify, Fashion-MNIST's files, the report with and without predict.json, bad input."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import time

import numpy as np
import pytest
from benchmarks import interval_coverage
from conftest import DATA_DIR, REPO, SMALL, harness, read_json, snapshot, write_config

from harness.analysis.fit import fit_steps
from harness.errors import DataError
from harness.prediction import forecast as predict
from harness.prediction import output
from harness.training.images import DATASETS, FILES, find_dataset, load_mnist, read_idx

FASHION_DIR = DATA_DIR.parent / "fashion-mnist"


def synthetic_runs(s_min: float, b_noise: float, batches=(16, 128, 512), seeds=(0, 1, 2), noise=0.05, seed=0):
    """Short runs whose settled crossing follows S(B) = S_min (1 + B_noise / B) times lognormal
    seed noise; the first check above it 9% later at most."""
    rng = np.random.default_rng(seed)
    runs = []
    for b in batches:
        for s in seeds:
            crossing = s_min * (1 + b_noise / b) * float(np.exp(rng.normal(0, noise)))
            first = crossing * (1 + 0.09 * rng.uniform())
            runs.append(predict.ShortRun(batch_size=b, seed=s, learning_rate=1e-3, reached=True,
                                         steps_to_target=round(first), steps_before=round(first * 0.91),
                                         steps_done=round(2 * crossing), train_seconds=1.0,
                                         check_seconds=0.1, noise_scale=None, windows=[], crossing_steps=crossing,
                                         settled=True))
    return runs


def timing(batch: int, per_step: float) -> dict:
    return {"batch_size": batch, "learning_rate": 1e-3, "warmup_seconds": 0.1, "steps": 200,
            "seconds": 200 * per_step, "seconds_per_step": per_step, "window_seconds_per_step": [per_step] * 10}


def test_the_fit_recovers_known_parameters_and_its_intervals_cover_them():
    assert fit_steps([64, 64], [100, 110]) is None  # one batch size fixes nothing
    assert fit_steps([16, 256], [100, 400]) is None  # steps rising with B: no physical fit
    exact = fit_steps([16, 128, 1024], [2000 * (1 + 300 / b) for b in (16, 128, 1024)])
    assert exact.s_min == pytest.approx(2000) and exact.b_noise == pytest.approx(300)
    fitted = predict.fit_and_predict(synthetic_runs(500, 200), [timing(b, 1e-3) for b in (16, 128, 512)])
    assert fitted["b_noise"] == pytest.approx(200, rel=0.2) and fitted["degrees_of_freedom"] == 7
    # 90% intervals, with seed noise of ±25% and 2 or 3 seeds at 3 batch sizes, 200 trials each: the
    # share holding the true S(B) over the grid 8..1024 (tests/benchmarks/interval_coverage.py)
    for seeds in (2, 3):
        coverage = interval_coverage.predict_coverage(200, seeds)
        assert 0.85 <= coverage["pooled"] <= 0.95, coverage
        assert min(coverage["per_batch"]) >= 0.8 and coverage["b_noise"] >= 0.8, coverage


def test_with_two_seeds_the_interval_is_wide_and_with_one_it_says_it_has_none():
    two = predict.fit_and_predict(synthetic_runs(500, 200, seeds=(0, 1), noise=0.25, seed=3),
                                  [timing(b, 1e-3) for b in (16, 128, 512)])
    three = predict.fit_and_predict(synthetic_runs(500, 200, seeds=(0, 1, 2, 3, 4, 5, 6, 7), noise=0.25, seed=3),
                                    [timing(b, 1e-3) for b in (16, 128, 512)])
    width = {name: np.log(np.divide(*f["predictions"][1]["steps_interval"][::-1])) for name, f in
             (("two", two), ("eight", three))}
    assert width["two"] > 1.5 * width["eight"]  # t with 4 degrees of freedom against 22, and a noisier spread
    one = predict.fit_and_predict(synthetic_runs(500, 200, seeds=(0,)), [timing(b, 1e-3) for b in (16, 128, 512)])
    assert one["degrees_of_freedom"] == 1  # one seed at 3 batch sizes: t_0.95 = 6.31
    two_points = synthetic_runs(500, 200, batches=(16, 512), seeds=(0,))  # one short run missed the target
    none = predict.fit_and_predict(two_points, [timing(b, 1e-3) for b in (16, 128, 512)])
    assert none["predictions"][0]["steps_interval"] is None and none["predictions"][0]["win_share"] is None
    assert [d["kind"] for d in predict.doubts(two_points, none, 0.97)] == ["no_interval"]


def grid_timings(per_image: float = 1 / 256) -> list[dict]:
    """Time per step 1e-3 (1 + B x per_image) over the grid 8..1024."""
    return [timing(b, 1e-3 * (1 + b * per_image)) for b in (8, 16, 32, 64, 128, 256, 512, 1024)]


def short_runs() -> list:
    return synthetic_runs(500, 200, batches=(32, 128, 512), seeds=(0, 1))


def test_a_prediction_from_settled_runs_has_no_doubt():
    runs = short_runs()
    fitted = predict.fit_and_predict(runs, grid_timings())
    assert predict.doubts(runs, fitted, 0.97) == [] and predict.sweet_spot(fitted)["batch_size"] == 256


def unsettled(run, accuracies: list[float]) -> None:
    """The run stopped at its cap before 2x its crossing, its checks log-spaced up to there."""
    run.settled, run.val_examples = False, 5000
    steps = np.geomspace(100, run.steps_done, len(accuracies)).round().astype(int)
    run.checks = list(zip(steps.tolist(), accuracies))


def test_a_run_that_stopped_improving_before_its_crossing_settled_is_a_near_ceiling_doubt():
    runs = short_runs()
    fitted = predict.fit_and_predict(runs, grid_timings())
    # rises to 0.9705 by a third of its steps, then no check beats that by 2 standard errors (0.0048)
    unsettled(runs[0], [*np.linspace(0.90, 0.9705, 27), *[0.969, 0.9712, 0.970] * 4])
    near = predict.doubts(runs, fitted, 0.97)
    assert [d["kind"] for d in near] == ["near_ceiling"]
    assert "1 of 6 stopped improving at or near it" in near[0]["text"]
    assert "best validation accuracy 0.9712 of those runs, no better in the second half" in near[0]["text"]


def test_a_run_its_cap_ended_while_it_still_improved_names_the_cap_and_its_option():
    runs = short_runs()
    fitted = predict.fit_and_predict(runs, grid_timings())
    unsettled(runs[4], list(np.linspace(0.90, 0.9776, 39)))  # batch 512 seed 0, still rising at its last check
    runs[4].crossing_steps = runs[4].steps_done * 0.7
    found = predict.doubts(runs, fitted, 0.97, cap=3.0)
    assert [d["kind"] for d in found] == ["cap"]
    assert found[0]["text"].startswith(f"the short run's cap ended at {runs[4].steps_done:,} steps before its "
                                       f"crossing settled, its accuracy still rising (1 of 6; batch 512 seed 0")
    assert found[0]["text"].endswith("raise predict's cap with --set predict.short_run_cap=5")  # 3 x 2 x 0.7 = 4.2


def test_a_crossing_read_between_checks_far_apart_is_a_coarse_doubt():
    runs = short_runs()
    fitted = predict.fit_and_predict(runs, grid_timings())
    runs[0].checks_skipped = 31
    crossing = runs[0].crossing_steps
    runs[0].checks = [(10, 0.5), (round(crossing * 0.8), 0.96), (round(crossing * 1.25), 0.975)]  # 0.45x: fine
    assert [d["kind"] for d in predict.doubts(runs, fitted, 0.97)] == []
    runs[0].checks = [(10, 0.5), (round(crossing * 1.6), 0.975)]
    coarse = predict.doubts(runs, fitted, 0.97)
    assert [d["kind"] for d in coarse] == ["coarse"], coarse
    assert (f"1 of 6 short runs read their crossing between checks far apart (batch 32 seed 0: checks at 10 and "
            f"{round(crossing * 1.6):,} steps") in coarse[0]["text"]
    assert "31 checks skipped" in coarse[0]["text"]


def test_a_batch_size_the_model_misses_when_left_out_is_a_doubt():
    """Batch 128 needing 1.8 times the steps 32 and 512 predict for it."""
    bent = short_runs()
    for r in bent[2:4]:
        r.crossing_steps *= 1.8
    misfit = predict.fit_and_predict(bent, grid_timings())
    assert [m["batch_size"] for m in misfit["left_out_misses"]] == [128]
    assert "misses batch 128 when it is left out" in predict.doubts(bent, misfit, 0.97)[0]["text"]


def test_an_end_batch_size_left_out_is_judged_with_the_misfit_prior():
    """At an end, beyond the others' span, the interval carries the misfit prior: x1.8 is within it."""
    bent = short_runs()
    for r in bent[:2]:
        r.crossing_steps *= 1.8
    assert 32 not in [m["batch_size"] for m in predict.fit_and_predict(bent, grid_timings())["left_out_misses"]]


def test_a_sweet_spot_beyond_the_short_runs_batch_sizes_is_an_extrapolation_doubt():
    """Flat time per step: the fastest is the largest batch, beyond the short runs' 32..512."""
    runs = short_runs()
    flat = predict.fit_and_predict(runs[1:] + runs[:1], grid_timings(per_image=0.0))
    found = predict.doubts(runs, flat, 0.97)
    assert [d["kind"] for d in found] == ["extrapolated"]
    assert "batch 1024, lies outside the short runs' batch sizes (32-512)" in found[0]["text"]


def test_the_predicted_sweet_spot_is_the_fastest_predicted_time():
    runs = synthetic_runs(500, 200, noise=0.0)
    timings = [timing(b, 1e-3 * (1 + b / 256)) for b in (16, 32, 64, 128, 256, 512)]
    fitted = predict.fit_and_predict(runs, timings)
    times = {r["batch_size"]: r["time_to_target_s"] for r in fitted["predictions"]}
    # S(B) t(B) = 500 (1 + 200/B) 1e-3 (1 + B/256): least near B = sqrt(200 x 256) = 226
    spot = predict.sweet_spot(fitted)
    assert spot == {"batch_size": min(times, key=times.get), "neighbours": [128, 512]} and spot["batch_size"] == 256
    assert predict.short_run_batches([8, 16, 32, 64, 128, 256, 512, 1024]) == [32, 128, 512]
    assert predict.fit_and_predict([r for r in runs if r.batch_size == 16], timings) is None


def test_a_batch_size_predicted_beyond_its_epochs_is_not_the_sweet_spot():
    """What the H200 showed: batch 2048 predicted fastest, but its 152 predicted steps are more than
    the 107 its 4 epochs allow, and the grid cell never reached the target."""
    runs = synthetic_runs(500, 200, noise=0.0)
    timings = [{**timing(b, 1e-3 * (1 + b / 256)), "budget_steps": 10_000} for b in (16, 32, 64, 128, 256, 512)]
    timings[4]["budget_steps"] = 600  # batch 256 needs ~890 steps
    fitted = predict.fit_and_predict(runs, timings)
    rows = {r["batch_size"]: r for r in fitted["predictions"]}
    assert not rows[256]["within_budget"] and rows[128]["within_budget"] and rows[256]["win_share"] == 0
    assert predict.sweet_spot(fitted)["batch_size"] in (128, 512)
    assert "beyond its epochs (600 steps)" in output.format_prediction({"fit": fitted,
                                                                        "sweet_spot": predict.sweet_spot(fitted),
                                                              "b_simple": None, "cost": {"train_seconds": 1.0,
                                                              "check_seconds": 0.1, "wall_seconds": 2.0}})
    for t in timings:
        t["budget_steps"] = 100
    assert predict.sweet_spot(predict.fit_and_predict(runs, timings)) is None


@pytest.mark.slow
def test_predict_end_to_end_then_verify_trains_three_cells_that_a_run_skips(tmp_path):
    # every scheduled check: runs of under a second would otherwise thin their checks by time
    # (checks.budget) to the first and the last, and where the crossing falls would depend on load
    config = write_config(tmp_path, {**SMALL, "train": {**SMALL["train"], "epochs": 2},
                                     "report": {"target_accuracy": 0.9}, "checks": {"budget": None},
                                     "sweep": {"train.batch_size": [32, 64, 128, 256, 512], "train.seed": [0]}})
    results = tmp_path / "results"
    proc = harness("predict", "--config", str(config), "--results-dir", str(results), "--force")
    assert proc.returncode == 0, proc.stderr
    assert "predicted sweet spot: batch size" in proc.stdout
    doubts = read_json(results / "small" / "predict.json")["doubts"]
    assert proc.stdout.count("unreliable (") == len(doubts) and all(d["text"] in proc.stdout for d in doubts)
    spot = read_json(results / "small" / "predict.json")["sweet_spot"]["batch_size"]
    assert proc.stdout.strip().splitlines()[-1].startswith(f"predicted sweet spot: batch {spot} (neighbours")
    assert proc.stdout.strip().endswith(f"| prediction: {results / 'small' / 'predict.json'}")
    doc = read_json(results / "small" / "predict.json")
    assert doc["schema_version"] == predict.PREDICT_SCHEMA_VERSION
    assert not list(results.rglob("result.json"))  # predict alone writes no cell
    assert doc["inputs"]["short_run_batch_sizes"] == [64, 128, 256] and doc["inputs"]["grid"] == [32, 64, 128, 256, 512]
    assert [r["batch_size"] for r in doc["short_runs"]] == [64, 128,
                                                            256] and all(r["reached"] for r in doc["short_runs"])
    for t in doc["timing"]:  # the timing rules of a cell: warm-up apart, synced windows, enough of them
        assert t["seconds_per_step"] == pytest.approx(np.median(t["window_seconds_per_step"]))
        if t["source"] == "timing pass":
            assert t["steps"] >= predict.TIMING_MIN_STEPS and t["seconds"] >= predict.TIMING_MIN_SECONDS
            assert t["warmup_seconds"] > 0 and len(t["window_seconds_per_step"]) == t["steps"] // predict.TIMING_WINDOW
        else:  # timed by the short runs' windows between checks, their warm-up steps untimed
            run = next(r for r in doc["short_runs"] if r["batch_size"] == t["batch_size"])
            assert sum(w[0] for w in run["windows"]) == run["steps_done"] - 3  # SMALL's 3 warm-up steps
    assert {t["source"] for t in doc["timing"]} == {"timing pass", "short runs"}
    fit = doc["fit"]
    assert fit["s_min"] > 0 and fit["b_noise"] > 0 and fit["b_noise_interval"][0] <= fit["b_noise_interval"][1]
    assert [p["batch_size"] for p in fit["predictions"]] == doc["inputs"]["grid"]
    spot = doc["sweet_spot"]["batch_size"]
    assert doc["cost"]["train_seconds"] > 0 and doc["cost"]["wall_seconds"] >= doc["cost"]["train_seconds"]

    before = snapshot(results / "small")
    verify = harness("predict", "--config", str(config), "--results-dir", str(results), "--verify", "--quiet",
                     "--force")
    assert verify.returncode == 0, verify.stderr
    assert read_json(results / "small" / "predict.json") == doc  # the same config: the prediction is reused
    trained = sorted(read_json(p)["settings"]["train"]["batch_size"] for p in results.rglob("result.json"))
    grid = doc["inputs"]["grid"]
    i = grid.index(spot)
    assert trained == sorted(grid[max(0, i - 1):i + 2])
    assert len(trained) == (3 if 0 < i < len(grid) - 1 else 2)
    run = harness("run", "--config", str(config), "--results-dir", str(results), "--no-report")
    assert run.returncode == 0 and run.stdout.count("skip ") == len(trained)  # same ids: already done
    report = (results / "small" / "report.html").read_text()
    assert "Prediction (harness predict) against the grid" in report and "Predicted without the grid" in report
    assert before.keys() <= snapshot(results / "small").keys()
    if doc["doubts"]:  # without --force it predicts again; where it doubts again, the forced one stays
        again = harness("predict", "--config", str(config), "--results-dir", str(results))
        if again.returncode == 2:  # (some doubts follow the timing: an extrapolated sweet spot, a busy pass)
            assert str(results / "small" / "predict.doubted.json") in again.stderr
            assert read_json(results / "small" / "predict.json") == doc
        else:
            assert again.returncode == 0, again.stderr


def test_a_doubted_prediction_without_force_never_replaces_one_with_a_sweet_spot(tmp_path):
    committed = REPO / "results" / "fashion" / "predict.json"  # a prediction with a sweet spot
    shutil.copy(committed, tmp_path / "predict.json")
    doubted = {**read_json(committed), "doubts": [{"kind": "cap", "text": "the short run's cap ended"}]}
    assert output.write(tmp_path, doubted, vouched=False) == tmp_path / "predict.doubted.json"
    assert (tmp_path / "predict.json").read_bytes() == committed.read_bytes()
    assert output.write(tmp_path, doubted, vouched=True) == tmp_path / "predict.json"  # --force: it replaces
    assert read_json(tmp_path / "predict.json")["doubts"] == doubted["doubts"]
    fresh = tmp_path / "fresh"
    assert output.write(fresh, doubted, vouched=False) == fresh / "predict.json"  # nothing to keep: written there


def test_too_small_a_grid_and_other_sweeps_are_refused_before_anything_runs(tmp_path):
    config = write_config(tmp_path, {**SMALL, "sweep": {"train.batch_size": [64, 256]}})
    proc = harness("predict", "--config", str(config), "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "predict needs at least 3" in proc.stderr
    config = write_config(tmp_path, {**SMALL, "sweep": {"train.batch_size": [64, 128, 256],
                                                        "model.activation": ["relu", "softplus"]}})
    proc = harness("predict", "--config", str(config), "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 2 and "also varies model.activation" in proc.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_target_no_short_run_reaches_stops_says_so_and_keeps_what_was_measured(tmp_path):
    config = write_config(tmp_path, {**SMALL, "train": {**SMALL["train"], "epochs": 1, "images_per_epoch": 2560},
                                     "report": {"target_accuracy": 0.999},
                                     "sweep": {"train.batch_size": [64, 128, 256], "train.seed": [0]}})
    proc = harness("predict", "--config", str(config), "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    # 3 x 1 epoch of 2,560 images: every run still learning when its cap ends, and the doubt says so
    assert "no fit: the short run's cap ended at " in proc.stderr and "(3 of 3; batch 256 seed 0" in proc.stderr
    assert "raise predict's cap with --set predict.short_run_cap=6" in proc.stderr and "predict.json" in proc.stderr
    doc = read_json(tmp_path / "r" / "small" / "predict.json")
    assert doc["fit"] is None and doc["failure"] and len(doc["short_runs"]) == 3 and len(doc["timing"]) == 3
    # a busy machine adds its own doubt (disturbed_timing); the cap's is there either way
    kinds = [d["kind"] for d in doc["doubts"]]
    assert kinds[0] == "cap" and set(kinds[1:]) <= {"disturbed_timing"} and doc["inputs"]["short_run_cap"] == 3.0
    assert [(r["steps_done"], r["cap_steps"]) for r in doc["short_runs"]] == [(120, 120), (60, 60), (30, 30)]
    assert not list((tmp_path / "r").rglob("result.json"))


@pytest.mark.slow
def test_a_stop_request_during_a_short_run_stops_predict_and_keeps_nothing(tmp_path):
    """Slurm's warning signal (SIGUSR1, sent by the process to itself after its 7th step: the
    usr1 fault) stops a short run as it stops a grid cell: at the next step, exit 3, one line."""
    config = write_config(tmp_path, {**SMALL, "sweep": {"train.batch_size": [64, 128, 256], "train.seed": [0]}})
    proc = harness("predict", "--config", str(config), "--results-dir", str(tmp_path / "r"),
                   env={"HARNESS_FAULT": "usr1@7"})
    assert proc.returncode == 3 and proc.stderr.count("\n") == 1, (proc.returncode, proc.stderr[-2000:])
    assert proc.stderr.startswith("harness: stopped: SIGUSR1 received during the short run batch 64 seed 0 at step 7;")
    assert not list((tmp_path / "r").rglob("predict.json")) and not list((tmp_path / "r").rglob("result.json"))


# --- Fashion-MNIST -------------------------------------------------------------------------------

def grid_answer(folder) -> tuple[int, list[int]]:
    """The sweet spot a committed grid's own cells name (the report's rule) and its batch sizes."""
    from harness.analysis.answer import answer
    from harness.analysis.collect import collect
    found = collect([folder])
    key = next(iter(found.plans))
    verdicts = answer(found, key).verdicts
    return verdicts[0].batch_size, sorted({c["swept"]["train.batch_size"] for c in found.plans[key]["cells"]})


@pytest.mark.slow
def test_predict_on_the_main_job_lands_within_one_grid_step_of_the_grid_or_names_a_true_doubt(tmp_path):
    """configs/default.yaml as the README runs it (4 epochs: 428 steps at batch 512, fewer than that
    run needs to settle 0.97): each short run trains past the grid's epochs to its own cap, so
    predict either names a batch within one grid step of what the committed 4-seed grid of this
    config names (results/default_seeds), or exits 2 with a doubt its own curves bear out."""
    spot, grid = grid_answer(REPO / "results" / "default_seeds")
    results = tmp_path / "r"
    proc = harness("predict", "--config", str(REPO / "configs" / "default.yaml"), "--results-dir", str(results),
                   timeout=1200)
    doc = read_json(results / "default" / "predict.json")
    assert doc["inputs"]["short_run_cap"] == 3.0
    runs = [predict.ShortRun(**{**r, "checks": [tuple(c) for c in r["checks"]]}) for r in doc["short_runs"]]
    assert all(r.steps_done <= r.cap_steps for r in runs)
    assert any(r.steps_done > 4 * (55_000 // r.batch_size) for r in runs)  # past the grid's 4 epochs
    if proc.returncode == 0:
        i = grid.index(spot)
        assert doc["sweet_spot"]["batch_size"] in grid[max(0, i - 1):i + 2], (doc["sweet_spot"], spot)
        assert not doc["doubts"] and all(r.settled for r in runs)
        return
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    kind = doc["doubts"][0]["kind"]
    assert doc["doubts"][0]["text"] in proc.stderr
    if kind == "near_ceiling":
        assert any(predict.at_ceiling(r, 0.97) for r in runs)
    elif kind == "cap":
        assert any(r.steps_done == r.cap_steps and not r.settled and predict.still_improving(r) for r in runs)


@pytest.mark.slow
def test_near_the_ceiling_predict_says_it_cannot_know_and_keeps_what_it_measured(tmp_path):
    """MNIST at Adam 1e-3 (configs/predict_fixed.yaml) with the target at 0.98 over 8..2048: the
    MLP's validation accuracy levels off at ~0.983, so each short run's crossing of 0.98 lies where
    the curve is flat and its steps are barely defined. predict refuses with the near-ceiling doubt
    (exit 2, one line, predict.json kept), and that doubt is true of the runs' own curves. One seed."""
    results = tmp_path / "r"
    proc = harness("predict", "--config", str(REPO / "configs" / "predict_fixed.yaml"), "--results-dir", str(results),
                   "--set", "report.target_accuracy=0.98", "--set",
                   "sweep.train.batch_size=[8,16,32,64,128,256,512,1024,2048]",
                   "--set", "train.seed=0")
    doc = read_json(results / "predict_fixed" / "predict.json")
    assert doc["inputs"]["short_run_batch_sizes"] == [32, 256, 1024] and len(doc["short_runs"]) == 3
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert doc["doubts"][0]["kind"] == "near_ceiling" and doc["doubts"][0]["text"] in proc.stderr
    assert "lower report.target_accuracy" in proc.stderr
    flat = [predict.ShortRun(**{**r, "checks": [tuple(c) for c in r["checks"]]}) for r in doc["short_runs"]]
    assert any(predict.at_ceiling(r, 0.98) for r in flat)
    for r in flat:  # at_ceiling, read off the curve by hand: the second half no better than the first
        if predict.at_ceiling(r, 0.98):
            half = r.steps_done / 2
            late, early = (max(a for s, a in r.checks if (s > half) == side) for side in (True, False))
            assert late - early <= 2 * (0.98 * 0.02 / r.val_examples) ** 0.5 and max(late, early) <= 0.985


def test_fashion_mnist_is_found_beside_mnist_and_checked_by_its_decoded_md5():
    folder = find_dataset("fashion_mnist", DATA_DIR)  # ../fashion-mnist beside ../mnist
    assert folder == FASHION_DIR
    arrays = load_mnist(folder)
    assert arrays.train_images.shape == (60_000, 28, 28) and arrays.test_labels.shape == (10_000,)
    assert np.bincount(arrays.train_labels).tolist() == [6000] * 10  # the README's class counts
    assert not DATASETS["mnist"].decoded and DATASETS["fashion_mnist"].decoded


def test_a_corrupted_fashion_file_is_refused_with_one_line(tmp_path):
    for name in FILES:
        shutil.copy(FASHION_DIR / name, tmp_path / name)
    labels = bytearray(gzip.decompress((tmp_path / FILES[3]).read_bytes()))
    labels[100] = (labels[100] + 1) % 10  # one label changed, recompressed: the .gz md5 alone would not tell
    (tmp_path / FILES[3]).write_bytes(gzip.compress(bytes(labels)))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz is corrupt or not Fashion-MNIST") as caught:
        find_dataset("fashion_mnist", tmp_path)
    assert "\n" not in str(caught.value) and "decoded md5" in str(caught.value)
    config = write_config(tmp_path, {**SMALL, "data": {**SMALL["data"], "dataset": "fashion_mnist"}})
    proc = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "r"), "--data-dir", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "decoded md5" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_fashion_reads_through_the_same_idx_decoder(tmp_path):
    """A written fixture in Fashion-MNIST's IDX layout decodes to what was written."""
    labels = np.array([9, 0, 0, 3, 0, 2, 7, 2], dtype=np.uint8)  # ankle boot, T-shirt, ...
    (tmp_path / "labels.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + len(labels).to_bytes(4, "big")
                                                       + labels.tobytes()))
    assert read_idx(tmp_path / "labels.gz").tolist() == labels.tolist()


@pytest.mark.slow
def test_a_fashion_cell_trains_and_reports(tmp_path):
    config = write_config(tmp_path, {**SMALL, "data": {**SMALL["data"], "dataset": "fashion_mnist"},
                                     "train": {**SMALL["train"], "epochs": 1}, "report": {"target_accuracy": 0.7},
                                     "sweep": {"train.batch_size": [128], "train.seed": [0]}})
    proc = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    (record,) = [read_json(p) for p in (tmp_path / "r").rglob("result.json")]
    assert record["settings"]["data"]["dataset"] == "fashion_mnist"
    accuracy = record["summary"]["test_accuracy_at_best_val"]
    assert 0.6 < accuracy < 0.92  # Fashion-MNIST, not MNIST (which this MLP gets to 0.95+ in an epoch)


def test_mnist_cell_ids_did_not_change_when_datasets_arrived():
    """data.dataset joined the settings after ids were published: at its default it stays out of
    the hash, so finished MNIST cells (results/seed here) keep their ids."""
    from harness.config import load_config
    from harness.plan import expand

    seed = expand(load_config(REPO / "configs" / "seed.yaml"))
    assert [c.id for c in seed] == [p.name for p in (REPO / "results" / "seed").iterdir() if p.is_dir()]


def test_report_without_a_prediction_says_nothing_of_one(tmp_path):
    from test_analysis import TARGET, build, make

    sweep = tmp_path / "plain"
    for batch, steps in ((32, 3000), (128, 900), (512, 400)):
        make(sweep, batch, 1e-3, 0, steps, 0.975, seconds_per_step=batch * 1e-5)
    html, _ = build(sweep)
    assert "harness predict" not in html
    timings = [timing(b, 1e-3) for b in (32, 128, 512)]
    runs = synthetic_runs(100, 200, batches=(32, 128, 512), noise=0.0)
    fitted = predict.fit_and_predict(runs, timings)
    inputs = {"learning_rate_source": "the config's rule", "short_run_batch_sizes": [32, 128, 512], "grid_cells": [],
              "grid": [32, 128, 512], "target": TARGET, "chosen_rates": {"32": None, "128": None, "512": None}}
    doc = predict.document({"name": "plain"}, inputs, runs, timings, fitted, time.perf_counter())
    (sweep / "predict.json").write_text(json.dumps(doc))
    html, parsed = build(sweep)
    spot = doc["sweet_spot"]["batch_size"]
    assert re.search(rf"Predicted without the grid \(harness predict\): batch size\s*<strong>{spot}</strong>", html)
    table = parsed.tables[1]  # after the per-batch table
    assert [r["batch_size"] for r in table] == ["32", "128", "512"]
    for row, prediction in zip(table, fitted["predictions"]):
        assert json.loads(row["predicted_steps"]) == pytest.approx(prediction["steps_to_target"])
