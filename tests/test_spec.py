"""harness/spec.py: one SweepSpec, from a config file or from keywords, is what every route plans
from; harness.sweep and harness.predict take it (or its keywords, as before)."""

from __future__ import annotations

import shutil

import pytest
from conftest import REPO, write_config

import harness
from harness.errors import ConfigError
from harness.quality import Quality
from harness.spec import SweepSpec


def test_a_config_and_its_keywords_plan_the_same_cells(tmp_path):
    from_file = SweepSpec.from_config(REPO / "configs" / "default.yaml", ["sweep.train.batch_size=[32,128]"],
                                      results_dir=tmp_path)
    from_keywords = SweepSpec.from_keywords("mnist_mlp", batch_sizes=[32, 128], target=0.97, lr=1e-3, epochs=4,
                                            name="default", results_dir=tmp_path,
                                            settings={"train": {"warmup_steps": 5}})
    assert [c.id for c in from_file.cells] == [c.id for c in from_keywords.cells]
    assert from_file.sweep_dir == from_keywords.sweep_dir == tmp_path / "default"
    assert from_keywords.config.workload.builtin == "mnist_mlp"


def test_a_bad_keyword_is_one_line_naming_it(tmp_path):
    with pytest.raises(ConfigError, match="train.epochs"):
        SweepSpec.from_keywords("mnist_mlp", batch_sizes=[32], epochs=0, results_dir=tmp_path)


@pytest.mark.parametrize("field", ["results_dir", "data_dir", "config"])
def test_a_path_the_system_cannot_take_is_one_error_naming_it(tmp_path, field):
    bad = {"results_dir": "results", "data_dir": None, "config": REPO / "configs" / "default.yaml"}
    bad[field] = f"{tmp_path}/a\0b"
    with pytest.raises(ConfigError, match=rf"^{field}: .* is not a usable path \(empty, bytes or a NUL character\)"):
        SweepSpec.from_config(bad["config"], results_dir=bad["results_dir"], data_dir=bad["data_dir"])
    if field != "config":
        with pytest.raises(ConfigError, match=rf"^{field}: "):
            SweepSpec.from_keywords("mnist_conv", batch_sizes=[8], **{field: bad[field]})


def test_a_spec_goes_alone(tmp_path):
    spec = SweepSpec.from_keywords("mnist_mlp", batch_sizes=[32], results_dir=tmp_path)
    with pytest.raises(TypeError, match="pass it alone"):
        harness.sweep(spec, batch_sizes=[64])
    with pytest.raises(TypeError, match="SweepSpec, or a model"):
        harness.predict(batch_sizes=[64])
    assert not (tmp_path / spec.config.name).exists()  # nothing trained, nothing written


def test_the_keywords_take_the_metric_its_direction_the_optimizer_and_the_schedule(tmp_path):
    """The same cells as the config that says the same: regression.yaml's settings by keywords."""
    shutil.copy(REPO / "examples" / "regression.py", tmp_path / "regression.py")
    file = str(tmp_path / "regression.py")
    spec = SweepSpec.from_keywords(f"{file}:build", f"{file}:load", batch_sizes=[16, 64], target=0.1, lr=1e-2,
                                   epochs=6, loss=f"{file}:loss", metric=f"{file}:mse", metric_name="MSE",
                                   metric_mode="min", optimizer="adamw", schedule="cosine",
                                   options={"features": 16, "width": 64, "noise": 0.1, "train": 8000, "val": 1000,
                                            "test": 1000}, name="regression", results_dir=tmp_path)
    assert spec.config.workload.quality == Quality("MSE", "min", bounded=False)
    assert (spec.config.optim.name, spec.config.optim.schedule) == ("adamw", "cosine")
    written = write_config(tmp_path, {**spec.config.model_dump(mode="json", exclude={"sweep"}),
                                      "sweep": {"train.batch_size": [16, 64], "train.seed": [0]}})
    assert [c.id for c in SweepSpec.from_config(written, results_dir=tmp_path).cells] == [c.id for c in spec.cells]
    lm = SweepSpec.from_keywords("mnist_mlp", batch_sizes=[32], metric="loss", target=0.2, results_dir=tmp_path)
    assert lm.config.workload.quality.mode == "min" and lm.cells[0].workload["quality"] == {"metric": "loss"}


def test_the_keywords_take_an_optimizer_of_ones_own_an_augmentation_and_a_unit(tmp_path):
    """A make() callable is workload.optimizer (its code in the cell id), a name is optim.name;
    augment and unit are workload.augment and workload.unit, the same cells as the config's."""
    shutil.copy(REPO / "examples" / "cifar_resnet.py", tmp_path / "cifar_resnet.py")
    (tmp_path / "opt.py").write_text("import torch\n\ndef make(parameters, options, hyper):\n"
                                     "    return torch.optim.SGD(parameters, lr=hyper.lr)\n")
    file = str(tmp_path / "cifar_resnet.py")
    keywords = {"batch_sizes": [16, 64], "augment": "crop_flip", "unit": "image", "results_dir": tmp_path,
                    "options": {"width": 4, "blocks": 1, "classes": 10, "size": 8, "noise": 1.0, "train": 320,
                             "val": 64, "test": 64}, "name": "own"}
    spec = SweepSpec.from_keywords(f"{file}:build", f"{file}:load", optimizer=f"{tmp_path / 'opt.py'}:make",
                                   **keywords)
    w = spec.config.workload
    assert (w.augment, w.unit, w.optimizer.endswith("opt.py:make"), spec.config.optim.name) == \
        ("crop_flip", "image", True, "adam")
    assert spec.cells[0].workload["optimizer"]["callable"] == "make"
    assert spec.cells[0].workload["augment"]["callable"] == "crop_flip"
    named = SweepSpec.from_keywords(f"{file}:build", f"{file}:load", optimizer="sgd", **keywords)
    assert named.config.optim.name == "sgd" and named.config.workload.optimizer is None
    assert {c.id for c in named.cells}.isdisjoint(c.id for c in spec.cells)
    written = write_config(tmp_path, {**spec.config.model_dump(mode="json", exclude={"sweep"}),
                                      "sweep": {"train.batch_size": [16, 64], "train.seed": [0]}})
    assert [c.id for c in SweepSpec.from_config(written, results_dir=tmp_path).cells] == [c.id for c in spec.cells]
