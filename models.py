"""Classifiers and self-describing checkpoints.

Every model takes images in [0, 1] (NCHW, float) and returns logits. Input normalisation, when asked
for, is the first module of the network, so attacks and energies always see [0, 1] pixels.

    config = model_config("resnet18", num_classes=10)
    model = build_model(**config)                               # 11,173,962 parameters
    save_checkpoint("runs/x/last.pt", model, config, epoch=3, args=vars(args))
    model, ckpt = load_model("runs/x/last.pt")
"""
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

MODEL_NAMES = ("resnet18", "preact_resnet18", "wrn34_10")
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # the usual CIFAR-10 channel statistics
CIFAR10_STD = (0.2471, 0.2435, 0.2616)


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not match what was asked for."""


class Normalize(nn.Module):
    """(x - mean) / std per channel; mean and std are buffers, so they travel in the state dict."""

    def __init__(self, mean=CIFAR10_MEAN, std=CIFAR10_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016): relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation block (He et al. 2016b): conv(relu(bn(conv(relu(bn(x)))))) + shortcut."""

    def __init__(self, c_in, c_out, stride, drop_rate=0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.drop_rate = drop_rate
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = F.relu(self.bn2(self.conv1(out)))
        out = F.dropout(out, self.drop_rate, self.training)
        return self.conv2(out) + shortcut


class ResNet(nn.Module):
    """CIFAR ResNet: 3x3 stride-1 stem, no max-pool, four stages, adaptive average pooling.

    With `preact=True` it is the pre-activation variant (a final BN + ReLU before pooling).
    Adaptive pooling lets the same network take 32x32 (CIFAR, SVHN) and 64x64 (Tiny-ImageNet) inputs.
    """

    def __init__(self, blocks, num_classes, width=64, preact=False):
        super().__init__()
        block = PreActBlock if preact else BasicBlock
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = None if preact else nn.BatchNorm2d(width)
        layers, c_in = [], width
        for stage, n_blocks in enumerate(blocks):
            c_out, stride = width * 2 ** stage, 1 if stage == 0 else 2
            layers.append(nn.Sequential(*[block(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1)
                                          for i in range(n_blocks)]))
            c_in = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.bn_final = nn.BatchNorm2d(c_in) if preact else None
        self.linear = nn.Linear(c_in, num_classes)

    def forward(self, x):
        out = self.conv1(x)
        if self.bn1 is not None:
            out = F.relu(self.bn1(out))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        if self.bn_final is not None:
            out = F.relu(self.bn_final(out))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


class WideResNet(nn.Module):
    """WRN-depth-k (Zagoruyko & Komodakis 2016) as used by TRADES: depth 34, widen factor 10.

    Channels are (16, 16k, 32k, 64k), scaled by `width / 64` so that `width` means the same
    "fraction of the paper's network" as for the ResNets (64 is the paper's size).
    """

    def __init__(self, num_classes, depth=34, widen=10, width=64, drop_rate=0.0):
        super().__init__()
        n = (depth - 4) // 6  # blocks per stage: 5 for WRN-34
        channels = [max(1, round(c * width / 64)) for c in (16, 16 * widen, 32 * widen, 64 * widen)]
        self.conv1 = nn.Conv2d(3, channels[0], 3, 1, 1, bias=False)
        stages = []
        for stage in range(3):
            c_in, c_out, stride = channels[stage], channels[stage + 1], 1 if stage == 0 else 2
            stages.append(nn.Sequential(*[PreActBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1,
                                                      drop_rate) for i in range(n)]))
        self.block1, self.block2, self.block3 = stages
        self.bn = nn.BatchNorm2d(channels[3])
        self.linear = nn.Linear(channels[3], num_classes)

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.relu(self.bn(out))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def resolve_device(device: str) -> str:
    """The device a command runs on: "auto" is "cuda" where a GPU is visible, else "cpu"; other names as given,
    checked: a name torch does not know, or a GPU that is not there, raises ValueError."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device}: not a device name (cpu, cuda, cuda:N, mps, auto)") from None
    if parsed.type == "cuda" and (not torch.cuda.is_available() or (parsed.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"--device {device}: no such GPU here ({torch.cuda.device_count()} visible); use --device cpu")
    return device


def build_model(name: str, num_classes: int, normalize: bool = False, width: int = 64) -> nn.Module:
    """Build a classifier by name; `normalize` puts CIFAR-10 mean/std normalisation first."""
    if name == "resnet18":
        net = ResNet([2, 2, 2, 2], num_classes, width)
    elif name == "preact_resnet18":
        net = ResNet([2, 2, 2, 2], num_classes, width, preact=True)
    elif name == "wrn34_10":
        net = WideResNet(num_classes, depth=34, widen=10, width=width)
    else:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    return nn.Sequential(Normalize(), net) if normalize else net


def model_config(name: str, num_classes: int, normalize: bool = False, width: int = 64) -> dict:
    """The arguments of `build_model`, as stored in every checkpoint."""
    return {"name": name, "num_classes": num_classes, "normalize": normalize, "width": width}


def atomic_save(obj, path: str) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename into place.

    A reader never sees a half-written file: `path` holds either the old or the new checkpoint.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_checkpoint(path: str, model: nn.Module, config: dict, **extra) -> None:
    """Write {"model": state dict, "model_config": config, **extra} atomically.

    `extra` carries the optimizer, scheduler, epoch, args and metrics; all must be plain data and
    tensors so that the file loads with `torch.load(weights_only=True)`.
    """
    atomic_save({"model": model.state_dict(), "model_config": dict(config), **extra}, path)


def sha256_of(path: str) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cpu_model() -> str:
    """The CPU's name as the system gives it ("model name" in /proc/cpuinfo on Linux; platform's elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def provenance(data_files=(), device: str = "cpu") -> dict:
    """Where a measurement comes from, for the files under results/: the command that made it, the code's
    commit (with "-dirty" when tracked files other than results/, the measurements themselves, differed
    from it), the data files read (name and sha256) and the machine."""
    def git(*cmd):
        try:
            return subprocess.run(["git", *cmd], cwd=os.path.dirname(os.path.abspath(__file__)), capture_output=True,
                                  text=True, timeout=60).stdout.strip()
        except OSError:
            return ""
    commit = git("rev-parse", "HEAD") or "unknown"
    if commit != "unknown" and git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"):
        commit += "-dirty"
    accelerator = torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else None
    script = os.path.relpath(os.path.abspath(sys.argv[0]), os.path.dirname(os.path.abspath(__file__)))
    return {"command": shlex.join(["python", script, *sys.argv[1:]]),
            "commit": commit,
            "data": [{"name": os.path.basename(p), "sha256": sha256_of(p)} for p in data_files if p],
            "machine": {"system": platform.platform(terse=True), "processor": platform.machine(),
                        "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "torch": torch.__version__, "device": accelerator or "cpu",
                        # the CPU's vector instructions pick the kernels, and with them the last bits of every result
                        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_model": cpu_model()},
            "date": time.strftime("%Y-%m-%d")}


def write_json(path: str, obj) -> None:
    """Write obj as indented JSON, atomically (a file that exists is whole)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(path + ".tmp", path)


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type name when the message is empty)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_weights_only(path: str, map_location="cpu", what: str = "checkpoint"):
    """torch.load with `weights_only=True` (no code in the file can run); a missing, truncated, corrupt
    or unsafe file raises CheckpointError naming `what` it should have been."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many kinds for truncated, corrupt or unsafe files
        raise CheckpointError(f"cannot load {what} {path}: {first_line(e)}") from None


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Load a checkpoint dict with `weights_only=True` (no code in the file can run)."""
    ckpt = load_weights_only(path, map_location)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_config" not in ckpt:
        raise CheckpointError(f"{path} is not a checkpoint written by this repo (no model/model_config)")
    return ckpt


def load_model(path: str, map_location="cpu") -> tuple:
    """Rebuild the model stored in a checkpoint from the file alone; returns (model, ckpt)."""
    ckpt = load_checkpoint(path, map_location)
    config = ckpt["model_config"]
    try:
        model = build_model(**config)
        model.load_state_dict(ckpt["model"])
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: weights do not fit model {config}: {first_line(e)}") from None
    return model.to(map_location), ckpt


# ---------------------------------------------------------------------------------------------------
# Models trained elsewhere: the RobustBench zoo (optional dependency)

ROBUSTBENCH_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
ROBUSTBENCH_DOWNLOADS = ("cifar10", "cifar100")  # the zoo's data sets whose images data.py downloads
ROBUSTBENCH_INSTALL = "pip install robustbench 'setuptools<81'"
DEFAULT_IN_HELP = "%(default).0s"  # ends a help text that states its own default: ArgumentDefaultsHelpFormatter adds none


def import_robustbench_utils():
    """robustbench.utils, with a clear error where the package is missing.

    Patch: robustbench 1.1.1 from the package index imports `autoattack`, which the index only has as
    `pyautoattack` (the same code); the alias lets it import without the git-only package.
    """
    try:
        import pyautoattack
        import pyautoattack.state
        sys.modules.setdefault("autoattack", pyautoattack)
        sys.modules.setdefault("autoattack.state", pyautoattack.state)
    except ImportError:
        pass  # a robustbench that needs no alias (or none at all: reported below)
    try:
        import robustbench.utils
    except ImportError as e:
        raise CheckpointError(f"--robustbench needs the robustbench package ({first_line(e)}): "
                              f"{ROBUSTBENCH_INSTALL}") from None
    return robustbench.utils


def load_robustbench(name: str, dataset: str = "cifar10", threat_model: str = "Linf", model_dir: str = "models",
                     map_location="cpu") -> tuple:
    """A RobustBench zoo model in eval mode (it takes [0, 1] images and returns logits), and a description
    shaped like a checkpoint's (its data set in "args", its classes in "model_config"). robustbench
    downloads the weights into model_dir/DATASET/THREAT_MODEL/NAME.pt unless the file is there already."""
    utils = import_robustbench_utils()
    if dataset not in ROBUSTBENCH_CLASSES:
        raise CheckpointError(f"--dataset {dataset}: RobustBench has {', '.join(ROBUSTBENCH_CLASSES)}")
    try:
        model = utils.load_model(model_name=name, model_dir=model_dir, dataset=dataset, threat_model=threat_model)
    except Exception as e:  # unknown name, no network, a broken file: robustbench raises many kinds
        path = os.path.join(model_dir, dataset, threat_model, f"{name}.pt")
        raise CheckpointError(f"cannot load RobustBench model {name} ({first_line(e)}); offline, put its weights "
                              f"at {path}") from None
    info = {"args": {"dataset": dataset}, "model_config": {"num_classes": ROBUSTBENCH_CLASSES[dataset]},
            "source": f"robustbench:{dataset}/{threat_model}/{name}",
            "file": os.path.join(model_dir, dataset, threat_model, f"{name}.pt")}
    return model.to(map_location).eval(), info


def add_classifier_flags(parser, several: bool = False) -> None:
    """--ckpt (a train.py checkpoint; several with `several`) or --robustbench NAME (with the zoo flags)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", nargs="+" if several else None,
                        help=("checkpoints written by train.py" if several else "a checkpoint written by train.py")
                        + DEFAULT_IN_HELP)
    source.add_argument("--robustbench", metavar="NAME", help="a RobustBench zoo model, e.g. Wong2020Fast "
                        f"(needs {ROBUSTBENCH_INSTALL})" + DEFAULT_IN_HELP)
    add_zoo_flags(parser)


