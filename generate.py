"""Image generation from a robust classifier: SGLD with momentum on E(x, y) from a per-class PCA start
(the paper's Eq. 7), with the class-conditional Gaussian and uniform starts as baselines.

    python generate.py --ckpt runs/cifar10-resnet18-weat-adv-0/best.pt --init pca --n-per-class 100 --out runs/gen
    python generate.py --ckpt best.pt --compare-inits --n-per-class 20 --out runs/gen-compare
    python generate.py --ckpt best.pt --metrics fid,is,kid --inception-weights pt_inception.pth --out runs/gen

Eq. 7: v_{n+1} = zeta v_n - (eta / 2) grad_x E(x_n, y)
       x_{n+1} = clamp(x_n + v_{n+1} + alpha N(0, sigma^2 I), 0, 1),  v_0 = 0,  alpha = sqrt(2 eta).
"""
import argparse
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from data import DataError, split_of_run
from energy import energy_x, energy_xy
from metrics import MetricsError
from models import CheckpointError, load_model, resolve_device, run_command, sha256_of

INITS = ("pca", "gaussian", "uniform")
OBJECTIVES = ("energy_xy", "ce", "energy_x")
CIFAR10_CLASSES = ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
GAUSSIAN_JITTER = 1e-4  # added to the class covariance's diagonal so its Cholesky factor exists


class GenerationError(RuntimeError):
    """Sampling went wrong (non-finite samples)."""


# ---------------------------------------------------------------------------------------------------
# Starting points


def fit_pca(images: torch.Tensor, retained_variance: float, rank_step: int = 256) -> dict:
    """Mean, singular values s_i and components U_i (rows) of the centred, flattened images, keeping the
    leading components that explain `retained_variance` of the total variance.

    A randomized SVD (Halko et al. 2011) of rank q, with q doubled until the kept components explain
    enough: seconds for 5,000 CIFAR-10 images, where a full SVD takes a minute on two cores.
    """
    x = images.flatten(1).float()
    mean = x.mean(0)
    centred = x - mean
    total = (centred.double() ** 2).sum()
    q = min(rank_step, *centred.shape)
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the randomized SVD's test matrix: fixed, and the global RNG untouched
        while True:
            _, s, v = torch.svd_lowrank(centred, q=q, niter=4)
            if (s.double() ** 2).sum() / total >= retained_variance or q == min(centred.shape):
                break
            q = min(2 * q, *centred.shape)
    k = n_components(s, retained_variance, total)
    return {"mean": mean, "s": s[:k], "U": v[:, :k].T.contiguous(), "n": len(x)}


def n_components(s: torch.Tensor, retained_variance: float, total: torch.Tensor = None) -> int:
    """The smallest k whose components explain at least `retained_variance` of the total variance
    (`total`, default the sum of s^2); all of them if none does."""
    total = (s.double() ** 2).sum() if total is None else total
    explained = torch.cumsum(s.double() ** 2, 0) / total
    k = int(torch.searchsorted(explained, torch.tensor([retained_variance], dtype=explained.dtype) - 1e-9)) + 1
    return min(k, len(s))


def sample_pca(pca: dict, n: int, sigma_pca: float, generator: torch.Generator) -> torch.Tensor:
    """x0 = mu + sum_i s_i z_i sigma_pca U_i, z ~ N(0, 1), clamped to [0, 1] (flattened)."""
    z = torch.randn(n, len(pca["s"]), generator=generator)
    return (pca["mean"] + (z * pca["s"] * sigma_pca) @ pca["U"]).clamp(0, 1)


def fit_gaussian(images: torch.Tensor) -> dict:
    """Class-conditional Gaussian N(mu, Sigma + jitter I) (Santurkar et al. 2019), as mean and Cholesky factor."""
    x = images.flatten(1).double()
    cov = torch.cov(x.T) + GAUSSIAN_JITTER * torch.eye(x.shape[1], dtype=x.dtype)
    return {"mean": x.mean(0).float(), "L": torch.linalg.cholesky(cov).float()}


def sample_gaussian(gauss: dict, n: int, generator: torch.Generator) -> torch.Tensor:
    z = torch.randn(n, len(gauss["mean"]), generator=generator)
    return (gauss["mean"] + z @ gauss["L"].T).clamp(0, 1)


