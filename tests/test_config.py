"""Config loading, overrides and every bad input: one line naming the field, exit 2, nothing touched."""

from __future__ import annotations

import shutil

import pytest
from conftest import REPO, SMALL, harness, snapshot, write_config

from harness.cli import main
from harness.config import load_config
from harness.errors import ConfigError
from harness.plan import expand


def test_shipped_configs_load_and_expand():
    default = expand(load_config(REPO / "configs/default.yaml"))
    assert [c.batch_size for c in default] == [8, 32, 128, 512, 2048]
    full = expand(load_config(REPO / "configs/full.yaml"))
    assert sorted({c.batch_size for c in full}) == [2**k for k in range(15)]
    assert sorted({c.settings.train.seed for c in full}) == [0, 1, 2]
    assert len(full) == 15 * 3 * 3
    # three rates per batch size: the sqrt rule from batch 128, times 0.5, 1 and 2
    rates = {(c.batch_size, c.settings.optim.lr_for(c.batch_size)) for c in full}
    assert sorted(r for b, r in rates if b == 512) == pytest.approx([1e-3, 2e-3, 4e-3])
    tuned = expand(load_config(REPO / "configs/lr_tuned.yaml"))
    assert len({(c.batch_size, c.settings.optim.lr) for c in tuned}) == 5 * 3 and len(tuned) == 5 * 3 * 2


def test_seed_config_is_the_motivating_case():
    (cell,) = expand(load_config(REPO / "configs/seed.yaml"))
    s = cell.settings
    assert (s.model.init, s.model.init_std, s.model.activation) == ("normal", 1.0, "relu")
    assert (s.optim.name, s.optim.lr, s.optim.eps, s.optim.betas) == ("adam", 1e-3, 1e-8, (0.9, 0.999))
    assert s.optim.grad_clip_norm is None and s.optim.lr_scaling == "none"
    assert (s.train.batch_size, s.train.images_per_epoch, s.train.epochs) == (1, 10_000, 100)
    assert s.train.sampling == "shuffle"
    assert s.train_split_size == 55_000 and s.steps_per_epoch == 10_000


def test_set_overrides_values_and_sweeps(tmp_path):
    path = write_config(tmp_path, SMALL)
    config = load_config(path, ["optim.lr=1e-4", "sweep.train.seed=[0,1,2]", "model.activation=softplus"])
    assert config.optim.lr == 1e-4 and config.model.activation == "softplus"
    assert len(expand(config)) == 2 * 3
    pinned = load_config(path, ["train.batch_size=32"])  # pinning a swept key removes it from the sweep
    assert [c.batch_size for c in expand(pinned)] == [32]


def test_other_swept_keys_multiply_the_grid(tmp_path):
    config = load_config(write_config(tmp_path, SMALL), ["sweep.optim.lr=[1e-3, 3e-4]"])
    cells = expand(config)
    assert len(cells) == 4
    assert {c.swept["optim.lr"] for c in cells} == {1e-3, 3e-4}
    assert all("lr" in c.id for c in cells)


BAD_INPUTS = [
    # (--set overrides, text the one-line error must contain)
    (["train.batchsize=3"], "unknown key 'train.batchsize'; valid keys: batch_size"),
    (["train.epochs=many"], "train.epochs"),
    (["train.batch_size=0"], "train.batch_size"),
    (["sweep.train.batch_size=[64,0]"], "sweep.train.batch_size=0"),
    (["train.batch_size=55001"], "larger than the training split"),
    (["sweep.train.batchsize=[1]"], "'train.batchsize' is not a setting"),
    (["sweep.train.mixed_precision=[no,bf16]"], "cannot be swept"),
    (["model.activation=tanh"], "model.activation"),
    (["optim.betas=[0.9, 1.5]"], "optim.betas"),
    (["bogus"], "expected KEY=VALUE"),
    (["colour=blue"], "unknown key 'colour'"),
    (["report.target=1.5"], "report.target=1.5 with tolerance 0.005: the metric (accuracy) is a score in [0, 1]"),
    (["workload.metric=loss", "workload.metric_mode=max"], "metric: loss is lower-is-better"),
]


@pytest.fixture
def results_with_a_done_cell(tmp_path, small_sweep):
    """A results folder that already holds finished work, to prove a bad run leaves it alone."""
    results = tmp_path / "results"
    shutil.copytree(small_sweep, results / "small")
    return results


