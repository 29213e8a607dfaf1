import json
import os
import subprocess
import time

import numpy as np
import pytest

import experiments


def smoke_argv(tmp_path):
    """The smoke set with two of its six methods (the suite's time; test_train trains all six)."""
    return ["smoke", "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"),
            "--methods", "sat,weat-adv"]


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


def test_smoke_set_end_to_end_resumes_skips_what_is_done_and_its_table_equals_the_evaluation_files(tmp_path, monkeypatch):
    real_execute, ran = experiments.execute, []

    def interrupted(cmd):
        ran.append(cmd)
        if "train.py" in cmd[1] and cmd[cmd.index("--out-dir") + 1].endswith("weat-adv-s0"):
            kill_after_first_epoch(cmd)
        real_execute(cmd)

    monkeypatch.setattr(experiments, "execute", interrupted)
    with pytest.raises(KeyboardInterrupt):
        experiments.main(smoke_argv(tmp_path))
    assert len(ran) == 3  # sat trained and evaluated, weat-adv cut off in epoch 2
    finished = os.path.join(tmp_path, "runs", "smoke", "sat-s0")
    stamps = {name: os.path.getmtime(os.path.join(finished, name)) for name in ("last.pt", "eval-best.json")}

    monkeypatch.setattr(experiments, "execute", lambda cmd: (ran.append(cmd), real_execute(cmd)))
    del ran[:]
    experiments.main(smoke_argv(tmp_path))
    trained = [cmd for cmd in ran if cmd[1].endswith("train.py")]
    assert [c[c.index("--out-dir") + 1].split(os.sep)[-1] for c in trained] == ["weat-adv-s0"]
    assert "--resume" in trained[0] and "--overwrite" not in trained[0]  # the cut-off run continues
    assert stamps == {name: os.path.getmtime(os.path.join(finished, name)) for name in stamps}  # not redone
    with open(os.path.join(tmp_path, "runs", "smoke", "weat-adv-s0", "log.jsonl")) as f:
        assert [json.loads(line)["epoch"] for line in f] == [1, 2, 3, 4]

    with open(tmp_path / "results" / "smoke.json") as f:
        table = json.load(f)
    assert [row["method"] for row in table["rows"]] == ["sat", "weat-adv"]
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
    experiments.main(smoke_argv(tmp_path))  # all finished, the energy and generation stages included: nothing runs
    assert ran == []


def test_dry_run_prints_every_command_and_an_estimate(capsys):
    experiments.main(["table-cifar10", "--dry-run", "--seeds", "2"])
    out = capsys.readouterr().out
    assert out.count("train.py") == 12 and out.count("evaluate.py") == 24 and "hours on one NVIDIA H200" in out
    assert "--weat nat" in out and "--loss sat" in out and "--loss mart" in out and "--loss mail-tr" in out
    assert "--seed 1" in out and "best.pt" in out and "last.pt" in out
    assert "# methods: sat, trades, mart, mail-tr, weat-nat, weat-adv" in out and "last PGD-20" in out


def test_a_dry_run_says_how_far_the_sets_training_has_come(capsys, monkeypatch, tmp_path):
    experiments.main(["claims-cpu", "--dry-run", "--runs-dir", str(tmp_path)])
    assert "# trained so far" not in capsys.readouterr().out  # nothing started: nothing said

    def state(run):
        if run.method == "trades" and run.seed == 0:
            raise experiments.ExperimentError("other settings")
        return {"sat": "done", "sat-der": "partial"}.get(run.method, "new")
    monkeypatch.setattr(experiments, "training_state", state)
    experiments.main(["claims-cpu", "--dry-run", "--runs-dir", str(tmp_path)])
    assert ("# trained so far: 5 of 25 runs done, 5 part-way (the same command resumes them), 1 refused (a folder "
            "holds a run with other settings)") in capsys.readouterr().out
    monkeypatch.setattr(experiments, "training_state", lambda run: "done")
    experiments.main(["claims-cpu", "--dry-run", "--runs-dir", str(tmp_path)])
    assert "# trained so far: 25 of 25 runs done\n" in capsys.readouterr().out


def test_smoke_dry_run_lists_the_analysis_and_generation_it_runs(capsys):
    experiments.main(["smoke", "--dry-run"])
    out = capsys.readouterr().out
    assert out.count("train.py") == 6 and "python analysis.py attacks --ckpt runs/experiments/smoke/weat-adv-s0/best.pt" in out
    assert "python generate.py --ckpt runs/experiments/smoke/weat-adv-s0/best.pt" in out


