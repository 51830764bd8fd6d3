"""Your model, your data: a workload written outside the package (examples/seq_conv.py, copied to a
temporary folder) through `harness run`, `predict`, `report`, `status` and `harness.sweep`; the
built-in workloads; the cell id's cover of the workload's code; every bad answer of a workload as
one line, exit 2, nothing written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import REPO, harness, read_json, snapshot, write_config

from harness import workload
from harness.config import load_config
from harness.plan import expand
from harness.training import diagnostics
from harness.training.workloads import Workload, WorkloadError

# by hand, examples/seq_conv.py at channels 16, length 64, 4 classes: Conv1d 1->16 (k5) and
# 16->16 (k5) over 64 samples, Linear 16->4; a backward computes every weight gradient and the
# input gradient of all but the first layer
CONV1, CONV2, FC = 2 * 16 * 1 * 5 * 64, 2 * 16 * 16 * 5 * 64, 2 * 16 * 4
EXAMPLE_FLOPS = 3 * (CONV1 + CONV2 + FC) - CONV1


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The example's files in a folder of their own, run once: `harness run` then `harness predict`."""
    folder = tmp_path_factory.mktemp("mine")
    for name in ("seq_conv.py", "seq_conv.yaml"):
        shutil.copy(REPO / "examples" / name, folder / name)
    results = folder / "results"
    run = harness("run", "--config", str(folder / "seq_conv.yaml"), "--results-dir", str(results), "--quiet",
                  cwd=folder.parent)
    assert run.returncode == 0, run.stderr
    # --force: at 3 epochs its batch 256 crosses at ~54 of its 57 steps, too near its end to settle
    predicted = harness("predict", "--config", str(folder / "seq_conv.yaml"), "--results-dir", str(results),
                        "--force", cwd=folder.parent)
    assert predicted.returncode == 0, predicted.stderr
    report = harness("report", str(results / "seq_conv"), "-o", str(results / "seq_conv" / "report.html"))
    assert report.returncode == 0, report.stderr
    return folder, results / "seq_conv"


@pytest.mark.slow
def test_a_workload_of_ones_own_runs_predicts_and_reports(example):
    folder, sweep = example
    records = [read_json(p) for p in sorted(sweep.glob("*/result.json"))]
    assert sorted(r["settings"]["train"]["batch_size"] for r in records) == [16, 64, 256]
    for record in records:
        assert record["status"] == "done" and record["summary"]["flops_per_example"] == EXAMPLE_FLOPS
        assert record["workload"]["model"]["located"] == f"{folder / 'seq_conv.py'}:build"
        assert record["summary"]["final_noise_scale"] is not None  # B_simple, through torch.func here
        assert record["summary"]["test_accuracy_at_best_val"] > 0.95
    plan = read_json(sweep / "plan.json")
    assert plan["workloads"][0]["loss"]["callable"] == "loss" and plan["workloads"][0]["options"]["channels"] == 16
    assert read_json(sweep / "predict.json")["sweet_spot"]["batch_size"] in (16, 64, 256)
    html = (sweep / "report.html").read_text()
    assert "Sweet spot: batch size" in html and "predict" in html


@pytest.mark.slow
def test_reading_the_results_never_imports_the_workload(example, tmp_path):
    """A results folder is read on a laptop without the model file: report and status work with it gone."""
    folder, sweep = example
    copy = tmp_path / "copy"
    shutil.copytree(sweep, copy / "seq_conv")
    moved = tmp_path / "away.py"
    shutil.move(folder / "seq_conv.py", moved)
    try:
        report = harness("report", str(copy / "seq_conv"), "-o", str(tmp_path / "r.html"))
        status = harness("status", str(copy / "seq_conv"))
    finally:
        shutil.move(moved, folder / "seq_conv.py")
    assert report.returncode == 0 and "Sweet spot: batch size" in (tmp_path / "r.html").read_text(), report.stderr
    assert status.returncode == 0 and status.stdout.count(" done ") == 3, status.stdout


