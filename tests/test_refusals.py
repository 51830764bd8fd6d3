"""Bad input to every command is one line and exit 2, before anything is written: bad values, a
section given twice, alias bombs and huge configs, unreadable data, unwritable folders, a second
config into one folder, flags outside the config's bounds; and nothing already written changes."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
from conftest import DATA_DIR, HARNESS, harness, snapshot, write_config
from hostile import ONE, golden_folder, one_line_error
from records import epoch_rows, write_cell

import harness as harness_api
from harness import SweepSpec
from harness.analysis.collect import collect
from harness.errors import ConfigError

# Root reads anything; these drop that power so file permissions apply (the process stays root).
NO_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]


BAD_CONFIGS = {
    "infinite lr": (["--set", "optim.lr=.inf"], "optim.lr: Input should be a finite number"),
    "infinite eps": (["--set", "optim.eps=.inf"], "optim.eps: Input should be a finite number"),
    "nan init_std": (["--set", "model.init_std=.nan"], "model.init_std: Input should be a finite number"),
    "infinite weight_decay": (["--set", "optim.weight_decay=.inf"], "optim.weight_decay: Input should be a finite"),
    "a boolean batch size": (["--set", "sweep.train.batch_size=[64, true]"], "train.batch_size=True"),
    "a boolean learning rate": (["--set", "optim.lr=true"], "optim.lr: a boolean is not a number"),
    "seed 1e23": (["--set", "train.seed=1e23"], "train.seed: Input should be a valid integer"),
    "unknown tracker": (["--set", "log_with=[bogus]"], "log_with.0: Input should be"),
    "2^64 images per epoch": (["--set", "train.images_per_epoch=18446744073709551616"],
                              "train.images_per_epoch: Input should be less than or equal to 2147483647"),
    "a count beyond 2^53": (["--set", "checks.first_step=100000000000000000"], "checks.first_step: Input should be"),
    "a control character": (["--set", "train.epochs=\x01"], "--set train.epochs: value '\\x01' holds a control"),
    "base-60 epochs (YAML 1.1)": (["--set", "train.epochs=12:30"], "train.epochs: Input should be a valid integer"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS), ids=list(BAD_CONFIGS))
@pytest.mark.parametrize("command", ["run", "plan", "slurm submit"])
def test_a_bad_value_is_one_line_before_anything_is_written(tmp_path, case, command):
    args, expected = BAD_CONFIGS[case]
    config = write_config(tmp_path, ONE)
    proc = harness(*command.split(), "--config", str(config), "--results-dir", str(tmp_path / "r"), *args,
                   *(["--dry-run"] if command == "slurm submit" else []))
    assert expected in one_line_error(proc) and not (tmp_path / "r").exists()


@pytest.mark.parametrize("kind", ["a FIFO", "a character device", "the null device", "a folder"])
def test_a_config_that_is_not_a_regular_file_is_refused_without_reading_it(tmp_path, kind):
    """A FIFO would block, /dev/zero read without end, /dev/null read as an empty config."""
    where = {"a character device": "/dev/zero", "the null device": "/dev/null", "a folder": str(tmp_path)}.get(kind)
    if where is None:
        where = str(tmp_path / "fifo")
        os.mkfifo(where)
    for command in ("plan", "run"):
        line = one_line_error(harness(command, "--config", where, "--results-dir", str(tmp_path / "r"), timeout=120))
        assert f"config file {where} is not a regular file (" in line and not (tmp_path / "r").exists()


def test_a_control_character_in_a_config_file_is_one_line(tmp_path):
    config = tmp_path / "bell.yaml"
    config.write_text("name: bell\ntrain:\n  epochs: 3\x07\n")
    line = one_line_error(harness("plan", "--config", str(config)))
    assert "not readable YAML (unacceptable character #x0007" in line


def test_a_section_given_twice_is_refused(tmp_path):
    config = tmp_path / "twice.yaml"
    config.write_text("name: twice\ntrain:\n  epochs: 3\nsweep:\n  train.seed: [0]\ntrain:\n  batch_size: 64\n")
    assert "'train' is given twice (line 6); keep one" in one_line_error(harness("plan", "--config", str(config)))


def test_slurm_refuses_a_process_count_that_does_not_divide_the_batch(tmp_path):
    config = write_config(tmp_path, {**ONE, "sweep": {"train.batch_size": [64, 96]}})
    proc = harness("slurm", "submit", "--config", str(config), "--results-dir", str(tmp_path / "r"),
                   "--gpus-per-task", "3", "--dry-run")
    assert "train.batch_size=64" in one_line_error(proc) and "not divisible by 3" in proc.stderr


def test_an_alias_bomb_and_a_huge_config_are_refused_quickly_and_in_one_line(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    lines = ["name: bomb", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join(f'*a{i - 1}' for _ in range(10))}]" for i in range(1, 12)]
    lines += ["model:", "  activation: *a11"]
    bomb.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    assert "aliases (*name) expand to more than 100,000 values" in one_line_error(harness("plan", "--config",
                                                                                          str(bomb)))
    assert time.monotonic() - started < 30
    huge = tmp_path / "huge.yaml"
    huge.write_text("name: huge\n# " + "x" * (50 * 2**20) + "\n")
    assert "at most 1,048,576 (1 MiB)" in one_line_error(harness("plan", "--config", str(huge)))
    long_value = tmp_path / "long.yaml"
    long_value.write_text("name: long\nmodel:\n  activation: " + "y" * 100_000 + "\n")
    line = one_line_error(harness("plan", "--config", str(long_value)))
    assert "model.activation" in line and len(line) < 400  # the value is shown as a short prefix


def denied(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The harness as root without root's power to ignore file permissions."""
    full = {**os.environ, "HARNESS_DATA_DIR": str(DATA_DIR), **(env or {})}
    return subprocess.run([*NO_OVERRIDE, str(HARNESS), *args], env=full, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux's setpriv (Debian: util-linux)")
def test_unreadable_data_and_unwritable_results_are_one_line(tmp_path):
    data = tmp_path / "mnist"
    data.mkdir()
    for name in (p.name for p in DATA_DIR.glob("*.gz")):
        shutil.copy(DATA_DIR / name, data / name)
    config = write_config(tmp_path, ONE)
    (data / "t10k-labels-idx1-ubyte.gz").chmod(0)
    line = one_line_error(denied("run", "--config", str(config), "--results-dir", str(tmp_path / "r"),
                                 "--data-dir", str(data)))
    assert "t10k-labels-idx1-ubyte.gz cannot be read" in line and "Permission denied" in line
    (data / "t10k-labels-idx1-ubyte.gz").chmod(0o644)
    data.chmod(0)
    line = one_line_error(denied("run", "--config", str(config), "--results-dir", str(tmp_path / "r"),
                                 "--data-dir", str(data)))
    assert f"cannot read the folder {data} (permission denied)" in line
    data.chmod(0o755)
    results = tmp_path / "ro"
    results.mkdir()
    results.chmod(0o555)
    line = one_line_error(denied("run", "--config", str(config), "--results-dir", str(results), "--data-dir",
                                 str(data)))
    assert f"--results-dir: cannot write in {results}" in line


def test_a_report_path_below_a_file_names_the_option(tmp_path):
    sweep = tmp_path / "s"
    write_cell(sweep, {"train": {"batch_size": 64, "seed": 0, "images_per_epoch": 640, "epochs": 1}},
               epoch_rows(64, 10, 1e-4, [0.9], [0.9]))
    (tmp_path / "file").write_text("x")
    line = one_line_error(harness("report", str(sweep), "-o", str(tmp_path / "file" / "r.html")))
    assert line.startswith("harness: error: -o ") and "--results-dir" not in line


def test_the_dry_run_line_pastes_safely_into_a_shell(tmp_path):
    from harness.cluster.slurm import shell_line

    marker = tmp_path / "expanded"
    line = shell_line(["echo", "--set", f"name=$(touch {marker})", "--array-index", "$SLURM_ARRAY_TASK_ID"])
    out = subprocess.run(["bash", "-c", line], env={**os.environ, "SLURM_ARRAY_TASK_ID": "7"}, capture_output=True,
                         text=True)
    assert out.stdout.strip() == f"--set name=$(touch {marker}) --array-index 7" and not marker.exists()


def test_nothing_already_written_changes_when_a_command_is_refused(tmp_path):
    config = write_config(tmp_path, ONE)
    sweep = tmp_path / "r" / "small"
    write_cell(sweep, {"train": {"batch_size": 64, "seed": 0, "images_per_epoch": 640, "epochs": 1}},
               epoch_rows(64, 10, 1e-4, [0.9], [0.9]))
    before = snapshot(sweep)
    for args in (["run", "--set", "optim.lr=.inf"], ["plan", "--set", "train.seed=1e23"]):
        one_line_error(harness(args[0], "--config", str(config), "--results-dir", str(tmp_path / "r"), *args[1:]))
    assert snapshot(sweep) == before


def test_a_config_or_a_set_value_nested_500_deep_is_one_line(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: deep\nmodel: " + "[" * 500 + "]" * 500 + "\n")
    assert "nested more than 64 deep" in one_line_error(harness("plan", "--config", str(deep)))
    proc = harness("plan", "--set", "model.activation=" + "[" * 500 + "]" * 500)
    assert "--set model.activation: nested more than 64 deep" in one_line_error(proc)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux's setpriv (Debian: util-linux)")
def test_unreadable_cell_and_sweep_folders_are_one_line_in_every_command(tmp_path):
    cell = golden_folder(tmp_path)
    sweep = tmp_path / "golden"
    config = write_config(tmp_path, {**ONE, "name": "golden"})
    commands = (["status", str(sweep)], ["report", str(sweep), "-o", str(tmp_path / "r.html")],
                ["plan", "--config", str(config), "--results-dir", str(tmp_path)],
                ["run", "--config", str(config), "--results-dir", str(tmp_path), "--no-report"])
    for locked in (cell, sweep):
        locked.chmod(0)
        try:
            for args in commands:
                line = one_line_error(denied(*args))
                assert "cannot read" in line and "(Permission denied)" in line and "fix its permissions" in line
        finally:
            locked.chmod(0o755)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux's setpriv (Debian: util-linux)")
def test_an_unwritable_cell_folder_whose_record_must_be_kept_aside_is_one_line(tmp_path):
    config = write_config(tmp_path, ONE)
    results = tmp_path / "r"
    cell_id = harness("plan", "--config", str(config), "--results-dir", str(results)).stdout.splitlines()[1].split()[1]
    cell = results / "small" / cell_id
    cell.mkdir(parents=True)
    (cell / "result.json").write_text("[1, 2]")  # not a record: run keeps it aside before training again
    cell.chmod(0o555)
    try:
        line = one_line_error(denied("run", "--config", str(config), "--results-dir", str(results), "--no-report"))
    finally:
        cell.chmod(0o755)
    assert "cannot keep" in line and "aside" in line and "writable" in line
    assert (cell / "result.json").read_text() == "[1, 2]"


@pytest.mark.slow
def test_a_second_config_into_one_folder_is_refused_and_forced_cells_are_kept_apart(tmp_path):
    config = write_config(tmp_path, ONE)
    results = tmp_path / "r"
    assert harness("run", "--config", str(config), "--results-dir", str(results), "--no-report").returncode == 0
    plan_before = (results / "small" / "plan.json").read_bytes()
    other = ["--set", "train.untimed_steps=2", "--set", "model.activation=softplus"]
    line = one_line_error(harness("run", "--config", str(config), "--results-dir", str(results), *other))
    assert "planned with another config (model.activation: \"relu\" -> \"softplus\", train.untimed_steps: 3 -> 2)" \
        in line and "--force" in line
    assert (results / "small" / "plan.json").read_bytes() == plan_before
    # predict's --force vouches for its doubts, never for another config; nor does harness.sweep
    lr = ["--set", "optim.lr=1e-2"]
    line = one_line_error(harness("predict", "--config", str(config), "--results-dir", str(results), "--verify",
                                  "--force", *lr, "--set", "sweep.train.batch_size=[64,128,256]"))
    assert "planned with another config (optim.lr: 0.001 -> 0.01)" in line and "predict's --force" in line
    with pytest.raises(ConfigError, match=r"planned with another config \(optim.lr: 0.001 -> 0.01\)"):
        harness_api.sweep(SweepSpec.from_config(config, ["optim.lr=1e-2"], results_dir=results))
    assert (results / "small" / "plan.json").read_bytes() == plan_before and len(collect([results]).cells) == 1
    # extending the grid is the same config
    wider = harness("run", "--config", str(config), "--results-dir", str(results), "--no-report",
                    "--set", "sweep.train.batch_size=[256,512]")
    assert wider.returncode == 0, wider.stderr
    forced = harness("run", "--config", str(config), "--results-dir", str(results), *other, "--force", "--no-report")
    assert forced.returncode == 0, forced.stderr
    found = collect([results / "small"])
    assert len(found.cells) == 3 and found.cells["variant"].nunique() == 2  # never two seeds of one cell
    assert any("differ in model.activation, train.untimed_steps" in w for w in found.warnings), found.warnings


@pytest.mark.parametrize("flag,value,expected", [("--tolerance", "nan", "input should be a finite number"),
                                                 ("--tolerance", "-5", "greater than or equal to 0"),
                                                 ("--tolerance", "inf", "finite number"),
                                                 ("--target", "-1", "greater than 0")])
def test_report_flags_obey_the_config_s_bounds(tmp_path, flag, value, expected):
    golden_folder(tmp_path)
    line = one_line_error(harness("report", str(tmp_path / "golden"), "-o", str(tmp_path / "r.html"), flag, value))
    assert line.startswith(f"harness: error: {flag} ") and expected in line
    assert not (tmp_path / "r.html").exists()


def test_a_plan_of_a_million_cells_is_refused_at_once_in_one_line(tmp_path):
    started = time.monotonic()
    proc = harness("plan", "--set", f"sweep.train.seed=[{','.join(map(str, range(1000)))}]",
                   "--set", f"sweep.optim.lr=[{','.join(f'{1e-4 * (1 + i / 1000):.6g}' for i in range(1000))}]",
                   "--results-dir", str(tmp_path))
    assert "a sweep may have at most 10,000" in one_line_error(proc) and time.monotonic() - started < 30
    assert not any(tmp_path.iterdir())
