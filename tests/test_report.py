"""The tables in README.md and docs/ are generated from results/: regenerating changes nothing, a changed
number in a results file shows, and every results file says where it comes from."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import report  # noqa: E402


def copy_of_repo_pages(tmp_path):
    for folder in ("docs", "results"):
        shutil.copytree(os.path.join(ROOT, folder), tmp_path / folder)
    shutil.copy(os.path.join(ROOT, "README.md"), tmp_path / "README.md")
    return tmp_path


def test_the_committed_pages_are_what_results_give():
    assert report.regenerate(ROOT, write=False) == []


def test_every_results_file_is_read_by_a_block_and_says_where_it_comes_from():
    pages = "".join(open(p).read() for p in report.pages(ROOT))
    used = {file for m in report.BLOCK.finditer(pages) for file in report.files_of(m["name"])}
    tracked = subprocess.run(["git", "ls-files", "results"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    files = {os.path.basename(p)[:-5] for p in tracked if p.endswith(".json")}
    assert files and files == used
    for name in files:
        with open(os.path.join(ROOT, "results", f"{name}.json")) as f:
            p = json.load(f)["provenance"]
        assert p["command"].startswith("python ") and len(p["commit"]) >= 40 and p["machine"]["cpu_cores"] >= 1


def test_a_changed_number_in_a_results_file_fails_the_check(tmp_path):
    root = copy_of_repo_pages(tmp_path)
    path = root / "results" / "speed-cpu.json"
    result = json.loads(path.read_text())
    result["step"]["ratio"] += 0.1
    path.write_text(json.dumps(result))
    assert report.main(["--check", "--root", str(root)]) == 1
    assert report.main(["--root", str(root)]) == 0  # regenerating writes the new number in
    assert f"{result['step']['ratio']:.3f}" in (root / "docs" / "speed.md").read_text()
    assert report.main(["--check", "--root", str(root)]) == 0


def test_a_block_without_a_renderer_or_a_results_file_is_a_one_line_error(tmp_path, capsys):
    root = copy_of_repo_pages(tmp_path)
    with open(root / "docs" / "speed.md", "a") as f:
        f.write("\n<!-- results: no-such-table -->\n<!-- /results -->\n")
    assert report.main(["--check", "--root", str(root)]) == 2
    assert "no renderer for the block 'no-such-table'" in capsys.readouterr().err
    os.remove(root / "results" / "speed-cpu.json")
    with pytest.raises(report.ReportError, match="results/speed-cpu.json"):
        report.render(str(root), "speed-cpu", 1)


def test_claims_trials_reads_a_trial_run_folder(tmp_path):
    import claims_trials
    import train
    from experiments import CLAIMS_TRAIN
    from test_experiments import synthetic_claims_log
    flags = CLAIMS_TRAIN + ["--dataset", "synthetic", "--augment", "flip", "--epochs", "60", "--loss", "sat"]
    settings = vars(train.resolve_args(train.build_parser().parse_args(flags + ["--out-dir", str(tmp_path)])))
    (tmp_path / "args.json").write_text(json.dumps(settings))
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in synthetic_claims_log(0, overfits=True)))
    t = claims_trials.trial(str(tmp_path), claims_trials.claims_defaults())
    # the synthetic run: 0.2, 0.23 over epochs 30-32, then -0.003 per epoch from 0.2; the lr it logs after epoch
    # 30 is the dropped one (0.01), so epoch 30 is the last at the high rate
    assert t["flags"] == "--augment flip --epochs 60" and t["method"] == "sat" and t["epochs_run"] == 60
    assert t["best5_epochs"] == [28, 32] and t["best5"] == pytest.approx(0.218)
    assert t["first_drop_after"] == 30 and t["before_drop5"] == pytest.approx((4 * 0.2 + 0.23) / 5)
    assert t["after_drop5"] == pytest.approx((2 * 0.23 + 0.197 + 0.194 + 0.191) / 5)
    assert t["last5"] == pytest.approx(0.2 - 0.003 * 26) and t["fall"] == pytest.approx(0.218 - 0.122)


def test_claims_tables_count_best_windows_after_the_drop_and_judge_every_run_of_a_new_regime(tmp_path):
    import experiments
    from test_experiments import synthetic_claims_log
    args = experiments.build_parser().parse_args(["claims-cpu-aug", "--methods", "sat", "--seeds", "2", "--runs-dir",
                                                  str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")])
    runs = experiments.plan(args)
    for run in runs:
        os.makedirs(run.folder)
        with open(os.path.join(run.folder, "log.jsonl"), "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in synthetic_claims_log(run.seed, overfits=True))
    experiments.write_results(args, runs)
    result = json.loads((tmp_path / "results" / "claims-cpu-aug.json").read_text())
    # best 5 at epochs 28-32 and the first drop after epoch 30: 2 of the 5 epochs after it, not most
    assert "| SAT | 30 | 28-32, 28-32 | 9.6, 9.6 | 0 of 2 |" in report.claims_cpu(result)
    result["runs"][1]["peak_epochs"] = [29, 33]
    assert "| SAT | 30 | 28-32, 29-33 | 9.6, 9.6 | 1 of 2 |" in report.claims_cpu(result)
    picks = report.RENDERERS["claims-cpu-aug-picks"][1](result)
    gaps = [run["rule_picks"]["delta_E/start"]["gap"] for run in result["runs"]]
    assert "runs where its pick tests at least as robust" in picks and "did not see" not in picks
    default = next(line for line in picks.splitlines() if "(the default)" in line)
    assert default.endswith(f"| {sum(g >= 0 for g in gaps)} of 2 |")
    assert "the same on the runs the redesign did not see" in report.claims_picks(result, design_seeds=(0,))
