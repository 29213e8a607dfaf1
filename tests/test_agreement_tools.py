"""The two agreement checks, without the network or the official code: tools/compare_pytorch_fid.py on a few
images with one random Inception state dict, and tools/compare_official_autoattack.py against a fake
"official" package written here; their one-line errors; and the renderers of their results files."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import HANG_TIMEOUT, ROOT
import metrics

sys.path.insert(0, os.path.join(ROOT, "tools"))
import compare_official_autoattack as caa  # noqa: E402
import compare_pytorch_fid as cpf  # noqa: E402
from reference_models import build_reference, load_reference  # noqa: E402
from report import agreement_autoattack, agreement_pytorch_fid  # noqa: E402

SENTINEL = '{"kept": true}\n'


def written_before(path) -> str:
    """A results file that a failed run must leave as it is."""
    path.write_text(SENTINEL)
    return str(path)


def one_line_exit_2(capsys, call, why: str) -> None:
    with pytest.raises(SystemExit) as stop:
        call()
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and why in err[0], err


# --- pytorch-fid ------------------------------------------------------------------------------------

@pytest.fixture
def pytorch_fid(monkeypatch):
    """pytorch_fid, its weights loader restored after the test (the tool replaces it in its process)."""
    pytest.importorskip("pytorch_fid")  # a test dependency, in requirements-dev.txt
    from pytorch_fid import inception
    monkeypatch.setattr(inception, "load_state_dict_from_url", inception.load_state_dict_from_url)
    return inception


FID_DIMS = 64  # the tool's plumbing test takes the FID of the first 64 features: sqrtm of 2048 x 2048 takes ~10 s


def test_pytorch_fid_and_ours_agree_with_one_random_state_dict(pytorch_fid, tmp_path, capsys, monkeypatch):
    full = cpf.fid_figures
    monkeypatch.setattr(cpf, "fid_figures", lambda a, b: full([f[:, :FID_DIMS] for f in a], [f[:, :FID_DIMS] for f in b]))
    results = tmp_path / "agreement.json"
    cpf.main(["--random-weights", "0", "--n", "2", "--batch-size", "2", "--results", str(results)])
    r = json.loads(results.read_text())
    assert r["state_dict_keys"] == {"tensors": 566, "only_ours": [], "only_pytorch_fid": [], "shape_differs": []}
    assert r["feature_max_abs"] > 1  # features that mean something: neither vanished nor all zero
    assert r["feature_max_abs_diff"] <= 1e-5 * r["feature_max_abs"]
    assert r["fid_ours"] == pytest.approx(r["fid_pytorch_fid"], rel=1e-6) and r["agree"]
    assert r["fid_ours_on_pytorch_fid_statistics"] == pytest.approx(r["fid_pytorch_fid"], rel=1e-9)
    assert r["settings"]["weights"]["random_seed"] == 0 and r["pytorch_fid_version"] and r["provenance"]["command"]
    assert "agree" in capsys.readouterr().out
    assert "pytorch-fid" in agreement_pytorch_fid(r) and "**agree**" in agreement_pytorch_fid(r)


def test_the_fid_check_sees_a_wrong_batchnorm_epsilon(pytorch_fid, monkeypatch):
    monkeypatch.setattr(metrics, "BN_EPS", 1e-5)  # ours built with torch's default instead of TensorFlow's 0.001
    theirs, ours, _ = cpf.compare_features(cpf.random_state_dict(0), cpf.image_sets("synthetic", 2, None, "data"), 2)
    a, b = np.concatenate(theirs), np.concatenate(ours)
    assert np.abs(a - b).max() > 1e-4 * np.abs(a).max()


def test_the_fid_figures_of_both_sides_agree_on_the_same_features(pytorch_fid):
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(16, 16))
    a, b = rng.normal(size=(60, 16)) @ mixing, 0.5 + rng.normal(size=(50, 16)) @ mixing
    figures = cpf.fid_figures([a, b], [a, b])
    assert figures["fid_ours"] == pytest.approx(figures["fid_pytorch_fid"], rel=1e-9) and figures["fid_pytorch_fid"] > 1
    assert figures["fid_ours_on_pytorch_fid_statistics"] == pytest.approx(figures["fid_pytorch_fid"], rel=1e-9)
    other = cpf.fid_figures([a, b], [a, b + 1])  # a different second set on our side: a different FID
    assert other["fid_abs_diff"] > 1


@pytest.mark.parametrize("argv,why", [
    (["--images", "npz"], "--images npz needs --npz PATH"),
    (["--images", "npz", "--npz", "NPZ", "--n", "5"], "--n 5 needs 10 images; the npz source holds 6"),
    (["--images", "npz", "--npz", "missing.npz"], "npz file not found: missing.npz"),
    (["--n", "1"], "--n must be at least 2"),
    (["--weights", "missing.pth"], "FID Inception weights not found: missing.pth"),
])
def test_the_fid_tool_refuses_bad_input_in_one_line_and_keeps_the_results_file(argv, why, pytorch_fid, tmp_path, capsys):
    npz = tmp_path / "six.npz"
    np.savez(npz, image=np.zeros((6, 32, 32, 3), np.uint8), label=np.arange(6))
    results = written_before(tmp_path / "agreement.json")
    argv = [str(npz) if a == "NPZ" else a for a in argv]
    one_line_exit_2(capsys, lambda: cpf.main(argv + ["--results", results]), why)
    assert open(results).read() == SENTINEL


# --- the official AutoAttack ------------------------------------------------------------------------

# A fake "official" package: the clean prediction, with the first two points always broken.
FAKE_AUTOATTACK = '''
import torch

class AutoAttack:
    def __init__(self, model, norm="Linf", eps=0.3, seed=None, verbose=True, attacks_to_run=[], version="standard",
                 is_tf_model=False, device="cuda", log_path=None):
        assert norm == "Linf" and version == "standard" and seed == 0
        self.model, self.attacks_to_run = model, ["apgd-ce", "apgd-t", "fab-t", "square"]

    def run_standard_evaluation(self, x, y, bs=250, return_labels=False, state_path=None):
        assert self.attacks_to_run in (["apgd-ce"], ["apgd-t"], ["fab-t"], ["square"],
                                       ["apgd-ce", "apgd-t", "fab-t", "square"])
        with torch.no_grad():
            y_adv = self.model(x).argmax(1)
        y_adv[:2] = (y[:2] + 1) % 10
        return (x, y_adv) if return_labels else x
'''


@pytest.fixture
def fake_official(tmp_path, monkeypatch):
    """A checkout holding the fake package; sys.path and sys.modules restored after the test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    os.makedirs(tmp_path / "fake-aa" / "autoattack")
    (tmp_path / "fake-aa" / "autoattack" / "__init__.py").write_text(FAKE_AUTOATTACK)
    yield tmp_path / "fake-aa"
    for name in [m for m in sys.modules if m == "autoattack" or m.startswith("autoattack.")]:
        del sys.modules[name]


