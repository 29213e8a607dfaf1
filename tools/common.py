"""What the developer tools share: the repo on sys.path, their common flags, the classifiers they read
(a reference model of the developers' ../shared folder, or a train.py checkpoint) and test points."""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data import load_npz  # noqa: E402
from models import load_model  # noqa: E402


def tool_parser() -> argparse.ArgumentParser:
    """A parser with the flags every tool takes: --shared and --out."""
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--shared", default=os.path.join("..", "shared"), help="the developers' shared folder")
    p.add_argument("--out", default=os.path.join("runs", "reference"), help="output folder")
    return p


def classifier(name: str, shared: str) -> tuple:
    """(model in eval mode, short tag): a reference model name from shared/reference-models, or the path
    of a train.py checkpoint (tagged by its run folder)."""
    if name.endswith(".pt"):
        return load_model(name)[0].eval(), os.path.basename(os.path.dirname(name))
    sys.path.insert(0, os.path.join(shared, "reference-models"))
    import refmodels
    return refmodels.load(name), name


def first_points(npz: str, n: int) -> tuple:
    """The first n images of an npz as floats in [0, 1], and their labels."""
    split = load_npz(npz)
    return split.images[:n].float() / 255, split.labels[:n]
