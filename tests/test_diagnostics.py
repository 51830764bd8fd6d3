"""Collapse diagnostics: their values on real runs and on problems with a known answer, divergence,
ablation variants, and the report's verdict on hand-made results folders."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import harness, read_json, write_config
from records import epoch_rows, write_cell, write_plan
from test_report import as_number, parse

from harness.config import ModelSettings, load_config
from harness.plan import expand
from harness.record.metrics import DIAGNOSTIC_COLUMNS
from harness.training import diagnostics
from harness.training.models.mlp import build_mlp

TINY = {
    "name": "diag",
    "model": {"init": "normal"},
    "train": {"epochs": 2, "images_per_epoch": 1600, "untimed_steps": 2, "batch_size": 16},
    "data": {"train_eval_size": 500},
    "sweep": {"train.step_diagnostics": [False, True]},
}


def epochs_csv(cell_dir: Path) -> list[dict]:
    with open(cell_dir / "epochs.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_a_tiny_run_records_plausible_diagnostics_without_changing_training(tmp_path):
    proc = harness("run", "--config", str(write_config(tmp_path, TINY)), "--results-dir", str(tmp_path / "r"),
                   "--no-report")
    assert proc.returncode == 0, proc.stderr
    records = {r["settings"]["train"]["step_diagnostics"]: (r, p.parent)
               for p in (tmp_path / "r" / "diag").glob("*/result.json") for r in [read_json(p)]}
    (_, off_dir), (on, on_dir) = records[False], records[True]
    rows_on, rows_off = epochs_csv(on_dir), epochs_csv(off_dir)
    for row in rows_on:
        values = {k: float(row[k]) for k in DIAGNOSTIC_COLUMNS}
        assert all(math.isfinite(v) for v in values.values()), row
        assert all(0 <= values[f"dead_fraction_l{i}"] <= 1 for i in (1, 2, 3))
        assert 0 <= values["softmax_saturated_fraction"] <= 1 and values["max_abs_logit"] > 0
        for i in (1, 2, 3, 4):
            assert 0 < values[f"grad_norm_mean_l{i}"] <= values[f"grad_norm_max_l{i}"]
            assert 0 < values[f"update_ratio_max_l{i}"] < 1  # Adam at lr 1e-3 on N(0,1) weights
            assert 0 <= values[f"adam_sqrt_v_min_l{i}"] <= values[f"adam_sqrt_v_median_l{i}"]
        assert values["noise_scale"] > 0
    # per-step norms are a switch: empty when off, while the per-epoch diagnostics are always there
    assert all(r["grad_norm_mean_l1"] == "" and r["dead_fraction_l1"] != "" for r in rows_off)
    # measuring must not change what is measured: the same losses and accuracies either way
    compared = ("train_loss", "train_accuracy", "val_accuracy", "test_accuracy", "dead_fraction_l1", "noise_scale")
    assert [[r[k] for k in compared] for r in rows_on] == [[r[k] for k in compared] for r in rows_off]
    assert on["summary"]["final_noise_scale"] == pytest.approx(float(rows_on[-1]["noise_scale"]))


@pytest.mark.slow
def test_the_epoch_diagnostics_are_a_switch_that_changes_no_training_number(tmp_path):
    """train.diagnostics: full measures everything, light all but B_simple, off nothing; the
    losses and accuracies are the same."""
    config = {**TINY, "name": "levels", "sweep": {"train.diagnostics": ["full", "light", "off"]}}
    proc = harness("run", "--config", str(write_config(tmp_path, config)), "--results-dir", str(tmp_path / "r"),
                   "--no-report")
    assert proc.returncode == 0, proc.stderr
    rows = {r["settings"]["train"]["diagnostics"]: epochs_csv(p.parent)
            for p in (tmp_path / "r" / "levels").glob("*/result.json") for r in [read_json(p)]}
    assert all(r["noise_scale"] != "" and r["dead_fraction_l1"] != "" for r in rows["full"])
    assert all(r["noise_scale"] == "" and r["dead_fraction_l1"] != "" for r in rows["light"])
    assert all(r[k] == "" for r in rows["off"] for k in DIAGNOSTIC_COLUMNS)
    compared = ("train_loss", "train_accuracy", "val_accuracy", "test_accuracy")
    assert len({json.dumps([[r[k] for k in compared] for r in found]) for found in rows.values()}) == 1


@pytest.mark.slow
def test_b_simple_keeps_within_its_budget_of_the_training_time(tmp_path):
    """Ten steps of batch 16 per epoch train in milliseconds while B_simple on 2,048 probe images
    takes far longer: within the default 5% it is measured at the first and last epoch only (the
    two between counted as skipped); with no budget at every epoch; the training is the same."""
    config = {**TINY, "name": "budget", "train": {**TINY["train"], "epochs": 4, "images_per_epoch": 160},
              "sweep": {"train.diagnostics_budget": [0.05, None]}}
    proc = harness("run", "--config", str(write_config(tmp_path, config)), "--results-dir", str(tmp_path / "r"),
                   "--no-report")
    assert proc.returncode == 0, proc.stderr
    found = {r["settings"]["train"]["diagnostics_budget"]: (r["summary"], epochs_csv(p.parent))
             for p in (tmp_path / "r" / "budget").glob("*/result.json") for r in [read_json(p)]}
    (bounded, bounded_rows), (unbounded, unbounded_rows) = found[0.05], found[None]
    assert [r["noise_scale"] != "" for r in bounded_rows] == [True, False, False, True]
    assert bounded["b_simple_skipped"] == 2 and unbounded["b_simple_skipped"] == 0
    assert all(r["noise_scale"] != "" and r["dead_fraction_l1"] != "" for r in unbounded_rows)
    assert all(r["dead_fraction_l1"] != "" for r in bounded_rows)  # the light diagnostics at every epoch
    compared = ("train_loss", "val_accuracy", "noise_scale")
    assert [[r[k] for k in compared] for r in bounded_rows if r["noise_scale"]] == \
        [[r[k] for k in compared] for i, r in enumerate(unbounded_rows) if i in (0, 3)]
    seconds = [float(r["diagnostics_seconds"]) for r in bounded_rows]
    assert seconds[1] < seconds[0] / 2 and seconds[2] < seconds[3] / 2  # B_simple is the costly part


@pytest.mark.slow
def test_a_huge_learning_rate_is_diverged_within_a_few_steps(tmp_path):
    config = {**TINY, "optim": {"lr": 1e30}, "sweep": {}}
    proc = harness("run", "--config", str(write_config(tmp_path, config)), "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 1, proc.stderr  # a cell that did not finish well
    (record,) = [read_json(p) for p in (tmp_path / "r" / "diag").glob("*/result.json")]
    assert record["status"] == "diverged" and record["summary"]["diverged_at_step"] <= 5
    html = (tmp_path / "r" / "diag" / "report.html").read_text()
    assert "1 of 1 cells collapsed" in html


def test_noise_scale_recovers_a_known_gradient_noise():
    """Linear regression, x ~ N(0, I_d), y = w*.x + N(0, s^2), at weights w = w* + u. A sample's
    gradient is (x.u - e) x, so |G|^2 = |u|^2 and tr(Sigma) = (d+1)|u|^2 + d s^2 (Gaussian moments)."""
    torch.manual_seed(0)
    d, n, s = 20, 32_768, 1.5
    model = torch.nn.Sequential(torch.nn.Linear(d, 1, bias=False))
    u = torch.randn(d)
    u *= 0.8 / u.norm()
    w_true = torch.randn(d)
    with torch.no_grad():
        model[0].weight.copy_(w_true + u)
    x = torch.randn(n, d)
    y = x @ w_true + s * torch.randn(n)
    loss = lambda out, target: F.mse_loss(out.squeeze(1), target, reduction="sum") / 2  # noqa: E731
    true = ((d + 1) * u.square().sum() + d * s**2) / u.square().sum()
    found = diagnostics.noise_scale(model, x, y, loss)
    assert found["noise_scale"] == pytest.approx(true.item(), rel=0.2)
    assert model[0].weight.grad is None  # training state untouched


def brute_force_b_simple(model, x, y) -> dict:
    """B_simple from every example's own gradient, built with torch.func: the slow, obvious way."""
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}
    one = lambda p, xi, yi: F.cross_entropy(functional_call(model, p, (xi[None],)), yi[None])  # noqa: E731
    per_sample = vmap(grad(one), in_dims=(None, 0, 0))(params, x, y)
    small = sum(g.flatten(1).double().square().sum() for g in per_sample.values()).item() / len(x)
    big = sum(g.double().mean(0).square().sum() for g in per_sample.values()).item()
    return diagnostics.b_simple(small, big, 1, len(x))


