"""The developer tools without the developers' folder: model specs (a train.py checkpoint, a reference
model file, a RobustBench name), their data flags, and one tool end to end offline."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import HANG_TIMEOUT, ROOT
import models
from models import CheckpointError, Normalize, build_model, model_config, save_checkpoint

sys.path.insert(0, os.path.join(ROOT, "tools"))
import common  # noqa: E402
from reference_models import REFERENCE_MODELS, build_reference, load_reference  # noqa: E402

ZOO_MODEL = "Ding2020MMA"  # as tests/test_robustbench.py: the smallest CIFAR-10 Linf architecture of the zoo


def saved_reference(folder, name: str, wrap=lambda state: state) -> tuple:
    """A reference architecture with random weights saved as folder/NAME.pth; (path, the model with its
    input normalisation, in eval mode)."""
    torch.manual_seed(len(name))
    net = build_reference(name)
    path = os.path.join(folder, f"{name}.pth")
    torch.save(wrap(net.state_dict()), path)
    _, mean, std = REFERENCE_MODELS[name]
    return path, torch.nn.Sequential(Normalize(mean, std), net).eval()


@pytest.mark.parametrize("name", sorted(REFERENCE_MODELS))
def test_a_reference_model_file_loads_back_into_the_same_model(name, tmp_path):
    path, saved = saved_reference(tmp_path, name)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        logits = load_reference(path)(x)
        assert logits.shape == (4, 10) and torch.equal(logits, saved(x))
    model, tag = common.classifier(path)
    assert tag == name and common.recorded_name(path) == name and not model.training
    with torch.no_grad():
        assert torch.equal(model(x), logits)


@pytest.mark.parametrize("wrap", [lambda s: {"state_dict": s, "epoch": 3}, lambda s: {"state_dict": [s], "err": 0.5}])
def test_weights_saved_under_state_dict_are_unwrapped(wrap, tmp_path):
    path, saved = saved_reference(tmp_path, "wong18-cifar-small-8px", wrap)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_reference(path)(x), saved(x))


def test_a_train_py_checkpoint_is_tagged_by_its_run_folder(tmp_path):
    config = model_config("resnet18", 10, width=4)
    os.makedirs(tmp_path / "run-a")
    save_checkpoint(str(tmp_path / "run-a" / "best.pt"), build_model(**config), config)
    model, tag = common.classifier(str(tmp_path / "run-a" / "best.pt"))
    assert tag == "run-a" and model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert common.recorded_name(str(tmp_path / "run-a" / "best.pt")) == str(tmp_path / "run-a" / "best.pt")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """A RobustBench model_dir with random weights for ZOO_MODEL, a random-weight reference model file and
    a small test npz."""
    try:
        models.import_robustbench_utils()  # with the alias robustbench 1.1.1 needs to import
    except CheckpointError as e:
        pytest.skip(str(e))  # a test dependency (requirements-dev.txt); the tools run without it
    root = tmp_path_factory.mktemp("zoo")
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    torch.manual_seed(0)
    net = model_dicts[BenchmarkDataset.cifar_10][ThreatModel.Linf][ZOO_MODEL]["model"]()
    os.makedirs(root / "models" / "cifar10" / "Linf")
    torch.save({"state_dict": net.state_dict()}, root / "models" / "cifar10" / "Linf" / f"{ZOO_MODEL}.pt")
    saved_reference(root, "wong18-cifar-small-8px")
    rng = np.random.default_rng(0)
    np.savez(root / "test.npz", image=rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), label=np.arange(16) % 10)
    return root


def test_a_robustbench_spec_loads_from_the_model_dir(zoo):
    model, tag = common.classifier(f"robustbench:{ZOO_MODEL}", str(zoo / "models"))
    assert tag == ZOO_MODEL and not model.training
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(CheckpointError, match=f"offline, put its weights at .*{ZOO_MODEL}.pt"):
        common.classifier(f"robustbench:{ZOO_MODEL}", str(zoo / "elsewhere"))


@pytest.mark.parametrize("spec,why", [
    ("vnncomp21-resnet4b", "pass its file, PATH/vnncomp21-resnet4b.pth"),
    ("resnet_4b.onnx", "give PATH.pt (a train.py checkpoint), PATH/NAME.pth"),
    ("robustbench:", "robustbench: needs a model name"),
    ("weights/resnet4b.pth", "a reference model file is named NAME.pth with NAME one of vnncomp21-resnet2b"),
    ("runs/no-such-run/best.pt", "model file not found: runs/no-such-run/best.pt"),
])
def test_a_bad_spec_is_one_line(spec, why):
    with pytest.raises(CheckpointError) as error:
        common.classifier(spec)
    assert why in str(error.value) and "\n" not in str(error.value)


def test_weights_of_another_architecture_are_refused_in_one_line(tmp_path):
    torch.save(build_reference("vnncomp21-resnet2b").state_dict(), tmp_path / "vnncomp21-resnet4b.pth")
    with pytest.raises(CheckpointError, match="not the weights of vnncomp21-resnet4b") as error:
        load_reference(str(tmp_path / "vnncomp21-resnet4b.pth"))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("argv,why", [
    ([], "give --dataset cifar10 (downloaded through torchvision) or --test-npz"),
    (["--dataset", "cifar10", "--test-npz", "t.npz"], "--dataset cifar10 and --test-npz exclude each other"),
])
def test_the_data_flags_name_one_source(argv, why, capsys):
    with pytest.raises(SystemExit) as stop:
        common.parse_tool_args(common.tool_parser(splits=("test",)), argv)
    assert stop.value.code == 2 and why in capsys.readouterr().err


def test_the_real_data_set_is_recorded_by_torchvisions_files():
    args = common.parse_tool_args(common.tool_parser(splits=("train", "test")), ["--dataset", "cifar10", "--data-dir", "d"])
    assert common.data_files(args, train=False) == [os.path.join("d", "cifar-10-batches-py", "test_batch")]
    assert len(common.data_files(args, train=True)) == 5


def tool(script, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", script), *args], capture_output=True, text=True,
                          timeout=HANG_TIMEOUT, cwd=ROOT)


def test_reference_attacks_runs_offline_on_a_zoo_model_and_a_reference_file(zoo):
    specs = f"robustbench:{ZOO_MODEL},{zoo / 'wong18-cifar-small-8px.pth'}"
    result = tool("reference_attacks.py", "--models", specs, "--model-dir", str(zoo / "models"), "--test-npz",
                  str(zoo / "test.npz"), "--n-examples", "8", "--eps", "8", "--out", str(zoo / "out"),
                  "--results", str(zoo / "attacks.json"))
    assert result.returncode == 0, result.stderr
    written = json.loads((zoo / "attacks.json").read_text())
    assert [row["model"] for row in written["rows"]] == [f"robustbench:{ZOO_MODEL}", "wong18-cifar-small-8px"]
    assert written["rows"][1]["n"] == 8 and written["provenance"]["data"][0]["name"] == "test.npz"


@pytest.mark.parametrize("spec,why,usage", [
    ("vnncomp21-resnet4b", "PATH/vnncomp21-resnet4b.pth", True),  # refused by the parser
    ("absent/vnncomp21-resnet4b.pth", "model file not found: absent/vnncomp21-resnet4b.pth", False),
])
def test_a_tool_given_a_bad_spec_writes_nothing_and_says_why_in_one_line(spec, why, usage, zoo, tmp_path):
    result = tool("reference_attacks.py", "--models", f"{zoo / 'wong18-cifar-small-8px.pth'},{spec}",
                  "--test-npz", str(zoo / "test.npz"), "--out", str(tmp_path / "out"))
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == 2 and len(errors) == 1 and why in errors[0]
    assert result.stderr.startswith("usage:") == usage and not (tmp_path / "out").exists()


def test_reference_energy_runs_offline_on_a_reference_file_and_names_it_by_content(zoo):
    path = zoo / "wong18-cifar-small-8px.pth"
    result = tool("reference_energy.py", "--models", str(path), "--test-npz", str(zoo / "test.npz"), "--n-examples", "8",
                  "--steps", "2", "--attack-seeds", "1", "--out", str(zoo / "energy"), "--results", str(zoo / "energy.json"))
    assert result.returncode == 0, result.stderr
    written = json.loads((zoo / "energy.json").read_text())["models"]["wong18-cifar-small-8px"]
    assert written["model"] == "wong18-cifar-small-8px" and written["sha256"] == models.sha256_of(str(path))
    assert {"clean", "noise", "pgd-ce", "apgd-ce"} <= set(written["attacks"]) and written["seconds"] > 0


def bench_cuda_folder(folder, train_subset=10_000, seconds=(12.0, 10.0, 10.0)) -> None:
    """A measurement folder as `bash bench_cuda.sh` leaves it (its OUT), with made-up figures."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "env.txt"), "w") as f:
        f.write("name, memory.total [MiB], driver_version\nNVIDIA H100 80GB HBM3, 81559 MiB, 580.1\n"
                "torch 2.11.0+cu130 13.0 NVIDIA H100 80GB HBM3\n16\n")
    with open(os.path.join(folder, "bench.txt"), "w") as f:  # bench.py's default --models: resnet18 and wrn34_10
        f.write("== bench.py\n4. resnet18   float32   1400 img/s    2.5 GiB    59.0 min / 100 epochs\n"
                "4. wrn34_10   float32   300 img/s    9.0 GiB    270.0 min / 100 epochs\n"
                "4. resnet18   bf16 + channels_last   1500 img/s    2.5 GiB    55.0 min / 100 epochs\n"
                "4. wrn34_10   bf16 + channels_last   600 img/s    9.0 GiB    135.0 min / 100 epochs\n")
    for name in ("log-fp32.jsonl", "log-bf16.jsonl"):
        with open(os.path.join(folder, name), "w") as f:
            f.writelines(json.dumps({"epoch": i + 1, "seconds": s, "val_pgd_acc": 0.2}) + "\n" for i, s in enumerate(seconds))
    with open(os.path.join(folder, "args-fp32.json"), "w") as f:
        json.dump({"train_subset": train_subset, "epochs": len(seconds)}, f)
    with open(os.path.join(folder, "eval-bf16.json"), "w") as f:
        json.dump({"n": 1000, "seconds": 40.0, "clean": {"accuracy": 0.4}, "pgd-20": {"accuracy": 0.25, "seconds": 0.5},
                   "cascade": {"accuracy": 0.2, "seconds": 39.0}, **{f"+{a}": {"seconds": 9.0} for a in
                                                                       ("apgd-ce", "apgd-t", "fab-t", "square")}}, f)


