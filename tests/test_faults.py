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
from conftest import ROOT, TINY_RUN, tiny_train_args
from models import load_checkpoint
from test_train import read_log, without_seconds

THREE_EPOCHS = TINY_RUN + ["--epochs", "3"]


def killed_run(out_dir, point, epoch, *extra):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tests", "kill_at.py"), point, str(epoch),
                           *THREE_EPOCHS, "--out-dir", str(out_dir), *extra], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


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
                           "--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(os.listdir(out)) == ["args.json", "best.pt", "last.pt", "log.jsonl"]  # temporary file removed
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
        reports.append({k: v for k, v in report.items() if k not in ("time", "seconds", "checkpoint", "report_file",
                                                                      "mask_file", "checkpoint_sha256")})
    assert without_seconds(read_log(tmp_path / "a")) == without_seconds(read_log(tmp_path / "b"))
    a, b = (load_checkpoint(str(tmp_path / run / "last.pt"))["model"] for run in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the files differ only in their folder names and clocks
    strip = lambda r: {k: ({kk: vv for kk, vv in v.items() if kk != "seconds"} if isinstance(v, dict) else v)  # noqa: E731
                       for k, v in r.items()}
    assert strip(reports[0]) == strip(reports[1])
