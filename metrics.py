"""Generative metrics: FID, Inception Score and KID, with the FID variant of Inception-v3.

The network is the Inception-v3 that the TensorFlow FID code used (Heusel et al. 2017), as ported to
PyTorch in the weights file `pt_inception-2015-12-05-6726825d.pth`: its 2048-d pool features feed FID
and KID, its 1008-way logits feed the Inception Score. Written here from the published architecture;
parameter names and shapes match the standard file, which loads with `strict=True`.

    python metrics.py runs/gen/samples.npz --ref cifar10 --metrics fid,is,kid
    python metrics.py samples.npz --ref npz --ref-npz cifar10_train.npz --inception-weights pt_inception.pth
"""
import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import linalg
from scipy.special import logsumexp
from tqdm import tqdm

FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")  # the file the common PyTorch FID tools use
FID_WEIGHTS_SHA256_PREFIX = "6726825d"  # torch.hub checks this prefix of the file's sha256
INCEPTION_SIZE = 299
RESIZE_RULE = "bilinear to 299x299, align_corners=False, no antialias; then scaled to [-1, 1]"
BN_EPS = 0.001  # BatchNorm epsilon of the TensorFlow Inception graph
FID_MIN_SAMPLES = 2048  # fewer samples than feature dimensions: the covariance is singular, FID biased
METRICS = ("fid", "is", "kid")


class MetricsError(ValueError):
    """Bad input to the metrics: weights that cannot be had, or too few samples."""


# ---------------------------------------------------------------------------------------------------
# The network


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm (eps 0.001) -> ReLU."""

    def __init__(self, c_in, c_out, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def avg_pool_3x3(x):
    # Patch: the TensorFlow graph's average pools exclude the zero padding from the mean
    # (count_include_pad=False), unlike torchvision's Inception-v3.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, c_in, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 64, 1)
        self.branch5x5_1 = BasicConv2d(c_in, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(c_in, pool_features, 1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(avg_pool_3x3(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, c_in):
        super().__init__()
        self.branch3x3 = BasicConv2d(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, c_in, c7):
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x):
        dbl = x
        for i in range(1, 6):
            dbl = getattr(self, f"branch7x7dbl_{i}")(dbl)
        return torch.cat([self.branch1x1(x), self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))), dbl,
                          self.branch_pool(avg_pool_3x3(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, c_in):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """The last two blocks; `max_pool=True` is the FID graph's Mixed_7c."""

    def __init__(self, c_in, max_pool=False):
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 320, 1)
        self.branch3x3_1 = BasicConv2d(c_in, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(c_in, 192, 1)
        self.max_pool = max_pool

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        # Patch: the FID graph's last block (Mixed_7c) max-pools in its pool branch.
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else avg_pool_3x3(x)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                          self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl), self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 of the TensorFlow FID code: images in [0, 1] -> (pool features (N, 2048), logits (N, 1008)).

    weights: "standard" downloads (once, through torch.hub's cache, hash-checked) the standard file;
    a path loads that file (its sha256 must match the standard one); None keeps random weights (tests).
    """

    def __init__(self, weights="standard"):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = InceptionA(192, 32), InceptionA(256, 64), InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b, self.Mixed_6c = InceptionC(768, 128), InceptionC(768, 160)
        self.Mixed_6d, self.Mixed_6e = InceptionC(768, 160), InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b, self.Mixed_7c = InceptionE(1280), InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)
        self.weights_id = "random"
        if weights is not None:
            state, self.weights_id = load_inception_weights(weights)
            self.load_state_dict(state, strict=True)
        self.eval()

    def forward(self, images):
        x = F.interpolate(images, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        x = 2 * x - 1  # the TensorFlow graph takes [-1, 1]
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        features = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return features, self.fc(features)


def sha256_of(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def load_inception_weights(weights: str) -> tuple:
    """(state dict, sha256 of the file) for "standard" (torch.hub cache / download) or a path."""
    if weights == "standard":
        cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(FID_WEIGHTS_URL))
        if not os.path.isfile(cached):
            try:
                torch.hub.load_state_dict_from_url(FID_WEIGHTS_URL, map_location="cpu", check_hash=True)
            except Exception as e:
                raise MetricsError(f"could not download the FID Inception weights ({type(e).__name__}: {e}); "
                                   f"fetch {FID_WEIGHTS_URL} on a machine with internet and pass "
                                   f"--inception-weights PATH, or copy it to {cached}") from None
        weights = cached
    if not os.path.isfile(weights):
        raise MetricsError(f"Inception weights not found: {weights}")
    digest = sha256_of(weights)
    if not digest.startswith(FID_WEIGHTS_SHA256_PREFIX):
        raise MetricsError(f"{weights} is not the standard FID Inception weights file (sha256 {digest[:8]}..., "
                           f"expected {FID_WEIGHTS_SHA256_PREFIX}...)")
    return torch.load(weights, map_location="cpu", weights_only=True), digest


@torch.no_grad()
def inception_outputs(net: FIDInceptionV3, images: torch.Tensor, batch_size: int = 100, device="cpu") -> tuple:
    """Pool features (N, 2048) and logits (N, 1008) as float64 numpy arrays.

    images: uint8 NCHW (0..255) or float NCHW in [0, 1]; batched, eval mode, float32.
    """
    net = net.to(device).eval()
    features, logits = [], []
    for start in tqdm(range(0, len(images), batch_size), desc="inception", leave=False, dynamic_ncols=True):
        x = images[start:start + batch_size].to(device)
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        f, z = net(x)
        features.append(f.double().cpu())
        logits.append(z.double().cpu())
    return torch.cat(features).numpy(), torch.cat(logits).numpy()


# ---------------------------------------------------------------------------------------------------
# The metrics (pure numpy)


def feature_statistics(features: np.ndarray) -> tuple:
    """Mean and covariance (unbiased, rows are samples) of a feature matrix, float64."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017):

        d^2 = ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))

    float64; when the product is singular, `eps` is added to both diagonals; an imaginary part of the
    square root is discarded only when it is negligible (numerical error), else it is an error.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"shapes do not match: mu {mu1.shape} {mu2.shape}, sigma {sigma1.shape} {sigma2.shape}")
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(mu1)) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"matrix square root has a large imaginary part ({np.abs(covmean.imag).max():.3g})")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def inception_score(logits, splits: int = 10, seed: int = 0) -> tuple:
    """Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))), mean and std over splits.

    The rows are shuffled with `seed` before splitting, so the splits do not follow the sample order.
    """
    logits = np.asarray(logits, np.float64)
    log_p = logits - logsumexp(logits, axis=1, keepdims=True)
    log_p = log_p[np.random.default_rng(seed).permutation(len(log_p))]
    scores = []
    for part in np.array_split(log_p, splits):
        log_py = logsumexp(part, axis=0) - np.log(len(part))
        p = np.exp(part)
        kl = np.where(p > 0, p * (part - log_py), 0.0).sum(1)  # 0 log 0 = 0
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """k(x, y) = (x . y / d + 1)^3, the cubic kernel of KID (Binkowski et al. 2018)."""
    return (a @ b.T / a.shape[1] + 1) ** 3


