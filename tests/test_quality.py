"""A quality of either direction, on any scale (harness/quality.py): the workload names its metric
and whether higher or lower is better, or takes the built-in metric `loss`; the target, a cell's
best epoch, the crossing, the sweet spot, predict and the report's words follow it. Proved on
examples/regression.py (validation MSE, lower is better) and examples/tiny_lm.py (validation
loss on token targets), each run, predicted and reported end to end."""

from __future__ import annotations

import csv
import shutil

import pytest
from conftest import REPO, harness, read_json, write_config

from harness.config import load_config
from harness.errors import ConfigError
from harness.quality import Quality


def test_the_metric_is_accuracy_unless_the_workload_names_another():
    assert Quality.of_workload({}) == Quality("accuracy", "max", bounded=True)
    assert Quality.of_workload({"metric": "mine.py:f1"}) == Quality("f1", "max", bounded=True)
    assert Quality.of_workload({"metric": "loss"}) == Quality("loss", "min", bounded=False)
    named = Quality.of_workload({"metric": "m.py:mse", "metric_name": "MSE", "metric_mode": "min"})
    assert named == Quality("MSE", "min", bounded=False)
    assert named.reached(0.09, 0.1) and not named.reached(0.11, 0.1) and named.oriented(0.5) == -0.5


def test_a_target_outside_0_1_is_taken_for_a_named_metric_only(tmp_path):
    (tmp_path / "mine.py").write_text("def mse(outputs, targets): pass\n")
    base = {"name": "t", "workload": {"name": "mnist_mlp", "metric": "mine.py:mse"}, "report": {"target": 2.5}}
    with pytest.raises(ConfigError, match=r"report.target=2.5 .* the metric \(mse\) is a score in \[0, 1\]"):
        load_config(write_config(tmp_path, base))
    base["workload"] |= {"metric_name": "MSE", "metric_mode": "min"}
    assert load_config(write_config(tmp_path, base)).report.target_accuracy == 2.5


def test_a_sweep_run_from_python_gets_its_next_step_in_python():
    from harness.analysis.answer import _base_command, _in_python

    assert _base_command({"command": "my_script.py"}) is None
    assert _base_command({"command": "harness run --config x.yaml --set train.epochs=2"}) == \
        "harness run --config x.yaml --set train.epochs=2"
    assert _in_python("sweep.train.seed=[0,1,2]") == \
        'the same harness.sweep(...) call with settings={"sweep": {"train.seed": [0,1,2]}}'


def copied(tmp_path, name: str):
    """An example's files in a folder of their own: its config path."""
    for suffix in (".py", ".yaml"):
        shutil.copy(REPO / "examples" / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
    return tmp_path / f"{name}.yaml"


def end_to_end(config, results) -> tuple[list[dict], str, str]:
    run = harness("run", "--config", str(config), "--results-dir", str(results), "--quiet")
    assert run.returncode == 0 and "skipped" not in run.stderr, run.stderr
    predicted = harness("predict", "--config", str(config), "--results-dir", str(results), "--force")
    assert predicted.returncode == 0, predicted.stderr
    sweep = next(results.iterdir())
    report = harness("report", str(sweep), "-o", str(sweep / "report.html"))
    assert report.returncode == 0 and "skipped" not in report.stderr, report.stderr
    records = [read_json(p) for p in sorted(sweep.glob("*/result.json"))]
    return records, (sweep / "report.html").read_text(), report.stdout.strip().splitlines()[-1]


def epoch_rows(record_path) -> list[dict]:
    with open(record_path.parent / "epochs.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_a_regression_is_judged_on_validation_mse_lower_is_better(tmp_path):
    records, html, answer = end_to_end(copied(tmp_path, "regression"), tmp_path / "r")
    assert {r["settings"]["workload"]["metric_mode"] for r in records} == {"min"}
    for path in sorted((tmp_path / "r" / "regression").glob("*/result.json")):
        rows, summary = epoch_rows(path), read_json(path)["summary"]
        lowest = min(rows, key=lambda r: float(r["val_accuracy"]))  # the lowest validation MSE is the best epoch
        assert summary["best_epoch"] == int(lowest["epoch"]) and summary["best_val_accuracy"] == float(
            lowest["val_accuracy"])
    assert answer.startswith("sweet spot: batch ") and "0.1 val" in answer, answer
    assert "reaches 0.1 validation MSE" in html and "validation MSE (lower is better)" in html
    assert "test MSE @ best val" in html and "Not judged: a collapse is a fall in test accuracy" in html
    assert "test accuracy" not in html.replace("a fall in test accuracy", "")
    doc = read_json(tmp_path / "r" / "regression" / "predict.json")
    assert {r["metric_mode"] for r in doc["short_runs"]} == {"min"} and doc["sweet_spot"] is not None


SMALL_LM = "{vocab: 32, width: 32, heads: 2, length: 16, successors: 3, train: 2000, val: 300, test: 300}"


@pytest.mark.slow
def test_a_language_model_is_judged_on_validation_loss_with_the_built_in_loss_metric(tmp_path):
    """Token targets and the default token-level cross-entropy; `metric: loss` reads the same loss
    (evals.csv's metric column equals its val_loss); FLOPs per example by hand, attention included."""
    config = copied(tmp_path, "tiny_lm")
    text = config.read_text()
    text = text[:text.index("  options:")] + f"  options: {SMALL_LM}\n" + text[text.index("\ndata:") + 1:]
    config.write_text(text.replace("epochs: 3", "epochs: 2").replace("target: 1.6 ", "target: 2.4 ")
                      .replace("tokens_per_example: 32", "tokens_per_example: 16")
                      .replace("[16, 64, 256]", "[8, 32, 128]") + "predict:\n  short_run_cap: 6\n")
    records, html, answer = end_to_end(config, tmp_path / "r")
    width, length, heads, vocab = 32, 16, 2, 32
    per_token = 2 * width * (3 * width + width + 4 * width + 4 * width + vocab)  # qkv, out, MLP, head
    attention = 2 * 2 * length * length * (width // heads) * heads  # scores and values, per example
    by_hand = 3 * length * per_token + 7 * attention // 2  # backward: 2x the linears; 5 attention products
    for record in records:
        assert record["summary"]["flops_per_example"] == by_hand
        assert record["settings"]["optim"]["name"] == "adamw" and record["settings"]["optim"]["schedule"] == "cosine"
        assert record["summary"]["final_noise_scale"] is not None
        summary = record["summary"]
        assert summary["tokens_per_second"] == pytest.approx(16 * summary["images_per_second"], rel=1e-12)
    with open(next((tmp_path / "r" / "tiny_lm").glob("*/evals.csv"))) as fh:
        checks = list(csv.DictReader(fh))
    assert all(float(c["val_accuracy"]) == pytest.approx(float(c["val_loss"]), rel=1e-6) for c in checks)
    assert answer.startswith("sweet spot: batch ") and "2.4 val" in answer, answer
    assert "reaches 2.4 validation loss (nats per token)" in html and "(lower is better)" in html
    assert "test loss (nats per token) @ best val" in html and "time/sequence" in html and "tokens/s" in html
