import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

import generate as G
from conftest import HANG_TIMEOUT, ROOT, help_entries
from energy import energy_xy


def test_pca_with_all_components_reconstructs_exactly():
    torch.manual_seed(0)
    x = torch.rand(40, 3, 4, 4)
    pca = G.fit_pca(x, retained_variance=1.0)
    flat = x.flatten(1)
    recon = pca["mean"] + (flat - pca["mean"]) @ pca["U"].T @ pca["U"]
    torch.testing.assert_close(recon, flat, atol=1e-5, rtol=0)
    assert len(pca["s"]) >= 39 and (pca["s"][39:] < 1e-4).all()  # 40 centred points have rank 39


def test_retained_variance_picks_the_right_number_of_components():
    # data with a known spectrum: singular values 3, 2, 1 along orthogonal directions
    q, _ = torch.linalg.qr(torch.randn(12, 3, dtype=torch.float64))
    coeffs = torch.tensor([[3.0, 0, 0], [-3.0, 0, 0], [0, 2.0, 0], [0, -2.0, 0], [0, 0, 1.0], [0, 0, -1.0]])
    x = (coeffs.double() / np.sqrt(2)) @ q.T  # centred, singular values exactly 3, 2, 1
    pca = G.fit_pca(x.view(6, 3, 2, 2), retained_variance=0.9)
    torch.testing.assert_close(pca["s"].double(), torch.tensor([3.0, 2.0], dtype=torch.float64), atol=1e-5, rtol=0)
    s = torch.tensor([3.0, 2.0, 1.0])  # explained: 9/14, 13/14, 1
    assert [G.n_components(s, r) for r in (0.6, 0.9, 13 / 14, 0.95, 1.0)] == [1, 2, 2, 3, 3]


@pytest.mark.parametrize("init", G.INITS)
def test_starting_points_and_samples_stay_in_the_box(init, trained_model):
    model, x, y = trained_model
    fitted = None if init == "uniform" else G.fit_starts((x * 255).round().to(torch.uint8), y, init, 0.95)
    labels = torch.arange(10).repeat_interleave(2)
    x0 = G.initial_points(init, fitted, labels, (3, 32, 32), sigma_pca=0.05, seed=0)
    assert x0.shape == (20, 3, 32, 32) and x0.min() >= 0 and x0.max() <= 1
    samples, trace = G.sgld(model, x0, labels, steps=5, eta=2.0, zeta=0.5, noise_std=0.05)
    assert samples.min() >= 0 and samples.max() <= 1 and len(trace) == 2 and trace[-1]["step"] == 5


def test_each_noiseless_step_lowers_the_joint_energy_on_a_smooth_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 32), nn.Tanh(), nn.Linear(32, 5))
    x = 0.5 + 0.01 * torch.randn(8, 3, 4, 4)  # far from the box edges: the clamp stays inactive
    y = torch.arange(8) % 5
    energies = []
    for _ in range(10):
        with torch.no_grad():
            energies.append(energy_xy(model(x), y))
        x, _ = G.sgld(model, x, y, steps=1, eta=0.01, zeta=0.0, noise_std=0.0)
    energies = torch.stack(energies)
    assert (energies[1:] < energies[:-1]).all()


def test_sgld_does_one_forward_per_step_and_refuses_nan():
    calls = {"n": 0}
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    net.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    G.sgld(net, torch.rand(4, 3, 2, 2), torch.zeros(4, dtype=torch.long), steps=7, eta=0.1, zeta=0.5, noise_std=0.01)
    assert calls["n"] == 7 + 1  # one per step, plus one to score the final samples

    class NaNModel(nn.Module):
        def forward(self, x):
            return net(x) * float("nan")

    with pytest.raises(G.GenerationError, match="non-finite"):
        G.sgld(NaNModel(), torch.rand(4, 3, 2, 2), torch.zeros(4, dtype=torch.long), 3, 0.1, 0.5, 0.01)


def test_fitted_starts_are_cached(tmp_path, monkeypatch):
    images, labels = torch.randint(0, 256, (30, 3, 4, 4), dtype=torch.uint8), torch.arange(30) % 3
    cache = str(tmp_path / "pca.pt")
    first = G.fit_starts(images, labels, "pca", 0.9, cache)
    monkeypatch.setattr(G, "fit_pca", lambda *a: pytest.fail("the cache was not used"))
    second = G.fit_starts(images, labels, "pca", 0.9, cache)
    assert all(torch.equal(a["U"], b["U"]) for a, b in zip(first, second))


