"""The shape of the package: one-way layers, rooms of a readable size, an engine that fits in one
sitting and runs on the standard library alone."""

from __future__ import annotations

import ast
import itertools
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "block4"
SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)

#: Limits that keep every module and function readable in one go.
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
MAX_ENGINE_LINES = 350


def _name(path: Path) -> str:
    return path.relative_to(PACKAGE.parent).with_suffix("").as_posix().replace("/", ".")


def test_import_layers_hold() -> None:
    # The contracts live in pyproject.toml ([tool.importlinter]); see docs/reference/index.md.
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which(
        "lint-imports"
    )
    assert exe, "import-linter is not installed: pip install -e '.[dev]'"
    proc = subprocess.run(
        [exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def _contract_layers() -> list[set[str]]:
    """The modules of each layer of the one-way contract in pyproject.toml, top first."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers")
    return [set(re.split(r"\s*[|:]\s*", layer.strip())) for layer in contract["layers"]]


def test_the_reference_table_lists_the_layers_in_the_contracts_order() -> None:
    table = (ROOT / "docs" / "reference" / "index.md").read_text(encoding="utf-8")
    table = table.split("## Where things live", 1)[1].split("\n\n", 3)[2]
    named = [m.split(".")[1] for m in re.findall(r"`(block4\.[a-z_]+)", table)]
    layers = _contract_layers()
    index = {module: i for i, layer in enumerate(layers) for module in layer}
    placed = [(module, index[module]) for module in named if module in index]
    for (before, i), (after, j) in itertools.pairwise(placed):
        assert i <= j, f"the table lists {after} (layer {j}) after {before} (layer {i})"
    assert set(index) <= set(named), f"not in the table: {sorted(set(index) - set(named))}"


def test_the_reference_index_links_every_reference_page_of_the_navigation() -> None:
    nav = re.findall(r"reference/([a-z_]+\.md)", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    index = (ROOT / "docs" / "reference" / "index.md").read_text(encoding="utf-8")
    listed = re.findall(r"\]\(([a-z_]+\.md)\)", index.split("## Where things live", 1)[0])
    pages = [page for page in nav if page != "index.md"]
    assert len(pages) >= 10
    assert listed == pages, "the index's list of pages follows the navigation, in its order"


@pytest.mark.parametrize("path", SOURCES, ids=_name)
def test_no_module_is_over_600_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{_name(path)} has {lines} lines"


def _long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{_name(path)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_is_over_80_lines() -> None:
    long = [f for path in SOURCES for f in _long_functions(path)]
    assert not long, "functions over 80 lines:\n" + "\n".join(long)


def test_the_engine_fits_in_one_sitting_and_needs_only_the_standard_library() -> None:
    engine = PACKAGE / "autograd.py"
    assert len(engine.read_text(encoding="utf-8").splitlines()) <= MAX_ENGINE_LINES
    for path in (engine, PACKAGE / "graph_drawing.py", PACKAGE / "graph_layout.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in top if isinstance(n, ast.ImportFrom) and not n.level]
        outside = [
            n
            for n in names
            if n.split(".")[0] not in sys.stdlib_module_names
            and n not in ("__future__", "block4.graph_layout")  # shipped with them, stdlib only
        ]
        assert not outside, f"{path.name} imports {outside} at module level"
