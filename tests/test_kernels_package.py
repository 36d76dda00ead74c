"""kernels/ as two kernel families over a shared top level (kernels/__init__.py): ``import kernels``
stays cheap and Triton-free, its public names stay, no module inside kernels/ imports the package's
own __init__ for a name, and reading every import (module- and function-level, and the packages
that importing ``a.b.c`` runs: ``a/__init__``, ``a/b/__init__``) finds no circle."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rewrite", "passes", "kernels")
PUBLIC = ("ACTIVATIONS", "FusedSepConv2d", "FusedSepConvSE2d", "FusedInvertedResidual2d", "FusedInvertedResidualSE2d",
          "FusedMBConv2d", "sep_conv_reference", "inverted_residual_reference", "inverted_residual_se_reference",
          "fused_mbconv_reference")


def _modules() -> dict:
    """module name -> (path, is a package)"""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _imports(name: str, path: Path, is_package: bool, modules: dict):
    """(module named, modules it names below that, line) for every import in the file, module- or
    function-level, relative ones resolved: ``import a.b`` names a.b; ``from a import b`` names the
    package a, and a.b too where that is a module."""
    here = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, (), node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[:len(here.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            subs = tuple(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules)
            yield base, subs, node.lineno


def _graph() -> dict:
    """module -> modules its imports run: each module an import names, and the packages above it
    that the import runs first (less the importer's own packages: those have run, or are running,
    before the importer's first line; a package named outright, as ``from kernels import x`` names
    kernels, counts even when it is the importer's own)."""
    modules = _modules()
    graph = {}
    for name, (path, is_package) in modules.items():
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        edges = set()
        for named, subs, _ in _imports(name, path, is_package, modules):
            edges |= {m for m in (named, *subs) if m in modules and m != name}
            parts = named.split(".")
            edges |= {p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p in modules and p not in own}
        graph[name] = edges
    return graph


def _circles(graph: dict) -> list:
    index: dict = {}
    low: dict = {}
    stack: list = []
    circles = []

    def visit(module):                       # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in sorted(graph[module]):
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

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return circles


def test_no_circle_reading_function_level_imports_and_the_packages_they_run():
    assert _circles(_graph()) == []


def test_the_reading_finds_the_circle_through_a_package_init():
    graph = _graph()
    graph["kernels.checks"] = graph["kernels.checks"] | {"kernels.sep_conv"}  # as `from kernels.sep_conv import x` would
    graph["kernels.sep_conv"] = graph["kernels.sep_conv"] | {"kernels.sep_conv.checks"}
    assert ["kernels.checks", "kernels.sep_conv", "kernels.sep_conv.checks"] in _circles(graph)


def test_the_reading_finds_the_circle_the_flat_layout_had(tmp_path, monkeypatch):
    """Before the split, kernels/fused_sep_conv.py ran ``from kernels import sep_conv_tuning`` and
    kernels/__init__.py imported kernels.fused_sep_conv in its __getattr__."""
    for rel, text in {"kernels/__init__.py": "def __getattr__(name):\n    from kernels.fused_sep_conv import f\n",
                      "kernels/fused_sep_conv.py": "from kernels import sep_conv_tuning\n",
                      "kernels/sep_conv_tuning.py": "", "rewrite/__init__.py": "", "passes/__init__.py": ""}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _circles(_graph()) == [["kernels", "kernels.fused_sep_conv"]]


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
