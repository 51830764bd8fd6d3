"""harness/training/checkpoint.py: a checkpoint is plain data (a planted pickle is refused), one that
does not fit the model is set aside and the cell trains, and what save wrote loads as it was."""

from __future__ import annotations

import dataclasses
import os

import pytest
from conftest import harness, read_json, write_config
from hostile import JSON_VALUES, ONE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


class Payload:
    def __reduce__(self):
        return os.system, (f"touch {os.environ['PWNED']}",)


@pytest.mark.slow
def test_a_planted_pickle_in_a_checkpoint_is_refused_with_one_line(tmp_path):
    import torch

    config = write_config(tmp_path, ONE)
    results = tmp_path / "r"
    plan = harness("plan", "--config", str(config), "--results-dir", str(results))
    cell_id = plan.stdout.splitlines()[1].split()[1]
    cell = results / "small" / cell_id
    cell.mkdir(parents=True)
    pwned = tmp_path / "pwned"
    os.environ["PWNED"] = str(pwned)
    torch.save({"world": 1, "state": Payload()}, cell / "checkpoint-rank0.pt")
    proc = harness("run", "--config", str(config), "--results-dir", str(results), "--no-report")
    assert proc.returncode == 0, proc.stderr
    assert not pwned.exists()  # the payload never ran
    refused = [line for line in proc.stderr.splitlines() if "not a plain-data checkpoint" in line]
    assert len(refused) == 1 and refused[0].startswith("warning: refused ")
    assert (cell / "checkpoint-rank0.pt.refused").exists() and read_json(cell / "result.json")["status"] == "done"


@pytest.mark.slow
def test_a_checkpoint_that_does_not_fit_the_model_is_set_aside_and_the_cell_trains(tmp_path):
    import torch

    from harness.training.checkpoint import LoopState

    config = write_config(tmp_path, ONE)
    results = tmp_path / "r"
    cell_id = harness("plan", "--config", str(config), "--results-dir", str(results)).stdout.splitlines()[1].split()[1]
    cell = results / "small" / cell_id
    cell.mkdir(parents=True)
    state = dataclasses.asdict(LoopState(warmup_left=3))
    torch.save({"world": 1, "state": state, "model": {"not.a.weight": torch.zeros(3)}, "optimizer": {},
                "torch_rng": torch.get_rng_state()}, cell / "checkpoint-rank0.pt")
    proc = harness("run", "--config", str(config), "--results-dir", str(results), "--no-report")
    assert proc.returncode == 0, proc.stderr
    refused = [line for line in proc.stderr.splitlines() if "does not fit this cell's model" in line]
    assert len(refused) == 1 and refused[0].startswith("warning: refused ") and "kept as checkpoint-rank0.pt.refused" \
        in refused[0], proc.stderr
    assert read_json(cell / "result.json")["status"] == "done" and (cell / "checkpoint-rank0.pt.refused").exists()
    assert not (cell / "checkpoint-rank0.pt").exists()  # a rerun never meets it again


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.one_of(JSON_VALUES, st.fixed_dictionaries({"world": JSON_VALUES, "state": JSON_VALUES}),
                         st.fixed_dictionaries({"world": st.just(1), "state": st.dictionaries(
                             st.sampled_from(["epoch", "step", "steps_done", "bogus"]), JSON_VALUES, max_size=3)})))
def test_any_plain_data_checkpoint_loads_or_counts_as_none(tmp_path_factory, payload):
    """Whatever plain data a checkpoint holds, load() returns a usable payload or None (the cell
    starts over); what does not fit the model after loading is refused by the resume (the e2e test)."""
    import torch

    from harness.training import checkpoint

    cell = tmp_path_factory.mktemp("ckpt")
    torch.save(payload, checkpoint.path_for(cell, 0))
    warned = []
    loaded = checkpoint.load(cell, 0, 1, warn=warned.append)
    assert loaded is None or (isinstance(loaded["state"], checkpoint.LoopState) and loaded["world"] == 1)
    if loaded is not None:
        assert all(isinstance(getattr(loaded["state"], name), int) for name in checkpoint.COUNTERS)
    assert len(warned) <= 1 and all(line.startswith("refused ") for line in warned)


def test_a_checkpoint_save_wrote_loads_as_it_was(tmp_path):
    """The other half of the property above: load() is not a function that always says None. A
    real checkpoint (save's own payload, mid-epoch, with a model and optimizer) loads field for field."""
    import torch

    from harness.training import checkpoint

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    state = checkpoint.LoopState(epoch=2, step=5, steps_done=40, order=torch.arange(12).view(3, 4),
                                 losses=torch.ones(3), first_losses=[2.3, 2.2])
    state.window.steps, state.window.seconds = 5, 0.25
    checkpoint.save(tmp_path, 0, 1, state, model, optimizer)
    loaded = checkpoint.load(tmp_path, 0, 1, warn=pytest.fail)
    assert loaded is not None and loaded["world"] == 1
    got = loaded["state"]
    assert (got.epoch, got.step, got.steps_done, got.first_losses) == (2, 5, 40, [2.3, 2.2])
    assert (got.window.steps, got.window.seconds) == (5, 0.25) and torch.equal(got.order, state.order)
    assert torch.equal(loaded["model"]["weight"], model.state_dict()["weight"])
