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