FAKE_PYTHON = r"""#!/usr/bin/env bash
# Stands in for python on a GPU machine: each command bench_cuda.sh runs prints or writes what the real one would.
args=("$@"); val() { for ((i = 0; i < ${#args[@]}; i++)); do [ "${args[$i]}" = "$1" ] && echo "${args[$((i + 1))]}"; done; }
case "$1" in
  -c) echo "torch 2.11.0+cu130 13.0 NVIDIA H100 80GB HBM3" ;;
  -m) echo "5 passed" ;;
  bench.py) echo "4. resnet18   float32   1400 img/s    2.5 GiB    59.0 min / 100 epochs" ;;
  train.py) out=$(val --out-dir); mkdir -p "$out"; touch "$out/last.pt"
            echo "{\"train_subset\": $(val --train-subset), \"epochs\": 3, \"dataset\": \"npz\"}" > "$out/args.json"
            for e in 1 2 3; do echo "{\"epoch\": $e, \"seconds\": 10.0, \"val_nat_acc\": 0.3, \"val_pgd_acc\": 0.2}"; done > "$out/log.jsonl" ;;
  evaluate.py) out=$(val --out); touch "${out%.json}-mask.npz"
               echo '{"n": 1000, "seconds": 40.0, "clean": {"accuracy": 0.4}, "pgd-20": {"accuracy": 0.25, "seconds": 0.5},
                      "cascade": {"accuracy": 0.2, "seconds": 39.0}, "+apgd-ce": {"seconds": 9.0}, "+apgd-t": {"seconds": 9.0},
                      "+fab-t": {"seconds": 9.0}, "+square": {"seconds": 12.0}}' > "$out" ;;
  *) exec "$REAL_PYTHON" "$@" ;;
esac
"""


