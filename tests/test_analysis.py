import argparse
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import attacks as A
import analysis
import energy
from conftest import HANG_TIMEOUT, ROOT
from energy import energy_x, energy_xy
from models import load_model


def cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "analysis.py"), *args], capture_output=True, text=True,
                          timeout=HANG_TIMEOUT)


def test_proposition_1_kl_as_energies():
    """KL(p(.|x) || p(.|x*)) = E_{k ~ p(.|x)}[E(x*, k) - E(x, k)] + E(x) - E(x*)  (the paper's Prop. 1)."""
    torch.manual_seed(0)
    logits, logits_adv = 3 * torch.randn(64, 10, dtype=torch.float64), 3 * torch.randn(64, 10, dtype=torch.float64)
    p = F.softmax(logits, 1)
    kl = (p * (F.log_softmax(logits, 1) - F.log_softmax(logits_adv, 1))).sum(1)
    joint = lambda z: torch.stack([energy_xy(z, torch.full((64,), k)) for k in range(10)], 1)  # E(x, k)
    rhs = (p * (joint(logits_adv) - joint(logits))).sum(1) + energy_x(logits) - energy_x(logits_adv)
    torch.testing.assert_close(kl, rhs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(energy.kl_per_sample(logits, logits_adv), rhs, rtol=1e-12, atol=1e-12)


def test_weight_analysis_shares_and_weights():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0], [0.1, 0.0], [0.0, 0.1]])
    y = torch.tensor([0, 0, 0, 0])
    out = analysis.weight_analysis(logits, y)
    torch.testing.assert_close(out["weight"], energy.weat_weights(logits))
    # points 0, 1 have low energy (confident); 2, 3 high; correct = {0, 2}, wrong = {1, 3}
    assert out["correct"] == {"n": 2, "high_energy": 0.5, "low_energy": 0.5}
    assert out["wrong"] == {"n": 2, "high_energy": 0.5, "low_energy": 0.5}


