"""The package imports cheaply and ships its data."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import block4


def test_version_is_a_string() -> None:
    assert isinstance(block4.__version__, str) and block4.__version__.count(".") == 2


def test_import_block4_does_not_import_torch() -> None:
    code = "import sys, block4; print('torch' in sys.modules, 'lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_blood_pressure_data_ships_with_the_package() -> None:
    text = resources.files("block4").joinpath("_data/blood_pressure.csv").read_text()
    rows = text.strip().splitlines()
    assert rows[0] == "age,sbp"
    assert rows[1] == "22,131"  # the 22-year-old woman of the likelihood example
    assert len(rows) == 34  # header + 33 women


def test_code_is_ruff_clean() -> None:
    root = Path(__file__).resolve().parents[1]
    for args in (["check", "."], ["format", "--check", "."]):
        proc = subprocess.run(
            [sys.executable, "-m", "ruff", *args], cwd=root, capture_output=True, text=True
        )
        assert proc.returncode == 0, f"ruff {' '.join(args)}:\n{proc.stdout}{proc.stderr}"


def test_docstrings_use_markdown_code_spans_not_sphinx_roles() -> None:
    """The API reference renders docstrings as Markdown (Google style): a Sphinx role such as
    ``:func:`name``` would reach the page as it is written."""
    root = Path(__file__).resolve().parents[1]
    role = re.compile(r":(?:func|class|data|mod|meth|attr|obj|exc|const|py:\w+):`")
    found = [
        f"{path.relative_to(root)}:{number}: {line.strip()}"
        for path in sorted((root / "src" / "block4").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if role.search(line)
    ]
    assert found == [], "write `name`, not a Sphinx role:\n" + "\n".join(found)
