"""Generative metrics: FID, Inception Score, KID and LPIPS diversity, with their networks.

The FID network is the Inception-v3 that the TensorFlow FID code used (Heusel et al. 2017), as ported to
PyTorch in the weights file `pt_inception-2015-12-05-6726825d.pth`: its 2048-d pool features feed FID
and KID; the Inception Score takes softmax(pool3 @ W^T), the fc layer *without* its bias, as the
original IS code and torch-fidelity's `logits_unbiased` do. LPIPS (Zhang et al. 2018, v0.1) is AlexNet's
feature layers with the published linear calibration. Written here from the published architectures;
parameter names and shapes match the standard files, which load with `strict=True`. This file stands
alone: copy it without the rest of the repo (only its command line reads data sets through data.py).

    python metrics.py runs/gen/samples.npz --ref cifar10 --metrics fid,is,kid
    python metrics.py samples.npz --ref npz --ref-npz cifar10_train.npz --inception-weights pt_inception.pth
    python metrics.py samples.npz --metrics lpips --ref npz --ref-npz cifar10_train.npz
"""
import argparse
import hashlib
import json
import os
import sys
import time
import zipfile

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
METRICS = ("fid", "is", "kid", "lpips")
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"  # torchvision's ImageNet AlexNet
ALEXNET_SHA256_PREFIX = "7be5be79"  # torch.hub checks this prefix of the file's sha256
LPIPS_ALEX_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth"
LPIPS_ALEX_SHA256 = "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0"  # lpips 0.1.4's alex.pth
LPIPS_SHIFT = (-0.030, -0.088, -0.188)  # the LPIPS scaling layer (v0.1): (x - shift) / scale on [-1, 1] inputs
LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_TAPS = (1, 4, 7, 9, 11)  # AlexNet's ReLUs after conv1 ... conv5 (indices in torchvision's `features`)
LPIPS_CHANNELS = (64, 192, 384, 256, 256)
NORM_EPS = 1e-10  # unit-normalising features: x / (||x||_2 over channels + 1e-10), as the lpips code
DIVERSITY_PAIRS = 500  # random same-class pairs per class for the diversity figures
DEFAULT_IN_HELP = "%(default).0s"  # as models.DEFAULT_IN_HELP: metrics.py imports nothing of the repo (copy it alone)


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

    def logits_unbiased(self, features: torch.Tensor) -> torch.Tensor:
        """pool3 @ W^T without the fc bias: the logits of the Inception Score (Salimans et al.'s code)."""
        return features @ self.fc.weight.T

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


def weights_file(weights: str, url: str, sha256_prefix: str, what: str, flag: str) -> tuple:
    """(state dict, sha256) of a weights file: "standard" is the file at `url`, through torch.hub's cache
    (downloaded once), a path is that file; either must have the sha256 of the standard file."""
    if weights == "standard":
        cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
        if not os.path.isfile(cached):
            try:
                os.makedirs(os.path.dirname(cached), exist_ok=True)
                torch.hub.download_url_to_file(url, cached, hash_prefix=sha256_prefix, progress=False)
            except Exception as e:
                raise MetricsError(f"could not download the {what} ({type(e).__name__}: {first_line(e)}); fetch "
                                   f"{url} on a machine with internet and pass {flag} PATH, or copy it to {cached}") from None
        weights = cached
    if not os.path.isfile(weights):
        raise MetricsError(f"{what} not found: {weights}")
    digest = sha256_of(weights)
    if not digest.startswith(sha256_prefix):
        raise MetricsError(f"{weights} is not the standard {what} file (sha256 {digest[:8]}..., expected "
                           f"{sha256_prefix[:8]}...)")
    return torch.load(weights, map_location="cpu", weights_only=True), digest


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_inception_weights(weights: str) -> tuple:
    """(state dict, sha256 of the file) for "standard" (torch.hub cache / download) or a path."""
    return weights_file(weights, FID_WEIGHTS_URL, FID_WEIGHTS_SHA256_PREFIX, "FID Inception weights",
                        "--inception-weights")


