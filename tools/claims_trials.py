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
from analysis import read_log  # noqa: E402
from energy import lr_decay_index  # noqa: E402
from experiments import CLAIMS_TRAIN  # noqa: E402
from models import provenance, write_json  # noqa: E402

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
    """One trial's settings and the test PGD figures of its log."""
    with open(os.path.join(folder, "args.json")) as f:
        settings = json.load(f)
    _, rows = read_log(os.path.join(folder, "log.jsonl"))
    tested = [r for r in rows if r.get("test_pgd_acc") is not None]
    test = [r["test_pgd_acc"] for r in tested]
    means = [float(np.mean(test[i:i + WINDOW])) for i in range(len(test) - WINDOW + 1)]
    best = int(np.argmax(means))
    decay = lr_decay_index(rows)  # index of the last epoch at the high rate
    around = lambda lo, hi: float(np.mean(test[max(0, lo):hi])) if decay is not None else None  # noqa: E731
    return {"trial": os.path.basename(os.path.normpath(folder)), "flags": changed_flags(settings, defaults),
            "method": settings.get("loss") if settings.get("weat", "none") == "none" else f"weat-{settings['weat']}",
            "seed": settings["seed"], "epochs": settings["epochs"], "epochs_run": rows[-1]["epoch"],
            "first_drop_after": tested[decay]["epoch"] if decay is not None else None,
            "best5_epochs": [tested[best]["epoch"], tested[best + WINDOW - 1]["epoch"]], "best5": means[best],
            "before_drop5": around(decay - WINDOW + 1, decay + 1) if decay is not None else None,
            "after_drop5": around(decay + 1, decay + 1 + WINDOW) if decay is not None else None,
            "last5": means[-1], "fall": means[best] - means[-1], "train_adv_last": rows[-1]["train_adv_acc"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("folders", nargs="+", help="train.py run folders, one per trial")
    p.add_argument("--results", default=None, help="also write the trials here, with provenance")
    args = p.parse_args()
    defaults = claims_defaults()
    trials = [trial(folder, defaults) for folder in args.folders]
    pct = lambda v: "—" if v is None else f"{100 * v:.1f}"  # noqa: E731
    print("| trial | flags changed | epochs run | best 5 (epochs) | 5 before the drop | 5 after | last 5 | fall | training robust |")
    for t in trials:
        print(f"| {t['trial']} | {t['flags']} | {t['epochs_run']}/{t['epochs']} | {pct(t['best5'])} "
              f"({t['best5_epochs'][0]}-{t['best5_epochs'][1]}) | {pct(t['before_drop5'])} | {pct(t['after_drop5'])} | "
              f"{pct(t['last5'])} | {pct(t['fall'])} | {pct(t['train_adv_last'])} |")
    if args.results:
        write_json(args.results, {"provenance": provenance(), "claims_flags": CLAIMS_TRAIN, "trials": trials})


if __name__ == "__main__":
    main()