def test_a_dry_run_gives_the_time_its_set_took_where_its_results_file_is_there(capsys, tmp_path):
    machine = {"processor": "x86_64", "cpu_model": "Some CPU", "cpu_cores": 2, "torch_threads": 1, "device": "cpu"}
    runs = [{"method": "sat", "seed": s, "minutes": 30.0 + 15 * s} for s in range(3)]  # a claims set's runs
    (tmp_path / "claims-cpu.json").write_text(json.dumps({"provenance": {"machine": machine}, "runs": runs}))
    experiments.main(["claims-cpu", "--dry-run", "--results-dir", str(tmp_path)])
    assert f"# measured in {tmp_path}/claims-cpu.json: 3 runs, 2.2 hours in all (30-60 minutes a run), on Some CPU, 2 cores" \
        in capsys.readouterr().out
    runs = [{"method": "sat", "seed": 0, "train_minutes": 50.0, "eval_minutes": 10.0}]  # accuracy-cpu's: training + evaluation
    (tmp_path / "accuracy-cpu.json").write_text(json.dumps({"provenance": {"machine": machine}, "runs": runs}))
    experiments.main(["accuracy-cpu", "--dry-run", "--results-dir", str(tmp_path)])
    assert "1 run, 1.0 hours in all (60 minutes a run)" in capsys.readouterr().out
    experiments.main(["accuracy-cpu", "--tag", "never-run", "--dry-run", "--results-dir", str(tmp_path / "none")])
    out = capsys.readouterr().out
    assert "# measured" not in out and "the paper's full scale, not levels this set can reach" in out
    experiments.main(["claims-cpu", "--dry-run", "--results-dir", str(tmp_path / "none")])  # yours elsewhere: the committed time
    assert "# measured in results/claims-cpu.json: 25 runs" in capsys.readouterr().out
    experiments.main(["table-cifar10", "--dry-run", "--methods", "weat-adv"])  # the paper's own scale: its targets
    assert "53.35 / 49.75" in (out := capsys.readouterr().out) and "not levels" not in out
    experiments.main(["table-cifar10", "--dry-run", "--methods", "weat-adv", "--width", "16"])  # shrunk by the user
    assert "53.35 / 49.75; the paper's full scale, not levels this set can reach" in capsys.readouterr().out


def test_claims_set_dry_run_lists_its_runs(capsys):
    experiments.main(["claims-cpu", "--dry-run", "--train-npz", "train.npz", "--test-npz", "test.npz"])
    out = capsys.readouterr().out
    methods = list(experiments.CLAIMS_METHODS)
    assert out.count("train.py") == 5 * len(methods) and "evaluate.py" not in out  # 5 seeds
    assert "--lr-schedule piecewise" in out and "--test-every 1" in out and "--seed 1" in out and "--val-all" in out
    assert f"# methods: {', '.join(methods)}" in out and "--loss sat-der" in out


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


def test_a_rows_dry_run_prints_the_papers_figures_and_the_gpu_time_of_the_reproduce_table(capsys):
    experiments.main(["table-cifar10", "--methods", "weat-adv", "--dry-run"])
    out = capsys.readouterr().out
    assert out.count("train.py") == 3 and "WEAT-adv 53.35 / 49.75" in out
    with open(experiments.GPU_RESULTS) as f:
        row = [line for line in experiments.reproduce_table(json.load(f)).splitlines() if "--methods weat-adv` " in line
               and line.startswith("| cifar10 ")][0]
    hours = row.split("|")[5].strip()
    assert f"= {hours} hours on one NVIDIA H200" in out


def test_gpu_hours_scale_the_measurement_by_epochs_pixels_points_and_robust_share():
    gpu = {"provenance": {"machine": {"device": "GPU"}}, "train_epochs": {"float32": [{"seconds": 30}, {"seconds": 50}]},
           "setting": {"train_images": 49_000},  # epochs measured on the whole split
           "evaluation": {"n": 1000, "seconds": 50, "cascade": 0.25, "attacks": {"apgd-ce": 5, "apgd-t": 10, "fab-t": 10, "square": 10}}}
    t = experiments.gpu_hours("cifar10", 3, 100, 6, robust=0.5, gpu=gpu)
    # 3 x 100 x 50 s (the epochs after the first; the first no slower: no warm-up); each evaluation:
    # (50 - 30 + 30 x 0.5 / 0.25) s per 1,000 points x 10,000 points
    assert t["train"] == pytest.approx(3 * 100 * 50 / 3600) and t["evaluate"] == pytest.approx(6 * 800 / 3600)
    tiny = experiments.gpu_hours("tinyimagenet", 1, 1, 0, gpu=gpu)
    assert tiny["epoch_seconds"] == pytest.approx(50 * 99_000 * 4 / 49_000)
    slow_first = {**gpu, "setting": {"train_images": 9_800}, "train_epochs": {"float32": [{"seconds": 14}, {"seconds": 10},
                                                                                          {"seconds": 10}]}}
    subset = experiments.gpu_hours("cifar10", 2, 100, 0, gpu=slow_first)  # a fifth of the split, 4 s of warm-up
    assert subset["epoch_seconds"] == pytest.approx(10 * 5) and subset["train"] == pytest.approx(2 * (100 * 50 + 4) / 3600)


