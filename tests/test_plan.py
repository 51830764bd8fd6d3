"""Grid expansion, stable cell ids, cell selection and the global-batch divisibility rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import SMALL, write_config

from harness.config import load_config
from harness.errors import ConfigError
from harness.plan import check_divisible, expand, select

IDS_SCRIPT = "import json,sys; from harness.config import load_config; from harness.plan import expand; " \
             "print(json.dumps([c.id for c in expand(load_config(sys.argv[1]))]))"


def test_grid_is_the_product_in_config_order(tmp_path):
    config = load_config(write_config(tmp_path, SMALL), ["sweep.train.seed=[0,1,2]"])
    cells = expand(config)
    assert [(c.batch_size, c.settings.train.seed) for c in cells] == [
        (64, 0), (64, 1), (64, 2), (256, 0), (256, 1), (256, 2)]
    assert [c.index for c in cells] == list(range(6))
    assert cells[4].swept == {"train.batch_size": 256, "train.seed": 1}
    assert cells[4].id.startswith("bs256-seed1-")


def test_ids_are_stable_across_processes(tmp_path):
    path = write_config(tmp_path, SMALL)
    here = [c.id for c in expand(load_config(path))]
    for hash_seed in ("1", "2"):  # a different interpreter with a different str hash
        out = subprocess.run([sys.executable, "-c", IDS_SCRIPT, str(path)], capture_output=True, text=True,
                             env={**os.environ, "PYTHONHASHSEED": hash_seed}, check=True).stdout
        assert json.loads(out) == here


def test_ids_depend_on_every_setting_and_only_on_settings(tmp_path):
    path = write_config(tmp_path, SMALL)
    base = [c.id for c in expand(load_config(path))]
    assert len(set(base)) == len(base)
    renamed = [c.id for c in expand(load_config(path, ["name=other"]))]
    assert renamed == base  # the sweep's name is not a setting of the cell
    for override in ("optim.lr=0.002", "model.init=kaiming", "train.epochs=3", "data.val_size=4000"):
        changed = [c.id for c in expand(load_config(path, [override]))]
        assert all(a != b for a, b in zip(base, changed)), override
        assert [a.rsplit("-", 1)[0] for a in base] == [b.rsplit("-", 1)[0] for b in changed]  # same slug


def test_repeated_sweep_values_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="same cell twice"):
        expand(load_config(write_config(tmp_path, SMALL), ["sweep.train.seed=[0,0]"]))


def test_select_by_id_and_by_array_index(tmp_path):
    cells = expand(load_config(write_config(tmp_path, SMALL)))
    assert select(cells) == cells
    assert select(cells, ids=[cells[1].id]) == [cells[1]]
    assert select(cells, array_index=1) == [cells[1]]
    with pytest.raises(ConfigError, match="unknown cell id"):
        select(cells, ids=["bs1-seed0-deadbeef"])
    with pytest.raises(ConfigError, match="outside 0..1"):
        select(cells, array_index=2)


def test_global_batch_must_divide_among_processes(tmp_path):
    cells = expand(load_config(write_config(tmp_path, SMALL), ["sweep.train.batch_size=[64,6]"]))
    check_divisible(cells, 2)
    with pytest.raises(ConfigError, match="train.batch_size=6 .* not divisible by the 4 processes"):
        check_divisible(cells, 4)
