"""The layers contract (pyproject.toml, [tool.importlinter]): imports point down only, entry points →
engine → core → kernels, and no module imports itself in a circle."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rewrite", "passes", "kernels")
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"]


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(LINT, cwd=cwd, capture_output=True, text=True, env={"PYTHONPATH": str(cwd), "PATH": ""})


def test_the_layers_contract_is_kept():
    run = _lint(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 kept, 0 broken" in run.stdout


def test_an_upward_import_breaks_the_contract_and_is_named(tmp_path):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    ir = tmp_path / "rewrite" / "ir.py"
    ir.write_text(ir.read_text() + "\nfrom passes.manager import run_passes  # noqa: E402 - points up\n")
    run = _lint(tmp_path)
    assert run.returncode == 1
    assert "rewrite.ir -> passes.manager" in run.stdout and "BROKEN" in run.stdout


def test_no_import_circles():
    graph = grimp.build_graph(*PACKAGES)
    index: dict = {}
    low: dict = {}
    stack: list = []
    circles = []

    def visit(module):                       # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while component[-1:] != [module]:
                component.append(stack.pop())
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    assert circles == []
