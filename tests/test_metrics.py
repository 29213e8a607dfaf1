import json
import os
import subprocess
import sys
import urllib.error

import numpy as np
import pytest
import torch
import torchvision

import metrics
from conftest import HANG_TIMEOUT, ROOT, help_entries
from metrics import FIDInceptionV3, frechet_distance, inception_score, kid


# --- FID -------------------------------------------------------------------------------------------

def test_fid_of_a_set_with_itself_is_zero():
    feats = np.random.default_rng(0).normal(size=(500, 64)) @ np.random.default_rng(1).normal(size=(64, 64))
    mu, sigma = metrics.feature_statistics(feats)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) <= 1e-6 * np.trace(sigma)


def test_fid_with_equal_covariances_is_the_squared_mean_distance():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(20, 20))
    sigma = a @ a.T + np.eye(20)
    mu1, mu2 = rng.normal(size=20), rng.normal(size=20)
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(((mu1 - mu2) ** 2).sum(), rel=1e-6)


def test_fid_of_one_dimensional_gaussians():
    (m1, s1), (m2, s2) = (0.3, 2.0), (-1.2, 0.5)  # means and standard deviations
    assert frechet_distance([m1], [[s1 ** 2]], [m2], [[s2 ** 2]]) == pytest.approx((s1 - s2) ** 2 + (m1 - m2) ** 2)


def test_fid_handles_singular_covariances_and_refuses_a_large_imaginary_part():
    rng = np.random.default_rng(3)
    low_rank = rng.normal(size=(10, 3))
    sigma = low_rank @ low_rank.T  # rank 3 of 10
    assert abs(frechet_distance(np.zeros(10), sigma, np.zeros(10), sigma)) < 1e-3
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))


# --- IS and KID ------------------------------------------------------------------------------------

def test_inception_score_of_uniform_predictions_is_one():
    assert inception_score(np.zeros((1000, 1008))) == pytest.approx((1.0, 0.0))


@pytest.mark.parametrize("k", [2, 10])
def test_inception_score_of_confident_even_predictions_is_the_number_of_classes(k):
    logits = np.full((100 * k, 1008), -1e4)
    logits[np.arange(100 * k), np.arange(100 * k) % k] = 1e4
    assert inception_score(logits, splits=1)[0] == pytest.approx(k)
    assert inception_score(logits, splits=10)[0] == pytest.approx(k, rel=0.05)  # shuffled splits: near K


def test_kid_is_about_zero_within_a_distribution_and_grows_with_a_mean_shift():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(600, 32)), rng.normal(size=(600, 32))
    same, same_std = kid(a, b, n_subsets=20, subset_size=200)
    shifted = [kid(a, b + s, n_subsets=20, subset_size=200)[0] for s in (0.5, 1.0)]
    assert abs(same) < 3 * same_std + 1e-3
    assert same + 3 * same_std < shifted[0] < shifted[1]


def test_kid_caps_the_subset_size_at_the_smaller_set():
    rng = np.random.default_rng(5)
    mean, _ = kid(rng.normal(size=(30, 8)), rng.normal(size=(500, 8)), n_subsets=5, subset_size=1000)
    assert np.isfinite(mean)


# --- The network -----------------------------------------------------------------------------------

# A few tensors of the standard file, from the published architecture (Szegedy et al. 2016, FID graph).
STANDARD_SHAPES = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_4a_3x3.bn.running_var": (192,),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_6b.branch7x7dbl_5.conv.weight": (192, 128, 1, 7),
    "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
    "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return FIDInceptionV3(weights=None)