class LPIPS(nn.Module):
    """LPIPS v0.1 with AlexNet (Zhang et al. 2018): images in [0, 1] -> one distance per pair.

    The recipe of the lpips code: inputs scaled to [-1, 1], then (x - shift) / scale; AlexNet's five ReLU
    outputs, unit-normalised over channels; squared differences; a 1x1 linear layer per tap (no bias);
    the spatial mean; the sum over the five taps. backbone / linear: "standard" (torchvision's ImageNet
    AlexNet / the lpips project's alex.pth, through torch.hub's cache, hash-checked), a path, or None
    (random weights, for tests). The state dict holds exactly torchvision's `features.*` keys and
    `lin{i}.model.1.weight`, so each file's part loads strictly.
    """

    def __init__(self, backbone="standard", linear="standard"):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(384, 256, 3, padding=1),
            nn.ReLU(inplace=True), nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True))
        for i, channels in enumerate(LPIPS_CHANNELS):  # lin{i}.model = (Dropout, 1x1 conv), as lpips names them
            setattr(self, f"lin{i}", nn.Module())
            getattr(self, f"lin{i}").model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))
            nn.init.uniform_(getattr(self, f"lin{i}").model[1].weight, 0, 1)  # random, but >= 0 as learned ones are
        # deviation: no resizing before LPIPS (as the lpips code); CIFAR's 32x32 leaves AlexNet 1x1 maps at conv3-5
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.weights_id = {}
        state = {}
        if backbone is not None:
            alexnet, self.weights_id["backbone"] = weights_file(backbone, ALEXNET_URL, ALEXNET_SHA256_PREFIX,
                                                                "AlexNet weights", "--lpips-backbone")
            state.update({k: v for k, v in alexnet.items() if k.startswith("features.")})
        if linear is not None:
            lins, self.weights_id["linear"] = weights_file(linear, LPIPS_ALEX_URL, LPIPS_ALEX_SHA256,
                                                           "LPIPS linear layers (alex.pth v0.1)", "--lpips-linear")
            state.update(lins)
        if state:
            missing, unexpected = self.load_state_dict(state, strict=False)
            expected = {k for k in self.state_dict() if (backbone is not None and k.startswith("features."))
                        or (linear is not None and k.startswith("lin"))}
            if unexpected or expected & set(missing):
                raise MetricsError(f"LPIPS weights do not match: missing {sorted(expected & set(missing))}, "
                                   f"unexpected {sorted(unexpected)}")
        self.eval()

    def taps(self, images: torch.Tensor) -> list:
        """The five unit-normalised ReLU outputs of the scaled images."""
        x, out = ((2 * images - 1) - self.shift) / self.scale, []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in LPIPS_TAPS:
                out.append(x / (x.pow(2).sum(1, keepdim=True).sqrt() + NORM_EPS))
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        distance = 0.0
        for i, (fa, fb) in enumerate(zip(self.taps(a), self.taps(b))):
            distance = distance + getattr(self, f"lin{i}").model((fa - fb).pow(2)).mean(dim=(2, 3))
        return distance.flatten()


@torch.no_grad()
def inception_outputs(net: FIDInceptionV3, images: torch.Tensor, batch_size: int = 100, device="cpu") -> tuple:
    """Pool features (N, 2048) and the Inception Score's logits pool3 @ W^T (N, 1008, without the fc bias),
    as float64 numpy arrays. images: uint8 NCHW (0..255) or float NCHW in [0, 1]; batched, eval mode, float32.
    """
    net = net.to(device).eval()
    features, logits = [], []
    for start in tqdm(range(0, len(images), batch_size), desc="inception", leave=False, dynamic_ncols=True):
        x = images[start:start + batch_size].to(device)
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        f, _ = net(x)
        features.append(f.double().cpu())
        logits.append(net.logits_unbiased(f).double().cpu())
    return torch.cat(features).numpy(), torch.cat(logits).numpy()


@torch.no_grad()
def same_class_pairs(labels: torch.Tensor, pairs_per_class: int = DIVERSITY_PAIRS, seed: int = 0) -> tuple:
    """Index pairs (i, j), i != j, of random points of the same class: `pairs_per_class` per class."""
    g = torch.Generator().manual_seed(seed)
    first, second = [], []
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().squeeze(1)
        if len(members) < 2:
            continue
        i = torch.randint(0, len(members), (pairs_per_class,), generator=g)
        j = (i + torch.randint(1, len(members), (pairs_per_class,), generator=g)) % len(members)
        first.append(members[i])
        second.append(members[j])
    if not first:
        raise MetricsError("diversity needs two images of one class at least")
    return torch.cat(first), torch.cat(second)


