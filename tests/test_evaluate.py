import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import evaluate
from conftest import HANG_TIMEOUT, ROOT


def cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "evaluate.py"), *args], capture_output=True,
                          text=True, timeout=HANG_TIMEOUT)


def test_cli_end_to_end_on_a_smoke_checkpoint(smoke_run, tmp_path):
    out = tmp_path / "report.json"
    result = cli("--ckpt", str(smoke_run / "best.pt"), "--n-examples", "60", "--n-iter", "5", "--n-queries", "20",
                 "--batch-size", "25", "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    masks = np.load(report["mask_file"])
    n = report["n"]
    assert n == 60 and report["dataset"] == "synthetic" and report["index_rule"].startswith("the first n")
    assert report["clean"]["correct"] == masks["clean"].sum()
    assert report["pgd-20"]["correct"] == masks["pgd20_robust"].sum()
    assert report["cascade"]["correct"] == masks["cascade_robust"].sum()
    assert not (masks["cascade_robust"] & ~masks["clean"]).any()
    steps = [report[f"+{a}"]["correct"] for a in ("apgd-ce", "apgd-t", "fab-t", "square")]
    assert steps == sorted(steps, reverse=True) and steps[-1] == report["cascade"]["correct"]
    lo, hi = report["cascade"]["ci95"]
    assert lo <= report["cascade"]["accuracy"] <= hi
    assert len(report["checkpoint_sha256"]) == 64 and set(report["flags"]) >= {"randomized_outputs", "zero_gradients"}
    assert "cascade" in result.stdout and "sanity flags" in result.stdout


def test_clopper_pearson_known_values():
    lo, hi = evaluate.clopper_pearson(5, 10)
    assert lo == pytest.approx(0.187086, abs=1e-5) and hi == pytest.approx(0.812914, abs=1e-5)
    assert evaluate.clopper_pearson(0, 10)[0] == 0 and evaluate.clopper_pearson(10, 10)[1] == 1


@pytest.mark.parametrize("content,message", [(None, "not found"), (b"", "cannot load"), (b"PK\x03\x04junk", "cannot load")])
def test_a_checkpoint_that_does_not_load_exits_2(tmp_path, content, message):
    path = tmp_path / "model.pt"
    if content is not None:
        path.write_bytes(content)
    result = cli("--ckpt", str(path))
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_unknown_attack_is_refused():
    result = cli("--ckpt", "x.pt", "--attacks", "apgd-ce,deepfool")
    assert result.returncode == 2 and "unknown attack 'deepfool'" in result.stderr


EVAL_ARGS = ["--n-examples", "60", "--n-iter", "5", "--n-queries", "20", "--batch-size", "25", "--device", "cpu"]
VOLATILE = {"time", "seconds", "report_file", "mask_file"}


def stable(report):
    """A report without its clocks and file names."""
    return {k: ({kk: vv for kk, vv in v.items() if kk != "seconds"} if isinstance(v, dict) else v)
            for k, v in report.items() if k not in VOLATILE}


@pytest.mark.parametrize("kill_after,stage", [(2, "pgd"), (5, "cascade")])
def test_resume_continues_a_cut_off_evaluation_with_the_same_result(smoke_run, tmp_path, monkeypatch, kill_after, stage):
    ckpt = str(smoke_run / "best.pt")
    evaluate.main(["--ckpt", ckpt, *EVAL_ARGS, "--out", str(tmp_path / "straight.json")])
    real_save, saves = evaluate.atomic_save, []

    def killed_after_some_batches(obj, path):
        real_save(obj, path)
        saves.append(obj["state"])
        if len(saves) == kill_after:
            raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "atomic_save", killed_after_some_batches)
    out = tmp_path / "new-folder" / "resumed.json"  # a folder that does not exist yet
    with pytest.raises(KeyboardInterrupt):
        evaluate.main(["--ckpt", ckpt, *EVAL_ARGS, "--out", str(out)])
    assert ("cascade" in saves[-1]) == (stage == "cascade") and not out.exists()  # stopped inside PGD-20 or the cascade
    monkeypatch.setattr(evaluate, "atomic_save", real_save)
    torch.rand(1000)  # the global random stream moves on, as in a new process: the attacks must not read it
    other = tmp_path / "other.npz"  # other points: a resume on other data is refused too
    np.savez(other, image=np.zeros((60, 32, 32, 3), np.uint8), label=np.arange(60) % 10)
    for changed in (["--eps", "4"], ["--test-npz", str(other)], ["--cascade-start", "5"]):  # refused, the state kept
        with pytest.raises(SystemExit) as refused:
            evaluate.main(["--ckpt", ckpt, *EVAL_ARGS, *changed, "--out", str(out), "--resume"])
        assert refused.value.code == 2 and os.path.exists(evaluate.progress_file(str(out)))
    saved = torch.load(evaluate.progress_file(str(out)), weights_only=True)
    assert 0 < saved["state"]["elapsed"] < 600  # the seconds spent before the cut, kept with the state
    saved["state"]["elapsed"] = 1e6  # as if the cut-off part had taken 1e6 s: the report's time must count it
    real_save(saved, evaluate.progress_file(str(out)))
    evaluate.main(["--ckpt", ckpt, *EVAL_ARGS, "--out", str(out), "--resume"])
    straight, resumed = json.loads((tmp_path / "straight.json").read_text()), json.loads(out.read_text())
    assert 1e6 <= resumed["seconds"] < 1e6 + 600
    assert stable(straight) == stable(resumed)
    for key in ("clean", "pgd20_robust", "cascade_robust"):
        assert (np.load(straight["mask_file"])[key] == np.load(resumed["mask_file"])[key]).all()
    assert not os.path.exists(evaluate.progress_file(str(out)))