@pytest.fixture
def small_model(tmp_path):
    """A random-weight reference model file and an npz of 8 points it classifies (their labels: its own
    predictions, so that every point starts correct)."""
    torch.manual_seed(0)
    net = build_reference("wong18-cifar-small-8px")
    path = tmp_path / "wong18-cifar-small-8px.pth"
    torch.save(net.state_dict(), path)
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        labels = load_reference(str(path))(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).argmax(1)
    np.savez(tmp_path / "test.npz", image=images, label=labels.numpy())
    return path, tmp_path / "test.npz"


def test_agreement_counts_each_kind_of_point():
    official = torch.tensor([1, 1, 0, 0, 1, 0], dtype=torch.bool)
    ours = torch.tensor([1, 0, 1, 0, 1, 0], dtype=torch.bool)
    assert caa.agreement(official, ours) == {"both_robust": 2, "only_official_robust": 1, "only_ours_robust": 1,
                                             "neither": 2}


def test_the_autoattack_tool_compares_with_the_package_it_is_given(fake_official, small_model, tmp_path):
    model, npz = small_model
    results = tmp_path / "agreement.json"
    caa.main(["--autoattack-repo", str(fake_official), "--model", str(model), "--test-npz", str(npz), "--n-examples",
              "8", "--eps", "8", "--out", str(tmp_path / "out"), "--results", str(results)])
    r = json.loads(results.read_text())
    assert [row["attack"] for row in r["rows"]] == ["apgd-ce", "apgd-t", "fab-t", "square", "cascade"]
    for row in r["rows"]:
        a = row["agreement"]
        assert row["official"]["robust_accuracy"] == 6 / 8  # the fake breaks the first two points only
        assert sum(a.values()) == 8 and a["both_robust"] + a["only_official_robust"] == 6
        assert row["ours"]["robust_accuracy"] == (a["both_robust"] + a["only_ours_robust"]) / 8
        assert row["official"]["seconds"] >= 0 and row["ours"]["seconds"] > 0
    assert r["official_source"]["path"] == str(fake_official) and len(r["official_source"]["sha256_of_py_files"]) == 64
    assert r["settings"]["model"] == "wong18-cifar-small-8px" and r["settings"]["n"] == 8
    assert [d["name"] for d in r["provenance"]["data"]] == ["test.npz", "wong18-cifar-small-8px.pth"]
    table = agreement_autoattack(r)
    assert table.count("| 8/255 |") == 5 and "the cascade" in table


