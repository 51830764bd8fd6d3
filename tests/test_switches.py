"""The training switches: init, activation, sampling, lr scaling, optimizers, precision, divergence."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import harness, read_json, write_config

from harness.config import ModelSettings, OptimSettings
from harness.training.data import IndexStream
from harness.training.models.mlp import build_mlp


def test_layer_shapes_and_activations():
    model = build_mlp(ModelSettings(activation="softplus"))
    linear = [m for m in model if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(784, 500), (500, 500), (500, 500), (500, 10)]
    assert sum(isinstance(m, torch.nn.Softplus) for m in model) == 3
    assert model(torch.zeros(2, 784)).shape == (2, 10)


def test_normal_init_draws_weights_and_biases_with_std_one():
    torch.manual_seed(0)
    model = build_mlp(ModelSettings(init="normal", init_std=1.0))
    weights = torch.cat([m.weight.flatten() for m in model if isinstance(m, torch.nn.Linear)])
    biases = torch.cat([m.bias.flatten() for m in model if isinstance(m, torch.nn.Linear)])
    assert weights.std().item() == pytest.approx(1.0, abs=0.01)
    assert biases.std().item() == pytest.approx(1.0, abs=0.1)
    default = build_mlp(ModelSettings(init="default"))
    assert default[0].weight.std().item() < 0.05  # PyTorch's own U(-1/sqrt(784), 1/sqrt(784))


def test_shuffle_visits_every_image_once_per_pass_and_continues_across_epochs():
    stream = IndexStream(10, "shuffle", seed=3)
    first, second = stream.next(7), stream.next(7)
    assert sorted(torch.cat([first, second[:3]]).tolist()) == list(range(10))  # one full pass
    assert len(set(second[3:].tolist())) == 4  # the next pass has begun, without repeats
    again = IndexStream(10, "shuffle", seed=3)
    assert torch.equal(again.next(14), torch.cat([first, second]))  # the seed fixes the order


def test_with_replacement_draws_independently():
    draws = IndexStream(10, "with_replacement", seed=0).next(1000)
    assert draws.min() >= 0 and draws.max() < 10
    assert len(set(draws[:10].tolist())) < 10 or len(set(draws[10:20].tolist())) < 10  # repeats happen


def test_learning_rate_scaling():
    assert OptimSettings(lr=1e-3).lr_for(512) == 1e-3
    assert OptimSettings(lr=1e-3, lr_scaling="linear", lr_reference_batch=64).lr_for(256) == pytest.approx(4e-3)
    assert OptimSettings(lr=1e-3, lr_scaling="sqrt", lr_reference_batch=64).lr_for(256) == pytest.approx(2e-3)


QUICK = {
    "name": "quick",
    "train": {"batch_size": 100, "epochs": 1, "images_per_epoch": 3000, "untimed_steps": 2},
    "data": {"train_eval_size": 500},
}


@pytest.mark.slow
def test_switches_train_and_are_recorded(tmp_path):
    """SGD with momentum, clipping, sqrt lr scaling, softplus, kaiming init, with-replacement, bf16."""
    overrides = ["optim.name=sgd", "optim.lr=0.02", "optim.momentum=0.9", "optim.grad_clip_norm=5.0", "train.epochs=2",
                 "optim.lr_scaling=sqrt", "optim.lr_reference_batch=25", "model.activation=softplus",
                 "model.init=kaiming", "train.sampling=with_replacement", "train.mixed_precision=bf16"]
    args = ["run", "--config", str(write_config(tmp_path, QUICK)), "--results-dir", str(tmp_path / "r"), "--no-report"]
    for o in overrides:
        args += ["--set", o]
    proc = harness(*args)
    assert proc.returncode == 0, proc.stderr
    (path,) = (tmp_path / "r" / "quick").glob("*/result.json")
    result = read_json(path)
    assert result["status"] == "done"
    assert result["settings"]["optim"]["name"] == "sgd" and result["settings"]["model"]["activation"] == "softplus"
    assert result["environment"]["mixed_precision"] == "bf16"
    assert result["summary"]["learning_rate"] == pytest.approx(0.02 * math.sqrt(100 / 25))
    assert result["summary"]["test_accuracy_at_best_val"] > 0.6  # 0.78 when written; chance is 0.1


def refuse(constant: str):
    raise ValueError(f"{constant} in result.json; unknown must be null")


@pytest.mark.slow
def test_exploding_run_is_recorded_as_diverged(tmp_path):
    args = ["run", "--config", str(write_config(tmp_path, QUICK)), "--results-dir", str(tmp_path / "r"),
            "--no-report", "--set", "optim.name=sgd", "--set", "optim.lr=1.0e+6", "--set", "model.init=normal"]
    proc = harness(*args)
    assert proc.returncode == 1  # a cell that did not finish is not a success
    (path,) = (tmp_path / "r" / "quick").glob("*/result.json")
    result = json.loads(path.read_text(), parse_constant=refuse)  # strict JSON: no NaN or Infinity
    assert result["status"] == "diverged"
    assert result["summary"]["epochs_completed"] == 0 and result["summary"]["diverged_at_step"] >= 1
    assert "diverged" in proc.stdout