def test_bench_cuda_sh_leaves_the_8_files_gpu_record_reads_and_clears_an_earlier_runs(tmp_path):
    """bash bench_cuda.sh end to end with `python` and `nvidia-smi` standing in for a GPU machine's: OUT (a path
    relative to the caller's folder) ends with exactly the 8 files its header names, a stale file of an earlier run
    is gone, and tools/gpu_record.py turns the folder into a record of the images and epochs the script ran."""
    import gpu_record
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text(FAKE_PYTHON)
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'name, memory.total [MiB], driver_version'\n"
                                     "echo 'NVIDIA H100 80GB HBM3, 81559 MiB, 580.1'\necho 'NVIDIA H100 80GB HBM3, 81559 MiB, 580.1'\n")
    for tool in ("python", "nvidia-smi"):
        os.chmod(fake / tool, 0o755)
    caller = tmp_path / "caller"
    (caller / "out").mkdir(parents=True)
    (caller / "out" / "eval-bf16.json").write_text("{}")  # left by an earlier run: must not survive
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "REAL_PYTHON": sys.executable, "OUT": "out",
           "RUNS": str(tmp_path / "runs")}
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "test"):
        (data / f"cifar10_{split}.npz").write_bytes(b"")
    done = subprocess.run(["bash", os.path.join(ROOT, "bench_cuda.sh"), str(data)], cwd=caller, env=env,
                          capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(caller / "out")) == sorted(["env.txt", "cuda-checks.txt", "bench.txt", "log-fp32.jsonl",
                                                         "log-bf16.jsonl", "args-fp32.json", "eval-bf16.json", "runs.txt"])
    assert json.loads((caller / "out" / "eval-bf16.json").read_text())["n"] == 1000
    assert f"python tools/gpu_record.py {caller / 'out'} --commit" in done.stdout
    out = str(tmp_path / "gpu.json")
    gpu_record.main([str(caller / "out"), "--commit", "HEAD", "--date", "2026-12-07", "--results", out])
    r = json.load(open(out))
    assert r["setting"]["train_images"] == 10_000 and "--epochs 3" in r["commands"]["train"]
    assert "--train-subset 10000" in r["commands"]["train"] and r["provenance"]["machine"]["device"] == "NVIDIA H100 80GB HBM3"
    assert r["commands"]["bench"] == "python bench.py --device cuda --quick --models resnet18"


