import json
import os
import subprocess
import sys

import pytest
import torch

import train
from conftest import ROOT, TINY_RUN, tiny_train_args
from models import load_checkpoint, load_model

LOG_KEYS = {"epoch", "lr", "train_loss", "train_nat_acc", "train_adv_acc", "val_nat_acc", "val_pgd_acc",
            "E_nat", "E_adv", "delta_E", "weight_mean", "seconds"}


def read_log(out_dir):
    with open(os.path.join(out_dir, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def without_seconds(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_smoke_cli_end_to_end(tmp_path):
    result = cli("--smoke", "--out-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    rows = read_log(tmp_path / "run")
    assert [r["epoch"] for r in rows] == [1, 2] and LOG_KEYS <= set(rows[0])
    assert "epoch 2/2" in result.stdout and "dataset=synthetic" in result.stdout
    with open(tmp_path / "run" / "args.json") as f:
        assert json.load(f)["epochs"] == 2
    model, ckpt = load_model(str(tmp_path / "run" / "best.pt"))
    assert ckpt["model_config"]["width"] == 8 and ckpt["metrics"]["epoch"] in (1, 2)
    assert load_checkpoint(str(tmp_path / "run" / "last.pt"))["epoch"] == 2


@pytest.mark.parametrize("method", [["--weat", "adv"], ["--weat", "nat"], ["--loss", "sat"],
                                    ["--weat", "adv", "--weat-terms", "kl", "--weat-normalize", "--weat-fn", "uniform"]])
def test_each_method_trains_and_logs_sensible_numbers(tmp_path, method):
    rows = train.run(tiny_train_args(tmp_path, *method))
    for row in rows:
        assert LOG_KEYS <= set(row) and all(isinstance(row[k], float) for k in LOG_KEYS - {"epoch"})
        assert 0 <= row["val_pgd_acc"] <= row["val_nat_acc"] + 0.1 and 0 <= row["train_adv_acc"] <= 1
        torch.testing.assert_close(row["delta_E"], row["E_nat"] - row["E_adv"], rtol=1e-5, atol=1e-5)
        weighted = method[0] == "--weat"
        assert (0 < row["weight_mean"] < 1 / 0.693 + 1e-6) if weighted else row["weight_mean"] == 1.0
    assert rows[-1]["lr"] < rows[0]["lr"]  # OneCycle annealed


def test_method_names_spell_out_the_ablations(tmp_path):
    assert train.method_name(tiny_train_args(tmp_path, "--weat", "adv")) == "weat-adv"
    args = tiny_train_args(tmp_path, "--weat", "adv", "--weat-terms", "kl", "--weat-normalize", "--weat-fn", "uniform")
    assert train.method_name(args) == "weat-adv-kl-only-normalized-uniform"
    assert train.method_name(tiny_train_args(tmp_path, "--loss", "sat")) == "sat"


def test_resume_after_an_interruption_gives_the_same_weights_and_log(tmp_path, monkeypatch):
    train.run(tiny_train_args(tmp_path / "straight"))
    real_epoch = train.train_epoch

    def crash_in_epoch_2(*args):
        if args[5] == 2:  # (model, batches, optimizer, scheduler, args, epoch, ...)
            raise KeyboardInterrupt
        return real_epoch(*args)

    monkeypatch.setattr(train, "train_epoch", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train.run(tiny_train_args(tmp_path / "resumed"))
    monkeypatch.setattr(train, "train_epoch", real_epoch)
    train.run(tiny_train_args(tmp_path / "resumed", "--resume"))
    a = load_checkpoint(str(tmp_path / "straight" / "last.pt"))["model"]
    b = load_checkpoint(str(tmp_path / "resumed" / "last.pt"))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert without_seconds(read_log(tmp_path / "straight")) == without_seconds(read_log(tmp_path / "resumed"))


def test_non_finite_loss_stops_with_the_epoch_and_step_and_keeps_last_pt(tmp_path, monkeypatch):
    real_loss = train.trades_loss
    calls = {"n": 0}

    def nan_in_epoch_2(*args, **kwargs):
        calls["n"] += 1
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 6 else loss  # 500 images / batch 100: call 6 is epoch 2, step 0

    monkeypatch.setattr(train, "trades_loss", nan_in_epoch_2)
    args = tiny_train_args(tmp_path)
    with pytest.raises(train.TrainingError, match="epoch 2, step 0"):
        train.run(args)
    assert load_checkpoint(str(tmp_path / "last.pt"))["epoch"] == 1
    assert [r["epoch"] for r in read_log(tmp_path)] == [1]


@pytest.mark.parametrize("flags,message", [
    (["--dataset", "mnist"], "invalid choice"),
    (["--dataset", "npz", "--train-npz", "missing.npz", "--test-npz", "missing.npz"], "npz file not found"),
    (["--loss", "sat", "--weat", "adv"], "cannot be used with --loss sat"),
    (["--eps", "0"], "--eps must be positive"),
    (["--weat-terms", "kl"], "need --weat nat|adv"),
])
def test_bad_input_gets_a_one_line_error_and_writes_nothing(tmp_path, flags, message):
    out = tmp_path / "run"
    result = cli(*TINY_RUN, "--out-dir", str(out), *flags, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2  # argparse adds its usage line
    assert not out.exists()


def test_npz_without_image_key_and_an_occupied_out_dir(tmp_path):
    import numpy as np
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((4, 8, 8, 3), np.uint8), label=np.arange(4))
    result = cli(*TINY_RUN, "--dataset", "npz", "--train-npz", str(bad), "--test-npz", str(bad),
                 "--out-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "lacks key(s) ['image']" in result.stderr and not (tmp_path / "run").exists()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "args.json").write_text("{}")
    result = cli(*TINY_RUN, "--out-dir", str(tmp_path / "old"))
    assert result.returncode == 2 and "holds another run" in result.stderr
    assert (tmp_path / "old" / "args.json").read_text() == "{}"


def test_help_documents_every_flag_with_its_default():
    text = cli("--help").stdout
    for action in train.build_parser()._actions:
        for flag in action.option_strings:
            assert flag in text
    assert "(default: 128)" in text and "(default: trades)" in text


def test_bf16_run_learns_and_its_logits_stay_within_bf16_tolerance_of_float32(tmp_path):
    rows = train.run(tiny_train_args(tmp_path, "--amp", "bf16", "--weat", "adv", "--epochs", "3"))
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]  # it learns
    model, _ = load_model(str(tmp_path / "last.pt"))
    from data import synthetic_split
    x = synthetic_split(64, seed=5).images.float() / 255
    model.eval()
    with torch.no_grad():
        exact = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x).float()
    # bf16 keeps 8 significant bits (relative step 2^-8 ~ 0.4%); after ~20 layers allow a few percent
    assert (low - exact).abs().max() <= 0.05 * exact.abs().max() + 0.02
    assert (low.argmax(1) == exact.argmax(1)).float().mean() >= 0.9


def test_channels_last_gives_the_float32_logits_and_trains(tmp_path):
    rows = train.run(tiny_train_args(tmp_path, "--channels-last", "--epochs", "1"))
    assert rows[0]["train_loss"] > 0
    model, _ = load_model(str(tmp_path / "last.pt"))
    x = torch.rand(8, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last)),
                                   model.to(memory_format=torch.contiguous_format)(x), rtol=1e-4, atol=1e-5)


def test_compile_failure_is_a_clear_training_error(tmp_path, monkeypatch):
    class NoCompiler(torch.nn.Module):  # what torch.compile hands back where the first call fails
        def forward(self, x):
            raise RuntimeError("no C++ compiler found\nlong traceback")

    monkeypatch.setattr(torch, "compile", lambda model: NoCompiler())
    with pytest.raises(train.TrainingError, match=r"--compile is not available here \(RuntimeError: no C\+\+ compiler"):
        train.run(tiny_train_args(tmp_path, "--compile"))
    assert not (tmp_path / "last.pt").exists()