def test_attacks_mode_end_to_end(smoke_run, tmp_path):
    attacks = "pgd-ce,trades-pgd,apgd-ce,fab,square,cw-l2,pgd-target"
    result = cli("attacks", "--ckpt", str(smoke_run / "best.pt"), "--n-examples", "40", "--steps", "3",
                 "--attacks", attacks, "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "energy_attacks.json").read_text())
    assert list(report["attacks"]) == ["clean"] + attacks.split(",") and report["points"] == "final"
    assert report["attacks"]["cw-l2"]["threat"].startswith("L2, unbounded") and "pgd-ce" in result.stdout
    model, ckpt = load_model(str(smoke_run / "best.pt"))
    model.eval()
    x, y = analysis.load_points(argparse.Namespace(ckpt=str(smoke_run / "best.pt"), robustbench=None, n_examples=40,
                                                 data_dir=None, test_npz=None), "cpu")[1:3]
    with torch.no_grad():
        logits = model(x)
    clean = report["attacks"]["clean"]
    assert clean["E_x"]["mean"] == pytest.approx(energy_x(logits).mean().item(), rel=1e-5)
    assert clean["E_xy"]["median"] == pytest.approx(energy_xy(logits, y).median().item(), rel=1e-5)
    direct = analysis.attack_energies(model, x, y, "pgd-ce", 8 / 255, steps=3, seed=0)
    row = report["attacks"]["pgd-ce"]
    assert row["E_x"]["mean"] == pytest.approx(direct["E_x"].mean().item(), rel=1e-5)
    assert row["frac_E_x_down"] == pytest.approx((direct["E_x"] < energy_x(logits)).double().mean().item())
    assert row["success_rate"] == pytest.approx(direct["success"].double().mean().item())
    assert (tmp_path / "energy_attacks.png").stat().st_size > 10_000


def test_the_paper_points_are_what_its_tools_return(trained_model):
    model, x, y = trained_model
    x, y, eps = x[:60], y[:60], 16 / 255
    torch.manual_seed(0)
    last = A.pgd(model, x, y, eps, 2 / 255, 5, last_iterate=True)
    final, _ = analysis.attack_points(model, x, y, "pgd-ce", eps, steps=5, points="final", seed=0)
    first, _ = analysis.attack_points(model, x, y, "pgd-ce", eps, steps=5, points="first-adversarial", seed=0)
    assert torch.equal(final, last) and not torch.equal(final, first)  # PGD: the last iterate
    for attack in ("apgd-ce", "square", "fab"):  # x itself where the attack failed, a fooling point where not
        x_adv, _ = analysis.attack_points(model, x, y, attack, eps, steps=5, points="final", seed=0)
        fooled = A.predict(model, x_adv) != y
        unchanged = (x_adv == x).flatten(1).all(1)
        assert 0 < fooled.sum() < len(y) and (fooled | unchanged).all()
        assert ((x_adv - x).abs().flatten(1).amax(1) <= eps + 1e-6).all()


def test_attack_seeds_average_the_random_attacks_and_keep_each_seed(trained_model):
    model, x, y = trained_model
    x, y, eps = x[:40], y[:40], 8 / 255
    clean = analysis.point_energies(model, x, y)["E_x"].double()
    table, _ = analysis.attacks_table(model, x, y, eps, ("pgd-ce", "fab"), steps=3, seeds=(0, 1, 2))
    single = {seed: analysis.attack_energies(model, x, y, "pgd-ce", eps, 3, seed=seed)["E_x"].double() for seed in (0, 1, 2)}
    row = table["pgd-ce"]
    assert row["seeds"] == [0, 1, 2] and table["fab"]["seeds"] == [0]  # FAB has no randomness: run once
    assert row["E_x_shift_by_seed"] == pytest.approx([(single[s] - clean).mean().item() for s in (0, 1, 2)])
    assert len(set(row["E_x_shift_by_seed"])) == 3  # the seeds do give different starts
    averaged = torch.stack(list(single.values())).mean(0)
    assert row["E_x_shift"] == analysis.mean_shift(clean, averaged)  # the point-wise seed average, bootstrapped
    assert row["E_x_shift"]["mean"] == pytest.approx(sum(row["E_x_shift_by_seed"]) / 3)
    one, _ = analysis.attacks_table(model, x, y, eps, ("pgd-ce",), steps=3, seeds=(1,))
    assert one["pgd-ce"]["E_x_shift"] == analysis.mean_shift(clean, single[1])  # one seed: the single run


def test_divergence_weights_and_curves_modes_end_to_end(smoke_run, tmp_path):
    result = cli("divergence", "--ckpt", str(smoke_run / "best.pt"), "--n-examples", "30", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "energy_divergence.json").read_text())
    model, ckpt = load_model(str(smoke_run / "best.pt"))
    x, y = analysis.load_points(argparse.Namespace(ckpt=str(smoke_run / "best.pt"), robustbench=None, n_examples=30,
                                                 data_dir=None, test_npz=None), "cpu")[1:3]
    direct = analysis.divergence(model.eval(), x, y, analysis.checkpoint_attack(ckpt), seed=0)
    assert report["attack"] == "trades-kl" and report["steps"] == 2
    assert report["dE"]["mean"] == pytest.approx(direct["dE"].double().mean().item(), rel=1e-6, abs=1e-9)
    assert report["dExy"]["mean"] == pytest.approx(direct["dExy"].double().mean().item(), rel=1e-6, abs=1e-9)
    assert len(report["per_point"]["dExy"]) == 30
    assert (tmp_path / "energy_divergence.png").stat().st_size > 5_000
    result = cli("weights", "--ckpt", str(smoke_run / "best.pt"), "--n-examples", "60", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    weights = json.loads((tmp_path / "energy_weights.json").read_text())
    assert weights["train"]["correct"]["n"] + weights["train"]["wrong"]["n"] == 60 and "test" in weights
    assert (tmp_path / "energy_weights.png").stat().st_size > 5_000
    result = cli("curves", "--log", str(smoke_run / "log.jsonl"), "--epochs", "1,2", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    curves = json.loads((tmp_path / "energy_curves.json").read_text())
    (label, rows), = curves.items()
    with open(smoke_run / "log.jsonl") as f:
        log = [json.loads(line) for line in f]
    assert label.startswith("weat-adv") and [r["delta_Exy"] for r in rows] == [r["delta_Exy"] for r in log]
    assert (tmp_path / "energy_curves.png").stat().st_size > 10_000
    assert (tmp_path / "energy_snapshots.png").stat().st_size > 10_000


def test_bad_input_is_a_one_line_error(tmp_path):
    result = cli("attacks", "--ckpt", str(tmp_path / "missing.pt"), "--out", str(tmp_path))
    assert result.returncode == 2 and "checkpoint not found" in result.stderr
    (tmp_path / "empty.jsonl").write_text("")
    result = cli("curves", "--log", str(tmp_path / "empty.jsonl"), "--out", str(tmp_path))
    assert result.returncode == 2 and "holds no epochs" in result.stderr
    result = cli("attacks", "--ckpt", str(tmp_path / "missing.pt"), "--attacks", "pgd-ce,nope", "--out", str(tmp_path))
    assert result.returncode == 2 and "unknown nope" in result.stderr
    result = cli("attacks", "--ckpt", str(tmp_path / "missing.pt"), "--attack-seeds", "0", "--out", str(tmp_path))
    assert result.returncode == 2 and "--attack-seeds must be positive" in result.stderr


def test_mean_shift_interval_known_answers():
    clean = torch.randn(400, generator=torch.Generator().manual_seed(0))
    constant = analysis.mean_shift(clean, clean + 0.25)  # every point moved by 0.25: no spread to resample
    assert constant["mean"] == pytest.approx(0.25) and constant["lo"] == pytest.approx(0.25) and constant["hi"] == pytest.approx(0.25)
    noise = torch.randn(400, generator=torch.Generator().manual_seed(1))
    shift = analysis.mean_shift(clean, clean + 0.1 + noise)
    # the bootstrap interval of a mean of 400 unit-variance differences: about +-1.96 / sqrt(400) = +-0.098
    assert shift["lo"] < shift["mean"] < shift["hi"] and 0.16 < shift["hi"] - shift["lo"] < 0.24
    assert shift["mean"] == pytest.approx((0.1 + noise).mean().item())
    assert analysis.mean_shift(clean, clean + 0.1 + noise) == shift  # a fixed seed: the same interval
