"""The paper's experiments, one command each: train every run of a set, evaluate it, write the table.

    python experiments.py table-cifar10 --dry-run          # the commands and a rough GPU-time estimate
    python experiments.py table-cifar10 --seeds 3          # SAT, TRADES, WEAT-nat, WEAT-adv x 3 seeds
    python experiments.py ablation-weights                 # what in the WEAT weighting helps
    python experiments.py smoke                            # every stage on tiny synthetic data, CPU

A set is a list of runs (method x seed) on one data set and model. Each run is `train.py` into
RUNS_DIR/SET/METHOD-sSEED, then `evaluate.py` (PGD-20 and the AutoAttack-style cascade) on its
best.pt. Run the same command again and it skips what is finished, resumes a training run that was cut
off (`train.py --resume`) and continues an evaluation from its saved per-point results. The table goes
to RESULTS_DIR/SET.md and SET.json: one row per method, clean / PGD-20 / cascade accuracy as mean +- std
over seeds, with the paper's figures beside ours.

Flags such as --epochs, --width, --train-subset, --n-examples or --attacks shrink a set (e.g. for a
CPU); give such a run a --tag so its folders and table do not mix with the full set's.
"""
import argparse
import dataclasses
import json
import os
import shlex
import subprocess
import sys

import numpy as np

import evaluate
import train
from models import sha256_of

ROOT = os.path.dirname(os.path.abspath(__file__))
PAPER_TABLE = "Mirza et al. 2024 (ResNet-18; PGD-20 / AutoAttack, via ../shared/DESIGN.md's summary)"
# Robust accuracy % (PGD-20, AutoAttack) of ResNet-18 as summarised in DESIGN.md: targets, not verified truth.
PAPER = {
    "cifar10": {"sat": (49.03, 45.37), "trades": (52.65, 49.46), "weat-nat": (52.43, 49.02), "weat-adv": (53.35, 49.75)},
    "cifar100": {"sat": (23.89, 20.99), "trades": (28.53, 24.29), "weat-nat": (29.71, 24.88), "weat-adv": (30.90, 25.63)},
    "svhn": {"sat": (50.54, 44.87), "trades": (55.52, 48.13), "weat-nat": (55.31, 48.61), "weat-adv": (56.40, 49.60)},
    "tinyimagenet": {"trades": (None, 17.24), "weat-adv": (None, 18.45)},
}
METHODS = {"sat": ["--loss", "sat"], "trades": [], "weat-nat": ["--weat", "nat"], "weat-adv": ["--weat", "adv"]}
ABLATIONS = {  # ablation-weights: TRADES (w = 1), the paper's WEAT-adv, and WEAT-adv taken apart
    "trades": [],
    "weat-adv": ["--weat", "adv"],
    "weat-adv-normalized": ["--weat", "adv", "--weat-normalize"],
    "weat-adv-uniform": ["--weat", "adv", "--weat-fn", "uniform"],
    "weat-adv-kl-only": ["--weat", "adv", "--weat-terms", "kl"],
    "weat-adv-ce-only": ["--weat", "adv", "--weat-terms", "ce"],
}
SMOKE_TRAIN = ["--width", "4", "--epochs", "2", "--steps", "2", "--batch-size", "100", "--val-size", "100",
               "--eval-examples", "50", "--device", "cpu"]
SMOKE_EVAL = ["--n-examples", "100", "--n-iter", "5", "--n-queries", "20", "--attacks", "apgd-ce,apgd-t,fab-t,square"]
# Rough one-GPU seconds per training epoch, from issue 7's target (12 s per CIFAR-10 ResNet-18 epoch on an
# H100 with bf16) scaled by images x pixels; not measured: replace with bench.py figures when a GPU is used.
GPU_SECONDS_PER_EPOCH = {"cifar10": 12, "cifar100": 12, "svhn": 18, "tinyimagenet": 96, "synthetic": 0.1}
GPU_SECONDS_PER_EVAL = {"cifar10": 600, "cifar100": 600, "svhn": 1500, "tinyimagenet": 1200, "synthetic": 1}


@dataclasses.dataclass
class RunSet:
    dataset: str
    methods: dict  # method name -> train.py flags
    seeds: int = 3
    train_flags: tuple = ()
    eval_flags: tuple = ()
    plot_energies: bool = False  # the energy-curves figure (dE, E_nat, E_adv over epochs)
    every_stage: bool = False  # also the energy analysis and generation on the last run (smoke)