@pytest.mark.slow
def test_harness_sweep_in_python_trains_the_same_cells(example, tmp_path):
    """The same callables from Python: the same cell ids, files and answer as the config route."""
    folder, sweep = example
    script = f"""
import json, sys
sys.path.insert(0, {str(folder)!r})
import harness, seq_conv
result = harness.sweep(seq_conv.build, seq_conv.load, loss=seq_conv.loss, batch_sizes=[16, 64, 256], target=0.95,
                       lr=3e-3, epochs=3, options={{"channels": 16, "length": 64, "classes": 4, "train": 6000,
                       "test": 1000}}, name="seq_conv", results_dir={str(tmp_path)!r},
                       settings={{"data": {{"val_size": 1000, "train_eval_size": 1000}},
                                 "report": {{"tolerance": 0.01}}}})
print(json.dumps({{"spot": result.sweet_spot, "report": str(result.report),
                  "batches": result.per_batch["batch_size"].tolist()}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    answer = json.loads(proc.stdout.splitlines()[-1])
    ids = sorted(p.parent.name for p in sweep.glob("*/result.json"))
    assert sorted(p.parent.name for p in (tmp_path / "seq_conv").glob("*/result.json")) == ids
    assert answer["batches"] == [16, 64, 256] and answer["spot"] in (16, 64, 256)
    assert answer["report"] == str(tmp_path / "seq_conv" / "report.html")


SHADOWS = ("html", "profile", "getpass", "xml")  # names the workload's folder may hold; installed modules use them


def test_the_workload_s_folder_comes_after_every_installed_module_on_the_import_path(tmp_path):
    """A profile.py or html.py beside the model stays the user's own: torch, jinja2 and the
    standard library import theirs (the folder is appended to sys.path, never first)."""
    (tmp_path / "mine.py").write_text("import helper\n\ndef build(options):\n    return helper.model()\n")
    (tmp_path / "helper.py").write_text("import torch\n\ndef model():\n    return torch.nn.Linear(2, 2)\n")
    for name in SHADOWS:
        (tmp_path / f"{name}.py").write_text(f"raise ImportError('the workload folder\\'s own {name}.py')\n")
    probe = (f"from harness.training.workloads import _import\n"
             f"model = _import({str(tmp_path / 'mine.py')!r}, 'model').build({{}})\n"
             f"import importlib\nfor name in {SHADOWS!r}:\n    importlib.import_module(name)\n"
             "import jinja2, pandas\nprint(type(model).__name__)\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                          cwd=REPO.parent)
    assert proc.returncode == 0 and proc.stdout.strip() == "Linear", proc.stderr[-2000:]


def test_a_workload_in_a_folder_with_a_space_is_planned_and_a_spaced_spec_says_how_to_fix_it(tmp_path):
    folder = tmp_path / "my models"
    folder.mkdir()
    for name in ("seq_conv.py", "seq_conv.yaml"):
        shutil.copy(REPO / "examples" / name, folder / name)
    planned = harness("plan", "--config", str(folder / "seq_conv.yaml"))
    assert planned.returncode == 0 and planned.stdout.count("pending") == 3, planned.stderr[-2000:]
    spaced = harness("plan", "--config", str(folder / "seq_conv.yaml"), "--set", "workload.model='seq_conv.py :build'")
    assert spaced.returncode == 2 and "(no space around the ':')" in spaced.stderr and spaced.stderr.count("\n") == 1


def test_a_callable_from_a_notebook_runs_here_and_is_refused_elsewhere(tmp_path):
    """A function with no file (a notebook cell) is registered in-process; another process cannot load it."""
    namespace: dict = {}
    exec("def build(options):\n    import torch\n    return torch.nn.Linear(4, 2)\n", namespace)
    spec = workload.register(namespace["build"])
    assert spec.startswith(workload.IN_PROCESS) and workload.REGISTERED[spec] is namespace["build"]
    assert workload.register(workload.register) == f"{REPO / 'harness' / 'workload.py'}:register"  # a module file
    config = write_config(tmp_path, {"name": "nb", "workload": {"model": spec, "data": spec}})
    proc = harness("plan", "--config", str(config))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "handed to harness.sweep in another Python process" in proc.stderr


def test_the_cell_id_covers_the_workload_code_and_options(tmp_path):
    for name in ("seq_conv.py", "seq_conv.yaml"):
        shutil.copy(REPO / "examples" / name, tmp_path / name)
    before = [c.id for c in expand(load_config(tmp_path / "seq_conv.yaml"))]
    assert before == [c.id for c in expand(load_config(tmp_path / "seq_conv.yaml"))]  # stable
    swept = expand(load_config(tmp_path / "seq_conv.yaml", ["sweep.workload.options.channels=[8,16]"]))
    assert [c.id.split("-")[2] for c in swept][:2] == ["channels8", "channels16"]
    hashes = [c.id.rsplit("-", 1)[1] for c in (*swept[:2], expand(load_config(tmp_path / "seq_conv.yaml"))[0])]
    assert hashes[1] == hashes[2] != hashes[0]  # channels 16 is the config's own: the same settings, the same hash
    with open(tmp_path / "seq_conv.py", "a") as fh:
        fh.write("\n# an edit\n")
    after = [c.id for c in expand(load_config(tmp_path / "seq_conv.yaml"))]
    assert all(a != b for a, b in zip(after, before))  # edited code is never taken for the old cells
    # the built-in MLP is outside the hash: the committed cells keep their ids, however it is named
    default = [c.id for c in expand(load_config(REPO / "configs" / "default.yaml"))]
    assert set(default) <= {p.name for p in (REPO / "results" / "default_seeds").iterdir()}
    assert [c.id for c in expand(load_config(REPO / "configs" / "default.yaml", ["workload=mnist_mlp"]))] == default
    fashion = [c.id for c in expand(load_config(REPO / "configs" / "fashion.yaml"))]  # data.dataset: fashion_mnist
    assert set(fashion) == {p.name for p in (REPO / "results" / "fashion").iterdir() if p.is_dir()}
    assert [c.id for c in expand(load_config(REPO / "configs" / "fashion.yaml",
                                             ["workload=fashion_mlp", "data.dataset=mnist"]))] == fashion


NEIGHBOURS = {  # a workload file that builds through its folder's modules
    "mine.py": "import html\nimport helper\nfrom nets import layers\n\ndef build(options):\n"
               "    return layers.net(helper.WIDTH)\n\ndef load(options):\n    return helper.data()\n",
    "helper.py": "WIDTH = 4\n\ndef data():\n    return None\n",
    "nets/__init__.py": "",
    "nets/layers.py": "from . import blocks\n\ndef net(width):\n    return blocks.block(width)\n",
    "nets/blocks.py": "import torch\n\ndef block(width):\n    return torch.nn.Linear(width, 2)\n",
    "html.py": "# the standard library's html comes first on the import path: not the workload's\n",
    "notes.py": "# imported by nothing\n",
}


@pytest.mark.parametrize("edited, counts", [("helper.py", True), ("nets/layers.py", True), ("nets/blocks.py", True),
                                            ("nets/__init__.py", True), ("html.py", False), ("notes.py", False)])
def test_the_cell_id_covers_the_modules_the_workload_imports_from_its_folder(tmp_path, edited, counts):
    for name, text in NEIGHBOURS.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    config = write_config(tmp_path, {"name": "mine", "workload": {"model": "mine.py:build", "data": "mine.py:load"}})
    before = [c.id for c in expand(load_config(config))]
    with open(tmp_path / edited, "a") as fh:
        fh.write("# an edit\n")
    assert ([c.id for c in expand(load_config(config))] != before) is counts


def test_harness_sweep_s_callables_are_told_apart_by_captured_values_helpers_and_code():
    """A closure over a loop variable, a helper of the notebook edited, two lambdas on one line:
    each a different callable, each its own spec (and so its own cells)."""
    def make(width):
        def build(options):
            return torch.nn.Linear(8, width)
        return build

    narrow, wide = (workload.register(make(w)) for w in (1, 256))
    assert narrow != wide and workload.register(make(1)) == narrow  # stable for the same values
    notebook = [{"__name__": "__main__"} for _ in range(2)]
    for namespace, width in zip(notebook, (1, 256)):
        exec(f"def helper():\n    return {width}\ndef build(options):\n    return helper()\n", namespace)
    assert workload.register(notebook[0]["build"]) != workload.register(notebook[1]["build"])
    model, data = lambda o: torch.nn.Linear(8, 3), lambda o: (torch.zeros(4, 8), torch.zeros(4))
    specs = workload.register(model), workload.register(data)
    assert specs[0] != specs[1] and workload.REGISTERED[specs[0]] is model and workload.REGISTERED[specs[1]] is data


def test_b_simple_through_torch_func_matches_brute_force_on_a_conv_net():
    from test_diagnostics import brute_force_b_simple

    from harness.training.models.conv import build_conv

    torch.manual_seed(3)
    model = build_conv({"channels": 4, "hidden": 16})
    x, y = torch.rand(48, 784), torch.randint(10, (48,))
    expected = brute_force_b_simple(model, x, y)
    found = diagnostics.noise_scale(model, x, y)
    assert found["noise_trace"] == pytest.approx(expected["noise_trace"], rel=1e-5)
    assert found["true_grad_sq"] == pytest.approx(expected["true_grad_sq"], rel=1e-4, abs=1e-9)
    probe = diagnostics.probe_stats(model, x)
    assert set(probe) == {"dead_fraction_l1", "dead_fraction_l2", "dead_fraction_l3", "max_abs_logit",
                          "softmax_saturated_fraction"} and all(v is not None for v in probe.values())


@pytest.mark.slow
def test_the_built_in_conv_net_trains_a_cell(tmp_path):
    config = write_config(tmp_path, {"name": "conv", "workload": "mnist_conv",
                                     "train": {"batch_size": 64, "epochs": 1, "images_per_epoch": 6400},
                                     "data": {"train_eval_size": 500}})
    proc = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "r"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    (record,) = [read_json(p) for p in (tmp_path / "r" / "conv").glob("*/result.json")]
    conv1, conv2, fc1, fc2 = 2 * 16 * 25 * 784, 2 * 32 * 16 * 25 * 196, 2 * 1568 * 128, 2 * 128 * 10
    assert record["status"] == "done" and record["workload"]["name"] == "mnist_conv"
    assert record["workload"]["options"] == {"channels": 16, "hidden": 128}  # the defaults, recorded
    assert record["summary"]["flops_per_example"] == 3 * (conv1 + conv2 + fc1 + fc2) - conv1
    assert record["summary"]["test_accuracy_at_best_val"] > 0.8


GOOD = '''
import torch
def build(options):
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, options.get("classes", 3)))
def load(options):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 8, generator=g), torch.randint(options.get("labels", 3), (200,), generator=g)
    return {"train": (x[:150], y[:150]), "test": (x[150:], y[150:])}
def metric(outputs, targets):
    return (outputs.argmax(1) == targets).float()
'''
MORE = GOOD + '''
def build_tokens(options):
    return torch.nn.Linear(8, 12)
def load_tokens(options):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 8, generator=g), torch.randint(3, (200, 4), generator=g)
    return {"train": (x[:150], y[:150]), "test": (x[150:], y[150:])}
def tokens_loss(outputs, targets):
    return torch.nn.functional.cross_entropy(outputs.reshape(-1, 3), targets.reshape(-1))
def load_mixed(options):
    x, y = torch.randn(200, 8), torch.randint(3, (200,))
    mask = torch.ones(200, 8)
    return {"train": ({"input_ids": x[:150], "attention_mask": mask[:150]}, y[:150]), "test": (x[150:], y[150:])}
def build_one(options):
    return torch.nn.Linear(8, 1)
def load_float(options):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=g)
    return {"train": (x[:150], x[:150].sum(1, keepdim=True)), "test": (x[150:], x[150:].sum(1, keepdim=True))}
def nan_metric(outputs, targets):
    return torch.full((len(targets),), float("nan"))
def percent(outputs, targets):
    return (outputs.argmax(1) == targets).float() * 100 + 2  # above 1 whatever the model predicts
def constant_loss(outputs, targets):
    return outputs.sum() * 0 + 1.0
def build_flaky(options):
    class Flaky(torch.nn.Linear):
        calls = 0
        def forward(self, x):
            if torch.is_grad_enabled():
                Flaky.calls += 1
                if Flaky.calls > 3:
                    raise RuntimeError("size of tensor a (64) must match the size of tensor b (32)")
            return super().forward(x)
    return Flaky(8, 3)
def build_quitting(options):
    class Quitting(torch.nn.Linear):
        calls = 0
        def forward(self, x):
            if torch.is_grad_enabled():
                Quitting.calls += 1
                if Quitting.calls > 3:
                    import sys
                    sys.exit(0)
            return super().forward(x)
    return Quitting(8, 3)
'''
LOSS = "def loss(outputs, targets):\n    return torch.nn.functional.cross_entropy(outputs, targets)\n"
OWN = {"model": "mine.py:build", "data": "mine.py:load", "metric": "mine.py:metric", "loss": "mine.py:loss"}
EXIT = "\n    import sys; sys.exit(0)"
BAD = [  # (what the config names or the file says, the one line it must give)
    ({"model": "nowhere.py:build", "data": "nowhere.py:load"}, "", "nowhere.py does not exist"),
    ({"model": "mine.py:buidl", "data": "mine.py:load"}, GOOD,
     "mine.py has no 'buidl'; it defines build, load, metric"),
    ({"model": "mine.py:build", "data": "mine.py:load"}, GOOD.replace("return torch.nn.Sequential(", "return 3 or ("),
     "returned a int, not a torch.nn.Module"),
    ({"model": "mine.py:build", "data": "mine.py:load"}, GOOD.replace('return {"train"', 'return {"tran"'),
     "returned a dict with keys ['test', 'tran']"),
    ({"model": "mine.py:build", "data": "mine.py:load"}, GOOD.replace('(x[150:], y[150:])', 'x[150:]'),
     "returned 'test' as a Tensor; each split is a pair (inputs, targets)"),
    ({"model": "mine.py:build", "data": "mine.py:load", "options": {"labels": 5}}, GOOD,
     "the train labels run from 0 to 4, but the model gives 3 classes"),
    ({"model": "mine.py:build", "data": "mine.py:load", "metric": "mine.py:metric"},
     GOOD.replace("(outputs.argmax(1) == targets).float()", "(outputs.argmax(1) == targets).float().mean()"),
     "returned shape () for 4 examples"),
    ({"model": "mine.py:build", "data": "mine.py:load"},
     GOOD.replace("    g = torch", "    raise ValueError('no such file: data.bin')\n    g = torch"),
     "workload.data: "),
    ({"model": "mine.py:build_tokens", "data": "mine.py:load_tokens", "loss": "mine.py:tokens_loss"}, MORE,
     "workload.metric: the default metric (accuracy, argmax over classes == label) needs (examples, classes) "
     "logits against one label per example, or (examples, T, classes) against (examples, T) token labels; the model "
     "gives shape (4, 12) for targets of shape (4, 4): name a metric of your own as workload.metric"),
    ({"model": "mine.py:build_one", "data": "mine.py:load_float"}, MORE,
     "workload.loss: the train targets are floating point (torch.float32, shape (130, 1)), but the default loss "
     "(cross-entropy) takes one tensor of integer class labels; name a loss of your own as workload.loss"),
    ({"model": "mine.py:build", "data": "mine.py:load", "metric": "mine.py:nan_metric"}, MORE,
     "mine.py:nan_metric gave a score that is not finite on the 4 trial examples"),
    ({"model": "mine.py:build", "data": "mine.py:load", "metric": "mine.py:percent"}, MORE,
     "an unnamed metric is read as an accuracy in [0, 1], higher is better: rescale it, or name it "
     "(workload.metric_name) and its direction (workload.metric_mode: max | min)"),
    ({"model": "mine.py:build", "data": "mine.py:load_mixed"}, MORE,
     "returned 'test' inputs as shape (50, 8) but 'train' inputs as {'input_ids': shape (150, 8), 'attention_mask': "
     "shape (150, 8)}; give every split the same structure (keys, nesting)"),
    ({"model": "mine.py:build", "data": "mine.py:load"}, GOOD.replace('(x[150:], y[150:])', '(x[150:, :6], y[150:])'),
     "workload.data: the model fails on the test inputs (shape (4, 6); the train inputs are shape (4, 8))"),
    ({"model": "mine.py:build", "data": "mine.py:load"},
     GOOD.replace('return {"train": (x[:150]', 'import numpy\n    return {"train": (numpy.array([None] * 150)'),
     "returned 'train'[0] is a numpy array of dtype object, which torch cannot hold; give numbers"),
    (OWN, "import sys; sys.exit(0)\n" + GOOD + LOSS, "workload.model: importing"),
    *[(OWN, (GOOD + LOSS).replace(anchor, anchor + EXIT), f"mine.py:{role} called sys.exit(0)")
      for role, anchor in (("build", "def build(options):"), ("load", "def load(options):"),
                           ("metric", "def metric(outputs, targets):"), ("loss", "def loss(outputs, targets):"))],
]


@pytest.mark.parametrize("named, source, message", BAD, ids=["no file", "no callable", "not a module", "wrong keys",
                                                             "not a pair", "labels", "scalar metric", "raises",
                                                             "token targets, default metric",
                                                             "float targets, default loss", "metric not finite",
                                                             "metric out of [0, 1]", "dict and tensor inputs",
                                                             "test inputs of another width", "numpy object array",
                                                             "sys.exit(0) on import",
                                                             "in build", "in load", "in metric", "in loss"])
def test_a_workload_that_answers_wrong_is_one_line_and_writes_nothing(tmp_path, named, source, message):
    if source:
        (tmp_path / "mine.py").write_text(source)
    config = write_config(tmp_path, {"name": "bad", "workload": named, "data": {"val_size": 20, "train_eval_size": 20},
                                     "sweep": {"train.batch_size": [8, 16]}, "train": {"epochs": 1}})
    results = tmp_path / "results"
    results.mkdir()
    before = snapshot(tmp_path)
    proc = harness("run", "--config", str(config), "--results-dir", str(results))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert message in proc.stderr
    assert snapshot(tmp_path) == before  # nothing written: no plan.json, no cell folder
    if named.get("data") == "mine.py:load" and "ValueError" in source:
        assert "raised ValueError: no such file: data.bin (at mine.py:" in proc.stderr and "in load)" in proc.stderr
        debug = harness("run", "--config", str(config), "--results-dir", str(results), "--debug")
        assert debug.returncode == 2 and "Traceback (most recent call last)" in debug.stderr


def test_a_failing_default_is_named_as_the_default_not_as_the_model():
    own = Workload(label="mine.py:build", build=lambda o: torch.nn.Linear(8, 3), specs={"model": "mine.py:build"})
    with pytest.raises(WorkloadError, match=r"^workload\.loss: the default loss \(cross-entropy\) raised"):
        own.call("loss", own.train_loss, torch.zeros(4, 3), torch.zeros(4, 7))
    with pytest.raises(WorkloadError, match=r"^workload\.metric: the default metric \(accuracy\) raised"):
        own.call("metric", own.scores, torch.zeros(4, 3), torch.zeros(5, dtype=torch.long))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8, torch.bool])
def test_integer_and_boolean_labels_train_with_the_default_loss_and_metric(dtype):
    logits, labels = torch.randn(6, 3, requires_grad=True), torch.tensor([0, 1, 1, 0, 1, 0])
    own = Workload(label="mine.py:build", build=lambda o: torch.nn.Linear(8, 3))
    expected = own.train_loss(logits, labels), own.scores(logits, labels), own.summed_loss(logits, labels)
    typed = labels.to(dtype)
    found = own.train_loss(logits, typed), own.scores(logits, typed), own.summed_loss(logits, typed)
    assert all(torch.equal(a, b) for a, b in zip(found, expected))
    found[0].backward()
    assert logits.grad is not None


def test_messages_name_what_to_fix(tmp_path):
    stdlib = harness("plan", "--set", "workload.model=os:getcwd", "--set", "workload.data=os:getcwd")
    assert stdlib.returncode == 0, stdlib.stderr  # a frozen module of the interpreter: hashed by its version
    config = write_config(tmp_path, {"name": "k", "workload": {"name": "mnist_conv", "options": {True: 3}}})
    line = harness("plan", "--config", str(config)).stderr
    assert line.endswith("workload.options: the key true is read as a bool, not a name; quote it in the config "
                         "('true': VALUE)\n"), line
    corrupt = tmp_path / "corrupt" / "bs8-seed0-0123abcd"
    corrupt.mkdir(parents=True)
    (corrupt / "result.json").write_text('{"schema_version": 1, "cell_id": 7}')
    said = harness("report", str(tmp_path / "corrupt"), "-o", str(tmp_path / "r.html"))
    assert said.returncode == 2 and "no result.json under" in said.stderr and "(and 1 skipped: " in said.stderr
    assert said.stderr.count("\n") == 1


def test_a_loss_that_ignores_the_outputs_is_a_warning_before_training(tmp_path):
    (tmp_path / "mine.py").write_text(MORE)
    config = write_config(tmp_path, {"name": "flat", "workload": {"model": "mine.py:build", "data": "mine.py:load",
                                                                  "loss": "mine.py:constant_loss"},
                                     "data": {"val_size": 20, "train_eval_size": 20},
                                     "sweep": {"train.batch_size": [16]}, "train": {"epochs": 1}})
    proc = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "r"), "--no-report")
    warned = [line for line in proc.stderr.splitlines() if line.startswith("warning: workload.loss: ")]
    assert len(warned) == 1 and "mine.py:constant_loss gave exactly 1 on the 4 trial examples" in warned[0], proc.stderr
    assert proc.returncode == 0, proc.stderr  # a warning: the user may mean it


@pytest.mark.parametrize("builder, error", [
    ("build_flaky", "size of tensor a (64) must match the size of tensor b (32)"),
    ("build_quitting", "sys.exit(0) was called while the cell trained")], ids=["raises", "sys.exit(0)"])
def test_when_every_cell_fails_the_answer_says_so_with_the_first_error(tmp_path, builder, error):
    """The model raises (or calls sys.exit(0)) on its 4th training step in every cell: `run` and
    `status` exit 1, and the answer line gives the first cell's error, not advice about epochs."""
    (tmp_path / "mine.py").write_text(MORE)
    config = write_config(tmp_path, {"name": "broken", "workload": {"model": f"mine.py:{builder}",
                                                                    "data": "mine.py:load"},
                                     "data": {"val_size": 20, "train_eval_size": 20},
                                     "sweep": {"train.batch_size": [8, 16]}, "train": {"epochs": 1}})
    results = tmp_path / "r"
    run = harness("run", "--config", str(config), "--results-dir", str(results))
    answer = run.stdout.strip().splitlines()[-1]
    assert run.returncode == 1, run.stderr
    assert answer.startswith("no sweet spot: every cell failed (2 of 2); the first: bs8-seed0-"), answer
    assert error in answer and "train.epochs" not in answer
    status = harness("status", str(results / "broken"))
    assert status.returncode == 1 and "2 of 2 cells failed; the first: bs8-seed0-" in status.stdout, status.stdout


