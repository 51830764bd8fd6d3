"""harness/builtins.py, the one table of built-in workloads: each builds its model on its images,
its option defaults are recorded and hashed, its code is part of its identity (comments and
docstrings aside), and every committed cell keeps the id it was trained under."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import REPO

from harness import builtins
from harness.config import CellSettings
from harness.plan import cell_id
from harness.training import workloads
from harness.workload import WorkloadSettings, identity


def test_every_committed_cell_keeps_its_id():
    """Each result.json under results/ names the settings it ran: planned now, they give its id."""
    records = [json.loads(p.read_text()) | {"folder": p.parent.name} for p in (REPO / "results").rglob("result.json")]
    assert len(records) > 100
    for record in records:
        settings = CellSettings.model_validate(record["settings"])
        swept = dict(record["swept"])
        variant = swept.pop("variant", None)
        planned = cell_id(settings, list(swept), variant, identity(settings.workload, REPO))
        assert planned == record["cell_id"] == record["folder"]


@pytest.mark.parametrize("name", builtins.NAMES)
def test_each_builtin_builds_its_model_for_its_images(name):
    settings = CellSettings(workload=name)
    model = workloads.builtin(settings).build({})
    assert model(torch.rand(3, 784)).shape == (3, 10)
    assert settings.dataset == (builtins.REGISTRY[name].dataset or "mnist")


def test_a_builtins_defaults_are_recorded_and_hashed():
    given = WorkloadSettings.model_validate({"name": "mnist_conv", "options": {"hidden": 64}})
    assert given.options == {"channels": 16, "hidden": 64}
    plain = CellSettings(workload="mnist_conv")
    explicit = CellSettings(workload={"name": "mnist_conv", "options": {"channels": 16}})
    other = CellSettings(workload={"name": "mnist_conv", "options": {"channels": 8}})
    ids = [cell_id(s, [], None, identity(s.workload, REPO)) for s in (plain, explicit, other)]
    assert ids[0] == ids[1] != ids[2]
    assert identity(plain.workload, REPO)["options"] == {"channels": 16, "hidden": 128}


def copied_package(tmp_path: Path) -> Path:
    for name in ("mlp.py", "conv.py"):
        target = tmp_path / "training" / "models" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(builtins.PACKAGE / "training" / "models" / name, target)
    return tmp_path / "training" / "models"


@pytest.mark.parametrize("name", ["mnist_mlp", "mnist_conv"])
def test_a_builtins_code_is_part_of_its_identity(tmp_path, monkeypatch, name):
    models = copied_package(tmp_path)
    monkeypatch.setattr(builtins, "PACKAGE", tmp_path)
    settings = CellSettings(workload=name)
    before = cell_id(settings, [], None, identity(settings.workload, REPO))
    source = models / Path(builtins.REGISTRY[name].source).name
    text = source.read_text()
    source.write_text(text.replace('"""', '"""An edit of the docstring. ', 1) + "\n# and a comment\n")
    assert cell_id(settings, [], None, identity(settings.workload, REPO)) == before  # the same code
    source.write_text(text.replace("nn.ReLU()", "nn.GELU()", 1))
    assert cell_id(settings, [], None, identity(settings.workload, REPO)) != before  # other code: new cells


def test_the_mlp_leaves_its_code_out_only_while_it_is_the_committed_code(monkeypatch):
    """The MLP's identity is None (its committed ids) only because its code hashes to ran_sha256."""
    settings = CellSettings()
    assert identity(settings.workload, REPO) is None
    assert builtins.source_sha256(builtins.REGISTRY["mnist_mlp"]) == builtins.MLP_SHA256
    moved = dataclasses.replace(builtins.REGISTRY["mnist_mlp"], ran_sha256="0" * 16)
    monkeypatch.setitem(builtins.REGISTRY, "mnist_mlp", moved)
    assert identity(settings.workload, REPO) == {"name": "mnist_mlp", "source_sha256": builtins.MLP_SHA256,
                                                 "options": {}}
