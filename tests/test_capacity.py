"""Micro-batches with accumulation, and `harness capacity`: the largest micro-batch that fits,
found under a real memory limit on the process (RLIMIT_DATA: a CPU's stand-in for device memory)
and checked against real training runs on both sides of it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from conftest import BIN, DATA_DIR, harness, read_json, write_config

from harness.errors import ConfigError
from harness.training import data, images, workloads
from harness.training.bench import engine_loop, settings_for
from harness.training.capacity_job import micro_batch_for, parse_limits
from harness.training.data import IndexStream
from harness.training.engine import build_engine

STEPS = 20
# a process with torch imported and MNIST loaded holds about 1.1 GiB of data mappings; this leaves
# room for micro-batches of a few thousand examples of the MLP (about 23 KB each)
LIMIT = "1.3GiB"
LIMIT_EACH_OF_TWO = "1.2GiB"  # two processes: a micro-batch of up to 16,384 each (a batch of 32,768)


@pytest.fixture(scope="module")
def mnist_on_cpu():
    torch.set_flush_denormal(True)
    accelerator = Accelerator(cpu=True)
    return accelerator, data.to_device(images.load_mnist(images.find_mnist(DATA_DIR)), 5000, accelerator.device)


def test_accumulated_micro_batches_take_the_step_one_batch_takes(mnist_on_cpu):
    """4 micro-batches of 64, their gradients accumulated, against one batch of 256: the MLP has no
    BatchNorm, so only the order of the sums differs (a BatchNorm model's statistics would be each
    micro-batch's, not the batch's)."""
    accelerator, splits = mnist_on_cpu
    settings = settings_for(256, "eager")
    order = IndexStream(len(splits.train_y), "shuffle", seed=0).next(STEPS * 256)
    whole = build_engine(settings, accelerator, splits, workloads.builtin(settings))
    micro = build_engine(settings, accelerator, splits, workloads.builtin(settings), micro_batch=64)
    assert (whole.accumulation, micro.accumulation, micro.micro_batch) == (1, 4, 64)
    run_whole, _ = engine_loop(accelerator, splits, order, settings, record=True, engine=whole)
    run_micro, _ = engine_loop(accelerator, splits, order, settings, record=True, engine=micro)
    assert len(run_micro.losses) == STEPS
    assert run_micro.losses == pytest.approx(run_whole.losses, abs=1e-5)
    assert run_whole.losses[0] - run_whole.losses[-1] > 0.1  # it trained
    for a, b in zip(whole.eval_model.parameters(), micro.eval_model.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_micro_batch_for_each_setting():
    assert micro_batch_for(None, 256, None) == 256
    assert micro_batch_for(64, 256, None) == 64 and micro_batch_for(512, 256, None) == 256
    doc = {"safe_micro_batch_size": 300, "bounded_by_need": False}
    assert micro_batch_for("auto", 1000, doc) == 250  # the largest divisor within the safe size
    assert micro_batch_for("auto", 256, doc) == 256
    assert micro_batch_for("auto", 256, doc, failed_micro=256) == 128  # ran out of memory at 256 before
    assert micro_batch_for("auto", 4096, {"safe_micro_batch_size": 10, "bounded_by_need": True}) == 4096
    assert parse_limits("2GiB", 2) == [2 * 2**30] * 2 and parse_limits("1.5GiB,1GiB", 2) == [1.5 * 2**30, 2**30]
    with pytest.raises(ConfigError, match="--memory-limit"):
        parse_limits("2 parsecs", 1)


def test_a_micro_batch_that_does_not_divide_the_batch_is_refused(tmp_path):
    train = {"epochs": 1, "images_per_epoch": 960, "micro_batch_size": 48}
    config = write_config(tmp_path, {"name": "m", "train": train, "sweep": {"train.batch_size": [64]}})
    done = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "r"), timeout=300)
    assert done.returncode == 2, done.stderr
    assert "train.micro_batch_size=48" in done.stderr and "divisor" in done.stderr
    assert not (tmp_path / "r" / "m").exists() or not list((tmp_path / "r" / "m").glob("*/result.json"))


def _capacity(tmp_path: Path, name: str, limit: str, processes: int, batch: int) -> dict:
    config = write_config(tmp_path, {"name": name, "sweep": {"train.batch_size": [batch]}}, f"{name}.yaml")
    args = ["capacity", "--config", str(config), "--results-dir", str(tmp_path), "--memory-limit", limit]
    env = {**os.environ, "HARNESS_DATA_DIR": str(DATA_DIR)}
    if processes == 1:
        done = harness(*args, timeout=900)
    else:
        cmd = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", str(processes), "-m",
               "harness.cli", *args]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return read_json(tmp_path / name / "capacity.json")


def _trains(tmp_path: Path, batch: int, limit_bytes: int) -> str:
    """A real cell of `batch` (2 steps, its evaluation and records) under the same limit, in a fresh process."""
    config = write_config(tmp_path, {"name": f"brute{batch}", "train": {
        "epochs": 1, "images_per_epoch": 2 * batch, "untimed_steps": 0, "diagnostics": "off"},
        "data": {"train_eval_size": 1000}, "sweep": {"train.batch_size": [batch]}}, f"brute{batch}.yaml")
    cmd = ["prlimit", f"--data={limit_bytes}", str(BIN / "harness"), "run", "--config", str(config), "--results-dir",
           str(tmp_path), "--no-report", "--quiet"]
    # the same fixed mmap threshold as the search: freed blocks unmapped, not kept in a growing heap
    env = {**os.environ, "HARNESS_DATA_DIR": str(DATA_DIR), "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / f"brute{batch}").glob("*/result.json")]
    return record["status"]


@pytest.mark.slow
def test_capacity_is_within_one_bisection_step_of_the_largest_batch_that_trains(tmp_path):
    doc = _capacity(tmp_path, "one", LIMIT, 1, 32768)
    found, failed = doc["largest_fits"], doc["first_fails"]
    assert not doc["bounded_by_need"] and failed is not None and found < failed
    step = failed - found
    assert step <= max(1, found // 16)  # the bisection's resolution, as capacity.json states it
    trials = doc["trials"]
    assert [t["micro_batch_size"] for t in trials][:3] == [1, 2, 4]  # doubling from 1
    assert all(t["fits"] == (t["micro_batch_size"] <= found) for t in trials)
    assert any("can't allocate memory" in (t["error"] or "") for t in trials if not t["fits"])
    assert doc["safe_micro_batch_size"] == int(found * 0.9) and doc["memory_model"]["per_example_bytes"] > 0
    limit = parse_limits(LIMIT, 1)[0]
    # a cell of that batch trains under the limit one step below it, and runs out one step above it
    assert _trains(tmp_path, found - step, limit) == "done"
    assert _trains(tmp_path, failed + step, limit) == "oom"


@pytest.mark.slow
def test_two_processes_agree_on_the_lower_limit_whichever_rank_has_it(tmp_path):
    low_second = _capacity(tmp_path, "low1", f"2GiB,{LIMIT_EACH_OF_TWO}", 2, 32768)
    low_first = _capacity(tmp_path, "low0", f"{LIMIT_EACH_OF_TWO},2GiB", 2, 32768)
    assert low_second["num_processes"] == 2 and not low_second["bounded_by_need"]
    for doc, binding in ((low_second, 1), (low_first, 0)):
        failures = [t for t in doc["trials"] if not t["fits"]]
        assert failures and all(t["fits_by_rank"][binding] is False for t in failures)
        assert any(t["fits_by_rank"][1 - binding] for t in failures)  # the other rank alone would have fitted
    step = max(d["first_fails"] - d["largest_fits"] for d in (low_second, low_first))
    assert abs(low_second["largest_fits"] - low_first["largest_fits"]) <= step


@pytest.mark.slow
def test_a_cell_out_of_memory_trains_with_accumulation_on_its_rerun(tmp_path):
    """capacity.json from an unlimited search says the whole batch fits; under a limit the cell runs
    out of memory and says with what micro-batch; its rerun, with micro_batch_size auto, accumulates."""
    settings = {"name": "auto", "train": {"epochs": 1, "images_per_epoch": 2 * 16384, "untimed_steps": 0,
                                          "diagnostics": "off", "micro_batch_size": "auto"},
                "data": {"train_eval_size": 1000}, "sweep": {"train.batch_size": [16384]}}
    config = write_config(tmp_path, settings)
    unlimited = harness("capacity", "--config", str(config), "--results-dir", str(tmp_path), timeout=900)
    assert unlimited.returncode == 0 and "no cell needs accumulation" in unlimited.stderr + unlimited.stdout
    limit = parse_limits(LIMIT, 1)[0]
    cmd = ["prlimit", f"--data={limit}", str(BIN / "harness"), "run", "--config", str(config), "--results-dir",
           str(tmp_path), "--no-report", "--quiet"]
    env = {**os.environ, "HARNESS_DATA_DIR": str(DATA_DIR), "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    (path,) = (tmp_path / "auto").glob("*/result.json")
    record = json.loads(path.read_text())
    assert first.returncode == 1 and record["status"] == "oom", first.stderr[-2000:]
    assert record["oom_micro_batch_size"] == 16384
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    record = json.loads(path.read_text())
    assert again.returncode == 0 and record["status"] == "done", again.stderr[-2000:]
    assert (record["summary"]["micro_batch_size"], record["summary"]["accumulation_steps"]) == (8192, 2)
    page = tmp_path / "report.html"
    built = harness("report", str(tmp_path / "auto"), "-o", str(page), "--target", "0.3", timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    html = page.read_text()
    assert "The sweet spot needs accumulation here: batch 16384 = 2 x 8192 micro-batches." in html
    assert "capacity.json&#39;s trials" in html or "capacity.json's trials" in html  # the memory figure reads it
    shot = _memory_figure_in_a_browser(page, tmp_path)
    if os.environ.get("HARNESS_KEEP_SCREENSHOT"):  # docs/capacity-memory-figure.png comes from here
        shutil.copy(shot, os.environ["HARNESS_KEEP_SCREENSHOT"])


def _memory_figure_in_a_browser(page, tmp_path):
    """Headless Chromium shows the memory figure decoded, without console errors; its screenshot."""
    from browser import chromium
    from selenium.webdriver.common.by import By

    driver = chromium(tmp_path / "profile")
    try:
        driver.get(page.as_uri())
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        (figure,) = [img for img in driver.find_elements(By.TAG_NAME, "img")
                     if img.get_attribute("alt") == "Peak memory vs batch size"]
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", figure) > 0
        driver.execute_script("arguments[0].scrollIntoView()", figure)
        shot = tmp_path / "memory-figure.png"
        figure.screenshot(str(shot))
    finally:
        driver.quit()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return shot


def test_harness_capacity_from_python_answers_what_the_command_writes(tmp_path):
    """harness.capacity(spec) runs the command's search in this process (no limit: every micro-batch
    the grid needs fits) and returns the document it wrote."""
    import harness

    settings = {"name": "py", "train": {"epochs": 1, "images_per_epoch": 512, "micro_batch_size": "auto"},
                "sweep": {"train.batch_size": [256]}}
    spec = harness.SweepSpec.from_config(write_config(tmp_path, settings), results_dir=tmp_path, data_dir=DATA_DIR)
    doc = harness.capacity(spec)
    assert doc == read_json(tmp_path / "py" / "capacity.json")
    assert doc["bounded_by_need"] and doc["largest_fits"] == 256 and [t["micro_batch_size"] for t in doc["trials"]] == [
        1, 2, 4, 8, 16, 32, 64, 128, 256]