def test_a_built_in_takes_only_its_options(tmp_path):
    config = write_config(tmp_path, {"name": "b", "workload": {"name": "mnist_conv", "options": {"chanels": 8}}})
    proc = harness("plan", "--config", str(config))
    assert proc.returncode == 2 and "mnist_conv takes channels, hidden; not chanels" in proc.stderr


@pytest.mark.slow
def test_two_processes_load_the_same_workload_code(example, tmp_path):
    """accelerate launch with 2 gloo processes: each rank imports the same file (plan.json's), and
    the cells match the one-process run (same ids, first-step losses within float32 summation order)."""
    import os

    from conftest import BIN, DATA_DIR

    folder, sweep = example
    env = {**os.environ, "HARNESS_DATA_DIR": str(DATA_DIR), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
                           str(REPO / "harness" / "run.py"), "--config", str(folder / "seq_conv.yaml"),
                           "--results-dir", str(tmp_path), "--set", "sweep.train.batch_size=[16,64]", "--quiet",
                           "--no-report"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for path in (tmp_path / "seq_conv").glob("*/result.json"):
        two, one = read_json(path), read_json(sweep / path.parent.name / "result.json")
        assert two["environment"]["num_processes"] == 2 and two["status"] == "done"
        assert two["summary"]["first_step_losses"] == pytest.approx(one["summary"]["first_step_losses"], abs=1e-5)


def test_an_array_task_refuses_a_workload_edited_since_the_plan(tmp_path):
    """Array tasks train the cell the submitted plan names at their index; an edit in between would
    silently train another cell."""
    for name in ("seq_conv.py", "seq_conv.yaml"):
        shutil.copy(REPO / "examples" / name, tmp_path / name)
    config, results = tmp_path / "seq_conv.yaml", tmp_path / "results"
    first = harness("run", "--config", str(config), "--results-dir", str(results), "--array-index", "2",
                    "--set", "train.epochs=1", "--no-report")
    assert first.returncode == 0, first.stderr
    with open(tmp_path / "seq_conv.py", "a") as fh:
        fh.write("\n# an edit\n")
    second = harness("run", "--config", str(config), "--results-dir", str(results), "--array-index", "1",
                     "--set", "train.epochs=1", "--no-report")
    assert second.returncode == 2 and "changed since" in second.stderr and second.stderr.count("\n") == 1
