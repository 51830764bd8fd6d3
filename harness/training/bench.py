"""`harness bench`: the harness engine against the loop users write, side by side, one process.

For each batch size every loop trains the same freshly initialised model (same seed) on the same
images in the same order for the same number of steps (timed_steps_for: ~200 steps or ~0.5 s,
from a calibration run). Repeats alternate between the loops, and each reports the median time
per image. A speed-up can never come from doing less: the images, the optimizer steps and the loss
at step CHECK_STEPS of every engine run are checked against the reference (or, where it is
skipped, the first engine loop).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import shutil
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import DataLoader

from harness.config import WARMUP_STEPS, CellSettings, TrainSettings
from harness.record.results import utc_now, write_atomic
from harness.training import data, images, measure, workloads
from harness.training.data import IndexStream
from harness.training.engine import Engine, build_engine, check_launch
from harness.training.models.mlp import build_mlp
from harness.training.steps import run_steps
from harness.training.telemetry import compute_precision, count_flops, mfu, peak_flops
from harness.training.threads import apply as apply_threads

BENCH_SCHEMA_VERSION = 2
DEFAULT_BATCHES = (1, 4, 16, 64, 256, 1024, 4096, 16384)
QUICK_BATCHES = (1, 16, 256)
CHECK_STEPS = 20  # every run takes at least this many steps; its loss at this step is compared
# timed steps per run (timed_steps_for): enough steps and seconds that a median means something
MIN_TIMED_STEPS, MIN_TIMED_SECONDS, MAX_TIMED_SECONDS = 200, 0.5, 2.0
# |loss at step CHECK_STEPS (engine) - the reference's|, fp32. Eager differs from the reference
# only by fused vs per-parameter Adam rounding; compile also fuses the forward. Later steps are
# not compared: at batch size 1 rounding differences grow chaotically over thousands of steps.
LOSS_TOLERANCE = {"eager": 1e-4, "compile": 1e-3, "cuda_graphs": 1e-4}
COLUMNS = ("device", "batch_size", "loop", "repeats", "steps", "timed_steps", "images", "time_per_image_median_s",
           "time_per_image_min_s", "time_per_image_max_s", "reference_over_this", "accelerate_step_over_this", "mfu",
           "check_loss",
           "loss_diff_vs_reference", "same_work")


@dataclass
class Run:
    loop: str
    steps: int
    images: int
    seconds: float  # timed steps only
    timed_images: int
    check_loss: float  # the loss of step CHECK_STEPS
    losses: list[float]  # every step's loss, only when asked for (it syncs each step)


def torchvision_root(mnist_folder: Path) -> Path:
    """torchvision's MNIST reads MNIST/raw/ uncompressed; unpack our verified .gz files once."""
    root = images.CACHE_DIR / "torchvision"
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in images.MNIST_MD5:
        target = raw / name.removesuffix(".gz")
        if not target.exists():
            with gzip.open(mnist_folder / name, "rb") as src, open(target.with_suffix(".part"), "wb") as dst:
                shutil.copyfileobj(src, dst)
            target.with_suffix(".part").replace(target)
    return root


def reference_loop(accelerator: Accelerator, dataset, order: list[int], settings: CellSettings, record: bool) -> Run:
    """The loop from the tutorials, as users write it: a DataLoader over torchvision's MNIST,
    accelerator.prepare, plain Adam, and loss.item() every step for logging."""
    batch, steps = settings.train.batch_size, len(order) // settings.train.batch_size
    torch.manual_seed(settings.train.seed)
    model = build_mlp(settings.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.optim.lr, betas=settings.optim.betas,
                                 eps=settings.optim.eps)
    loader = DataLoader(dataset, batch_size=batch, sampler=order)  # the same order as the engine's
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    losses, start = [], None
    for i, (pixels, labels) in enumerate(loader):
        if i == WARMUP_STEPS:
            measure.synchronize(accelerator.device)
            start = time.perf_counter()
        loss = F.cross_entropy(model(pixels.view(pixels.size(0), -1)), labels)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    measure.synchronize(accelerator.device)
    seconds = time.perf_counter() - start
    return Run(loop="reference", steps=steps, images=steps * batch, seconds=seconds,
               timed_images=(steps - WARMUP_STEPS) * batch, check_loss=losses[CHECK_STEPS - 1],
               losses=losses if record else [])


