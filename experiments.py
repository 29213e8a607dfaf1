"""The paper's experiments, one command each: train every run of a set, evaluate it, write the table.

    python experiments.py table-cifar10 --dry-run          # the commands and a rough GPU-time estimate
    python experiments.py table-cifar10                    # SAT, TRADES, MART, MAIL-TR, WEAT-nat, WEAT-adv x 3 seeds
    python experiments.py ablation-weights                 # what in the WEAT weighting helps
    python experiments.py smoke                            # every stage on tiny synthetic data, CPU

A set is a list of runs (method x seed) on one data set and model. Each run is `train.py` into
RUNS_DIR/SET/METHOD-sSEED, then `evaluate.py` (PGD-20 and the AutoAttack-style cascade) on its best.pt
and last.pt (the claims sets run no evaluate.py: their tables come from the training logs). Run the same
command again and it skips what is finished, resumes a training run that was cut off (`train.py
--resume`) and continues an evaluation from its saved per-point results. The table goes to
RESULTS_DIR/SET.md and SET.json: one row per method, clean / PGD-20 / cascade accuracy over seeds, with
the paper's figures beside ours.

Flags such as --epochs, --width, --train-subset, --n-examples or --attacks shrink a set (e.g. for a
CPU); give such a run a --tag so its folders and table do not mix with the full set's.
"""
import argparse
import dataclasses
import itertools
import json
import os
import shlex
import subprocess
import sys
import zipfile

import numpy as np
import scipy.optimize
import scipy.stats

import evaluate
import train
import claims
from claims import epoch_columns, mean_interval
from data import IMAGE_SIDE, SPLIT_SIZES, default_train_images
from analysis import plot_curves, read_log
from methods import METHODS as METHOD_TABLE
from models import DEFAULT_IN_HELP, load_checkpoint, provenance, sha256_of, write_json

ROOT = os.path.dirname(os.path.abspath(__file__))
PAPER_SOURCE = ("transcribed from a summary of the paper's tables (Mirza et al. 2024, arXiv 2407.06315): targets to "
                "check, not figures verified against its PDF")
PAPER_TABLE = f"Mirza et al. 2024 (ResNet-18; PGD-20 / AutoAttack), {PAPER_SOURCE}"
# Robust accuracy % (PGD-20, AutoAttack) of ResNet-18 in the paper (arXiv 2407.06315), transcribed from a summary
# of its tables: targets to check, not figures verified against the PDF.
PAPER = {
    "cifar10": {"sat": (49.03, 45.37), "trades": (52.65, 49.46), "mail-tr": (53.09, 49.42), "weat-nat": (52.43, 49.02),
                "weat-adv": (53.35, 49.75)},
    "cifar100": {"sat": (23.89, 20.99), "trades": (28.53, 24.29), "mail-tr": (28.79, 24.24), "weat-nat": (29.71, 24.88),
                 "weat-adv": (30.90, 25.63)},
    "svhn": {"sat": (50.54, 44.87), "trades": (55.52, 48.13), "mail-tr": (54.94, 47.48), "weat-nat": (55.31, 48.61),
             "weat-adv": (56.40, 49.60)},
    "tinyimagenet": {"trades": (None, 17.24), "mart": (None, 17.79), "weat-adv": (None, 18.45)},
}
PAPER_METHODS = ("sat", "trades", "mart", "mail-tr", "weat-nat", "weat-adv")  # the rows of the paper's tables
METHODS = {name: list(METHOD_TABLE[name].flags) for name in PAPER_METHODS}  # method -> its train.py flags
ABLATIONS = {  # ablation-weights: TRADES (w = 1), the paper's WEAT-adv, and WEAT-adv taken apart
    "trades": [],
    "weat-adv": ["--weat", "adv"],
    "weat-adv-normalized": ["--weat", "adv", "--weat-normalize"],
    "weat-adv-uniform": ["--weat", "adv", "--weat-fn", "uniform"],
    "weat-adv-kl-only": ["--weat", "adv", "--weat-terms", "kl"],
    "weat-adv-ce-only": ["--weat", "adv", "--weat-terms", "ce"],
}
# The smoke set: every method and stage on the synthetic set in about a minute on a CPU, long enough for
# the models to learn it (clean accuracy well above the 10% of chance).
SMOKE_TRAIN = ["--width", "8", "--epochs", "4", "--lr", "0.05", "--steps", "3", "--batch-size", "50", "--val-size", "100",
               "--eval-examples", "50", "--energy-snapshot", "50", "--device", "cpu"]
SMOKE_EVAL = ["--n-examples", "100", "--n-iter", "5", "--n-queries", "20", "--attacks", "apgd-ce,apgd-t,fab-t,square"]
# The paper's claims on a CPU: robust overfitting needs little data, a net that can fit its training
# attacks and a piecewise schedule (Rice et al. 2020): 500 images without augmentation (with crops, a
# width-16 or width-32 net did not overfit within the run), a width-16 ResNet-18, batch 32, lr 0.05, 40
# epochs with drops after 20 and 30. Test PGD-10 on 500 points every epoch for the figure only; validation
# PGD-20 on all 500 held-out images every epoch, for the validation pick (--val-all: the first 100, as the
# first runs of these sets did, then the other 400 in a random stream of their own, so that every figure of
# those runs comes out the same). Every step logged: the snapshot holds all 500 images, so the logging
# forward runs on every batch anyway.
CLAIMS_TRAIN = ["--width", "16", "--train-subset", "500", "--augment", "none", "--batch-size", "32", "--lr", "0.05",
                "--val-size", "500", "--eval-examples", "100", "--val-all",
                "--lr-schedule", "piecewise", "--epochs", "40", "--select", "best", "--test-every", "1",
                "--test-examples", "500", "--test-steps", "10", "--energy-snapshot", "500", "--log-every", "1",
                "--device", "cpu"]


def with_flags(flags: list, **values) -> list:
    """`flags` with each --NAME set to its value (a list: several words): the flag's one value replaced,
    or the flag added at the end. with_flags(f, augment="flip", lr_drops=[10, 30])."""
    flags = list(flags)
    for name, value in values.items():
        flag, words = "--" + name.replace("_", "-"), [str(v) for v in (value if isinstance(value, list) else [value])]
        if flag in flags:
            at = flags.index(flag) + 1
            flags[at:at + 1] = words
        else:
            flags += [flag, *words]
    return flags


def merged(flags: list, extra) -> list:
    """`flags` with each `--name value` pair of `extra` replacing the flag's own value, or added."""
    for flag, value in zip(extra[::2], extra[1::2]):
        flags = with_flags(flags, **{flag[2:].replace("-", "_"): value})
    return flags


# The second regime: the same runs with augmentation, where robust overfitting should follow the first
# learning-rate drop as in Rice et al. 2020. Found by trials on SAT, seed 0 (tools/claims_trials.py; the
# claims page lists them): flips alone, and the first drop after epoch 10, before the high rate overfits.
CLAIMS_AUG_TRAIN = with_flags(CLAIMS_TRAIN, augment="flip", lr_drops=[10, 30])
# The claims sets' arms: SAT, TRADES and WEAT-adv, and the intervention on claim 1: SAT + DER (its beta chosen on
# claims-cpu's seed 0, methods.DER_BETA) and its control, SAT with the weight decay whose final training robust
# accuracy came closest to SAT + DER's on that seed (the trials: results/claims-cpu-der-trials.json).
CONTROL_WEIGHT_DECAY = "0.0175"
CLAIMS_METHODS = {**{k: METHODS[k] for k in ("sat", "trades", "weat-adv")}, "sat-der": list(METHOD_TABLE["sat-der"].flags),
                  "sat-wd": METHODS["sat"] + ["--weight-decay", CONTROL_WEIGHT_DECAY]}
