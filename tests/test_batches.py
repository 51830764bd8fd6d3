"""Batches of any structure (harness/training/batches.py): dict and tuple inputs, outputs with
`logits`, token targets. The default loss and metric checked by hand; B_simple on a dict-input
model and on a BatchNorm model against one backward per example; examples/hf_style.py run end to
end (run, predict, report), resumed exactly after a stop, and on two gloo processes."""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import subprocess

import pytest
import torch
import torch.nn.functional as F
from conftest import BIN, DATA_DIR, REPO, harness, read_json, trained_numbers, write_config
from torch import nn

from harness.training import batches, diagnostics
from harness.training.workloads import IGNORE_INDEX, Workload


def hf_style():
    spec = importlib.util.spec_from_file_location("hf_style", REPO / "examples" / "hf_style.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_dict_batch_is_sliced_dealt_and_described_leaf_by_leaf():
    tree = {"input_ids": torch.arange(10).view(5, 2), "extra": (torch.arange(5), torch.zeros(5, 3))}
    assert batches.count(tree) == 5 and batches.nbytes(tree) == 10 * 8 + 5 * 8 + 15 * 4
    picked = batches.take(tree, torch.tensor([4, 0]))
    assert picked["input_ids"].tolist() == [[8, 9], [0, 1]] and picked["extra"][0].tolist() == [4, 0]
    rank1 = batches.part(tree, 1, 2)  # tensor_split's deal: 3 rows, then 2
    assert rank1["extra"][0].tolist() == [3, 4] and batches.count(batches.part(tree, 0, 2)) == 3
    assert batches.describe(tree) == "{'input_ids': shape (5, 2), 'extra': a tuple of (shape (5,), shape (5, 3))}"
    assert batches.call(lambda input_ids, extra: input_ids.sum(), tree) == 45
    assert batches.logits({"logits": torch.ones(1), "loss": None}).tolist() == [1.0]


def test_the_default_loss_and_metric_on_token_targets_are_the_mean_over_each_examples_tokens():
    """(2 examples, 3 tokens, 4 classes), example 1's last token left out: by hand, per example."""
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4)
    targets = torch.tensor([[0, 1, 2], [3, logits[1, 1].argmax().item(), IGNORE_INDEX]])
    token_loss = [[-torch.log_softmax(logits[i, t], 0)[targets[i, t]].item() for t in range(3 - i)] for i in range(2)]
    per_example = [sum(token_loss[0]) / 3, sum(token_loss[1]) / 2]
    workload = Workload(label="lm", build=lambda _: None)
    outputs = {"logits": logits}
    assert workload.train_loss(outputs, targets).item() == pytest.approx(sum(per_example) / 2, rel=1e-6)
    assert workload.summed_loss(outputs, targets).item() == pytest.approx(sum(per_example), rel=1e-6)
    hits = [[(logits[i, t].argmax() == targets[i, t]).item() for t in range(3)] for i in range(2)]
    scores = workload.scores(outputs, targets).tolist()
    assert scores == pytest.approx([sum(hits[0]) / 3, (hits[1][0] + 1) / 2])
    # class logits stay exactly torch's cross-entropy (committed results unchanged)
    flat, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    assert torch.equal(workload.train_loss(flat, labels), F.cross_entropy(flat, labels))


def one_by_one_b_simple(model: nn.Module, x, y, loss) -> dict:
    """B_simple from one backward per example: the slowest, most obvious way."""
    grads = []
    for i in range(batches.count(x)):
        one = slice(i, i + 1)
        model.zero_grad()
        loss(batches.call(model, batches.take(x, one)), batches.take(y, one)).backward()
        grads.append(torch.cat([p.grad.flatten().double() for p in model.parameters()]))
    stacked = torch.stack(grads)
    small, big = stacked.square().sum(1).mean().item(), stacked.mean(0).square().sum().item()
    model.zero_grad()
    return diagnostics.b_simple(small, big, 1, len(grads))


def test_b_simple_of_a_dict_input_model_equals_one_backward_per_example():
    module = hf_style()
    torch.manual_seed(0)
    model = module.build({"vocab": 50, "width": 8, "classes": 3})
    (x, y) = module.load({"vocab": 50, "length": 6, "classes": 3, "train": 24, "val": 1, "test": 1})["train"]
    workload = Workload(label="hf", build=lambda _: model)
    found = diagnostics.noise_scale(model, x, y, workload.summed_loss)
    expected = one_by_one_b_simple(model, x, y, workload.summed_loss)
    assert found["noise_trace"] == pytest.approx(expected["noise_trace"], rel=1e-5)
    assert found["true_grad_sq"] == pytest.approx(expected["true_grad_sq"], rel=1e-4)