def test_gpu_record_reads_the_folder_bench_cuda_sh_writes_and_scales_a_subsets_epochs(tmp_path):
    """tools/gpu_record.py on a measurement folder: it keeps ResNet-18's bench lines only (bench.py also times a
    WRN-34-10 by default), records the images the epochs were measured on, and the GPU time derived from it scales a
    10,000-image epoch to the whole training split."""
    import experiments
    import gpu_record
    folder, out = str(tmp_path / "bench-cuda-out"), str(tmp_path / "gpu.json")
    bench_cuda_folder(folder)
    gpu_record.main([folder, "--commit", "HEAD", "--date", "2026-12-07", "--results", out])
    r = json.load(open(out))
    assert [row["images_per_s"] for row in r["bench"]] == [1400, 1500]
    assert r["setting"]["train_images"] == 10_000 and r["commands"]["bench"] == "python bench.py --device cuda --quick"
    assert "--train-subset 10000" in r["commands"]["train"]
    assert "--epochs 3" in r["commands"]["train"] and r["provenance"]["machine"]["device"] == "NVIDIA H100 80GB HBM3"
    hours = experiments.gpu_hours("cifar10", 1, 100, 0, gpu=r)
    assert hours["epoch_seconds"] == pytest.approx(10.0 * 4.9)  # the epochs after the first (12 s: 2 s of warm-up)
    whole = str(tmp_path / "whole")  # a folder measured on the whole split (no args-fp32.json: train.py's default)
    bench_cuda_folder(whole)
    os.remove(os.path.join(whole, "args-fp32.json"))
    gpu_record.main([whole, "--commit", "HEAD", "--date", "2026-12-07", "--results", out])
    assert experiments.gpu_hours("cifar10", 1, 100, 0, gpu=json.load(open(out)))["epoch_seconds"] == pytest.approx(10.0)
    assert "epochs 1, 2, 3 |" in experiments.gpu_table(json.load(open(out)))
    os.remove(os.path.join(whole, "eval-bf16.json"))  # a folder whose evaluation failed: refused, nothing written
    os.remove(out)
    with pytest.raises(SystemExit):
        gpu_record.main([whole, "--commit", "HEAD", "--date", "2026-12-07", "--results", out])
    assert not os.path.exists(out)