# Robust overfitting at the paper's scale (its Fig. 1): a piecewise schedule, under which it shows on the whole of
# CIFAR-10 (Rice et al. 2020: 200 epochs, drops at 100 and 150; here x0.1 after epochs 50 and 75 of 100), test PGD on
# 1,000 test points every epoch.
OVERFITTING_TRAIN = ["--lr-schedule", "piecewise", "--test-every", "1"]
# The paper's headline claim (WEAT improves robust accuracy) at CPU scale: the paper's recipe (OneCycle, lr 0.1,
# batch 128, crop + flip, K = 10, beta 6, best-late selection: the train.py defaults) made small enough for
# a budget of 10 hours of one core for all 12 runs: 10,000 class-balanced training images, a width-16 ResNet-18,
# validation PGD-20 on 500 held-out images, and 6 epochs (15 were planned; the epochs are what was shrunk to fit
# the budget, with the images and the seeds kept). Under 15 epochs best-late's last 10% is the last epoch, so
# best.pt is last.pt. PGD-20 on the whole test split; the standard cascade on 334 test points per seed, each seed
# on its own block (points 0-333, 334-667, 668-1,001): 1,002 distinct points per method, every method of a seed
# on the same points.
ACCURACY_TRAIN = ["--width", "16", "--train-subset", "10000", "--balanced-subset", "--epochs", "6",
                  "--eval-examples", "500"]
ACCURACY_EVAL, ACCURACY_LAST_EVAL, ACCURACY_CASCADE_PER_SEED = [], ["--cascade-examples", "0"], 334
ACCURACY_PAIRS = (("weat-adv", "trades"), ("weat-nat", "trades"), ("trades", "sat"))
ACCURACY_BUDGET_HOURS = 10  # of one core, for the whole set: the target it was sized for before its runs
# GPU time is derived from the one GPU measurement this project has (results/gpu-h200.json: ResNet-18 WEAT-adv,
# K = 10, batch 128, float32, 49,000 CIFAR-10 images, on one H200): seconds per epoch scaled by training images x
# pixels, and the evaluation of 1,000 points scaled by the test points, the pixels and the share of points the
# cascade's later attacks (APGD-T, FAB-T, Square) still have to attack (the paper's AutoAttack accuracy).
GPU_RESULTS = os.path.join(ROOT, "results", "gpu-h200.json")
TRAIN_PIXELS = {name: default_train_images(name) * side ** 2 for name, side in IMAGE_SIDE.items()}  # a run's default
TEST_POINTS = {name: sizes[1] for name, sizes in SPLIT_SIZES.items()}
CHECKPOINTS = ("best", "last")  # best.pt: the one --select keeps (best-late by default); last.pt: the final epoch


@dataclasses.dataclass
class RunSet:
    dataset: str
    methods: dict  # method name -> train.py flags
    seeds: int = 3
    train_flags: tuple = ()
    eval_flags: tuple = ()
    last_eval_flags: tuple = ()  # evaluate.py flags that replace eval_flags' own for last.pt (e.g. no cascade)
    compare: tuple = ()  # (method a, method b) pairs whose seed-by-seed differences the table reports
    plot_energies: bool = False  # the energy-curves figure (dE, E_nat, E_adv over epochs)
    every_stage: bool = False  # also the energy analysis and generation on the last run (smoke)
    claims: bool = False  # no evaluate.py: the table and figure come from the training logs (claims-cpu)
    cascade_per_seed: int = 0  # best.pt's cascade on this many points per seed, seed s on its own block from s x that


RUNSETS = {
    "table-cifar10": RunSet("cifar10", METHODS),
    "table-cifar100": RunSet("cifar100", METHODS),
    "table-svhn": RunSet("svhn", METHODS),
    "table-tinyimagenet": RunSet("tinyimagenet", METHODS),
    "ablation-weights": RunSet("cifar10", ABLATIONS),
    "overfitting": RunSet("cifar10", {k: METHODS[k] for k in ("sat", "trades", "weat-adv")}, seeds=1,
                          train_flags=tuple(OVERFITTING_TRAIN), plot_energies=True),
    "claims-cpu": RunSet("cifar10", CLAIMS_METHODS, seeds=5, train_flags=tuple(CLAIMS_TRAIN), claims=True),
    "claims-cpu-aug": RunSet("cifar10", CLAIMS_METHODS, seeds=3, train_flags=tuple(CLAIMS_AUG_TRAIN), claims=True),
    "accuracy-cpu": RunSet("cifar10", {k: METHODS[k] for k in ("sat", "trades", "weat-nat", "weat-adv")},
                           train_flags=tuple(ACCURACY_TRAIN), eval_flags=tuple(ACCURACY_EVAL),
                           last_eval_flags=tuple(ACCURACY_LAST_EVAL), compare=ACCURACY_PAIRS,
                           cascade_per_seed=ACCURACY_CASCADE_PER_SEED),
    "smoke": RunSet("synthetic", METHODS, seeds=1, train_flags=tuple(SMOKE_TRAIN), eval_flags=tuple(SMOKE_EVAL),
                    plot_energies=True, every_stage=True),
}
FAST_FLAGS = ["--amp", "bf16", "--channels-last", "--compile"]
TRAIN_OVERRIDES = ("epochs", "width", "train_subset", "steps", "train_npz", "test_npz", "val_size", "eval_examples")
SHRINKING = tuple(k for k in TRAIN_OVERRIDES if k not in ("train_npz", "test_npz"))  # other data is said apart, not "shrunk"
EVAL_OVERRIDES = ("n_examples", "attacks", "n_iter", "n_queries")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], usage="%(prog)s RUNSET [options]",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("runset", choices=RUNSETS, help="the experiment set")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 per method (default: 3; 5 for claims-cpu; 1 for "
                                                           "overfitting and smoke)" + DEFAULT_IN_HELP)
    p.add_argument("--methods", default=None, help="comma-separated subset of the set's methods (default: all; "
                                                   "`--dry-run` lists a set's names, an unknown one is refused with the "
                                                   "list)" + DEFAULT_IN_HELP)
    p.add_argument("--dry-run", action="store_true", help="print the commands and the estimated GPU time, run nothing")
    p.add_argument("--device", default="auto", help="passed to train.py and evaluate.py")
    p.add_argument("--fast", action="store_true", help="train with --amp bf16 --channels-last --compile (GPUs; on the one GPU measured, slower than the float32 default: results/gpu-h200.json)")
    p.add_argument("--tag", default="", help="suffix of the set's folders and table, for a shrunk set")
    p.add_argument("--runs-dir", default=os.path.join("runs", "experiments"), help="where the run folders go")
    p.add_argument("--results-dir", default="results", help="where SET.md and SET.json go")
    shrink = p.add_argument_group("shrinking a set (passed to every train.py / evaluate.py call)")
    for name, kind in (("epochs", int), ("width", int), ("train-subset", int), ("steps", int), ("val-size", int),
                       ("eval-examples", int), ("train-npz", str), ("test-npz", str), ("n-examples", int),
                       ("attacks", str), ("n-iter", int), ("n-queries", int)):
        shrink.add_argument(f"--{name}", type=kind, default=None, help="default: the set's setting" + DEFAULT_IN_HELP)
    return p


class ExperimentError(RuntimeError):
    """A set cannot go on: a run failed, or a folder holds a run with other settings."""


