"""The package's shape: no import cycles, lower layers never import higher ones, cheap commands stay torch-free,
and a wheel built from the repository carries the recipes.

Check by hand: ``python -m pytest -q tests/test_layout.py`` (the cycle search reads every module's top-level
imports with ``ast``: the imports that run when the module is imported).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "dlcli"

#: modules that must never import (at module level) anything from the higher layers
LOWER = ("dlcli.errors", "dlcli.config", "dlcli.registry", "dlcli.checkpoint", "dlcli.runtime", "dlcli.data",
         "dlcli.data_core", "dlcli.data_images", "dlcli.data_cifar", "dlcli.download", "dlcli.batches", "dlcli.plots",
         "dlcli.envs", "dlcli.classifier", "dlcli.timing", "dlcli.data_status")
HIGHER = ("dlcli.tasks", "dlcli.report", "dlcli.cli", "dlcli.train", "dlcli.attacks", "dlcli.bench")


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _top_level_imports(path: Path) -> set[str]:
    """dlcli modules imported when ``path`` is imported (module body only, not inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    body = list(tree.body)
    while body:
        node = body.pop(0)
        if isinstance(node, (ast.If, ast.Try)):  # `if TYPE_CHECKING:` blocks never run; try-blocks do
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            body.extend(node.body + getattr(node, "orelse", []) + [h for x in getattr(node, "handlers", [])
                                                                      for h in x.body])
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("dlcli"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dlcli"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = {d for d in _top_level_imports(path) if d in modules and d != name}
        graph[name] = deps
    return graph


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for d in graph.get(n, ()):
            if state.get(d) == 1:
                cycle = stack[stack.index(d):] + [d]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_lower_layers_do_not_import_higher_ones():
    graph = _graph()
    for low in LOWER:
        for dep in graph.get(low, ()):
            assert not dep.startswith(HIGHER), f"{low} imports {dep} (a higher layer)"


@pytest.mark.parametrize("args", [["--help"], ["list"], ["list", "--json"]])
def test_cheap_commands_do_not_import_torch(args, tmp_path):
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "dlcli", *args], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" not in imported, sorted(m for m in imported if m.startswith("dlcli"))


def test_packages_listed_in_pyproject_are_complete():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {_module_name(p.parent / "__init__.py") for p in PKG.rglob("__init__.py")}
    assert found | {"dlcli.recipes"} == listed


@pytest.mark.slow
def test_a_built_wheel_carries_the_recipes(tmp_path):
    """Build the wheel (no -e), install it into a fresh virtual environment without pip, and run dlcli from
    another folder: `list` shows every recipe and `show lenet` resolves it."""
    import shutil

    # a clean copy: an earlier build's build/ folder must not supply files that the configuration would not
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv", ".ci-venv", "build", "dist", "runs",
                                                             "*.egg-info", "__pycache__", ".pytest_cache"))
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(wheels), str(src)], capture_output=True, text=True, timeout=300)
    if build.returncode != 0 and "No module named" in build.stderr and "setuptools" in build.stderr:
        pytest.skip("setuptools is not installed in this environment")
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("dlcli-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python*/site-packages"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    # the new environment sees torch & co. through a .pth file, but not this checkout or its editable install
    deps = [p for p in sys.path if p.endswith("site-packages")]
    (site / "deps.pth").write_text("\n".join(deps) + "\n")
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DLCLI_RECIPES")}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(py), "-c", "import dlcli, sys; print(dlcli.__file__)"], capture_output=True,
                           text=True, cwd=elsewhere, env=env, timeout=60)
    assert str(site) in where.stdout, where.stdout + where.stderr  # the installed copy, not the checkout
    listing = subprocess.run([str(py), "-m", "dlcli", "list", "--json"], capture_output=True, text=True,
                             cwd=elsewhere, env=env, timeout=120)
    assert listing.returncode == 0, listing.stderr
    import json

    names = {r["name"] for r in json.loads(listing.stdout)["recipes"]}
    assert names == {p.stem for p in (REPO / "recipes").glob("*.yaml")}
    show = subprocess.run([str(py), "-m", "dlcli", "show", "lenet"], capture_output=True, text=True, cwd=elsewhere,
                          env=env, timeout=300)
    assert show.returncode == 0 and "name: lenet" in show.stdout, show.stderr