# a loop name -> (train.mode, lean step): eager_accelerate is the eager step through Accelerate's
# backward and optimizer wrappers, kept to show what the lean path saves
LOOPS = {"eager": ("eager", True), "eager_accelerate": ("eager", False), "compile": ("compile", True),
         "cuda_graphs": ("cuda_graphs", True)}


def engine_loop(accelerator: Accelerator, splits: data.Splits, order: torch.Tensor, settings: CellSettings,
                record: bool, floor: bool = False, engine: Engine | None = None,
                name: str | None = None) -> tuple[Run, Run | None]:
    """The harness's own step (training/engine.py) through the one step loop (training/steps.py),
    exactly as `harness run` drives it; with `floor` under cuda_graphs, also the same number of
    bare replays (the replay-only floor). `engine`: one built before (bench_batch resets it)."""
    batch = settings.train.batch_size
    steps = len(order) // batch
    engine = engine or build_engine(settings, accelerator, splits, workloads.builtin(settings))
    batches = order.view(steps, batch).to(accelerator.device)
    losses, checked = [], []

    def keep(step: int, loss: torch.Tensor) -> None:
        if step == CHECK_STEPS - 1:
            checked.append(loss.clone())  # stays on the device: no sync inside the window
        if record:
            losses.append(loss.item())  # a sync every step: only when asked

    run_steps(engine, batches.__getitem__, 0, WARMUP_STEPS, timed=False, on_loss=keep)
    timed = run_steps(engine, batches.__getitem__, WARMUP_STEPS, steps, on_loss=keep)
    run = Run(loop=name or settings.train.mode, steps=steps, images=steps * batch, seconds=timed.seconds,
              timed_images=(steps - WARMUP_STEPS) * batch,
              check_loss=checked[0].item(), losses=losses if record else [])
    if floor and engine.graph is not None:
        graph = engine.graph
        replay = run_steps(replace(engine, step=lambda idx: graph.replay_only()), batches.__getitem__, WARMUP_STEPS,
                           steps)
        return run, Run(loop="replay_floor", steps=steps, images=steps * batch, seconds=replay.seconds,
                        timed_images=run.timed_images, check_loss=run.check_loss, losses=[])
    return run, None


def settings_for(batch: int, mode: str, threads: int | None = None) -> CellSettings:
    """`threads`: bench's --threads; an engine sets torch's count from its settings when built."""
    return CellSettings(train=TrainSettings(batch_size=batch, seed=0, mode=mode, untimed_steps=WARMUP_STEPS,
                                            threads=threads))


def timed_steps_for(seconds_per_step: float) -> int:
    """At least MIN_TIMED_STEPS steps and MIN_TIMED_SECONDS, unless that would run past
    MAX_TIMED_SECONDS; never fewer than CHECK_STEPS."""
    wanted = max(MIN_TIMED_STEPS, math.ceil(MIN_TIMED_SECONDS / seconds_per_step))
    return max(CHECK_STEPS, min(wanted, math.ceil(MAX_TIMED_SECONDS / seconds_per_step)))


class Engines:
    """One engine per loop and batch size, built once (torch.compile compiles once, a CUDA graph is
    captured once) and put back to its initial weights and optimizer state before every repeat."""

    def __init__(self, accelerator: Accelerator, splits: data.Splits, batch: int, threads: int | None):
        self.accelerator, self.splits, self.batch, self.threads = accelerator, splits, batch, threads
        self.built: dict[str, tuple[Engine, list[torch.Tensor]]] = {}

    def fresh(self, loop: str) -> Engine:
        if loop not in self.built:
            mode, lean = LOOPS[loop]
            settings = settings_for(self.batch, mode, self.threads)
            engine = build_engine(settings, self.accelerator, self.splits, workloads.builtin(settings), lean=lean)
            self.built[loop] = engine, [p.detach().clone() for p in engine.eval_model.parameters()]
        engine, initial = self.built[loop]
        with torch.no_grad():  # in place: a captured graph keeps reading the same tensors
            for param, start in zip(engine.eval_model.parameters(), initial):
                param.copy_(start)
            for state in engine.optimizer.state.values():  # Adam's moments and step count start at zero
                for value in state.values():
                    if torch.is_tensor(value):
                        value.zero_()
        return engine


