import hashlib
import importlib.util
import os
import pickle
import shutil
import subprocess

import pytest
import torch

from conftest import ROOT
from models import (MODEL_NAMES, CheckpointError, atomic_save, build_model, load_checkpoint, load_model,
                    model_config, provenance, save_checkpoint)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_of_the_paper_networks():
    assert n_params(build_model("resnet18", 10)) == 11_173_962
    assert n_params(build_model("wrn34_10", 10)) == 46_160_474


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("size", [32, 64])
def test_logit_shapes_for_cifar_and_tinyimagenet_sizes(name, size):
    model = build_model(name, 7, width=8).eval()
    assert model(torch.rand(2, 3, size, size)).shape == (2, 7)


def test_width_scales_channels_and_normalize_is_the_first_module():
    assert n_params(build_model("resnet18", 10, width=16)) < n_params(build_model("resnet18", 10, width=32))
    model = build_model("resnet18", 10, normalize=True, width=8).eval()
    x = torch.rand(2, 3, 32, 32)
    net = model[1]
    torch.testing.assert_close(model(x), net((x - model[0].mean) / model[0].std))


def test_unknown_model_name_is_refused():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("vgg16", 10)


@pytest.mark.parametrize("normalize", [False, True])
def test_checkpoint_round_trips_the_model_from_the_file_alone(tmp_path, normalize):
    config = model_config("preact_resnet18", 5, normalize, 8)
    model = build_model(**config).eval()
    path = tmp_path / "m.pt"
    save_checkpoint(str(path), model, config, epoch=3, args={"lr": 0.1}, metrics={"acc": 0.5})
    loaded, ckpt = load_model(str(path))
    x = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(loaded.eval()(x), model(x))
    assert ckpt["epoch"] == 3 and ckpt["model_config"] == config
    torch.load(str(path), weights_only=True)  # plain data only
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left behind


def test_bad_checkpoints_get_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(str(tmp_path / "missing.pt"))
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="cannot load"):
        load_checkpoint(str(tmp_path / "empty.pt"))
    atomic_save({"weights": torch.zeros(2)}, str(tmp_path / "foreign.pt"))
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(str(tmp_path / "foreign.pt"))
    config = model_config("resnet18", 10, False, 8)
    save_checkpoint(str(tmp_path / "c10.pt"), build_model(**config), {**config, "num_classes": 100})
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(str(tmp_path / "c10.pt"))


class MakesAFolder:
    """Unpickling this calls os.makedirs(marker): code run by merely loading the file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_a_pickle_carrying_code_is_refused_and_the_code_does_not_run(tmp_path):
    path, marker = tmp_path / "evil.pt", tmp_path / "code-ran"
    with open(path, "wb") as f:
        pickle.dump({"model": MakesAFolder(str(marker)), "model_config": {}}, f)
    with pytest.raises(CheckpointError, match="cannot load"):
        load_checkpoint(str(path))
    assert not marker.exists()


def test_provenance_names_the_command_commit_data_and_machine(tmp_path):
    data = tmp_path / "points.npz"
    data.write_bytes(b"not really an npz")
    p = provenance([str(data)])
    assert p["data"] == [{"name": "points.npz", "sha256": hashlib.sha256(b"not really an npz").hexdigest()}]
    assert p["command"].startswith("python ") and (p["commit"] == "unknown" or len(p["commit"].removesuffix("-dirty")) == 40)
    assert p["machine"]["cpu_cores"] >= 1 and p["machine"]["device"] == "cpu" and p["machine"]["torch"] == torch.__version__
    assert isinstance(p["machine"]["cpu_model"], str) and p["machine"]["cpu_model"]  # "unknown" where the system names none


def test_provenance_is_dirty_for_changed_code_not_for_changed_results(tmp_path):
    repo = tmp_path / "repo"
    (repo / "results").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "models.py"), repo / "models.py")  # a repo of its own, so its git state is ours
    (repo / "results" / "a.json").write_text("{}\n")
    git = lambda *cmd: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *cmd], cwd=repo,  # noqa: E731
                                      check=True, capture_output=True)
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "x")
    spec = importlib.util.spec_from_file_location("models_copy", repo / "models.py")
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    commit = copy.provenance()["commit"]
    assert len(commit) == 40
    (repo / "results" / "a.json").write_text('{"rewritten": true}\n')  # a measurement written: still this commit
    assert copy.provenance()["commit"] == commit
    with open(repo / "models.py", "a") as f:
        f.write("# changed\n")
    assert copy.provenance()["commit"] == commit + "-dirty"
