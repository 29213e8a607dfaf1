"""Speed of the training step, the batch pipeline and APGD, as ratios measured in one process.

    python bench.py --device cpu          # the three ratios on the CPU (a few minutes)
    python bench.py --device cpu --quick  # the same, smaller, in under a minute
    python bench.py --device cuda         # adds epoch throughput for float32 / bf16 / channels-last / compile
    python bench.py --device cpu --results runs/speed-cpu.json   # also write the figures, with their provenance

Each ratio divides a measured time by the cost of the primitives it cannot avoid, timed alike in the
same process, so that machine noise cancels. Times are medians over repeats; per-step and per-iteration
costs are differences between a long and a short run, so that setup cancels too.
"""
import argparse
import statistics
import time

import numpy as np
import torch

import train
from attacks import PGD20_STEP_SIZE, PGD20_STEPS, PIXEL, apgd, eval_mode
from data import Batches, Split, default_train_images
from models import MODEL_NAMES, build_model, provenance, resolve_device, write_json

GOALS = {"step": 1.10, "pipeline": 10.0, "apgd": 1.10}  # our speed goals: step/floor <= 1.10, pipeline >= 10x, APGD <= 1.10


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--quick", action="store_true", help="3 repeats of shorter runs (on the CPU also batch 32): under a minute on a CPU")
    p.add_argument("--width", type=int, default=16, help="ResNet-18 width of the three ratios (on any device; the CUDA "
                                                          "epoch throughput uses the full networks)")
    p.add_argument("--batch-size", type=int, default=128, help="batch of the training step and APGD (--quick on the "
                                                               "CPU: 32)")
    p.add_argument("--repeats", type=int, default=5, help="timing repeats (median; --quick: 3)")
    p.add_argument("--models", default="resnet18,wrn34_10", help="networks of the CUDA epoch throughput")
    p.add_argument("--results", default=None, help="also write the figures to this JSON file, with the command, "
                                                   "commit and machine (the tables of docs/speed.md read it)")
    return p


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fns: dict, device, repeats: int) -> dict:
    """Median seconds of each fn() over repeats, after one warm-up call each; the functions take turns
    within every repeat, so that a slow spell of the machine touches them all alike."""
    times = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def random_split(n: int, size: int = 32, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
                 torch.randint(0, 10, (n,), generator=g))


def training_args(device, batch_size: int, **flags):
    argv = ["--dataset", "synthetic", "--device", str(device), "--batch-size", str(batch_size), "--epochs", "1"]
    for key, value in flags.items():
        argv += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return train.resolve_args(train.build_parser().parse_args(argv))


