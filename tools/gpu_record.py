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
from models import write_json  # noqa: E402

BENCH_LINE = re.compile(r"^4\. (?P<model>\w+)\s+(?P<mode>.+?)\s+(?P<rate>[\d,]+) img/s\s+(?P<memory>[\d.]+) GiB\s+"
                        r"(?P<minutes>[\d.]+) min / 100 epochs$")
LOG_MODES = {"log-fp32.jsonl": "float32", "log-bf16.jsonl": "bf16 + channels-last",
             "log-compile.jsonl": "bf16 + channels-last + compile"}
WHOLE_SPLIT = 49_000  # train.py's default on CIFAR-10: the training split less its 1,000 validation images
MODEL = "resnet18"  # the network the record describes (bench.py may time others beside it)


def commands(epochs: int, models: set) -> dict:
    """The commands that made a measurement folder's files (`epochs`: the float32 run's; `models`: those bench.txt
    times: ResNet-18 alone is what `--models resnet18` gives)."""
    return {"bench": "python bench.py --device cuda --quick" + (f" --models {MODEL}" if models == {MODEL} else ""),
            "train": f"python train.py --dataset npz --train-npz cifar10_train.npz --test-npz cifar10_test.npz --weat adv "
                     f"--epochs {epochs} --amp none | --amp bf16 --channels-last | --amp bf16 --channels-last --compile",
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


def machine(path: str) -> dict:
    """The GPU, its memory and driver, torch's version and the CPU cores, from env.txt."""
    lines = [line.strip() for line in open(path) if line.strip()]
    name, memory, driver = [v.strip() for v in lines[1].split(",")]
    return {"system": f"{name}, {memory}, driver {driver}", "cpu_cores": int(lines[3]), "torch_threads": None,
            "torch": lines[2].split()[1], "device": name}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("folder", help="the measurement folder (env.txt, bench.txt, log-*.jsonl, eval-*.json)")
    p.add_argument("--commit", required=True, help="the commit of the repo that measured")
    p.add_argument("--date", required=True, help="the day it measured (YYYY-MM-DD)")
    p.add_argument("--results", required=True, help="the results file to write")
    args = p.parse_args(argv)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    commit = subprocess.run(["git", "rev-parse", args.commit], cwd=root, capture_output=True, text=True).stdout.strip()
    if not commit:
        p.error(f"--commit {args.commit} is not a commit of this repository")
    logs = {mode: epochs_of(os.path.join(args.folder, name)) for name, mode in LOG_MODES.items()
            if os.path.isfile(os.path.join(args.folder, name))}
    if "float32" not in logs:
        p.error(f"{args.folder} has no log-fp32.jsonl (the float32 run's train.py log): it is what GPU times derive from")
    evals = sorted(glob.glob(os.path.join(args.folder, "eval-*.json")))
    if not evals:
        p.error(f"{args.folder} has no eval-*.json (evaluate.py's report): the GPU times of evaluations derive from it")
    trained = os.path.join(args.folder, "args-fp32.json")
    images = WHOLE_SPLIT
    if os.path.isfile(trained):
        with open(trained) as f:
            images = json.load(f).get("train_subset") or WHOLE_SPLIT
    write_json(args.results, {
        "provenance": {"command": "python tools/gpu_record.py " + " ".join(argv or sys.argv[1:]), "commit": commit,
                       "data": [], "machine": machine(os.path.join(args.folder, "env.txt")), "date": args.date},
        "measured_once": "once, on one lent machine, with the repo's own bench.py, train.py and evaluate.py at that "
                         "commit; nothing else ran on the GPU",
        "commands": commands(len(logs["float32"]), bench_models(os.path.join(args.folder, "bench.txt"))),
        "setting": {"model": MODEL, "width": 64, "method": "weat-adv", "steps": 10, "batch_size": 128, "train_images": images,
                    "val_points": 1_000},
        "bench": bench_rows(os.path.join(args.folder, "bench.txt")), "train_epochs": logs,
        "evaluation": evaluation(evals[0])})


if __name__ == "__main__":
    main()
