"""Robust accuracy of a checkpoint: clean, PGD-20 and the AutoAttack-style cascade, as a JSON report.

    python evaluate.py --ckpt runs/cifar10-resnet18-weat-adv-0/best.pt runs/cifar10-resnet18-weat-adv-0/last.pt
    python evaluate.py --ckpt best.pt --n-examples 1000 --attacks apgd-ce,apgd-t --eps 8
    python evaluate.py --robustbench Wong2020Fast --n-examples 1000 --out runs/zoo/wong2020fast.json

Points are the first --n-examples of the data set's test split (the whole split by default). PGD-20 (CE, step
2/255, uniform start) runs on every point; the cascade (on all of them, or on --cascade-examples of them from
--cascade-start) runs each attack only on the points still robust, and a point counts as robust only if
every attack failed on it. Clean and robust accuracy are reported
on the same points, with 95% Clopper-Pearson intervals.
"""
import argparse
import datetime
import hashlib
import json
import os
import time

import numpy as np
import torch
from scipy import stats

from attacks import PGD20_STEP_SIZE, PGD20_STEPS, PIXEL, STANDARD_ATTACKS, attack_by_name, autoattack, eval_mode, predict, sanity_checks, square_flag
from data import DataError, split_of_run, to_unit
from models import (DEFAULT_IN_HELP, CheckpointError, add_classifier_flags, atomic_save, load_classifier,
                    load_weights_only, resolve_device, run_command, sha256_of)

ATTACK_SETTINGS = {"n_iter": 100, "n_queries": 5000, "n_target_classes": 9, "n_restarts": 1}  # AA "standard"
INDEX_RULE = "the first n points of the test split, in the data set's order"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                usage="%(prog)s (--ckpt CKPT [CKPT ...] | --robustbench NAME) [options]",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_classifier_flags(p, several=True)
    p.add_argument("--attacks", default=",".join(STANDARD_ATTACKS),
                   help="cascade, comma-separated: apgd-ce, apgd-dlr, apgd-t, fab-t, square, pgd-20")
    p.add_argument("--n-examples", type=int, default=None,
                   help="first n test points (default: the whole test split, e.g. 10,000 for CIFAR, 26,032 for SVHN)"
                        + DEFAULT_IN_HELP)
    p.add_argument("--cascade-examples", type=int, default=None,
                   help="run the cascade on n of those points only, from --cascade-start (PGD-20 still on all; 0: no "
                        "cascade); default: all of them" + DEFAULT_IN_HELP)
    p.add_argument("--cascade-start", type=int, default=0,
                   help="0-based index, among the evaluated points, of the cascade's first point (without "
                        "--cascade-examples the cascade runs from there to the last point)")
    p.add_argument("--eps", type=float, default=8.0, help="Linf radius in pixels (8 means 8/255)")
    p.add_argument("--n-iter", type=int, default=ATTACK_SETTINGS["n_iter"], help="APGD / FAB iterations")
    p.add_argument("--n-queries", type=int, default=ATTACK_SETTINGS["n_queries"], help="Square queries")
    p.add_argument("--batch-size", type=int, default=500, help="points per attack batch")
    p.add_argument("--seed", type=int, default=0, help="seeds every attack")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--data-dir", default=None, help="where the data set is read from (default: the one stored in the "
                                                    "checkpoint; with --robustbench, data)" + DEFAULT_IN_HELP)
    p.add_argument("--test-npz", default=None, help="evaluate on this npz instead (default: the checkpoint's test "
                                                    "split)" + DEFAULT_IN_HELP)
    p.add_argument("--out", default=None, help="JSON report of one model (default: eval-<ckpt name>.json beside the "
                   "checkpoint; runs/robustbench/eval-<name>.json for --robustbench)")
    p.add_argument("--resume", action="store_true",
                   help="continue a cut-off evaluation from its saved per-point results (<out>-progress.pt)")
    return p


class EvaluationError(RuntimeError):
    """An evaluation cannot be resumed as asked."""