@pytest.mark.parametrize("overrides,expected", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_and_touches_nothing(overrides, expected, tmp_path, capsys,
                                                          results_with_a_done_cell):
    config = write_config(tmp_path, SMALL)
    before = snapshot(results_with_a_done_cell)
    args = ["run", "--config", str(config), "--results-dir", str(results_with_a_done_cell)]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("harness: error:"), err
    assert expected in err
    assert snapshot(results_with_a_done_cell) == before


def test_missing_and_corrupt_data_folder(tmp_path, capsys, monkeypatch, data_dir):
    config = write_config(tmp_path, SMALL)
    assert main(["run", "--config", str(config), "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "--data-dir" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt"
    shutil.copytree(data_dir, corrupt)
    target = corrupt / "train-labels-idx1-ubyte.gz"
    blob = bytearray(target.read_bytes())
    blob[100] ^= 0xFF
    target.chmod(0o644)
    target.write_bytes(bytes(blob))
    monkeypatch.setenv("HARNESS_DATA_DIR", str(corrupt))  # the environment variable is honoured too
    assert main(["run", "--config", str(config), "--results-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "train-labels-idx1-ubyte.gz is corrupt" in err
    assert not (tmp_path / "r").exists()


def test_unwritable_results_folder(tmp_path, capsys):
    config = write_config(tmp_path, SMALL)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["run", "--config", str(config), "--results-dir", str(blocker / "results")]) == 2
    assert "--results-dir" in capsys.readouterr().err
    assert blocker.read_text() == "not a folder"


def test_missing_and_unparsable_config(tmp_path, capsys):
    assert main(["plan", "--config", str(tmp_path / "absent.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    assert main(["plan", "--config", str(broken)]) == 2
    assert "not readable YAML" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write_config(tmp_path, [1, 2], "list.yaml"))


def test_console_command_exits_2_with_one_line(tmp_path):
    config = write_config(tmp_path, SMALL)
    proc = harness("run", "--config", str(config), "--set", "train.batch_size=-4", "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "train.batch_size" in proc.stderr
    assert proc.stdout == "" and not (tmp_path / "r").exists()


@pytest.mark.parametrize("command,expected",
                         [("run", ["--config", "--set", "--data-dir", "HARNESS_DATA_DIR", "--quiet", "GLOBAL"]),
                                              ("plan", ["--config", "--set", "--results-dir"]),
                                              ("report", ["RESULTS_DIR", "--output", "--target", "--tolerance"]),
                                              ("bench", ["--batch-sizes", "--quick", "--modes", "bench.json"]),
                                              ("slurm submit", ["--max-parallel", "--gpus-per-task", "--nodes",
                                                                "--dry-run", "--partition", "--time", "--account"]),
                                              ("status", ["RESULTS_DIR", "pending"])])
def test_every_command_explains_itself(command, expected):
    proc = harness(*command.split(), "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert all(word in text for word in expected), text


def test_the_old_name_of_untimed_steps_is_read_with_one_warning_and_the_same_cells(tmp_path, capsys):
    """train.warmup_steps (untimed steps, easily taken for a learning-rate warm-up) is now
    train.untimed_steps: the old name, in a section, a --set or a sweep key, gives the same cells."""
    new = load_config(write_config(tmp_path, {"name": "n", "train": {"untimed_steps": 7}}, "new.yaml"))
    assert capsys.readouterr().err == ""
    old = load_config(write_config(tmp_path, {"name": "n", "train": {"warmup_steps": 7}}, "old.yaml"))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.warmup_steps is now train.untimed_steps" in err
    assert old.train.untimed_steps == 7 and [c.id for c in expand(old)] == [c.id for c in expand(new)]
    swept = load_config(write_config(tmp_path, {"name": "n", "sweep": {"train.warmup_steps": [3, 7]}}, "sw.yaml"),
                        ["train.epochs=2"])
    assert "train.untimed_steps" in swept.sweep and "is now" in capsys.readouterr().err
    assert load_config(tmp_path / "new.yaml", ["train.warmup_steps=9"]).train.untimed_steps == 9
    assert [c.id.split("-")[2] for c in expand(swept)] == ["warmup_steps3", "warmup_steps7"]  # the slug as before
