"""Augmentation (training/augment.py) and the user's own optimizer (workload.optimizer): crop_flip
against a brute-force reading of what it may return, draws that follow (seed, rank, step), the
augmentation run on every training batch and on nothing else, the refusals before training, a
cell with crop_flip and its own optimizer and scheduler resumed exactly, and examples/cifar_resnet
run, predicted and reported end to end."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import REPO, harness, read_json, trained_numbers, write_config

from harness.training.augment import Augmenter, crop_flip, seed_for

TINY = {"width": 4, "blocks": 1, "classes": 10, "size": 8, "noise": 1.0, "train": 320, "val": 64, "test": 64}


def test_crop_flip_returns_a_shifted_crop_of_the_padded_image_mirrored_or_not():
    images = torch.randn(64, 3, 6, 5)
    out = crop_flip(images, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == images.shape
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    kinds = set()
    for a, b in zip(padded, out):
        found = [(dy, dx, flip) for dy in range(5) for dx in range(5) for flip in (False, True)
                 if torch.equal(b, (lambda c: c.flip(2) if flip else c)(a[:, dy:dy + 6, dx:dx + 5]))]
        assert found, "an output that is no crop of its padded image"
        kinds |= {(dy, dx, flip) for dy, dx, flip in found}
    assert len(kinds) > 20 and {f for *_, f in kinds} == {False, True}  # offsets and mirrors both drawn


def test_the_draws_follow_seed_rank_and_step_so_a_resumed_cell_draws_the_same():
    images = torch.randn(16, 1, 8, 8)
    calls = lambda role, fn, *args: fn(*args)  # noqa: E731 - Workload.call without the error wrapping
    first = Augmenter(crop_flip, seed=3, rank=0, device=torch.device("cpu"), call=calls)
    drawn = [first(images) for _ in range(4)]
    again = Augmenter(crop_flip, seed=3, rank=0, device=torch.device("cpu"), call=calls)
    again.seek(2)  # a cell resumed at step 2
    assert torch.equal(again(images), drawn[2]) and torch.equal(again(images), drawn[3])
    assert not torch.equal(drawn[0], drawn[1])
    assert len({seed_for(s, r, t) for s in range(3) for r in range(3) for t in range(50)}) == 450


def test_crop_flip_on_flat_images_says_what_it_takes():
    with pytest.raises(ValueError, match=r"\(examples, channels, height, width\); got \(4, 784\)"):
        crop_flip(torch.zeros(4, 784), torch.Generator())


def cifar_config(tmp_path, options=TINY, **extra) -> dict:
    shutil.copy(REPO / "examples" / "cifar_resnet.py", tmp_path / "cifar_resnet.py")
    return {"name": "aug", "workload": {"model": "cifar_resnet.py:build", "data": "cifar_resnet.py:load",
                                        "augment": "crop_flip", "options": options},
            "data": {"train_eval_size": 64}, "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
            "train": {"batch_size": 32, "epochs": 2}, "checks": {"budget": None}, "report": {"target": 0.5}} | extra


COUNTING = '''
import os

def augment(inputs, generator):
    with open(os.environ["AUGMENT_LOG"], "a") as fh:
        fh.write(f"{len(inputs)}\\n")
    return inputs
'''


@pytest.mark.slow
def test_the_augmentation_runs_on_every_training_batch_and_never_in_evaluation(tmp_path):
    (tmp_path / "counting.py").write_text(COUNTING)
    config = cifar_config(tmp_path)
    config["workload"]["augment"] = "counting.py:augment"
    log = tmp_path / "calls.txt"
    proc = harness("run", "--config", str(write_config(tmp_path, config)), "--results-dir", str(tmp_path / "r"),
                   "--no-report", env={"AUGMENT_LOG": str(log)})
    assert proc.returncode == 0, proc.stderr
    (record,) = [read_json(p) for p in (tmp_path / "r" / "aug").glob("*/result.json")]
    calls = [int(n) for n in log.read_text().split()]
    assert calls[0] == 4  # the four-example trial before training
    assert calls[1:] == [32] * record["summary"]["optimizer_steps"]  # each step's batch; no evaluation batch


OWN_OPTIMIZER = '''
import torch

def make(parameters, options, hyper):
    optimizer = torch.optim.SGD(parameters, lr=hyper.lr, momentum=0.9, nesterov=True)
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=hyper.total_steps)

def not_an_optimizer(parameters, options, hyper):
    return {"lr": hyper.lr}
'''


@pytest.mark.slow
def test_a_cell_with_crop_flip_and_its_own_optimizer_and_scheduler_resumes_exactly(tmp_path):
    """Stopped after step 13 of 20 and run again, the cell trains exactly what the uninterrupted
    cell trains: the same augmentation draws, the scheduler's state restored (its rate at each
    check is the cosine's)."""
    (tmp_path / "opt.py").write_text(OWN_OPTIMIZER)
    config = cifar_config(tmp_path)
    config["workload"]["optimizer"] = "opt.py:make"
    path = write_config(tmp_path, config)
    whole = harness("run", "--config", str(path), "--results-dir", str(tmp_path / "whole"), "--no-report")
    assert whole.returncode == 0, whole.stderr
    (cell,) = [p.parent for p in (tmp_path / "whole" / "aug").glob("*/result.json")]
    summary = read_json(cell / "result.json")["summary"]
    assert (summary["optimizer_ran"], summary["schedule_ran"]) == ("SGD", "CosineAnnealingLR (workload.optimizer)")
    rates = [float(c["lr_at_check"]) for c in trained_numbers(cell)["evals.csv"]]
    assert rates[0] > rates[-1] and len(set(rates)) > 3
    stopped = harness("run", "--config", str(path), "--results-dir", str(tmp_path / "cut"), "--no-report",
                      env={"HARNESS_FAULT": "usr1@13"})
    assert stopped.returncode == 3, stopped.stderr
    resumed = harness("run", "--config", str(path), "--results-dir", str(tmp_path / "cut"), "--no-report")
    assert resumed.returncode == 0 and "resumed" in resumed.stdout, resumed.stderr
    assert trained_numbers(tmp_path / "cut" / "aug" / cell.name) == trained_numbers(cell)
    plain = dict(config, workload={k: v for k, v in config["workload"].items() if k != "optimizer"})
    ids = harness("plan", "--config", str(write_config(tmp_path, plain, "plain.yaml")))
    assert cell.name not in ids.stdout  # the optimizer's code is part of the cell id