def calibrate(engines: Engines, loop: str) -> float:
    """Seconds per step of one engine loop, from CHECK_STEPS steps after its warm-up."""
    stream = IndexStream(engines.splits.n_train, "shuffle", seed=0)
    order = stream.next((WARMUP_STEPS + CHECK_STEPS) * engines.batch)
    run, _ = engine_loop(engines.accelerator, engines.splits, order, settings_for(engines.batch, LOOPS[loop][0]), False,
                         engine=engines.fresh(loop), name=loop)
    return run.seconds / (run.steps - WARMUP_STEPS)


def bench_batch(accelerator, dataset, splits, batch: int, loops: list[str], repeats: int,
                with_reference: bool, threads: int | None) -> list[Run]:
    engines = Engines(accelerator, splits, batch, threads)
    steps = WARMUP_STEPS + timed_steps_for(calibrate(engines, loops[0]))
    val_size = settings_for(batch, "eager").data.val_size
    order = IndexStream(splits.n_train, "shuffle", seed=0).next(steps * batch)
    runs: list[Run] = []
    everyone = (["reference"] if with_reference else []) + loops
    for rep in range(repeats):
        # alternate, and rotate who goes first, so drift in the machine hits every loop alike
        for loop in everyone[rep % len(everyone):] + everyone[: rep % len(everyone)]:
            if loop == "reference":
                runs.append(reference_loop(accelerator, dataset, (order + val_size).tolist(),
                                           settings_for(batch, "eager"), False))
            else:
                run, floor = engine_loop(accelerator, splits, order, settings_for(batch, LOOPS[loop][0]), False,
                                         floor=rep == 0, engine=engines.fresh(loop), name=loop)
                runs += [run] + ([floor] if floor else [])
    return runs


def summarize_runs(runs: list[Run], batch: int, device_name: str, peak: float | None,
                   flops: int | None) -> list[dict]:
    """One row per loop. Work is checked against the reference loop, or (above
    --skip-reference-above) against the first engine loop; ratios are to the reference's and to the
    Accelerate-wrapped step's median where those ran."""
    by_loop: dict[str, list[Run]] = {}
    for run in runs:
        by_loop.setdefault(run.loop, []).append(run)
    baseline = by_loop.get("reference") or next(g for loop, g in by_loop.items() if loop != "replay_floor")

    def median(loop: str) -> float | None:
        return statistics.median(r.seconds / r.timed_images for r in by_loop[loop]) if loop in by_loop else None

    rows = []
    for loop, group in by_loop.items():
        per_image = [r.seconds / r.timed_images for r in group]
        this = statistics.median(per_image)
        diff = abs(group[0].check_loss - baseline[0].check_loss)
        same = (group[0].images == baseline[0].images and group[0].steps == baseline[0].steps
                and (loop in ("reference", "replay_floor") or diff <= LOSS_TOLERANCE[LOOPS[loop][0]]))
        rows.append({
            "device": device_name, "batch_size": batch, "loop": loop, "repeats": len(group),
            "steps": group[0].steps, "timed_steps": group[0].timed_images // batch, "images": group[0].images,
            "time_per_image_median_s": this, "time_per_image_min_s": min(per_image),
            "time_per_image_max_s": max(per_image),
            "reference_over_this": median("reference") / this if "reference" in by_loop else None,
            "accelerate_step_over_this": median("eager_accelerate") / this if "eager_accelerate" in by_loop else None,
            "mfu": mfu(flops, this, peak, 1), "check_loss": group[0].check_loss, "loss_diff_vs_reference": diff,
            "same_work": same,
        })
    return rows


