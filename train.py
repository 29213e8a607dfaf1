"""Adversarial training: WEAT-adv and WEAT-nat (the paper's method), and the baselines TRADES, SAT
(PGD-AT), MART, MAIL-TR, SAT + DER and natural training (the methods table: methods.py).

    python train.py --weat adv                      # WEAT-adv, ResNet-18, CIFAR-10, the paper's settings
    python train.py --loss sat                      # the PGD-AT baseline
    python train.py --smoke                         # the whole loop on tiny synthetic data, CPU, < 1 min

A run writes to its own folder: args.json, log.jsonl (one JSON object per epoch), energy-snapshots/,
last.pt (every epoch) and best.pt (the epoch --select picks: by default the best validation PGD-20 of
the last 10% of epochs, the authors' rule). `--resume` continues from last.pt and, on the CPU, ends with
the same weights as an uninterrupted run.
"""
import argparse
import contextlib
import gc
import json
import os
import shutil
import time
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from attacks import PGD20_STEP_SIZE, PGD20_STEPS, PIXEL, eval_mode, outside_ball, pgd
from data import CROP_PADDING, DATASETS, VAL_SIZE, Batches, DataError, fits_on_device, load_data
from energy import WEAT_TERMS, WEIGHT_FNS, energy_pick, energy_x, energy_xy
from methods import DER_BETA, LOSSES, METHODS, method_key, method_name, training_attack
from models import (DEFAULT_IN_HELP, MODEL_NAMES, CheckpointError, build_model, first_line, load_checkpoint,
                    model_config, resolve_device, run_command, save_checkpoint)

SCHEDULES = ("onecycle", "piecewise")
AUGMENTATIONS = ("crop-flip", "flip", "none")
SELECTIONS = ("best-late", "best", "last", "energy")
PCT_START = 0.25  # OneCycleLR warm-up fraction in the authors' code
PIECEWISE_DROPS, PIECEWISE_FACTOR = (0.5, 0.75), 0.1  # lr x0.1 at 50% and 75% of the epochs (Rice et al. 2020)
LATE_FRACTION = 0.1  # best-late: the best validation PGD-20 among the last 10% of epochs (authors: epochs 91-100)
# deviation: MAIL-TR trains as TRADES from scratch until its weights switch on; the MAIL code restarts from a
# TRADES checkpoint of epoch 55 at epoch 60 (of 100; 70 -> 75 of 120)
MAIL_BURN_IN = 0.6  # MAIL code: its weights switch on at epoch 60 of 100 (75 of 120); TRADES before
DEFAULT_EPOCHS = 100  # the paper's training epochs (CIFAR-10, CIFAR-100, Tiny-ImageNet)
EPOCHS = {"svhn": 30}  # training epochs where the paper differs from its 100
SMOKE = {"dataset": "synthetic", "model": "resnet18", "width": 8, "epochs": 2, "val_size": 100,
         "eval_examples": 100, "batch_size": 64, "steps": 5, "device": "cpu", "train_subset": None}