RUNSETS = {
    "table-cifar10": RunSet("cifar10", METHODS),
    "table-cifar100": RunSet("cifar100", METHODS),
    "table-svhn": RunSet("svhn", METHODS),
    "table-tinyimagenet": RunSet("tinyimagenet", METHODS),
    "ablation-weights": RunSet("cifar10", ABLATIONS),
    "overfitting": RunSet("cifar10", {k: METHODS[k] for k in ("sat", "trades", "weat-adv")}, seeds=1,
                          plot_energies=True),
    "smoke": RunSet("synthetic", METHODS, seeds=1, train_flags=tuple(SMOKE_TRAIN), eval_flags=tuple(SMOKE_EVAL),
                    plot_energies=True, every_stage=True),
}
FAST_FLAGS = ["--amp", "bf16", "--channels-last", "--compile"]
TRAIN_OVERRIDES = ("epochs", "width", "train_subset", "steps", "train_npz", "test_npz", "val_size", "eval_examples")
EVAL_OVERRIDES = ("n_examples", "attacks", "n_iter", "n_queries")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], usage="%(prog)s RUNSET [options]",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("runset", choices=RUNSETS, help="the experiment set")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 per method (default: 3; 1 for overfitting and smoke)")
    p.add_argument("--methods", default=None, help="comma-separated subset of the set's methods (default: all)")
    p.add_argument("--dry-run", action="store_true", help="print the commands and the estimated GPU time, run nothing")
    p.add_argument("--device", default="auto", help="passed to train.py and evaluate.py")
    p.add_argument("--fast", action="store_true", help="train with --amp bf16 --channels-last --compile (GPUs)")
    p.add_argument("--tag", default="", help="suffix of the set's folders and table, for a shrunk set")
    p.add_argument("--runs-dir", default=os.path.join("runs", "experiments"), help="where the run folders go")
    p.add_argument("--results-dir", default="results", help="where SET.md and SET.json go")
    shrink = p.add_argument_group("shrinking a set (passed to every train.py / evaluate.py call)")
    for name, kind in (("epochs", int), ("width", int), ("train-subset", int), ("steps", int), ("val-size", int),
                       ("eval-examples", int), ("train-npz", str), ("test-npz", str), ("n-examples", int),
                       ("attacks", str), ("n-iter", int), ("n-queries", int)):
        shrink.add_argument(f"--{name}", type=kind, default=None, help="default: the set's setting" + "%(default).0s")
    return p


class ExperimentError(RuntimeError):
    """A set cannot go on: a run failed, or a folder holds a run with other settings."""


@dataclasses.dataclass
class Run:
    method: str
    seed: int
    folder: str
    train_cmd: list
    eval_cmd: list

    @property
    def eval_file(self) -> str:
        return os.path.join(self.folder, "eval-best.json")


def set_name(args) -> str:
    return args.runset + (f"-{args.tag}" if args.tag else "")


def passed_on(args, names: tuple) -> list:
    """The shrinking flags the user gave, as command-line words."""
    words = []
    for name in names:
        if getattr(args, name) is not None:
            words += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return words


def plan(args) -> list:
    """Every run of the set: its folder and its train.py and evaluate.py commands."""
    runset = RUNSETS[args.runset]
    dataset = "npz" if args.train_npz else runset.dataset
    device = [] if args.device == "auto" else ["--device", args.device]
    fast = FAST_FLAGS if args.fast else []
    runs = []
    for method, flags in runset.methods.items():
        if args.methods and method not in args.methods.split(","):
            continue
        for seed in range(args.seeds or runset.seeds):
            folder = os.path.join(args.runs_dir, set_name(args), f"{method}-s{seed}")
            train_cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--dataset", dataset, *runset.train_flags,
                         *flags, *passed_on(args, TRAIN_OVERRIDES), *fast, "--seed", str(seed), *device,
                         "--out-dir", folder]
            eval_cmd = [sys.executable, os.path.join(ROOT, "evaluate.py"), "--ckpt", os.path.join(folder, "best.pt"),
                        *runset.eval_flags, *passed_on(args, EVAL_OVERRIDES), *device,
                        "--out", os.path.join(folder, "eval-best.json")]
            runs.append(Run(method, seed, folder, train_cmd, eval_cmd))
    return runs


