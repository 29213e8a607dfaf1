"""Image generation from a robust classifier: SGLD with momentum on E(x, y) from a per-class PCA start
(the paper's Eq. 7), with the class-conditional Gaussian and uniform starts as baselines.

    python generate.py --ckpt runs/cifar10-resnet18-weat-adv-0/best.pt --init pca --n-per-class 100 --out runs/gen
    python generate.py --ckpt best.pt --compare-inits --n-per-class 20 --out runs/gen-compare
    python generate.py --ckpt best.pt --metrics fid,is,kid --inception-weights pt_inception.pth --out runs/gen
    python generate.py --ckpt best.pt --out runs/gen-paper                            # the authors' eval.py settings
    python generate.py --ckpt best.pt --preset ours --out runs/gen-ours               # our longer, noisier chain
    python generate.py --ckpt best.pt --compare-samplers --out runs/gen-samplers      # PCA start vs SGLD +- momentum
    python generate.py --ckpt best.pt --sweep-pca 0.001,0.005,0.015 --sweep-variance 0.8,0.95,0.99 --out runs/sweep

Eq. 7: v_{n+1} = zeta v_n - (eta / 2) grad_x E(x_n, y)
       x_{n+1} = clamp(x_n + v_{n+1} + alpha N(0, sigma^2 I), 0, 1),  v_0 = 0,  alpha = sqrt(2 eta).
"""
import argparse
import math
import os
import re

import numpy as np
import torch
import torch.nn.functional as F