@pytest.mark.parametrize("change,why", [
    ({"--autoattack-repo": "EMPTY"}, "does not hold the autoattack package"),
    ({"--eps": "8,x"}, "--eps '8,x': give positive radii in pixels"),
    ({"--eps": "-2"}, "give positive radii in pixels"),
    ({"--n-examples": "0"}, "--n-examples and --batch-size must be positive"),
    ({"--model": "vnncomp21-resnet4b"}, "pass its file, PATH/vnncomp21-resnet4b.pth"),
])
def test_the_autoattack_tool_refuses_bad_input_in_one_line_and_keeps_the_results_file(change, why, fake_official,
                                                                                      small_model, tmp_path, capsys):
    model, npz = small_model
    os.makedirs(tmp_path / "empty")
    flags = {"--autoattack-repo": str(fake_official), "--model": str(model), "--test-npz": str(npz), "--eps": "8",
             "--n-examples": "8", "--out": str(tmp_path / "out"), **change}
    flags["--autoattack-repo"] = flags["--autoattack-repo"].replace("EMPTY", str(tmp_path / "empty"))
    results = written_before(tmp_path / "agreement.json")
    argv = [part for flag, value in flags.items() for part in (flag, value)] + ["--results", results]
    one_line_exit_2(capsys, lambda: caa.main(argv), why)
    assert open(results).read() == SENTINEL and not (tmp_path / "out").exists()


def test_the_autoattack_tool_as_a_command_names_a_missing_package_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "compare_official_autoattack.py"),
                             "--autoattack-repo", str(tmp_path), "--model", "m.pt", "--test-npz", "t.npz"],
                            capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "does not hold the autoattack" in result.stderr


def test_the_trades_comparison_records_which_official_code_ran(tmp_path):
    import hashlib
    import compare_official_trades
    (tmp_path / "trades.py").write_text("def trades_loss(): pass\n")
    assert compare_official_trades.official_source(str(tmp_path))["git_commit"] is None  # not a git checkout
    git = ["git", "-C", str(tmp_path), "-c", "user.email=t@t", "-c", "user.name=t"]
    for cmd in (["init", "-q"], ["add", "trades.py"], ["commit", "-qm", "official"]):
        subprocess.run(git + cmd, check=True, capture_output=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    source = compare_official_trades.official_source(str(tmp_path))
    assert source == {"path": str(tmp_path), "git_commit": head,
                      "sha256_of_trades_py": hashlib.sha256(b"def trades_loss(): pass\n").hexdigest()}
    (tmp_path / "inner").mkdir()  # a folder inside the checkout is not a checkout of its own
    (tmp_path / "inner" / "trades.py").write_text("x\n")
    assert compare_official_trades.official_source(str(tmp_path / "inner"))["git_commit"] is None
    import report
    r = report.load(ROOT, "speed-vs-official-trades")
    assert "The official code at commit" not in report.speed_vs_official_trades(r)
    assert f"The official code at commit {head[:7]}." in report.speed_vs_official_trades({**r, "official_source": source})


def test_reference_generation_scores_each_sampler_by_the_model_and_the_judge_and_times_it(smoke_run, tmp_path):
    import reference_generation
    from data import synthetic_split
    train = synthetic_split(200, seed=3)
    npz = tmp_path / "train.npz"
    np.savez(npz, image=train.images.permute(0, 2, 3, 1).numpy(), label=train.labels.numpy())
    ckpt, results = str(smoke_run / "best.pt"), tmp_path / "gen.json"
    reference_generation.main(["--train-npz", str(npz), "--model", ckpt, "--judge", ckpt, "--out", str(tmp_path / "gen"),
                               "--results", str(results), "--", "--compare-samplers", "--n-per-class", "2", "--steps", "2",
                               "--device", "cpu", "--cache-dir", str(tmp_path / "cache")])
    r = json.loads(results.read_text())
    assert {run["run"] for run in r["runs"]} == {"pca_start-no_SGLD", "SGLD-no_momentum", "SGLD-momentum_0.5"}
    same = [run["own_accuracy"] == run["judge_accuracy"] for run in r["runs"]]  # the judge is the model itself here
    assert all(same) and all(run["samples"] == 20 for run in r["runs"]) and r["seconds"] > 0
    assert r["model_sha256"] == r["judge_sha256"] == metrics.sha256_of(ckpt)  # the files read, by content
    import generate
    with pytest.raises(SystemExit):  # the tool put generate.py's own loader back: a bad checkpoint is refused again
        generate.main(["--ckpt", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "other")])


def test_the_autoattack_comparison_records_a_commit_only_for_a_checkout_of_its_own(tmp_path):
    """The official package's folder: a git checkout of its own gives its commit; a package installed into a
    folder inside another repository (an environment inside a checkout) gives none, not that repository's."""
    import types
    for folder in ("auto-attack/autoattack", "env/site-packages/autoattack"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "__init__.py").write_text("\n")
    (tmp_path / "README").write_text("outer\n")
    for root, files in ((tmp_path / "auto-attack", "."), (tmp_path, "README")):  # the official checkout, an outer one
        here = ["git", "-C", str(root), "-c", "user.email=t@t", "-c", "user.name=t"]
        for cmd in (["init", "-q"], ["add", files], ["commit", "-qm", "a commit"]):
            subprocess.run(here + cmd, check=True, capture_output=True)
    head = subprocess.run(["git", "-C", str(tmp_path / "auto-attack"), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    module = lambda folder: types.SimpleNamespace(__file__=str(tmp_path / folder / "__init__.py"))  # noqa: E731
    assert caa.official_source(module("auto-attack/autoattack"))["git_commit"] == head
    assert caa.official_source(module("env/site-packages/autoattack"))["git_commit"] is None