def fit_starts(images: torch.Tensor, labels: torch.Tensor, init: str, retained_variance: float, cache: str = None) -> list:
    """Per-class fitted start distributions (PCA or Gaussian), cached in `cache` when given."""
    if cache and os.path.isfile(cache):
        return torch.load(cache, weights_only=True)
    x = images.float() / 255 if images.dtype == torch.uint8 else images
    fit = (lambda xc: fit_pca(xc, retained_variance)) if init == "pca" else fit_gaussian
    fitted = [fit(x[labels == c]) for c in range(int(labels.max()) + 1)]
    if cache:
        os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
        torch.save(fitted, cache + ".tmp")
        os.replace(cache + ".tmp", cache)
    return fitted


def initial_points(init: str, fitted: list, y: torch.Tensor, shape: tuple, sigma_pca: float, seed: int) -> torch.Tensor:
    """Starting points x0 for labels y: pca, gaussian (per class) or uniform noise in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    if init == "uniform":
        return torch.rand((len(y),) + shape, generator=g)
    x0 = torch.empty((len(y), math.prod(shape)))
    for c in y.unique().tolist():
        index = (y == c).nonzero().squeeze(1)
        draw = sample_pca(fitted[c], len(index), sigma_pca, g) if init == "pca" else sample_gaussian(fitted[c], len(index), g)
        x0[index] = draw
    return x0.view((len(y),) + shape)


# ---------------------------------------------------------------------------------------------------
# SGLD (Eq. 7)


def objective(logits: torch.Tensor, y: torch.Tensor, name: str) -> torch.Tensor:
    """Per-sample quantity that SGLD lowers: E(x, y) (the paper), CE(f(x), y), or E(x)."""
    if name == "energy_xy":
        return energy_xy(logits, y)
    if name == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    if name == "energy_x":
        return energy_x(logits)
    raise ValueError(f"unknown objective {name!r}; choose from {', '.join(OBJECTIVES)}")


def sgld(model, x0, y, steps: int, eta: float, zeta: float, noise_std: float, alpha: float = None,
         objective_name: str = "energy_xy", trace_every: int = 10, seed: int = 0) -> tuple:
    """SGLD with momentum on `objective` (the paper's Eq. 7); returns (samples, trace).

    One forward and one input-gradient backward per step and sample; the model stays as it is (put it in
    eval mode). trace: every `trace_every` steps, mean E(x, y) and the model's accuracy on the samples
    (read off the step's own forward).
    """
    alpha = math.sqrt(2 * eta) if alpha is None else alpha
    g = torch.Generator(device=x0.device).manual_seed(seed)
    x, v, trace = x0.detach().clone(), torch.zeros_like(x0), []
    for step in range(steps + 1):
        x.requires_grad_(step < steps)
        with torch.set_grad_enabled(step < steps):
            logits = model(x)
            value = objective(logits, y, objective_name)
            grad = torch.autograd.grad(value.sum(), x)[0] if step < steps else None
        if step % trace_every == 0 or step == steps:
            trace.append({"step": step, "E_xy": energy_xy(logits.detach(), y).mean().item(),
                          "accuracy": (logits.argmax(1) == y).float().mean().item()})
        if grad is None:
            break
        v = zeta * v - (eta / 2) * grad
        noise = torch.randn(x.shape, generator=g, device=x.device)
        x = (x.detach() + v + alpha * noise_std * noise).clamp(0, 1)
        if not torch.isfinite(x).all():
            raise GenerationError(f"SGLD produced non-finite samples at step {step + 1}; lower --step-size")
    return x.detach(), trace


# ---------------------------------------------------------------------------------------------------
# The command


def save_grid(images: torch.Tensor, labels: torch.Tensor, path: str, columns: int, class_names=None,
              row_labels=None) -> None:
    """A grid with one row per class (or per entry of row_labels), up to `columns` images per row."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = row_labels or [str(c) if class_names is None else class_names[c] for c in labels.unique().tolist()]
    groups = [images[labels == c][:columns] for c in labels.unique()] if row_labels is None else images
    width = max(len(group) for group in groups)
    fig, axes = plt.subplots(len(rows), 1, figsize=(width * 0.7 + 1.2, len(rows) * 0.75 + 0.2), squeeze=False)
    for ax, group, name in zip(axes[:, 0], groups, rows):
        strip = torch.cat([img for img in group], dim=2) if len(group) else torch.zeros(3, 8, 8)
        ax.imshow(strip.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.tight_layout(pad=0.3)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], usage="%(prog)s --ckpt CKPT [options]",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", required=True, help="checkpoint written by train.py")
    p.add_argument("--init", choices=INITS, default="pca", help="starting distribution")
    p.add_argument("--compare-inits", action="store_true", help="run pca, gaussian and uniform with the same budget")
    p.add_argument("--n-per-class", type=int, default=100, help="samples per class")
    p.add_argument("--steps", type=int, default=60, help="SGLD steps")
    p.add_argument("--step-size", type=float, default=1.0, help="eta of Eq. 7")
    p.add_argument("--momentum", type=float, default=0.5, help="zeta of Eq. 7")
    p.add_argument("--noise-std", type=float, default=0.01, help="sigma of the SGLD noise")
    p.add_argument("--noise-scale", type=float, default=None, help="alpha of Eq. 7 (default: sqrt(2 eta))")
    p.add_argument("--objective", choices=OBJECTIVES, default="energy_xy", help="what SGLD lowers")
    p.add_argument("--retained-variance", type=float, default=0.95, help="PCA: variance kept by the components")
    p.add_argument("--sigma-pca", type=float, default=0.015,
                   help="PCA start scale on the singular values (x sqrt(n) = std multiplier; released code 0.005-0.035)")
    p.add_argument("--batch-size", type=int, default=500, help="samples per SGLD batch")
    p.add_argument("--trace-every", type=int, default=10, help="trace E(x,y) and accuracy every n steps")
    p.add_argument("--grid-columns", type=int, default=10, help="images per class in the grids")
    p.add_argument("--metrics", default="", help="comma-separated fid,is,kid (through metrics.py)")
    p.add_argument("--inception-weights", default="standard", help="for --metrics: 'standard', a path or 'random'")
    p.add_argument("--data-dir", default=None, help="default: the one stored in the checkpoint")
    p.add_argument("--train-npz", default=None, help="default: the one stored in the checkpoint")
    p.add_argument("--cache-dir", default=os.path.join("data", "generation-cache"), help="fitted PCA / Gaussian starts")
    p.add_argument("--seed", type=int, default=0, help="seeds the starts and the SGLD noise")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--out", required=True, help="output folder")
    return p


def check_args(args) -> None:
    for key in ("n_per_class", "steps", "batch_size", "trace_every", "grid_columns"):
        if getattr(args, key) < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be at least 1")
    if not args.step_size > 0 or args.noise_std < 0 or not 0 <= args.momentum < 1:
        raise ValueError("--step-size must be positive, --noise-std non-negative, --momentum in [0, 1)")
    if not 0 < args.retained_variance <= 1:
        raise ValueError("--retained-variance must lie in (0, 1]")


def generate(model, train, args, init: str, device) -> tuple:
    """Samples, labels, starting points and trace for one starting distribution."""
    num_classes = int(train.labels.max()) + 1
    y = torch.arange(num_classes).repeat_interleave(args.n_per_class)
    key = f"{os.path.basename(args.train_key)}-{init}-{args.retained_variance:g}.pt"
    fitted = None if init == "uniform" else fit_starts(train.images, train.labels, init, args.retained_variance,
                                                       os.path.join(args.cache_dir, key))
    x0 = initial_points(init, fitted, y, tuple(train.images.shape[1:]), args.sigma_pca, args.seed)
    samples, traces = [], []
    for i, (xb, yb) in enumerate(zip(x0.split(args.batch_size), y.split(args.batch_size))):
        x, trace = sgld(model, xb.to(device), yb.to(device), args.steps, args.step_size, args.momentum,
                        args.noise_std, args.noise_scale, args.objective, args.trace_every, args.seed + i)
        samples.append(x.cpu())
        traces.append((len(yb), trace))
    n = len(y)  # the trace of all batches: averages weighted by batch size
    trace = [{"step": row["step"], **{k: sum(b * t[j][k] for b, t in traces) / n for k in ("E_xy", "accuracy")}}
             for j, row in enumerate(traces[0][1])]
    return torch.cat(samples), y, x0, trace


def write_run(out: str, samples, y, x0, trace, columns: int, class_names=None) -> None:
    """samples.png / .npz, init.png and trace.json of one run in `out`."""
    os.makedirs(out, exist_ok=True)
    save_grid(samples, y, os.path.join(out, "samples.png"), columns, class_names)
    save_grid(x0, y, os.path.join(out, "init.png"), columns, class_names)
    image = (samples.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    np.savez(os.path.join(out, "samples.npz"), image=image, label=y.numpy())
    with open(os.path.join(out, "trace.json"), "w") as f:
        json.dump(trace, f, indent=2)


def sample_metrics(args, samples: torch.Tensor, device) -> dict:
    """FID / IS / KID of the samples against the checkpoint's training set, through metrics.py."""
    import metrics  # only for --metrics
    which = [m.strip() for m in args.metrics.split(",") if m.strip()]
    net = metrics.FIDInceptionV3(weights=None if args.inception_weights == "random" else args.inception_weights)
    ref = None
    if set(which) & {"fid", "kid"}:
        ref = metrics.reference_outputs(net, "npz" if args.train_npz else args.dataset, "train", args.data_dir,
                                        args.train_npz, os.path.join(args.cache_dir, "inception"), 100, device)
    results, warnings = metrics.compute_metrics(net, (samples * 255).round().to(torch.uint8), which, ref, 100, device)
    return {**results, "warnings": warnings, "n_samples": len(samples), "inception_weights_sha256": net.weights_id,
            "resize": metrics.RESIZE_RULE}


def run(args) -> dict:
    device = resolve_device(args.device)
    model, ckpt = load_model(args.ckpt, device)
    model.eval().requires_grad_(False)  # SGLD needs input gradients only
    train = split_of_run(ckpt.get("args"), True, args.data_dir, args.train_npz, ckpt["model_config"]["num_classes"])
    args.dataset, args.data_dir = ckpt["args"]["dataset"], args.data_dir or ckpt["args"].get("data_dir", "data")
    args.train_npz = args.train_npz or ckpt["args"].get("train_npz")
    args.train_key = f"npz-{sha256_of(args.train_npz)[:12]}" if args.dataset == "npz" else args.dataset
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "args.json"), "w") as f:
        json.dump(vars(args), f, indent=2)
    table, first_per_class = {}, []
    for init in (INITS if args.compare_inits else (args.init,)):
        samples, y, x0, trace = generate(model, train, args, init, device)
        out = os.path.join(args.out, init) if args.compare_inits else args.out
        write_run(out, samples, y, x0, trace, args.grid_columns, CIFAR10_CLASSES if args.dataset == "cifar10" else None)
        table[init] = {"accuracy": trace[-1]["accuracy"], "E_xy": trace[-1]["E_xy"]}
        if args.metrics:
            table[init]["metrics"] = sample_metrics(args, samples, device)
            with open(os.path.join(out, "metrics.json"), "w") as f:
                json.dump(table[init]["metrics"], f, indent=2)
        first_per_class.append(torch.stack([samples[y == c][0] for c in y.unique()]))
    if args.compare_inits:  # a row of samples per start, one per class, and the table
        save_grid(first_per_class, None, os.path.join(args.out, "compare_inits.png"), len(first_per_class[0]),
                  row_labels=list(table))
        with open(os.path.join(args.out, "compare_inits.json"), "w") as f:
            json.dump(table, f, indent=2)
    print(f"{'start':<10}{'accuracy on samples':>20}{'mean E(x,y)':>14}")
    for init, row in table.items():
        print(f"{init:<10}{100 * row['accuracy']:>19.1f}%{row['E_xy']:>14.3f}")
    print(f"written to {args.out}")
    return table


def main(argv=None) -> None:
    run_command("generate.py", build_parser(), argv, check_args, run,
                        (CheckpointError, DataError, GenerationError, MetricsError))


if __name__ == "__main__":
    main()