def test_state_dict_names_and_shapes_are_those_of_the_standard_file(net):
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    # The standard file is a state dict of torchvision's Inception-v3 with 1008 classes and no aux head
    # (that is how the common FID tools load it, strictly).
    reference = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
    assert ours == {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert len(ours) == 566 and all(ours[k] == v for k, v in STANDARD_SHAPES.items())
    FIDInceptionV3(weights=None).load_state_dict(reference.state_dict(), strict=True)


def test_the_fid_quirks_differ_from_torchvision_where_they_should(net):
    reference = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
    reference.load_state_dict(net.state_dict())
    reference.eval()
    with torch.no_grad():
        x35, x17, x8 = torch.rand(2, 288, 35, 35), torch.rand(2, 768, 17, 17), torch.rand(2, 2048, 8, 8)
        torch.testing.assert_close(net.Mixed_6a(x35), reference.Mixed_6a(x35))  # InceptionB: no quirk
        torch.testing.assert_close(net.Mixed_7a(x17), reference.Mixed_7a(x17))  # InceptionD: no quirk
        assert not torch.allclose(net.Mixed_5d(x35), reference.Mixed_5d(x35))  # avg pool without the padding
        assert not torch.allclose(net.Mixed_7c(x8), reference.Mixed_7c(x8))  # max pool in Mixed_7c


def test_outputs_have_the_right_shapes_and_do_not_depend_on_the_batch_size(net):
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    f6, z6 = metrics.inception_outputs(net, images, batch_size=6)
    f2, z2 = metrics.inception_outputs(net, images, batch_size=2)
    assert f6.shape == (6, 2048) and z6.shape == (6, 1008) and not net.training
    np.testing.assert_allclose(f2, f6, rtol=1e-5, atol=1e-6 * np.abs(f6).max())
    np.testing.assert_allclose(z2, z6, rtol=1e-5, atol=1e-6 * np.abs(z6).max())


def test_weights_errors_are_clear(tmp_path, monkeypatch):
    torch.save(FIDInceptionV3(weights=None).state_dict(), tmp_path / "other.pth")
    with pytest.raises(metrics.MetricsError, match="not the standard FID Inception weights"):
        FIDInceptionV3(weights=str(tmp_path / "other.pth"))
    with pytest.raises(metrics.MetricsError, match="not found"):
        FIDInceptionV3(weights=str(tmp_path / "missing.pth"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(metrics.MetricsError, match="--inception-weights PATH"):
        FIDInceptionV3(weights="standard")


def test_reference_statistics_are_cached_by_set_and_weights(net, tmp_path, monkeypatch):
    ref = tmp_path / "ref.npz"
    np.savez(ref, image=np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), label=np.arange(4))
    monkeypatch.setattr(net, "weights_id", "0123456789abcdef-test")
    first = metrics.reference_outputs(net, "npz", "train", "data", str(ref), str(tmp_path / "cache"), 4, "cpu")
    assert len(os.listdir(tmp_path / "cache")) == 1
    import data
    monkeypatch.setattr(data, "load_split", lambda *a, **k: pytest.fail("the cache was not used"))
    second = metrics.reference_outputs(net, "npz", "train", "data", str(ref), str(tmp_path / "cache"), 4, "cpu")
    np.testing.assert_array_equal(first["mu"], second["mu"])


def test_cli_end_to_end_with_random_weights(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("samples", "ref"):  # 40 images through the network in all
        np.savez(tmp_path / f"{name}.npz", image=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
                 label=np.arange(20) % 10)
    result = subprocess.run([sys.executable, os.path.join(ROOT, "metrics.py"), str(tmp_path / "samples.npz"),
                             "--ref", "npz", "--ref-npz", str(tmp_path / "ref.npz"), "--inception-weights", "random",
                             "--batch-size", "50"], capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["n_samples"] == 20 and report["n_ref"] == 20 and report["inception_weights_sha256"] == "random"
    assert report["fid"] > 0 and report["is_mean"] >= 1 and np.isfinite(report["kid_mean"])
    assert "2048" in report["warnings"][0] and "warning:" in result.stdout and "299x299" in report["resize"]
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "metrics.py"), str(tmp_path / "samples.npz"),
                          "--metrics", "fid,nope", "--inception-weights", "random"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown metric" in bad.stderr


# --- the Inception Score's logits and LPIPS (issue 15) ------------------------------------------------------

class StandIn(torch.nn.Module):
    """A network shaped like FIDInceptionV3 whose features vary with the images (a random Inception maps
    all images to nearly the same features) and whose fc bias is far from zero."""

    logits_unbiased = FIDInceptionV3.logits_unbiased

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = torch.nn.Conv2d(3, 2048, 8, 8)
        self.fc = torch.nn.Linear(2048, 1008)
        with torch.no_grad():
            self.fc.bias.copy_(20 * torch.randn(1008))

    def forward(self, images):
        f = 100 * self.features(images - 0.5).mean(dim=(2, 3))  # spread out: peaked, image-dependent predictions
        return f, self.fc(f)


def test_inception_score_from_images_uses_pool3_times_w_without_the_bias():
    net, images = StandIn(), torch.randint(0, 256, (60, 3, 32, 32), dtype=torch.uint8)
    results, _ = metrics.compute_metrics(net, images, ["is"], batch_size=20)
    with torch.no_grad():
        features, biased = net(images.float() / 255)
        unbiased = metrics.inception_score((features @ net.fc.weight.T).double().numpy())
    assert results["is_mean"] == pytest.approx(unbiased[0], rel=1e-6) and results["is_mean"] > 1.5
    assert results["is_mean"] > 2 * metrics.inception_score(biased.double().numpy())[0]  # the bias would flatten it


@pytest.fixture(scope="module")
def lpips_net():
    torch.manual_seed(0)
    return metrics.LPIPS(backbone=None, linear=None)


def test_lpips_is_zero_for_identical_images_symmetric_and_positive_otherwise(lpips_net):
    a, b = torch.rand(6, 3, 32, 32), torch.rand(6, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(lpips_net(a, a), torch.zeros(6))
        torch.testing.assert_close(lpips_net(a, b), lpips_net(b, a))
        assert (lpips_net(a, b) > 0).all() and lpips_net(a, b).shape == (6,)


def test_lpips_state_dict_is_torchvision_features_and_the_five_linear_layers(lpips_net):
    alexnet = torchvision.models.alexnet(weights=None).state_dict()
    features = {k: tuple(v.shape) for k, v in alexnet.items() if k.startswith("features.")}
    lins = {f"lin{i}.model.1.weight": (1, c, 1, 1) for i, c in enumerate((64, 192, 384, 256, 256))}
    assert {k: tuple(v.shape) for k, v in lpips_net.state_dict().items()} == {**features, **lins}


def test_lpips_weights_files_load_strictly_and_refuse_others(tmp_path, monkeypatch):
    torch.manual_seed(1)
    alexnet = torchvision.models.alexnet(weights=None).state_dict()  # the file holds classifier.* too
    lins = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 192, 384, 256, 256))}
    torch.save(alexnet, tmp_path / "alexnet.pth")
    torch.save(lins, tmp_path / "alex.pth")
    monkeypatch.setattr(metrics, "ALEXNET_SHA256_PREFIX", metrics.sha256_of(str(tmp_path / "alexnet.pth")))
    monkeypatch.setattr(metrics, "LPIPS_ALEX_SHA256", metrics.sha256_of(str(tmp_path / "alex.pth")))
    net = metrics.LPIPS(backbone=str(tmp_path / "alexnet.pth"), linear=str(tmp_path / "alex.pth"))
    assert all(torch.equal(net.state_dict()[k], alexnet[k]) for k in alexnet if k.startswith("features."))
    assert all(torch.equal(net.state_dict()[k], v) for k, v in lins.items())
    torch.save({**lins, "lin5.model.1.weight": torch.rand(1, 8, 1, 1)}, tmp_path / "alex.pth")
    monkeypatch.setattr(metrics, "LPIPS_ALEX_SHA256", metrics.sha256_of(str(tmp_path / "alex.pth")))
    with pytest.raises(metrics.MetricsError, match="unexpected"):
        metrics.LPIPS(backbone=None, linear=str(tmp_path / "alex.pth"))
    monkeypatch.setattr(metrics, "LPIPS_ALEX_SHA256", "0" * 64)
    with pytest.raises(metrics.MetricsError, match="not the standard LPIPS linear layers"):
        metrics.LPIPS(backbone=None, linear=str(tmp_path / "alex.pth"))


def test_diversity_is_the_mean_distance_of_same_class_pairs(lpips_net):
    images = torch.zeros(4, 3, 8, 8)
    images[1] = 0.5  # class 0: images 0 and 1, at pixel L2 distance 0.5 * sqrt(192); class 1: two equal images
    labels = torch.tensor([0, 0, 1, 1])
    pairs = metrics.same_class_pairs(labels, pairs_per_class=10)
    assert all(labels[i] == labels[j] and i != j for i, j in zip(*pairs))
    assert metrics.diversity(images, labels, pairs_per_class=10) == pytest.approx(0.5 * 192 ** 0.5 / 2)
    same = torch.rand(1, 3, 32, 32).repeat(4, 1, 1, 1)
    assert metrics.diversity(same, labels, lpips_net, pairs_per_class=5) == 0
    with pytest.raises(metrics.MetricsError, match="two images of one class"):
        metrics.diversity(images[:2], torch.tensor([0, 1]))


def test_cli_lpips_with_random_weights(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("samples", "ref"):
        np.savez(tmp_path / f"{name}.npz", image=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
                 label=np.arange(20) % 10)
    result = subprocess.run([sys.executable, os.path.join(ROOT, "metrics.py"), str(tmp_path / "samples.npz"),
                             "--metrics", "lpips", "--ref", "npz", "--ref-npz", str(tmp_path / "ref.npz"),
                             "--lpips-backbone", "random", "--lpips-linear", "random"], capture_output=True, text=True,
                            timeout=HANG_TIMEOUT)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["lpips_diversity"] > 0 and report["lpips_diversity_ref"] > 0 and report["pixel_l2_diversity"] > 0
    assert report["lpips_weights_sha256"] == "random" and "lpips_diversity:" in result.stdout


# --- the command line's checks (review of the command-line programs) ---------------------------------------

class TinyInception(torch.nn.Module):
    """Stands in for FIDInceptionV3 in command-line tests: 8 features, so FID's matrix square root is instant."""

    logits_unbiased = FIDInceptionV3.logits_unbiased
    weights_id = "random"

    def __init__(self, weights=None):
        super().__init__()
        torch.manual_seed(0)
        self.features, self.fc = torch.nn.Conv2d(3, 8, 8, 8), torch.nn.Linear(8, 10)

    def forward(self, images):
        f = self.features(images).mean(dim=(2, 3))
        return f, self.fc(f)


def write_npz(path, n=12, labels=True):
    arrays = {"image": np.random.default_rng(0).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)}
    np.savez(path, **arrays, **({"label": np.arange(n) % 3} if labels else {}))
    return str(path)


def error_line(capsys):
    """argparse's or main's error: one line of stderr (the rest is argparse's usage text or a progress bar)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_samples_without_labels_are_scored_for_fid_is_kid_but_not_for_lpips(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(metrics, "FIDInceptionV3", TinyInception)
    samples, ref = write_npz(tmp_path / "samples.npz", labels=False), write_npz(tmp_path / "ref.npz")
    metrics.main([samples, "--ref", "npz", "--ref-npz", ref, "--metrics", "fid,is,kid", "--device", "cpu"])
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["n_samples"] == 12 and report["n_ref"] == 12 and np.isfinite(report["fid"]) and report["is_mean"] >= 1
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        metrics.main([samples, "--ref", "npz", "--ref-npz", ref, "--metrics", "lpips", "--lpips-backbone", "random",
                      "--lpips-linear", "random", "--out", str(tmp_path / "lpips.json"), "--device", "cpu"])
    line = error_line(capsys)
    assert stop.value.code == 2 and line.startswith("metrics.py: error:") and "no 'label'" in line
    assert not (tmp_path / "lpips.json").exists()


@pytest.mark.parametrize("argv,message", [
    (["--ref", "npz", "--metrics", "lpips"], "--ref npz needs --ref-npz"),
    (["--ref", "npz"], "--ref npz needs --ref-npz"),
    (["--ref-npz", "{tmp}/ref.npz"], "--ref-npz needs --ref npz"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--device", "nonsense"], "--device nonsense"),
    (["--metrics", "fid,kd"], "unknown metric(s) kd"),
    (["--metrics", ","], "unknown metric(s) (none given)"),
    (["--out", "{tmp}/samples.npz/metrics.json"], "does not exist"),
    (["--out", "{tmp}"], "is a folder"),
])
def test_bad_flags_get_one_line_and_exit_2_before_any_work(tmp_path, capsys, argv, message, monkeypatch):
    monkeypatch.setattr(metrics, "FIDInceptionV3", lambda *a, **k: pytest.fail("the flags were not checked first"))
    samples = write_npz(tmp_path / "samples.npz")
    write_npz(tmp_path / "ref.npz")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(SystemExit) as stop:
        metrics.main([samples, *(a.replace("{tmp}", str(tmp_path)) for a in argv)])
    line = error_line(capsys)
    assert stop.value.code == 2 and line.startswith("metrics.py: error:") and message in line, line
    assert sorted(os.listdir(tmp_path)) == before


def test_a_report_that_cannot_be_written_is_one_line_and_leaves_the_old_report_whole(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(metrics, "FIDInceptionV3", TinyInception)
    samples = write_npz(tmp_path / "samples.npz")
    (tmp_path / "metrics.json").write_text('{"old": 1}')
    (tmp_path / "metrics.json.tmp").mkdir()  # the report's temporary file cannot be created (even as root)
    with pytest.raises(SystemExit) as stop:
        metrics.main([samples, "--metrics", "is", "--device", "cpu"])
    line = error_line(capsys)
    assert stop.value.code == 2 and line.startswith("metrics.py: error:") and "metrics.json.tmp" in line
    assert (tmp_path / "metrics.json").read_text() == '{"old": 1}'



def test_help_states_each_default_once():
    entries = help_entries(metrics.build_parser())
    assert all(text.count("(default:") <= 1 and "(default: None)" not in text for text in entries.values()), entries
    assert entries["--out"].endswith("(default: metrics.json beside the samples)")
    assert "'label'" in metrics.build_parser().format_help()  # the samples' labels: needed for LPIPS alone
