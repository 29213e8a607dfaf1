"""What the tools share: the repo on sys.path, their common flags, the classifiers they read and their
data.

A model spec names a classifier a user can have:
- PATH.pt: a checkpoint written by train.py (tagged by its run folder);
- PATH/NAME.pth: a reference model file (tools/reference_models.py says where each comes from), NAME one
  of vnncomp21-resnet2b, vnncomp21-resnet4b, wong18-cifar-small-8px (tagged NAME);
- robustbench:NAME: a RobustBench CIFAR-10 Linf model (needs the robustbench package; its weights are
  downloaded into --model-dir unless they are there already; tagged NAME).
The images come from the real CIFAR-10 (--dataset cifar10: torchvision downloads it into --data-dir) or
from npz files of the same layout (--test-npz, --train-npz).
"""
import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data import DataError, load_npz, load_split  # noqa: E402
from models import CheckpointError, load_model, load_robustbench, sha256_of  # noqa: E402
from reference_models import REFERENCE_MODELS, load_reference, reference_name  # noqa: E402

ROBUSTBENCH = "robustbench:"
# torchvision's CIFAR-10 files (the python version of the official archive), for provenance
CIFAR10_FILES = {True: [f"data_batch_{i}" for i in range(1, 6)], False: ["test_batch"]}
SPEC_HELP = ("PATH.pt (a train.py checkpoint), PATH/NAME.pth (a reference model file, see "
             "tools/reference_models.py) or robustbench:NAME (a RobustBench CIFAR-10 Linf model)")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help, the description (a tool's docstring, with its example commands) as written."""


def tool_parser(splits: tuple = (), models: bool = True, out: bool = True, description: str = None) -> argparse.ArgumentParser:
    """A parser with the flags the tools share: with `out`, --out; with `models`, --model-dir
    (robustbench:NAME); for each of `splits` ("test", "train"), --dataset cifar10 or an npz of that split."""
    p = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    if out:
        p.add_argument("--out", default=os.path.join("runs", "reference"), help="output folder")
    if models:
        p.add_argument("--model-dir", default="models", help="robustbench:NAME: where RobustBench keeps (and "
                       "downloads) zoo weights, MODEL_DIR/cifar10/Linf/NAME.pt")
    if splits:
        npz = " and ".join(f"--{s}-npz" for s in splits)
        p.add_argument("--dataset", choices=("cifar10",), default=None,
                       help=f"the real data set, downloaded through torchvision into --data-dir (or give {npz})")
        p.add_argument("--data-dir", default="data", help="--dataset: where torchvision keeps the data set")
        for s in splits:
            p.add_argument(f"--{s}-npz", default=None, help=f"{s} images from an npz in place of --dataset: 'image' "
                           "(N, 32, 32, 3) uint8 and 'label' (N,)")
    p.data_splits = tuple(splits)
    return p


def parse_tool_args(p: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse argv; the data flags must name either --dataset or an npz for every split (a usage error,
    exit 2, otherwise)."""
    args = p.parse_args(argv)
    splits = getattr(p, "data_splits", ())
    given = [s for s in splits if getattr(args, f"{s}_npz")]
    npz = " and ".join(f"--{s}-npz" for s in splits)
    if splits and args.dataset and given:
        p.error(f"--dataset {args.dataset} and {npz} exclude each other")
    if splits and not args.dataset and len(given) != len(splits):
        p.error(f"give --dataset cifar10 (downloaded through torchvision) or {npz}")
    return args


def split(args, train: bool):
    """The training or test split (uint8 NCHW images, labels) that the data flags name."""
    npz = args.train_npz if train else args.test_npz
    return load_npz(npz, num_classes=10) if npz else load_split(args.dataset, args.data_dir, train)


def data_files(args, train: bool) -> list:
    """The files a split is read from, for a results file's provenance: the npz, or torchvision's
    CIFAR-10 batches."""
    npz = args.train_npz if train else args.test_npz
    folder = os.path.join(args.data_dir, "cifar-10-batches-py")
    return [npz] if npz else [os.path.join(folder, name) for name in CIFAR10_FILES[train]]


def first_points(args, n: int) -> tuple:
    """The first n test images as floats in [0, 1], and their labels."""
    test = split(args, train=False)
    return test.images[:n].float() / 255, test.labels[:n]


def checked_models_and_points(args, n: int) -> tuple:
    """(specs, x, y) of a tool that runs every model of --models on the first n test points: every spec checked
    before anything runs or is written."""
    for spec in args.models:
        check_spec(spec)
    x, y = first_points(args, n)
    return args.models, x, y


def spec_form(spec: str) -> None:
    """Raise CheckpointError (one line) unless `spec` has the form of a model spec."""
    if spec in REFERENCE_MODELS:
        raise CheckpointError(f"model {spec}: pass its file, PATH/{spec}.pth (tools/reference_models.py says "
                              "where the weights come from)")
    if spec == ROBUSTBENCH:
        raise CheckpointError("robustbench: needs a model name, e.g. robustbench:Wong2020Fast")
    if not spec.startswith(ROBUSTBENCH) and not spec.endswith((".pt", ".pth")):
        raise CheckpointError(f"model {spec!r}: give {SPEC_HELP}")
    if spec.endswith(".pth"):
        reference_name(spec)


def model_specs(text: str) -> list:
    """argparse type of a comma-separated list of model specs: the list, each of the right form (their
    files are checked when the tool runs)."""
    try:
        for spec in text.split(","):
            spec_form(spec)
    except CheckpointError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text.split(",")


def check_spec(spec: str) -> None:
    """Raise CheckpointError (one line) unless `spec` is a model spec whose file, if it names one, exists."""
    spec_form(spec)
    if not spec.startswith(ROBUSTBENCH) and not os.path.isfile(spec):
        raise CheckpointError(f"model file not found: {spec}")


def classifier(spec: str, model_dir: str = "models") -> tuple:
    """(model in eval mode taking [0, 1] images, short tag) of a model spec: PATH.pt, PATH/NAME.pth or
    robustbench:NAME (see the top of this file)."""
    check_spec(spec)
    if spec.startswith(ROBUSTBENCH):
        name = spec[len(ROBUSTBENCH):]
        return load_robustbench(name, "cifar10", "Linf", model_dir)[0], name
    if spec.endswith(".pth"):
        return load_reference(spec), reference_name(spec)
    return load_model(spec)[0].eval(), os.path.basename(os.path.dirname(os.path.abspath(spec)))


def checkout_commit(folder: str):
    """The git commit of the checkout whose top `folder` is; None where it is none (not in git, or a folder
    inside another repository, e.g. a package installed into an environment inside one)."""
    def git(*words):
        try:
            return subprocess.run(["git", "-C", folder, *words], capture_output=True, text=True, timeout=60).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    top = git("rev-parse", "--show-toplevel")
    if not top or os.path.realpath(top) != os.path.realpath(folder):
        return None
    return git("rev-parse", "HEAD") or None


def spec_sha256(spec: str):
    """The sha256 of a model spec's file (a checkpoint or a reference model's .pth); None for a RobustBench name."""
    return None if spec.startswith(ROBUSTBENCH) else sha256_of(spec)


def recorded_name(spec: str) -> str:
    """A model's name in results files: a reference model's own name for its file, else the spec."""
    return reference_name(spec) if spec.endswith(".pth") else spec


def guarded(main) -> None:
    """Run a tool's main(); a bad model spec, model file or data set ends it with one line
    `TOOL: error: ...` on stderr and exit code 2."""
    try:
        main()
    except (CheckpointError, DataError) as e:
        print(f"{os.path.basename(sys.argv[0])}: error: {e}", file=sys.stderr)
        sys.exit(2)
