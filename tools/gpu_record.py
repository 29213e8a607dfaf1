"""Developer record: GPU measurements made with the repo's own commands on a lent machine, as a results file.

The measurement folder holds what those commands printed or wrote there, the layout `bash bench_cuda.sh` writes
to its OUT folder: env.txt (nvidia-smi's name, memory and driver; the torch version; the CPU cores); bench.txt
(`python bench.py --device cuda --quick`: its ResNet-18 lines are read); log-fp32.jsonl, log-bf16.jsonl
(log-compile.jsonl): train.py's logs of `python train.py --weat adv [--amp bf16 --channels-last [--compile]]` on
CIFAR-10; args-fp32.json: the float32 run's args.json (how many training images it saw; without it, train.py's
default, the whole training split less 1,000 validation images); eval-*.json: `python evaluate.py --ckpt ...
--n-examples 1000` of one of those models. This reads them and writes one results file whose provenance names
the commit and the machine that measured, so that the experiments page and `experiments.py --dry-run` derive
their GPU times from measurements, not from targets.

    python tools/gpu_record.py MEASUREMENT_FOLDER --commit 66277ff --date 2026-11-29 --results results/gpu-h200.json
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data import default_train_images  # noqa: E402
from models import write_json  # noqa: E402

BENCH_LINE = re.compile(r"^4\. (?P<model>\w+)\s+(?P<mode>.+?)\s+(?P<rate>[\d,]+) img/s\s+(?P<memory>[\d.]+) GiB\s+"
                        r"(?P<minutes>[\d.]+) min / 100 epochs$")
LOG_MODES = {"log-fp32.jsonl": "float32", "log-bf16.jsonl": "bf16 + channels-last",
             "log-compile.jsonl": "bf16 + channels-last + compile"}
WHOLE_SPLIT = default_train_images("cifar10")  # train.py's default on CIFAR-10: the split less its validation images
MODEL = "resnet18"  # the network the record describes (bench.py may time others beside it)


def commands(epochs: int, models: set, trained: dict = None) -> dict:
    """The commands that made a measurement folder's files (`epochs`: the float32 run's logged epochs; `models`:
    those bench.txt times, ResNet-18 alone being what `--models resnet18` gives; `trained`: the float32 run's
    args.json, where the folder has it: its epochs, images and data flags)."""
    data = "--dataset npz --train-npz cifar10_train.npz --test-npz cifar10_test.npz"
    if trained:
        epochs = trained.get("epochs", epochs)
        data = ("--dataset npz --train-npz cifar10_train.npz --test-npz cifar10_test.npz" if trained.get("dataset") == "npz"
                else f"--dataset {trained.get('dataset', 'cifar10')}")
        data += f" --train-subset {trained['train_subset']}" if trained.get("train_subset") else ""
    return {"bench": "python bench.py --device cuda --quick" + (f" --models {MODEL}" if models == {MODEL} else ""),
            "train": f"python train.py {data} --weat adv --epochs {epochs} --amp none | --amp bf16 --channels-last | "
                     "--amp bf16 --channels-last --compile",
            "evaluate": "python evaluate.py --ckpt <the bf16 run>/last.pt --n-examples 1000"}


def bench_models(path: str) -> set:
    """The networks bench.txt has lines of."""
    with open(path) as f:
        return {m["model"] for m in map(BENCH_LINE.match, (line.strip() for line in f)) if m}


def bench_rows(path: str) -> list:
    """bench.py's ResNet-18 lines (the last of each mode): images/s, peak memory, minutes per 100 epochs."""
    rows = {}
    with open(path) as f:
        for line in f:
            m = BENCH_LINE.match(line.strip())
            if m and m["model"] == MODEL:
                rows[m["mode"]] = {"mode": m["mode"], "model": m["model"], "images_per_s": int(m["rate"].replace(",", "")),
                                   "memory_gib": float(m["memory"]), "minutes_per_100_epochs": float(m["minutes"])}
    return list(rows.values())


def epochs_of(path: str) -> list:
    """A train.py log's epochs: seconds (validation PGD-20 on 1,000 points included) and validation accuracy."""
    with open(path) as f:
        return [{"epoch": r["epoch"], "seconds": r["seconds"], "val_pgd_acc": r["val_pgd_acc"]} for r in map(json.loads, f)]


