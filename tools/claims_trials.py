"""Developer record: the calibration trials of a claims regime, read off their train.py run folders.

A trial is the claims-cpu command for one method and seed with a few flags changed (augmentation, crop
padding, images, the drops, length). Per trial this prints, and with --results writes (with provenance,
for tools/report.py), the flags that differ from claims-cpu and what its log shows: the best 5
consecutive epochs of test PGD and where they lie against the first learning-rate drop, the 5 epochs
before the drop and the 5 after it, the last 5 epochs run, and the training robust accuracy at the end.
A trial stopped early says so (its "last 5" are the last 5 it ran).

    python tools/claims_trials.py runs/trials/* --results results/claims-cpu-aug-trials.json
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train  # noqa: E402
from energy import lr_decay_index  # noqa: E402
from experiments import CLAIMS_TRAIN, Run, claims_result  # noqa: E402
from methods import method_key  # noqa: E402
from models import provenance, write_json  # noqa: E402
from report import claims_trials  # noqa: E402

KNOBS = ("augment", "crop_padding", "train_subset", "width", "epochs", "lr_drops", "lr", "batch_size", "steps")
WINDOW = 5


def claims_defaults() -> dict:
    """The claims-cpu settings of the knobs, as train.py resolves them."""
    args = train.resolve_args(train.build_parser().parse_args(CLAIMS_TRAIN + ["--dataset", "synthetic"]))
    return {k: getattr(args, k) for k in KNOBS}


def changed_flags(settings: dict, defaults: dict) -> str:
    """The train.py flags of a trial that differ from claims-cpu's ('' where none do)."""
    words = []
    for key in KNOBS:
        value = settings.get(key, train.CROP_PADDING if key == "crop_padding" else None)
        if key == "crop_padding" and settings.get("augment") != "crop-flip":
            continue
        if value != defaults[key] or (key == "crop_padding" and defaults["augment"] != "crop-flip"):
            shown = " ".join(map(str, value)) if isinstance(value, list) else str(value)
            words.append(f"--{key.replace('_', '-')} {shown}")
    return " ".join(words)


def trial(folder: str, defaults: dict) -> dict:
    """One trial's settings and the test PGD figures of its log: its best and last 5 epochs as the claims
    table reads them (experiments.claims_result), and the 5 epochs either side of the first drop."""
    with open(os.path.join(folder, "args.json")) as f:
        settings = json.load(f)
    r = claims_result(Run(method_key(settings), settings["seed"], folder, [], {}))
    dropped = lr_decay_index(r["rows"]) is not None  # claims_result's decay_epoch is the last epoch without a drop
    tested = {row["epoch"]: row["test_pgd_acc"] for row in r["rows"] if row["test_pgd_acc"] is not None}
    mean_over = lambda first, last: float(np.mean([tested[e] for e in range(first, last + 1) if e in tested]))  # noqa: E731
    drop = r["decay_epoch"]
    return {"trial": os.path.basename(os.path.normpath(folder)), "flags": changed_flags(settings, defaults),
            "method": r["method"], "seed": r["seed"], "epochs": settings["epochs"], "epochs_run": r["rows"][-1]["epoch"],
            "first_drop_after": drop if dropped else None, "best5_epochs": r["peak_epochs"], "best5": r["peak_test"],
            "before_drop5": mean_over(drop - WINDOW + 1, drop) if dropped else None,
            "after_drop5": mean_over(drop + 1, drop + WINDOW) if dropped else None,
            "last5": r["end_test"], "fall": r["window_gap"], "train_adv_last": r["train_adv_last"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("folders", nargs="+", help="train.py run folders, one per trial")
    p.add_argument("--results", default=None, help="also write the trials here, with provenance")
    args = p.parse_args()
    defaults = claims_defaults()
    trials = [trial(folder, defaults) for folder in args.folders]
    print(claims_trials({"trials": trials}))  # the table the claims page shows
    if args.results:
        write_json(args.results, {"provenance": provenance(), "claims_flags": CLAIMS_TRAIN, "trials": trials})


if __name__ == "__main__":
    main()