@dataclasses.dataclass
class Run:
    method: str
    seed: int
    folder: str
    train_cmd: list
    eval_cmds: dict  # "best" / "last" -> evaluate.py command (empty for the claims set)

    def eval_file(self, which: str = "best") -> str:
        return os.path.join(self.folder, f"eval-{which}.json")


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
    runs, points = [], evaluated_points(args, dataset) if runset.cascade_per_seed else None
    for method, flags in runset.methods.items():
        if args.methods and method not in args.methods.split(","):
            continue
        for seed in range(args.seeds or runset.seeds):
            folder = os.path.join(args.runs_dir, set_name(args), f"{method}-s{seed}")
            train_cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--dataset", dataset, *runset.train_flags,
                         *flags, *passed_on(args, TRAIN_OVERRIDES), *fast, "--seed", str(seed), *device,
                         "--out-dir", folder]
            evaluated = ("best",) if best_is_last_by_rule(train_cmd) else CHECKPOINTS  # else last.pt may differ
            eval_cmds = {} if runset.claims else {
                which: [sys.executable, os.path.join(ROOT, "evaluate.py"), "--ckpt", os.path.join(folder, f"{which}.pt"),
                        *merged(list(runset.eval_flags), runset.last_eval_flags if which == "last" else
                                cascade_block(runset, seed, args, points)),
                        *passed_on(args, EVAL_OVERRIDES), *device,
                        "--out", os.path.join(folder, f"eval-{which}.json")] for which in evaluated}
            runs.append(Run(method, seed, folder, train_cmd, eval_cmds))
    return runs


def best_is_last_by_rule(train_cmd: list) -> bool:
    """The run's --select can only keep its final epoch (train.best_is_last, at the resolved epochs)."""
    chosen = train.build_parser().parse_args(train_cmd[2:])
    try:
        chosen = train.resolve_args(chosen)
    except ValueError:  # main reports it, before any work
        pass
    return chosen.epochs is not None and train.best_is_last(chosen.select, chosen.epochs)