def epoch_of(model, args, steps: int):
    """A function that runs one train.train_epoch of `steps` steps (the real training step)."""
    batches = Batches(random_split(steps * args.batch_size), args.batch_size, args.device, shuffle=True,
                      augment=True, with_index=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return lambda: train.train_epoch(train.Networks.of(model), batches, optimizer, scheduler, args, 1)


def floor_parts(model, x, steps: int):
    """The primitives of a TRADES step: K x (forward + input-gradient backward) in eval mode, a
    no-grad eval forward (the KL target, which the log reuses), a no-grad eval forward of x* (the log's, on
    one step in train.LOG_EVERY), and in train mode forward + full backward of the natural and adversarial
    batches with the optimizer step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x_adv = (x + 0.01 * torch.randn_like(x)).clamp(0, 1)

    def attack():
        with eval_mode(model):
            for _ in range(steps):
                x_req = x_adv.clone().requires_grad_(True)
                torch.autograd.grad(model(x_req).logsumexp(1).sum(), x_req)

    def target():
        with eval_mode(model), torch.no_grad():
            model(x)

    def log():
        with eval_mode(model), torch.no_grad():
            model(x_adv)

    def outer():
        optimizer.zero_grad(set_to_none=True)
        (model(x).logsumexp(1).mean() + model(x_adv).logsumexp(1).mean()).backward()
        optimizer.step()
    return {"attack": attack, "target": target, "log": log, "outer": outer}


def bench_step(device, width: int, batch_size: int, repeats: int, quick: bool) -> dict:
    """Ratio 1: a TRADES step (K = 10) over its floor, ResNet-18 at `width` (no energy snapshot; the log's
    forward of x* counted as the 1 / LOG_EVERY of it that a step carries on average)."""
    torch.manual_seed(0)
    args, long = training_args(device, batch_size, energy_snapshot=0), 3 if quick else 5
    layout = torch.channels_last if args.channels_last else torch.contiguous_format  # train.py's default layout
    model = build_model("resnet18", 10, width=width).to(device, memory_format=layout)
    x = torch.rand(batch_size, 3, 32, 32, device=device).contiguous(memory_format=layout)
    t = timed({"long": epoch_of(model, args, long), "short": epoch_of(model, args, 1),
               **floor_parts(model, x, args.steps)}, device, repeats)
    step = (t["long"] - t["short"]) / (long - 1)
    parts = {"attack": t["attack"], "target": t["target"], "log": t["log"] / train.LOG_EVERY, "outer": t["outer"]}
    floor = sum(parts.values())
    return {"step_s": step, "floor_s": floor, **{f"floor_{k}_s": v for k, v in parts.items()}, "ratio": step / floor}


class PILDataset(torch.utils.data.Dataset):
    """CIFAR-style images as PIL, through torchvision transforms: the usual DataLoader pipeline."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        import torchvision.transforms as T
        self.images, self.labels = images, labels
        self.transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def bench_pipeline(device, n: int, batch_size: int) -> dict:
    """Ratio 2: images per second of Batches (uint8 on the device, crop + flip as one gather) over
    torchvision's DataLoader with PIL transforms and 2 workers, each delivering batches on `device`."""
    split = random_split(n)
    batches = Batches(split, batch_size, device, shuffle=True, augment=True)

    def ours():
        for x, y in batches:
            pass
        sync(device)

    loader = torch.utils.data.DataLoader(PILDataset(split.images.permute(0, 2, 3, 1).numpy(), split.labels.numpy()),
                                         batch_size=batch_size, shuffle=True, num_workers=2,
                                         pin_memory=torch.device(device).type == "cuda", persistent_workers=True)

    def theirs():
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        sync(device)

    t = timed({"ours": ours, "theirs": theirs}, device, 3)
    ours_s, theirs_s = t["ours"], t["theirs"]
    return {"ours_images_per_s": n / ours_s, "dataloader_images_per_s": n / theirs_s, "ratio": theirs_s / ours_s}


def bench_apgd(device, width: int, batch_size: int, repeats: int, quick: bool) -> dict:
    """Ratio 3: one APGD-CE iteration (difference of 2 long runs) over one forward + input-gradient backward."""
    torch.manual_seed(0)
    model = build_model("resnet18", 10, width=width).to(device).eval()
    x, y = torch.rand(batch_size, 3, 32, 32, device=device), torch.randint(0, 10, (batch_size,), device=device)
    short, long = (5, 15) if quick else (10, 40)

    def primitive():
        x_req = x.clone().requires_grad_(True)
        torch.autograd.grad(torch.nn.functional.cross_entropy(model(x_req), y), x_req)

    t = timed({"long": lambda: apgd(model, x, y, 8 * PIXEL, long), "short": lambda: apgd(model, x, y, 8 * PIXEL, short),
               "primitive": primitive}, device, repeats)
    per_iter = (t["long"] - t["short"]) / (long - short)
    return {"iteration_s": per_iter, "forward_backward_s": t["primitive"], "ratio": per_iter / t["primitive"]}


CUDA_CONFIGS = (("float32", {}), ("bf16", {"amp": "bf16"}), ("bf16 + channels_last", {"amp": "bf16", "channels_last": True}),
                ("bf16 + channels_last + compile", {"amp": "bf16", "channels_last": True, "compile": True}))
CIFAR10_TRAIN = default_train_images("cifar10")  # what train.py trains on by default (49,000)


def bench_cuda_epochs(device, models: tuple, batch_size: int, repeats: int, quick: bool) -> list:
    """Training images per second of each model in each configuration, peak GPU memory, and the
    projected minutes of a 100-epoch CIFAR-10 run (training steps plus the per-epoch PGD-20 validation)."""
    rows = []
    for name in models:
        for label, flags in CUDA_CONFIGS:
            torch.manual_seed(0)
            torch.cuda.reset_peak_memory_stats(device)
            args = training_args(device, batch_size, **flags)
            model = build_model(name, 10).to(device)
            if args.channels_last:
                model = model.to(memory_format=torch.channels_last)
            net = train.compile_model(model, torch.rand(8, 3, 32, 32, device=device)) if args.compile else model
            val = Batches(random_split(1000), 500, device)
            long = 3 if quick else 10
            t = timed({"long": epoch_of(net, args, long), "short": epoch_of(net, args, 1),
                       "validation": lambda: train.evaluate_pgd(net, val, 8 * PIXEL, PGD20_STEP_SIZE, PGD20_STEPS)}, device, repeats)
            step, validation = (t["long"] - t["short"]) / (long - 1), t["validation"]
            rows.append({"model": name, "config": label, "images_per_s": batch_size / step,
                         "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30,
                         "minutes_100_epochs": 100 * (CIFAR10_TRAIN / batch_size * step + validation) / 60})
            print(cuda_row(rows[-1]), flush=True)  # as it comes: a long run may be cut off
    return rows


def cuda_row(row: dict) -> str:
    return (f"4. {row['model']:<10} {row['config']:<32} {row['images_per_s']:>8.0f} img/s  "
            f"{row['peak_gib']:5.1f} GiB  {row['minutes_100_epochs']:6.1f} min / 100 epochs")


def print_table(results: dict) -> None:
    print(f"\n{'measure':<44}{'figure':>12}{'goal':>10}")
    s = results["step"]
    print(f"{'1. TRADES step (K=10) / its floor':<44}{s['ratio']:>12.3f}{'<= ' + str(GOALS['step']):>10}")
    print(f"{'   step, floor (ms)':<44}{1e3 * s['step_s']:>6.0f}, {1e3 * s['floor_s']:.0f}")
    p = results["pipeline"]
    print(f"{'2. Batches / DataLoader+PIL (images/s)':<44}{p['ratio']:>11.1f}x{'>= ' + str(GOALS['pipeline']):>10}")
    print(f"{'   ours, DataLoader (images/s)':<44}{p['ours_images_per_s']:>8.0f}, {p['dataloader_images_per_s']:.0f}")
    a = results["apgd"]
    print(f"{'3. APGD iteration / forward+input grad':<44}{a['ratio']:>12.3f}{'<= ' + str(GOALS['apgd']):>10}")
    print(f"{'   iteration, primitive (ms)':<44}{1e3 * a['iteration_s']:>6.1f}, {1e3 * a['forward_backward_s']:.1f}")
    for row in results.get("cuda", []):
        print(cuda_row(row))


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    train.tqdm = lambda iterable, **_: iterable  # no progress bars inside timed loops
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        parser.error(str(e))
    for key in ("repeats", "batch_size", "width"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1, got {getattr(args, key)}")
    unknown = set(args.models.split(",")) - set(MODEL_NAMES)
    if unknown:
        parser.error(f"--models: unknown {', '.join(sorted(unknown))} (choose from {', '.join(MODEL_NAMES)})")
    repeats = 3 if args.quick else args.repeats
    batch = 32 if args.quick and torch.device(device).type == "cpu" else args.batch_size
    print(f"torch {torch.__version__}, device {device}" + (f" ({torch.cuda.get_device_name(device)})"
                                                            if torch.device(device).type == "cuda" else
                                                            f", {torch.get_num_threads()} threads"), flush=True)
    results = {"step": bench_step(device, args.width, batch, repeats, args.quick),
               "pipeline": bench_pipeline(device, 2000 if args.quick else 10_000, args.batch_size),
               "apgd": bench_apgd(device, args.width, batch, repeats, args.quick)}
    if torch.device(device).type == "cuda":
        results["cuda"] = bench_cuda_epochs(device, args.models.split(","), args.batch_size, repeats, args.quick)
    print_table(results)
    if args.results:
        settings = {"width": args.width, "batch_size": batch, "repeats": repeats, "quick": args.quick}
        write_json(args.results, {"provenance": provenance(device=device), "settings": settings, "goals": GOALS, **results})


if __name__ == "__main__":
    main()
