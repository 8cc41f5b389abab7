"""The map in docs/architecture.md, checked on the code: which folder may import which, no
import cycle between modules, torch kept out of the layers that promise not to need it,
and ``kdpipe --help`` importing none of torch, zarr or polars."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kdpipe"

# The layers of docs/architecture.md, top to bottom, and what each may import from kdpipe
# (besides itself). "base" is the top-level modules (kdpipe/*.py).
MAY_IMPORT = {
    "cli": {
        "pipeline",
        "teach",
        "learn",
        "align",
        "decode",
        "hmm",
        "store",
        "corpus",
        "models",
        "base",
    },
    "pipeline": {"teach", "learn", "align", "decode", "hmm", "store", "corpus", "models", "base"},
    "teach": {"store", "corpus", "models", "base"},
    "learn": {"decode", "store", "corpus", "models", "base"},
    "decode": {"hmm", "corpus", "base"},
    "align": {"hmm", "corpus", "models", "base"},
    "hmm": {"corpus", "base"},
    "models": {"corpus", "base"},
    "store": {"base"},
    "corpus": {"base"},
    "base": set(),
    "testing": {"teach", "learn", "align", "decode", "hmm", "store", "corpus", "models", "base"},
}
NO_TORCH = {
    "store",
    "corpus",
    "pipeline",
    "cli",
    "hmm",
    "decode",
}  # layers that must not import torch at all
NO_TORCH_BASE = {
    "errors", "schema", "labels", "levels", "sparse", "essence", "zarrio", "console", "seeds"
}  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts).removesuffix(".__init__")


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or (len(parts) == 2 and parts[1] not in MAY_IMPORT):
        return "base"
    return parts[1]


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, module level and inside functions alike."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def kdpipe_imports(path: Path) -> set[str]:
    return {m for m in imports(path) if m in MODULES and m != module_name(path)}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_flow(module):
    own = layer(module)
    if module in ("kdpipe.__main__",):  # ``python -m kdpipe``: the CLI's entry point
        return
    wrong = sorted(
        m
        for m in kdpipe_imports(MODULES[module])
        if layer(m) != own and layer(m) not in MAY_IMPORT[own]
    )
    assert not wrong, f"{module} ({own}) imports {wrong}, against docs/architecture.md"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_torch_stays_out_of_light_layers(module):
    own = layer(module)
    light = own in NO_TORCH or (own == "base" and module.split(".")[-1] in NO_TORCH_BASE)
    if light:
        torch = {m for m in imports(MODULES[module]) if m.split(".")[0] == "torch"}
        assert not torch, f"{module} ({own}) imports torch"


def test_no_two_modules_import_each_other():
    """No cycle between kdpipe's modules (a package's ``__init__`` that re-exports counts)."""
    graph = {m: kdpipe_imports(p) for m, p in MODULES.items()}
    # Tarjan's strongly connected components, recursive (the graph is small).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for child in sorted(graph[node]):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    # a package's __init__ importing its own submodules to re-export them is its face
    real = [c for c in cycles if not all(m.startswith(c[0] + ".") or m == c[0] for m in c)]
    assert not real, f"import cycles: {real}"


def test_nothing_outside_the_cli_imports_it():
    offenders = sorted(
        m
        for m, p in MODULES.items()
        if layer(m) != "cli"
        and m != "kdpipe.__main__"
        and any(i.startswith("kdpipe.cli") for i in imports(p))
    )
    assert not offenders


def test_help_imports_no_heavy_package():
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "kdpipe", "--help"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert not loaded & {"torch", "zarr", "polars"}


def test_every_folder_is_a_package():
    """A folder without ``__init__.py`` imports in a checkout (namespace package) but is left
    out of the wheel (setuptools' ``packages.find``)."""
    folders = {p.parent for p in PACKAGE.rglob("*.py")}
    assert not sorted(str(f) for f in folders if not (f / "__init__.py").is_file())