def test_a_progress_file_saved_before_cascade_start_existed_resumes_as_start_0(tmp_path):
    settings = {"attacks": ["apgd-ce"], "n": 60, "cascade_n": 60}
    evaluate.atomic_save({"settings": settings, "state": {"pgd": "saved"}}, str(tmp_path / "p.pt"))
    assert evaluate.load_progress(str(tmp_path / "p.pt"), {**settings, "cascade_start": 0}) == {"pgd": "saved"}
    with pytest.raises(evaluate.EvaluationError, match="differs in cascade_start"):
        evaluate.load_progress(str(tmp_path / "p.pt"), {**settings, "cascade_start": 5})


def test_the_default_is_the_whole_test_split_and_several_checkpoints_get_a_report_each(smoke_run, tmp_path):
    """10,500 small test images (more than the old default of 10,000, as SVHN's 26,032 are): all of them
    are evaluated unless --n-examples says otherwise; best.pt and last.pt in one call."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "big.npz", image=rng.integers(0, 256, (10_500, 8, 8, 3), dtype=np.uint8),
             label=np.arange(10_500) % 10)
    for name in ("best.pt", "last.pt"):
        with open(smoke_run / name, "rb") as src, open(tmp_path / name, "wb") as dst:
            dst.write(src.read())
    result = cli("--ckpt", str(tmp_path / "best.pt"), str(tmp_path / "last.pt"), "--test-npz", str(tmp_path / "big.npz"),
                 "--attacks", "apgd-ce", "--n-iter", "1", "--batch-size", "2100")
    assert result.returncode == 0, result.stderr
    for name in ("best", "last"):
        report = json.loads((tmp_path / f"eval-{name}.json").read_text())
        assert report["n"] == 10_500 and report["checkpoint"].endswith(f"{name}.pt")
    assert result.stdout.count("sanity flags") == 2


def test_the_cascade_can_run_on_the_first_points_only(trained_model, tmp_path):
    """--cascade-examples m: PGD-20 on all n points, the cascade on the first m (its clean accuracy beside it);
    0 runs no cascade; the first m points' cascade mask equals the one of a cascade on those m points alone."""
    model, x, y = trained_model
    kw = dict(eps=8 / 255, attacks=["apgd-ce", "square"], batch_size=20, seed=0, n_iter=5, n_queries=20,
              n_target_classes=9, n_restarts=1)
    part = evaluate.evaluate_model(model, x[:40], y[:40], cascade_n=15, **kw)
    alone = evaluate.evaluate_model(model, x[:15], y[:15], **kw)
    rows = part["rows"]
    assert rows["pgd-20"]["n"] == 40 and rows["cascade"]["n"] == 15 and rows["clean (cascade points)"]["n"] == 15
    assert torch.equal(part["masks"]["cascade_robust"], alone["masks"]["cascade_robust"])
    assert rows["clean (cascade points)"]["correct"] == alone["rows"]["clean"]["correct"]
    evaluate.write_outputs(str(tmp_path / "eval.json"), {"n": 40}, part["masks"])
    masks = np.load(tmp_path / "eval-mask.npz")
    assert list(masks["index"]) == list(range(40)) and list(masks["cascade_index"]) == list(range(15))
    assert len(masks["pgd20_robust"]) == 40 and len(masks["cascade_robust"]) == 15
    none = evaluate.evaluate_model(model, x[:40], y[:40], cascade_n=0, **kw)["rows"]
    assert "cascade" not in none and none["pgd-20"] == {**rows["pgd-20"], "seconds": none["pgd-20"]["seconds"]}


