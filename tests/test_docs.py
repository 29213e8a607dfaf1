"""Every `python SCRIPT.py ...` command shown in README.md and docs/*.md exists, parses with that
script's own argument parser, and reads only files a user has (nothing is run)."""
import glob
import importlib
import os
import re
import shlex
import subprocess

import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import common  # noqa: E402

SCRIPTS_WITH_PARSERS = ("train", "evaluate", "generate", "analysis", "metrics", "experiments", "bench",
                        "tools/reference_attacks", "tools/reference_energy", "tools/reference_generation",
                        "tools/reference_models", "tools/compare_official_trades", "tools/generation_figure")


def shown_command_texts(lines) -> list:
    """(line number, text) of every code line of Markdown lines (indented by four spaces, or inside ```
    fences) that runs a .py script, continuation lines (ending in a backslash) joined, comments kept."""
    commands, pending, start, fenced = [], "", 0, False
    for number, line in enumerate(lines, start=1):
        fenced ^= line.startswith("```")
        text = line.strip()
        if pending:
            pending += " " + text
        elif (fenced or line.startswith("    ")) and re.match(r"python3? \S+\.py\b", text):
            pending, start = text, number
        if pending and not pending.endswith("\\"):
            commands.append((start, pending))
            pending = ""
        pending = pending[:-1] if pending.endswith("\\") else pending
    return commands


def shown_commands(path: str) -> list:
    """(line number, argv after `python`) of every command shown in a Markdown file, comments dropped."""
    with open(path) as f:
        return [(number, shlex.split(text, comments=True)[1:]) for number, text in shown_command_texts(f)]


