"""Faults: SIGKILL at three points and resume, injected non-finite gradients, determinism, and one
table of bad inputs for every command."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import train
from conftest import HANG_TIMEOUT, ROOT, TINY_RUN, tiny_train_args
from models import load_checkpoint
from test_train import read_log, without_seconds

THREE_EPOCHS = TINY_RUN + ["--epochs", "3"]


def killed_run(out_dir, point, epoch, *extra):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tests", "kill_at.py"), point, str(epoch),
                           *THREE_EPOCHS, "--out-dir", str(out_dir), *extra], capture_output=True, text=True,
                          timeout=HANG_TIMEOUT)  # same thread count as the straight run: CPU sums depend on it


def test_sigkill_mid_epoch_in_evaluation_and_in_a_checkpoint_write_then_resume_equals_a_straight_run(tmp_path):
    train.run(tiny_train_args(tmp_path / "straight", "--epochs", "3"))
    out = tmp_path / "killed"
    for point, epoch, extra in [("mid-epoch", 2, []), ("evaluation", 2, ["--resume"]),
                                ("checkpoint-write", 3, ["--resume"])]:
        result = killed_run(out, point, epoch, *extra)
        assert result.returncode == -signal.SIGKILL, (point, result.stderr[-2000:])
        assert load_checkpoint(str(out / "last.pt"))["epoch"] == epoch - 1, point  # never half written
        assert [r["epoch"] for r in read_log(out)] == list(range(1, epoch)), point
    assert any(name.startswith(".tmp-") for name in os.listdir(out))  # the killed write's temporary file
    done = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *THREE_EPOCHS, "--out-dir", str(out),
                           "--resume"], capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(os.listdir(out)) == ["args.json", "best.pt", "energy-snapshots", "last.pt", "log.jsonl"]  # no temporary file
    a, b = (load_checkpoint(str(d / "last.pt"))["model"] for d in (tmp_path / "straight", out))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert without_seconds(read_log(tmp_path / "straight")) == without_seconds(read_log(out))  # no epoch twice or lost


def test_a_non_finite_gradient_stops_training_naming_epoch_and_step(tmp_path, monkeypatch):
    real_loss, calls = train.training_loss, {"n": 0}

    def nan_gradient_at_call_7(*args, **kwargs):
        calls["n"] += 1
        loss, *rest = real_loss(*args, **kwargs)
        if calls["n"] == 7:  # 5 steps per epoch: epoch 2, step 1; the loss stays finite, its gradient does not
            loss = loss + 0 * torch.sqrt(-torch.ones(()) + 0 * loss)
        return (loss, *rest)

    monkeypatch.setattr(train, "training_loss", nan_gradient_at_call_7)
    with pytest.raises(train.TrainingError, match="non-finite loss or gradient at epoch 2, step 1"):
        train.run(tiny_train_args(tmp_path))
    assert load_checkpoint(str(tmp_path / "last.pt"))["epoch"] == 1


def test_same_seed_gives_identical_logs_and_evaluation_reports(tmp_path):
    import evaluate
    reports = []
    for run in ("a", "b"):
        train.run(tiny_train_args(tmp_path / run, "--weat", "adv"))
        evaluate.main(["--ckpt", str(tmp_path / run / "last.pt"), "--n-examples", "40", "--n-iter", "5",
                       "--n-queries", "10", "--device", "cpu", "--out", str(tmp_path / run / "eval.json")])
        report = json.loads((tmp_path / run / "eval.json").read_text())
        report["settings"].pop("checkpoint_sha256")  # the files differ in the folder names they record
        reports.append({k: v for k, v in report.items() if k not in ("time", "seconds", "checkpoint", "report_file",
                                                                      "mask_file", "checkpoint_sha256")})
    assert without_seconds(read_log(tmp_path / "a")) == without_seconds(read_log(tmp_path / "b"))
    a, b = (load_checkpoint(str(tmp_path / run / "last.pt"))["model"] for run in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the files differ only in their folder names and clocks
    strip = lambda r: {k: ({kk: vv for kk, vv in v.items() if kk != "seconds"} if isinstance(v, dict) else v)  # noqa: E731
                       for k, v in r.items()}
    assert strip(reports[0]) == strip(reports[1])


# ---------------------------------------------------------------------------------------------------
# Bad input: every row is a command that must stop with a one-line error, exit 2 and write nothing


def npz(folder, name, image=None, label=None, drop=None, n=20):
    """A small CIFAR-shaped npz in `folder`, with one field replaced or dropped."""
    rng = np.random.default_rng(0)
    arrays = {"image": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), "label": np.arange(n) % 10}
    arrays.update({k: v for k, v in (("image", image), ("label", label)) if v is not None})
    arrays.pop(drop, None)
    np.savez(folder / name, **arrays)
    return str(folder / name)


def checkpoint_variants(folder, good):
    """Broken copies of a good checkpoint: empty, truncated, corrupted, and one whose weights do not fit
    the architecture it names."""
    raw = open(good, "rb").read()
    (folder / "empty.pt").write_bytes(b"")
    (folder / "truncated.pt").write_bytes(raw[:len(raw) // 2])
    (folder / "corrupted.pt").write_bytes(raw[:-200] + bytes(200))  # the zip directory zeroed
    ckpt = torch.load(good, weights_only=True)
    ckpt["model_config"]["width"] = 8  # a width-4 network's weights
    torch.save(ckpt, folder / "wrong-arch.pt")


def bad_inputs(d, good_ckpt):
    """(command, argv, message) rows; `d` is a folder the rows may point into."""
    run = lambda *flags: ("train", TINY_RUN + ["--out-dir", str(d / "new-run"), *flags])  # noqa: E731
    as_npz = lambda path: ["--dataset", "npz", "--train-npz", path, "--test-npz", path]  # noqa: E731
    evaluate = lambda ckpt, *flags: ("evaluate", ["--ckpt", ckpt, "--n-examples", "8", "--device", "cpu", *flags])  # noqa: E731
    return [
        (*run("--dataset", "imagenet"), "invalid choice: 'imagenet'"),
        (*run("--model", "vgg16"), "invalid choice: 'vgg16'"),
        (*run(*as_npz(npz(d, "nokey.npz", drop="label"))), "lacks key(s) ['label']"),
        (*run(*as_npz(npz(d, "float.npz", image=np.zeros((20, 32, 32, 3), np.float32)))), "'image' must be uint8"),
        (*run(*as_npz(npz(d, "gray.npz", image=np.zeros((20, 32, 32), np.uint8)))), "'image' must be uint8 (N, H, W, 3)"),
        (*run(*as_npz(npz(d, "labels.npz", label=np.arange(20) - 1))), "labels must lie in [0,"),
        (*run(*as_npz(npz(d, "zero.npz", n=0))), "holds zero images"),
        (*run("--eps", "-8"), "--eps must be positive"),
        (*run("--eps", "0"), "--eps must be positive"),
        (*run("--steps", "0"), "--steps must be at least 1"),
        (*run("--batch-size", "0"), "--batch-size must be at least 1"),
        ("train", TINY_RUN + ["--out-dir", str(d / "old-run")], "holds another run"),
        ("train", TINY_RUN + ["--out-dir", str(d / "old-run"), "--resume", "--model", "wrn34_10"],
         "different settings than the run"),
        (*evaluate(str(d / "missing.pt")), "checkpoint not found"),
        (*evaluate(str(d / "empty.pt")), "cannot load checkpoint"),
        (*evaluate(str(d / "truncated.pt")), "cannot load checkpoint"),
        (*evaluate(str(d / "corrupted.pt")), "cannot load checkpoint"),
        (*evaluate(str(d / "wrong-arch.pt")), "weights do not fit model"),
        (*evaluate(good_ckpt, "--test-npz", npz(d, "c20.npz", label=np.arange(20))), "model has 10 classes"),
        (*evaluate(good_ckpt, "--eps", "0"), "--eps must be positive"),
        (*evaluate(good_ckpt, "--batch-size", "0"), "--batch-size must be positive"),
        ("generate", ["--ckpt", str(d / "truncated.pt"), "--out", str(d / "samples")], "cannot load checkpoint"),
        ("generate", ["--ckpt", good_ckpt, "--steps", "0", "--out", str(d / "samples")], "--steps must be at least 1"),
        ("analysis", ["attacks", "--ckpt", str(d / "corrupted.pt"), "--out", str(d / "energy")], "cannot load checkpoint"),
        ("metrics", [npz(d, "samples.npz"), "--inception-weights", str(d / "other-inception.pth")],
         "not the standard FID Inception weights"),
        (*run("--val-size", "0", "--select", "best"), "--select best needs a validation split"),
        (*run("--lr-schedule", "cosine"), "invalid choice: 'cosine'"),
        (*run("--test-every", "-1"), "--test-every must not be negative"),
        ("evaluate", ["--ckpt", good_ckpt, good_ckpt, "--out", str(d / "one.json")], "--out names the report of one model"),
        ("analysis", ["attacks", "--ckpt", good_ckpt, "--attacks", "pgd-ce,fgsm", "--out", str(d / "energy")],
         "unknown fgsm"),
        ("analysis", ["attacks", "--ckpt", good_ckpt, "--points", "best", "--out", str(d / "energy")], "invalid choice: 'best'"),
        ("analysis", ["curves", "--log", str(d / "old-run" / "args.json"), "--epochs", "3", "--out", str(d / "energy")],
         "is not a train.py log.jsonl"),
        ("generate", ["--ckpt", good_ckpt, "--sweep-pca", "0.01", "--sweep-variance", "1.5", "--out", str(d / "samples")],
         "--sweep-variance) must lie in [0, 1]"),
        ("generate", ["--ckpt", good_ckpt, "--compare-inits", "--compare-samplers", "--out", str(d / "samples")],
         "go one at a time"),
    ]


def snapshot(folder):
    return {os.path.relpath(os.path.join(root, name), folder): (os.path.getsize(os.path.join(root, name)),
                                                                os.stat(os.path.join(root, name)).st_mtime_ns)
            for root, _, names in os.walk(folder) for name in names}


def test_every_bad_input_gets_a_one_line_error_exit_2_and_writes_nothing(tmp_path, smoke_run, capsys):
    import analysis
    import evaluate
    import generate
    import metrics
    mains = {"train": train.main, "evaluate": evaluate.main, "generate": generate.main, "analysis": analysis.main,
             "metrics": metrics.main}
    good = str(tmp_path / "good.pt")
    with open(smoke_run / "best.pt", "rb") as src, open(good, "wb") as dst:
        dst.write(src.read())
    checkpoint_variants(tmp_path, good)
    torch.save(metrics.FIDInceptionV3(weights=None).state_dict(), tmp_path / "other-inception.pth")
    (tmp_path / "old-run").mkdir()
    with open(tmp_path / "old-run" / "args.json", "w") as f:
        json.dump(vars(tiny_train_args(tmp_path / "old-run")), f)
    open(tmp_path / "old-run" / "last.pt", "wb").write(open(good, "rb").read())
    rows = bad_inputs(tmp_path, good)
    before = snapshot(tmp_path)
    for command, argv, message in rows:
        with pytest.raises(SystemExit) as stop:
            mains[command](argv)
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("usage:", " "))]  # argparse's usage
        assert stop.value.code == 2, (command, argv, err)
        assert len(lines) == 1 and "error:" in lines[0] and message in lines[0], (command, argv, err)
    assert snapshot(tmp_path) == before  # nothing written, nothing overwritten
