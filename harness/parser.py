"""The `harness` command line: every command, its options and their help. Nothing here loads torch,
so `harness --help`, `plan`, `status` and `report` start at once."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.paths import DEFAULT_CONFIG
from harness.training import images

DATA_DIR_HELP = (f"folder with the four .gz files of the sweep's images (or MNIST/raw, FashionMNIST/raw, or mnist/ "
                 f"and fashion-mnist/ inside it or beside it); default: ${images.DATA_DIR_ENV}, else download into "
                 f"{images.CACHE_DIR}")
JSON_HELP = "end with the answer as one JSON object on stdout (everything else goes to stderr)"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number >= 1")
    return value


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"sweep config YAML (default: {DEFAULT_CONFIG})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting (train.epochs=3), or a swept list (sweep.train.batch_size=[8,64]); "
                        "pinning a swept key removes it from the sweep; repeatable")
    p.add_argument("--results-dir", default="results", help="results root; cells go to RESULTS_DIR/<sweep>/<cell-id>/ "
                                                            "(default: results)")
    p.add_argument("--debug", action="store_true",
                   help="where the workload's own code fails, print its whole traceback")
    p.add_argument("--threads", type=_positive, help="CPU threads per process (train.threads; default: the cores the "
                                                     "process owns / processes per node, however it is launched)")


def build_parser(prog: str = "harness") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Find the batch-size sweet spot of a model: the MNIST "
                                     "MLP by default, or your own (docs/workloads.md).")
    sub = parser.add_subparsers(dest="command", required=True)
    _run(sub)
    _predict(sub)
    plan = sub.add_parser("plan", help="list a sweep's cells, their ids and status, without training",
                          description="Print each cell of the sweep in run order: index, id, status "
                                      "(done/running/failed/... from its result.json, or pending) and swept values.")
    add_config_args(plan)
    _report(sub)
    _retime(sub)
    _bench(sub)
    _capacity(sub)
    _branch(sub)
    _slurm(sub)
    status = sub.add_parser("status", help="status of every cell under a results folder",
                            description="Per cell, by batch size then seed: done / running / failed / oom / diverged, "
                                        "whether a checkpoint waits, epochs done, and the Slurm job and task it ran "
                                        "under; when every cell is done, the answer. `harness plan --config X` also "
                                        "lists the cells not started (pending).")
    status.add_argument("folder", type=Path, metavar="RESULTS_DIR",
                        help="a sweep's results folder, e.g. results/default")
    status.add_argument("--json", action="store_true", help=JSON_HELP)
    return parser


def _run(sub) -> None:
    run = sub.add_parser("run", help="train every cell of a sweep (also: accelerate launch harness/run.py)",
                         description="Train the cells of a sweep under Accelerate; cells already done are skipped. "
                                     "Launch with `accelerate launch [--multi_gpu --num_processes P] harness/run.py` "
                                     "or torchrun for several processes; batch sizes are GLOBAL. Ends with the answer "
                                     "in one line.")
    add_config_args(run)
    run.add_argument("--data-dir", help=DATA_DIR_HELP)
    run.add_argument("--cells", help="comma-separated cell ids to run (see `harness plan`)")
    run.add_argument("--retrain", metavar="IDS", help="comma-separated ids of done cells to train again, e.g. those "
                     "the report says were timed on a busy machine (their records are kept as result.json.retrained-*)")
    run.add_argument("--array-index", type=int, help="run only the cell at this index of the plan (Slurm arrays)")
    run.add_argument("--quiet", action="store_true", help="no progress bars (per-epoch lines still print)")
    run.add_argument("--no-report", action="store_true", help="do not write RESULTS_DIR/<sweep>/report.html at the end")
    run.add_argument("--fail-fast", action="store_true", help="stop the sweep at the first cell that raises "
                                                              "(default: record it as failed and go on)")
    run.add_argument("--json", action="store_true", help=JSON_HELP)
    run.add_argument("--force", action="store_true",
                     help="use a results folder planned with another config: its plan.json is replaced, "
                     "its cells stay (the report keeps cells whose settings differ apart)")


def _predict(sub) -> None:
    pred = sub.add_parser("predict", help="predict the sweet spot from short runs, without the grid",
                          description="Run the grid's batch sizes at 2/7, 4/7 and 6/7 of the way along it to the "
                                      "target (a short run each, up to 2 seeds), time every batch size for a few "
                                      "hundred steps, fit S(B) = S_min (1 + B_noise / B), and write "
                                      "RESULTS_DIR/<sweep>/predict.json; writes no cell result. Where it cannot vouch "
                                      "for the answer (a target near what the short runs reach, a model that misses a "
                                      "batch size, a sweet spot outside those measured, checks too sparse to read a "
                                      "crossing) it says why and exits 2 "
                                      "unless --force. --verify then trains "
                                      "the predicted sweet spot and its two neighbours as ordinary cells (reusing "
                                      "predict.json when it was made from the same config). Also: accelerate launch "
                                      "harness/run.py --predict [--verify] ...")
    add_config_args(pred)
    pred.add_argument("--data-dir", help=DATA_DIR_HELP)
    pred.add_argument("--verify", action="store_true", help="then train the predicted sweet spot and its neighbours")
    pred.add_argument("--force", action="store_true", help="predict even where the prediction doubts itself "
                      "(the doubts are printed and kept in predict.json)")
    pred.add_argument("--quiet", action="store_true", help="no progress bars while verifying")
    pred.add_argument("--no-report", action="store_true", help="with --verify: do not rebuild the report")
    pred.add_argument("--json", action="store_true", help=JSON_HELP)


def _report(sub) -> None:
    rep = sub.add_parser("report", help="build one self-contained HTML report from results folders",
                         description="Read every result.json under the folders and write one HTML file "
                                     "(figures inline, no network) and report.csv beside it; end with the answer.")
    rep.add_argument("folders", nargs="+", type=Path, metavar="RESULTS_DIR",
                     help="results folders (a sweep's, e.g. results/default; several are compared side by side)")
    rep.add_argument("-o", "--output", type=Path, default=Path("report.html"),
                     help="HTML file to write (default: report.html in the working folder)")
    rep.add_argument("--target", type=float, help="target validation accuracy (default: from the results' config)")
    rep.add_argument("--tolerance", type=float, help="accuracy tolerance for the sweet spot (default: from config)")
    rep.add_argument("--json", action="store_true", help=JSON_HELP)


def _retime(sub) -> None:
    retime = sub.add_parser("retime", help="measure a finished folder's seconds per step again, without training",
                            description="One timing pass per batch size of the folder's done cells (warm-up untimed), "
                                        "written to retime.json; the report then reads time to target as each cell's "
                                        "steps x the re-timed seconds per step. For cells timed on a busy machine, or "
                                        "another machine's sweet spot from the same runs.")
    retime.add_argument("folder", type=Path, metavar="RESULTS_DIR", help="a sweep's folder, e.g. results/default")
    retime.add_argument("--device", choices=["cpu", "cuda"],
                        help="time on this device (default: a GPU where there is one, else the CPU)")
    retime.add_argument("--data-dir", help=DATA_DIR_HELP)
    retime.add_argument("--no-report", action="store_true", help="do not rebuild RESULTS_DIR/report.html")
    retime.add_argument("--json", action="store_true", help=JSON_HELP)


def _bench(sub) -> None:
    bench = sub.add_parser("bench", help="time the harness engine against a plain DataLoader loop, side by side",
                           description="One process. For each batch size, train the same model on the same images "
                                       "with the reference loop (torchvision MNIST + DataLoader + accelerator.prepare "
                                       "+ loss.item() every step) and with the harness engine in each mode, "
                                       "alternating repeats; print median time per image, the ratio, MFU, and "
                                       "check both did the same work (images, steps, loss at step 20). Writes "
                                       "OUT/bench.json and OUT/bench.csv.")
    bench.add_argument("--batch-sizes", help="comma-separated (default: 1,4,16,64,256,1024,4096,16384)")
    bench.add_argument("--repeats", type=int, default=3, help="alternating repeats per loop (default 3)")
    bench.add_argument("--modes", help="engine loops to time: eager (the lean step), eager_accelerate (the same step "
                                       "through Accelerate's wrappers), compile, cuda_graphs (default: all that apply "
                                       "here)")
    bench.add_argument("--skip-reference-above", type=_positive, metavar="B",
                       help="no reference loop above batch B (its DataLoader takes ~20 s a repeat at 16384); the "
                            "first engine loop is then the same-work baseline")
    bench.add_argument("--threads", type=_positive, help="CPU threads (default: the cores this process owns)")
    bench.add_argument("--quick", action="store_true", help="batch sizes 1,16,256, 2 repeats, no compile on a CPU "
                                                            "(it takes minutes to build there): a smoke run")
    bench.add_argument("--out", type=Path, default=Path("results/bench"),
                       help="folder for bench.json and bench.csv (default: results/bench)")
    bench.add_argument("--data-dir", help=f"MNIST folder (default: ${images.DATA_DIR_ENV}, else download)")


def _capacity(sub) -> None:
    cap = sub.add_parser("capacity", help="the largest micro-batch per process that fits, every process agreeing",
                         description="Doubling, then bisection, on the micro-batch of the config's first cell; each "
                                     "trial a few real optimizer steps (forward, backward, update) in its engine mode "
                                     "and precision; after each, one all-gather of 'fits' (it fits where every "
                                     "rank's did). Writes RESULTS_DIR/<sweep>/capacity.json (every trial, a memory "
                                     "model, the largest that fits less the margin), which "
                                     "train.micro_batch_size=auto reads. Several processes: accelerate launch "
                                     "--multi_gpu --num_processes P -m harness.cli capacity ...")
    add_config_args(cap)
    cap.add_argument("--data-dir", help=DATA_DIR_HELP)
    cap.add_argument("--margin", type=float, default=0.1, help="safety margin below the largest that fits (default "
                                                               "0.1: 10%%)")
    cap.add_argument("--memory-limit", metavar="SIZE[,SIZE...]",
                     help="a limit on each process's memory (RLIMIT_DATA; e.g. 2GiB, or one per process: 3GiB,1GiB): "
                          "on a CPU, what stands in for device memory")
    cap.add_argument("--json", action="store_true", help=JSON_HELP)


def _branch(sub) -> None:
    br = sub.add_parser("branch", help="the critical batch over training, by branching; proposes a batch schedule",
                        description="Per seed of the grid, one base run at a small batch; at log-spaced steps of it, "
                                    "branches at several batch sizes train the same examples from the same weights "
                                    "and optimizer state (the rate held at the base's, moved by optim.lr_scaling); "
                                    "their held-out loss gains give B_crit there (McCandlish et al.'s relation), "
                                    "beside B_simple. Writes RESULTS_DIR/<sweep>/branch.json and proposes the "
                                    "train.batch_schedule that follows B_crit(t); --verify trains it beside the "
                                    "grid's fixed batch sizes (docs/critical-batch.md).")
    add_config_args(br)
    br.add_argument("--data-dir", help=DATA_DIR_HELP)
    br.add_argument("--points", type=_positive, default=6, help="branch points, log-spaced over the base run "
                                                                "(default 6)")
    br.add_argument("--base-batch", type=_positive, help="the base run's batch (default: the grid's second smallest)")
    br.add_argument("--factors", help="branch batch sizes as multiples of the centre batch, which follows B_crit "
                                      "(default 0.25,0.5,1,2,4)")
    br.add_argument("--branch-steps", type=_positive, default=12,
                    help="steps of the largest branch; every branch trains as many examples (default 12)")
    br.add_argument("--threshold", type=float, default=0.05,
                    help="switch only where the predicted time saved is at least this share (default 0.05; "
                         "-1: at every point, to the larger batch predicted best)")
    br.add_argument("--verify", action="store_true", help="then train the proposed schedule beside the grid")
    br.add_argument("--quiet", action="store_true", help="no progress bars")
    br.add_argument("--no-report", action="store_true", help="with --verify: do not rebuild the report")
    br.add_argument("--json", action="store_true", help=JSON_HELP)


def _slurm(sub) -> None:
    slurm = sub.add_parser("slurm", help="submit a sweep to Slurm as one array job",
                           description="Slurm: one array task per cell that is not done yet.")
    slurm_sub = slurm.add_subparsers(dest="slurm_command", required=True)
    # descriptions are printed as they are; help strings go through %-formatting (hence %% there)
    submit = slurm_sub.add_parser("submit", help="submit the cells not yet done as ONE array job",
                                  description="Submit one array job over the cells whose result.json is not done; "
                                              "the array index is the cell's index in `harness plan`. Logs go to "
                                              "RESULTS_DIR/<sweep>/slurm/%A_%a.out. Tasks checkpoint on the "
                                              "warning signal and requeue themselves.")
    add_config_args(submit)
    submit.add_argument("--data-dir", help="the images' folder as the compute nodes see it (passed to every task; "
                                           f"default: ${images.DATA_DIR_ENV} where the tasks run, else download)")
    submit.add_argument("--force", action="store_true",
                        help="use a results folder planned with another config: its plan.json is replaced, "
                     "its cells stay (the report keeps cells whose settings differ apart)")
    submit.add_argument("--max-parallel", type=int, metavar="K", help="at most K tasks at once (--array=...%%K)")
    submit.add_argument("--partition", help="Slurm partition")
    submit.add_argument("--gpus-per-task", type=int, default=1, metavar="G",
                        help="G > 1 runs `accelerate launch --multi_gpu --num_processes G` in each task")
    submit.add_argument("--nodes", type=int, default=1, metavar="N",
                        help="N > 1: each cell across N nodes (slurm/multinode.sbatch)")
    submit.add_argument("--time", metavar="HH:MM:SS", help="time limit per task")
    submit.add_argument("--account", help="Slurm account")
    submit.add_argument("--dry-run", action="store_true", help="print the sbatch command and script; submit nothing")


def launcher_help(command: str) -> str:
    """`harness/run.py --help`: the options of `harness run` (or, with --predict, of `harness
    predict`) under the launcher's own usage line."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    text = commands[command].format_help()
    usage = "usage: accelerate launch [--multi_gpu --num_processes P] harness/run.py" + \
        (" --predict" if command == "predict" else " [--predict]")
    block, rest = text.split("\n\n", 1)  # argparse's usage block, then the description and options
    note = ("harness/run.py is `harness run` under a launcher (accelerate launch, torchrun, Slurm); with --predict "
            "it is `harness predict`.")
    return f"{usage}{block.removeprefix(f'usage: harness {command}')}\n\n{note}\n\n{rest}"
