"""The report: built from real results, parsed back, every number equal to the result files."""

from __future__ import annotations

import csv
import json
import re
import shutil
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from conftest import harness, read_json

from harness.analysis.crossing import crossing
from harness.analysis.per_batch import ACCURACY, add_time_to_target, by_batch_size, flat_point


class TableParser(HTMLParser):
    """Rows of every <table class="data"> as {data-key: data-value}, and every src/href seen."""

    def __init__(self):
        super().__init__()
        self.tables, self.ids, self.links, self._row = [], [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [attrs[a] for a in ("src", "href") if a in attrs]
        if tag == "table" and attrs.get("class") == "data":
            self.tables.append([])
            self.ids.append(attrs.get("id"))
        elif tag == "tr" and self.tables:
            self._row = {}
        elif tag == "td" and self._row is not None and "data-key" in attrs:
            self._row[attrs["data-key"]] = attrs["data-value"]

    def handle_endtag(self, tag):
        if tag == "tr" and self._row:
            self.tables[-1].append(self._row)
            self._row = None
        if tag == "table":
            self._row = None


def parse(html: str) -> TableParser:
    parser = TableParser()
    parser.feed(html)
    return parser


def as_number(text: str):
    return None if text == "" else json.loads(text)


@pytest.mark.slow
def test_report_numbers_equal_the_result_files(small_sweep, tmp_path):
    out = tmp_path / "report.html"
    proc = harness("report", str(small_sweep), "-o", str(out), "--target", "0.9")
    assert proc.returncode == 0, proc.stderr
    html = out.read_text()
    parsed = parse(html)
    per_batch, cells = parsed.tables[0], parsed.tables[parsed.ids.index("cells-1")]
    assert len(cells) == 2 and len(per_batch) == 2
    for row in cells:
        cell_dir = small_sweep / row["cell_id"]
        result = read_json(cell_dir / "result.json")
        s = result["summary"]
        for key in ("best_val_accuracy", "test_accuracy_at_best_val", "train_loss_at_best_val", "final_test_accuracy",
                    "time_per_image_s",
                    "images_per_second", "eval_seconds", "epochs_completed", "best_epoch", "warmup_steps",
                    "peak_rss_bytes", "peak_allocated_bytes"):
            if key in row:
                assert as_number(row[key]) == s[key], key
            else:  # a column with nothing recorded in any cell is left out (no GPU here: no CUDA memory)
                assert s[key] is None and all(read_json(c / "result.json")["summary"][key] is None
                                              for c in small_sweep.iterdir() if c.is_dir()), key
        assert as_number(row["batch_size"]) == result["settings"]["train"]["batch_size"]
        assert row["status"] == "done"
        # steps to target, recomputed straight from evals.csv: the fitted crossing, between two checks,
        # and the first check at or above the target beside it
        with open(cell_dir / "evals.csv") as fh:
            steps = [(int(r["step"]), float(r["val_accuracy"])) for r in csv.DictReader(fh)]
        found = crossing(np.array([st for st, _ in steps]), np.array([a for _, a in steps]), 0.9)
        first = next(i for i, (_, accuracy) in enumerate(steps) if accuracy >= 0.9)
        expected = found.steps * result["settings"]["train"]["batch_size"] * s["time_per_image_s"]
        assert as_number(row["time_to_target_s"]) == pytest.approx(expected, rel=1e-12)
        assert as_number(row["steps_to_target"]) == pytest.approx(found.steps, rel=1e-12)
        assert as_number(row["steps_to_target_first_check"]) == steps[first][0] == found.first_check
        assert as_number(row["target_resolution_steps"]) == found.after - found.before
        assert found.before < found.steps <= found.after and found.after in [st for st, _ in steps]
        batch_row = next(b for b in per_batch if b["batch_size"] == row["batch_size"])
        assert as_number(batch_row[ACCURACY]) == s["test_accuracy_at_best_val"]
        assert as_number(batch_row["n"]) == 1
    assert "Sweet spot: batch size" in html
    # every figure inline; those the small sweep always has (the others need cells at the target)
    assert html.count("data:image/png;base64,") == html.count("<img ")
    assert {"Accuracy vs epoch", "Validation accuracy at each check",
            "Time per image and throughput vs batch size"} <= set(re.findall(r'alt="([^"]+)"', html))
    # the tidy CSV next to the HTML holds the same numbers
    frame = pd.read_csv(out.with_suffix(".csv"))
    for row in cells:
        line = frame[frame["cell_id"] == row["cell_id"]].iloc[0]
        assert line["time_per_image_s"] == as_number(row["time_per_image_s"])
        assert line["test_accuracy_at_best_val"] == as_number(row["test_accuracy_at_best_val"])


@pytest.mark.slow
def test_report_is_self_contained(small_sweep, tmp_path):
    out = tmp_path / "report.html"
    assert harness("report", str(small_sweep), "-o", str(out)).returncode == 0
    html = out.read_text()
    links = parse(html).links
    assert links and all(link.startswith("data:") for link in links), links
    without_images = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)
    assert "://" not in without_images and "<link" not in without_images and "@import" not in without_images
    assert "<script src" not in without_images


