"""Developer check: `metrics.FIDInceptionV3` and `metrics.frechet_distance` against pytorch-fid, on the same
weights and the same images.

Needs `pip install pytorch-fid==0.3.0` (in requirements-dev.txt; a development check, not a dependency).

    python tools/compare_pytorch_fid.py --weights pt_inception-2015-12-05-6726825d.pth --images cifar10 \\
        --n 1000 --results runs/agreement-pytorch-fid.json
    python tools/compare_pytorch_fid.py --random-weights 0 --images synthetic \\
        --results runs/agreement-pytorch-fid.json              # offline: no weights file needed

Both networks get one state dict: the standard FID weights file (`--weights PATH`, or "standard": torch.hub's
cache, downloaded once; sha256-checked by `metrics.load_inception_weights`), or with `--random-weights SEED`
one random state dict (random convolutions, random BatchNorm scales and offsets, BatchNorm statistics
calibrated on noise so that the activations neither vanish nor explode). pytorch-fid's `fid_inception_v3()`
fetches its weights with `load_state_dict_from_url`; this tool replaces that name in `pytorch_fid.inception`,
in its own process only, by a function that returns our state dict, so pytorch-fid builds its network from
its own code without downloading anything. The key names and shapes of the two networks are compared first.

Two disjoint sets of N images (the first N and the next N of the synthetic set, an npz, or CIFAR-10's test
split): pytorch-fid reads them as PNG files through its own `get_activations` and `calculate_frechet_distance`;
ours through `metrics.inception_outputs`, `feature_statistics` and `frechet_distance`. Reported: the largest
|difference| of the 2048-d pool3 features, the FID between the two sets on each side, and our
`frechet_distance` on pytorch-fid's own statistics (the formula alone).
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

from common import tool_parser  # first: it puts the repo on sys.path
import metrics
from data import DataError, load_npz, load_split, synthetic_split
from models import first_line, provenance, write_json

IMAGE_SOURCES = ("synthetic", "npz", "cifar10")
SYNTHETIC_SEED = 3  # the synthetic images: a split of their own (data.py's train and test splits use 1 and 2)
CALIBRATION_IMAGES = 4  # noise images whose batch statistics become the random network's BatchNorm statistics
RELATIVE_TOLERANCE = 1e-5  # agreement: largest feature difference / largest |feature|, and FID difference / FID
BN_SCALE_RANGE, BN_SHIFT_STD = (0.5, 1.5), 0.1  # random BatchNorm affine parameters: weight ~ U(range), bias ~ N(0, std)


class ToolError(ValueError):
    """Bad input to the tool: a missing package, file or weights, too few images."""


def random_state_dict(seed: int) -> dict:
    """A random state dict for the FID Inception: default-initialised convolutions and fc, random BatchNorm
    affine parameters, and BatchNorm statistics taken from one train-mode pass over noise images."""
    torch.manual_seed(seed)
    net = metrics.FIDInceptionV3(weights=None)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, *BN_SCALE_RANGE)
            torch.nn.init.normal_(m.bias, 0, BN_SHIFT_STD)
            m.momentum = None  # a cumulative average: one pass sets the statistics to that batch's
    net.train()
    with torch.no_grad():
        net(torch.rand(CALIBRATION_IMAGES, 3, 32, 32))
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def pytorch_fid_network(state: dict):
    """pytorch-fid's InceptionV3 (pool3 block) with `state` loaded: its `load_state_dict_from_url` replaced,
    in this process, by a function that returns `state` (nothing is downloaded)."""
    from pytorch_fid import inception
    inception.load_state_dict_from_url = lambda *args, **kwargs: state
    return inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()


def key_agreement(state: dict) -> dict:
    """Compare our state dict's names and shapes with those of pytorch-fid's `fid_inception_v3()` network."""
    from pytorch_fid import inception
    inception.load_state_dict_from_url = lambda *args, **kwargs: state
    theirs = {k: tuple(v.shape) for k, v in inception.fid_inception_v3().state_dict().items()}
    ours = {k: tuple(v.shape) for k, v in metrics.FIDInceptionV3(weights=None).state_dict().items()}
    return {"tensors": len(ours), "only_ours": sorted(set(ours) - set(theirs)),
            "only_pytorch_fid": sorted(set(theirs) - set(ours)),
            "shape_differs": sorted(k for k in set(ours) & set(theirs) if ours[k] != theirs[k])}


def image_sets(source: str, n: int, npz: str, data_dir: str) -> tuple:
    """Two disjoint sets of n uint8 NCHW images: the first n and the next n of the source."""
    if source == "synthetic":
        images = synthetic_split(2 * n, seed=SYNTHETIC_SEED).images
    elif source == "npz":
        if not npz:
            raise ToolError("--images npz needs --npz PATH")
        images = load_npz(npz).images
    else:
        images = load_split("cifar10", data_dir, train=False).images
    if len(images) < 2 * n:
        raise ToolError(f"--n {n} needs {2 * n} images; the {source} source holds {len(images)}")
    return images[:n], images[n:2 * n]


def pytorch_fid_features(net, sets: tuple, batch_size: int) -> tuple:
    """pytorch-fid's own pipeline: the images as PNG files through its get_activations; (features of each
    set, seconds)."""
    from PIL import Image
    from pytorch_fid import fid_score
    start, features = time.perf_counter(), []
    with tempfile.TemporaryDirectory() as folder:
        for s, images in enumerate(sets):
            files = []
            for i, image in enumerate(images.permute(0, 2, 3, 1).numpy()):
                files.append(os.path.join(folder, f"set{s}-{i:05d}.png"))
                Image.fromarray(image).save(files[-1])  # PNG: lossless, so ToTensor gives image / 255 exactly
            features.append(fid_score.get_activations(files, net, batch_size, 2048, "cpu", num_workers=0))
    return features, time.perf_counter() - start


def our_features(net, sets: tuple, batch_size: int) -> tuple:
    """Ours: metrics.inception_outputs on float images image / 255; (features of each set, seconds)."""
    start = time.perf_counter()
    features = [metrics.inception_outputs(net, images.float() / 255, batch_size)[0] for images in sets]
    return features, time.perf_counter() - start


def fid_figures(theirs: list, ours: list) -> dict:
    """The FID between the two sets on each side: pytorch-fid's statistics (as its calculate_activation_statistics)
    and calculate_frechet_distance on its features; ours (feature_statistics, frechet_distance) on ours; and
    our formula on pytorch-fid's statistics. Seconds of each side's statistics and formula."""
    from pytorch_fid import fid_score
    start = time.perf_counter()
    stats = [(np.mean(f, axis=0), np.cov(f, rowvar=False)) for f in theirs]
    fid_theirs = float(fid_score.calculate_frechet_distance(*stats[0], *stats[1]))
    middle = time.perf_counter()
    fid_ours = metrics.frechet_distance(*metrics.feature_statistics(ours[0]), *metrics.feature_statistics(ours[1]))
    seconds = {"pytorch_fid": middle - start, "ours": time.perf_counter() - middle}
    return {"fid_pytorch_fid": fid_theirs, "fid_ours": fid_ours, "fid_abs_diff": abs(fid_theirs - fid_ours),
            "fid_ours_on_pytorch_fid_statistics": metrics.frechet_distance(*stats[0], *stats[1]), "seconds": seconds}


def compare_features(state: dict, sets: tuple, batch_size: int) -> tuple:
    """Both networks on the same state dict and images: (pytorch-fid's features, ours, their seconds)."""
    theirs, seconds_theirs = pytorch_fid_features(pytorch_fid_network(state), sets, batch_size)
    net = metrics.FIDInceptionV3(weights=None)
    net.load_state_dict(state, strict=True)
    ours, seconds_ours = our_features(net, sets, batch_size)
    return theirs, ours, {"pytorch_fid": seconds_theirs, "ours": seconds_ours}


def compare(state: dict, sets: tuple, batch_size: int) -> dict:
    """The figures of the results file: features, FID, and each side's seconds (features, statistics, FID)."""
    theirs, ours, seconds = compare_features(state, sets, batch_size)
    a, b = np.concatenate(theirs), np.concatenate(ours)
    fid = fid_figures(theirs, ours)
    return {"feature_max_abs_diff": float(np.abs(a - b).max()), "feature_max_abs": float(np.abs(a).max()),
            "feature_mean_abs": float(np.abs(a).mean()), **{k: v for k, v in fid.items() if k != "seconds"},
            "seconds_pytorch_fid": seconds["pytorch_fid"] + fid["seconds"]["pytorch_fid"],
            "seconds_ours": seconds["ours"] + fid["seconds"]["ours"]}


def agree(figures: dict) -> bool:
    """The rule, fixed before any run: features and FID equal up to RELATIVE_TOLERANCE."""
    return (figures["feature_max_abs_diff"] <= RELATIVE_TOLERANCE * figures["feature_max_abs"]
            and figures["fid_abs_diff"] <= RELATIVE_TOLERANCE * abs(figures["fid_pytorch_fid"]))


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(models=False, out=False, description=__doc__)
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--weights", default="standard",
                         help="the standard FID weights file: 'standard' (torch.hub's cache, downloaded once) or a path")
    weights.add_argument("--random-weights", type=int, metavar="SEED", default=None,
                         help="instead, one random state dict built with this seed (runs offline)")
    p.add_argument("--images", choices=IMAGE_SOURCES, default="synthetic", help="where the two image sets come from")
    p.add_argument("--npz", default=None, help="the npz for --images npz ('image' (N,H,W,3) uint8, 'label')")
    p.add_argument("--data-dir", default="data", help="where torchvision keeps CIFAR-10 (--images cifar10)")
    p.add_argument("--n", type=int, default=100, help="images in each of the two sets")
    p.add_argument("--batch-size", type=int, default=50, help="images per Inception forward, both sides")
    p.add_argument("--results", default=None, help="write the figures here, with provenance")
    return p


