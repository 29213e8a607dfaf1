"""Three small robust CIFAR-10 classifiers trained by others, rebuilt from their published weights.

- vnncomp21-resnet2b, vnncomp21-resnet4b: the ResNet-2B and ResNet-4B of the VNN-COMP 2021 CIFAR-10
  ResNet benchmark (Wang et al. 2021, Beta-CROWN; PGD adversarial training, Linf eps 2/255), published
  as ONNX (with PyTorch checkpoints beside them) at github.com/stanleybak/vnncomp2021,
  benchmarks/cifar10_resnet/. Batch-norm-free residual nets: a 3x3 stride-2 stem, one (2B) or two (4B)
  stages of two residual blocks (the first of each stage strided, with a 1x1 convolution on its
  shortcut), then a 100-unit hidden linear layer.
- wong18-cifar-small-8px: the "small" CIFAR-10 model of Wong et al. 2018 (provable training through a
  convex relaxation, Linf eps 8/255), github.com/locuslab/convex_adversarial (models_scaled/
  cifar_small_8px.pth): conv(16, 4x4, stride 2) - conv(32, 4x4, stride 2) - fc(100) - fc(10).

A model file is a plain state dict of these architectures (`torch.load(..., weights_only=True)` reads
it), named after the model: vnncomp21-resnet2b.pth, vnncomp21-resnet4b.pth or wong18-cifar-small-8px.pth;
the name says which architecture to build. A dict holding the weights under "state_dict" is unwrapped
(the benchmark's eval.py reads its PyTorch checkpoints so), and so is a one-element list there. The
published models_scaled/cifar_small_8px.pth holds a list of three state dicts (convex_adversarial's cascade
layout), of which this model is the first: save that one alone (docs/results.md, "The reference models",
shows the line); weights whose names or shapes do not fit the architecture are refused in one line. Each
model takes [0, 1] images and normalises them itself, with the statistics its authors trained with. The
results under results/ that name these models came from the developers' copies of the three files.
Printed: the clean accuracy of a model file on the first test points (a check that it loaded right).

    python tools/reference_models.py models/vnncomp21-resnet4b.pth --dataset cifar10 --n-examples 1000
"""
import argparse
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from models import CIFAR10_MEAN, CIFAR10_STD, CheckpointError, Normalize, load_weights_only  # noqa: E402

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the input statistics of convex_adversarial's CIFAR-10 loaders
CONVEX_ADVERSARIAL_STD = (0.225, 0.225, 0.225)


class PlainResidual(nn.Module):
    """relu(conv2(relu(conv1(x))) + shortcut(x)), no batch norm; the shortcut is a strided 1x1
    convolution where the block changes the resolution or the width, else the identity."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, padding=1)
        reshape = stride != 1 or c_in != c_out
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride)) if reshape else nn.Sequential()

    def forward(self, x):
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.shortcut(x))


class VnnResNet(nn.Module):
    """ResNet-2B (stages=1, width 8) / ResNet-4B (stages=2, width 16) of VNN-COMP 2021 on 32x32 inputs:
    stem conv (stride 2), `stages` x [strided block to 2*width, block], linear to 100, linear to 10."""

    def __init__(self, width: int, stages: int, hidden: int = 100, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 2, padding=1)
        c_in = width
        for s in range(stages):
            self.add_module(f"layer{s + 1}", nn.Sequential(PlainResidual(c_in, 2 * width, 2),
                                                           PlainResidual(2 * width, 2 * width, 1)))
            c_in = 2 * width
        side = 32 // 2 ** (stages + 1)  # the stem and every stage halve the resolution
        self.linear1 = nn.Linear(c_in * side * side, hidden)
        self.linear2 = nn.Linear(hidden, num_classes)
        self.n_stages = stages

    def forward(self, x):
        h = F.relu(self.conv1(x))
        for s in range(self.n_stages):
            h = getattr(self, f"layer{s + 1}")(h)
        return self.linear2(F.relu(self.linear1(h.flatten(1))))


def wong_small() -> nn.Sequential:
    """The "small" CIFAR-10 model of convex_adversarial (Wong et al. 2018), keys 0, 2, 5 and 7."""
    return nn.Sequential(nn.Conv2d(3, 16, 4, 2, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 4, 2, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(32 * 8 * 8, 100), nn.ReLU(), nn.Linear(100, 10))


# name -> (architecture, input mean, input std)
REFERENCE_MODELS = {
    "vnncomp21-resnet2b": (lambda: VnnResNet(width=8, stages=1), CIFAR10_MEAN, CIFAR10_STD),
    "vnncomp21-resnet4b": (lambda: VnnResNet(width=16, stages=2), CIFAR10_MEAN, CIFAR10_STD),
    "wong18-cifar-small-8px": (wong_small, IMAGENET_MEAN, CONVEX_ADVERSARIAL_STD),
}


def reference_name(path: str) -> str:
    """The reference model a file holds, read off its name (vnncomp21-resnet4b.pth -> vnncomp21-resnet4b)."""
    name = os.path.basename(path)[:-len(".pth")] if path.endswith(".pth") else None
    if name not in REFERENCE_MODELS:
        raise CheckpointError(f"{path}: a reference model file is named NAME.pth with NAME one of "
                              f"{', '.join(REFERENCE_MODELS)}")
    return name


def build_reference(name: str) -> nn.Module:
    """The bare architecture of a reference model (its state dict's keys), random weights."""
    return REFERENCE_MODELS[name][0]()


def unwrapped(state):
    """The state dict inside what a file holds: itself, or what "state_dict" holds (a one-element list
    of state dicts in convex_adversarial's cascade layout)."""
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if isinstance(state, (list, tuple)) and len(state) == 1:
        state = state[0]
    return state


def load_reference(path: str, map_location="cpu") -> nn.Module:
    """The reference model stored in `path` (named after it), in eval mode: its input normalisation, then
    the architecture with the file's weights. It takes [0, 1] images (N, 3, 32, 32) and returns logits."""
    name = reference_name(path)
    net = build_reference(name)
    state = unwrapped(load_weights_only(path, "cpu", what=f"reference model {name}"))
    try:
        net.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise CheckpointError(f"{path}: not the weights of {name}: {str(e).strip().splitlines()[0]}") from None
    _, mean, std = REFERENCE_MODELS[name]
    return nn.Sequential(Normalize(mean, std), net).eval().to(map_location)


def build_parser() -> argparse.ArgumentParser:
    """The command line of this tool."""
    from common import tool_parser  # here: common imports this file
    p = tool_parser(splits=("test",), models=False, out=False, description=__doc__)
    p.add_argument("path", help="NAME.pth, NAME one of " + ", ".join(REFERENCE_MODELS))
    p.add_argument("--n-examples", type=int, default=1000, help="first n test points")
    return p


def main(argv=None) -> None:
    """Clean accuracy of a reference model file on the first test points: a check that the file loads."""
    from common import first_points, parse_tool_args
    args = parse_tool_args(build_parser(), argv)
    model = load_reference(args.path)
    x, y = first_points(args, args.n_examples)
    with torch.no_grad():
        correct = sum((model(xb).argmax(1) == yb).sum().item() for xb, yb in zip(x.split(500), y.split(500)))
    print(f"{reference_name(args.path)}: clean accuracy {100 * correct / len(y):.2f}% on the first {len(y)} test points")


if __name__ == "__main__":
    from common import guarded
    guarded(main)