def pages() -> list:
    return [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


def documented_commands() -> list:
    return [(f"{os.path.basename(page)}:{number}", argv) for page in pages() for number, argv in shown_commands(page)]


def parse_error(argv: list) -> str:
    """Why `python argv...` would not get past its argument parser ('' if it would)."""
    script = argv[0]
    if not os.path.isfile(os.path.join(ROOT, script)):
        return f"no such script {script}"
    module = script[:-3]
    if module not in SCRIPTS_WITH_PARSERS:
        return ""  # the other tools/ scripts: their existence is what is checked
    parser = importlib.import_module(os.path.basename(module)).build_parser()
    parser.error = lambda message: (_ for _ in ()).throw(ValueError(message))
    try:
        if hasattr(parser, "data_splits"):
            common.parse_tool_args(parser, argv[1:])  # a tool's data flags: --dataset or its npz files
        else:
            parser.parse_args(argv[1:])
    except ValueError as e:
        return str(e).strip()
    except SystemExit as stop:  # --help
        return "" if stop.code == 0 else f"exit {stop.code}"
    return ""


def test_the_docs_show_commands():
    assert len(documented_commands()) > 30


@pytest.mark.parametrize("where,argv", documented_commands(), ids=lambda v: v if isinstance(v, str) else None)
def test_every_documented_command_parses(where, argv):
    assert parse_error(argv) == "", f"{where}: python {' '.join(argv)}"


@pytest.mark.parametrize("argv,why", [
    (["train.py", "--weat", "adv", "--epocs", "3"], "unrecognized arguments: --epocs 3"),
    (["generate.py", "--ckpt", "a.pt"], "the following arguments are required: --out"),
    (["analysis.py", "atacks", "--ckpt", "a.pt"], "invalid choice: 'atacks'"),
    (["train_all.py"], "no such script train_all.py"),
    (["tools/reference_attacks.py", "--dataset", "cifar10", "--models", "vnncomp21-resnet4b"], "PATH/vnncomp21-resnet4b.pth"),
    (["tools/reference_energy.py", "--models", "a.pt"], "give --dataset cifar10 (downloaded through torchvision) or --test-npz"),
])
def test_a_misspelled_flag_a_missing_one_or_script_fails_the_check(argv, why):
    assert why in parse_error(argv)


# ---------------------------------------------------------------------------------------------------
# Input files: a command shown to a user reads only files the user has. Every input-file argument must
# exist in the repo (tracked by git), be written by an earlier command on the same page (its --out-dir,
# --out, --results, ...), or the command must end in the marker comment `# your file` (or `# your
# files`), which says the user supplies it (their own checkpoint, npz, downloaded weights, a clone).

MARKER = re.compile(r"(^|\s)# your files?\b")
INPUT_FLAGS = ("--ckpt", "--train-npz", "--test-npz", "--val-npz", "--ref-npz", "--npz", "--log", "--runs",
               "--trades-repo", "--models", "--model", "--judge", "--inception-weights", "--lpips-backbone",
               "--lpips-linear")
OUTPUT_FLAGS = ("--out", "--out-dir", "--results", "--runs-dir", "--results-dir")
NOT_PATHS = ("standard", "random")  # the non-file values of --inception-weights / --lpips-*
FILE_SUFFIXES = (".npz", ".pt", ".pth", ".json", ".jsonl")
# what a script writes under its output folder (at any depth: generate.py's comparisons, experiments.py's
# runs); a script not listed here may write anything under its --out
WRITES = {"train.py": ("best.pt", "last.pt", "log.jsonl", "args.json"),
          "experiments.py": ("best.pt", "last.pt", "log.jsonl", "args.json"),
          "generate.py": ("samples.npz", "args.json", "metrics.json")}


def is_path(flag: str, value: str) -> bool:
    """Whether a value names a file: always for the file flags, where it looks like one for the flags that
    also take names (a RobustBench model, 'standard' weights), by its suffix for everything else."""
    if flag in ("--models", "--model", "--judge", "--inception-weights", "--lpips-backbone", "--lpips-linear"):
        return value not in NOT_PATHS and not value.startswith("robustbench:") and ("/" in value or "." in value)
    return flag in INPUT_FLAGS or value.endswith(FILE_SUFFIXES)


def file_arguments(argv: list) -> tuple:
    """(inputs, outputs): the paths a command line reads and the files or folders it writes, by its flags."""
    inputs, outputs, flag, first = [], [], None, False
    for word in argv[1:]:
        if word.startswith("-"):
            flag, _, value = word.partition("=")
            first = True
            if not value:
                continue
            word = value
        if flag in OUTPUT_FLAGS and first:
            outputs.append(os.path.normpath(word))
        elif flag not in OUTPUT_FLAGS:
            inputs += [os.path.normpath(v) for v in word.split(",") if v and is_path(flag, v)]
        first = False
    return inputs, outputs + default_outputs(argv)


def default_outputs(argv: list) -> list:
    """Where a command writes without an output flag: train.py's default run folder, experiments.py's set."""
    if argv[0] == "train.py" and not {"--out-dir", "--help", "-h"} & set(argv):
        import train
        try:
            return [train.resolve_args(train.build_parser().parse_args(argv[1:])).out_dir]
        except (ValueError, SystemExit):
            return []
    if argv[0] == "experiments.py" and "--runs-dir" not in argv and len(argv) > 1:
        return [os.path.join("runs", "experiments", argv[1])]
    return []


def repo_files() -> set:
    """The files git tracks (the repo a user clones) and their folders; without git, every file here."""
    try:
        names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        names = [os.path.relpath(os.path.join(d, f), ROOT) for d, _, fs in os.walk(ROOT) for f in fs]
    return set(names) | {os.path.dirname(name) for name in names}


def written_by(path: str, script: str, output: str) -> bool:
    """Whether a command of `script` that writes `output` writes `path`."""
    inside = path.startswith(output + os.sep)
    return path == output or inside and (script not in WRITES or os.path.basename(path) in WRITES[script])


def missing_inputs(commands: list, have: set) -> list:
    """The input files of a page's commands, (where, path), that the user lacks: not in `have`, not
    written by an earlier command on the page, and the command not marked `# your file`."""
    missing, written = [], []
    for where, text in commands:
        argv = shlex.split(text, comments=True)[1:]
        inputs, outputs = file_arguments(argv)
        if not MARKER.search(text):
            missing += [(where, path) for path in inputs if path not in have
                        and not any(written_by(path, script, out) for script, out in written)]
        written += [(argv[0], out) for out in outputs]
    return missing


def test_every_documented_command_reads_files_a_user_has():
    have, missing = repo_files(), []
    for page in pages():
        with open(page) as f:
            commands = [(f"{os.path.basename(page)}:{n}", text) for n, text in shown_command_texts(f)]
        missing += missing_inputs(commands, have)
    assert not missing, "no such file in the repo, none written before it on its page, no `# your file`: " + \
        "; ".join(f"{where}: {path}" for where, path in missing)


SYNTHETIC_PAGE = """
    python train.py --weat adv --out-dir runs/a
    python evaluate.py --ckpt runs/a/best.pt runs/a/last.pt
    python analysis.py curves --log runs/a/log.jsonl
    python generate.py --ckpt runs/a/best.pt --out runs/s -- --compare-samplers
    python metrics.py runs/s/SGLD-no_momentum/samples.npz
    python train.py --dataset svhn
    python evaluate.py --ckpt runs/svhn-resnet18-trades-0/best.pt
    python train.py --dataset npz --train-npz mine.npz \\\\
        --test-npz mine-test.npz                           # your files: any npz of this layout
    python tools/reference_energy.py --dataset cifar10 --models robustbench:Wong2020Fast,results/x.json
"""


def test_the_input_rule_accepts_repo_files_earlier_outputs_and_marked_commands():
    commands = [(n, text) for n, text in shown_command_texts(SYNTHETIC_PAGE.splitlines())]
    assert missing_inputs(commands, have={"results/x.json", "results"}) == []


@pytest.mark.parametrize("page,missing", [
    ("    python evaluate.py --ckpt runs/a/best.pt", "runs/a/best.pt"),  # nothing wrote it
    ("    python evaluate.py --ckpt runs/a/best.pt\n    python train.py --out-dir runs/a", "runs/a/best.pt"),  # later
    ("    python train.py --out-dir runs/a\n    python evaluate.py --ckpt runs/a/bset.pt", "runs/a/bset.pt"),  # typo
    ("    python train.py --dataset npz --train-npz data/cifar10/cifar10_train.npz --test-npz t.npz  # the copy",
     "data/cifar10/cifar10_train.npz"),  # a comment that is not the marker
    ("    python tools/reference_attacks.py --dataset cifar10 --models vnncomp21-resnet4b.pth", "vnncomp21-resnet4b.pth"),
    ("    python metrics.py samples.npz --ref npz --ref-npz=train.npz", "train.npz"),
])
def test_the_input_rule_catches_a_file_nobody_has(page, missing):
    commands = shown_command_texts(page.splitlines())
    assert missing in [path for _, path in missing_inputs(commands, have=set())]
