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
from conftest import ROOT
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

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
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
    for name in ("samples", "ref"):  # 200 images through the network in all
        np.savez(tmp_path / f"{name}.npz", image=rng.integers(0, 256, (100, 32, 32, 3), dtype=np.uint8),
                 label=np.arange(100) % 10)
    result = subprocess.run([sys.executable, os.path.join(ROOT, "metrics.py"), str(tmp_path / "samples.npz"),
                             "--ref", "npz", "--ref-npz", str(tmp_path / "ref.npz"), "--inception-weights", "random",
                             "--batch-size", "50"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["n_samples"] == 100 and report["n_ref"] == 100 and report["inception_weights_sha256"] == "random"
    assert report["fid"] > 0 and report["is_mean"] >= 1 and np.isfinite(report["kid_mean"])
    assert "2048" in report["warnings"][0] and "warning:" in result.stdout and "299x299" in report["resize"]
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "metrics.py"), str(tmp_path / "samples.npz"),
                          "--metrics", "fid,lpips", "--inception-weights", "random"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown metric" in bad.stderr
