"""Helpers shared by the tests (imported as ``from _helpers import ...``)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl


def trainer(**kw: Any) -> pl.Trainer:
    """A quiet, deterministic one-device CPU Trainer for one epoch; ``kw`` overrides any setting.

    No logger, checkpoints, model summary or progress bar, so tests write nothing to disk.
    """
    args: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        deterministic=True,
        max_epochs=1,
    )
    args.update(kw)
    return pl.Trainer(**args)


# ---------------------------------------------------------------------------------------------
# scripts/make_figures.py in a child process (tests/test_signals.py, tests/test_hostile_inputs.py)
# ---------------------------------------------------------------------------------------------

MAKE_FIGURES = "scripts/make_figures.py"


def figures_env(**extra: str) -> dict[str, str]:
    """This environment for a child ``make_figures`` run: one thread per process, no bytecode
    written, and none of the variables a parent run or a cluster sets (a plan, ranks)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1", **extra)
    for var in ("BLOCK4_FIGURES_PLAN", "LOCAL_RANK", "RANK", "NODE_RANK", "SLURM_PROCID"):
        env.pop(var, None)
    return env


def run_make_figures(
    repo: Path,
    *args: str,
    python: tuple[str, ...] = (sys.executable,),
    timeout: float = 120,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """``scripts/make_figures.py *args`` run to its end in ``repo`` (output captured)."""
    return subprocess.run(
        [*python, MAKE_FIGURES, *args],
        cwd=repo,
        env=figures_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---------------------------------------------------------------------------------------------
# A built site in a real browser (tests/test_browser.py, tests/test_live_cells.py)
# ---------------------------------------------------------------------------------------------

CHROMIUM = Path(os.environ.get("BLOCK4_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    # The live cells' Python runtime loads ES modules and WebAssembly, which browsers accept
    # only under these MIME types.
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".wasm": "application/wasm",
    }

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """``directory`` served by a local http.server thread on a free port; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def chromium_browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright, closed on exit.

    Without Chromium the calling test is skipped, or fails where ``BLOCK4_REQUIRE_BROWSER=1``
    (CI, where the browser is required).
    """
    if not CHROMIUM.exists():
        message = (
            f"the browser tests need Chromium at {CHROMIUM}: run `apt-get install -y chromium` "
            "(./dev.sh test does it where apt-get works) or point BLOCK4_CHROMIUM at a "
            "Chromium/Chrome binary"
        )
        if os.environ.get("BLOCK4_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        # launch() starts chromium with a fresh temporary --user-data-dir of its own.
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


def wait_until_quiet(
    page: Any, pending: Collection[Any], quiet_ms: int = 150, timeout_s: float = 15.0
) -> None:
    """Wait until ``pending`` (the page's requests in flight, kept by its ``request``,
    ``requestfinished`` and ``requestfailed`` handlers) has been empty for ``quiet_ms``: a
    faster networkidle, and one that can be asked for again later."""
    deadline = time.monotonic() + timeout_s
    quiet_since = None
    while time.monotonic() < deadline:
        if pending:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif (time.monotonic() - quiet_since) * 1000 >= quiet_ms:
            return
        page.wait_for_timeout(25)
    raise TimeoutError(f"requests still in flight: {[r.url for r in pending]}")


def alive(pid: int) -> bool:
    """True while ``pid`` runs (Linux /proc; a zombie, waiting to be reaped, does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
