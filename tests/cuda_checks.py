"""Checks of the CUDA path, run by bench_cuda.sh on a GPU machine:

    python -m pytest -q tests/cuda_checks.py

Not collected by the CPU suite (the file name does not start with test_); every check needs a GPU.
"""
import torch

import train
from attacks import apgd, autoattack, pgd
from conftest import tiny_train_args
from data import Batches, synthetic_split
from models import build_model, load_model

CUDA = torch.device("cuda")


def test_a_gpu_is_there():
    assert torch.cuda.is_available(), "these checks need CUDA"


def test_batches_on_the_gpu_equal_those_on_the_cpu():
    split = synthetic_split(300, seed=1)
    cpu, gpu = (Batches(split, 64, d, shuffle=True, augment=True, seed=2) for d in ("cpu", "cuda"))
    for (xc, yc), (xg, yg) in zip(cpu, gpu):
        assert xg.is_cuda and torch.equal(xc, xg.cpu()) and torch.equal(yc, yg.cpu())
    host = Batches(split, 64, "cuda", shuffle=True, augment=True, seed=2, resident=False)  # pinned host copy
    assert host.images.is_pinned()
    for (xc, _), (xh, _) in zip(cpu, host):
        assert torch.equal(xc, xh.cpu())


def test_training_on_the_gpu_in_each_precision(tmp_path):
    for flags in (["--amp", "none"], ["--amp", "bf16", "--channels-last"], ["--amp", "fp16"]):
        out = tmp_path / flags[1]
        rows = train.run(tiny_train_args(out, "--device", "cuda", "--weat", "adv", "--epochs", "2", *flags))
        assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in rows), flags
        model, ckpt = load_model(str(out / "last.pt"), "cuda")
        assert next(model.parameters()).is_cuda and ckpt["args"]["amp"] == flags[1]


def test_compiled_training_runs(tmp_path):
    rows = train.run(tiny_train_args(tmp_path, "--device", "cuda", "--amp", "bf16", "--compile", "--epochs", "1"))
    assert rows[0]["train_loss"] > 0 and not any(k.startswith("_orig_mod") for k in
                                                  torch.load(tmp_path / "last.pt", weights_only=True)["model"])


def test_attacks_on_the_gpu_stay_in_the_ball_and_agree_with_the_cpu():
    torch.manual_seed(0)
    model = build_model("resnet18", 10, width=8).eval()
    split = synthetic_split(64, seed=3)
    x, y = split.images.float() / 255, split.labels
    eps = 8 / 255
    for device in ("cpu", "cuda"):
        m, xd, yd = model.to(device), x.to(device), y.to(device)
        x_adv = pgd(m, xd, yd, eps, eps / 4, 10)
        assert (x_adv - xd).abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    robust = {}
    for device in ("cpu", "cuda"):
        m = model.to(device)
        _, robust[device] = autoattack(m, x.to(device), y.to(device), eps, ("apgd-ce", "apgd-t"), n_iter=10)
        assert (apgd(m, x.to(device), y.to(device), eps, 10) - x.to(device)).abs().max() <= eps + 1e-6
    # float32 on both; kernels differ, so a point or two may flip
    assert (robust["cpu"] != robust["cuda"].cpu()).sum() <= 3
