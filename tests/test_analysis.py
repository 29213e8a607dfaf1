import argparse
import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats
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


# --- the command line: defaults, help texts and bad input ------------------------------------------------------


def main_error(capsys, *argv) -> tuple:
    """(exit code, the lines of stderr other than argparse's usage) of analysis.main(argv)."""
    with pytest.raises(SystemExit) as stop:
        analysis.main(list(argv))
    err = capsys.readouterr().err
    return stop.value.code, [line for line in err.splitlines() if line.strip() and not line.startswith(("usage:", " "))]


def checked(*argv) -> argparse.Namespace:
    args = analysis.build_parser().parse_args(list(argv))
    analysis.check_args(args)
    return args


def modes() -> dict:
    parser = analysis.build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_out_defaults_to_a_folder_per_robustbench_model_and_one_for_zoo(tmp_path):
    for mode in ("attacks", "divergence", "weights"):  # checked only: nothing is loaded or downloaded
        assert checked(mode, "--robustbench", "Wong2020Fast").out == os.path.join("runs", "energy", "Wong2020Fast")
    assert checked("attacks", "--robustbench", "Standard").out == os.path.join("runs", "energy", "Standard")
    assert checked("zoo", "Wong2020Fast", "Standard").out == os.path.join("runs", "energy", "zoo")
    assert checked("attacks", "--ckpt", str(tmp_path / "run" / "best.pt")).out == str(tmp_path / "run")
    assert checked("attacks", "--robustbench", "Standard", "--out", str(tmp_path)).out == str(tmp_path)
    help_of = {name: " ".join(parser.format_help().split()) for name, parser in modes().items()}
    assert "with --robustbench NAME: runs/energy/NAME" in help_of["attacks"]
    assert "output folder (default: runs/energy/zoo)" in help_of["zoo"]
    assert "with --robustbench, data" in help_of["divergence"] and "read from (default: data)" in help_of["zoo"]


def test_no_help_text_shows_two_defaults_or_points_at_the_code():
    for name, parser in modes().items():
        formatter = parser._get_formatter()
        for action in parser._actions:
            text = formatter._expand_help(action) if action.help else ""
            assert text.count("(default") <= 1, (name, text)
            assert "(see " not in text and "analysis.POINTS" not in text and "attacks_table" not in text, (name, text)


