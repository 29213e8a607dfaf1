import json
import os
import subprocess
import time

import pytest

import experiments


def smoke_argv(tmp_path):
    """The smoke set with three of its six methods (the suite's time; test_train trains all six)."""
    return ["smoke", "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"),
            "--methods", "sat,trades,weat-adv"]


def kill_after_first_epoch(cmd):
    """Start a train.py command and SIGKILL it once its first epoch is logged (last.pt is written first)."""
    log = os.path.join(cmd[cmd.index("--out-dir") + 1], "log.jsonl")
    process = subprocess.Popen(cmd, cwd=experiments.ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (os.path.exists(log) and open(log).read().count("\n") >= 1):
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    process.kill()
    process.wait()
    raise KeyboardInterrupt


def test_smoke_set_end_to_end_resumes_and_its_table_equals_the_evaluation_files(tmp_path, monkeypatch):
    real_execute, ran = experiments.execute, []

    def interrupted(cmd):
        ran.append(cmd)
        if "train.py" in cmd[1] and cmd[cmd.index("--out-dir") + 1].endswith("trades-s0"):
            kill_after_first_epoch(cmd)
        real_execute(cmd)

    monkeypatch.setattr(experiments, "execute", interrupted)
    with pytest.raises(KeyboardInterrupt):
        experiments.main(smoke_argv(tmp_path))
    assert len(ran) == 3  # sat trained and evaluated, trades cut off in epoch 2
    finished = os.path.join(tmp_path, "runs", "smoke", "sat-s0")
    stamps = {name: os.path.getmtime(os.path.join(finished, name)) for name in ("last.pt", "eval-best.json")}

    monkeypatch.setattr(experiments, "execute", lambda cmd: (ran.append(cmd), real_execute(cmd)))
    del ran[:]
    experiments.main(smoke_argv(tmp_path))
    trained = [cmd for cmd in ran if cmd[1].endswith("train.py")]
    assert [c[c.index("--out-dir") + 1].split(os.sep)[-1] for c in trained] == [
        "trades-s0", "weat-adv-s0"]
    assert "--resume" in trained[0] and "--resume" not in trained[1]  # the cut-off run continues
    assert stamps == {name: os.path.getmtime(os.path.join(finished, name)) for name in stamps}  # not redone
    with open(os.path.join(tmp_path, "runs", "smoke", "trades-s0", "log.jsonl")) as f:
        assert [json.loads(line)["epoch"] for line in f] == [1, 2, 3, 4]

    with open(tmp_path / "results" / "smoke.json") as f:
        table = json.load(f)
    assert [row["method"] for row in table["rows"]] == ["sat", "trades", "weat-adv"]
    for row, run in zip(table["rows"], table["runs"]):
        for prefix in ("", "last_"):
            with open(run[f"{prefix}eval_file"]) as f:
                report = json.load(f)
            assert row[f"{prefix}pgd20"] == report["pgd-20"]["accuracy"] and row[f"{prefix}cascade"] == report["cascade"]["accuracy"]
        assert row["clean"] == run["clean"] and row["n"] == report["n"] == 100
        assert row["clean"] >= 0.3  # the smoke set learns: chance is 10%
    text = (tmp_path / "results" / "smoke.md").read_text()
    sat = table["rows"][0]
    assert (f"| sat | 1 | 100 | {sat['epoch']:.1f} | {100 * sat['clean']:.2f} | {100 * sat['pgd20']:.2f} | "
            f"{100 * sat['cascade']:.2f} | {100 * sat['last_pgd20']:.2f} | {100 * sat['last_cascade']:.2f} |") in text
    assert (tmp_path / "results" / "smoke-energy.png").stat().st_size > 0
    assert os.path.exists(os.path.join(tmp_path, "runs", "smoke", "weat-adv-s0", "samples"))

    del ran[:]
    experiments.main(smoke_argv(tmp_path))  # all finished: nothing but the energy and generation stages runs
    assert all(cmd[1].endswith(("analysis.py", "generate.py")) for cmd in ran)


def test_dry_run_prints_every_command_and_an_estimate(capsys):
    experiments.main(["table-cifar10", "--dry-run", "--seeds", "2"])
    out = capsys.readouterr().out
    assert out.count("train.py") == 12 and out.count("evaluate.py") == 24 and "GPU hours" in out
    assert "--weat nat" in out and "--loss sat" in out and "--loss mart" in out and "--loss mail-tr" in out
    assert "--seed 1" in out and "best.pt" in out and "last.pt" in out
    assert "# methods: sat, trades, mart, mail-tr, weat-nat, weat-adv" in out and "last PGD-20" in out


def test_claims_set_dry_run_lists_its_runs(capsys):
    experiments.main(["claims-cpu", "--dry-run", "--train-npz", "train.npz", "--test-npz", "test.npz"])
    out = capsys.readouterr().out
    assert out.count("train.py") == 20 and "evaluate.py" not in out  # 4 methods x 5 seeds
    assert "--lr-schedule piecewise" in out and "--test-every 1" in out and "--seed 1" in out
    assert "# methods: sat, trades, weat-adv, weat-nat" in out


def test_augmented_claims_set_changes_the_augmentation_and_the_drops():
    plain, augmented = experiments.RUNSETS["claims-cpu"].train_flags, experiments.RUNSETS["claims-cpu-aug"].train_flags
    assert list(augmented[:len(plain)]) == experiments.with_flags(plain, augment="flip")
    assert augmented[len(plain):] == ("--lr-drops", "10", "30")
    assert experiments.with_flags(["--a", "1", "--b"], a=[2, 3], c_d=4) == ["--a", "2", "3", "--b", "--c-d", "4"]


def test_a_folder_with_other_settings_is_refused(tmp_path, capsys):
    folder = tmp_path / "runs" / "smoke" / "sat-s0"
    folder.mkdir(parents=True)
    (folder / "args.json").write_text(json.dumps({"epochs": 7}))
    with pytest.raises(SystemExit) as stop:
        experiments.main(smoke_argv(tmp_path))
    assert stop.value.code == 2 and "other settings (epochs)" in capsys.readouterr().err


def synthetic_claims_log(seed: int, overfits: bool) -> list:
    """60 epochs with the claims schedule: lr drops after epochs 30 and 45; an overfitting run's test PGD
    peaks after the first drop and falls while its energy gap leaves its band."""
    rng = __import__("random").Random(seed)
    rows = []
    for epoch in range(1, 61):
        lr = 0.1 if epoch < 30 else 0.01 if epoch < 45 else 0.001
        late = max(0, epoch - 32) if overfits else 0
        rows.append({"epoch": epoch, "lr": lr, "train_adv_acc": 0.2 + 0.005 * epoch, "train_loss": 1.0,
                     "delta_E": -0.05 + 0.002 * rng.uniform(-1, 1) - 0.01 * late,
                     "delta_Exy": -0.3 - 0.01 * late, "val_pgd_acc": 0.2 + 0.001 * epoch - 0.002 * late,
                     "test_pgd_acc": 0.2 + (0.03 if 30 <= epoch <= 32 else 0) - 0.003 * late, "test_nat_acc": 0.4})
    return rows


def test_claims_table_and_figure_from_logs(tmp_path, monkeypatch):
    argv = ["claims-cpu", "--methods", "sat,trades", "--seeds", "2", "--runs-dir", str(tmp_path / "runs"),
            "--results-dir", str(tmp_path / "results")]
    args = experiments.build_parser().parse_args(argv)
    runs = experiments.plan(args)
    for run in runs:
        os.makedirs(run.folder)
        with open(os.path.join(run.folder, "log.jsonl"), "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in synthetic_claims_log(run.seed, run.method == "sat"))
    path = experiments.write_results(args, runs)
    table = json.loads((tmp_path / "results" / "claims-cpu.json").read_text())
    assert table["provenance"]["command"].startswith("python ") and table["provenance"]["data"] == []
    sat, trades = table["rows"]
    assert sat["method"] == "sat" and sat["best_epoch"] == 30 and sat["gap"] > 0.08 and trades["gap"] == pytest.approx(0.03)
    # the best 5-epoch mean (epochs 28-32 for SAT: 0.2, 0.2, 0.23, 0.23, 0.23; 29-33 ends at 0.197) against
    # the last 5 epochs, 56-60
    assert sat["peak_test"] == pytest.approx(0.218) and sat["end_test"] == pytest.approx(0.2 - 0.003 * 26)
    assert [r["peak_epochs"] for r in table["runs"] if r["method"] == "sat"] == [[28, 32]] * 2
    assert trades["window_gap"] == pytest.approx(0.018)
    assert sat["dE_last"] < sat["dE_peak"] - 0.2 and trades["dE_last"] == pytest.approx(trades["dE_peak"], abs=0.01)
    energy_sat = [r for r in table["runs"] if r["method"] == "sat"]
    assert all(31 <= r["energy_epoch"] <= 34 for r in energy_sat)  # the gap leaves its band from epoch 33 on
    text = open(path).read()
    assert "| sat | 2 |" in text and "energy pick" in text and (tmp_path / "results" / "claims-cpu.png").stat().st_size > 20_000
    assert "Paired falls" in text and "| sat - trades | 2 |" in text and "| sat s0 | 31 |" in text
    pair = table["paired_falls"][0]  # SAT's fall minus TRADES', seed by seed: 0.218 - 0.122 - 0.018 on both seeds
    assert pair["methods"] == ["sat", "trades"] and pair["difference"] == pytest.approx(0.078) and pair["ci95"] == pytest.approx(0)
    assert sat["best_test_ci95"] == pytest.approx(0)  # both seeds peak alike: a zero-width interval


def test_divergence_lags_read_off_a_synthetic_overfitting_run():
    lags = experiments.divergence_lags(synthetic_claims_log(0, overfits=True))
    # smoothed test PGD peaks at epoch 31 (0.23), ends at 0.122 (epochs 56-60): half its fall reached at 0.176,
    # i.e. 8 epochs of -0.003 after epoch 32 (epoch 40; 41 where the float sum lands a hair above)
    assert lags["peak_epoch"] == 31 and lags["fall"] == pytest.approx(0.108) and lags["half_fall_epoch"] in (40, 41)
    # dE(x,y) = -0.30 - 0.01 (epoch - 32): band over epochs 32-36 is -0.32 +- 3 x 0.0158; it leaves at epoch 39
    assert lags["dExy_leaves_epoch"] == 39 and lags["dExy_lag"] == 39 - lags["half_fall_epoch"]
    assert lags["dExy_timing"] == "accompanies"  # within 2 epochs of the half-fall
    assert [experiments.timing(lag, 40, 40 + lag) for lag in (-3, -2, 2, 3)] == ["precedes", "accompanies", "accompanies", "follows"]
    assert experiments.timing(None, None, 30) == "no fall" and experiments.timing(None, 40, None) == "stays in its band"
    steady = experiments.divergence_lags(synthetic_claims_log(0, overfits=False))
    assert steady["half_fall_epoch"] == 33 and steady["dExy_leaves_epoch"] is None and steady["dExy_lag"] is None
    assert steady["dExy_timing"] == "stays in its band"


def test_mean_interval_is_students_t():
    mean, half = experiments.mean_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == 3.0 and half == pytest.approx(2.776445 * 1.5811388 / 5 ** 0.5, rel=1e-5)  # t(0.975, 4) s / sqrt(n)
    assert experiments.mean_interval([0.7]) == (0.7, None)