def kid(feats1, feats2, n_subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple:
    """Kernel Inception Distance: unbiased MMD^2 with the cubic kernel, mean and std over random subsets.

    subset_size is capped at the smaller set. MMD^2_u = mean_{i!=j} k(x_i,x_j) + mean_{i!=j} k(y_i,y_j)
    - 2 mean_{i,j} k(x_i, y_j).
    """
    feats1, feats2 = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
    m = min(subset_size, len(feats1), len(feats2))
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_subsets):
        x = feats1[rng.choice(len(feats1), m, replace=False)]
        y = feats2[rng.choice(len(feats2), m, replace=False)]
        k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
        off_diagonal = m * (m - 1)
        values.append((k_xx.sum() - np.trace(k_xx)) / off_diagonal + (k_yy.sum() - np.trace(k_yy)) / off_diagonal
                      - 2 * k_xy.mean())
    return float(np.mean(values)), float(np.std(values))


# ---------------------------------------------------------------------------------------------------
# Reference statistics and the command line


def reference_outputs(net, ref: str, split: str, data_dir: str, ref_npz: str, cache_dir: str,
                      batch_size: int, device) -> dict:
    """Features, mean and covariance of a reference set, cached on disk keyed by set, split and weights."""
    from data import load_split  # only the command line needs data sets: the library stands alone
    source = f"npz-{sha256_of(ref_npz)[:16]}" if ref == "npz" else ref
    path = os.path.join(cache_dir, f"{source}-{split}-inception-{net.weights_id[:16]}.npz")
    if os.path.isfile(path) and net.weights_id != "random":
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    images = load_split(ref, data_dir, split == "train", ref_npz).images
    features, _ = inception_outputs(net, images, batch_size, device)
    mu, sigma = feature_statistics(features)
    out = {"features": features.astype(np.float32), "mu": mu, "sigma": sigma}
    if net.weights_id != "random":  # random weights differ run to run: never cache them
        os.makedirs(cache_dir, exist_ok=True)
        np.savez(path + ".tmp.npz", **out)
        os.replace(path + ".tmp.npz", path)
    return out