def test_noise_scale_equals_brute_force_per_sample_gradients():
    torch.manual_seed(1)
    model = build_mlp(ModelSettings())
    x, y = torch.rand(64, 784), torch.randint(10, (64,))
    expected = brute_force_b_simple(model, x, y)
    found = diagnostics.noise_scale(model, x, y)
    assert found["noise_trace"] == pytest.approx(expected["noise_trace"], rel=1e-6)
    assert found["true_grad_sq"] == pytest.approx(expected["true_grad_sq"], rel=1e-4, abs=1e-9)


def test_step_norms_match_a_hand_computed_sgd_step():
    torch.manual_seed(2)
    model = build_mlp(ModelSettings())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    norms = diagnostics.StepNorms(model)
    layers = diagnostics.weighted_layers(model)
    for _ in range(3):
        F.cross_entropy(model(torch.rand(8, 784)), torch.randint(10, (8,))).backward()
        grads = [torch.cat([layer.weight.grad.flatten(), layer.bias.grad]).norm().item() for layer in layers]
        weights = [torch.cat([layer.weight.flatten(), layer.bias]).norm().item() for layer in layers]
        norms.after_backward()
        optimizer.step()
        norms.after_step()
        optimizer.zero_grad()
    found = norms.read_and_reset()
    for i, (g, w) in enumerate(zip(grads, weights), start=1):  # the last step's, checked against its max
        assert found[f"grad_norm_max_l{i}"] >= g * (1 - 1e-5)
        assert found[f"update_ratio_max_l{i}"] >= 0.5 * g / w * (1 - 1e-4)  # SGD's update is lr * g
    assert norms.steps == 0 and norms.grad_max.abs().sum() == 0  # reset for the next epoch