def test_b_simple_of_a_batchnorm_model_is_taken_in_eval_mode_on_a_copy():
    """Per-sample gradients cannot batch BatchNorm's in-place update: B_simple runs on a copy in eval
    mode (the running statistics), and the model itself is left as it was, in train mode."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6, 3))
    model(torch.randn(32, 1, 8))  # running statistics of its own
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(16, 1, 8), torch.randint(3, (16,))

    def summed(outputs, targets):
        return F.cross_entropy(outputs, targets, reduction="sum")

    found = diagnostics.noise_scale(model, x, y, summed)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    expected = one_by_one_b_simple(model.eval(), x, y, summed)
    assert found["noise_scale"] is not None and math.isfinite(found["noise_scale"])
    assert found["noise_trace"] == pytest.approx(expected["noise_trace"], rel=1e-5)


SMALL = {"vocab": 200, "width": 32, "length": 24, "classes": 4, "train": 2000, "val": 500, "test": 500}


def small_config(folder, **train):
    config = {"name": "hf_style", "workload": {"model": "hf_style.py:build", "data": "hf_style.py:load",
                                               "options": SMALL},
              "data": {"train_eval_size": 500}, "optim": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.01},
              "train": {"epochs": 2, "batch_size": 32, **train}, "checks": {"budget": None},
              "report": {"target": 0.9, "tolerance": 0.01}}
    shutil.copy(REPO / "examples" / "hf_style.py", folder / "hf_style.py")
    return write_config(folder, config)


@pytest.mark.slow
def test_the_hf_style_example_runs_predicts_and_reports(tmp_path):
    shutil.copy(REPO / "examples" / "hf_style.py", tmp_path / "hf_style.py")
    config = small_config(tmp_path)
    text = config.read_text().replace("batch_size: 32", "batch_size: 32\nsweep:\n  train.batch_size: [16, 64, 256]")
    config.write_text(text)
    run = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "r"), "--quiet")
    assert run.returncode == 0, run.stderr
    predicted = harness("predict", "--config", str(config), "--results-dir", str(tmp_path / "r"), "--force")
    assert predicted.returncode == 0, predicted.stderr
    records = [read_json(p) for p in (tmp_path / "r" / "hf_style").glob("*/result.json")]
    width, classes = SMALL["width"], SMALL["classes"]
    by_hand = 3 * (2 * width * width + 2 * width * classes)  # two Linear layers; embeddings are lookups
    for record in records:
        assert record["status"] == "done" and record["summary"]["test_accuracy_at_best_val"] > 0.9
        assert record["summary"]["flops_per_example"] == by_hand
        assert record["summary"]["final_noise_scale"] is not None  # per-sample gradients through model(**x)
    html = (tmp_path / "r" / "hf_style" / "report.html").read_text()
    assert "Sweet spot: batch size" in html
    # the report in the workload's words: its own validation split, "example" as the unit
    assert "validation: the workload&#39;s own &#39;val&#39; split (500 examples)" in html
    assert "time/example" in html and "time/image" not in html


@pytest.mark.slow
def test_a_dict_batch_cell_resumes_exactly_after_a_stop(tmp_path):
    config = small_config(tmp_path)
    whole = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "whole"), "--no-report")
    assert whole.returncode == 0, whole.stderr
    stopped = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "cut"), "--no-report",
                      env={"HARNESS_FAULT": "usr1@70"})
    assert stopped.returncode == 3, stopped.stderr
    resumed = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "cut"), "--no-report")
    assert resumed.returncode == 0 and "resumed" in resumed.stdout, resumed.stderr
    (cell,) = [p.parent for p in (tmp_path / "whole" / "hf_style").glob("*/result.json")]
    assert trained_numbers(tmp_path / "cut" / "hf_style" / cell.name) == trained_numbers(cell)


@pytest.mark.slow
def test_a_dict_batch_cell_on_two_processes_matches_one(tmp_path):
    config = small_config(tmp_path, untimed_steps=6, epochs=1)
    env = {**os.environ, "HARNESS_DATA_DIR": str(DATA_DIR), "OMP_NUM_THREADS": "1"}
    records = []
    for n in ("1", "2"):
        launcher = [str(BIN / "accelerate"), "launch", "--num_processes", n] + (["--multi_gpu"] if n == "2" else [])
        results = tmp_path / f"p{n}"
        proc = subprocess.run([*launcher, str(REPO / "harness" / "run.py"), "--config", str(config), "--results-dir",
                               str(results), "--quiet", "--no-report"], env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr
        (found,) = (results / "hf_style").glob("*/result.json")
        records.append(read_json(found))
    one, two = records
    assert two["environment"]["num_processes"] == 2 and two["cell_id"] == one["cell_id"]
    losses, reference = two["summary"]["first_step_losses"], one["summary"]["first_step_losses"]
    assert len(losses) == 6 and losses == pytest.approx(reference, abs=1e-5)
    assert abs(reference[5] - reference[0]) > 1e-3  # the losses move: the gradients were averaged across ranks
    assert two["summary"]["test_accuracy_at_best_val"] == pytest.approx(one["summary"]["test_accuracy_at_best_val"],
                                                                        abs=0.01)
