"""torchrun with 2 CPU processes (gloo): training, rank-0 writes, and resume."""
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import HANG_TIMEOUT, ROOT, TINY_RUN
from models import load_checkpoint
from test_train import read_log, without_seconds


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(out_dir, *extra):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           os.path.join(ROOT, "train.py"), *TINY_RUN, "--log-every", "1", "--out-dir", str(out_dir), *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_torchrun_two_processes_train_write_once_and_resume_exactly(tmp_path):
    straight = torchrun(tmp_path / "straight")
    output = straight.communicate(timeout=HANG_TIMEOUT)[0]
    assert straight.returncode == 0, output
    assert "cpu x 2" in output and output.count("epoch 2/2") == 1  # rank 0 alone reports
    rows = read_log(tmp_path / "straight")
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["train_loss"] < rows[0]["train_loss"] + 0.5
    assert sorted(os.listdir(tmp_path / "straight")) == ["args.json", "best.pt", "energy-snapshots", "last.pt", "log.jsonl"]
    # the two ranks' halves of the snapshot, summed; every step logged (--log-every 1): its mean is the log's
    with np.load(tmp_path / "straight" / "energy-snapshots" / "epoch-0002.npz") as f:
        assert np.isfinite(f["E_x"]).all() and f["E_x"].mean() == pytest.approx(rows[1]["E_nat"], rel=1e-4)

    cut = torchrun(tmp_path / "cut")  # killed (the whole process group) once epoch 1 is logged
    log = tmp_path / "cut" / "log.jsonl"
    while not (log.exists() and log.read_text().count("\n") >= 1):
        assert cut.poll() is None, cut.communicate()[0]
        time.sleep(0.02)
    os.killpg(cut.pid, signal.SIGKILL)
    cut.wait()
    resumed = torchrun(tmp_path / "cut", "--resume")
    output = resumed.communicate(timeout=HANG_TIMEOUT)[0]
    assert resumed.returncode == 0, output
    a = load_checkpoint(str(tmp_path / "straight" / "last.pt"))["model"]
    b = load_checkpoint(str(tmp_path / "cut" / "last.pt"))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert without_seconds(read_log(tmp_path / "straight")) == without_seconds(read_log(tmp_path / "cut"))