def compute_metrics(net, samples: torch.Tensor, which, ref_outputs=None, batch_size=100, device="cpu") -> tuple:
    """The metrics named in `which` for uint8 NCHW samples; returns (results dict, warnings list)."""
    features, logits = inception_outputs(net, samples, batch_size, device)
    results, warnings = {}, []
    if "is" in which:
        results["is_mean"], results["is_std"] = inception_score(logits)
    if "fid" in which:
        if len(features) < FID_MIN_SAMPLES:
            warnings.append(f"FID from {len(features)} < {FID_MIN_SAMPLES} samples: the covariance is singular "
                            f"and the estimate biased upwards; compare only at equal sample counts")
        results["fid"] = frechet_distance(*feature_statistics(features), ref_outputs["mu"], ref_outputs["sigma"])
    if "kid" in which:
        results["kid_mean"], results["kid_std"] = kid(features, ref_outputs["features"])
    return results, warnings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], usage="%(prog)s SAMPLES.npz [options]",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("samples", help="npz with 'image' (N,H,W,3) uint8, e.g. generate.py's samples.npz")
    p.add_argument("--ref", choices=("cifar10", "cifar100", "svhn", "npz"), default="cifar10",
                   help="reference set for FID / KID")
    p.add_argument("--ref-npz", help="reference npz for --ref npz")
    p.add_argument("--ref-split", choices=("train", "test"), default="train", help="reference split")
    p.add_argument("--metrics", default="fid,is,kid", help=f"comma-separated, from {','.join(METRICS)}")
    p.add_argument("--inception-weights", default="standard",
                   help="'standard' (download / torch.hub cache), a path to the standard file, or 'random' (tests)")
    p.add_argument("--data-dir", default="data", help="where torchvision data sets are downloaded")
    p.add_argument("--cache-dir", default=os.path.join("data", "inception-stats"), help="reference statistics cache")
    p.add_argument("--batch-size", type=int, default=100, help="images per Inception forward")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--out", help="JSON report (default: metrics.json beside the samples)")
    return p


def run(args) -> dict:
    # the command line alone needs the repo's data and device helpers: the library part stands alone
    from data import load_npz
    from models import resolve_device
    which = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = sorted(set(which) - set(METRICS))
    if unknown or not which:
        raise MetricsError(f"unknown metric(s) {unknown}; choose from {','.join(METRICS)}")
    if args.ref == "npz" and not args.ref_npz and set(which) & {"fid", "kid"}:
        raise MetricsError("--ref npz needs --ref-npz")
    device = resolve_device(args.device)
    samples = load_npz(args.samples).images
    net = FIDInceptionV3(weights=None if args.inception_weights == "random" else args.inception_weights)
    ref = None
    if set(which) & {"fid", "kid"}:
        ref = reference_outputs(net, args.ref, args.ref_split, args.data_dir, args.ref_npz, args.cache_dir,
                                args.batch_size, device)
    start = time.time()
    results, warnings = compute_metrics(net, samples, which, ref, args.batch_size, device)
    report = {"samples": args.samples, "n_samples": len(samples), "ref": args.ref_npz or args.ref,
              "ref_split": args.ref_split, "n_ref": None if ref is None else len(ref["features"]),
              "resize": RESIZE_RULE, "inception_weights_sha256": net.weights_id, **results,
              "warnings": warnings, "seconds": time.time() - start, "torch": torch.__version__, "device": device}
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.samples)), "metrics.json")
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    return report


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    from data import DataError
    try:
        report = run(args)
    except (MetricsError, DataError) as e:
        print(f"metrics.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    for w in report["warnings"]:
        print(f"warning: {w}")
    for key in ("fid", "is_mean", "is_std", "kid_mean", "kid_std"):
        if key in report:
            print(f"{key}: {report[key]:.6g}")
    print(f"n_samples {report['n_samples']}, ref {report['ref']} ({report['n_ref']} images), "
          f"weights {report['inception_weights_sha256'][:8]}")


if __name__ == "__main__":
    main()