def evaluation(path: str) -> dict:
    """An evaluate.py report's points, seconds in all and per attack."""
    with open(path) as f:
        r = json.load(f)
    return {"n": r["n"], "seconds": r["seconds"], "cascade_seconds": r["cascade"]["seconds"],
            "attacks": {k[1:]: r[k]["seconds"] for k in r if k.startswith("+")}, "pgd20_seconds": r["pgd-20"]["seconds"],
            "clean": r["clean"]["accuracy"], "pgd20": r["pgd-20"]["accuracy"], "cascade": r["cascade"]["accuracy"]}


class RecordError(Exception):
    """A measurement folder that cannot be read as one: the message says what is missing."""


def machine(path: str) -> dict:
    """The GPU, its memory and driver, torch's version and the CPU cores, from env.txt (read by content: nvidia-smi's
    CSV header and its first GPU's line, the line starting `torch `, the last line's core count)."""
    lines = [line.strip() for line in open(path) if line.strip()]
    header = next((i for i, line in enumerate(lines) if line.startswith("name,")), None)
    torch_line = next((line for line in lines if line.startswith("torch ")), None)
    if header is None or header + 1 >= len(lines) or lines[header + 1].count(",") != 2 or torch_line is None \
            or not lines[-1].isdigit():
        raise RecordError(f"{path} lacks nvidia-smi's GPU line, the torch line or the core count (bench_cuda.sh writes all three)")
    name, memory, driver = [v.strip() for v in lines[header + 1].split(",")]
    return {"system": f"{name}, {memory}, driver {driver}", "cpu_cores": int(lines[-1]), "torch_threads": None,
            "torch": torch_line.split()[1], "device": name}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("folder", help="the measurement folder (env.txt, bench.txt, log-*.jsonl, eval-*.json)")
    p.add_argument("--commit", required=True, help="the commit of the repo that measured")
    p.add_argument("--date", required=True, help="the day it measured (YYYY-MM-DD)")
    p.add_argument("--results", required=True, help="the results file to write")
    args = p.parse_args(argv)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "rev-parse", args.commit], cwd=root, capture_output=True, text=True).stdout.strip()
    except OSError:
        p.error("git is not installed: the record names the commit that measured")
    if not commit:
        p.error(f"--commit {args.commit} is not a commit of this repository")
    logs = {mode: epochs_of(os.path.join(args.folder, name)) for name, mode in LOG_MODES.items()
            if os.path.isfile(os.path.join(args.folder, name))}
    if "float32" not in logs:
        p.error(f"{args.folder} has no log-fp32.jsonl (the float32 run's train.py log): it is what GPU times derive from")
    evals = sorted(glob.glob(os.path.join(args.folder, "eval-*.json")))
    if not evals:
        p.error(f"{args.folder} has no eval-*.json (evaluate.py's report): the GPU times of evaluations derive from it")
    if any(os.path.basename(e) == "eval-bf16.json" for e in evals) and "bf16 + channels-last" not in logs:
        p.error(f"{args.folder} has eval-bf16.json but no log-bf16.jsonl: the evaluated model's run is missing")
    trained = None
    if os.path.isfile(os.path.join(args.folder, "args-fp32.json")):
        with open(os.path.join(args.folder, "args-fp32.json")) as f:
            trained = json.load(f)
    try:
        env = machine(os.path.join(args.folder, "env.txt"))
    except (OSError, RecordError) as e:
        p.error(str(e))
    write_json(args.results, {
        "provenance": {"command": "python tools/gpu_record.py " + " ".join(argv or sys.argv[1:]), "commit": commit,
                       "data": [], "machine": env, "date": args.date},
        "measured_once": "once, on one lent machine, with the repo's own bench.py, train.py and evaluate.py at that "
                         "commit; nothing else ran on the GPU",
        "commands": commands(len(logs["float32"]), bench_models(os.path.join(args.folder, "bench.txt")), trained),
        "setting": {"model": MODEL, "width": 64, "method": "weat-adv", "steps": 10, "batch_size": 128,
                    "train_images": (trained or {}).get("train_subset") or WHOLE_SPLIT, "val_points": 1_000},
        "bench": bench_rows(os.path.join(args.folder, "bench.txt")), "train_epochs": logs,
        "evaluation": evaluation(evals[0])})


if __name__ == "__main__":
    main()