def test_cli_end_to_end_on_a_smoke_checkpoint(smoke_run, tmp_path):
    run = lambda *extra: subprocess.run(
        [sys.executable, os.path.join(ROOT, "generate.py"), "--ckpt", str(smoke_run / "best.pt"), "--n-per-class", "3",
         "--steps", "4", "--trace-every", "2", "--cache-dir", str(tmp_path / "cache"), *extra],
        capture_output=True, text=True, timeout=HANG_TIMEOUT)
    result = run("--out", str(tmp_path / "gen"))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "gen"
    data = np.load(out / "samples.npz")
    assert data["image"].dtype == np.uint8 and data["image"].shape == (30, 32, 32, 3)
    assert sorted(np.bincount(data["label"]).tolist()) == [3] * 10
    trace = json.loads((out / "trace.json").read_text())
    assert [t["step"] for t in trace] == [0, 2, 4]
    assert all((out / name).stat().st_size > 1000 for name in ("samples.png", "init.png"))
    assert json.loads((out / "args.json").read_text())["dataset"] == "synthetic"
    assert "nan" not in result.stdout  # a single run reports its pixel diversity too
    result = run("--compare-inits", "--out", str(tmp_path / "cmp"))
    assert result.returncode == 0, result.stderr
    table = json.loads((tmp_path / "cmp" / "compare_inits.json").read_text())["runs"]
    assert set(table) == set(G.INITS) and (tmp_path / "cmp" / "compare_inits.png").stat().st_size > 1000
    assert "pca" in result.stdout and "uniform" in result.stdout


