"""The command line as a user meets it: every command ends with the answer (a line, or one JSON
object with --json), the commands that do not train never load torch, and the help says what it
should."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, harness, write_config
from records import epoch_rows, write_cell

ANSWER = ("sweet spot: batch ", "no sweet spot: ")  # the small sweep may or may not reach 0.97


@pytest.mark.parametrize("args", [["--help"], ["plan", "--config", "configs/default.yaml"],
                                  ["status", "results/lr_tuned"], ["report", "results/lr_tuned", "-o", "{tmp}/r.html"]])
def test_the_commands_that_do_not_train_never_load_torch(args, tmp_path):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    script = (f"import sys\nfrom harness.cli import main\ntry:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
              "print('torch loaded' if 'torch' in sys.modules else 'no torch')")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip().endswith("no torch"), proc.stdout[-500:] + proc.stderr[-500:]


@pytest.mark.slow
def test_run_report_and_status_end_with_the_answer(small_sweep, tmp_path):
    printed = (small_sweep.parent.parent / "run.out").read_text().strip().splitlines()
    assert printed[-1].startswith(ANSWER) and f"| report: {small_sweep / 'report.html'}" in printed[-1]
    assert "1 seed, lr not tuned" in printed[-1]
    report = harness("report", str(small_sweep), "-o", str(tmp_path / "r.html"))
    assert report.returncode == 0 and report.stdout.strip().splitlines()[-1].startswith(ANSWER)
    as_json = harness("report", str(small_sweep), "-o", str(tmp_path / "r.html"), "--json")
    document = json.loads(as_json.stdout)  # stdout holds the answer alone
    (found,) = document["sweeps"][0]["answers"]
    assert found["sweet_spot"] in (64, 256, None) and found["target"] == 0.97 and found["batch_sizes"] == [64, 256]
    assert document["report"] == str(tmp_path / "r.html")
    status = harness("status", str(small_sweep))
    lines = status.stdout.strip().splitlines()
    assert [line.split("-")[0] for line in lines[1:3]] == ["bs64", "bs256"]  # by batch size, not as text
    assert lines[-1].startswith(ANSWER)
    assert json.loads(harness("status", str(small_sweep), "--json").stdout)["sweeps"][0]["answers"][0]["seeds"] == 1


def test_without_a_sweet_spot_the_line_says_what_to_change(tmp_path):
    sweep = tmp_path / "short"
    for batch in (32, 128):
        write_cell(sweep, {"train": {"batch_size": batch}}, epoch_rows(batch, 100, 1e-5, [0.90, 0.93], [0.9, 0.93]))
    proc = harness("report", str(sweep), "-o", str(tmp_path / "r.html"))
    assert proc.stdout.strip().splitlines()[-1].startswith(
        "no sweet spot: no batch size reached 0.97 validation accuracy in every seed; raise train.epochs or lower "
        "report.target_accuracy")


def test_status_sorts_cells_by_batch_size_then_seed(tmp_path):
    sweep = tmp_path / "order"
    for batch, seed in ((2048, 0), (32, 1), (128, 0), (32, 0)):
        write_cell(sweep, {"train": {"batch_size": batch, "seed": seed}}, epoch_rows(batch, 10, 1e-5, [0.98], [0.98]))
    lines = harness("status", str(sweep)).stdout.splitlines()[1:5]
    assert [tuple(line.split("-")[:2]) for line in lines] == [("bs32", "seed0"), ("bs32", "seed1"), ("bs128", "seed0"),
                                                             ("bs2048", "seed0")]


RAW = """
import os
import torch
def build(options):
    os.write(1, b"raw bytes on file descriptor 1\\n")
    print("a print of the user's")
    return torch.nn.Linear(8, 3)
def load(options):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 8, generator=g), torch.randint(3, (200,), generator=g)
    return {"train": (x[:150], y[:150]), "test": (x[150:], y[150:])}
"""


def test_json_is_the_whole_of_stdout_for_an_answer_a_status_in_progress_and_an_error(tmp_path):
    (tmp_path / "mine.py").write_text(RAW)
    config = write_config(tmp_path, {"name": "raw", "workload": {"model": "mine.py:build", "data": "mine.py:load"},
                                     "data": {"val_size": 20, "train_eval_size": 20}, "train": {"epochs": 1},
                                     "sweep": {"train.batch_size": [8, 16]}})
    run = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "r"), "--json")
    assert run.returncode == 0 and "raw bytes on file descriptor 1" in run.stderr, run.stderr[-2000:]
    assert json.loads(run.stdout)["sweeps"][0]["sweep"] == "raw"  # the answer alone, the user's writes on stderr
    sweep = tmp_path / "order"
    write_cell(sweep, {"train": {"batch_size": 32}}, epoch_rows(32, 10, 1e-5, [0.98], [0.98]))
    running = sweep / write_cell(sweep, {"train": {"batch_size": 64}}, epoch_rows(64, 10, 1e-5, [0.5], [0.5]))
    record = json.loads((running / "result.json").read_text())
    (running / "result.json").write_text(json.dumps({**record, "status": "running", "summary": None}))
    status = harness("status", str(sweep), "--json")
    found = json.loads(status.stdout)
    assert status.returncode == 0 and found["done"] == 1, status.stdout[-2000:] + status.stderr[-2000:]
    assert [c["status"] for c in found["cells"]] == ["done", "running"]
    missing = harness("status", str(tmp_path / "nowhere"), "--json")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert json.loads(missing.stdout) == {"error": missing.stderr.strip().split(": ", 2)[-1], "exit_code": 2}


def test_help_says_what_it_should(tmp_path):
    submit = harness("slurm", "submit", "--help").stdout
    assert "%A_%a.out" in submit and "%%" not in submit and "--data-dir" in submit
    report = " ".join(harness("report", "--help").stdout.split())  # argparse wraps lines
    assert "results folders (a sweep's" in report and "default: report.html in the working folder" in report
    launcher = subprocess.run([sys.executable, str(REPO / "harness" / "run.py"), "--help"], capture_output=True,
                              text=True, timeout=120).stdout
    assert launcher.startswith("usage: accelerate launch") and "--predict" in launcher
    assert "harness run [" not in launcher


def test_a_typo_in_set_is_blamed_on_the_set(tmp_path):
    config = write_config(tmp_path, {"name": "t"})
    proc = harness("plan", "--config", str(config), "--set", "train.batchsize=3")
    assert proc.returncode == 2 and proc.stderr.startswith("harness: error: --set train.batchsize: unknown key")


def test_slurm_tasks_get_the_data_folder_named_at_submit(tmp_path):
    """Compute nodes are often offline: --data-dir reaches every task's command line."""
    config = write_config(tmp_path, {"name": "d", "sweep": {"train.batch_size": [64, 128]}})
    proc = harness("slurm", "submit", "--config", str(config), "--results-dir", str(tmp_path / "r"),
                   "--data-dir", str(tmp_path / "images"), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert f"--data-dir {tmp_path / 'images'}" in proc.stdout
