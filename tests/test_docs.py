"""Every `python SCRIPT.py ...` command shown in README.md and docs/*.md exists and parses with that
script's own argument parser (nothing is run)."""
import glob
import importlib
import os
import re
import shlex

import pytest

from conftest import ROOT

SCRIPTS_WITH_PARSERS = ("train", "evaluate", "generate", "analysis", "metrics", "experiments", "bench")


def shown_commands(path: str) -> list:
    """(line number, argv after `python`) of every code line of a Markdown file (indented by four spaces,
    or inside ``` fences) that runs a .py script, continuation lines (ending in a backslash) joined and
    comments dropped."""
    commands, pending, start, fenced = [], "", 0, False
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            fenced ^= line.startswith("```")
            text = line.strip()
            if pending:
                pending += " " + text
            elif (fenced or line.startswith("    ")) and re.match(r"python3? \S+\.py\b", text):
                pending, start = text, number
            if pending and not pending.endswith("\\"):
                commands.append((start, shlex.split(pending, comments=True)[1:]))
                pending = ""
            pending = pending[:-1] if pending.endswith("\\") else pending
    return commands


def documented_commands() -> list:
    pages = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    return [(f"{os.path.basename(page)}:{number}", argv) for page in pages for number, argv in shown_commands(page)]


def parse_error(argv: list) -> str:
    """Why `python argv...` would not get past its argument parser ('' if it would)."""
    script = argv[0]
    if not os.path.isfile(os.path.join(ROOT, script)):
        return f"no such script {script}"
    module = script[:-3]
    if module not in SCRIPTS_WITH_PARSERS:
        return ""  # tools/ scripts: their existence is what is checked
    parser = importlib.import_module(module).build_parser()
    parser.error = lambda message: (_ for _ in ()).throw(ValueError(message))
    try:
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
])
def test_a_misspelled_flag_a_missing_one_or_script_fails_the_check(argv, why):
    assert why in parse_error(argv)