def report_path(args, ckpt: str = None) -> str:
    """Where the report of one model goes: --out, or beside its checkpoint."""
    if args.out:
        return args.out
    if args.robustbench:
        return os.path.join("runs", "robustbench", f"eval-{args.robustbench}.json")
    return os.path.join(os.path.dirname(os.path.abspath(ckpt)), f"eval-{os.path.splitext(os.path.basename(ckpt))[0]}.json")


def progress_file(report_file: str) -> str:
    """Where an evaluation keeps its per-point results while it runs (removed when it finishes)."""
    return os.path.splitext(report_file)[0] + "-progress.pt"


def cascade_size(n: int, start: int, examples) -> int:
    """How many of n points the cascade attacks from index `start`: `examples` (all by default), at most the
    points from there on."""
    return n - start if examples is None else min(examples, n - start)


def with_defaults(settings: dict) -> dict:
    """Saved settings with the keys added since filled in as they were before (cascade_start: 0)."""
    return {"cascade_start": 0, **settings} if settings else settings


def load_progress(path: str, settings: dict) -> dict:
    """The saved state of a cut-off evaluation; refuses one made with other settings."""
    if not os.path.isfile(path):
        raise EvaluationError(f"--resume: no saved evaluation at {path}")
    saved = load_weights_only(path, what="saved evaluation")
    saved["settings"] = with_defaults(saved["settings"])
    changed = sorted(k for k in settings if saved["settings"].get(k) != settings[k])
    if changed:
        raise EvaluationError(f"--resume: the saved evaluation differs in {', '.join(changed)} "
                              f"(saved {[saved['settings'].get(k) for k in changed]}, now {[settings[k] for k in changed]}); "
                              f"delete {path} to evaluate from the start")
    return saved["state"]


def clopper_pearson(k: int, n: int, level: float = 0.95) -> list:
    """Exact binomial confidence interval for k successes out of n."""
    lo = stats.beta.ppf((1 - level) / 2, k, n - k + 1) if k > 0 else 0.0
    hi = stats.beta.ppf(1 - (1 - level) / 2, k + 1, n - k) if k < n else 1.0
    return [float(lo), float(hi)]


def accuracy_entry(correct: int, n: int, **extra) -> dict:
    return {"accuracy": correct / n, "correct": int(correct), "n": n, "ci95": clopper_pearson(int(correct), n),
            **extra}


def evaluate_model(model, x, y, eps, attacks, batch_size=500, seed=0, progress=False, resume=None,
                   on_batch=None, cascade_n: int = None, cascade_start: int = 0, **settings) -> dict:
    """Clean, PGD-20 and cascade results of any classifier on (x, y): per-point masks and a report. PGD-20
    runs on every point, the cascade on `cascade_n` points from index `cascade_start` (all by default; 0:
    none), whose clean accuracy is reported beside it as "clean (cascade points)".

    After every attack batch `on_batch(state)` gets the evaluation's state; `resume=state` continues it.
    """
    s = cascade_start
    if not 0 <= s <= len(y):
        raise ValueError(f"cascade_start {s} is outside the {len(y)} points")
    m = cascade_size(len(y), s, cascade_n)
    state = dict(resume or {})

    def saver(part):
        def save(stage_state):
            state[part] = stage_state
            if on_batch is not None:
                on_batch(state)
        return save

    with eval_mode(model):
        flags = sanity_checks(model, x[:batch_size], y[:batch_size])
        start = time.time()
        clean = torch.cat([predict(model, xb) == yb for xb, yb in zip(x.split(batch_size), y.split(batch_size))])
        clean_seconds = time.time() - start
        pgd_report, cascade_report = [], []
        _, pgd_robust = autoattack(model, x, y, eps, ("pgd-20",), seed, batch_size, pgd_report, progress,
                                   resume=state.get("pgd"), on_batch=saver("pgd"))
        robust = torch.zeros(0, dtype=torch.bool, device=y.device)
        if m:
            _, robust = autoattack(model, x[s:s + m], y[s:s + m], eps, attacks, seed, batch_size, cascade_report, progress,
                                   resume=state.get("cascade"), on_batch=saver("cascade"), **settings)
    n = len(y)
    rows = {"clean": accuracy_entry(int(clean.sum()), n, seconds=clean_seconds),
            "pgd-20": accuracy_entry(pgd_report[0]["robust"], n, seconds=pgd_report[0]["seconds"])}
    if m:
        flags["square_beats_white_box"] = square_flag(cascade_report, m)
        if m < n:
            rows["clean (cascade points)"] = accuracy_entry(int(clean[s:s + m].sum()), m)
        for row in cascade_report:  # robust accuracy after each attack of the cascade (cumulative)
            rows[f"+{row['attack']}"] = accuracy_entry(row["robust"], m, seconds=row["seconds"], attacked=row["attacked"])
        rows["cascade"] = accuracy_entry(int(robust.sum()), m, seconds=sum(r["seconds"] for r in cascade_report))
    return {"rows": rows, "flags": flags, "masks": {"clean": clean, "pgd20_robust": pgd_robust, "cascade_robust": robust}}