def training_state(run: Run) -> str:
    """'done', 'partial' (resume it) or 'new'; refuses a folder holding a run with other settings."""
    intended = vars(train.resolve_args(train.build_parser().parse_args(run.train_cmd[2:])))
    args_file, last = os.path.join(run.folder, "args.json"), os.path.join(run.folder, "last.pt")
    if not os.path.exists(args_file):
        return "new"
    with open(args_file) as f:
        saved = json.load(f)
    changed = sorted(k for k in saved if k not in train.RESUME_IGNORES and saved[k] != intended.get(k))
    if changed:
        raise ExperimentError(f"{run.folder} holds a run with other settings ({', '.join(changed)}); "
                              "pass another --tag or remove the folder")
    if not os.path.exists(last):
        return "new"  # cut off in its first epoch: start again (train.py --overwrite)
    log = os.path.join(run.folder, "log.jsonl")  # train.py rewrites it from last.pt on --resume
    if not os.path.exists(log):
        return "partial"
    with open(log) as f:
        return "done" if sum(1 for _ in f) >= intended["epochs"] else "partial"


def evaluation_done(run: Run) -> bool:
    """True when eval-best.json exists for this best.pt with the attacks and settings asked for."""
    if not os.path.exists(run.eval_file):
        return False
    with open(run.eval_file) as f:
        report = json.load(f)
    wanted = evaluate.build_parser().parse_args(run.eval_cmd[2:])
    evaluate.check_args(wanted)
    return (report["checkpoint_sha256"] == sha256_of(os.path.join(run.folder, "best.pt"))
            and report["attacks"] == wanted.attacks and report["eps_pixels"] == wanted.eps
            and report["attack_settings"]["n_iter"] == wanted.n_iter
            and report["attack_settings"]["n_queries"] == wanted.n_queries
            and report["seed"] == wanted.seed and report["n"] <= wanted.n_examples)


def shown(cmd: list) -> str:
    """A stage's command as a user would type it in the repo root."""
    return shlex.join(["python", os.path.relpath(cmd[1], ROOT), *cmd[2:]])


def execute(cmd: list) -> None:
    """Run one stage as a subprocess, its output passed through; a failure stops the set."""
    print("$ " + shown(cmd), flush=True)
    if subprocess.run(cmd, cwd=ROOT).returncode != 0:
        raise ExperimentError(f"this stage failed (see its error above): {shown(cmd)}")


def run_all(runs: list) -> None:
    """Train and evaluate every run, skipping what is finished and resuming what was cut off."""
    for run in runs:
        state = training_state(run)
        if state != "done":
            execute(run.train_cmd + (["--resume"] if state == "partial" else ["--overwrite"]))
        else:
            print(f"{run.folder}: trained", flush=True)
        if not evaluation_done(run):
            partial = os.path.exists(evaluate.progress_file(run.eval_file))
            execute(run.eval_cmd + (["--resume"] if partial else []))
        else:
            print(f"{run.folder}: evaluated", flush=True)


def run_every_stage(run: Run) -> None:
    """The smoke set's energy analysis and generation, on one finished run."""
    ckpt = os.path.join(run.folder, "best.pt")
    execute([sys.executable, os.path.join(ROOT, "energy.py"), "attacks", "--ckpt", ckpt, "--n-examples", "50",
             "--n-iter", "5", "--device", "cpu", "--out", os.path.join(run.folder, "energy")])
    execute([sys.executable, os.path.join(ROOT, "generate.py"), "--ckpt", ckpt, "--n-per-class", "2", "--steps", "5",
             "--device", "cpu", "--cache-dir", os.path.join(run.folder, "generation-cache"),
             "--out", os.path.join(run.folder, "samples")])


def run_result(run: Run) -> dict:
    """One run's accuracies (fractions) from its evaluation report, and where they came from."""
    with open(run.eval_file) as f:
        report = json.load(f)
    return {"method": run.method, "seed": run.seed, "n": report["n"], "clean": report["clean"]["accuracy"],
            "pgd20": report["pgd-20"]["accuracy"], "cascade": report["cascade"]["accuracy"],
            "attacks": report["attacks"], "eval_file": run.eval_file, "log": os.path.join(run.folder, "log.jsonl")}


def mean_std(values: list) -> tuple:
    """Mean and sample standard deviation (None for a single value)."""
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def table_rows(results: list) -> list:
    """One row per method: mean and std over its seeds of clean, PGD-20 and cascade accuracy."""
    rows = []
    for method in dict.fromkeys(r["method"] for r in results):
        mine = [r for r in results if r["method"] == method]
        row = {"method": method, "seeds": [r["seed"] for r in mine], "n_per_seed": mine[0]["n"]}
        for key in ("clean", "pgd20", "cascade"):
            row[key], row[f"{key}_std"] = mean_std([r[key] for r in mine])
        rows.append(row)
    return rows