HALF = '''
def augment(inputs, generator):
    return inputs[: len(inputs) // 2]
'''


@pytest.mark.parametrize("change, named", [
    ({"augment": "half.py:augment"}, "workload.augment: "),
    ({"optimizer": "opt.py:not_an_optimizer"}, "returned dict; return a torch.optim.Optimizer"),
    ({"optimizer": "opt.py:make", "optim": {"schedule": "cosine"}}, "returned a scheduler, and optim.schedule"),
], ids=["augment drops examples", "make returns no optimizer", "two schedules"])
def test_an_augment_or_optimizer_that_answers_wrong_is_refused_before_training(tmp_path, change, named):
    (tmp_path / "half.py").write_text(HALF)
    (tmp_path / "opt.py").write_text(OWN_OPTIMIZER)
    config = cifar_config(tmp_path)
    config["optim"] |= change.pop("optim", {})
    config["workload"] |= change
    proc = harness("run", "--config", str(write_config(tmp_path, config)), "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and named in proc.stderr, proc.stderr
    assert not list((tmp_path / "r").rglob("result.json"))


def test_crop_flip_on_a_built_in_of_flat_images_is_refused_before_training(tmp_path):
    config = {"name": "flat", "workload": {"name": "mnist_conv", "augment": "crop_flip"},
              "train": {"batch_size": 64, "epochs": 1, "images_per_epoch": 640}}
    proc = harness("run", "--config", str(write_config(tmp_path, config)), "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 2 and "crop_flip takes one tensor of images" in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1


SMALL_CIFAR = "{width: 8, blocks: 1, classes: 10, size: 16, noise: 1.0, train: 1500, val: 300, test: 300}"


@pytest.mark.slow
def test_the_cifar_example_runs_predicts_and_reports(tmp_path):
    from test_quality import copied, end_to_end

    config = copied(tmp_path, "cifar_resnet")
    text = config.read_text()
    text = text[:text.index("  options:")] + f"  options: {SMALL_CIFAR}\n" + text[text.index("\ndata:") + 1:]
    config.write_text(text.replace("epochs: 4", "epochs: 2").replace("target: 0.9 ", "target: 0.6 ")
                      .replace("train_eval_size: 1000", "train_eval_size: 300"))
    records, html, answer = end_to_end(config, tmp_path / "r")
    for record in records:
        summary = record["summary"]
        assert record["settings"]["workload"]["augment"] == "crop_flip" and summary["optimizer_ran"] == "SGD"
        assert summary["schedule_ran"].startswith("cosine") and summary["final_noise_scale"] is not None
    assert answer.startswith("sweet spot: batch ") and "0.6 val" in answer, answer
    assert "time/example" in html and "cosine to zero, warm-up" in html