def check_args(args) -> None:
    """Raise ValueError on bad settings, before any work; turns --attacks into a list."""
    if args.out and args.ckpt and len(args.ckpt) > 1:
        raise ValueError("--out names the report of one model; leave it out to write each beside its checkpoint")
    for key in ("eps", "n_examples", "batch_size", "n_iter", "n_queries"):
        if getattr(args, key) is not None and not getattr(args, key) > 0:
            raise ValueError(f"--{key.replace('_', '-')} must be positive, got {getattr(args, key)}")
    for key in ("cascade_examples", "cascade_start"):
        if getattr(args, key) is not None and getattr(args, key) < 0:
            raise ValueError(f"--{key.replace('_', '-')} must not be negative, got {getattr(args, key)}")
    args.attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    if not args.attacks:
        raise ValueError("--attacks names no attack")
    for name in args.attacks:
        attack_by_name(name)  # raises on an unknown name


def run(args) -> list:
    """Evaluate each model named on the command line; returns their reports."""
    return [evaluate_one(args, ckpt) for ckpt in (args.ckpt or [None])]


def evaluate_one(args, ckpt: str = None) -> dict:
    """The report of one model (a checkpoint path, or --robustbench), written to `report_path`."""
    attacks, device = args.attacks, resolve_device(args.device)
    model, info = load_classifier(args, device, ckpt)
    test = split_of_run(info["args"], False, args.data_dir, args.test_npz, info["model_config"]["num_classes"])
    n = len(test) if args.n_examples is None else min(args.n_examples, len(test))
    x, y = to_unit(test.images[:n].to(device)), test.labels[:n].to(device)
    settings = {"n_iter": args.n_iter, "n_queries": args.n_queries, "n_target_classes": 9, "n_restarts": 1}
    if args.cascade_start and args.cascade_start >= n:
        raise EvaluationError(f"--cascade-start {args.cascade_start} is past the last of the {n} points")
    cascade_start = args.cascade_start
    cascade_n = cascade_size(n, cascade_start, args.cascade_examples)
    # the points evaluated, by content: a resume on other data (another --test-npz, --data-dir) is refused
    points = hashlib.sha256(test.images[:n].contiguous().numpy().tobytes() + test.labels[:n].numpy().tobytes()).hexdigest()
    checkpoint_hash = sha256_of(info["file"]) if os.path.isfile(info["file"]) else None  # RobustBench ensembles: no one file
    identity = {"attacks": attacks, "eps_pixels": args.eps, "n": n, "cascade_n": cascade_n,
                "cascade_start": cascade_start, "seed": args.seed,
                "batch_size": args.batch_size, "checkpoint_sha256": checkpoint_hash, "points_sha256": points, **settings}
    out = report_path(args, ckpt)
    progress = progress_file(out)
    if args.resume and not os.path.isfile(progress) and os.path.isfile(out):  # finished before the cut (several --ckpt)
        with open(out) as f:
            done = json.load(f)
        if with_defaults(done.get("settings") or {}) != identity:
            raise EvaluationError(f"--resume: {out} was made with other settings or points; leave out --resume to "
                                  "evaluate again")
        print(f"{out}: already evaluated")
        return done
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)  # the progress file is saved beside the report
    resume = load_progress(progress, identity) if args.resume else None
    # the seconds spent before a cut count too: the report's time is that of the whole evaluation
    started = time.time() - ((resume or {}).get("elapsed") or 0.0)
    # PGD-20 runs through the cascade's machinery (one attack, every point) to share its batching and resume
    result = evaluate_model(model, x, y, args.eps * PIXEL, attacks, args.batch_size, args.seed, True, resume,
                            lambda state: atomic_save({"settings": identity,
                                                       "state": {**state, "elapsed": time.time() - started}}, progress),
                            cascade_n, cascade_start, **settings)
    report = {"checkpoint": info["source"], "checkpoint_sha256": identity["checkpoint_sha256"],
              "dataset": info["args"]["dataset"], "test_npz": args.test_npz or info["args"].get("test_npz"),
              "points_sha256": points, "batch_size": args.batch_size, "settings": identity, "split": "test", "n": n, "cascade_n": cascade_n,
              "cascade_start": cascade_start, "index_rule": INDEX_RULE,
              "eps_pixels": args.eps,
              "eps": args.eps * PIXEL, "attacks": attacks, "attack_settings": settings,
              "pgd20_settings": {"steps": PGD20_STEPS, "step_size": PGD20_STEP_SIZE, "loss": "ce", "random_start": True},
              **result["rows"], "flags": result["flags"], "seed": args.seed, "torch": torch.__version__,
              "device": str(device), "time": datetime.datetime.now().isoformat(timespec="seconds"),
              "seconds": time.time() - started}
    write_outputs(out, report, result["masks"])
    if os.path.exists(progress):
        os.remove(progress)
    print_table(report)
    return report


