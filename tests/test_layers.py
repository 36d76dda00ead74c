"""The layers contract (pyproject.toml, [tool.importlinter]): imports point down only, entry points →
engine → core → kernels, and no module imports itself in a circle."""
from __future__ import annotations

import ast
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
    """As import-linter's grimp reads the imports (module level, named modules)."""
    graph = grimp.build_graph(*PACKAGES)
    assert circles({m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}) == []


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


def import_graph() -> dict:
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


def circles(graph: dict) -> list:
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


def _layer_of(module: str) -> int | None:
    """The index (0 = top) of the layer of pyproject's layers contract that `module` belongs to."""
    import tomllib

    layers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]["layers"]
    for i, layer in enumerate(layers):
        for member in layer.replace("|", ":").split(":"):
            member = member.strip()
            if module == member or module.startswith(member + "."):
                return i
    return None


def test_no_circle_and_no_upward_import_even_through_init_and_inside_functions():
    graph = import_graph()
    assert circles(graph) == []
    upward = [f"{a} -> {b}" for a, targets in graph.items() for b in targets
              if _layer_of(a) is not None and _layer_of(b) is not None and _layer_of(b) < _layer_of(a)]
    assert upward == []


def test_the_reader_finds_a_circle_through_an_init():
    """The check above can fail: rewrite/__init__ importing the entry layer eagerly (as it once did)
    closes a circle with the engine's `from rewrite.ir import ...`, which runs rewrite/__init__."""
    graph = import_graph()
    assert "rewrite" in graph["passes.manager"] and "rewrite.entry.api" not in graph["rewrite"]
    eager = {**graph, "rewrite": graph["rewrite"] | {"rewrite.entry.api"}}
    assert any("passes.manager" in circle and "rewrite" in circle for circle in circles(eager))


def test_reports_and_sites_are_built_in_one_place_each():
    """Writes to a Report happen in rewrite/report.py (build_report); a Site is made where the pass
    manager decides it (passes/manager.py), and both are frozen."""
    import ast
    import dataclasses

    from rewrite.report import Report, Site

    made = {"Report": set(), "Site": set()}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in made:
                    made[node.func.id].add(str(path.relative_to(ROOT)))
    assert made == {"Report": {"rewrite/report.py"}, "Site": {"passes/manager.py"}}
    site = Site("a", "fold", "applied")
    for record, attribute in ((site, "status"), (Report((site,)), "notes")):
        try:
            setattr(record, attribute, "x")
        except dataclasses.FrozenInstanceError:
            continue
        raise AssertionError(f"{type(record).__name__}.{attribute} could be set")