@torch.no_grad()
def diversity(images: torch.Tensor, labels: torch.Tensor, net: "LPIPS" = None, pairs_per_class: int = DIVERSITY_PAIRS,
              seed: int = 0, batch_size: int = 100, device="cpu") -> float:
    """Mean distance between random pairs of images of the same class: LPIPS with `net`, else the pixel
    L2 distance ||a - b||_2 of images in [0, 1]. images: uint8 or float NCHW."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    i, j = same_class_pairs(labels.cpu(), pairs_per_class, seed)
    if net is None:
        return (x[i] - x[j]).flatten(1).norm(dim=1).mean().item()
    net = net.to(device).eval()
    distances = [net(x[a].to(device), x[b].to(device)).cpu() for a, b in zip(i.split(batch_size), j.split(batch_size))]
    return torch.cat(distances).mean().item()


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
    """FID / IS / KID of uint8 NCHW samples (those named in `which`); returns (results dict, warnings list).
    IS uses the unbiased logits pool3 @ W^T."""
    results, warnings = {}, []
    if not set(which) & {"fid", "is", "kid"}:
        return results, warnings
    features, logits = inception_outputs(net, samples, batch_size, device)
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


def lpips_report(samples, reference, net: LPIPS, batch_size: int = 100, device="cpu") -> dict:
    """Within-class diversity of samples (with labels) and of the reference images of the same classes:
    mean LPIPS and mean pixel L2 over random same-class pairs (no resizing, as the lpips code)."""
    classes = samples.labels.unique()
    keep = torch.isin(reference.labels, classes)
    ref_images, ref_labels = reference.images[keep], reference.labels[keep]
    return {"lpips_diversity": diversity(samples.images, samples.labels, net, batch_size=batch_size, device=device),
            "lpips_diversity_ref": diversity(ref_images, ref_labels, net, batch_size=batch_size, device=device),
            "pixel_l2_diversity": diversity(samples.images, samples.labels),
            "pixel_l2_diversity_ref": diversity(ref_images, ref_labels),
            "lpips_weights_sha256": net.weights_id or "random", "pairs_per_class": DIVERSITY_PAIRS}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="metrics.py", description=__doc__.split("\n\n")[0],
                                usage="%(prog)s SAMPLES.npz [options]",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("samples", help="npz with 'image' (N,H,W,3) uint8, e.g. generate.py's samples.npz; "
                                   "--metrics lpips also needs its 'label' (N,), the class of each image")
    p.add_argument("--ref", choices=("cifar10", "cifar100", "svhn", "npz"), default="cifar10",
                   help="reference set for FID, KID and LPIPS ('npz': the file given by --ref-npz)")
    p.add_argument("--ref-npz", help="the reference npz of --ref npz, with 'image' (N,H,W,3) uint8 and 'label' (N,)"
                                     + DEFAULT_IN_HELP)
    p.add_argument("--ref-split", choices=("train", "test"), default="train", help="reference split")
    p.add_argument("--metrics", default="fid,is,kid", help=f"comma-separated, from {','.join(METRICS)}")
    p.add_argument("--inception-weights", default="standard",
                   help="'standard' (download / torch.hub cache), a path to the standard file, or 'random' (tests)")
    p.add_argument("--lpips-backbone", default="standard", help="LPIPS AlexNet: 'standard', a path, or 'random' (tests)")
    p.add_argument("--lpips-linear", default="standard", help="LPIPS calibration (alex.pth v0.1): 'standard', a path or 'random'")
    p.add_argument("--data-dir", default="data", help="where torchvision data sets are downloaded")
    p.add_argument("--cache-dir", default=os.path.join("data", "inception-stats"), help="reference statistics cache")
    p.add_argument("--batch-size", type=int, default=100, help="images per network forward (Inception, LPIPS)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--out", help="JSON report (default: metrics.json beside the samples)" + DEFAULT_IN_HELP)
    return p


def metric_names(text: str) -> list:
    """The names in a comma-separated --metrics value."""
    return [m.strip() for m in text.split(",") if m.strip()]


def report_path(args) -> str:
    return args.out or os.path.join(os.path.dirname(os.path.abspath(args.samples)), "metrics.json")


def check_args(args) -> None:
    """Refuse bad flags before any work: a ValueError becomes argparse's one-line error."""
    which = metric_names(args.metrics)
    unknown = [m for m in which if m not in METRICS]
    if unknown or not which:
        raise ValueError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}; choose from {','.join(METRICS)}")
    if args.ref == "npz" and not args.ref_npz and set(which) & {"fid", "kid", "lpips"}:
        raise ValueError("--ref npz needs --ref-npz (the reference images for FID, KID and LPIPS)")
    if args.ref_npz and args.ref != "npz":
        raise ValueError(f"--ref-npz needs --ref npz (--ref {args.ref} would ignore the file)")
    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    from models import resolve_device  # the command line alone needs the repo's helpers
    resolve_device(args.device)  # a name torch does not know, or a GPU that is not there: ValueError
    out = report_path(args)
    if os.path.isdir(out):
        raise ValueError(f"--out {out} is a folder; give the report's file name")
    folder = os.path.dirname(os.path.abspath(out))
    if args.out and not os.path.isdir(folder):
        raise ValueError(f"--out: the folder {folder} does not exist")
    if os.path.isdir(folder) and not os.access(folder, os.W_OK):
        raise ValueError(f"cannot write the report in {folder}" + ("" if args.out else "; give --out"))