def write_outputs(out: str, report: dict, masks: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    report["mask_file"] = os.path.splitext(out)[0] + "-mask.npz"
    # index: the test points of the clean and PGD-20 masks; cascade_index: those of the cascade's mask (cascade_n
    # of them from cascade_start where --cascade-examples attacks fewer)
    with open(report["mask_file"] + ".tmp", "wb") as f:  # written whole or not at all, as the report
        np.savez(f, index=np.arange(report["n"]), cascade_index=report.get("cascade_start", 0) + np.arange(len(masks["cascade_robust"])),
                 **{k: v.cpu().numpy() for k, v in masks.items()})
    os.replace(report["mask_file"] + ".tmp", report["mask_file"])
    with open(out + ".tmp", "w") as f:
        json.dump(report, f, indent=2)
    os.replace(out + ".tmp", out)
    report["report_file"] = out


def print_table(report: dict) -> None:
    cascade = "" if report["cascade_n"] in (0, report["n"]) else \
        f" (the cascade on points {report['cascade_start']} to {report['cascade_start'] + report['cascade_n'] - 1})"
    print(f"{report['dataset']} test, first {report['n']} points{cascade}, eps {report['eps_pixels']:g}/255")
    print(f"{'':<24}{'accuracy':>10}  {'95% interval':<17}{'seconds':>9}")
    for key in ["clean", "pgd-20", "clean (cascade points)"] + [k for k in report if k.startswith("+")] + ["cascade"]:
        if key not in report:
            continue
        row = report[key]
        print(f"{key:<24}{100 * row['accuracy']:>9.2f}%  [{100 * row['ci95'][0]:5.1f}, {100 * row['ci95'][1]:5.1f}]"
              + (f"{row['seconds']:>10.1f}" if "seconds" in row else ""))
    raised = [k for k, v in report["flags"].items() if v]
    print("sanity flags: " + (", ".join(raised) if raised else "none raised"))
    print(f"report: {report['report_file']}")


def main(argv=None) -> None:
    run_command("evaluate.py", build_parser(), argv, check_args, run, (CheckpointError, DataError, EvaluationError))


if __name__ == "__main__":
    main()
