"""Developer record: the calibration trials of a claims set, read off their train.py run folders.

A trial is the claims-cpu command for one method and seed with a few flags changed. Two kinds:

- a regime's trials (augmentation, crop padding, images, the drops, length; with the per-epoch test
  attack): the best 5 consecutive epochs of test PGD and where they lie against the first learning-rate
  drop, the 5 epochs before the drop and the 5 after it, the last 5 epochs run, the fall;
- an intervention's trials (SAT + DER's beta, the control's weight decay; run without the test attack, so
  that the choice cannot see test robustness): the energy gaps over the last 5 epochs and the training
  robust accuracy at the end, the figures the choice is made on.

Per trial this prints, and with --results writes (with provenance, for tools/report.py), the flags that
differ from claims-cpu and those figures. A trial stopped early says so.

    python tools/claims_trials.py runs/trials/der-r1/* --results results/claims-cpu-der-trials.json
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train  # noqa: E402
from energy import lr_decay_index  # noqa: E402
from analysis import read_log  # noqa: E402
from claims import WINDOW, calibration_table, run_summary, trials_table  # noqa: E402
from experiments import CLAIMS_TRAIN  # noqa: E402
from methods import method_key  # noqa: E402
from models import provenance, write_json  # noqa: E402

KNOBS = ("augment", "crop_padding", "train_subset", "width", "epochs", "lr_drops", "lr", "batch_size", "steps", "loss",
         "beta", "der_gamma", "weight_decay")


def claims_defaults() -> dict:
    """The claims-cpu settings of the knobs, as train.py resolves them."""
    args = train.resolve_args(train.build_parser().parse_args(CLAIMS_TRAIN + ["--dataset", "synthetic"]))
    return {k: getattr(args, k) for k in KNOBS}


def changed_flags(settings: dict, defaults: dict) -> str:
    """The train.py flags of a trial that differ from claims-cpu's ('' where none do)."""
    words = []
    for key in KNOBS:
        value = settings.get(key, train.CROP_PADDING if key == "crop_padding" else None)
        if value is None or (key == "crop_padding" and settings.get("augment") != "crop-flip"):
            continue  # a knob the trial's method does not have (SAT's beta), or crops it does not make
        if value != defaults[key] or (key == "crop_padding" and defaults["augment"] != "crop-flip"):
            shown = " ".join(map(str, value)) if isinstance(value, list) else str(value)
            words.append(f"--{key.replace('_', '-')} {shown}")
    return " ".join(words)


def trial(folder: str, defaults: dict) -> dict:
    """One trial's settings and the figures of its log: the energy gaps over its last 5 epochs and its final
    training robust accuracy; with the test attack also its best and last 5 epochs as the claims tables read
    them (claims.run_summary) and the 5 epochs either side of the first drop."""
    with open(os.path.join(folder, "args.json")) as f:
        settings = json.load(f)
    rows = read_log(os.path.join(folder, "log.jsonl"))[1]
    last5 = lambda key: float(np.mean([row[key] for row in rows[-WINDOW:]]))  # noqa: E731
    out = {"trial": os.path.basename(os.path.normpath(folder)), "flags": changed_flags(settings, defaults),
           "method": method_key(settings), "seed": settings["seed"], "epochs": settings["epochs"], "epochs_run": rows[-1]["epoch"],
           "dE_last5": last5("delta_E"), "dExy_last5": last5("delta_Exy"), "train_adv_last": rows[-1]["train_adv_acc"]}
    if rows[0].get("test_pgd_acc") is None or sum(row["test_pgd_acc"] is not None for row in rows) < WINDOW:
        return out  # no test attack, or a trial stopped before its first 5 tested epochs: the figures above only
    r = run_summary(out["method"], out["seed"], rows)
    dropped = lr_decay_index(rows) is not None  # run_summary's decay_epoch is the last epoch without a drop
    tested = {row["epoch"]: row["test_pgd_acc"] for row in rows if row["test_pgd_acc"] is not None}
    mean_over = lambda first, last: float(np.mean([tested[e] for e in range(first, last + 1) if e in tested]))  # noqa: E731
    drop = r["decay_epoch"]
    return {**out, "first_drop_after": drop if dropped else None, "best5_epochs": r["peak_epochs"], "best5": r["peak_test"],
            "before_drop5": mean_over(drop - WINDOW + 1, drop) if dropped else None,
            "after_drop5": mean_over(drop + 1, drop + WINDOW) if dropped else None,
            "last5": r["end_test"], "fall": r["window_gap"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("folders", nargs="+", help="train.py run folders, one per trial")
    p.add_argument("--results", default=None, help="also write the trials here, with provenance")
    args = p.parse_args()
    defaults = claims_defaults()
    trials = [trial(folder, defaults) for folder in args.folders]
    tested = all("best5" in t for t in trials)
    print((trials_table if tested else calibration_table)({"trials": trials}))  # the table the claims page shows
    if args.results:
        write_json(args.results, {"provenance": provenance(), "claims_flags": CLAIMS_TRAIN, "trials": trials})


if __name__ == "__main__":
    main()