def test_the_defaults_are_the_authors_settings_presets_change_them_and_explicit_flags_win(smoke_run, tmp_path):
    # the authors' image_generation/eval.py: 20 steps of size 1, no momentum, noise 0.001, sigma_pca 0.005, E(x, y)
    paper = {"steps": 20, "eta": 1.0, "zeta": 0.0, "noise_std": 0.001, "sigma_pca": 0.005, "retained_variance": 0.95,
             "objective": "energy_xy", "init": "pca", "n_per_class": 1000}
    result = subprocess.run([sys.executable, os.path.join(ROOT, "generate.py"), "--ckpt", str(smoke_run / "best.pt"),
                             "--n-per-class", "2", "--cache-dir", str(tmp_path / "cache"),
                             "--out", str(tmp_path / "paper")], capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert result.returncode == 0, result.stderr
    stored = json.loads((tmp_path / "paper" / "args.json").read_text())
    assert {k: stored[k] for k in paper} == {**paper, "n_per_class": 2} and stored["preset"] == "paper"
    assert "preset=paper steps=20 eta=1.0 zeta=0.0 noise_std=0.001 sigma_pca=0.005" in result.stdout

    def parsed(*argv):
        parser = G.build_parser()
        G.apply_preset(parser, ["--ckpt", "x", "--out", "y", *argv])
        return parser.parse_args(["--ckpt", "x", "--out", "y", *argv])
    assert parsed("--preset", "paper-momentum").zeta == 0.5 and parsed("--preset", "paper-momentum").steps == 20
    ours = parsed("--preset", "ours")
    assert (ours.steps, ours.zeta, ours.noise_std, ours.sigma_pca, ours.n_per_class) == (60, 0.5, 0.01, 0.015, 100)
    assert parsed("--preset", "ours", "--steps", "7").steps == 7


def test_retained_variance_zero_starts_at_the_class_mean():
    torch.manual_seed(0)
    images = torch.rand(40, 3, 8, 8)
    pca = G.fit_pca(images, 0.0)
    assert len(pca["s"]) == 0
    x0 = G.sample_pca(pca, 5, 0.02, torch.Generator().manual_seed(0))
    torch.testing.assert_close(x0, images.flatten(1).mean(0).expand(5, -1))


def test_compare_samplers_and_the_pca_sweep_end_to_end(smoke_run, tmp_path):
    run = lambda *extra: subprocess.run(  # noqa: E731
        [sys.executable, os.path.join(ROOT, "generate.py"), "--ckpt", str(smoke_run / "best.pt"), "--n-per-class", "3",
         "--steps", "3", "--cache-dir", str(tmp_path / "cache"), "--lpips-backbone", "random", *extra],
        capture_output=True, text=True, timeout=HANG_TIMEOUT)
    result = run("--compare-samplers", "--zeta", "0", "--out", str(tmp_path / "samplers"))
    assert result.returncode == 0, result.stderr
    table = json.loads((tmp_path / "samplers" / "compare_samplers.json").read_text())["runs"]
    assert list(table) == ["pca start, no SGLD", "SGLD, momentum 0.5", "SGLD, no momentum"]
    assert table["pca start, no SGLD"]["settings"] == {"init": "pca", "steps": 0}
    assert (tmp_path / "samplers" / "compare_samplers.png").stat().st_size > 1000
    result = run("--sweep-pca", "0.001,0.015", "--sweep-variance", "0,0.95", "--out", str(tmp_path / "sweep"))
    assert result.returncode == 0, result.stderr
    sweep = json.loads((tmp_path / "sweep" / "sweep_pca.json").read_text())
    assert len(sweep["runs"]) == 4 and "pixel_l2_diversity" in sweep["diversity"]
    cell = sweep["runs"]["sigma_pca 0.015, variance 0.95"]
    assert 0 <= cell["accuracy"] <= 1 and cell["pixel_l2_diversity"] > 0 and "lpips_diversity" not in cell
    assert (tmp_path / "sweep" / "sweep_pca.png").stat().st_size > 1000


# --- the command line's checks (review of the command-line programs) ---------------------------------------

def test_cifar10_names_only_for_a_ten_class_cifar10_model():
    assert G.class_names_for(10, "cifar10") == G.CIFAR10_CLASSES
    assert G.class_names_for(10, "npz", "data/cifar10/cifar10_train.npz") == G.CIFAR10_CLASSES
    assert G.class_names_for(100, "npz", "data/cifar100/cifar100_train.npz") is None
    assert G.class_names_for(10, "npz", "data/cifar100/cifar100_10-class-subset.npz") is None  # cifar100, not cifar10
    assert G.class_names_for(100, "cifar100") is None and G.class_names_for(10, "svhn") is None
    assert G.class_names_for(10, "npz", "data/cifar10/svhn_train.npz") is None  # the file's name, not its folder's


def test_a_cifar100_like_run_draws_class_numbers_and_writes_its_samples(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    npz = tmp_path / "cifar100_train.npz"
    np.savez(npz, image=rng.integers(0, 256, (200, 4, 4, 3), dtype=np.uint8), label=np.arange(200) % 100)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 100)).eval()
    info = {"args": {"dataset": "npz", "train_npz": str(npz)}, "model_config": {"num_classes": 100}}
    monkeypatch.setattr(G, "load_classifier", lambda args, device: (model, info))
    drawn, real_save_grid = [], G.save_grid
    monkeypatch.setattr(G, "save_grid", lambda images, labels, path, columns, class_names=None, **k:
                        drawn.append((os.path.basename(path), class_names)))
    G.main(["--ckpt", "unused.pt", "--init", "uniform", "--n-per-class", "1", "--steps", "1", "--device", "cpu",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "gen")])
    assert drawn == [("samples.png", None), ("init.png", None)]
    assert np.load(tmp_path / "gen" / "samples.npz")["label"].tolist() == list(range(100))
    labels = torch.tensor([0, 50, 99])  # and a grid given too few names shows class numbers where they run out
    real_save_grid(torch.rand(3, 3, 4, 4), labels, str(tmp_path / "grid.png"), 1, G.CIFAR10_CLASSES)
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_the_samples_are_written_before_the_figures(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("drawing failed")
    monkeypatch.setattr(G, "save_grid", broken)
    samples, y = torch.rand(4, 3, 4, 4), torch.tensor([0, 0, 1, 1])
    with pytest.raises(RuntimeError, match="drawing failed"):
        G.write_run(str(tmp_path), samples, y, samples, [{"step": 0}], 2)
    assert np.load(tmp_path / "samples.npz")["label"].tolist() == [0, 0, 1, 1]
    assert json.loads((tmp_path / "trace.json").read_text()) == [{"step": 0}]


@pytest.mark.parametrize("names", ["fid,kd", "FID", "lpips, nope"])
def test_unknown_metric_names_are_refused_before_any_work(tmp_path, capsys, names):
    with pytest.raises(SystemExit) as stop:
        G.main(["--ckpt", str(tmp_path / "never-read.pt"), "--metrics", names, "--out", str(tmp_path / "gen")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("usage:", " "))]
    assert stop.value.code == 2 and len(lines) == 1 and "unknown --metrics name(s)" in lines[0], err
    assert lines[0].startswith("generate.py: error:") and "fid,is,kid,lpips" in lines[0]
    assert not (tmp_path / "gen").exists()



def test_help_states_each_default_once():
    entries = help_entries(G.build_parser())
    assert all(text.count("(default:") <= 1 for text in entries.values()), entries
    for flag in ("--noise-scale", "--data-dir", "--train-npz", "--sweep-pca", "--sweep-variance", "--metrics", "--out"):
        assert "(default: None)" not in entries[flag] and "(default: )" not in entries[flag], entries[flag]
    assert "(default: sqrt(2 eta))" in entries["--noise-scale"]
    assert "number of training images of the class" in entries["--sigma-pca"]
