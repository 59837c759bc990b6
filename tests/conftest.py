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
    """The site built once per test run with ``mkdocs build --strict``.

    Under pytest-xdist the workers share one build (the first to ask makes it, the others
    wait for it): two builds side by side would execute every notebook twice, into the same
    cache folders, while the other tests run."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID", "site")  # one per run, shared by workers
    out, failed = shared / f"built-{run}", shared / f"built-{run}.failed"
    with FileLock(str(shared / f"built-{run}.lock")):
        if failed.is_file():
            pytest.fail(failed.read_text(encoding="utf-8"), pytrace=False)
        if not (out / "index.html").is_file():
            problem = _build_site(out)
            if problem:
                failed.write_text(problem, encoding="utf-8")
                pytest.fail(problem, pytrace=False)
    return out


def _build_site(out: Path) -> str | None:
    """Build the site into ``out``; what went wrong, or None."""
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        return f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    # --strict already fails on MkDocs warnings; this also catches any that slip past it.
    # (Lines such as "[IPKernelApp] WARNING" come from the notebook kernel, not from MkDocs.)
    mkdocs_warnings = re.findall(r"^WARNING\b.*$", proc.stderr, flags=re.MULTILINE)
    return "\n".join(mkdocs_warnings) or None


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright (skipped without it, failed under CI's
    ``BLOCK4_REQUIRE_BROWSER=1``)."""
    from _helpers import chromium_browser

    with chromium_browser() as browser:
        yield browser
