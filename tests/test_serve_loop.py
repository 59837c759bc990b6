"""The author's loop under ``mkdocs serve``: re-drawn figures shown at once, the full rebuild
after them; the warm figure process and its fallback."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from test_docs_hooks import _env, _make
from test_pipeline import make_project

from block4 import pipeline, serve_loop
from block4.warm_figures import WarmFigures


def test_scan_and_changed_see_edits_additions_and_removals(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("A = 1\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "b.py").write_text("B = 1\n")
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "b.pyc").write_bytes(b"x")
    before = serve_loop.scan([tmp_path])
    assert sorted(Path(p).name for p in before) == ["a.py", "b.py"]  # caches left out
    assert serve_loop.changed(before, serve_loop.scan([tmp_path])) == set()
    (tmp_path / "pkg" / "b.py").write_text("B = 22\n")
    (tmp_path / "a.py").unlink()
    (tmp_path / "c.md").write_text("new")
    assert {Path(p).name for p in serve_loop.changed(before, serve_loop.scan([tmp_path]))} == {
        "a.py",
        "b.py",
        "c.md",
    }


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A miniature checkout, with this process's environment set as for its own tools."""
    root = make_project(tmp_path / "repo")
    for name, value in _env(root).items():
        monkeypatch.setenv(name, value)
    return root