@pytest.mark.slow
def test_unreadable_result_is_a_warning_not_a_crash(small_sweep, tmp_path):
    folder = tmp_path / "small"
    shutil.copytree(small_sweep, folder)
    broken = next(p for p in folder.iterdir() if p.is_dir()) / "result.json"
    broken.write_text(broken.read_text()[:40])
    proc = harness("report", str(folder), "-o", str(tmp_path / "r.html"))
    assert proc.returncode == 0 and "warning: skipped" in proc.stderr
    assert "unreadable" in (tmp_path / "r.html").read_text()
    parsed = parse((tmp_path / "r.html").read_text())
    assert len(parsed.tables[parsed.ids.index("cells-1")]) == 1


def test_empty_folder_is_exit_2(tmp_path):
    proc = harness("report", str(tmp_path), "-o", str(tmp_path / "r.html"))
    assert proc.returncode == 2 and "no result.json" in proc.stderr
    assert not (tmp_path / "r.html").exists()


def frame(rows):
    base = {"source": "s", "sweep": "w", "variant": "", "status": "done", "reached_target": 1, "n": 1}
    return pd.DataFrame([{**base, **{ACCURACY if k == "accuracy" else k: v for k, v in r.items()}} for r in rows])


def test_flat_point():
    table = frame([
        {"batch_size": 16, "time_per_image_s": 4e-5},
        {"batch_size": 64, "time_per_image_s": 1.2e-5},
        {"batch_size": 256, "time_per_image_s": 0.5e-5},
        {"batch_size": 1024, "time_per_image_s": 0.45e-5},
    ])
    assert flat_point(table, threshold=0.15) == 256  # 1024 is only 10% faster
    assert flat_point(table, threshold=0.05) == 1024
    assert flat_point(table.iloc[:1], 0.05) == 16


def test_all_cells_failed_gives_no_table():
    cells = frame([{"batch_size": 8, "cell_id": "a", "status": "failed", "seed": 0, "learning_rate": 1e-3,
                    "time_per_image_s": None, "warmup_seconds": None}])
    assert by_batch_size(add_time_to_target(cells, pd.DataFrame(), pd.DataFrame(), 0.97)).empty


def test_time_to_target_uses_first_epoch_at_target_without_checks():
    cells = frame([{"batch_size": 100, "cell_id": "a", "seed": 0, "time_per_image_s": 1e-4, "warmup_seconds": 0.5}])
    epochs = pd.DataFrame({"source": "s", "sweep": "w", "cell_id": "a", "epoch": [1, 2, 3],
                           "val_accuracy": [0.95, 0.971, 0.99], "optimizer_steps": [550, 1100, 1650],
                           "train_seconds": [5.0, 6.0, 7.0]})
    row = add_time_to_target(cells, pd.DataFrame(), epochs, 0.97).iloc[0]
    assert row["steps_to_target"] == 1100 and row["target_resolution_steps"] == 550
    assert row["target_read_at"] == "epoch"
    assert row["time_to_target_s"] == pytest.approx(1100 * 100 * 1e-4)
    assert row["measured_time_to_target_s"] == pytest.approx(0.5 + 5.0 + 6.0)  # warm-up + epochs 1..2


def test_memory_limit_names_the_largest_batch_that_fit():
    from harness.analysis.per_batch import memory_limit

    cells = frame([{"batch_size": b, "status": s} for b, s in [(64, "done"), (256, "done"), (1024, "oom"),
                                                              (4096, "oom"), (512, "failed")]])
    assert memory_limit(cells) == "Largest batch size that fit: 256; batch size 1024 ran out of memory."
    assert memory_limit(frame([{"batch_size": 8, "status": "done"}])) is None


def test_a_summary_key_the_registry_does_not_know_is_warned_once_and_listed(tmp_path):
    """A misspelled key where a summary is computed (peak_loss_spik for a registered peak_loss_spike)
    must not vanish: one warning line for every cell that carries it, and a column in the cells table."""
    from records import epoch_rows, write_cell

    sweep = tmp_path / "typo"
    for batch in (32, 128):
        cell_id = write_cell(sweep, {"train": {"batch_size": batch, "seed": 0}},
                             epoch_rows(batch, 100, 1e-5, [0.98], [0.975]))
        path = sweep / cell_id / "result.json"
        record = read_json(path)
        record["summary"]["peak_loss_spik"] = 0.25 * batch
        path.write_text(json.dumps(record))
    proc = harness("report", str(sweep), "-o", str(tmp_path / "r.html"))
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if "peak_loss_spik" in line]
    assert warned == [line for line in proc.stderr.splitlines() if "registry does not know" in line]
    assert len(warned) == 1 and "peak_loss_spik (2 cells)" in warned[0]
    html = (tmp_path / "r.html").read_text()
    cells = parse(html).tables[parse(html).ids.index("cells-1")]
    assert sorted(as_number(row["peak_loss_spik"]) for row in cells) == [8.0, 32.0]
    assert "peak_loss_spik (unregistered)" in html and html.count("registry does not know") == 1