@pytest.mark.parametrize("activation", ["relu", "softplus"])
def test_probe_counts_the_dead_units_it_was_given(activation):
    torch.manual_seed(3)
    model = build_mlp(ModelSettings(activation=activation))
    with torch.no_grad():
        model[0].bias[:100] = -1e3  # 100 of 500 first-layer units can never fire
        model[0].bias[100:] = 10.0  # and the rest always do
    stats = diagnostics.probe_stats(model, torch.rand(200, 784))
    assert stats["dead_fraction_l1"] == pytest.approx(0.2)
    assert 0 <= stats["dead_fraction_l2"] <= 1 and 0 <= stats["softmax_saturated_fraction"] <= 1


def test_adam_state_after_one_step_is_the_gradient_magnitude():
    torch.manual_seed(4)
    model = build_mlp(ModelSettings())
    optimizer = torch.optim.Adam(model.parameters(), eps=1e-8)
    assert diagnostics.adam_state(optimizer, model)["adam_sqrt_v_min_l1"] is None  # no step yet
    F.cross_entropy(model(torch.rand(4, 784)), torch.randint(10, (4,))).backward()
    first = model[0]
    magnitude = torch.cat([first.weight.grad.flatten(), first.bias.grad]).abs()
    optimizer.step()
    state = diagnostics.adam_state(optimizer, model)  # bias-corrected v after one step = g^2
    assert state["adam_sqrt_v_min_l1"] == pytest.approx(magnitude.min().item(), rel=1e-4, abs=1e-12)
    assert state["adam_sqrt_v_median_l1"] == pytest.approx(magnitude.median().item(), rel=1e-4)


def test_seed_ablation_is_one_switch_at_a_time_over_three_seeds():
    config = load_config(Path(__file__).resolve().parent.parent / "configs" / "seed_ablation.yaml")
    cells = expand(config)
    base = config.base_settings().model_dump()
    by_variant: dict[str, list] = {}
    for cell in cells:
        by_variant.setdefault(cell.swept["variant"], []).append(cell)
    assert set(by_variant) >= {"baseline", "init_default", "eps_1e-3", "clip_1", "softplus", "with_replacement",
                               "lr_1e-4", "bs_100"}
    for name, group in by_variant.items():
        assert sorted(c.settings.train.seed for c in group) == [0, 1, 2]
        differing = {(g, k) for g, section in group[0].settings.model_dump().items() for k, v in section.items()
                     if base[g][k] != v and k != "seed"}
        assert len(differing) == (0 if name == "baseline" else 1), (name, differing)
    assert len({c.id for c in cells}) == len(cells) == 3 * len(by_variant)