def open_npz(path: str):
    """An npz file, opened (use it in a `with`); a missing or unreadable file is a MetricsError."""
    if not os.path.isfile(path):
        raise MetricsError(f"npz file not found: {path}")
    try:
        f = np.load(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise MetricsError(f"cannot read npz {path}: {e}") from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise MetricsError(f"{path} holds a single array, not an npz with named arrays")
    return f


def read_images(path: str) -> torch.Tensor:
    """'image' (N, H, W, 3) uint8 of an npz, as (N, 3, H, W) uint8: all that FID, IS and KID need (a 'label'
    array may be there or not)."""
    with open_npz(path) as f:
        if "image" not in f.files:
            raise MetricsError(f"{path} holds no 'image' array (N,H,W,3) uint8, only {sorted(f.files)}")
        try:
            image = f["image"]
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise MetricsError(f"cannot read npz {path}: {e}") from None
    if image.dtype != np.uint8 or image.ndim != 4 or image.shape[3] != 3 or len(image) == 0:
        raise MetricsError(f"{path}: 'image' must be uint8 (N, H, W, 3) with N > 0, got {image.dtype} {image.shape}")
    return torch.from_numpy(np.ascontiguousarray(image)).permute(0, 3, 1, 2).contiguous()


def run(args) -> dict:
    # the command line alone needs the repo's data and device helpers: the library part stands alone
    from data import load_npz
    from models import resolve_device
    which = metric_names(args.metrics)
    device = resolve_device(args.device)
    if "lpips" in which:  # LPIPS diversity pairs images of one class: the samples need their labels
        with open_npz(args.samples) as f:
            if "label" not in f.files:
                raise MetricsError(f"{args.samples} holds no 'label' array: --metrics lpips compares images of the "
                                   f"same class, so it needs the class of each image")
        samples = load_npz(args.samples)
        images = samples.images
    else:  # FID, IS and KID need the images alone
        images = read_images(args.samples)
    start, results, warnings, ref, net = time.time(), {}, [], None, None
    if set(which) & {"fid", "is", "kid"}:
        net = FIDInceptionV3(weights=None if args.inception_weights == "random" else args.inception_weights)
        if set(which) & {"fid", "kid"}:
            ref = reference_outputs(net, args.ref, args.ref_split, args.data_dir, args.ref_npz, args.cache_dir,
                                    args.batch_size, device)
        results, warnings = compute_metrics(net, images, which, ref, args.batch_size, device)
    if "lpips" in which:
        from data import load_split  # the command line alone reads data sets
        reference = load_split(args.ref, args.data_dir, args.ref_split == "train", args.ref_npz)
        results.update(lpips_report(samples, reference, LPIPS(*(None if w == "random" else w for w in (
            args.lpips_backbone, args.lpips_linear))), args.batch_size, device))
    report = {"samples": args.samples, "n_samples": len(images), "ref": args.ref_npz or args.ref,
              "ref_split": args.ref_split, "n_ref": None if ref is None else len(ref["features"]),
              "resize": RESIZE_RULE, "inception_weights_sha256": net.weights_id if net else None, **results,
              "warnings": warnings, "seconds": time.time() - start, "torch": torch.__version__, "device": device}
    out = report_path(args)
    try:  # written beside, then renamed: a failed write leaves an earlier report whole
        with open(out + ".tmp", "w") as f:
            json.dump(report, f, indent=2)
        os.replace(out + ".tmp", out)
    finally:
        if os.path.isfile(out + ".tmp"):
            os.remove(out + ".tmp")
    return report


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_args(args)
    except ValueError as e:
        parser.error(str(e))
    from data import DataError  # the command line alone reads data sets: the library part stands alone
    try:
        report = run(args)
    except (MetricsError, DataError, OSError) as e:
        print(f"metrics.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    for w in report["warnings"]:
        print(f"warning: {w}")
    for key in ("fid", "is_mean", "is_std", "kid_mean", "kid_std", "lpips_diversity", "lpips_diversity_ref",
                "pixel_l2_diversity", "pixel_l2_diversity_ref"):
        if key in report:
            print(f"{key}: {report[key]:.6g}")
    weights = report["inception_weights_sha256"]
    print(f"n_samples {report['n_samples']}, ref {report['ref']} ({report['n_ref']} images)"
          + (f", Inception weights {weights[:8]}" if weights else ""))


if __name__ == "__main__":
    main()