def test_every_mode_describes_itself_and_the_main_help_shows_the_examples(monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")  # no wrapping (it breaks lines at hyphens)
    for name, parser in modes().items():
        assert parser.description == analysis.DESCRIPTIONS[name]
        assert " ".join(parser.description.split()) in " ".join(parser.format_help().split())
    examples = [line for line in analysis.__doc__.splitlines() if "python analysis.py" in line]
    assert len(examples) == 5 and all(line in analysis.build_parser().format_help() for line in examples)


def test_attack_names_may_have_spaces_and_each_is_explained(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")  # no wrapping (it breaks lines at hyphens)
    assert checked("attacks", "--ckpt", "a.pt", "--attacks", "pgd-ce, fab , cw-target,fab").attacks == ["pgd-ce", "fab", "cw-target"]
    code, lines = main_error(capsys, "attacks", "--ckpt", "a.pt", "--attacks", "pgd-ce, nope", "--out", str(tmp_path / "o"))
    assert code == 2 and len(lines) == 1 and "--attacks: unknown nope;" in lines[0]
    code, lines = main_error(capsys, "attacks", "--ckpt", "a.pt", "--attacks", " , ", "--out", str(tmp_path / "o"))
    assert code == 2 and len(lines) == 1 and "--attacks: no attack named;" in lines[0]
    assert set(analysis.ATTACK_TEXT) == set(analysis.POINTS)
    text = " ".join(modes()["attacks"].format_help().split())
    for name, meaning in analysis.ATTACK_TEXT.items():
        assert f"{name}: {meaning}" in text
    assert "cw-target: PGD on the Carlini-Wagner margin loss towards a random other class" in text
    weights_n = next(a for a in modes()["weights"]._actions if a.dest == "n_examples").help
    attacks_n = next(a for a in modes()["attacks"]._actions if a.dest == "n_examples").help
    assert "training points" in weights_n and "test points" in weights_n and "training" not in attacks_n
    assert not (tmp_path / "o").exists()


def test_curves_epochs_are_checked_before_anything_is_written(capsys, tmp_path):
    log = tmp_path / "run" / "log.jsonl"
    log.parent.mkdir()
    log.write_text(json.dumps({"epoch": 1, "lr": 0.1, "delta_E": 0.5}) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "energy_curves.json").write_text("earlier results")
    for bad in ("1-5", "0", "1,,2", "", "x"):
        code, lines = main_error(capsys, "curves", "--log", str(log), "--epochs", bad, "--out", str(out))
        assert code == 2 and len(lines) == 1 and "error: --epochs: expected comma-separated epoch numbers" in lines[0]
    code, lines = main_error(capsys, "curves", "--log", str(log), "--epochs", "1", "--out", str(out))  # no snapshot
    assert code == 2 and len(lines) == 1 and "no energy snapshot of epoch 1" in lines[0]
    assert os.listdir(out) == ["energy_curves.json"] and (out / "energy_curves.json").read_text() == "earlier results"
    assert analysis.parse_epochs("1, 50,100") == [1, 50, 100]


def test_divergence_of_a_natural_checkpoint_uses_the_trades_attack(smoke_run, tmp_path):
    from models import load_checkpoint
    natural = {"loss": "natural", "weat": "none", "eps": 8, "steps": 3, "step_size": 2}
    assert analysis.checkpoint_attack({"args": natural}) == analysis.NO_TRAINING_ATTACK
    assert analysis.checkpoint_attack({"args": {"dataset": "cifar10"}}) == analysis.NO_TRAINING_ATTACK  # RobustBench
    assert analysis.checkpoint_attack({"args": natural | {"loss": "sat"}})[:3] == ("pgd-ce", 8 / 255, 3)
    ckpt = load_checkpoint(str(smoke_run / "best.pt"))
    ckpt["args"] = ckpt["args"] | {"loss": "natural", "weat": "none"}
    torch.save(ckpt, tmp_path / "natural.pt")
    analysis.main(["divergence", "--ckpt", str(tmp_path / "natural.pt"), "--n-examples", "8", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "energy_divergence.json").read_text())
    assert (report["attack"], report["eps"], report["steps"]) == ("trades-kl", 8 / 255, analysis.ANALYSIS_STEPS)
    assert any(d != 0 for d in report["per_point"]["dE"])  # x* = x would make every gap 0


def test_the_noise_baseline_moves_every_pixel_by_eps_reads_no_model_and_is_no_attack(trained_model):
    """Random eps noise: each pixel at +eps or -eps (clipped to [0, 1]), the same for a seed, another for
    another seed, the model never called; its row is of kind "baseline", counted with neither kind of attack."""
    model, x, y = trained_model
    x, y, eps = x[:30], y[:30], 8 / 255
    calls = []
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    noisy = analysis.random_corners(x, eps, seed=0)
    hook.remove()
    moved = (noisy - x).abs()
    inside = (x >= eps) & (x <= 1 - eps)  # no clipping there
    assert not calls and torch.allclose(moved[inside], torch.full_like(moved[inside], eps)) and inside.any()
    assert noisy.min() >= 0 and noisy.max() <= 1 and (moved <= eps + 1e-7).all()
    assert torch.equal(noisy, analysis.random_corners(x, eps, seed=0))
    assert not torch.equal(noisy, analysis.random_corners(x, eps, seed=1))
    up = ((noisy - x) > 0)[inside].double().mean().item()
    assert 0.45 < up < 0.55  # either sign, as often
    x_adv, target = analysis.attack_points(model, x, y, "noise", eps, seed=0)
    assert torch.equal(x_adv, noisy) and target is None
    table, _ = analysis.attacks_table(model, x, y, eps, ("noise", "pgd-ce"), steps=2)
    assert table["noise"]["kind"] == "baseline" and table["pgd-ce"]["kind"] == "untargeted"
    assert "noise" in analysis.BASELINES and "noise" not in analysis.UNTARGETED + analysis.TARGETED


def test_the_zoo_trend_is_an_exact_rank_test_over_the_models():
    """Claim 4 over the models: the more robust, the smaller |mean dE| (rho < 0). Five models in perfect order
    give rho -1 and the exact two-sided p 2 / 5! (one ordering each way); four can never reach 0.05 (their
    best p is 2 / 4!); ties take average ranks; constant input gives no verdict; nine models are drawn."""
    rows = lambda sizes: [{"robust_accuracy": 0.1 * i, "dE": {"mean": s}} for i, s in enumerate(sizes)]  # noqa: E731
    t = analysis.zoo_trend(rows([-0.5, 0.4, -0.3, 0.2, -0.1]))  # |dE| falls as accuracy rises; signs do not count
    assert t["rho"] == pytest.approx(-1.0) and t["p"] == pytest.approx(2 / 120) and t["verdict"] == "holds"
    assert analysis.zoo_trend(rows([0.1, 0.2, 0.3, 0.4, 0.5]))["verdict"] == "reversed"
    assert analysis.zoo_trend(rows([0.3, 0.1, 0.5, 0.2, 0.4]))["verdict"] == "not shown"
    assert analysis.zoo_trend(rows([0.4, 0.3, 0.2, 0.1]))["verdict"].startswith("too few models (4")
    four = [scipy.stats.spearmanr(range(4), order).statistic for order in itertools.permutations(range(4))]
    best = np.mean(np.abs(four) >= 1 - 1e-12)  # the most extreme ordering's p: why 4 models can never show it
    assert best == pytest.approx(2 / 24) and best > 0.05
    tied = analysis.zoo_trend(rows([0.5, 0.5, 0.3, 0.2, 0.1]))  # a tie at the top: average ranks, as spearmanr
    assert tied["rho"] == pytest.approx(scipy.stats.spearmanr(range(5), [5, 5, 3, 2, 1]).statistic)
    assert tied["p"] == pytest.approx(4 / 120) and tied["verdict"] == "holds"
    assert analysis.zoo_trend(rows([0.3] * 5))["verdict"].startswith("not shown (every model")  # no NaN, no verdict
    nine = analysis.zoo_trend(rows([0.9 - 0.1 * i for i in range(9)]))  # beyond 8 models: random orderings
    assert nine["method"] == "100,000 random orderings" and nine["p"] == pytest.approx(1 / 100_001, abs=2e-5)
    assert nine["verdict"] == "holds" and nine["rho"] == pytest.approx(-1.0)


def test_the_zoo_trends_p_value_equals_scipys_exact_permutation_test():
    """Against an independent implementation: scipy.stats.permutation_test over every pairing (ties included,
    robust accuracies on a coarse grid as a small --n-examples gives)."""
    rng = np.random.default_rng(1)
    for _ in range(3):
        accuracy, dE = rng.integers(0, 4, 5) / 10, rng.normal(size=5)
        t = analysis.zoo_trend([{"robust_accuracy": a, "dE": {"mean": d}} for a, d in zip(accuracy, dE)])
        reference = scipy.stats.permutation_test(
            (accuracy, abs(dE)), lambda a, b: scipy.stats.spearmanr(a, b).statistic, permutation_type="pairings",
            n_resamples=np.inf, alternative="two-sided")
        assert t["rho"] == pytest.approx(reference.statistic) and t["p"] == pytest.approx(reference.pvalue)