@pytest.mark.slow
def test_the_warm_process_runs_the_command_line_and_falls_back_without_fork(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warm = WarmFigures(root)
    warm.start()
    try:
        assert warm.warm
        assert warm.run(["--only", "line_plot", "--profile", "smoke", "--no-progress"]) == 0
        entry = pipeline.load_manifest(pipeline.Project(root))["figures"]["line_plot"]
        assert (
            entry["profile"] == "smoke" and (root / "docs" / "figures" / "line_plot.svg").is_file()
        )
        # the child imports the code as it is now: an edit between two runs is seen
        (root / "src" / "block4" / "helper.py").write_text("SCALE = 3.0\n")
        assert warm.run(["--only", "line_plot", "--profile", "smoke", "--no-progress"]) == 0
        entry = pipeline.load_manifest(pipeline.Project(root))["figures"]["line_plot"]
        assert entry["numbers"]["slope"] == 3.0
        assert warm.run(["--only", "no_such_figure"]) == 2  # the command's own exit status
        assert warm.warm
    finally:
        warm.close()
    assert not warm.warm
    monkeypatch.delattr(os, "fork")  # e.g. Windows: a new process per run, same result
    plain = WarmFigures(root)
    plain.start()
    assert not plain.warm
    (root / "src" / "block4" / "helper.py").write_text("SCALE = 5.0\n")
    assert plain.run(["--only", "line_plot", "--profile", "smoke", "--no-progress"]) == 0
    entry = pipeline.load_manifest(pipeline.Project(root))["figures"]["line_plot"]
    assert entry["numbers"]["slope"] == 5.0


@pytest.mark.slow
def test_closing_the_warm_process_stops_a_figure_it_is_making_cleanly(root: Path) -> None:
    _make(root, "--profile", "smoke")
    figures = root / "docs" / "figures"
    before = {p.name: p.read_bytes() for p in figures.iterdir()}
    demo = root / "src" / "block4" / "figures" / "demo.py"
    demo.write_text(
        demo.read_text().replace(
            "    fig, ax = subplots(",
            "    import time\n    time.sleep(120)\n    fig, ax = subplots(",
            1,
        )
    )
    warm = WarmFigures(root)
    warm.start()
    assert warm.run(["--only", "other_plot", "--force", "--profile", "smoke"]) == 0  # warm now
    before["manifest.json"] = (figures / "manifest.json").read_bytes()
    before["other_plot.svg"] = (figures / "other_plot.svg").read_bytes()
    before["other_plot.dark.svg"] = (figures / "other_plot.dark.svg").read_bytes()
    result: list[int] = []
    runner = threading.Thread(
        target=lambda: result.append(warm.run(["--only", "line_plot", "--profile", "smoke"]))
    )
    runner.start()
    time.sleep(3.0)  # the child is asleep inside the figure
    start = time.monotonic()
    warm.close()
    runner.join(timeout=30)
    assert result == [128 + signal.SIGTERM]  # stopped, not run again in a new process
    assert time.monotonic() - start < 15
    time.sleep(1.0)  # the child unwinds
    assert {p.name: p.read_bytes() for p in figures.iterdir()} == before  # nothing half-written


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read()
    except (OSError, urllib.error.URLError):
        return None


def _wait_for(condition, timeout: float, what: str, log: Path, server=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        if server is not None and server.poll() is not None:
            raise AssertionError(
                f"the server ended (exit {server.returncode}) while waiting for {what}; "
                f"its log:\n{log.read_text()[-4000:]}"
            )
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; server log:\n{log.read_text()[-4000:]}")


@pytest.mark.slow
def test_serve_shows_a_redrawn_figure_before_the_full_rebuild_and_rebuilds_for_new_numbers(
    tmp_path: Path,
) -> None:
    root = make_project(tmp_path / "repo", with_docs=True)
    _make(root, "--profile", "quick")
    port = _free_port()
    base = f"http://127.0.0.1:{port}/"
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "mkdocs", "serve", "-a", f"127.0.0.1:{port}"],
            cwd=root, env=_env(root), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        _wait_for(lambda: _get(base), 120, "the first page", log, server)
        # The server answers before its file watchers (polling every 0.5 s) have taken their
        # first look at the files: an edit made before that look would go unnoticed.
        time.sleep(1.5)
        before = _get(base + "figures/line_plot.svg")
        other = _get(base + "figures/other_plot.svg")
        demo = root / "src" / "block4" / "figures" / "demo.py"
        # a plotting-only edit: the axis label
        demo.write_text(demo.read_text().replace('"x (units)"', '"x (metres)"'))
        shown = _wait_for(
            lambda: (svg := _get(base + "figures/line_plot.svg")) != before and svg,
            120, "the re-drawn figure", log, server,
        )  # fmt: skip
        assert b"metres" in shown
        text = log.read_text()
        assert (
            "re-making figure line_plot (changed: block4.figures.demo:line_plot; quick profile)"
            in text
        )
        assert "showing the re-drawn line_plot now; the full rebuild follows" in text
        assert "re-making figure other_plot" not in text
        assert _get(base + "figures/other_plot.svg") == other
        # the full build follows, without re-making anything again. Its end is the reload
        # after "Building documentation...": MkDocs drops a "Documentation built in 0.49
        # seconds" that repeats an earlier line word for word (its DuplicateFilter).
        _wait_for(
            lambda: _full_build_done(log.read_text().split("showing the re-drawn")[-1]),
            120,
            "the full rebuild",
            log,
            server,
        )
        assert log.read_text().count("re-making figure line_plot") == 1
        # numbers change (the page quotes the slope): no short cut, the page is rebuilt with them
        (root / "src" / "block4" / "helper.py").write_text("SCALE = 4.0\n")
        page = _wait_for(
            lambda: (html := _get(base)) and b"The slope is 4" in html and html, 180,
            "the page with the new number", log, server,
        )  # fmt: skip
        assert b"The slope is 4" in page
        assert "the figures' numbers changed; the pages are rebuilt with them" in log.read_text()
        entry = pipeline.load_manifest(pipeline.Project(root))["figures"]["line_plot"]
        assert entry["profile"] == "quick" and entry["numbers"]["slope"] == 4.0
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=30)
    # Ctrl+C ends the server and its warm figure process
    time.sleep(0.5)
    left = subprocess.run(
        ["pgrep", "-f", "warm_figures.py --serve"], capture_output=True, text=True
    )
    assert str(root) not in _cmdlines(left.stdout.split())


def _full_build_done(text: str) -> bool:
    """Whether ``text`` (a part of the server's log) shows a full build that has ended."""
    build = text.find("Building documentation...")
    return build >= 0 and "Reloading browsers" in text[build:]


def _cmdlines(pids: list[str]) -> str:
    """The working folders of the processes ``pids`` (those still there)."""
    lines = []
    for pid in pids:
        with contextlib.suppress(OSError):
            lines.append(Path(f"/proc/{pid}/cwd").resolve().as_posix())
    return "\n".join(lines)