import metrics
from data import DataError, Split, split_of_run
from energy import energy_x, energy_xy
from metrics import MetricsError
from models import (DEFAULT_IN_HELP, CheckpointError, add_classifier_flags, load_classifier, resolve_device,
                    run_command, sha256_of, write_json)

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
    # deviation: a randomized SVD in place of the authors' full one (the same components up to its tolerance)
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
    (`total`, default the sum of s^2); all of them if none does; none for `retained_variance` 0 (the
    start is then the class mean itself, as in the authors' released eval.py, see README)."""
    if retained_variance <= 0:
        return 0
    # deviation: keeps the component that crosses the threshold; the authors' np.argmin(cum < v) stops before it
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


def sgld(model, x0, y, steps: int, eta: float, zeta: float, noise_std: float, noise_scale: float = None,
         objective_name: str = "energy_xy", trace_every: int = 10, seed: int = 0) -> tuple:
    """SGLD with momentum on `objective` (the paper's Eq. 7); returns (samples, trace).

        v_{n+1} = zeta v_n - (eta / 2) grad_x objective(x_n, y)
        x_{n+1} = clamp(x_n + v_{n+1} + noise_scale N(0, noise_std^2 I), 0, 1)

    noise_scale is the paper's alpha (default sqrt(2 eta)). One forward and one input-gradient backward
    per step and sample; the model stays as it is (put it in eval mode). trace: every `trace_every` steps
    and after the last, mean E(x, y) and the model's accuracy on the samples (read off the step's forward).
    """
    noise_scale = math.sqrt(2 * eta) if noise_scale is None else noise_scale
    g = torch.Generator(device=x0.device).manual_seed(seed)
    x, v, trace = x0.detach().clone(), torch.zeros_like(x0), []
    for step in range(steps):
        x.requires_grad_(True)
        with torch.enable_grad():
            logits = model(x)
            grad = torch.autograd.grad(objective(logits, y, objective_name).sum(), x)[0]
        if step % trace_every == 0:
            trace.append(trace_row(step, logits.detach(), y))
        v = zeta * v - (eta / 2) * grad
        noise = torch.randn(x.shape, generator=g, device=x.device)
        x = (x.detach() + v + noise_scale * noise_std * noise).clamp(0, 1)
        if not torch.isfinite(x).all():
            raise GenerationError(f"SGLD produced non-finite samples at step {step + 1}; lower --eta")
    with torch.no_grad():
        trace.append(trace_row(steps, model(x), y))
    return x.detach(), trace


def trace_row(step: int, logits: torch.Tensor, y: torch.Tensor) -> dict:
    """One row of the SGLD trace: mean E(x, y) and accuracy of the samples at `step`."""
    return {"step": step, "E_xy": energy_xy(logits, y).mean().item(), "accuracy": (logits.argmax(1) == y).float().mean().item()}


# ---------------------------------------------------------------------------------------------------
# The command


def save_grid(images: torch.Tensor, labels: torch.Tensor, path: str, columns: int, class_names=None,
              row_labels=None) -> None:
    """A grid with one row per class (or per entry of row_labels, one image per class in each row, the
    class names above the columns), up to `columns` images per row."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    named = lambda c: class_names[c] if class_names is not None and c < len(class_names) else str(c)  # noqa: E731
    rows = row_labels or [named(c) for c in labels.unique().tolist()]
    groups = [images[labels == c][:columns] for c in labels.unique()] if row_labels is None else images
    width = max(len(group) for group in groups)
    fig, axes = plt.subplots(len(rows), 1, figsize=(width * 0.7 + 1.2, len(rows) * 0.75 + 0.2), squeeze=False)
    for ax, group, name in zip(axes[:, 0], groups, rows):
        strip = torch.cat([img for img in group], dim=2) if len(group) else torch.zeros(3, 8, 8)
        ax.imshow(strip.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    if row_labels is not None and class_names is not None:  # a comparison: its columns are the classes
        size = images[0].shape[-1]
        axes[0, 0].set_xticks([size * (i + 0.5) for i in range(width)], list(class_names)[:width], fontsize=8)
        axes[0, 0].xaxis.tick_top()
    fig.tight_layout(pad=0.3)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


# The defaults are the authors' image_generation/eval.py, behind the paper's generation table: step size 1,
# 20 steps, no momentum, noise std 0.001 (alpha sqrt(2 eta)), sigma_pca 0.005, E(x, y), 1,000 samples per
# class. Its retained variance 0.95 is divided by 100 there, which keeps no component (docs/deviations.md);
# ours keeps 95%. A preset sets other defaults; flags given explicitly still win.
PRESETS = {
    "paper": {},  # the defaults
    # Eq. 7's momentum on: zeta 0.5 (picked on vnncomp21-resnet4b); the released code leaves it at 0.
    "paper-momentum": {"zeta": 0.5},
    # Our longer, noisier chain: more diverse samples, much of the diversity noise (docs/generation.md).
    "ours": {"steps": 60, "zeta": 0.5, "noise_std": 0.01, "sigma_pca": 0.015, "n_per_class": 100},
}
SAMPLER_MOMENTUM = 0.5  # --compare-samplers: the momentum of "SGLD with momentum" when --zeta is 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="generate.py", description=__doc__.split("\n\n")[0],
                                usage="%(prog)s (--ckpt CKPT | --robustbench NAME) --out DIR [options]",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_classifier_flags(p)
    p.add_argument("--preset", choices=tuple(PRESETS), default="paper",
                   help="paper: the authors' eval.py settings (the defaults below); paper-momentum: the same with "
                        "zeta 0.5; ours: 60 steps, zeta 0.5, noise 0.01, sigma_pca 0.015, 100 per class. Flags given "
                        "explicitly override a preset")
    p.add_argument("--init", choices=INITS, default="pca", help="starting distribution")
    p.add_argument("--compare-inits", action="store_true", help="run pca, gaussian and uniform with the same budget")
    p.add_argument("--compare-samplers", action="store_true",
                   help="the PCA start alone, SGLD with momentum (Eq. 7) and without, with the same budget")
    p.add_argument("--sweep-pca", default=None,
                   help="comma-separated sigma_pca values: one run of the PCA start per value (default: no sweep)"
                        + DEFAULT_IN_HELP)
    p.add_argument("--sweep-variance", default=None,
                   help="comma-separated retained-variance values for the sweep (default: --retained-variance alone)"
                        + DEFAULT_IN_HELP)
    p.add_argument("--n-per-class", type=int, default=1000, help="samples per class")
    p.add_argument("--steps", type=int, default=20, help="SGLD steps")
    p.add_argument("--eta", "--step-size", dest="eta", type=float, default=1.0, help="step size eta of Eq. 7")
    p.add_argument("--zeta", "--momentum", dest="zeta", type=float, default=0.0, help="momentum zeta of Eq. 7")
    p.add_argument("--noise-std", type=float, default=0.001, help="sigma: the SGLD noise is alpha N(0, sigma^2 I)")
    p.add_argument("--noise-scale", type=float, default=None,
                   help="alpha of Eq. 7 (default: sqrt(2 eta))" + DEFAULT_IN_HELP)
    p.add_argument("--objective", choices=OBJECTIVES, default="energy_xy", help="what SGLD lowers")
    p.add_argument("--retained-variance", type=float, default=0.95,
                   help="PCA: variance kept by the components (0: none, the start is the class mean)")
    p.add_argument("--sigma-pca", type=float, default=0.005,
                   help="spread of the PCA start: along each kept component, the start's standard deviation is "
                        "sigma_pca x sqrt(n) times that of the class's training images, n being the number of "
                        "training images of the class that the PCA is fitted on (the authors' code used 0.005 "
                        "to 0.035)")
    p.add_argument("--batch-size", type=int, default=500, help="samples per SGLD batch")
    p.add_argument("--trace-every", type=int, default=10, help="trace E(x,y) and accuracy every n steps")
    p.add_argument("--grid-columns", type=int, default=10, help="images per class in the grids")
    p.add_argument("--metrics", default="",
                   help=f"comma-separated, from {','.join(metrics.METRICS)}: scores of the samples, computed as "
                        "metrics.py does (default: none)" + DEFAULT_IN_HELP)
    p.add_argument("--inception-weights", default="standard", help="for --metrics: 'standard', a path or 'random'")
    p.add_argument("--lpips-backbone", default="standard", help="LPIPS AlexNet: 'standard', a path, or 'random'")
    p.add_argument("--lpips-linear", default="standard", help="LPIPS calibration: 'standard', a path, or 'random'")
    p.add_argument("--data-dir", default=None,
                   help="where torchvision data sets are kept (default: the checkpoint's, or 'data' with --robustbench)"
                        + DEFAULT_IN_HELP)
    p.add_argument("--train-npz", default=None,
                   help="npz of training images for the starts and --metrics, in place of the training set the "
                        "checkpoint used (default: that training set)" + DEFAULT_IN_HELP)
    p.add_argument("--cache-dir", default=os.path.join("data", "generation-cache"), help="fitted PCA / Gaussian starts")
    p.add_argument("--seed", type=int, default=0, help="seeds the starts and the SGLD noise")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--out", required=True, help="output folder" + DEFAULT_IN_HELP)
    return p


def apply_preset(parser: argparse.ArgumentParser, argv=None) -> None:
    """Make a --preset's values the parser's defaults (flags given explicitly still win)."""
    parser.set_defaults(**PRESETS[parser.parse_known_args(argv)[0].preset])


def check_args(args) -> None:
    for key in ("n_per_class", "steps", "batch_size", "trace_every", "grid_columns"):
        if getattr(args, key) < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be at least 1")
    if not args.eta > 0 or args.noise_std < 0 or not 0 <= args.zeta < 1:
        raise ValueError("--eta must be positive, --noise-std non-negative, --zeta in [0, 1)")
    args.sweep = [(s, v) for s in floats(args.sweep_pca or str(args.sigma_pca))
                  for v in floats(args.sweep_variance or str(args.retained_variance))]
    if not all(0 <= v <= 1 and s >= 0 for s, v in args.sweep):
        raise ValueError("--retained-variance (and --sweep-variance) must lie in [0, 1], --sigma-pca >= 0")
    if sum(map(bool, (args.compare_inits, args.compare_samplers, args.sweep_pca or args.sweep_variance))) > 1:
        raise ValueError("--compare-inits, --compare-samplers and --sweep-pca/--sweep-variance go one at a time")
    unknown = [m for m in metrics.metric_names(args.metrics) if m not in metrics.METRICS]
    if unknown:
        raise ValueError(f"unknown --metrics name(s) {', '.join(unknown)}; choose from {','.join(metrics.METRICS)}")


def class_names_for(num_classes: int, dataset: str, train_npz: str = None):
    """CIFAR-10's class names for a 10-class model of CIFAR-10 (the data set, or an npz whose file name says
    cifar10, not cifar100); None (the grids show class numbers) for any other."""
    if num_classes != 10:
        return None
    if dataset == "cifar10" or (dataset == "npz" and train_npz
                                and re.search(r"cifar-?10(?!\d)", os.path.basename(train_npz), re.IGNORECASE)):
        return CIFAR10_CLASSES
    return None


def floats(text: str) -> list:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"not a comma-separated list of numbers: {text!r}") from None


def variants(args) -> dict:
    """The runs of one call, by label: their settings differ from args only where named."""
    if args.compare_inits:
        return {init: {"init": init} for init in INITS}
    if args.compare_samplers:
        zeta = args.zeta or SAMPLER_MOMENTUM
        return {"pca start, no SGLD": {"init": "pca", "steps": 0}, f"SGLD, momentum {zeta:g}": {"init": "pca", "zeta": zeta},
                "SGLD, no momentum": {"init": "pca", "zeta": 0.0}}
    if args.sweep_pca or args.sweep_variance:
        return {f"sigma_pca {s:g}, variance {v:g}": {"init": "pca", "sigma_pca": s, "retained_variance": v}
                for s, v in args.sweep}
    return {args.init: {}}


def generate(model, train, settings: argparse.Namespace, device) -> tuple:
    """Samples, labels, starting points and trace for one run (settings as the command line's)."""
    num_classes = int(train.labels.max()) + 1
    y = torch.arange(num_classes).repeat_interleave(settings.n_per_class)
    key = f"{os.path.basename(settings.train_key)}-{settings.init}-{settings.retained_variance:g}.pt"
    fitted = None if settings.init == "uniform" else fit_starts(train.images, train.labels, settings.init,
                                                                settings.retained_variance,
                                                                os.path.join(settings.cache_dir, key))
    x0 = initial_points(settings.init, fitted, y, tuple(train.images.shape[1:]), settings.sigma_pca, settings.seed)
    samples, traces = [], []
    for i, (xb, yb) in enumerate(zip(x0.split(settings.batch_size), y.split(settings.batch_size))):
        x, trace = sgld(model, xb.to(device), yb.to(device), settings.steps, settings.eta, settings.zeta,
                        settings.noise_std, settings.noise_scale, settings.objective, settings.trace_every,
                        settings.seed + i)
        samples.append(x.cpu())
        traces.append((len(yb), trace))
    n = len(y)  # the trace of all batches: averages weighted by batch size
    trace = [{"step": row["step"], **{k: sum(b * t[j][k] for b, t in traces) / n for k in ("E_xy", "accuracy")}}
             for j, row in enumerate(traces[0][1])]
    return torch.cat(samples), y, x0, trace


def write_run(out: str, samples, y, x0, trace, columns: int, class_names=None) -> None:
    """samples.npz, trace.json, samples.png and init.png of one run in `out` (the figures last: a failure
    in drawing them never loses the samples)."""
    os.makedirs(out, exist_ok=True)
    image = (samples.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    np.savez(os.path.join(out, "samples.npz"), image=image, label=y.numpy())
    write_json(os.path.join(out, "trace.json"), trace)
    save_grid(samples, y, os.path.join(out, "samples.png"), columns, class_names)
    save_grid(x0, y, os.path.join(out, "init.png"), columns, class_names)


def lpips_net(args):
    """The LPIPS network of the command line's weights, or None where they cannot be had (offline)."""
    try:
        return metrics.LPIPS(*(None if w == "random" else w for w in (args.lpips_backbone, args.lpips_linear)))
    except MetricsError:
        return None


def sample_metrics(args, samples: torch.Tensor, y: torch.Tensor, train, device) -> dict:
    """FID / IS / KID / LPIPS diversity of the samples against the training set, through metrics.py."""
    which = metrics.metric_names(args.metrics)
    images, results, warnings = (samples * 255).round().to(torch.uint8), {}, []
    if set(which) & {"fid", "is", "kid"}:
        net = metrics.FIDInceptionV3(weights=None if args.inception_weights == "random" else args.inception_weights)
        ref = None
        if set(which) & {"fid", "kid"}:
            ref = metrics.reference_outputs(net, "npz" if args.train_npz else args.dataset, "train", args.data_dir,
                                            args.train_npz, os.path.join(args.cache_dir, "inception"), 100, device)
        results, warnings = metrics.compute_metrics(net, images, which, ref, 100, device)
        results.update({"inception_weights_sha256": net.weights_id, "resize": metrics.RESIZE_RULE})
    if "lpips" in which:
        net = metrics.LPIPS(*(None if w == "random" else w for w in (args.lpips_backbone, args.lpips_linear)))
        results.update(metrics.lpips_report(Split(images, y), train, net, device=device))
    return {**results, "warnings": warnings, "n_samples": len(samples)}


def within_class_diversity(samples, y, lpips, device) -> dict:
    """Mean distance between same-class samples: LPIPS where its weights are at hand, and pixel L2 (none
    with one sample per class)."""
    if torch.bincount(y).max() < 2:
        return {}
    out = {"pixel_l2_diversity": metrics.diversity(samples, y)}
    if lpips is not None:
        out["lpips_diversity"] = metrics.diversity(samples, y, lpips, device=device)
    return out


def run(args) -> dict:
    device = resolve_device(args.device)
    model, info = load_classifier(args, device)
    model.requires_grad_(False)  # SGLD needs input gradients only
    train = split_of_run(info["args"], True, args.data_dir, args.train_npz, info["model_config"]["num_classes"])
    args.dataset, args.data_dir = info["args"]["dataset"], args.data_dir or info["args"].get("data_dir", "data")
    args.train_npz = args.train_npz or info["args"].get("train_npz")
    args.train_key = f"npz-{sha256_of(args.train_npz)[:12]}" if args.train_npz else args.dataset
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "args.json"), {k: v for k, v in vars(args).items() if k != "sweep"})
    print("settings: " + " ".join(f"{k}={getattr(args, k)}" for k in ("preset", "steps", "eta", "zeta", "noise_std",
                                                                       "sigma_pca", "retained_variance", "objective")))
    runs, table, first_per_class = variants(args), {}, []
    lpips = lpips_net(args) if len(runs) > 1 else None
    names = class_names_for(info["model_config"]["num_classes"], args.dataset, args.train_npz)
    for label, change in runs.items():
        settings = argparse.Namespace(**{**vars(args), **change})
        samples, y, x0, trace = generate(model, train, settings, device)
        out = os.path.join(args.out, label.replace(", ", "-").replace(" ", "_")) if len(runs) > 1 else args.out
        write_run(out, samples, y, x0, trace, args.grid_columns, names)
        table[label] = {"settings": change, "accuracy": trace[-1]["accuracy"], "E_xy": trace[-1]["E_xy"],
                        **within_class_diversity(samples, y, lpips, device)}
        if metrics.metric_names(args.metrics):
            table[label]["metrics"] = sample_metrics(args, samples, y, train, device)
            write_json(os.path.join(out, "metrics.json"), table[label]["metrics"])
        first_per_class.append(torch.stack([samples[y == c][0] for c in y.unique()]))
    if len(runs) > 1:
        write_comparison(args, table, first_per_class, names)
    print_table(table)
    print(f"written to {args.out}")
    return table


