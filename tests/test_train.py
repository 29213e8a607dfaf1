import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import methods
import train
from conftest import HANG_TIMEOUT, ROOT, TINY_RUN, tiny_train_args
from models import load_checkpoint, load_model

LOG_KEYS = {"epoch", "lr", "train_loss", "train_nat_acc", "train_adv_acc", "val_nat_acc", "val_pgd_acc",
            "test_nat_acc", "test_pgd_acc", "E_nat", "E_adv", "delta_E", "Exy_nat", "Exy_adv", "delta_Exy",
            "weight_mean", "seconds"}
OPTIONAL = {"test_nat_acc", "test_pgd_acc"}  # None in epochs without --test-every


def read_log(out_dir):
    with open(os.path.join(out_dir, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def without_seconds(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=HANG_TIMEOUT)


def test_smoke_settings_yield_to_flags_given_explicitly(tmp_path):
    args = train.resolve_args(train.build_parser().parse_args(["--smoke", "--epochs", "3", "--width", "4",
                                                               "--out-dir", str(tmp_path)]))
    assert (args.epochs, args.width, args.dataset, args.batch_size) == (3, 4, "synthetic", train.SMOKE["batch_size"])


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


@pytest.mark.parametrize("method", [["--weat", "adv"], ["--weat", "nat"], ["--loss", "sat"], ["--loss", "mart"],
                                    ["--loss", "mail-tr"], ["--loss", "natural"],
                                    ["--weat", "adv", "--weat-terms", "kl", "--weat-normalize", "--weat-fn", "uniform"]])
def test_each_method_trains_and_logs_sensible_numbers(tmp_path, method):
    rows = train.run(tiny_train_args(tmp_path, *method))
    for row in rows:
        assert LOG_KEYS <= set(row) and all(isinstance(row[k], float) for k in LOG_KEYS - {"epoch"} - OPTIONAL)
        assert 0 <= row["val_pgd_acc"] <= row["val_nat_acc"] + 0.1 and 0 <= row["train_adv_acc"] <= 1
        torch.testing.assert_close(row["delta_E"], row["E_nat"] - row["E_adv"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(row["delta_Exy"], row["Exy_nat"] - row["Exy_adv"], rtol=1e-5, atol=1e-5)
        if method[0] == "--weat":
            assert 0 < row["weight_mean"] < 1 / 0.693 + 1e-6
        elif method == ["--loss", "mail-tr"] and row["epoch"] > 1:  # after its burn-in (60% of 2 epochs)
            assert 0 < row["weight_mean"] < 3 and row["weight_mean"] != 1.0
        else:
            assert row["weight_mean"] == 1.0
    assert rows[-1]["lr"] < rows[0]["lr"]  # OneCycle annealed


def test_method_names_spell_out_the_ablations(tmp_path):
    name = lambda *flags: methods.method_name(vars(tiny_train_args(tmp_path, *flags)))  # noqa: E731
    assert name("--weat", "adv") == "weat-adv"
    assert name("--weat", "adv", "--weat-terms", "kl", "--weat-normalize", "--weat-fn", "uniform") == \
        "weat-adv-kl-only-normalized-uniform"
    assert name("--loss", "sat") == "sat"


def test_every_method_of_the_table_has_a_train_py_spelling_its_attack_and_beta(tmp_path):
    for key, method in methods.METHODS.items():
        args = tiny_train_args(tmp_path, *method.flags)
        assert methods.method_key(vars(args)) == key and method.attack in methods.TRAINING_ATTACKS
        assert args.beta == method.default_beta("synthetic")
    assert tiny_train_args(tmp_path, "--loss", "sat").beta is None  # SAT's loss has no beta
    cifar100 = train.resolve_args(train.build_parser().parse_args(["--weat", "adv", "--dataset", "cifar100"]))
    assert cifar100.beta == 7.0  # the paper's WEAT setting on CIFAR-100


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
    real_loss = methods.trades_loss
    calls = {"n": 0}

    def nan_in_epoch_2(*args, **kwargs):
        calls["n"] += 1
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 6 else loss  # 500 images / batch 100: call 6 is epoch 2, step 0

    monkeypatch.setattr(methods, "trades_loss", nan_in_epoch_2)
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
    (["--train-subset", "400", "--epochs", "1"], "cannot run exactly 4 optimizer steps (1 epochs x 4 batches)"),
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


def test_channels_last_is_the_cpu_default_and_can_be_turned_off(tmp_path):
    assert tiny_train_args(tmp_path).channels_last is True  # the tiny runs are on the CPU
    assert tiny_train_args(tmp_path, "--no-channels-last").channels_last is False
    assert tiny_train_args(tmp_path, "--channels-last").channels_last is True


def test_compile_failure_is_a_clear_training_error(tmp_path, monkeypatch):
    class NoCompiler(torch.nn.Module):  # what torch.compile hands back where the first call fails
        def forward(self, x):
            raise RuntimeError("no C++ compiler found\nlong traceback")

    monkeypatch.setattr(torch, "compile", lambda model: NoCompiler())
    with pytest.raises(train.TrainingError, match=r"--compile is not available here \(RuntimeError: no C\+\+ compiler"):
        train.run(tiny_train_args(tmp_path, "--compile"))
    assert not (tmp_path / "last.pt").exists()


def test_piecewise_schedule_drops_tenfold_at_half_and_three_quarters_and_onecycle_cycles_momentum(tmp_path):
    used = {}
    for schedule in ("piecewise", "onecycle"):
        args = tiny_train_args(tmp_path, "--lr-schedule", schedule, "--epochs", "8")
        optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=args.lr, momentum=args.momentum)
        scheduler = train.build_scheduler(optimizer, args, steps_per_epoch=5)
        used[schedule] = {}
        for epoch in range(1, 9):
            for _ in range(5):  # the rate and momentum each step of the epoch trains with
                group = optimizer.param_groups[0]
                used[schedule].setdefault(epoch, set()).add((round(group["lr"], 12), group["momentum"]))
                optimizer.step()
                scheduler.step()
    piecewise = used["piecewise"]
    assert [piecewise[e] for e in range(1, 9)] == [{(0.1, 0.9)}] * 4 + [{(0.01, 0.9)}] * 2 + [{(0.001, 0.9)}] * 2
    momenta = {m for steps in used["onecycle"].values() for _, m in steps}
    assert min(momenta) == pytest.approx(0.85) and max(momenta) == pytest.approx(0.95)  # not --momentum 0.9


@pytest.mark.parametrize("augment", ["crop-flip", "crop-flip --crop-padding 1", "flip", "none"])
def test_augment_crops_and_flips_flips_alone_or_trains_on_the_images_as_they_are(tmp_path, augment):
    args = tiny_train_args(tmp_path, "--augment", *augment.split())
    data = train.load_data(args.dataset, args.data_dir, args.train_npz, args.test_npz, args.val_npz,
                           args.val_size, args.train_subset, args.seed)
    batches = train.build_training(args, data, rank=0, world=1).train_batches
    x, _, index = next(iter(batches))
    stored = data.train.images[index].float() / 255
    as_stored = [torch.equal(a, b) for a, b in zip(x, stored)]
    mirrored = [torch.equal(a, b.flip(-1)) for a, b in zip(x, stored)]
    either = [s or m for s, m in zip(as_stored, mirrored)]
    if augment == "none":
        assert all(as_stored)
    elif augment == "flip":  # every image as stored or mirrored, some of each
        assert all(either) and any(as_stored) and any(mirrored) and not all(as_stored)
    else:  # crops move most images off both, by at most --crop-padding pixels
        assert sum(either) < len(either) / 2
        pad = args.crop_padding
        assert batches.images.shape[-1] == data.train.images.shape[-1] + 2 * pad


def test_crop_padding_is_refused_without_crops_or_below_one(tmp_path):
    for extra in (["--augment", "flip", "--crop-padding", "2"], ["--crop-padding", "0"]):
        with pytest.raises(ValueError, match="--crop-padding"):
            tiny_train_args(tmp_path, *extra)


def test_lr_drops_move_the_piecewise_drops_and_bad_drops_are_refused(tmp_path):
    args = tiny_train_args(tmp_path, "--lr-schedule", "piecewise", "--epochs", "8", "--lr-drops", "2", "7")
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=args.lr)
    scheduler = train.build_scheduler(optimizer, args, steps_per_epoch=3)
    rates = []
    for _ in range(8):
        rates.append(round(optimizer.param_groups[0]["lr"], 12))
        for _ in range(3):
            optimizer.step()
            scheduler.step()
    assert rates == [0.1, 0.1, 0.01, 0.01, 0.01, 0.01, 0.01, 0.001]  # x0.1 after epochs 2 and 7
    for drops, extra in ((["2", "8"], []), (["5", "3"], []), (["0"], []), (["3"], ["--lr-schedule", "onecycle"])):
        with pytest.raises(ValueError, match="--lr-drops"):
            tiny_train_args(tmp_path, "--epochs", "8", "--lr-schedule", "piecewise", *extra, "--lr-drops", *drops)


def scripted_validation(monkeypatch, accuracies):
    """Make the per-epoch validation return the given PGD accuracies in turn."""
    calls = iter(accuracies)
    monkeypatch.setattr(train, "evaluate_pgd", lambda *a: (0.5, next(calls)) if len(a[1]) else (None, None))


@pytest.mark.parametrize("rule,epoch", [("best", 2), ("best-late", 5), ("last", 5)])
def test_select_decides_which_epoch_best_pt_holds(tmp_path, monkeypatch, rule, epoch):
    scripted_validation(monkeypatch, [0.1, 0.3, 0.2, 0.3, 0.15])
    rows = train.run(tiny_train_args(tmp_path, "--epochs", "5", "--select", rule, "--energy-snapshot", "0"))
    assert [r["val_pgd_acc"] for r in rows] == [0.1, 0.3, 0.2, 0.3, 0.15]
    assert load_checkpoint(str(tmp_path / "best.pt"))["epoch"] == epoch
    assert train.select_epoch(rows, rule, 5) == epoch


def test_best_late_chooses_among_10_percent_of_the_epochs_and_below_15_only_the_last():
    assert [train.late_epochs(e) for e in (1, 6, 14, 15, 24, 100)] == [1, 1, 1, 2, 2, 10]  # round(1.5) = 2
    assert train.best_is_last("best-late", 6) and train.best_is_last("best-late", 14) and train.best_is_last("last", 100)
    assert not train.best_is_last("best-late", 15) and not train.best_is_last("best", 6)
    history = [{"epoch": e, "val_pgd_acc": 0.5 - 0.01 * e} for e in range(1, 7)]  # validation falls every epoch
    assert train.select_epoch(history, "best-late", 6) == 6 and train.select_epoch(history + [
        {"epoch": e, "val_pgd_acc": 0.1} for e in range(7, 16)], "best-late", 15) == 14


def test_select_energy_keeps_the_epoch_of_the_energy_rule(tmp_path):
    from energy import energy_pick
    rows = train.run(tiny_train_args(tmp_path, "--epochs", "4", "--select", "energy", "--energy-snapshot", "0"))
    assert load_checkpoint(str(tmp_path / "best.pt"))["epoch"] == energy_pick(rows)


def test_training_on_every_image_test_every_and_energy_snapshots(tmp_path):
    rows = train.run(tiny_train_args(tmp_path, "--val-size", "0", "--select", "last", "--epochs", "3",
                                     "--test-every", "2", "--test-examples", "40", "--test-steps", "3",
                                     "--energy-snapshot", "700", "--log-every", "1"))  # more than the 600 images
    assert all(r["val_pgd_acc"] is None and r["val_nat_acc"] is None for r in rows)
    assert [r["test_pgd_acc"] is not None for r in rows] == [False, True, True]  # every 2nd epoch and the last
    assert 0 <= rows[1]["test_pgd_acc"] <= rows[1]["test_nat_acc"] <= 1
    assert load_checkpoint(str(tmp_path / "best.pt"))["epoch"] == 3
    for row in rows:  # all 600 training images are in the snapshot: its mean is the logged mean energy
        with np.load(tmp_path / "energy-snapshots" / f"epoch-{row['epoch']:04d}.npz") as f:
            assert f["E_x"].shape == (600,) and np.isfinite(f["E_x"]).all() and (f["label"] == np.arange(600) % 10).all()
            assert f["E_x"].mean() == pytest.approx(row["E_nat"], rel=1e-4)
            assert f["E_xy_adv"].mean() == pytest.approx(row["Exy_adv"], rel=1e-4)
    result = cli(*TINY_RUN, "--val-size", "0", "--out-dir", str(tmp_path / "refused"))
    assert result.returncode == 2 and "--select best-late needs a validation split" in result.stderr


def test_every_method_logs_the_same_natural_energies_from_its_eval_mode_forward(tmp_path):
    """One step from the same initial weights and batch: SAT's, TRADES' and MART's logged E(x) are the same
    (no train-mode BatchNorm statistics in them), while their attacks, hence E(x*), differ."""
    rows = {}
    for method in ("sat", "trades", "mart"):
        rows[method] = train.run(tiny_train_args(tmp_path / method, "--loss", method, "--epochs", "1",
                                                 "--train-subset", "100", "--batch-size", "100",
                                                 "--val-size", "0", "--select", "last", "--energy-snapshot", "0"))[0]
    assert rows["sat"]["E_nat"] == rows["trades"]["E_nat"] == rows["mart"]["E_nat"]
    assert rows["sat"]["Exy_nat"] == rows["trades"]["Exy_nat"] and rows["sat"]["train_nat_acc"] == rows["trades"]["train_nat_acc"]
    assert rows["sat"]["E_adv"] != rows["trades"]["E_adv"]


def test_logging_logits_are_an_eval_mode_forward_that_leaves_batchnorm_alone():
    from models import build_model
    torch.manual_seed(0)
    model = build_model("resnet18", 10, width=4)
    model.train()(torch.rand(16, 3, 32, 32))  # BatchNorm running statistics away from their start
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, x_adv = torch.rand(8, 3, 32, 32), torch.rand(8, 3, 32, 32)
    logits_nat, logits_adv = train.logging_logits(model, x, x_adv)
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(logits_nat, model(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(logits_adv, model(x_adv), rtol=1e-5, atol=1e-5)


LOGGED = ("train_nat_acc", "train_adv_acc", "E_nat", "E_adv", "delta_E", "Exy_nat", "Exy_adv", "delta_Exy")


def test_logging_every_step_with_the_attacks_logits_equals_a_fresh_forward_of_x_and_x_adv(tmp_path, monkeypatch):
    """--log-every 1: TRADES' logged means, with its attack's eval-mode logits of x reused, are those of a
    fresh eval-mode forward of x and x* on every step (the logging of earlier versions); training is untouched."""
    reused = train.run(tiny_train_args(tmp_path / "reused", "--log-every", "1", "--epochs", "1"))
    real = train.logging_logits
    monkeypatch.setattr(train, "logging_logits", lambda model, x, x_adv, logits_nat=None: real(model, x, x_adv))
    fresh = train.run(tiny_train_args(tmp_path / "fresh", "--log-every", "1", "--epochs", "1"))
    for a, b in zip(reused, fresh):
        assert a["logged_points"] == b["logged_points"] == 500 and a["train_loss"] == b["train_loss"]
        assert {k: a[k] for k in LOGGED} == pytest.approx({k: b[k] for k in LOGGED}, rel=1e-5, abs=1e-6)
    a, b = (load_checkpoint(str(tmp_path / d / "last.pt"))["model"] for d in ("reused", "fresh"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_log_every_samples_steps_while_the_loss_and_the_snapshots_see_every_step(tmp_path):
    every = train.run(tiny_train_args(tmp_path / "every", "--log-every", "1", "--energy-snapshot", "300", "--epochs", "1"))
    sampled = train.run(tiny_train_args(tmp_path / "sampled", "--log-every", "2", "--energy-snapshot", "300", "--epochs", "1"))
    for a, b in zip(every, sampled):
        assert (a["logged_points"], b["logged_points"]) == (500, 300)  # 5 steps of 100: steps 0, 2 and 4 logged
        assert a["train_loss"] == b["train_loss"] and a["weight_mean"] == b["weight_mean"]
        for key in LOGGED:  # a sample of the same epoch's batches: close, not equal
            assert b[key] == pytest.approx(a[key], abs=0.25) and b[key] != a[key]
        snaps = [np.load(tmp_path / d / "energy-snapshots" / f"epoch-{a['epoch']:04d}.npz") for d in ("every", "sampled")]
        for key in ("E_x", "E_xy", "E_x_adv", "E_xy_adv"):  # every snapshot point, logged step or not
            assert np.isfinite(snaps[1][key]).all()
            np.testing.assert_allclose(snaps[1][key], snaps[0][key], rtol=1e-5, atol=1e-5)


def test_val_all_adds_the_other_held_out_images_and_moves_no_other_figure(tmp_path):
    """--val-all attacks the held-out images past --eval-examples in a stream of its own: every other logged
    figure is the same as without it (test pass included), and its figure pools both parts."""
    flags = ["--loss", "sat", "--test-every", "1", "--test-examples", "50"]
    plain = train.run(tiny_train_args(tmp_path / "plain", *flags))
    full = train.run(tiny_train_args(tmp_path / "all", *flags, "--val-all"))
    assert without_seconds(plain) == [{k: v for k, v in row.items() if not k.startswith("val_all")}
                                      for row in without_seconds(full)]
    for row in full:  # 100 held out, the first 50 in val_pgd_acc: the pool is a multiple of 1/100 within both
        assert abs(100 * row["val_all_pgd_acc"] - round(100 * row["val_all_pgd_acc"])) < 1e-6
        assert 0 <= row["val_all_pgd_acc"] <= row["val_all_nat_acc"] <= 1
    assert train.validation_key(full) == "val_all_pgd_acc" and train.validation_key(plain) == "val_pgd_acc"
    best = max(full, key=lambda r: (r["val_all_pgd_acc"], -r["epoch"]))["epoch"]
    assert train.select_epoch(full, "best", 2) == best


def test_sat_der_with_beta_0_is_sat_to_the_bit(tmp_path):
    """SAT + DER reads f(x) without moving BatchNorm's running statistics: with beta 0 its log and weights are
    SAT's exactly (the penalty's effect on the gaps is measured in the claims runs, not here)."""
    one_epoch = ["--epochs", "1", "--lr", "0.05"]  # 5 steps: BatchNorm's running statistics move on every one
    sat = train.run(tiny_train_args(tmp_path / "sat", "--loss", "sat", *one_epoch))
    der0 = train.run(tiny_train_args(tmp_path / "der0", "--loss", "sat-der", "--beta", "0", *one_epoch))
    assert without_seconds(sat) == without_seconds(der0)
    a, b = (load_checkpoint(str(tmp_path / name / "last.pt"))["model"] for name in ("sat", "der0"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    der = train.run(tiny_train_args(tmp_path / "der", "--loss", "sat-der", "--beta", "1", "--der-gamma", "0.01", *one_epoch))
    assert der[0]["train_loss"] != sat[0]["train_loss"] and all(np.isfinite(r["train_loss"]) for r in der)


def test_der_gamma_belongs_to_sat_der():
    for flags, message in ((["--der-gamma", "0.5"], "--der-gamma is the hinge of --loss sat-der"),
                           (["--loss", "sat-der", "--der-gamma", "-1"], "must not be negative")):
        with pytest.raises(ValueError, match=message):
            train.resolve_args(train.build_parser().parse_args(TINY_RUN + flags))


@pytest.mark.parametrize("flags,message", [
    (["--train-npz", "mine.npz", "--test-npz", "mine.npz"], "are read with --dataset npz, not --dataset cifar10"),
    (["--device", "foo"], "--device foo: not a device name"),
    (["--device", "cuda:7"], "no such GPU here"),
    (["--loss", "sat", "--beta", "3"], "--beta weighs a regulariser; SAT has none"),
    (["--mail-burn-in", "3"], "--mail-burn-in is MAIL-TR's; it cannot be used with TRADES"),
])
def test_flags_that_would_be_ignored_or_fail_deep_in_torch_are_refused_before_any_work(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as e:
        train.main(["--out-dir", str(tmp_path / "run"), *flags])
    assert e.value.code == 2 and message in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_resume_takes_another_spelling_of_the_folder_and_another_device(tmp_path):
    train.run(tiny_train_args(tmp_path / "run"))
    again = tiny_train_args(str(tmp_path / "run") + "/", "--resume", "--no-channels-last")
    train.run(again)  # a trailing slash and channels-last off (as on a GPU) are not other settings
    assert [r["epoch"] for r in read_log(tmp_path / "run")] == [1, 2]


def test_a_kill_between_last_pt_and_best_pt_is_repaired_on_resume(tmp_path):
    train.run(tiny_train_args(tmp_path / "run", "--select", "last"))
    stale = load_checkpoint(str(tmp_path / "run" / "best.pt"))
    stale["epoch"] = 1  # as if killed after epoch 2's last.pt, before its best.pt: best.pt still holds epoch 1
    torch.save(stale, tmp_path / "run" / "best.pt")
    train.run(tiny_train_args(tmp_path / "run", "--select", "last", "--resume"))
    best, last = load_checkpoint(str(tmp_path / "run" / "best.pt")), load_checkpoint(str(tmp_path / "run" / "last.pt"))
    assert best["epoch"] == last["epoch"] == 2 and all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])