@pytest.mark.parametrize("variants, message", [
    ({"a": {"optim.epss": 1.0}}, "variants.a: 'optim.epss' is not a setting"),
    ({"a": {"train.seed": 3}}, "variants.a: train.seed is also swept"),
    ({"a": {"optim.eps": -1.0}}, "variant 'a' (optim.eps=-1.0, sweep.train.seed=0) is invalid: optim.eps"),
])
def test_a_bad_variant_is_one_line_and_exit_2(tmp_path, variants, message):
    config = write_config(tmp_path, {"name": "v", "sweep": {"train.seed": [0, 1]}, "variants": variants})
    proc = harness("plan", "--config", str(config), "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "r").exists()


# --- the verdict, on hand-made results folders -------------------------------------------------

def make_cell(sweep: Path, variant: str, seed: int, test: list[float], train: list[float], **per_epoch) -> None:
    """A finished cell in the real schema (tests/records.py); `per_epoch` gives diagnostic columns as lists."""
    settings = {"train": {"batch_size": 1, "seed": seed, "images_per_epoch": 100, "epochs": len(test),
                          "untimed_steps": 0}}
    write_cell(sweep, settings, epoch_rows(1, 100, 0.01, test, test, train, **per_epoch), variant=variant)


COLLAPSING = {"test": [0.90, 0.94, 0.50, 0.20], "train": [0.91, 0.95, 0.52, 0.21],
              "dead_fraction_l1": [0.01, 0.02, 0.30, 0.60], "dead_fraction_l2": [0.0] * 4,
              "dead_fraction_l3": [0.0] * 4, "update_ratio_max_l1": [1e-3, 1e-3, 0.5, 2.0],
              "adam_sqrt_v_median_l1": [1e-2, 1e-3, 1e-6, 1e-7]}
HEALTHY = {"test": [0.90, 0.95, 0.96, 0.965], "train": [0.91, 0.96, 0.97, 0.975]}


def report_of(sweep: Path, variants: dict | None) -> tuple[str, object]:
    write_plan(sweep, {"report": {"target_accuracy": 0.9, "collapse_drop": 0.1}, "variants": variants or {}})
    out = sweep.parent / "report.html"
    proc = harness("report", str(sweep), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    html = out.read_text()
    return html, parse(html)


def verdict_of(html: str) -> str:
    start = html.index('id="collapse-verdict-1">') + len('id="collapse-verdict-1">')
    return html[start:html.index("</p>", start)]


def test_verdict_without_an_ablation_names_the_evidence_and_asks_for_one(tmp_path):
    sweep = tmp_path / "seed"
    make_cell(sweep, "baseline", 0, **COLLAPSING)
    html, _ = report_of(sweep, None)
    verdict = verdict_of(html)
    assert verdict.startswith("1 of 1 cells collapsed") and "configs/seed_ablation.yaml" in verdict
    assert "not overfitting" in html and "train 0.950 -&gt; 0.210" in html
    assert "rose to 60% dead units (from 2% at the peak)" in html
    assert html.count("<img") >= 2 and "Collapse of bs1-seed0-baseline" in html  # the curves


def test_verdict_names_the_switch_that_prevents_the_collapse(tmp_path):
    sweep = tmp_path / "seed_ablation"
    for seed in range(3):
        make_cell(sweep, "baseline", seed, **COLLAPSING)
        make_cell(sweep, "eps_1e-3", seed, **HEALTHY)
        make_cell(sweep, "softplus", seed, **COLLAPSING)
        make_cell(sweep, "bs_100", seed, **(HEALTHY if seed else COLLAPSING))
        make_cell(sweep, "clip_1", seed, test=[0.90, 0.95, 0.70, 0.93], train=[0.91, 0.96, 0.71, 0.94])
    html, parsed = report_of(sweep,
                             {"baseline": {}, "eps_1e-3": {"optim.eps": 0.001}, "clip_1": {"optim.grad_clip_norm": 1},
                                     "softplus": {"model.activation": "softplus"}, "bs_100": {"train.batch_size": 100}})
    verdict = verdict_of(html)
    assert "The baseline collapsed in 3 of 3 seeds" in verdict
    assert "eps_1e-3 0/3 (prevents it)" in verdict and "softplus 3/3 (does not prevent it)" in verdict
    assert "bs_100 1/3 (reduces it)" in verdict
    assert "clip_1 0/3 (no lasting collapse, but a dip of 0.25 on average)" in verdict
    assert "Recovered after a dip (the collapse started, then reversed): clip_1 (optim.grad_clip_norm=1" in verdict
    assert "prevented it in every seed: eps_1e-3 (optim.eps=0.001: numerical instability" in verdict
    table = parsed.tables[parsed.ids.index("variants-1")]
    rates = {r["variant"]: (as_number(r["collapsed"]), as_number(r["collapse_rate"])) for r in table}
    dips = {r["variant"]: as_number(r["deepest_dip"]) for r in table}
    assert dips["baseline"] == pytest.approx(0.74) and dips["eps_1e-3"] == 0
    assert rates == {"baseline": (3, 1.0), "bs_100": (1, pytest.approx(1 / 3)), "clip_1": (0, 0.0),
                     "eps_1e-3": (0, 0.0),
                     "softplus": (3, 1.0)}


def test_verdict_sees_overfitting_and_no_collapse(tmp_path):
    overfit = tmp_path / "overfit"
    make_cell(overfit, "baseline", 0, test=[0.90, 0.95, 0.80, 0.70], train=[0.92, 0.97, 0.99, 1.0])
    html, _ = report_of(overfit, None)
    assert "the signature of overfitting" in html
    healthy = tmp_path / "healthy"
    make_cell(healthy, "baseline", 0, **HEALTHY)
    html, _ = report_of(healthy, None)
    assert verdict_of(html).startswith("No cell collapsed")