def write_comparison(args, table: dict, first_per_class: list, class_names=None) -> None:
    """NAME.png (one row of samples per run, one per class) and NAME.json (the table) of a comparison."""
    name = "compare_inits" if args.compare_inits else "compare_samplers" if args.compare_samplers else "sweep_pca"
    save_grid(first_per_class, None, os.path.join(args.out, f"{name}.png"), len(first_per_class[0]), class_names,
              row_labels=list(table))
    write_json(os.path.join(args.out, f"{name}.json"), {
        "diversity": "lpips_diversity: mean LPIPS of same-class pairs (only where its weights were at hand); "
                     "pixel_l2_diversity: mean ||a - b||_2 of same-class pairs, pixels in [0, 1]", "runs": table})


def print_table(table: dict) -> None:
    print(f"{'run':<34}{'accuracy on samples':>20}{'mean E(x,y)':>14}{'pixel L2 div.':>15}{'LPIPS div.':>12}")
    for label, row in table.items():
        pixel = f"{row['pixel_l2_diversity']:.3f}" if "pixel_l2_diversity" in row else "-"  # one sample per class
        lpips = f"{row['lpips_diversity']:.4f}" if "lpips_diversity" in row else "-"  # comparisons only
        print(f"{label:<34}{100 * row['accuracy']:>19.1f}%{row['E_xy']:>14.3f}{pixel:>15}{lpips:>12}")


def main(argv=None) -> None:
    parser = build_parser()
    apply_preset(parser, argv)
    run_command("generate.py", parser, argv, check_args, run, (CheckpointError, DataError, GenerationError, MetricsError))


if __name__ == "__main__":
    main()