def evaluated_points(args, dataset: str):
    """How many test points evaluate.py will attack: --n-examples, at most the test split's size (read from
    --test-npz, else the data set's; None where unknown). Raises ExperimentError on an npz it cannot read."""
    split = TEST_POINTS.get(dataset)
    if args.test_npz and os.path.isfile(args.test_npz):
        try:
            with np.load(args.test_npz) as f:
                split = len(f["label"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            raise ExperimentError(f"--test-npz {args.test_npz}: not an npz file with a 'label' array") from None
    if args.n_examples is None:
        return split
    return args.n_examples if split is None else min(args.n_examples, split)


def cascade_block(runset: RunSet, seed: int, args, points) -> list:
    """evaluate.py's flags that put a seed's cascade on its own block of test points (none where the set keeps
    one block for every seed): cascade_per_seed points each, fewer where the evaluated points are fewer than
    that for every seed (they are then shared out equally)."""
    if not runset.cascade_per_seed:
        return []
    size = runset.cascade_per_seed
    if points is not None:
        size = max(1, min(size, points // (args.seeds or runset.seeds)))
    return ["--cascade-examples", str(size), "--cascade-start", str(seed * size)]


def saved_args(run: Run) -> dict:
    """The settings train.py saved for a run (its args.json), or None before it has started."""
    path = os.path.join(run.folder, "args.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def training_state(run: Run) -> str:
    """'done', 'partial' (resume it) or 'new'; refuses a folder holding a run with other settings."""
    intended = vars(train.resolve_args(train.build_parser().parse_args(run.train_cmd[2:])))
    saved, last = saved_args(run), os.path.join(run.folder, "last.pt")
    if saved is None:
        return "new"
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


def planned_points(run: Run, wanted) -> int:
    """How many test points the evaluation `wanted` (evaluate.py's parsed flags) attacks: --n-examples, at most
    the test split's size, read from the run's --test-npz (paths as typed, from the repo root) or its data set's;
    None where neither is known (no args.json yet, synthetic data)."""
    trained = saved_args(run)
    if trained is None:
        return None
    npz = wanted.test_npz or trained.get("test_npz")
    points = evaluated_points(argparse.Namespace(test_npz=npz and os.path.join(ROOT, npz), n_examples=wanted.n_examples),
                              trained.get("dataset"))
    return points or None


def evaluation_done(run: Run, which: str) -> bool:
    """True when eval-WHICH.json exists for this checkpoint with the attacks, settings and points asked for."""
    if not os.path.exists(run.eval_file(which)):
        return False
    with open(run.eval_file(which)) as f:
        report = json.load(f)
    wanted = evaluate.build_parser().parse_args(run.eval_cmds[which][2:])
    evaluate.check_args(wanted)
    points = planned_points(run, wanted)
    return (report["checkpoint_sha256"] == sha256_of(os.path.join(run.folder, f"{which}.pt"))
            and report["attacks"] == wanted.attacks and report["eps_pixels"] == wanted.eps
            and report["attack_settings"]["n_iter"] == wanted.n_iter
            and report["attack_settings"]["n_queries"] == wanted.n_queries
            and report["seed"] == wanted.seed
            and (report["n"] == points if points else wanted.n_examples is None or report["n"] <= wanted.n_examples)
            and report.get("cascade_start", 0) == wanted.cascade_start
            and report.get("cascade_n", report["n"]) == evaluate.cascade_size(report["n"], wanted.cascade_start,
                                                                             wanted.cascade_examples))


def refuse_to_overwrite(run: Run, which: str) -> None:
    """Raise ExperimentError where eval-WHICH.json evaluated this very checkpoint with other settings or points
    (e.g. the whole test split, now asked with --n-examples): an evaluation is not thrown away unasked. A
    report of an older checkpoint (the run retrained) is simply replaced."""
    if not os.path.exists(run.eval_file(which)):
        return
    with open(run.eval_file(which)) as f:
        report = json.load(f)
    if report.get("checkpoint_sha256") == sha256_of(os.path.join(run.folder, f"{which}.pt")):
        raise ExperimentError(f"{run.eval_file(which)} evaluated this {which}.pt with other settings or points "
                              f"({report['n']:,} points); remove it and its -mask.npz to evaluate again with these "
                              "(another --tag would retrain every run in new folders)")


def checkpoint_epoch(run: Run, which: str) -> int:
    return load_checkpoint(os.path.join(run.folder, f"{which}.pt"))["epoch"]


def last_is_best(run: Run) -> bool:
    """best.pt holds the final epoch: its evaluation stands for last.pt too (no second evaluation)."""
    return checkpoint_epoch(run, "best") == checkpoint_epoch(run, "last")


def shown(cmd: list) -> str:
    """A stage's command as a user would type it in the repo root."""
    return shlex.join(["python", os.path.relpath(cmd[1], ROOT), *cmd[2:]])


def execute(cmd: list) -> None:
    """Run one stage as a subprocess, its output passed through; a failure stops the set."""
    print("$ " + shown(cmd), flush=True)
    if subprocess.run(cmd, cwd=ROOT).returncode != 0:
        raise ExperimentError(f"this stage failed (see its error above): {shown(cmd)}")


def run_all(runs: list) -> None:
    """Train and evaluate every run, skipping what is finished and resuming what was cut off. An evaluation
    that would replace one of the same checkpoint made with other settings is refused before any work."""
    for run in runs:
        for which in run.eval_cmds:
            if os.path.isfile(os.path.join(run.folder, f"{which}.pt")) and not evaluation_done(run, which):
                refuse_to_overwrite(run, which)
    for run in runs:
        state = training_state(run)
        if state != "done":
            execute(run.train_cmd + (["--resume"] if state == "partial" else ["--overwrite"]))
        else:
            print(f"{run.folder}: trained", flush=True)
        for which, cmd in run.eval_cmds.items():
            if which == "last" and last_is_best(run):
                continue
            if not evaluation_done(run, which):
                refuse_to_overwrite(run, which)
                partial = os.path.exists(evaluate.progress_file(run.eval_file(which)))
                execute(cmd + (["--resume"] if partial else []))
            else:
                print(f"{run.folder}: {which}.pt evaluated", flush=True)


def finished_runs(args, runs: list) -> list:
    """The runs the table shows: those just run, and every other run of the set (other --methods) already
    finished with the same settings, so that running a set's rows one command at a time builds the whole table."""
    everything = plan(argparse.Namespace(**{**vars(args), "methods": None}))
    ran = {run.folder for run in runs}

    def finished(run):
        try:
            return training_state(run) == "done" and all(
                evaluation_done(run, which) for which in run.eval_cmds if not (which == "last" and last_is_best(run)))
        except (ExperimentError, OSError, KeyError):
            return False
    return [run for run in everything if run.folder in ran or finished(run)]


def every_stage_cmds(run: Run) -> list:
    """The smoke set's energy analysis and generation on one finished run: (command, the last file it writes)."""
    ckpt = os.path.join(run.folder, "best.pt")
    energy, samples = os.path.join(run.folder, "energy"), os.path.join(run.folder, "samples")
    return [([sys.executable, os.path.join(ROOT, "analysis.py"), "attacks", "--ckpt", ckpt, "--n-examples", "50",
              "--steps", "5", "--attacks", "pgd-ce,trades-pgd,apgd-ce,apgd-t,cw-l2", "--device", "cpu", "--out", energy],
             os.path.join(energy, "energy_attacks.png")),
            ([sys.executable, os.path.join(ROOT, "generate.py"), "--ckpt", ckpt, "--n-per-class", "2", "--steps", "5",
              "--device", "cpu", "--cache-dir", os.path.join(run.folder, "generation-cache"), "--out", samples],
             os.path.join(samples, "trace.json"))]


def run_every_stage(run: Run) -> None:
    """Run every_stage_cmds, each skipped once its last file is written."""
    for cmd, last_file in every_stage_cmds(run):
        if not os.path.isfile(last_file):
            execute(cmd)


# ---------------------------------------------------------------------------------------------------
# The robust-accuracy tables


def run_result(run: Run) -> dict:
    """One run's accuracies (fractions) on best.pt and last.pt from their reports, and where they came from."""
    result = {"method": run.method, "seed": run.seed, "log": os.path.join(run.folder, "log.jsonl"), "eval_minutes": 0.0}
    for which in CHECKPOINTS:
        path = run.eval_file("best" if which == "last" and last_is_best(run) else which)
        with open(path) as f:
            report = json.load(f)
        if not (which == "last" and last_is_best(run)):  # the whole evaluate.py run, as its report logs it
            result["eval_minutes"] += (report.get("seconds") or 0.0) / 60
        prefix = "" if which == "best" else "last_"
        cascade = report.get("cascade")  # none where the set runs no cascade on last.pt
        result.update({f"{prefix}n": report["n"], f"{prefix}clean": report["clean"]["accuracy"],
                       f"{prefix}pgd20": report["pgd-20"]["accuracy"],
                       f"{prefix}cascade": cascade["accuracy"] if cascade else None,
                       f"{prefix}cascade_n": cascade["n"] if cascade else None,
                       f"{prefix}cascade_start": report.get("cascade_start", 0) if cascade else None,
                       f"{prefix}epoch": checkpoint_epoch(run, which), f"{prefix}eval_file": path,
                       "attacks": report["attacks"]})
    return result


def mean_std(values: list) -> tuple:
    """Mean and sample standard deviation (None for a single value)."""
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def table_rows(results: list, keys: tuple, spread=mean_std, suffix: str = "std") -> list:
    """One row per method: over its seeds, the mean of each key and its spread (`spread` returns (mean,
    spread), stored as KEY_SUFFIX: the std by default, the 95% t-interval's half-width with mean_interval)."""
    rows = []
    for method in dict.fromkeys(r["method"] for r in results):
        mine = [r for r in results if r["method"] == method]
        row = {"method": method, "seeds": [r["seed"] for r in mine]}
        for key in keys:
            values = [r[key] for r in mine]
            if any(v is None for v in values):
                row[key], row[f"{key}_{suffix}"] = None, None
            else:
                row[key], row[f"{key}_{suffix}"] = spread(values)
        rows.append(row)
    return rows


def percent(mean: float, std) -> str:
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


ROBUST_KEYS = ("n", "clean", "pgd20", "cascade", "last_pgd20", "last_cascade", "epoch")


def markdown(name: str, runset: RunSet, rows: list, runs: list, attacks: list, figure: str, shrunk: list,
             dataset: str) -> str:
    """The results table of a set, with the paper's figures beside ours and the commands behind it."""
    paper = PAPER.get(runset.dataset, {})
    lines = [f"# {name}", "", f"Data set: {dataset}; cascade: {', '.join(attacks)}; accuracy in %, mean ± std over "
             f"seeds; selected = best.pt (train.py --select, best-late by default: the best validation PGD-20 of "
             f"the last 10% of epochs, the authors' rule), last = the final epoch (selected minus last: the "
             f"robust-overfitting gap); paper: {PAPER_TABLE}.", ""]
    if shrunk:
        lines += [f"Shrunk from the paper's settings by `{shlex.join(shrunk)}`: not comparable with the paper's "
                  "figures.", ""]
    lines += ["| method | seeds | n per seed | selected epoch | clean | PGD-20 | cascade | last PGD-20 | last cascade "
              "| paper PGD-20 | paper AA |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        pgd, aa = paper.get(row["method"], (None, None))
        lines.append(f"| {row['method']} | {len(row['seeds'])} | {row['n']:.0f} | {row['epoch']:.1f} | "
                     + " | ".join(percent(row[k], row[f"{k}_std"]) for k in ROBUST_KEYS[1:6])
                     + f" | {pgd if pgd is not None else '—'} | {aa if aa is not None else '—'} |")
    if figure:
        lines += ["", f"![energy curves]({os.path.basename(figure)})"]
    lines += ["", "Commands (run from the repo root):", "", "```"]
    lines += [shown(cmd) for run in runs for cmd in (run.train_cmd, *run.eval_cmds.values())]
    return "\n".join(lines + ["```", ""])


# ---------------------------------------------------------------------------------------------------
# Sets that compare methods seed by seed (accuracy-cpu): intervals, paired differences, a verdict per pair

POWER, ALPHA = 0.8, 0.05  # the detectable difference: found with probability 0.8 by a two-sided 5% paired t-test
def detectable_difference(sd: float, n: int, alpha: float = ALPHA, power: float = POWER):
    """The smallest true mean difference a two-sided paired t-test at level `alpha` on n pairs with this
    standard deviation of the differences finds with probability `power` (None for n < 2 or no spread)."""
    if n < 2 or not sd:
        return None
    df, critical = n - 1, scipy.stats.t.ppf(1 - alpha / 2, n - 1)

    def shortfall(delta):  # P(|T| > critical) - power, T noncentral t with df and noncentrality delta sqrt(n) / sd
        shift = delta * np.sqrt(n) / sd
        return scipy.stats.nct.sf(critical, df, shift) + scipy.stats.nct.sf(critical, df, -shift) - power  # both tails
    high = sd
    for _ in range(60):  # bracket the root from above (the power grows with the difference)
        if shortfall(high) >= 0:
            return float(scipy.optimize.brentq(shortfall, 0.0, high))
        high *= 2
    raise ExperimentError(f"no detectable difference found for sd {sd:g} on {n} pairs")


def detectable_multiple(n: int) -> float:
    """The detectable difference on n seeds over the 95% interval's half-width at the same spread: a constant of
    n (None for one seed)."""
    if n < 2:
        return None
    return detectable_difference(1.0, n) / (scipy.stats.t.ppf(1 - ALPHA / 2, n - 1) / np.sqrt(n))


def comparison_verdict(mean: float, half, paper_margin, direction: int = 1) -> str:
    """What a paired difference's 95% interval says of the paper's claim that the first method is ahead by
    `paper_margin`: holds (the interval excludes 0 on the paper's side), reversed (on the other side), does
    not hold here (it holds 0 and excludes the paper's margin), or not shown at this scale (it holds both).
    Without a margin of its own (a measure the paper does not report), the paper's side is `direction`
    (+1: the first method ahead; the pair's PGD-20 margin gives it)."""
    if half is None:
        return "one seed: no interval"
    if half <= 1e-12 * max(1.0, abs(mean)):  # identical differences on every seed (up to float rounding)
        return "no spread over the seeds: no interval"
    low, high = mean - half, mean + half
    sign = direction if paper_margin is None else 1 if paper_margin >= 0 else -1
    if low > 0 or high < 0:
        return "holds" if (low > 0) == (sign > 0) else "reversed"
    if paper_margin is not None and not low <= paper_margin <= high:
        return "does not hold here: the paper's margin lies outside the interval"
    return "not shown at this scale"


# measure -> its column in PAPER (None: the paper gives no figure: no margin; clean accuracy gets no verdict either)
COMPARED = {"clean": None, "pgd20": 0, "cascade": 1, "last_pgd20": None}


def paper_margin(paper: dict, a: str, b: str, column) -> float:
    """The paper's a - b in column 0 (PGD-20) or 1 (AutoAttack), as a fraction; None where it lacks either."""
    if column is None or paper.get(a, (None,) * 2)[column] is None or paper.get(b, (None,) * 2)[column] is None:
        return None
    return (paper[a][column] - paper[b][column]) / 100


def best_is_last(results: list) -> bool:
    """Every run's best.pt is its last epoch: last.pt adds no measure of its own."""
    return all(r.get("epoch") is not None and r.get("last_epoch") == r["epoch"] for r in results)


def paired_differences(results: list, pairs: tuple, paper: dict) -> list:
    """For each (a, b) of `pairs` and each measure: a - b seed by seed (the same seed trains both on the same
    images), mean, 95% t-interval, the detectable difference, the paper's margin and the verdict. The last
    epoch's PGD-20 is left out where it is best.pt's in every run."""
    by = {(r["method"], r["seed"]): r for r in results}
    out = []
    measures = {k: v for k, v in COMPARED.items() if not (k == "last_pgd20" and best_is_last(results))}
    for a, b in pairs:
        seeds = sorted(s for m, s in by if m == a and (b, s) in by)
        pgd_margin = paper_margin(paper, a, b, COMPARED["pgd20"])
        direction = -1 if pgd_margin is not None and pgd_margin < 0 else 1  # the paper's side, for measures it lacks
        for measure, column in measures.items():
            values = [by[a, s][measure] - by[b, s][measure] for s in seeds if by[a, s][measure] is not None
                      and by[b, s][measure] is not None]
            if not values:
                continue
            mean, half = mean_interval(values)
            sd = float(np.std(values, ddof=1)) if len(values) > 1 else None
            margin = paper_margin(paper, a, b, column)
            out.append({"methods": [a, b], "measure": measure, "seeds": seeds, "differences": values,
                        "difference": mean, "ci95": half, "detectable": detectable_difference(sd, len(values)),
                        "paper_margin": margin, "paper_side": direction if margin is None else 1 if margin >= 0 else -1,
                        "verdict": "—" if measure == "clean" else comparison_verdict(mean, half, margin, direction)})
    return out


MEASURES = {"clean": "clean", "pgd20": "PGD-20", "cascade": "cascade", "last_pgd20": "PGD-20, last epoch"}


def verdict_words(p: dict) -> str:
    """A paired difference's verdict naming the direction: which method is ahead here and in the paper, and
    whether a difference on the paper's side is smaller than the paper's margin (its interval excludes it)."""
    a, b = (claims.display(m) for m in p["methods"])
    side = p.get("paper_side", 1)
    place = lambda sign: "ahead of" if sign > 0 else "behind"  # noqa: E731
    if p["verdict"] == "holds":
        low, high = p["difference"] - p["ci95"], p["difference"] + p["ci95"]
        smaller = p["paper_margin"] is not None and (high < p["paper_margin"] if side > 0 else low > p["paper_margin"])
        return f"holds: {a} {place(side)} {b}, as in the paper" + (", by less than its margin" if smaller else "")
    if p["verdict"] == "reversed":
        return f"reversed: {a} {place(-side)} {b}; the paper has it {place(side)}"
    return p["verdict"]


def cascade_points(runs: list) -> str:
    """Which test points the runs' cascades attacked, in words: "the first 1,000", or each seed's own block."""
    blocks = {}
    for run in runs:
        if run.get("cascade_n"):
            blocks.setdefault((run.get("cascade_start") or 0, run["cascade_n"]), set()).add(run["seed"])
    if not blocks:
        return "no points"
    if len(blocks) == 1 and next(iter(blocks))[0] == 0:
        return "the first " + f"{next(iter(blocks))[1]:,}"
    named = [f"{a:,}-{a + n - 1:,} (seed {', '.join(map(str, sorted(seeds)))})" for (a, n), seeds in sorted(blocks.items())]
    covered = len(set().union(*(range(a, a + n) for a, n in blocks)))
    return f"points {'; '.join(named)}: {covered:,} points in all, each seed on its own"


def accuracy_table(r: dict) -> str:
    """The accuracy-cpu table (mean ± 95% t-interval over seeds, the paper's figures beside), then the paired
    differences with their verdicts and the smallest difference the seeds could detect."""
    paper = r.get("paper", {})
    cell = lambda m, h: "—" if m is None else f"{100 * m:.1f}" + (f" ± {100 * h:.1f}" if h is not None else "")  # noqa: E731
    same = best_is_last(r["runs"])  # then last.pt has no column of its own
    keys = ("clean", "pgd20", "cascade") + (() if same else ("last_pgd20",))
    lines = ["| method | seeds | clean | PGD-20 | cascade | " + ("" if same else "PGD-20, last epoch | ")
             + "paper (full scale) PGD-20 / AA | minutes per run: training / evaluation |", "|---" * (len(keys) + 4) + "|"]
    for row in r["rows"]:
        pgd, aa = paper.get(row["method"], (None, None))
        mine = [run for run in r["runs"] if run["method"] == row["method"]]

        def minutes(key: str) -> str:
            if any(run.get(key) is None for run in mine):
                return "—"
            m = float(np.mean([run[key] for run in mine]))
            return f"{m:.{0 if m >= 10 else 1}f}"
        lines.append(f"| {claims.display(row['method'])} | {len(row['seeds'])} | " + " | ".join(
            cell(row[k], row[f"{k}_ci95"]) for k in keys)
            + f" | {pgd if pgd is not None else '—'} / {aa if aa is not None else '—'} | "
            + f"{minutes('train_minutes')} / {minutes('eval_minutes')} |")
    lines += ["", "| difference (seed by seed) | measure | mean ± 95% interval | detectable | paper's margin | verdict |",
              "|---|---|---|---|---|---|"]
    for p in r["pairs"]:
        margin = "—" if p["paper_margin"] is None else f"{100 * p['paper_margin']:+.2f}"
        detect = "—" if p["detectable"] is None else f"{100 * p['detectable']:.1f}"
        lines.append(f"| {claims.display(p['methods'][0])} - {claims.display(p['methods'][1])} | {MEASURES[p['measure']]} | "
                     f"{100 * p['difference']:+.1f}" + (f" ± {100 * p['ci95']:.1f}" if p["ci95"] is not None else "")
                     + f" | {detect} | {margin} | {verdict_words(p)} |")
    pgd_points = " / ".join(f"{n:,}" for n in sorted({row["n"] for row in r["runs"]}))
    seeds = min((len(p["seeds"]) for p in r["pairs"]), default=1)  # the pairs' seeds (all alike in a complete set)
    if all(run.get("train_minutes") is not None for run in r["runs"]):  # what the set cost, against its budget
        hours = sum(run["train_minutes"] + (run.get("eval_minutes") or 0) for run in r["runs"]) / 60
        lines += ["", f"In all, the {len(r['runs'])} runs took {hours:.1f} hours of one core (training and evaluation, "
                      f"as logged; the budget the set was sized for: {ACCURACY_BUDGET_HOURS} hours)."]
    short = [f"{claims.display(p['methods'][0])} - {claims.display(p['methods'][1])}, {MEASURES[p['measure']]}"
             for p in r["pairs"] if p["verdict"] == "not shown at this scale" and p["detectable"] is not None
             and p["paper_margin"] is not None and p["detectable"] > abs(p["paper_margin"])]
    if short:
        lines += ["", "A \"not shown at this scale\" verdict never speaks against the paper; where, in addition, the "
                  f"detectable difference is larger than the paper's margin ({'; '.join(short)}), these seeds had a chance "
                  f"below {100 * POWER:.0f}% of showing the paper's difference."]
    multiple = (f", {detectable_multiple(seeds):.2f} times the interval's half-width, so no surer than it" if seeds > 1 else "")
    lines += ["", f"(Accuracy in %, mean ± the half-width of the 95% Student-t interval over seeds: clean and PGD-20 on "
                  f"the first {pgd_points} test points (the same for every seed, so their own sampling error is not in the "
                  f"interval), the cascade on {cascade_points(r['runs'])} (so the interval covers the choice of points "
                  "too). Selected: best.pt by the authors' best-late rule (the best validation PGD-20 of the last 10% of "
                  "epochs" + ("; here the last epoch in every run, so last.pt has no column of its own). " if same else "). ")
                  + f"Detectable: the smallest true difference a two-sided 5% paired t-test on these {seeds} seed"
                  f"{'s' * (seeds != 1)} finds 80% of the time at the observed spread{multiple}. Verdicts: holds / reversed "
                  "where the interval excludes 0 on the paper's side / the other; does not hold here where it contains 0 and "
                  "excludes the paper's margin; not shown at this scale where it contains both (a measure the paper lacks takes "
                  "the side of the pair's PGD-20 margin). Minutes: a run's logged wall-clock (epochs and evaluations, the mean "
                  "over seeds), one thread per run, two runs at a time on the machine the footnote names. Paper: its "
                  f"ResNet-18 CIFAR-10 figures (PGD-20, AutoAttack), {PAPER_SOURCE}, of the full recipe (the whole training "
                  f"set, width 64, {train.DEFAULT_EPOCHS} epochs): its margins are what is tested here, in points, though a "
                  "margin need not carry over to a smaller scale.)"]
    return "\n".join(lines)


def write_results(args, runs: list) -> str:
    """RESULTS_DIR/SET.md and .json (and SET-energy.png where the set logs energies); returns the .md path."""
    runset, name = RUNSETS[args.runset], set_name(args)
    os.makedirs(args.results_dir, exist_ok=True)
    base, shrunk = os.path.join(args.results_dir, name), passed_on(args, SHRINKING + EVAL_OVERRIDES)
    dataset = f"{args.train_npz} (in place of {runset.dataset})" if args.train_npz else runset.dataset
    origin = provenance([args.train_npz, args.test_npz])
    if runset.claims:
        return write_claims(base, name, runs, shrunk, dataset, origin)
    results = [run_result(run) for run in runs]
    figure = ""
    if runset.plot_energies:
        figure = base + "-energy.png"
        plot_curves([(f"{r.method} (seed {r.seed})", read_log(os.path.join(r.folder, "log.jsonl"))[1])
                     for r in runs if r.seed == 0], figure)
    if runset.compare:
        return write_comparison(base, name, runset, runs, results, shrunk, dataset, origin)
    rows = table_rows(results, ROBUST_KEYS)
    write_json(base + ".json", {"provenance": origin, "runset": name, "dataset": runset.dataset, "rows": rows, "runs": results,
                                "shrunk_by": shrunk, "paper": PAPER.get(runset.dataset, {}), "energy_figure": figure or None})
    with open(base + ".md", "w") as f:
        f.write(markdown(name, runset, rows, runs, results[0]["attacks"], figure, shrunk, dataset))
    return base + ".md"


def write_comparison(base: str, name: str, runset: RunSet, runs: list, results: list, shrunk: list, dataset: str,
                     origin: dict) -> str:
    """SET.json (rows with 95% t-intervals, the paired differences, every run's per-epoch log) and SET.md."""
    for run, result in zip(runs, results):
        rows = read_log(os.path.join(run.folder, "log.jsonl"))[1]
        result["epochs"], result["train_minutes"] = epoch_columns(rows), claims.logged_minutes(rows)
    paper = PAPER.get(runset.dataset, {})
    r = {"provenance": origin, "runset": name, "dataset": runset.dataset, "setup": claims_setup(runs[0]),
         "scale": run_scale(runs[0]),
         "rows": table_rows(results, ROBUST_KEYS, mean_interval, "ci95"),
         "pairs": paired_differences(results, runset.compare, paper), "runs": results, "shrunk_by": shrunk,
         "paper": paper}
    write_json(base + ".json", r)
    with open(base + ".md", "w") as f:
        f.write("\n".join([f"# {name}", "", f"Data set: {dataset}. {r['setup']}.", "", accuracy_table(r), "",
                           "Commands (run from the repo root):", "", "```"]
                          + [shown(cmd) for run in runs for cmd in (run.train_cmd, *run.eval_cmds.values())] + ["```", ""]))
    return base + ".md"


# ---------------------------------------------------------------------------------------------------
# The claims sets: robust overfitting and the energy gaps, read off the training logs (claims.py)


def run_scale(run: Run) -> dict:
    """What a run shrinks of the paper's recipe, from its args.json: epochs, training images (None: all), width
    (None where the run has no args.json)."""
    a = saved_args(run)
    if a is None:
        return None
    return {"epochs": a["epochs"], "train_images": a["train_subset"], "width": a["width"]}


def claims_setup(run: Run) -> str:
    """The training setup of a claims run, in words, from its args.json (the claims figure's title; "" if
    the run has none)."""
    a = saved_args(run)
    if a is None:
        return ""
    images = f"{a['train_subset']:,} training images" if a["train_subset"] else "the full training set"
    tested = f"; test PGD-{a['test_steps']} on {a['test_examples']} test points every epoch" if a.get("test_every") else ""
    return (f"{a['dataset']}: {images}, {a['model']} width {a['width']}, augmentation {a['augment']}, batch "
            f"{a['batch_size']}, lr {a['lr']:g} ({a['lr_schedule']}), {a['epochs']} epochs, K = {a['steps']}{tested}")


def write_claims(base: str, name: str, runs: list, shrunk: list, dataset: str, origin: dict) -> str:
    """SET.json (with `origin`, the provenance, and every run's per-epoch log), SET.md and SET.png of a claims
    set; returns the .md path."""
    logs = [read_log(os.path.join(run.folder, "log.jsonl"))[1] for run in runs]
    test_points = saved_args(runs[0])["test_examples"]
    summaries = [{**claims.run_summary(run.method, run.seed, rows), "log": epoch_columns(rows),
                  # the checkpoints by content: files elsewhere (claim 2's and 3's models) name the run they read
                  "sha256": {w: sha256_of(os.path.join(run.folder, f"{w}.pt")) for w in ("last", "best")
                             if os.path.isfile(os.path.join(run.folder, f"{w}.pt"))}}
                 for run, rows in zip(runs, logs)]
    r = {"provenance": origin, "runset": name, "setup": claims_setup(runs[0]), "shrunk_by": shrunk,
         "figure": base + ".png", **claims.analyse(summaries, test_points)}
    claims.plot(r, base + ".png")
    write_json(base + ".json", r)
    with open(base + ".md", "w") as f:
        f.write("\n\n".join([f"# {name}", f"Data set: {dataset}. {r['setup']}." + (
            f" Changed from the set's settings by `{shlex.join(shrunk)}`." if shrunk else ""),
            *[table({name: r}) for table in (claims.statements_table, claims.methods_table, claims.lags_table,
                                             claims.picks_table, claims.correlations_table)],
            f"![claims]({os.path.basename(base)}.png)", "Commands (run from the repo root):",
            "```\n" + "\n".join(shown(run.train_cmd) for run in runs) + "\n```\n"]))
    return base + ".md"


def gpu_hours(dataset: str, runs: int, epochs: int, evaluations: int, robust: float = None, gpu: dict = None) -> dict:
    """One GPU's hours for `runs` training runs of `epochs` epochs and `evaluations` evaluations of the whole test
    split, derived from the measurement in results/gpu-h200.json (float32, ResNet-18 width 64). An epoch is the
    mean of the measured epochs after the first (the first also warms up: its extra time counts once per run); one
    measured on a subset is scaled to the whole split by its images, its fixed validation with them (a slight
    overestimate); `robust`: the AutoAttack accuracy expected (default: the measured model's)."""
    if gpu is None:
        with open(GPU_RESULTS) as f:
            gpu = json.load(f)
    measured = gpu.get("setting", {}).get("train_images", default_train_images("cifar10")) * 32 ** 2  # its pixels
    seconds = [e["seconds"] for e in gpu["train_epochs"]["float32"]]
    steady = float(np.mean(seconds[1:])) if len(seconds) > 1 else seconds[0]
    warmup = max(seconds[0] - steady, 0.0)  # once per run
    epoch = steady * TRAIN_PIXELS["cifar10"] / measured
    ev = gpu["evaluation"]
    late = sum(ev["attacks"][a] for a in ("apgd-t", "fab-t", "square"))  # these attack only points still robust
    per_point = (ev["seconds"] - late + late * (robust or ev["cascade"]) / ev["cascade"]) / ev["n"]
    pixels = TRAIN_PIXELS[dataset] / TRAIN_PIXELS["cifar10"]
    train_h = runs * (epochs * epoch * pixels + warmup) / 3600
    eval_h = evaluations * per_point * TEST_POINTS[dataset] * (IMAGE_SIDE[dataset] / 32) ** 2 / 3600
    return {"train": train_h, "evaluate": eval_h, "total": train_h + eval_h, "epoch_seconds": epoch * pixels,
            "device": gpu["provenance"]["machine"]["device"]}


def expected_robust(dataset: str, method: str):
    """The AutoAttack accuracy a row's evaluation is timed at: the paper's figure, else its data set's mean."""
    paper = PAPER.get(dataset, {})
    known = [aa for _, aa in paper.values() if aa is not None]
    aa = paper.get(method, (None, None))[1]
    return (aa if aa is not None else float(np.mean(known))) / 100 if known else None


def paper_figures(dataset: str, methods: list) -> str:
    """The paper's PGD-20 / AutoAttack figures of these methods' rows, in one line ('' where it has none)."""
    paper = PAPER.get(dataset, {})
    figure = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
    cells = [f"{claims.display(m)} {figure(paper[m][0])} / {figure(paper[m][1])}" for m in methods if m in paper]
    return "; ".join(cells)


def run_minutes(r: dict) -> list:
    """Each run's logged minutes in a set's results file (training and per-epoch attacks; evaluate.py's reports
    where the set has them); None where a run has no training time."""
    if not all("minutes" in run or "train_minutes" in run for run in r["runs"]):
        return None
    return [run.get("minutes", 0.0) + run.get("train_minutes", 0.0) + run.get("eval_minutes", 0.0) for run in r["runs"]]


def measured_time(path: str) -> str:
    """How long the runs of a set's results file took, as a dry run's line; "" where there is no such file."""
    if not os.path.isfile(path):
        return ""
    with open(path) as f:
        r = json.load(f)
    minutes = run_minutes(r)
    if minutes is None:
        return ""  # a table without the runs' training times
    m = r["provenance"]["machine"]
    cpu = f"{m.get('cpu_model') or m['processor']}, {m['cpu_cores']} cores"
    spread = f"{min(minutes):.0f}" + (f"-{max(minutes):.0f}" if round(max(minutes)) != round(min(minutes)) else "")
    return (f"# measured in {path}: {len(minutes)} run{'s' * (len(minutes) != 1)}, "
            f"{sum(minutes) / 60:.1f} hours in all ({spread} minutes a run), on "
            f"{m['device'] if m['device'] != 'cpu' else cpu} (the machine that wrote the file)"
            + (f", shrunk by `{shlex.join(r['shrunk_by'])}`" if r.get("shrunk_by") else ""))


def training_progress(runs: list) -> str:
    """How far a set's training has come in its run folders ("" where none has started): done, part-way (the
    same command resumes them) and, refused, folders holding a run with other settings."""
    states = []
    for run in runs:
        try:
            states.append(training_state(run))
        except ExperimentError:
            states.append("other settings")
    if states.count("new") == len(states):
        return ""
    partial, other = states.count("partial"), states.count("other settings")
    return (f"# trained so far: {states.count('done')} of {len(runs)} runs done"
            + (f", {partial} part-way (the same command resumes them)" if partial else "")
            + (f", {other} refused (a folder holds a run with other settings)" if other else ""))


def dry_run(args, runs: list) -> None:
    """Print every command, the table's columns, the paper's figures for the rows and the GPU time."""
    runset = RUNSETS[args.runset]
    settings = vars(train.resolve_args(train.build_parser().parse_args(runs[0].train_cmd[2:] + ["--device", "cpu"])))
    for run in runs:
        for cmd in (run.train_cmd, *run.eval_cmds.values()):
            print(shown(cmd))
    if runset.every_stage:
        for cmd, _ in every_stage_cmds(runs[-1]):
            print(shown(cmd))
    progress = training_progress(runs)
    if progress:
        print(progress)
    methods = list(dict.fromkeys(run.method for run in runs))
    pairs = ", ".join(f"{claims.display(a)} - {claims.display(b)}" for a, b in runset.compare)
    columns = ("claims tables: the fall of test PGD against flat noise, the energy gaps, their lags, the picks"
               if runset.claims else
               "table: clean, PGD-20 and cascade " + ("(best.pt), PGD-20 (last.pt)" if "last" in runs[0].eval_cmds else
                                                      "of best.pt, which is the last epoch,")
               + " per method, mean ± 95% interval over seeds; "
               f"paired differences {pairs} with their verdicts" if runset.compare else
               "table columns: selected epoch | clean | PGD-20 | cascade (best.pt) | last PGD-20 | last cascade (last.pt; "
               "best.pt's where it is the final epoch)")
    print(f"# methods: {', '.join(methods)}\n# {columns}")
    figures = paper_figures(runset.dataset, methods)
    small = runset.claims or any(flag in runset.train_flags for flag in ("--width", "--train-subset"))  # the set's own
    if figures:
        print(f"# the paper's PGD-20 / AutoAttack (%; {PAPER_SOURCE}): {figures}"
              + ("; the paper's full scale, not levels this set can reach" if small or passed_on(args, SHRINKING) else ""))
    measured = (measured_time(os.path.join(args.results_dir, set_name(args) + ".json"))  # yours, else the committed one
                or measured_time(os.path.join("results", set_name(args) + ".json")))  # main runs from the repo root
    if measured:
        print(measured)
    if runset.dataset == "synthetic" or runset.claims:
        return
    if small:
        print("# a CPU-scale set: no GPU estimate (the one GPU measurement is of the full-size ResNet-18 on every image)")
        return
    robust = [expected_robust(runset.dataset, run.method) for run in runs]
    evaluations = sum(len(run.eval_cmds) for run in runs)  # best.pt and last.pt (once where they coincide)
    t = gpu_hours(runset.dataset, len(runs), settings["epochs"], evaluations,
                  float(np.mean(robust)) if None not in robust else None)
    shrunk = " (not counting --width, --train-subset or other shrinking flags)" if passed_on(args, TRAIN_OVERRIDES) else ""
    print(f"# GPU time: {len(runs)} runs x {settings['epochs']} epochs x {t['epoch_seconds']:.0f} s (and a first epoch's "
          f"warm-up each) + {evaluations} "
          f"evaluations of the test split = {t['total']:.1f} hours on one {t['device']}{shrunk}: derived from its one "
          f"measurement in {os.path.relpath(GPU_RESULTS, ROOT)} (ResNet-18, float32)")


def gpu_table(gpu: dict) -> str:
    """The one GPU measurement: bench.py's training step per mode, train.py's epochs, evaluate.py's cascade."""
    s = gpu["setting"]
    lines = ["| what | float32 | bf16 | bf16 + channels-last | bf16 + channels-last + compile |", "|---|---|---|---|---|"]
    bench = {row["mode"].replace("_", "-"): row for row in gpu["bench"]}
    modes = ("float32", "bf16", "bf16 + channels-last", "bf16 + channels-last + compile")
    cell = lambda mode, f: f(bench[mode]) if mode in bench else "—"  # noqa: E731
    lines.append("| `bench.py`: training step, images/s | " + " | ".join(
        cell(m, lambda b: f"{b['images_per_s']:,}") for m in modes) + " |")
    lines.append("| the same as minutes per 100 epochs (validation PGD-20 included) | " + " | ".join(
        cell(m, lambda b: f"{b['minutes_per_100_epochs']:.1f}") for m in modes) + " |")
    epochs = gpu["train_epochs"]
    count = max(len(e) for e in epochs.values())
    lines.append(f"| `train.py`: seconds per epoch (validation included), epochs {', '.join(map(str, range(1, count + 1)))} | " + " | ".join(
        ", ".join(f"{e['seconds']:.1f}" for e in epochs[m]) if m in epochs else "—" for m in modes) + " |")
    ev = gpu["evaluation"]
    return "\n".join(lines + ["", f"`evaluate.py`, the standard cascade on {ev['n']:,} test points (a {len(epochs['bf16 + channels-last'])}-epoch bf16 model: "
                                   f"{100 * ev['clean']:.1f}% clean, {100 * ev['cascade']:.1f}% robust): {ev['seconds']:.0f} s, of "
                                   "which " + ", ".join(f"{a} {t:.1f} s" for a, t in ev["attacks"].items()) + ".", "",
                               f"(ResNet-18 width {s['width']}, {s['method']}, K = {s['steps']}, batch {s['batch_size']}, "
                               f"{s['train_images']:,} training images, validation PGD-20 on {s['val_points']:,} points; "
                               f"measured once, on one {gpu['provenance']['machine']['device']} with nothing else running on "
                               f"it, with the repo's own `{gpu['commands']['bench']}` (3 repeats of each timing), train.py and "
                               f"evaluate.py at commit {gpu['provenance']['commit'][:7]}.)"])


def reproduce_table(gpu: dict) -> str:
    """Every row of the paper's tables: its figures, the command that trains and evaluates exactly that row (3
    seeds, best and last epoch) and its GPU time derived from the measurement in `gpu`."""
    lines = ["| data set | method | paper PGD-20 / AA | command (3 seeds; best.pt and last.pt evaluated) | GPU hours "
             "(derived) | our figures appear in |", "|---|---|---|---|---|---|"]
    figure = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
    for name in ("table-cifar10", "table-cifar100", "table-svhn", "table-tinyimagenet"):
        dataset = RUNSETS[name].dataset
        epochs = train.EPOCHS.get(dataset, train.DEFAULT_EPOCHS)
        for method in RUNSETS[name].methods:
            pgd, aa = PAPER[dataset].get(method, (None, None))
            hours = gpu_hours(dataset, 3, epochs, 6, expected_robust(dataset, method), gpu)["total"]
            lines.append(f"| {dataset} | {claims.display(method)} | {figure(pgd)} / {figure(aa)} | "
                         f"`python experiments.py {name} --methods {method}` | {hours:.1f} | `results/{name}.md` |")
    return "\n".join(lines + ["", f"(Paper's figures: {PAPER_SOURCE}; — where the transcription has none. GPU hours: "
                                  f"derived from the one float32 measurement below (one {gpu['provenance']['machine']['device']}): "
                                  "its seconds per CIFAR-10 epoch scaled by images x pixels, x epochs x 3 seeds, plus 6 "
                                  "evaluations of the test split scaled from its 1,000 points and, for the cascade's later "
                                  "attacks, by the paper's AutoAttack accuracy (else the data set's mean); less where best.pt "
                                  "is the last epoch. Measured on WEAT-adv; SAT and MART take slightly less.)"])


def main(argv=None) -> None:
    """Every stage runs in the repo root (train.py and evaluate.py read and write paths from there), and so
    does this script's own bookkeeping: paths typed from another folder are taken from that folder."""
    parser = build_parser()
    args = parser.parse_args(argv)
    here = os.getcwd()
    for key in ("runs_dir", "results_dir", "train_npz", "test_npz"):
        path = getattr(args, key)
        if path and not os.path.isabs(path) and path != parser.get_default(key):
            setattr(args, key, os.path.relpath(os.path.join(here, path), ROOT))
    os.chdir(ROOT)
    try:
        run_set(parser, args)
    finally:
        os.chdir(here)


def run_set(parser, args) -> None:
    """main() from the repo root: check everything, then run the set (or print it, --dry-run)."""
    if args.seeds is not None and args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    unknown = set((args.methods or "").split(",")) - set(RUNSETS[args.runset].methods) - {""}
    if unknown:
        parser.error(f"--methods: {args.runset} has no {', '.join(sorted(unknown))}; "
                     f"it has {', '.join(RUNSETS[args.runset].methods)}")
    if bool(args.train_npz) != bool(args.test_npz):
        parser.error("--train-npz and --test-npz go together (a set trains and tests on your files, or on its data set)")
    evaluation = passed_on(args, EVAL_OVERRIDES)
    if RUNSETS[args.runset].claims and evaluation:
        parser.error(f"{args.runset} runs no evaluate.py (its tables come from the training logs): "
                     f"{' '.join(evaluation[::2])} would change nothing")
    own = RUNSETS[args.runset].train_flags
    if args.epochs is not None and "--lr-drops" in own:  # the set's own drops, which the user did not type
        drops = [int(v) for v in itertools.takewhile(str.isdigit, own[own.index("--lr-drops") + 1:])]
        if args.epochs <= max(drops):
            parser.error(f"{args.runset} drops the learning rate after epochs {' and '.join(map(str, drops))}: "
                         f"--epochs must be above {max(drops)}")
    try:  # every run's settings, checked before any work (train.py's and evaluate.py's own checks)
        runs = plan(args)
        for run in runs[:1]:
            train.resolve_args(train.build_parser().parse_args(run.train_cmd[2:]))
        for run in runs:
            for cmd in run.eval_cmds.values():
                evaluate.check_args(evaluate.build_parser().parse_args(cmd[2:]))
        seeds = args.seeds or RUNSETS[args.runset].seeds
        points = evaluated_points(args, "npz" if args.train_npz else RUNSETS[args.runset].dataset) \
            if RUNSETS[args.runset].cascade_per_seed else None
        if points is not None and points < seeds:
            raise ValueError(f"{points} test points for {seeds} seeds: each seed attacks its own test points with "
                             "the cascade, so give at least one point per seed")
    except (ValueError, ExperimentError) as e:
        parser.error(str(e))
    if args.dry_run:
        dry_run(args, runs)
        return
    try:
        run_all(runs)
        if RUNSETS[args.runset].every_stage:
            run_every_stage(runs[-1])
        print(f"table: {write_results(args, finished_runs(args, runs))}")
    except (ExperimentError, claims.ClaimsError) as e:
        print(f"experiments.py: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