def run_bench(mnist_folder: Path, batches: list[int], loops: list[str] | None, repeats: int, out_dir: Path,
              skip_reference_above: int | None = None, threads: int | None = None, quick: bool = False) -> list[dict]:
    from torchvision.datasets import MNIST
    from torchvision.transforms import ToTensor

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    torch.set_flush_denormal(True)
    threads_record = apply_threads(threads)
    cuda = accelerator.device.type == "cuda"
    # compile is left out of --quick on a CPU: building it takes minutes there
    loops = loops or (["eager", "eager_accelerate"] + ([] if quick and not cuda else ["compile"])
                      + (["cuda_graphs"] if cuda else []))
    for loop in loops:  # before any timing: cuda_graphs needs a CUDA device
        check_launch(settings_for(1, LOOPS[loop][0]), accelerator)
    dataset = MNIST(str(torchvision_root(mnist_folder)), train=True, download=False, transform=ToTensor())
    splits = data.to_device(images.load_mnist(mnist_folder), settings_for(1, "eager").data.val_size, accelerator.device)
    env = measure.environment(accelerator.device, 1, str(accelerator.distributed_type), "no") | threads_record
    peak = peak_flops(env["device_name"], compute_precision("no")) if cuda else None
    model = build_mlp(settings_for(1, "eager").model).to(accelerator.device)
    flops = count_flops(model, *splits.train_prefix(64), F.cross_entropy)
    rows = []
    for batch in batches:
        with_reference = skip_reference_above is None or batch <= skip_reference_above
        runs = bench_batch(accelerator, dataset, splits, batch, loops, repeats, with_reference, threads)
        rows += summarize_runs(runs, batch, env["device_name"], peak, flops)
        print(format_rows([r for r in rows if r["batch_size"] == batch], header=batch == batches[0]), flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    document = {"schema_version": BENCH_SCHEMA_VERSION, "environment": env, "warmup_steps": WARMUP_STEPS,
                "check_steps": CHECK_STEPS, "loss_tolerance": LOSS_TOLERANCE, "loops": loops,
                "timed_steps_rule": {"min_steps": MIN_TIMED_STEPS, "min_seconds": MIN_TIMED_SECONDS,
                                     "max_seconds": MAX_TIMED_SECONDS}, "skip_reference_above": skip_reference_above,
                "peak_flops": peak, "flops_per_example": flops, "date_utc": utc_now(), "rows": rows}
    write_atomic(out_dir / "bench.json", json.dumps(document, indent=2) + "\n")
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(out_dir / "bench.csv", table.getvalue())
    return rows


def format_rows(rows: list[dict], header: bool) -> str:
    lines = []
    if header:
        lines.append(f"device: {rows[0]['device']}  (time per image: median of repeats; ratios = that loop's "
                     f"median / this loop's, measured side by side)")
        lines.append(f"{'batch':>6} {'loop':>16} {'steps':>6} {'us/image':>10} {'min..max':>17} {'ref/this':>8} "
                     f"{'accel/this':>10} {'MFU':>7} {'same work':>9}")

    def ratio(value: float | None, width: int) -> str:
        return f"{value:>{width}.2f}" if value is not None else f"{'—':>{width}}"

    for r in rows:
        us = r["time_per_image_median_s"] * 1e6
        spread = f"{r['time_per_image_min_s'] * 1e6:.2f}..{r['time_per_image_max_s'] * 1e6:.2f}"
        mfu_text = f"{r['mfu']:.1%}" if r["mfu"] is not None else "—"
        lines.append(f"{r['batch_size']:>6} {r['loop']:>16} {r['timed_steps']:>6} {us:>10.3f} {spread:>17} "
                     f"{ratio(r['reference_over_this'], 8)} {ratio(r['accelerate_step_over_this'], 10)} "
                     f"{mfu_text:>7} {'yes' if r['same_work'] else 'NO':>9}")
    return "\n".join(lines)