def percent(mean: float, std) -> str:
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def markdown(name: str, runset: RunSet, rows: list, runs: list, attacks: list, figure: str, shrunk: list,
             dataset: str) -> str:
    """The results table of a set, with the paper's figures beside ours and the commands behind it."""
    paper = PAPER.get(runset.dataset, {})
    lines = [f"# {name}", "", f"Data set: {dataset}; cascade: {', '.join(attacks)}; "
             f"accuracy in %, mean ± std over seeds; paper: {PAPER_TABLE}.", ""]
    if shrunk:
        lines += [f"Shrunk from the paper's settings by `{shlex.join(shrunk)}`: not comparable with the paper's "
                  "figures.", ""]
    lines += ["| method | seeds | n per seed | clean | PGD-20 | cascade | paper PGD-20 | paper AA |",
              "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        pgd, aa = paper.get(row["method"], (None, None))
        lines.append(f"| {row['method']} | {len(row['seeds'])} | {row['n_per_seed']} | "
                     f"{percent(row['clean'], row['clean_std'])} | {percent(row['pgd20'], row['pgd20_std'])} | "
                     f"{percent(row['cascade'], row['cascade_std'])} | {pgd if pgd is not None else '—'} | "
                     f"{aa if aa is not None else '—'} |")
    if figure:
        lines += ["", f"![energy curves]({os.path.basename(figure)})"]
    lines += ["", "Commands (run from the repo root):", "", "```"]
    lines += [shown(cmd) for run in runs for cmd in (run.train_cmd, run.eval_cmd)]
    return "\n".join(lines + ["```", ""])


def write_results(args, runs: list) -> str:
    """RESULTS_DIR/SET.md and .json (and SET-energy.png where the set logs energies); returns the .md path."""
    runset, name = RUNSETS[args.runset], set_name(args)
    os.makedirs(args.results_dir, exist_ok=True)
    results = [run_result(run) for run in runs]
    figure = ""
    if runset.plot_energies:
        from energy import plot_curves, read_log
        figure = os.path.join(args.results_dir, f"{name}-energy.png")
        plot_curves([(f"{r.method} (seed {r.seed})", read_log(os.path.join(r.folder, "log.jsonl"))[1])
                     for r in runs if r.seed == 0], figure)
    base, rows = os.path.join(args.results_dir, name), table_rows(results)
    shrunk = passed_on(args, TRAIN_OVERRIDES + EVAL_OVERRIDES)
    with open(base + ".json.tmp", "w") as f:
        json.dump({"runset": name, "dataset": runset.dataset, "rows": rows, "runs": results, "shrunk_by": shrunk,
                   "paper": PAPER.get(runset.dataset, {}), "energy_figure": figure or None}, f, indent=2)
    os.replace(base + ".json.tmp", base + ".json")
    with open(base + ".md", "w") as f:
        dataset = f"{args.train_npz} (in place of {runset.dataset})" if args.train_npz else runset.dataset
        f.write(markdown(name, runset, rows, runs, results[0]["attacks"], figure, shrunk, dataset))
    return base + ".md"


def dry_run(args, runs: list) -> None:
    """Print every command and a rough GPU-time estimate."""
    dataset = RUNSETS[args.runset].dataset
    epochs = args.epochs or vars(train.resolve_args(train.build_parser().parse_args(runs[0].train_cmd[2:])))["epochs"]
    for run in runs:
        print(shown(run.train_cmd))
        print(shown(run.eval_cmd))
    hours = len(runs) * (epochs * GPU_SECONDS_PER_EPOCH[dataset] + GPU_SECONDS_PER_EVAL[dataset]) / 3600
    print(f"# {len(runs)} runs x {epochs} epochs: roughly {hours:.1f} GPU hours on one H100, assuming issue 7's "
          "target of 12 s per CIFAR-10 epoch on the --fast path (not yet measured on a GPU; float32 will take "
          "longer; --width and --train-subset are not counted)")


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.seeds is not None and args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    unknown = set((args.methods or "").split(",")) - set(RUNSETS[args.runset].methods) - {""}
    if unknown:
        parser.error(f"--methods: {args.runset} has no {', '.join(sorted(unknown))}; "
                     f"it has {', '.join(RUNSETS[args.runset].methods)}")
    runs = plan(args)
    if args.dry_run:
        dry_run(args, runs)
        return
    try:
        run_all(runs)
        if RUNSETS[args.runset].every_stage:
            run_every_stage(runs[-1])
        print(f"table: {write_results(args, runs)}")
    except ExperimentError as e:
        print(f"experiments.py: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
