"""kernels/ as two kernel families over a shared top level (kernels/__init__.py): ``import kernels``
stays cheap and Triton-free, its public names stay, no module inside kernels/ imports the package's
own __init__ for a name, and reading every import (module- and function-level, and the packages
that importing ``a.b.c`` runs: ``a/__init__``, ``a/b/__init__``) finds no circle."""
from __future__ import annotations

import tests.test_layers as layers
from tests.test_layers import _imports, _modules, circles, import_graph

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rewrite", "passes", "kernels")
PUBLIC = ("ACTIVATIONS", "FusedSepConv2d", "FusedSepConvSE2d", "FusedInvertedResidual2d", "FusedInvertedResidualSE2d",
          "FusedMBConv2d", "sep_conv_reference", "inverted_residual_reference", "inverted_residual_se_reference",
          "fused_mbconv_reference")


def test_the_reading_finds_the_circle_through_a_package_init():
    graph = import_graph()
    graph["kernels.checks"] = graph["kernels.checks"] | {"kernels.sep_conv"}  # as `from kernels.sep_conv import x` would
    graph["kernels.sep_conv"] = graph["kernels.sep_conv"] | {"kernels.sep_conv.checks"}
    assert ["kernels.checks", "kernels.sep_conv", "kernels.sep_conv.checks"] in circles(graph)


def test_the_reading_finds_the_circle_the_flat_layout_had(tmp_path, monkeypatch):
    """Before the split, kernels/fused_sep_conv.py ran ``from kernels import sep_conv_tuning`` and
    kernels/__init__.py imported kernels.fused_sep_conv in its __getattr__."""
    for rel, text in {"kernels/__init__.py": "def __getattr__(name):\n    from kernels.fused_sep_conv import f\n",
                      "kernels/fused_sep_conv.py": "from kernels import sep_conv_tuning\n",
                      "kernels/sep_conv_tuning.py": "", "rewrite/__init__.py": "", "passes/__init__.py": ""}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    monkeypatch.setattr(layers, "ROOT", tmp_path)
    assert circles(import_graph()) == [["kernels", "kernels.fused_sep_conv"]]


def test_no_module_in_kernels_imports_the_kernels_package_itself():
    modules = _modules()
    offenders = []
    for name, (path, is_package) in modules.items():
        if name.startswith("kernels."):
            for named, _, line in _imports(name, path, is_package, modules):
                if named == "kernels":
                    offenders.append(f"{path.relative_to(ROOT)}:{line}")
    assert offenders == []


def test_each_family_is_a_package_with_its_docstring_and_nothing_imported():
    for family in ("sep_conv", "block"):
        init = ROOT / "kernels" / family / "__init__.py"
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree) and len(tree.body) == 1, f"{init} holds only its docstring"


def test_import_kernels_is_cheap_and_keeps_its_public_names():
    code = ("import sys, kernels\n"
            f"missing = [n for n in {PUBLIC!r} if not hasattr(kernels, n)]\n"
            "assert not missing, missing\n"
            "assert 'triton' not in sys.modules, 'import kernels imported Triton'\n"
            "assert kernels.FusedSepConv2d.__module__ == 'kernels.sep_conv.modules'\n"
            "assert kernels.FusedMBConv2d.__module__ == 'kernels.block.modules'\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
