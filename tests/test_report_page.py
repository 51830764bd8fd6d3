"""The report page on hand-made results folders with known answers, and in a real browser."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import harness
from records import epoch_rows, write_cell, write_plan
from test_report import as_number, parse

TARGET = 0.97


def make_cell(sweep_dir: Path, sweep: str, batch: int, seed: int, tpi: float, val: list[float], test: list[float],
              processes: int = 1, status: str = "done", error: str | None = None) -> str:
    """One cell in the real schema (tests/records.py), accuracies and speed chosen by the test."""
    steps = 1000 // batch or 1
    settings = {"train": {"batch_size": batch, "seed": seed, "images_per_epoch": steps * batch,
                          "epochs": max(1, len(val)), "warmup_steps": 0}}
    return write_cell(sweep_dir, settings, epoch_rows(batch, steps, tpi, val, test), status, error,
                      {"device_name": "Test GPU", "num_processes": processes}, sweep=sweep)


def known_sweep(root: Path, name: str = "known", processes: int = 1, speed: float = 1.0) -> Path:
    """bs16 most accurate but slow; bs64 nearly as accurate and fastest to target; bs256 fastest per
    image but needs 4 epochs; bs1024 never reaches the target; bs4 collapses (0.96 -> 0.40)."""
    sweep = root / name
    make_cell(sweep, name, 4, 0, 80e-6 * speed, [0.96, 0.95, 0.50], [0.96, 0.95, 0.40], processes)
    make_cell(sweep, name, 16, 0, 40e-6 * speed, [0.972, 0.979, 0.981], [0.97, 0.978, 0.980], processes)
    make_cell(sweep, name, 64, 0, 12e-6 * speed, [0.971, 0.977, 0.978], [0.969, 0.976, 0.977], processes)
    make_cell(sweep, name, 256, 0, 5e-6 * speed, [0.90, 0.95, 0.965, 0.976], [0.89, 0.95, 0.96, 0.976], processes)
    make_cell(sweep, name, 1024, 0, 4.9e-6 * speed, [0.80, 0.90, 0.93], [0.80, 0.90, 0.93], processes)
    return sweep


def test_known_answers_collapse_and_disagreement(tmp_path):
    sweep = known_sweep(tmp_path)
    out = tmp_path / "report.html"
    proc = harness("report", str(sweep), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    html = out.read_text()
    # within 0.005 of the best (0.980): bs16 (0.980), bs64 (0.977) and bs256 (0.976); bs64 is at the
    # target after 1 epoch of 15 steps x 64 x 12e-6 s, bs16 after 1 epoch of 62 x 16 x 40e-6 s
    assert 'data-batch-size="64"' in html and "Sweet spot: batch size 64" in html
    assert "by more than 5% beyond batch size 256." in html  # the simpler rule: 1024 is only 2% faster
    assert "Steps to target were read at epoch ends" in html  # no evals.csv: epoch resolution, said
    assert "The rules disagree: batch 256 still trains faster per image" in html
    parsed = parse(html)
    collapse = parsed.tables[1]
    assert [(as_number(r["batch_size"]), as_number(r["peak_epoch"]), as_number(r["final_test_accuracy"]))
            for r in collapse] == [(4, 1, 0.4)]
    assert as_number(collapse[0]["drop"]) == pytest.approx(0.56)


def test_unfinished_and_missing_cells_are_listed(tmp_path):
    sweep = known_sweep(tmp_path)
    make_cell(sweep, "known", 2048, 0, 1e-6, [], [], status="failed", error="RuntimeError: boom")
    (never_ran,) = write_plan(sweep, {"sweep": {"train.batch_size": [8]}}, list_cells=True)
    out = tmp_path / "r.html"
    assert harness("report", str(sweep), "-o", str(out)).returncode == 0
    html = out.read_text()
    assert "RuntimeError: boom" in html and "failed" in html
    assert f"{never_ran.id} (train.batch_size=8)" in html


def test_strings_from_results_are_escaped(tmp_path):
    evil = "<script>alert(1)</script>"
    sweep = tmp_path / "evil"
    make_cell(sweep, evil, 64, 0, 1e-5, [0.98], [0.98], status="failed", error=evil)
    make_cell(sweep, evil, 128, 0, 1e-5, [0.98], [0.98])
    out = tmp_path / "r.html"
    assert harness("report", str(sweep), "-o", str(out)).returncode == 0
    html = out.read_text()
    assert evil not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<script>") == 1  # the page's own sorting script, nothing else


def test_several_folders_side_by_side_with_scaling(tmp_path):
    one = known_sweep(tmp_path / "one-gpu", "known", processes=1, speed=1.0)
    four = known_sweep(tmp_path / "four-gpus", "known", processes=4, speed=0.5)
    out = tmp_path / "r.html"
    assert harness("report", str(one), str(four), "-o", str(out)).returncode == 0
    html = out.read_text()
    assert html.count('id="recommendation-') == 2 and "Results folders side by side" in html
    parsed = parse(html)
    compare = parsed.tables[parsed.ids.index("compare")]
    assert len(compare) == 2 * 5
    assert {r["source"] for r in compare} == {"one-gpu/known", "four-gpus/known"}  # same names: parent shown
    assert "Scaling with processes" in html


@pytest.mark.slow
def test_report_in_a_real_browser(tmp_path):
    """Headless Chromium opens the file: no console errors, every figure decodes, the first screen
    has the answer sentence and its figure, and sorting reorders the table."""
    from browser import chromium, first_screen
    from selenium.webdriver.common.by import By

    sweep = known_sweep(tmp_path)
    out = tmp_path / "report.html"
    assert harness("report", str(sweep), "-o", str(out)).returncode == 0
    driver = chromium(tmp_path / "profile")
    try:
        driver.get(out.as_uri())
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        widths = driver.execute_script("return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
        # the first screen's figure, 4 more of the sweep (RSS does not vary: no memory figure), bs4's collapse curves
        assert len(widths) == 6 and all(w > 0 for w in widths)
        assert driver.find_element(By.ID, "collapse-verdict-1").text.startswith("1 of 5 cells collapsed")
        recommendation = driver.find_element(By.ID, "recommendation-1-1")
        assert recommendation.get_attribute("data-batch-size") == "64" and "batch size 64" in recommendation.text
        answer = driver.find_element(By.ID, "answer-1-1")
        assert answer.text.startswith("Sweet spot: batch size 64") and "validation accuracy in" in answer.text
        figure = driver.find_element(By.CSS_SELECTOR, "#first-figure-1 img")
        assert figure.get_attribute("alt") == "Time to target vs batch size" and figure.location["y"] < 1400
        assert driver.find_element(By.CSS_SELECTOR, ".next code").text.startswith("harness run --config")

        def batch_column():
            return [int(td.get_attribute("data-value"))
                    for td in driver.find_elements(By.CSS_SELECTOR, "#cells-1 tbody td[data-key=batch_size]")]

        assert batch_column() == [4, 16, 64, 256, 1024]
        headers = {th.text: th for th in driver.find_elements(By.CSS_SELECTOR, "#cells-1 thead th")}
        headers["batch"].click()
        headers["batch"].click()  # second click: descending
        assert batch_column() == [1024, 256, 64, 16, 4]
        headers["time/image"].click()
        assert batch_column() == [1024, 256, 64, 16, 4]  # fastest per image first
        box = driver.find_element(By.CSS_SELECTOR, "input.filter")
        box.send_keys("bs64")
        visible = [r for r in driver.find_elements(By.CSS_SELECTOR, "#cells-1 tbody tr") if r.is_displayed()]
        assert len(visible) == 1
    finally:
        driver.quit()
    first_screen(out, tmp_path / "first-screen.png")
    assert (tmp_path / "first-screen.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