def fake_accuracy_run(run, clean, pgd, cascade, last_pgd):
    """A finished accuracy-cpu run (trained for 15 epochs): its log and the two evaluation reports (best.pt is
    epoch 14, last.pt 15)."""
    os.makedirs(run.folder)
    with open(os.path.join(run.folder, "log.jsonl"), "w") as f:
        for epoch in (1, 2):
            f.write(json.dumps({"epoch": epoch, "lr": 0.1, "train_loss": 1.0, "train_adv_acc": 0.3, "val_pgd_acc": 0.3,
                                "delta_E": 0.0, "delta_Exy": 0.0, "seconds": 60.0}) + "\n")
    for which, robust in (("best", pgd), ("last", last_pgd)):
        report = {"n": 10_000, "clean": {"accuracy": clean}, "pgd-20": {"accuracy": robust}, "attacks": ["apgd-ce"],
                  "seconds": 90.0}
        if which == "best":  # each seed's cascade on its own 334 points
            report["cascade"], report["cascade_start"] = {"accuracy": cascade, "n": 334}, 334 * run.seed
        with open(run.eval_file(which), "w") as f:
            json.dump(report, f)


def test_accuracy_set_compares_methods_seed_by_seed_with_a_verdict(tmp_path, monkeypatch):
    argv = ["accuracy-cpu", "--methods", "trades,weat-adv", "--runs-dir", str(tmp_path / "runs"),
            "--results-dir", str(tmp_path / "results")]
    assert all(list(run.eval_cmds) == ["best"] for run in experiments.plan(experiments.build_parser().parse_args(argv)))
    argv += ["--epochs", "15"]  # the set's 6 epochs make best.pt the last epoch; with 15, best-late chooses among 2
    args = experiments.build_parser().parse_args(argv)
    runs = experiments.plan(args)
    assert all("--cascade-examples 0" in " ".join(run.eval_cmds["last"]) for run in runs)
    assert all(f"--cascade-examples 334 --cascade-start {334 * run.seed}" in " ".join(run.eval_cmds["best"]) for run in runs)
    shrunk = experiments.plan(experiments.build_parser().parse_args([*argv, "--n-examples", "60"]))
    assert [run.eval_cmds["best"][run.eval_cmds["best"].index("--cascade-start") + 1] for run in shrunk[:3]] == ["0", "20", "40"]
    monkeypatch.setattr(experiments, "checkpoint_epoch", lambda run, which: 14 if which == "best" else 15)
    monkeypatch.setattr(experiments, "claims_setup", lambda run: "setup")
    for run in runs:  # WEAT-adv ahead of TRADES by 2, 3 and 4 points of PGD-20 on seeds 0, 1, 2
        ahead = 0.01 * (2 + run.seed) if run.method == "weat-adv" else 0.0
        spread = 0.001 * (run.seed - 1) if run.method == "weat-adv" else 0.0  # cascade: -0.1, 0, +0.1 points apart
        fake_accuracy_run(run, 0.5, 0.3 + ahead + 0.001 * run.seed, 0.25 + spread, 0.29 + ahead)
    experiments.write_results(args, runs)
    r = json.loads((tmp_path / "results" / "accuracy-cpu.json").read_text())
    pgd = [p for p in r["pairs"] if p["methods"] == ["weat-adv", "trades"] and p["measure"] == "pgd20"][0]
    assert pgd["differences"] == pytest.approx([0.02, 0.03, 0.04]) and pgd["verdict"] == "holds"
    assert pgd["paper_margin"] == pytest.approx(0.0070) and pgd["detectable"] == pytest.approx(
        experiments.detectable_difference(0.01, 3))
    cascade = [p for p in r["pairs"] if p["methods"] == ["weat-adv", "trades"] and p["measure"] == "cascade"][0]
    assert cascade["difference"] == pytest.approx(0) and cascade["ci95"] == pytest.approx(0.001 * 4.302653 / 3 ** 0.5)
    assert cascade["verdict"].startswith("does not hold here")  # [-0.25, +0.25] points excludes the paper's +0.29
    table = (tmp_path / "results" / "accuracy-cpu.md").read_text()
    assert len(r["runs"][0]["epochs"]["epoch"]) == 2 and "| WEAT-adv - TRADES | PGD-20 | +3.0 ± 2.5 |" in table
    assert r["runs"][0]["train_minutes"] == 2.0 and "| 52.65 / 49.46 | 2.0 / 3.0 |" in table  # 2 epochs of 60 s, 2 x 90 s
    assert "In all, the 6 runs took 0.5 hours of one core (training and evaluation, as logged; the budget" in table
    assert ("the cascade on points 0-333 (seed 0); 334-667 (seed 1); 668-1,001 (seed 2): 1,002 points in all, each "
            "seed on its own" in table and "clean and PGD-20 on the first 10,000 test points" in table)
    assert experiments.cascade_points([{"seed": s, "cascade_n": 1000} for s in range(3)]) == "the first 1,000"
    assert "| holds: WEAT-adv ahead of TRADES, as in the paper |" in table  # the verdict names the direction
    assert "never speaks against the paper" not in table  # detectable above the paper's margins, but none "not shown"
    committed = experiments.accuracy_table(json.load(open(os.path.join(experiments.ROOT, "results", "accuracy-cpu.json"))))
    assert ("where, in addition, the detectable difference is larger than the paper's margin (WEAT-adv - TRADES, "
            "cascade; WEAT-nat - TRADES, cascade; TRADES - SAT, cascade), these seeds had a chance below 80% of showing "
            "the paper's difference") in committed  # not the PGD-20 rows: holds / reversed
    assert "paper (full scale) PGD-20 / AA" in table and "(the whole training set, width 64, 100 epochs)" in table


