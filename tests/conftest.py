"""Shared fixtures. Tests never touch the network and never write into docs/ or site/."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Two cores on CI: keep each test process on one thread so parallel workers do not fight.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built once per test session with ``mkdocs build --strict``."""
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    # --strict already fails on MkDocs warnings; this also catches any that slip past it.
    # (Lines such as "[IPKernelApp] WARNING" come from the notebook kernel, not from MkDocs.)
    mkdocs_warnings = re.findall(r"^WARNING\b.*$", proc.stderr, flags=re.MULTILINE)
    assert not mkdocs_warnings, "\n".join(mkdocs_warnings)
    return out


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright (skipped without it, failed under CI's
    ``BLOCK4_REQUIRE_BROWSER=1``)."""
    from _helpers import chromium_browser

    with chromium_browser() as browser:
        yield browser
