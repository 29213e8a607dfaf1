"""Models trained elsewhere: --robustbench, offline, with a zoo architecture's weights placed where the
robustbench package looks (model_dir/cifar10/Linf/NAME.pt). The package is a test dependency
(requirements-dev.txt); the repo itself runs without it."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import models
from conftest import HANG_TIMEOUT, ROOT

ZOO_MODEL = "Ding2020MMA"  # the smallest CIFAR-10 Linf architecture of the zoo (WRN-28-4, 5.8M parameters)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """A model_dir holding random weights for ZOO_MODEL, a small test npz and a small training npz."""
    root = tmp_path_factory.mktemp("zoo")
    utils = models.import_robustbench_utils()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    torch.manual_seed(0)
    net = model_dicts[BenchmarkDataset.cifar_10][ThreatModel.Linf][ZOO_MODEL]["model"]()
    os.makedirs(root / "models" / "cifar10" / "Linf")
    torch.save({"state_dict": net.state_dict()}, root / "models" / "cifar10" / "Linf" / f"{ZOO_MODEL}.pt")
    rng = np.random.default_rng(0)
    for name, n in (("test", 16), ("train", 40)):
        np.savez(root / f"{name}.npz", image=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), label=np.arange(n) % 10)
    assert utils is not None
    return root


def cli(script, *args, cwd=ROOT):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], capture_output=True, text=True,
                          timeout=HANG_TIMEOUT, cwd=cwd)


def test_energy_evaluate_and_generate_run_offline_on_a_zoo_model(zoo):
    source = ["--robustbench", ZOO_MODEL, "--model-dir", str(zoo / "models")]
    result = cli("analysis.py", "attacks", *source, "--test-npz", str(zoo / "test.npz"), "--n-examples", "8",
                 "--steps", "2", "--attacks", "pgd-ce,apgd-ce", "--out", str(zoo / "energy"))
    assert result.returncode == 0, result.stderr
    report = json.loads((zoo / "energy" / "energy_attacks.json").read_text())
    assert report["model"] == f"robustbench:cifar10/Linf/{ZOO_MODEL}" and report["n"] == 8
    result = cli("analysis.py", "zoo", ZOO_MODEL, "--model-dir", str(zoo / "models"), "--test-npz", str(zoo / "test.npz"),
                 "--n-examples", "8", "--out", str(zoo / "zoo"))
    assert result.returncode == 0, result.stderr
    zoo_report = json.loads((zoo / "zoo" / "energy_zoo.json").read_text())
    rows = zoo_report["models"]
    assert rows[0]["model"] == ZOO_MODEL and (zoo / "zoo" / "energy_zoo.png").stat().st_size > 5_000
    assert zoo_report["trend"]["dE"]["verdict"].startswith("too few models (1")  # one model: no trend to test
    assert "robust accuracy against |mean dE| over 1 model: too few models" in result.stdout
    result = cli("evaluate.py", *source, "--test-npz", str(zoo / "test.npz"), "--attacks", "apgd-ce", "--n-iter", "2",
                 "--out", str(zoo / "eval.json"))
    assert result.returncode == 0, result.stderr
    evaluation = json.loads((zoo / "eval.json").read_text())
    assert evaluation["n"] == 16 and evaluation["checkpoint"].startswith("robustbench:")
    result = cli("generate.py", *source, "--train-npz", str(zoo / "train.npz"), "--n-per-class", "1", "--steps", "2",
                 "--cache-dir", str(zoo / "cache"), "--out", str(zoo / "samples"))
    assert result.returncode == 0, result.stderr
    assert np.load(zoo / "samples" / "samples.npz")["image"].shape == (10, 32, 32, 3)


def test_a_missing_model_or_package_is_one_line_and_exit_2(zoo, tmp_path):
    result = cli("analysis.py", "attacks", "--robustbench", "Wong2020Fast", "--model-dir", str(tmp_path / "empty"),
                 "--test-npz", str(zoo / "test.npz"), "--out", str(tmp_path / "out"))
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == 2 and len(lines) == 1 and "cannot load RobustBench model Wong2020Fast" in lines[0]
    assert "Wong2020Fast.pt" in lines[0]  # where to put the file offline
    hide = "import sys; sys.modules['robustbench'] = None; sys.modules['pyautoattack'] = None; import evaluate; evaluate.main()"
    result = subprocess.run([sys.executable, "-c", hide, "--robustbench", ZOO_MODEL, "--out", str(tmp_path / "e.json")],
                            capture_output=True, text=True, timeout=HANG_TIMEOUT, cwd=ROOT)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "pip install robustbench" in lines[0]