def test_where_best_pt_is_the_last_epoch_last_pt_adds_no_pair_and_the_points_come_from_the_test_npz(tmp_path):
    runs = [{"method": m, "seed": s, "clean": 0.5, "pgd20": 0.3 + (m == "weat-adv") * 0.01 * (s + 1), "cascade": 0.25,
             "last_pgd20": 0.3, "epoch": 6, "last_epoch": 6} for s in range(3) for m in ("weat-adv", "trades")]
    measures = lambda rs: {p["measure"] for p in experiments.paired_differences(rs, (("weat-adv", "trades"),), {})}  # noqa: E731
    assert measures(runs) == {"clean", "pgd20", "cascade"}
    assert measures([{**r, "last_epoch": 7} for r in runs]) == {"clean", "pgd20", "cascade", "last_pgd20"}
    np.savez(tmp_path / "test.npz", image=np.zeros((90, 32, 32, 3), np.uint8), label=np.arange(90) % 10)
    args = experiments.build_parser().parse_args(["accuracy-cpu", "--train-npz", "x.npz", "--test-npz", str(tmp_path / "test.npz")])
    assert experiments.evaluated_points(args, "npz") == 90
    seed2 = [run for run in experiments.plan(args) if run.seed == 2][0]
    assert "--cascade-examples 30 --cascade-start 60" in " ".join(seed2.eval_cmds["best"])  # 90 points, 3 seeds