def run(args) -> dict:
    if args.n < 2 or args.batch_size < 1:
        raise ToolError(f"--n must be at least 2 and --batch-size at least 1 (got {args.n}, {args.batch_size})")
    if args.results and os.path.isdir(args.results):
        raise ToolError(f"--results {args.results} is a folder; name a file")
    try:
        import pytorch_fid
    except ImportError:
        raise ToolError("pytorch-fid is not installed: pip install pytorch-fid==0.3.0") from None
    sets = image_sets(args.images, args.n, args.npz, args.data_dir)
    if args.random_weights is not None:
        state = random_state_dict(args.random_weights)
        weights = {"random_seed": args.random_weights, "recipe": (
            f"default-initialised convolutions and fc; BatchNorm weight ~ U{BN_SCALE_RANGE}, bias ~ N(0, {BN_SHIFT_STD}); "
            f"BatchNorm statistics of one train-mode pass over {CALIBRATION_IMAGES} uniform-noise images")}
    else:
        state, digest = metrics.load_inception_weights(args.weights)
        weights = {"file": os.path.basename(args.weights) if args.weights != "standard" else
                   os.path.basename(metrics.FID_WEIGHTS_URL), "sha256": digest}
    keys = key_agreement(state)
    if keys["only_ours"] or keys["only_pytorch_fid"] or keys["shape_differs"]:
        raise ToolError(f"the two networks' state dicts differ: {keys}")
    figures = compare(state, sets, args.batch_size)
    settings = {"images": args.images, "n_per_set": args.n, "sets": "the first n and the next n images",
                "batch_size": args.batch_size, "weights": weights, "resize": metrics.RESIZE_RULE}
    files = {"npz": [args.npz], "cifar10": [os.path.join(args.data_dir, "cifar-10-batches-py", "test_batch")]}
    return {"provenance": provenance(files.get(args.images, [])), "settings": settings,
            "pytorch_fid_version": pytorch_fid.__version__, "state_dict_keys": keys, **figures,
            "relative_tolerance": RELATIVE_TOLERANCE, "agree": agree(figures)}


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except (ToolError, DataError, metrics.MetricsError) as e:
        print(f"compare_pytorch_fid.py: error: {first_line(e)}", file=sys.stderr)
        sys.exit(2)
    print(f"state dicts: {result['state_dict_keys']['tensors']} tensors, same names and shapes")
    print(f"pool3 features ({2 * args.n} images): max |difference| {result['feature_max_abs_diff']:.3g} "
          f"(largest |feature| {result['feature_max_abs']:.3g})")
    print(f"FID between the two sets: pytorch-fid {result['fid_pytorch_fid']:.6f}, ours {result['fid_ours']:.6f} "
          f"(|difference| {result['fid_abs_diff']:.3g}); ours on pytorch-fid's statistics "
          f"{result['fid_ours_on_pytorch_fid_statistics']:.6f}")
    print(f"seconds: pytorch-fid {result['seconds_pytorch_fid']:.1f}, ours {result['seconds_ours']:.1f}")
    print("agree" if result["agree"] else f"DISAGREE (relative tolerance {RELATIVE_TOLERANCE:g})")
    if args.results:
        write_json(args.results, result)


if __name__ == "__main__":
    main()