def add_zoo_flags(parser, given: str = "--robustbench: ") -> None:
    """--dataset, --threat-model and --model-dir of RobustBench models (`given`: what their help starts with)."""
    parser.add_argument("--dataset", choices=tuple(ROBUSTBENCH_CLASSES), default="cifar10",
                        help=f"{given}the zoo's data set (its test / training split is used; imagenet's images "
                             "only from an npz you give)")
    parser.add_argument("--threat-model", choices=("Linf", "L2", "corruptions"), default="Linf",
                        help=f"{given}the zoo's threat model")
    parser.add_argument("--model-dir", default="models", help=f"{given}where zoo weights are kept")


def load_classifier(args, map_location="cpu", ckpt: str = None) -> tuple:
    """(model in eval mode, checkpoint or description, with "source" and "file") from --ckpt (or the path
    `ckpt`) or --robustbench."""
    if getattr(args, "robustbench", None) and args.dataset not in ROBUSTBENCH_DOWNLOADS and not (
            getattr(args, "test_npz", None) or getattr(args, "train_npz", None)):  # before any weights download
        raise CheckpointError(f"--dataset {args.dataset}: this repo does not download its images; give them as an npz "
                              "(--test-npz; generate.py: --train-npz)")
    if args.robustbench:
        return load_robustbench(args.robustbench, args.dataset, args.threat_model, args.model_dir, map_location)
    path = ckpt or args.ckpt
    model, checkpoint = load_model(path, map_location)
    return model.eval(), {**checkpoint, "source": os.path.abspath(path), "file": path}


# ---------------------------------------------------------------------------------------------------
# The frame every command line shares


def run_command(prog: str, parser, argv, check, run, errors: tuple):
    """Parse argv, `check(args)` (a ValueError becomes argparse's usage error, exit 2), then `run(args)`:
    an error of the types in `errors` becomes one line `prog: error: ...` on stderr and exit code 2.
    Returns what `run` returns."""
    args = parser.parse_args(argv)
    try:
        if isinstance(getattr(args, "device", None), str):
            resolve_device(args.device)  # a bad --device is a usage error before anything runs
        check(args)
    except ValueError as e:
        parser.error(str(e))
    try:
        return run(args)
    except errors as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
