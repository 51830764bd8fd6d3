"""harness/spec.py: one SweepSpec, from a config file or from keywords, is what every route plans
from; harness.sweep and harness.predict take it (or its keywords, as before)."""

from __future__ import annotations

import pytest
from conftest import REPO

import harness
from harness.errors import ConfigError
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


def test_a_spec_goes_alone(tmp_path):
    spec = SweepSpec.from_keywords("mnist_mlp", batch_sizes=[32], results_dir=tmp_path)
    with pytest.raises(TypeError, match="pass it alone"):
        harness.sweep(spec, batch_sizes=[64])
    with pytest.raises(TypeError, match="SweepSpec, or a model"):
        harness.predict(batch_sizes=[64])
    assert not (tmp_path / spec.config.name).exists()  # nothing trained, nothing written