def _retimed(source, folder, cell_index: int, **environment) -> None:
    """A copy of a committed results folder, one cell's environment changed as another launch would record it."""
    shutil.copytree(source, folder)
    path = sorted(folder.rglob("result.json"))[cell_index]
    record = read_json(path)
    record["environment"].update(environment)
    path.write_text(json.dumps(record))


def test_cells_timed_unalike_are_named_on_the_first_screen(tmp_path):
    """Time per image moves with threads and the engine: a cell timed with 1 thread beside cells
    timed with 2 makes the first screen say so (analysis/conditions.py), in the first caveat."""
    from conftest import REPO

    folder = tmp_path / "default_seeds"
    _retimed(REPO / "results" / "default_seeds", folder, 0, cpu_threads=1)
    out = tmp_path / "report.html"
    proc = harness("report", str(folder), "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    html = out.read_text()
    first = html.split('<p class="next">')[0].split('<ul class="notes">')[1]
    assert "not measured alike (CPU threads 1 and 2)" in first.split("</li>")[0]
    assert "Timed with engine eager · 1 and 2 CPU threads · 1 process" in html


def test_folders_timed_unalike_are_warned_once(tmp_path):
    from conftest import REPO

    alike = tmp_path / "a" / "default_seeds"
    shutil.copytree(REPO / "results" / "default_seeds", alike)
    other = tmp_path / "b" / "default_seeds"
    shutil.copytree(REPO / "results" / "default_seeds", other)
    for path in other.rglob("result.json"):
        record = read_json(path)
        record["environment"]["torch"] = "2.11.0"
        path.write_text(json.dumps(record))
    out = tmp_path / "report.html"
    proc = harness("report", str(alike), str(other), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("The folders compared here were not measured alike (torch 2.11.0 and 2.14") == 1
    assert "The folders compared here were not measured alike" in out.read_text()
    # each folder alone was timed alike: no caveat inside either
    assert "The cells compared here were not measured alike" not in out.read_text()


def test_the_engine_sentence_says_how_the_mode_moved_the_sweet_spot():
    from harness.analysis.conditions import engine_sentence

    moved = engine_sentence({"train.mode=eager": 512, "train.mode=cuda_graphs": 128})
    assert moved.startswith("The engine moves the sweet spot: cuda_graphs 128, eager 512.")
    assert engine_sentence({"train.mode=eager": 128, "train.mode=cuda_graphs": 128}).startswith(
        "The engine does not move the sweet spot")
    mixed = engine_sentence({"act=relu, train.mode=eager": 64, "act=relu, train.mode=compile": 32,
                             "act=tanh, train.mode=eager": 8})
    assert mixed.startswith("The engine moves the sweet spot (act=relu): compile 32, eager 64.")
    assert engine_sentence({"train.mode=eager": 512}) is None and engine_sentence({"": 128}) is None


def test_log_axes_label_as_many_minor_ticks_as_fit():
    """Which minor ticks carry a label is decided when the figure is drawn: the first figure widens
    its axis after labelling it (batch sizes that did not reach the target go at the top)."""
    import matplotlib.pyplot as plt

    from harness.report import axes

    fig, ax = plt.subplots()
    ax.set_yscale("log")
    ax.set_ylim(3, 8)
    axes.plain_log(ax.yaxis)

    def labels(minor: bool) -> list[str]:
        fig.canvas.draw()
        low, high = ax.get_ylim()
        ticks = ax.yaxis.get_minor_ticks() if minor else ax.yaxis.get_major_ticks()
        return [t.label1.get_text() for t in ticks if low <= t.get_loc() <= high and t.label1.get_text()]

    assert labels(minor=True) == ["3", "4", "5", "6", "7", "8"]  # half a decade: every one
    ax.set_ylim(2.5, 75)
    some = labels(minor=True)
    assert {"20", "30"} <= set(some) and len(some) < 10 and labels(minor=False) == ["10"]
    ax.set_ylim(1, 10_000)
    assert labels(minor=True) == [] and labels(minor=False) == ["1", "10", "100", "1,000", "10,000"]
    plt.close(fig)