# args that may change on --resume: where the run runs, and where its folders are (channels-last follows the device)
RESUME_IGNORES = ("resume", "overwrite", "device", "compile", "channels_last", "out_dir", "data_dir")
SNAPSHOT_DIR = "energy-snapshots"  # in the run folder: epoch-0001.npz, ... (--energy-snapshot)
# The log's training accuracies and energies are means over every 4th step (and the last), an unbiased sample
# of the epoch's shuffled batches: their eval-mode forward of x* costs 1 of a step's ~30 forward-equivalents
LOG_EVERY = 4
FAULT_CHECK_EVERY = 20  # deviation: faults are read every 20 steps, not every step; steps between the host reads of the non-finite / eps-ball flag (one sync each)
VAL_ALL_SEED = 7_919  # offsets --val-all's random stream from the epoch's own seed (seed_epoch)
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, a run folder that does not match)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], usage="%(prog)s [options] (see --help)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", choices=DATASETS, default="cifar10",
                   help="'npz' reads --train-npz/--test-npz; 'synthetic' is a tiny learnable set for smoke runs")
    p.add_argument("--data-dir", default="data", help="where torchvision data sets are downloaded")
    p.add_argument("--train-npz", help="with --dataset npz: npz with 'image' (N,H,W,3) uint8 and 'label' (N,)")
    p.add_argument("--test-npz", help="with --dataset npz: npz test set, same layout")
    p.add_argument("--val-npz", help="npz validation set for checkpoint selection (else --val-size held out)")
    p.add_argument("--model", choices=MODEL_NAMES, default="resnet18", help="network")
    p.add_argument("--width", type=int, default=64, help="network width; 64 is the paper's full-size network (for "
                                                          "ResNet-18 the first stage's channels; other widths scale "
                                                          "every layer by width / 64)")
    p.add_argument("--normalize", action="store_true", help="normalise inputs with CIFAR-10 statistics")
    p.add_argument("--loss", choices=LOSSES, default="trades",
                   help="outer objective: TRADES (KL attack), SAT i.e. PGD-AT (CE attack), SAT + DER (SAT with the "
                        "Delta Energy Regularizer), MART (CE attack), "
                        "MAIL-TR (KL attack), or natural (plain CE, no attack: a non-robust model to compare with)")
    p.add_argument("--mail-burn-in", type=int, default=None,
                   help="MAIL-TR: epochs of plain TRADES before its weights switch on (default: 60%% of --epochs)"
                        + DEFAULT_IN_HELP)
    p.add_argument("--weat", choices=("none", "nat", "adv"), default="none",
                   help="WEAT energy weighting of the TRADES loss (needs --loss trades)")
    p.add_argument("--weat-terms", choices=WEAT_TERMS, default="both",
                   help="ablation: which loss terms carry the WEAT weight ('kl' is the MAIL-TR-style placement)")
    p.add_argument("--weat-normalize", action="store_true", help="ablation: divide the weights by their batch mean")
    p.add_argument("--weat-fn", choices=WEIGHT_FNS, default="energy",
                   help="ablation: the paper's 1/softplus(|E|) weights, or 'uniform' (their batch mean for every sample)")
    p.add_argument("--beta", type=float, default=None,
                   help="the regulariser's weight: KL weight (default: TRADES 6, WEAT 6 and 7 on cifar100, MART 5, "
                        f"MAIL-TR 5), DER's beta (SAT + DER: {DER_BETA:g}); SAT and natural training have none"
                        + DEFAULT_IN_HELP)
    p.add_argument("--der-gamma", type=float, default=0.0,
                   help="--loss sat-der: the hinge of the Delta Energy Regularizer (gaps below it cost nothing)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: 100; 30 for svhn)" + DEFAULT_IN_HELP)
    p.add_argument("--batch-size", type=int, default=128, help="training batch size")
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate")
    p.add_argument("--lr-schedule", choices=SCHEDULES, default="onecycle",
                   help="onecycle: OneCycleLR, 25%% warm-up, stepped every batch (the authors'); piecewise: "
                        "x0.1 after 50%% and 75%% of the epochs (the robust-overfitting literature's), or after "
                        "--lr-drops")
    p.add_argument("--lr-drops", type=int, nargs="+", default=None, metavar="EPOCH",
                   help="with --lr-schedule piecewise: the epochs after which the learning rate is multiplied by 0.1 "
                        "(default: 50%% and 75%% of --epochs, rounded down)" + DEFAULT_IN_HELP)
    p.add_argument("--momentum", type=float, default=0.9,
                   help="SGD momentum; with --lr-schedule onecycle OneCycleLR replaces it by a cycle from 0.95 "
                        "down to 0.85 and back, as in the authors' code")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="SGD weight decay")
    p.add_argument("--eps", type=float, default=8.0, help="Linf radius in pixels (8 means 8/255)")
    p.add_argument("--step-size", type=float, default=2.0, help="attack step in pixels")
    p.add_argument("--steps", type=int, default=10, help="attack steps K during training")
    p.add_argument("--train-subset", type=int, default=None, help="train on the first N training images left after the validation hold-out")
    p.add_argument("--balanced-subset", action="store_true",
                   help="--train-subset takes the first N / K images of each of the K classes (the same share each)")
    p.add_argument("--augment", choices=AUGMENTATIONS, default="crop-flip",
                   help="training augmentation: random crop (4-pixel zero padding) + horizontal flip, the authors'; "
                        "flip alone; or none, which lets a small model memorise a small set (the claims-cpu regime)")
    p.add_argument("--crop-padding", type=int, default=CROP_PADDING,
                   help="with --augment crop-flip: the zero padding in pixels, so crops shift by up to this much")
    p.add_argument("--val-size", type=int, default=VAL_SIZE,
                   help="training images held out for validation (0: train on all; select with --val-npz or "
                        "--select last|energy)")
    p.add_argument("--eval-examples", type=int, default=1000, help="validation points for the per-epoch PGD-20")
    p.add_argument("--val-all", action="store_true",
                   help="every epoch, also attack the held-out images past --eval-examples (PGD-20, after the test "
                        "pass and in a random stream of its own, so that every other logged figure stays as without "
                        "it); the log's val_all_pgd_acc covers every held-out image and --select reads it")
    p.add_argument("--select", choices=SELECTIONS, default="best-late",
                   help="what best.pt holds: best-late = best validation PGD-20 of the last 10%% of epochs (the "
                        "authors'), best = of all epochs, last, energy = the energy-gap rule (energy.energy_pick)")
    p.add_argument("--test-every", type=int, default=0,
                   help="every N epochs, clean and PGD accuracy on the first --test-examples test points, logged "
                        "for figures and never used for selection (0: never)")
    p.add_argument("--test-examples", type=int, default=1000, help="test points of --test-every")
    p.add_argument("--test-steps", type=int, default=PGD20_STEPS, help="PGD steps of --test-every (step 2/255)")
    p.add_argument("--energy-snapshot", type=int, default=500,
                   help="energies of the first N training images (as trained on) saved every epoch (0: none)")
    p.add_argument("--log-every", type=int, default=LOG_EVERY,
                   help="the logged training accuracies and energies come from an extra eval-mode forward on every "
                        "N-th step and the epoch's last (1: every step; the loss is logged on every step)")
    p.add_argument("--out-dir", default=None, help="run folder (default: runs/<dataset>-<model>-<method>-<seed>)" + DEFAULT_IN_HELP)
    p.add_argument("--resume", action="store_true", help="continue the run in --out-dir from last.pt")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out-dir")
    p.add_argument("--seed", type=int, default=0, help="seeds the split, the model, batches and attacks")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (under torchrun: each rank's GPU)")
    p.add_argument("--amp", choices=AMP_DTYPES, default="none",
                   help="mixed precision of the training step and its attack (fp16: CUDA only, with a gradient scaler)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last memory format: the same network, numbers equal up to float rounding (default: "
                        "on for the CPU, off elsewhere)" + DEFAULT_IN_HELP)
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--sync-bn", action="store_true", help="under torchrun: BatchNorm statistics over all ranks")
    p.add_argument("--smoke", action="store_true",
                   help="2 epochs of a width-8 ResNet-18 on synthetic data on the CPU (a flag given with a value other "
                        "than its default wins)")
    return p


def is_ablation(args) -> bool:
    return args.weat_terms != "both" or args.weat_normalize or args.weat_fn != "energy"


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill in smoke and per-dataset defaults, check values; raises ValueError on bad input."""
    if args.smoke:  # the smoke settings, except where a flag was given (a value other than its default)
        defaults = build_parser()
        vars(args).update({k: v for k, v in SMOKE.items() if getattr(args, k) == defaults.get_default(k)})
    if args.epochs is None:
        args.epochs = EPOCHS.get(args.dataset, DEFAULT_EPOCHS)
    method = METHODS[method_key(vars(args))]
    if args.beta is not None and method.beta is None:
        raise ValueError(f"--beta weighs a regulariser; {method.display} has none")
    if args.beta is None:
        args.beta = method.default_beta(args.dataset)
    if args.mail_burn_in is not None and method_key(vars(args)) != "mail-tr":
        raise ValueError(f"--mail-burn-in is MAIL-TR's; it cannot be used with {method.display}")
    if args.mail_burn_in is None:
        args.mail_burn_in = round(MAIL_BURN_IN * args.epochs)
    if args.dataset != "npz" and (args.train_npz or args.test_npz):
        raise ValueError(f"--train-npz and --test-npz are read with --dataset npz, not --dataset {args.dataset}")
    if args.der_gamma != 0 and args.loss != "sat-der":
        raise ValueError(f"--der-gamma is the hinge of --loss sat-der; it cannot be used with --loss {args.loss}")
    if args.der_gamma < 0:
        raise ValueError(f"--der-gamma must not be negative, got {args.der_gamma}")
    if args.loss != "trades" and args.weat != "none":
        raise ValueError(f"--weat weights the TRADES loss; it cannot be used with --loss {args.loss}")
    if args.val_size == 0 and args.val_npz is None and args.select in ("best", "best-late"):
        raise ValueError(f"--select {args.select} needs a validation split: --val-size > 0 or --val-npz "
                         "(or --select last|energy)")
    if args.weat == "none" and is_ablation(args):
        raise ValueError("--weat-terms, --weat-normalize and --weat-fn change the WEAT weights; they need --weat nat|adv")
    for key in ("epochs", "batch_size", "steps", "width", "eval_examples", "test_examples", "test_steps", "log_every"):
        if getattr(args, key) < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be at least 1, got {getattr(args, key)}")
    for key in ("eps", "step_size", "lr"):
        if not getattr(args, key) > 0:
            raise ValueError(f"--{key.replace('_', '-')} must be positive, got {getattr(args, key)}")
    if args.lr_drops is not None:
        if args.lr_schedule != "piecewise":
            raise ValueError("--lr-drops sets the drops of --lr-schedule piecewise")
        if sorted(set(args.lr_drops)) != args.lr_drops or not 1 <= args.lr_drops[0] <= args.lr_drops[-1] < args.epochs:
            raise ValueError(f"--lr-drops must be increasing epochs between 1 and {args.epochs - 1} "
                             f"(--epochs {args.epochs}), got {' '.join(map(str, args.lr_drops))}")
    if args.crop_padding != CROP_PADDING and args.augment != "crop-flip":
        raise ValueError("--crop-padding sets the crops of --augment crop-flip")
    if args.crop_padding < 1:
        raise ValueError(f"--crop-padding must be at least 1 (--augment flip: flips alone), got {args.crop_padding}")
    if args.train_subset is not None and args.train_subset < 1:
        raise ValueError(f"--train-subset must be at least 1, got {args.train_subset}")
    if args.balanced_subset and args.train_subset is None:
        raise ValueError("--balanced-subset balances the classes of --train-subset; give --train-subset N")
    for key in ("val_size", "test_every", "energy_snapshot", "mail_burn_in"):
        if getattr(args, key) < 0:
            raise ValueError(f"--{key.replace('_', '-')} must not be negative, got {getattr(args, key)}")
    args.device = resolve_device(args.device)
    if args.channels_last is None:
        args.channels_last = args.device == "cpu"
    if args.amp == "fp16" and not args.device.startswith("cuda"):
        raise ValueError("--amp fp16 needs CUDA (it relies on a gradient scaler); use --amp bf16 on the CPU")
    if args.out_dir is None:
        args.out_dir = os.path.join("runs", f"{args.dataset}-{args.model}-{method_name(vars(args))}-{args.seed}")
    return args


def attack_for_training(model, x, y, args) -> tuple:
    """(x*, eval-mode logits of x or None) for the training loss: the method's training attack
    (methods.TRAINING_ATTACKS) with the model in eval mode; the logits of x where the attack computed them
    (the TRADES attack's KL target). The eps-ball check is the training loop's (`Faults`), read without a
    host-device sync per step."""
    with eval_mode(model):
        return training_attack(METHODS[method_key(vars(args))].attack, model, x, y, args.eps * PIXEL,
                               args.step_size * PIXEL, args.steps, check=False)


def training_loss(model, x, x_adv, y, args, epoch: int) -> tuple:
    """The outer objective of one batch (the method's loss), and the sample weights it used (None: unweighted).

    `model` runs the forwards the loss is built from (under torchrun the DistributedDataParallel
    wrapper); logits are cast to float32 for the loss.
    """
    method = METHODS[method_key(vars(args))]
    # deviation: the adversarial batch is forwarded first (the WEAT, MART and MAIL code forward the natural one
    # first): the same loss and gradient, BatchNorm's running statistics weigh the natural batch a little more
    logits_adv = model(x_adv).float()
    # deviation: one natural forward serves the CE and the KL term (TRADES' code runs model(x) twice; the
    # loss and its gradient are the same, BatchNorm statistics see the natural batch once per step).
    logits_nat = None
    if method.natural_forward:
        with contextlib.nullcontext() if method.natural_stats else frozen_batchnorm_statistics(model):
            logits_nat = model(x).float()
    return method.loss(logits_nat, logits_adv, y, args, epoch)


@contextlib.contextmanager
def frozen_batchnorm_statistics(model):
    """Train-mode BatchNorm (batch statistics) whose running statistics do not move: momentum 0 inside,
    restored after."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) running + 0 batch: unchanged, to the bit
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)


@torch.no_grad()
def logging_logits(model, x, x_adv, logits_nat=None) -> tuple:  # deviation: an extra eval-mode forward, for the log
    """Eval-mode logits of x and x* (no gradient), taken before the loss's train-mode forwards move the
    BatchNorm statistics: the model the attack saw. Every method's logged energies and training
    accuracies come from this one kind of forward, so that their curves compare. `logits_nat`: the
    attack's own eval-mode logits of x (TRADES' KL target), reused instead of a second forward of x."""
    with eval_mode(model):
        if logits_nat is not None:
            return logits_nat.float(), model(x_adv).float()
        logits = model(torch.cat([x, x_adv])).float()
    return logits[:len(x)], logits[len(x):]


def logged_rows(step: int, steps: int, index: torch.Tensor, args) -> torch.Tensor:
    """Which rows of a batch get the logging forward (`logging_logits`): every row on every --log-every-th
    step and the epoch's last (None), else only the --energy-snapshot points among them (row numbers,
    from the batch's indices on the host: no device sync)."""
    if step % args.log_every == 0 or step == steps - 1:
        return None
    return (index < args.energy_snapshot).nonzero().squeeze(1)


def autocast(args):
    """The mixed-precision context of the training step (a no-op for --amp none)."""
    # deviation: --amp runs the inner attack under autocast too; every loss is computed in float32
    dtype = AMP_DTYPES[args.amp]
    return torch.autocast(torch.device(args.device).type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


class Networks(NamedTuple):
    """The model and the two handles that run its forwards (all three the same module by default)."""
    model: torch.nn.Module  # the parameters: optimizer, checkpoints
    compiled: torch.nn.Module  # torch.compile(model) with --compile: runs the attacks and the evaluation
    ddp: torch.nn.Module  # `compiled` in DistributedDataParallel under torchrun: runs the loss's forwards

    @classmethod
    def of(cls, model: torch.nn.Module) -> "Networks":
        return cls(model, model, model)


def train_epoch(nets: Networks, batches, optimizer, scheduler, args, epoch: int, scaler=None,
                snapshot: "EnergySnapshot" = None) -> dict:
    """One epoch of adversarial training: per batch, the inner attack, the outer loss, an SGD step; returns
    the epoch's statistics (and fills `snapshot`, if given, with the energies of its training points)."""
    scaler = scaler or torch.amp.GradScaler(enabled=False)
    nets.model.train()
    faults, stats = Faults(args.device), EpochStatistics(args.device)
    for step, (x, y, index) in enumerate(tqdm(batches, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True,
                                              disable=not is_main())):
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        rows = logged_rows(step, len(batches), index, args)
        some_rows = rows is None or len(rows) > 0
        with autocast(args):
            x_adv, logits_nat = attack_for_training(nets.compiled, x, y, args)
            if some_rows:  # the model the attack saw
                logits_nat, logits_adv = logging_logits(nets.compiled, *select_rows(rows, x, x_adv, logits_nat))
            loss, weights = training_loss(nets.ddp, x, x_adv, y, args, epoch)
        grad_max = optimizer_step(loss, nets.model, optimizer, scheduler, scaler)
        faults.record(step, loss, grad_max, x_adv, x, args.eps * PIXEL, overflow_skipped=scaler.is_enabled())
        if step % FAULT_CHECK_EVERY == 0 or step == len(batches) - 1:
            faults.raise_if_any(epoch)
        stats.add_loss(loss, len(y), weights)
        if rows is None:
            stats.add_logits(logits_nat, logits_adv, y)
        if snapshot is not None and some_rows:
            snapshot.add(*select_rows(rows, index.to(y.device), y), logits_nat, logits_adv)
    return {"lr": scheduler.get_last_lr()[0], **stats.summary()}


def select_rows(rows, *tensors) -> tuple:
    """The rows `rows` (a row-number tensor; None: all) of each tensor (None stays None)."""
    if rows is None:
        return tensors
    rows = rows.to(tensors[0].device)
    return tuple(None if t is None else t[rows] for t in tensors)


def optimizer_step(loss, model, optimizer, scheduler, scaler) -> torch.Tensor:
    """Backward, optimizer and schedule step; returns the gradient's largest |entry| (on the device, for the
    fault check). fp16's gradient scaler skips a step whose gradients overflowed."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    grad_max = torch.stack([p.grad.detach().abs().amax() for p in model.parameters() if p.grad is not None]).amax()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return grad_max


class Faults:
    """A non-finite loss or gradient, and an attack point outside the eps-ball, recorded on the device
    (no host-device sync per step) as the first step each happened; read with `raise_if_any`."""

    KINDS = ("a non-finite loss or gradient", "an attack point outside the eps-ball")

    def __init__(self, device):
        self.first_step = torch.full((len(self.KINDS),), -1, dtype=torch.long, device=device)

    def record(self, step: int, loss, grad_max, x_adv, x, eps: float, overflow_skipped: bool) -> None:
        """overflow_skipped: fp16, whose overflowing gradients the scaler skips, so only the loss counts."""
        non_finite = ~torch.isfinite(loss) | (~torch.isfinite(grad_max) & (not overflow_skipped))
        fault = torch.stack([non_finite, outside_ball(x_adv, x, eps)])
        self.first_step = torch.where(fault & (self.first_step < 0), step, self.first_step)

    def raise_if_any(self, epoch: int) -> None:
        for step, what in zip(self.first_step.tolist(), self.KINDS):
            if step >= 0:
                raise TrainingError(f"{what} at epoch {epoch}, step {step}; last.pt from epoch {epoch - 1} is kept")


class EpochStatistics:
    """Sums over an epoch's training batches (kept on the device), and their means. The loss and the
    sample weights count every step; the accuracies and energies come from the eval-mode logits of x and
    x* (`logging_logits`) of the logged steps (every --log-every-th step and the last)."""

    SUMS = ("n", "loss", "weight", "n_logged", "nat_correct", "adv_correct", "E_nat", "E_adv", "Exy_nat", "Exy_adv")

    def __init__(self, device):
        self.sums = torch.zeros(len(self.SUMS), device=device)

    @torch.no_grad()
    def add_loss(self, loss, n: int, weights=None) -> None:
        """A step's loss over n points; weights: the loss's sample weights (None: unweighted, counted as 1)."""
        n = torch.ones_like(loss) * n
        self.sums[:3] += torch.stack([n, loss.detach() * n, n if weights is None else weights.sum()])

    @torch.no_grad()
    def add_logits(self, logits_nat, logits_adv, y) -> None:
        """A logged step's accuracies and energies."""
        self.sums[3:] += torch.stack([torch.tensor(len(y), device=y.device), (logits_nat.argmax(1) == y).sum(),
                                      (logits_adv.argmax(1) == y).sum(), energy_x(logits_nat).sum(),
                                      energy_x(logits_adv).sum(), energy_xy(logits_nat, y).sum(),
                                      energy_xy(logits_adv, y).sum()]).float()

    def summary(self) -> dict:
        """The log's training entries, summed over all ranks under torchrun."""
        sums = dict(zip(self.SUMS, all_reduce(self.sums).tolist()))
        s = {k: v / (sums["n"] if k in ("loss", "weight") else sums["n_logged"]) for k, v in sums.items()}
        return {"train_loss": s["loss"], "train_nat_acc": s["nat_correct"], "train_adv_acc": s["adv_correct"],
                "E_nat": s["E_nat"], "E_adv": s["E_adv"], "delta_E": s["E_nat"] - s["E_adv"],
                "Exy_nat": s["Exy_nat"], "Exy_adv": s["Exy_adv"], "delta_Exy": s["Exy_nat"] - s["Exy_adv"],
                "weight_mean": s["weight"], "logged_points": int(sums["n_logged"])}


class EnergySnapshot:
    """E(x), E(x, y), E(x*), E(x*, y) of the first n training images in one epoch, each as it was trained on
    (its random crop and flip, its training attack point), from the eval-mode logits of its batch."""

    KEYS = ("E_x", "E_xy", "E_x_adv", "E_xy_adv")

    def __init__(self, n: int, device):
        self.sums = torch.zeros(n, len(self.KEYS), device=device)
        self.seen = torch.zeros(n, device=device)

    @torch.no_grad()
    def add(self, index, y, logits_nat, logits_adv) -> None:
        """Energies of a batch's points (or some of its rows): index, their indices in the training split."""
        mine = index < len(self.seen)
        values = torch.stack([energy_x(logits_nat), energy_xy(logits_nat, y), energy_x(logits_adv),
                              energy_xy(logits_adv, y)], 1)
        self.sums.index_add_(0, index[mine], values[mine])
        self.seen.index_add_(0, index[mine], torch.ones_like(index[mine], dtype=self.seen.dtype))

    def arrays(self) -> dict:
        """Per-point numpy arrays (NaN for a point no rank trained on this epoch), summed over all ranks."""
        sums, seen = all_reduce(self.sums).cpu(), all_reduce(self.seen).cpu()
        values = torch.where(seen[:, None] > 0, sums / seen.clamp_min(1)[:, None], float("nan"))
        return {key: values[:, i].numpy() for i, key in enumerate(self.KEYS)}


def evaluate_pgd(model, batches, eps, alpha, steps):
    """Clean and PGD (CE, uniform start) accuracy of a model in eval mode over a set of batches (summed
    over all ranks under torchrun; float32); (None, None) for no batches."""
    if len(batches) == 0:
        return None, None
    correct = torch.zeros(3, device=batches.device)
    with eval_mode(model):
        for x, y in batches:
            x_adv = pgd(model, x, y, eps, alpha, steps, loss="ce")
            with torch.no_grad():
                correct += torch.stack([torch.tensor(len(y), device=y.device), (model(x).argmax(1) == y).sum(),
                                        (model(x_adv).argmax(1) == y).sum()]).float()
    n, nat, adv = all_reduce(correct).tolist()
    return nat / n, adv / n


# ---------------------------------------------------------------------------------------------------
# Several processes (torchrun): each rank trains on its own shard; rank 0 alone writes


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def all_reduce(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all ranks (itself when not distributed)."""
    if dist.is_initialized():
        dist.all_reduce(t)
    return t


def setup_distributed(args) -> tuple:
    """Start the process group when run by torchrun; returns (rank, world size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if args.device.startswith("cuda"):
        args.device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    # deviation: --batch-size is the global batch; BatchNorm statistics and WEAT's batch means are per rank
    if args.batch_size % world:
        raise TrainingError(f"--batch-size {args.batch_size} (the global batch) must divide among {world} processes")
    dist.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
    return rank, world


def seed_epoch(seed: int, epoch: int) -> None:
    """Seed the global RNG (attack noise) from (seed, epoch), so a resumed run replays it exactly."""
    # deviation: randomness seeded per epoch rather than carried over as RNG state (what makes resume exact);
    # on the CPU the batch order (data.Batches) is seeded alike, so it reads the same numbers as the attack noise
    torch.manual_seed(seed * 1_000_003 + epoch)


def check_out_dir(args) -> None:
    """Refuse to touch another run in --out-dir unless --resume or --overwrite (writes nothing)."""
    has_run = os.path.exists(os.path.join(args.out_dir, "args.json"))
    if args.resume and not os.path.isfile(os.path.join(args.out_dir, "last.pt")):
        raise TrainingError(f"--resume: no last.pt in {args.out_dir}")
    if has_run and not (args.resume or args.overwrite):
        raise TrainingError(f"{args.out_dir} holds another run; pass --resume to continue it or --overwrite")


def prepare_out_dir(args) -> None:
    """Create the run folder and remove temporary files a killed checkpoint write left; for a new run,
    clear the old run's files and write args.json."""
    os.makedirs(args.out_dir, exist_ok=True)
    for name in os.listdir(args.out_dir):
        if name.startswith(".tmp-") and name.endswith(".pt"):  # models.atomic_save's temporary files
            os.remove(os.path.join(args.out_dir, name))
    if not args.resume:
        for name in ("log.jsonl", "last.pt", "best.pt"):
            if os.path.exists(os.path.join(args.out_dir, name)):
                os.remove(os.path.join(args.out_dir, name))
        shutil.rmtree(os.path.join(args.out_dir, SNAPSHOT_DIR), ignore_errors=True)
        with open(os.path.join(args.out_dir, "args.json"), "w") as f:
            json.dump(vars(args), f, indent=2)


def resume_state(args, training: "Training", write: bool = True) -> list:
    """Load last.pt into the model, optimizer, scheduler and scaler; rewrite log.jsonl from it (if
    `write`); return the history."""
    ckpt = load_checkpoint(os.path.join(args.out_dir, "last.pt"), args.device)
    saved = {k: v for k, v in ckpt["args"].items() if k not in RESUME_IGNORES}
    changed = sorted(k for k, v in saved.items() if vars(args).get(k) != v)
    if changed:
        raise TrainingError(f"--resume with different settings than the run in {args.out_dir}: {', '.join(changed)}")
    training.nets.model.load_state_dict(ckpt["model"])
    training.optimizer.load_state_dict(ckpt["optimizer"])
    training.scheduler.load_state_dict(ckpt["scheduler"])
    if "scaler" in ckpt:
        training.scaler.load_state_dict(ckpt["scaler"])
    if write:
        write_log(args.out_dir, ckpt["history"])  # drops a line written after the last checkpoint, if any
        best = os.path.join(args.out_dir, "best.pt")
        if select_epoch(ckpt["history"], args.select, args.epochs) == ckpt["epoch"] and (
                not os.path.isfile(best) or load_checkpoint(best, "cpu")["epoch"] != ckpt["epoch"]):
            shutil.copyfile(os.path.join(args.out_dir, "last.pt"), best)  # killed between last.pt and best.pt
    return ckpt["history"]


def write_log(out_dir: str, history: list) -> None:
    tmp = os.path.join(out_dir, "log.jsonl.tmp")
    with open(tmp, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in history)
    os.replace(tmp, os.path.join(out_dir, "log.jsonl"))


def compile_model(model, example: torch.Tensor):
    """torch.compile(model), tried once on `example` (eval mode, no grad) so that a missing compiler
    shows up as a clear error here instead of deep inside the first step."""
    compiled = torch.compile(model)
    try:
        with torch.no_grad(), eval_mode(compiled):
            compiled(example)
    except Exception as e:  # the backend's errors have no common type
        raise TrainingError(f"--compile is not available here ({type(e).__name__}: "
                            f"{first_line(e)[:200]}); run without --compile") from None
    return compiled


class Training(NamedTuple):
    """What a run trains with: built once by `build_training`, then stepped epoch by epoch."""
    nets: Networks  # the model and the handles that run its forwards
    config: dict  # the model's configuration (saved in every checkpoint)
    train_batches: Batches
    val_batches: Batches  # --eval-examples validation points (selection)
    val_rest_batches: Batches  # with --val-all: the held-out points past --eval-examples
    test_batches: Batches  # --test-examples test points (figures only)
    optimizer: torch.optim.Optimizer
    scheduler: object  # the learning-rate schedule, stepped every batch
    scaler: torch.amp.GradScaler  # fp16's gradient scaler (disabled otherwise)
    resident: bool  # the training images live on the device
    snapshot_labels: np.ndarray  # labels of the --energy-snapshot points


def build_training(args, data, rank: int, world: int) -> Training:
    """The model (and what runs its forwards), batches, optimizer, schedule and gradient scaler."""
    torch.manual_seed(args.seed)
    config = model_config(args.model, data.num_classes, args.normalize, args.width)
    model = build_model(**config).to(args.device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if args.sync_bn and world > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    resident = fits_on_device(data.train, args.device)
    # deviation: a final batch of a single image is dropped (BatchNorm cannot train on one image)
    train_batches = Batches(data.train, args.batch_size, args.device, shuffle=True,
                            augment=args.augment != "none", pad=args.crop_padding if args.augment == "crop-flip" else 0,
                            seed=args.seed,
                            drop_last=len(data.train) // world % (args.batch_size // world) == 1,
                            rank=rank, world=world, resident=resident, with_index=True)
    evaluation = lambda split, n: Batches(split.take(slice(0, n)), args.batch_size, args.device, rank=rank, world=world)
    compiled = compile_model(model, data.train.images[:2].to(args.device) / 255) if args.compile else model
    ddp = torch.nn.parallel.DistributedDataParallel(compiled) if world > 1 else compiled
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    return Training(nets=Networks(model, compiled, ddp), config=config, train_batches=train_batches,
                    val_batches=evaluation(data.val, args.eval_examples),
                    val_rest_batches=evaluation(data.val.take(slice(args.eval_examples, len(data.val) if args.val_all else 0)),
                                                len(data.val)),
                    test_batches=evaluation(data.test, args.test_examples), optimizer=optimizer,
                    scheduler=build_scheduler(optimizer, args, len(train_batches)),
                    scaler=torch.amp.GradScaler("cuda", enabled=args.amp == "fp16"), resident=resident,
                    snapshot_labels=data.train.labels[:args.energy_snapshot].numpy())


def build_scheduler(optimizer, args, steps_per_epoch: int):
    """The learning-rate schedule, stepped every batch: OneCycleLR (the authors', 25% warm-up, momentum
    cycled 0.95 -> 0.85 -> 0.95) or piecewise constant, x0.1 after the epochs of --lr-drops (default: 50%
    and 75% of the epochs)."""
    total = args.epochs * steps_per_epoch
    if args.lr_schedule == "onecycle" and PCT_START * total == 1:  # OneCycleLR divides by pct_start * total - 1
        raise TrainingError(f"--lr-schedule onecycle cannot run exactly {total} optimizer steps ({args.epochs} epochs "
                            f"x {steps_per_epoch} batches): its warm-up would be 0 steps long; change --epochs, "
                            "--batch-size or --train-subset, or use --lr-schedule piecewise")
    if args.lr_schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, pct_start=PCT_START,
                                                   total_steps=total)
    drops = args.lr_drops or [int(fraction * args.epochs) for fraction in PIECEWISE_DROPS]
    milestones = [epoch * steps_per_epoch for epoch in drops]
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: PIECEWISE_FACTOR ** sum(step >= m for m in milestones))


def late_epochs(epochs: int) -> int:
    """How many final epochs best-late chooses among: 10% of them, rounded, at least 1 (1 below 15 epochs)."""
    return max(1, round(LATE_FRACTION * epochs))


def best_is_last(rule: str, epochs: int) -> bool:
    """True where `rule` can only choose the final epoch: last, or best-late with one late epoch."""
    return rule == "last" or (rule == "best-late" and late_epochs(epochs) == 1)


def select_epoch(history: list, rule: str, epochs: int):
    """The epoch whose weights best.pt holds under `rule`, from the log so far (None: none yet).

    best-late: best validation PGD-20 among the last 10% of the `epochs` (the authors' rule); best: among
    all epochs; last: the newest; energy: `energy.energy_pick` (the training energy gap, no validation).
    Ties go to the earlier epoch. Causal: only epochs logged so far count.
    """
    if not history:
        return None
    if rule == "last":
        return history[-1]["epoch"]
    if rule == "energy":
        return energy_pick(history)
    first = epochs - late_epochs(epochs) + 1 if rule == "best-late" else 1
    key = validation_key(history)
    rows = [r for r in history if r["epoch"] >= first and r[key] is not None]
    return max(rows, key=lambda r: (r[key], -r["epoch"]))["epoch"] if rows else None


def validation_key(history: list) -> str:
    """The log's validation figure that selection reads: val_all_pgd_acc (every held-out image, --val-all)
    where the log has it, else val_pgd_acc (the first --eval-examples)."""
    return "val_all_pgd_acc" if "val_all_pgd_acc" in history[0] else "val_pgd_acc"


def save_epoch(args, training: Training, history: list, snapshot: dict = None) -> None:
    """The epoch's energy snapshot, last.pt, best.pt (if --select picks this epoch), then the log line;
    rank 0 only. A kill before last.pt replays this epoch; a kill after it leaves best.pt for resume_state to
    bring up to date (best.pt never holds an epoch that last.pt and the log do not)."""
    row = history[-1]
    if snapshot is not None:
        folder = os.path.join(args.out_dir, SNAPSHOT_DIR)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"epoch-{row['epoch']:04d}.npz")
        np.savez(path + ".tmp.npz", label=training.snapshot_labels, **snapshot)
        os.replace(path + ".tmp.npz", path)
    state = {"optimizer": training.optimizer.state_dict(), "scheduler": training.scheduler.state_dict(),
             "scaler": training.scaler.state_dict(), "epoch": row["epoch"], "args": vars(args), "metrics": row,
             "history": history}
    save_checkpoint(os.path.join(args.out_dir, "last.pt"), training.nets.model, training.config, **state)
    if select_epoch(history, args.select, args.epochs) == row["epoch"]:
        save_checkpoint(os.path.join(args.out_dir, "best.pt"), training.nets.model, training.config, **state)
    with open(os.path.join(args.out_dir, "log.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")


def run(args) -> list:
    """Train as `args` says; returns the per-epoch log. Under torchrun every rank calls it."""
    rank, world = setup_distributed(args)
    check_out_dir(args)
    say = print if rank == 0 else (lambda *a, **k: None)
    say("settings: " + " ".join(f"{k}={v}" for k, v in vars(args).items()), flush=True)
    data = load_data(args.dataset, args.data_dir, args.train_npz, args.test_npz, args.val_npz,
                     args.val_size, args.train_subset, args.seed, args.balanced_subset)
    training = build_training(args, data, rank, world)  # before any file is written: it checks the schedule
    if rank == 0:
        prepare_out_dir(args)
    history = resume_state(args, training, write=rank == 0) if args.resume else []
    say(f"{method_name(vars(args))}: {len(data.train)} train / {len(data.val)} val images, "
        f"{sum(p.numel() for p in training.nets.model.parameters()):,} parameters, {args.device} x {world}, amp {args.amp}"
        + ("" if training.resident else ", images in pinned host memory"), flush=True)
    for epoch in range(len(history) + 1, args.epochs + 1):
        row, snapshot = run_epoch(args, training, epoch, rank, world)
        history.append(row)
        if rank == 0:
            save_epoch(args, training, history, snapshot)
        say(summary_line(history[-1], args.epochs), flush=True)
    if world > 1:  # every rank done with its collectives (and rank 0 with its files) before any tears down;
        dist.barrier()  # then DistributedDataParallel, which holds the process group, goes before the group
        del training
        gc.collect()
        dist.destroy_process_group()
    return history


def run_epoch(args, training: Training, epoch: int, rank: int, world: int) -> tuple:
    """Train one epoch, then validate (and test, every --test-every epochs); returns its log row and its
    energy snapshot (None without --energy-snapshot)."""
    start = time.time()
    seed_epoch(args.seed * world + rank, epoch)
    training.train_batches.set_epoch(epoch)
    snapshot = EnergySnapshot(len(training.snapshot_labels), args.device) if args.energy_snapshot else None
    row = {"epoch": epoch, **train_epoch(training.nets, training.train_batches, training.optimizer, training.scheduler, args,
                                         epoch, training.scaler, snapshot)}
    eps, model = args.eps * PIXEL, training.nets.compiled
    row["val_nat_acc"], row["val_pgd_acc"] = evaluate_pgd(model, training.val_batches, eps, PGD20_STEP_SIZE, PGD20_STEPS)
    tested = args.test_every and (epoch % args.test_every == 0 or epoch == args.epochs)
    # test accuracy for figures only: never read by select_epoch (after validation, so that its random
    # starts do not move validation's)
    row["test_nat_acc"], row["test_pgd_acc"] = (evaluate_pgd(model, training.test_batches, eps, PGD20_STEP_SIZE,
                                                             args.test_steps) if tested else (None, None))
    if args.val_all:
        row["val_all_nat_acc"], row["val_all_pgd_acc"] = validate_all(model, training, row, args.seed, epoch, eps)
    row["seconds"] = time.time() - start
    return row, (snapshot.arrays() if snapshot is not None else None)


def validate_all(model, training: Training, row: dict, seed: int, epoch: int, eps: float) -> tuple:
    """Clean and PGD-20 accuracy over every held-out image (--val-all): the held-out images past
    --eval-examples are attacked in a random stream of their own (seeded from the run's seed and the epoch),
    so the global stream, and with it every other figure of the run, is the same as without --val-all;
    pooled with the epoch's validation of the first --eval-examples."""
    first, rest = training.val_batches, training.val_rest_batches
    with torch.random.fork_rng(devices=[torch.device(first.device)] if first.device.type == "cuda" else []):
        torch.manual_seed(VAL_ALL_SEED + seed * 1_000_003 + epoch)
        nat, adv = evaluate_pgd(model, rest, eps, PGD20_STEP_SIZE, PGD20_STEPS)
    if nat is None:
        return row["val_nat_acc"], row["val_pgd_acc"]
    n_first, n_rest = first.n * first.world, rest.n * rest.world
    pool = lambda a, b: (a * n_first + b * n_rest) / (n_first + n_rest)  # noqa: E731
    return pool(row["val_nat_acc"], nat), pool(row["val_pgd_acc"], adv)


def summary_line(row: dict, epochs: int) -> str:
    f = lambda value: "-" if value is None else f"{value:.3f}"  # noqa: E731
    test = f" test nat/pgd {f(row['test_nat_acc'])}/{f(row['test_pgd_acc'])}" if row["test_pgd_acc"] is not None else ""
    return (f"epoch {row['epoch']}/{epochs} loss {row['train_loss']:.4f} train nat/adv "
            f"{row['train_nat_acc']:.3f}/{row['train_adv_acc']:.3f} val nat/pgd20 {f(row['val_nat_acc'])}/"
            f"{f(row['val_pgd_acc'])}{test} dE {row['delta_E']:.3f} dExy {row['delta_Exy']:.3f} "
            f"w {row['weight_mean']:.3f} lr {row['lr']:.4f} {row['seconds']:.0f}s")


MIN_TORCH = (2, 4)  # OneCycleLR's state dict loads with weights_only=True from 2.4 on (pytorch PR 123775)


def main(argv=None) -> None:
    parser = build_parser()
    if tuple(int(v) for v in torch.__version__.split(".")[:2]) < MIN_TORCH:
        parser.error(f"needs torch >= {'.'.join(map(str, MIN_TORCH))}, found {torch.__version__}")
    run_command("train.py", parser, argv, resolve_args, run, (DataError, CheckpointError, TrainingError))


if __name__ == "__main__":
    main()
