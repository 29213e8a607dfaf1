"""The repo's layering: energy.py (the paper's equations) and metrics.py stand alone, and no file imports
one above it."""
import ast
import os
import shutil
import subprocess
import sys

from conftest import HANG_TIMEOUT, ROOT

# Each module may import only modules of a lower layer (imports at any depth of the file count).
# metrics.py's library part imports nothing of ours; its command-line part reads data through data and models.
LAYERS = {"energy": 0, "data": 0, "models": 1, "metrics": 2, "attacks": 2, "methods": 3,
          "train": 4, "evaluate": 4, "generate": 4, "analysis": 4, "claims": 5, "bench": 5, "experiments": 6}
OWN = set(LAYERS)


def own_imports(module: str, top_level_only: bool = False) -> set:
    """The repo's modules that `module`.py imports (anywhere in the file, or at its top level only)."""
    with open(os.path.join(ROOT, f"{module}.py")) as f:
        tree = ast.parse(f.read())
    nodes = tree.body if top_level_only else ast.walk(tree)
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & OWN


def test_every_module_of_the_repo_has_a_layer():
    scripts = {name[:-3] for name in os.listdir(ROOT) if name.endswith(".py")}
    assert scripts == OWN


def test_no_module_imports_one_above_it():
    wrong = {(m, other) for m in LAYERS for other in own_imports(m) if LAYERS[other] >= LAYERS[m] and other != m}
    assert not wrong, f"imports that go up or sideways: {sorted(wrong)}"


def test_energy_imports_nothing_of_ours_and_metrics_library_part_neither():
    assert own_imports("energy") == set()
    assert own_imports("metrics", top_level_only=True) == set()  # its command-line part reads data files


def test_energy_py_copied_alone_computes_the_weat_loss(tmp_path):
    shutil.copy(os.path.join(ROOT, "energy.py"), tmp_path / "energy.py")
    code = ("import torch, energy\n"
            "torch.manual_seed(0)\n"
            "ln, la, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))\n"
            "w = energy.weat_weights(ln)\n"
            "ce = torch.nn.functional.cross_entropy(la, y, reduction='none')\n"
            "expected = (w * ce).mean() + 6 * (w * energy.kl_per_sample(ln, la)).mean()\n"
            "assert torch.allclose(energy.weat_loss(ln, la, y, 6.0), expected)\n"
            "print('ok', float(energy.weat_loss(ln, la, y, 6.0)))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=HANG_TIMEOUT)
    assert result.returncode == 0 and result.stdout.startswith("ok"), result.stderr


def test_energy_py_run_alone_checks_its_equations_and_names_the_analysis_script(tmp_path):
    shutil.copy(os.path.join(ROOT, "energy.py"), tmp_path / "energy.py")
    result = subprocess.run([sys.executable, "energy.py"], cwd=tmp_path, capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert result.returncode == 0 and "log p(y|x) = E(x) - E(x, y)" in result.stdout, result.stderr
    result = subprocess.run([sys.executable, os.path.join(ROOT, "energy.py"), "attacks", "--ckpt", "x.pt"],
                            capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "python analysis.py attacks --ckpt x.pt" in result.stderr