def test_a_test_npz_without_labels_is_one_line_for_the_set_that_counts_its_points(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_text("not an npz")
    with pytest.raises(SystemExit) as e:
        experiments.main(["accuracy-cpu", "--dry-run", "--train-npz", str(bad), "--test-npz", str(bad)])
    assert e.value.code == 2 and f"--test-npz {bad}: not an npz file with a 'label' array" in capsys.readouterr().err
    experiments.main(["claims-cpu", "--dry-run", "--train-npz", str(bad), "--test-npz", str(bad)])  # reads no points
    assert "train.py" in capsys.readouterr().out


def test_an_evaluation_counts_as_done_only_on_its_own_cascade_points(tmp_path):
    """A seed's report is taken as done only where its cascade attacked that seed's block (else it reruns)."""
    argv = ["accuracy-cpu", "--methods", "sat", "--runs-dir", str(tmp_path / "runs"), "--n-examples", "60"]
    run = experiments.plan(experiments.build_parser().parse_args(argv))[1]  # seed 1: points 20-39
    os.makedirs(run.folder)
    (tmp_path / "runs" / "accuracy-cpu" / "sat-s1" / "best.pt").write_bytes(b"weights")
    report = {"checkpoint_sha256": experiments.sha256_of(os.path.join(run.folder, "best.pt")),
              "attacks": ["apgd-ce", "apgd-t", "fab-t", "square"], "eps_pixels": 8.0, "seed": 0, "n": 60,
              "attack_settings": {"n_iter": 100, "n_queries": 5000}, "cascade_n": 20, "cascade_start": 20}
    for start, done in ((20, True), (0, False)):
        with open(run.eval_file("best"), "w") as f:
            json.dump({**report, "cascade_start": start}, f)
        assert experiments.evaluation_done(run, "best") == done


def test_an_evaluation_counts_as_done_only_on_the_points_planned_and_is_not_overwritten_unasked(tmp_path, monkeypatch):
    """Without --n-examples the plan attacks the whole test split: a report on fewer points (an earlier
    --n-examples run on the same best.pt) is not done, and run_all refuses to overwrite it (one line)."""
    import numpy as np
    npz = tmp_path / "test.npz"
    np.savez(npz, image=np.zeros((100, 32, 32, 3), np.uint8), label=np.arange(100) % 10)
    argv = ["accuracy-cpu", "--methods", "sat", "--runs-dir", str(tmp_path / "runs"), "--train-npz", str(npz),
            "--test-npz", str(npz)]
    run = experiments.plan(experiments.build_parser().parse_args(argv))[0]  # seed 0: the cascade on points 0-32
    os.makedirs(run.folder)
    (tmp_path / "runs" / "accuracy-cpu" / "sat-s0" / "args.json").write_text(json.dumps({"dataset": "npz", "test_npz": str(npz)}))
    (tmp_path / "runs" / "accuracy-cpu" / "sat-s0" / "best.pt").write_bytes(b"weights")
    report = {"checkpoint_sha256": experiments.sha256_of(os.path.join(run.folder, "best.pt")),
              "attacks": ["apgd-ce", "apgd-t", "fab-t", "square"], "eps_pixels": 8.0, "seed": 0,
              "attack_settings": {"n_iter": 100, "n_queries": 5000}, "cascade_n": 33, "cascade_start": 0}
    for n, done in ((100, True), (60, False)):
        with open(run.eval_file("best"), "w") as f:
            json.dump({**report, "n": n}, f)
        assert experiments.evaluation_done(run, "best") == done
    monkeypatch.setattr(experiments, "training_state", lambda run: "done")
    monkeypatch.setattr(experiments, "execute", lambda cmd: pytest.fail(f"ran {cmd}"))
    other = experiments.plan(experiments.build_parser().parse_args(argv))[1]  # a run before it: refused before its work
    with pytest.raises(experiments.ExperimentError, match="evaluated this best.pt with other settings or points"):
        experiments.run_all([other, run])
    assert json.loads(open(run.eval_file("best")).read())["n"] == 60  # kept
    (tmp_path / "runs" / "accuracy-cpu" / "sat-s0" / "best.pt").write_bytes(b"retrained")  # another checkpoint: replaced
    ran = []
    monkeypatch.setattr(experiments, "execute", ran.append)
    experiments.run_all([run])
    assert ran == [run.eval_cmds["best"]]


def test_detectable_difference_and_the_comparison_verdicts():
    import numpy as np
    import scipy.stats
    d = experiments.detectable_difference(1.0, 3)
    x = np.random.default_rng(0).normal(d, 1.0, (40_000, 3))  # a paired t-test on 3 seeds finds it 80% of the time
    t = x.mean(1) / (x.std(1, ddof=1) / np.sqrt(3))
    assert abs((np.abs(t) > scipy.stats.t.ppf(0.975, 2)).mean() - 0.8) < 0.01
    assert experiments.detectable_difference(2.0, 3) == pytest.approx(2 * d) and experiments.detectable_difference(1.0, 1) is None
    verdict = experiments.comparison_verdict
    assert verdict(0.02, 0.01, 0.007) == "holds" and verdict(-0.02, 0.01, 0.007) == "reversed"
    assert verdict(0.0, 0.005, 0.007).startswith("does not hold here") and verdict(0.0, 0.01, 0.007) == "not shown at this scale"
    # a measure the paper lacks takes the pair's side: WEAT-nat behind TRADES in the paper, ahead here on every measure
    paper = {"weat-nat": (52.43, 49.02), "trades": (52.65, 49.46)}
    runs = [{"method": m, "seed": s, "clean": 0.5, "pgd20": acc, "cascade": acc, "last_pgd20": acc}
            for s in range(3) for m, acc in (("weat-nat", 0.32 + 0.001 * s), ("trades", 0.30))]
    verdicts = {p["measure"]: p["verdict"] for p in experiments.paired_differences(runs, (("weat-nat", "trades"),), paper)}
    assert verdicts == {"clean": "—", "pgd20": "reversed", "cascade": "reversed", "last_pgd20": "reversed"}
    pairs = experiments.paired_differences(runs, (("weat-nat", "trades"),), paper)  # the table names the direction
    assert experiments.verdict_words(pairs[1]) == "reversed: WEAT-nat ahead of TRADES; the paper has it behind"
    ahead = {"methods": ["trades", "sat"], "verdict": "holds", "difference": 0.006, "ci95": 0.003, "paper_side": 1}
    assert experiments.verdict_words({**ahead, "paper_margin": 0.0362}) == \
        "holds: TRADES ahead of SAT, as in the paper, by less than its margin"  # its interval excludes the paper's +3.62
    assert experiments.verdict_words({**ahead, "paper_margin": 0.007}) == "holds: TRADES ahead of SAT, as in the paper"
    assert verdict(0.004, 0.004 * 1e-14, 0.007) == "no spread over the seeds: no interval"  # float rounding is no spread
    assert experiments.detectable_difference(1.0, 200) == pytest.approx(2.8 / 200 ** 0.5, rel=0.02)  # many seeds: z-test
    assert verdict(-0.02, 0.01, -0.002) == "holds" and verdict(0.01, None, 0.007) == "one seed: no interval"
    assert verdict(0.0, 0.0, 0.007) == "no spread over the seeds: no interval"


@pytest.mark.parametrize("argv,message", [
    (["table-cifar10", "--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["claims-cpu-aug", "--epochs", "20"], "claims-cpu-aug drops the learning rate after epochs 10 and 30: --epochs must be above 30"),
    (["claims-cpu-aug", "--epochs", "0"], "--epochs must be above 30"),
    (["accuracy-cpu", "--n-examples", "2"], "2 test points for 3 seeds: each seed attacks its own test points"),
    (["smoke", "--attacks", "foo"], "unknown attack 'foo'"),
    (["claims-cpu", "--n-examples", "10"], "claims-cpu runs no evaluate.py"),
    (["table-cifar10", "--test-npz", "t.npz"], "--train-npz and --test-npz go together"),
])
def test_a_sets_bad_settings_are_refused_before_any_run_starts(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:  # not --dry-run: a bad evaluation flag must not wait for the first training
        experiments.main([*argv, "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")])
    assert e.value.code == 2 and message in capsys.readouterr().err and not (tmp_path / "runs").exists()


def test_a_set_run_from_another_folder_works_in_the_repo_root_with_the_paths_typed_there(tmp_path, monkeypatch, capsys):
    """train.py and evaluate.py run in the repo root: a --runs-dir typed from elsewhere must reach them as the
    same folder (else the set would look for its runs in one place and train them in another)."""
    monkeypatch.chdir(tmp_path)
    experiments.main(["accuracy-cpu", "--methods", "sat", "--seeds", "1", "--runs-dir", "myruns", "--dry-run"])
    out_dir = capsys.readouterr().out.split("--out-dir ")[1].split()[0]
    assert os.path.realpath(os.path.join(experiments.ROOT, out_dir)) == os.path.realpath(tmp_path / "myruns" / "accuracy-cpu" / "sat-s0")
    assert os.getcwd() == str(tmp_path)  # the caller's folder is given back


def test_the_detectable_difference_is_a_fixed_multiple_of_the_intervals_half_width():
    """As an independent recomputation found: for n seeds, detectable / (t(0.975, n-1) sd / sqrt n) does not depend
    on the spread; the table's caption gives that multiple (1.31 on 3 seeds)."""
    import scipy.stats
    for n in (2, 3, 5):
        half = lambda sd: scipy.stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)  # noqa: E731
        ratios = [experiments.detectable_difference(sd, n) / half(sd) for sd in (0.003, 0.02, 0.5)]
        assert max(ratios) - min(ratios) < 1e-6 and ratios[0] == pytest.approx(experiments.detectable_multiple(n), rel=1e-6)
    assert experiments.detectable_multiple(3) == pytest.approx(1.314, abs=5e-4)
