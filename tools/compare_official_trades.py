"""Developer check: one TRADES epoch with `train.py` against the official TRADES code, as whole processes.

    git clone https://github.com/yaodongyu/TRADES /tmp/TRADES
    python tools/compare_official_trades.py --trades-repo /tmp/TRADES --dataset cifar10 \\
        --results runs/speed-vs-official-trades.json

The same work on both sides: one epoch (K = 10, eps 8/255, step 2/255, beta 6, batch 128, SGD lr 0.1) of a
width-16 ResNet-18 from `models.py` over the first 2,048 training images left after the 128 held out,
then PGD-20 on those 128. The official side is that repository's `trades_loss` (its loss and its KL
attack, imported from the given checkout, not copied) in the shape of its `train()` loop, with
torchvision's transforms and DataLoader (random crop + flip, as its script); its evaluation follows its
`_pgd_whitebox`. Our side is `python train.py` with the matching flags (its energy snapshot and log
included). The two take turns, `--rounds` times; the file keeps every round's seconds. The committed
results came from the developers' JPEG-derived CIFAR-10 copy (--train-npz and --test-npz).
"""
import argparse
import os
import subprocess
import sys
import time

from common import checkout_commit, data_files, parse_tool_args, tool_parser  # first: it puts the repo on sys.path
from models import provenance, sha256_of, write_json

GOAL = 0.75  # our whole-process time over the official one
TRAIN_IMAGES, VAL_IMAGES, WIDTH, BATCH, STEPS = 2048, 128, 16, 128, 10


def official_epoch(trades_repo: str, args) -> None:
    """The official machinery's epoch and PGD-20 evaluation (run in its own process)."""
    import torch
    import torch.nn.functional as F
    from torchvision import transforms
    from PIL import Image
    from data import load_data
    from models import build_model
    sys.path.insert(0, trades_repo)
    torch.Tensor.cuda = lambda self, *a, **k: self  # the official code calls .cuda(); this run is on the CPU
    from trades import trades_loss

    class Images(torch.utils.data.Dataset):
        def __init__(self, split, transform):
            self.x, self.y, self.transform = split.images.permute(0, 2, 3, 1).numpy(), split.labels, transform

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return self.transform(Image.fromarray(self.x[i])), int(self.y[i])

    torch.manual_seed(0)
    data = load_data(args.dataset or "npz", args.data_dir, args.train_npz, args.test_npz, None, VAL_IMAGES, TRAIN_IMAGES, 0)
    augment = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor()])
    loader = torch.utils.data.DataLoader(Images(data.train, augment), batch_size=BATCH, shuffle=True)
    val = torch.utils.data.DataLoader(Images(data.val, transforms.ToTensor()), batch_size=BATCH)
    model = build_model("resnet18", 10, width=WIDTH)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    eps, step = 8 / 255, 2 / 255
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        loss = trades_loss(model=model, x_natural=x, y=y, optimizer=optimizer, step_size=step, epsilon=eps,
                           perturb_steps=STEPS, beta=6.0)
        loss.backward()
        optimizer.step()
    model.eval()
    robust = 0
    for x, y in val:  # PGD-20 as its _pgd_whitebox: uniform start, step 2/255, a full backward per step
        x_adv = x + torch.empty_like(x).uniform_(-eps, eps)
        for _ in range(20):
            x_adv.requires_grad_(True)
            F.cross_entropy(model(x_adv), y).backward()
            x_adv = torch.min(torch.max(x_adv.detach() + step * x_adv.grad.sign(), x - eps), x + eps).clamp(0, 1)
        with torch.no_grad():
            robust += (model(x_adv).argmax(1) == y).sum().item()
    print(f"official: validation PGD-20 {robust / len(data.val):.3f}")


def data_words(args) -> list:
    """The data flags as command-line words (train.py takes them too, after `--dataset npz` for npz files)."""
    if args.train_npz:
        return ["--train-npz", args.train_npz, "--test-npz", args.test_npz]
    return ["--dataset", args.dataset, "--data-dir", args.data_dir]


def timed(cmd: list, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def build_parser() -> argparse.ArgumentParser:
    """The command line of this tool."""
    p = tool_parser(splits=("train", "test"), models=False, description=__doc__)
    p.add_argument("--trades-repo", required=True, help="a checkout of github.com/yaodongyu/TRADES")
    p.add_argument("--rounds", type=int, default=3, help="turns of official, then ours")
    p.add_argument("--results", default=None, help="write the seconds of every round here, with provenance")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p


def official_source(trades_repo: str) -> dict:
    """Which official code ran: its folder, the git commit of the checkout it is the top of (None where it is
    not one: a folder inside another repository would give that repository's commit) and trades.py's sha256."""
    return {"path": os.path.abspath(trades_repo), "git_commit": checkout_commit(trades_repo),
            "sha256_of_trades_py": sha256_of(os.path.join(trades_repo, "trades.py"))}


def main(argv=None) -> None:
    args = parse_tool_args(build_parser(), argv)
    if args.worker:
        return official_epoch(args.trades_repo, args)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    official = [sys.executable, os.path.abspath(__file__), "--worker", "--trades-repo", args.trades_repo, *data_words(args)]
    ours = [sys.executable, os.path.join(root, "train.py"), *(["--dataset", "npz"] if args.train_npz else []), *data_words(args),
            "--train-subset", str(TRAIN_IMAGES), "--val-size", str(VAL_IMAGES),
            "--eval-examples", str(VAL_IMAGES), "--width", str(WIDTH), "--batch-size", str(BATCH), "--steps", str(STEPS),
            "--epochs", "1", "--device", "cpu", "--out-dir", os.path.join(args.out, "official-trades-comparison"),
            "--overwrite"]
    rounds = []
    for i in range(1, args.rounds + 1):
        rounds.append({"round": i, "official_s": timed(official, os.environ), "ours_s": timed(ours, os.environ)})
        print(f"round {i}: official {rounds[-1]['official_s']:.1f} s, ours {rounds[-1]['ours_s']:.1f} s "
              f"({rounds[-1]['ours_s'] / rounds[-1]['official_s']:.3f})", flush=True)
    if args.results:
        settings = {"train_images": TRAIN_IMAGES, "val_images": VAL_IMAGES, "width": WIDTH, "batch_size": BATCH, "steps": STEPS}
        write_json(args.results, {"provenance": provenance(data_files(args, True) + data_files(args, False)), "settings": settings,
                                  "official_source": official_source(args.trades_repo), "goal": GOAL, "rounds": rounds})


if __name__ == "__main__":
    main()