def test_the_cascade_can_start_further_on(trained_model, tmp_path):
    """--cascade-start s: the cascade on points s .. s + m - 1 (what a seed of accuracy-cpu attacks), equal to a
    cascade on those points alone; the mask file names them. The first 20 points get wrong labels, so a
    cascade on the first points instead of the block would count none of them clean."""
    model, x, y = trained_model
    y = y.clone()
    y[:20] = (y[:20] + 1) % 10
    kw = dict(eps=8 / 255, attacks=["apgd-ce", "square"], batch_size=20, seed=0, n_iter=5, n_queries=20,
              n_target_classes=9, n_restarts=1)
    part = evaluate.evaluate_model(model, x[:40], y[:40], cascade_n=15, cascade_start=20, **kw)
    alone = evaluate.evaluate_model(model, x[20:35], y[20:35], **kw)
    assert alone["rows"]["clean"]["correct"] > 0 and alone["rows"]["cascade"]["correct"] > 0
    assert torch.equal(part["masks"]["cascade_robust"], alone["masks"]["cascade_robust"])
    assert part["rows"]["clean (cascade points)"]["correct"] == alone["rows"]["clean"]["correct"]
    assert part["rows"]["cascade"]["correct"] == alone["rows"]["cascade"]["correct"]
    tail = evaluate.evaluate_model(model, x[:40], y[:40], cascade_n=15, cascade_start=30, **kw)["rows"]
    assert tail["cascade"]["n"] == 10  # only 10 points from index 30
    evaluate.write_outputs(str(tmp_path / "eval.json"), {"n": 40, "cascade_start": 20}, part["masks"])
    assert list(np.load(tmp_path / "eval-mask.npz")["cascade_index"]) == list(range(20, 35))
    with pytest.raises(ValueError, match="cascade_start 41 is outside the 40 points"):
        evaluate.evaluate_model(model, x[:40], y[:40], cascade_n=5, cascade_start=41, **kw)


@pytest.mark.parametrize("flags,message", [(["--cascade-start", "60"], "--cascade-start 60 is past the last of the 60 points"),
                                           (["--cascade-start", "-1"], "--cascade-start must not be negative")])
def test_a_cascade_start_outside_the_points_is_refused(smoke_run, tmp_path, flags, message):
    result = cli("--ckpt", str(smoke_run / "best.pt"), "--n-examples", "60", *flags, "--out", str(tmp_path / "r.json"))
    assert result.returncode == 2 and message in result.stderr.strip().splitlines()[-1]  # -1: after argparse's usage line
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("argv,message", [
    (["--ckpt", "best.pt", "--device", "foo"], "--device foo: not a device name"),
    (["--robustbench", "Standard_R50", "--dataset", "imagenet"], "this repo does not download its images"),
])
def test_a_bad_device_or_an_undownloadable_zoo_data_set_is_one_line_before_any_download(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        evaluate.main([*argv, "--model-dir", str(tmp_path / "models")])
    assert e.value.code == 2 and message in capsys.readouterr().err and not (tmp_path / "models").exists()


def test_bench_checks_its_flags_before_timing_anything(capsys):
    import bench
    for argv, message in ((["--device", "foo"], "not a device name"), (["--device", "cpu", "--repeats", "0"],
                          "--repeats must be at least 1"), (["--device", "cpu", "--models", "vgg"], "--models: unknown vgg")):
        with pytest.raises(SystemExit) as e:
            bench.main(argv)
        assert e.value.code == 2 and message in capsys.readouterr().err


def test_a_resume_of_several_checkpoints_skips_the_ones_already_evaluated(smoke_run, tmp_path, capsys):
    for name in ("best.pt", "last.pt"):
        shutil.copy(smoke_run / name, tmp_path / name)
    evaluate.main(["--ckpt", str(tmp_path / "best.pt"), *EVAL_ARGS, "--attacks", "apgd-ce"])
    first = (tmp_path / "eval-best.json").read_text()
    old = json.loads(first)  # a report written before --cascade-start existed: its start was 0, and it is skipped too
    del old["settings"]["cascade_start"]
    (tmp_path / "eval-best.json").write_text(json.dumps(old))
    evaluate.main(["--ckpt", str(tmp_path / "best.pt"), *EVAL_ARGS, "--attacks", "apgd-ce", "--resume"])
    assert "eval-best.json: already evaluated" in capsys.readouterr().out
    (tmp_path / "eval-best.json").write_text(first)
    # as if cut off while evaluating last.pt: best.pt has its report and no progress file
    with pytest.raises(SystemExit):  # last.pt has nothing to resume: its own one-line error, after best.pt is skipped
        evaluate.main(["--ckpt", str(tmp_path / "best.pt"), str(tmp_path / "last.pt"), *EVAL_ARGS, "--attacks", "apgd-ce",
                       "--resume"])
    out, err = capsys.readouterr()
    assert "eval-best.json: already evaluated" in out and "no saved evaluation" in err and "last-progress.pt" in err
    assert (tmp_path / "eval-best.json").read_text() == first
    with pytest.raises(SystemExit):  # a report made with other settings is not taken as done
        evaluate.main(["--ckpt", str(tmp_path / "best.pt"), *EVAL_ARGS, "--attacks", "apgd-ce", "--eps", "4", "--resume"])
    assert "was made with other settings or points" in capsys.readouterr().err
