"""A fresh clone's first ``./dev.sh serve``: seconds until the first page, and until every
companion notebook page shows its outputs.

Usage::

    python benchmarks/first_start.py                     # both modes, a fresh clone each
    python benchmarks/first_start.py --modes deferred --figures-from docs/figures

For each mode it clones the repository (its committed ``HEAD``) into a temporary folder, runs
``./dev.sh serve`` there (creating ``.venv``, installing, refreshing figures, building, serving)
and polls the server with HTTP requests:

* ``deferred`` (the default of ``serve``): the site is served before the notebooks have run;
  their pages say their outputs are being computed and fill in when the background run is done;
* ``inline`` (``BLOCK4_DEFER_NOTEBOOKS=0``, how ``serve`` worked before): every notebook is
  executed before the first page is served.

Then it stops the server as a person would (Ctrl+C, i.e. SIGINT to its process group) and
checks that no process of the clone is left; starts it again with the warm cache (``warm``,
stopped with ``kill PID``); and, for ``deferred``, once more with the notebook cache deleted,
stopped with ``kill PID`` while the background run is still going. Each start's seconds: the
set-up (venv, installs, figures) until the site build starts, the first page, every notebook
page filled. The committed figures are meant to be fresh; ``--figures-from`` copies a folder
of fresh figures into the clone first (while they are being re-made on a branch), so the
figure step is the no-op it is on a fresh clone of a release. Writes ``first_start.json``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, write_result  # noqa: E402

#: The first page may take this long at most (a fresh venv on a slow network takes minutes).
DEFAULT_TIMEOUT_S = 900.0
#: What an executed notebook's page has and a page without outputs lacks.
OUTPUT_MARK = 'class="jp-OutputArea jp-Cell-outputArea"'
PENDING_MARK = "block4-notebook-pending"
GOAL_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, ""
    except (OSError, urllib.error.URLError):
        return 0, ""


def clone_processes(clone: Path) -> list[str]:
    """Processes (other than this one) that run in ``clone`` or name it: what must not
    outlive the server."""
    found = []
    needle = str(clone)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if needle in cmdline or cwd == needle or cwd.startswith(needle + "/"):
            found.append(f"{entry.name} {cmdline[:120]}")
    return found


class Start:
    """One ``./dev.sh serve`` in ``clone``: its log lines and page times, seconds from start."""

    def __init__(self, clone: Path, defer: bool, notebooks: list[str]) -> None:
        self.clone = clone
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/"
        self.notebooks = notebooks
        self.events: dict[str, float] = {}
        self.log: list[str] = []
        env = dict(os.environ, BLOCK4_ADDR=f"127.0.0.1:{self.port}", NO_MKDOCS_2_WARNING="1")
        env["BLOCK4_DEFER_NOTEBOOKS"] = "1" if defer else "0"
        for key in ("VIRTUAL_ENV", "PYTHONPATH", "BLOCK4_MKDOCS_COMMAND"):
            env.pop(key, None)  # the clone sets up and uses its own .venv
        venv_bin = str(Path(sys.prefix) / "bin")
        env["PATH"] = os.pathsep.join(
            p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin
        )
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            ["./dev.sh", "serve"],
            cwd=clone,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, as in a terminal of its own
        )
        threading.Thread(target=self._read, daemon=True).start()

    def now(self) -> float:
        return round(time.perf_counter() - self.t0, 2)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line.rstrip())
            if "Building documentation" in line:
                self.events.setdefault("site_build_started_s", self.now())

    def wait_pages(self, timeout: float, all_filled: bool = True) -> None:
        """Poll until the first page answers, then (``all_filled``) until every notebook
        page shows outputs and no note that they are pending."""
        end = time.perf_counter() + timeout
        filled: dict[str, float] = {}
        while time.perf_counter() < end:
            if self.proc.poll() is not None:
                tail = "\n".join(self.log[-30:])
                raise SystemExit(f"./dev.sh serve ended (exit {self.proc.returncode}):\n{tail}")
            if "first_page_s" not in self.events:
                if fetch(self.base)[0] == 200:
                    self.events["first_page_s"] = self.now()
                else:
                    time.sleep(0.25)
                    continue
            if not all_filled:
                return
            for name in self.notebooks:
                if name not in filled:
                    status, body = fetch(f"{self.base}notebooks/{name}/")
                    if status == 200 and OUTPUT_MARK in body and PENDING_MARK not in body:
                        filled[name] = self.now()
            if len(filled) == len(self.notebooks):
                self.events["_notebooks_filled_s"] = dict(sorted(filled.items()))
                self.events["all_notebooks_s"] = max(filled.values())
                return
            time.sleep(0.5)
        raise SystemExit(f"timed out after {timeout:g} s: {self.events}")

    def stop(self, how: str) -> dict[str, Any]:
        """Stop as a person would: ``ctrl-c`` (SIGINT to the process group) or ``kill``
        (SIGTERM to the process ``./dev.sh serve`` started as); then what is left over."""
        if how == "ctrl-c":
            os.killpg(self.proc.pid, signal.SIGINT)
        else:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        left: list[str] = []
        for _ in range(10):  # the background run and its kernel notice within a second or two
            left = clone_processes(self.clone)
            if not left:
                break
            time.sleep(0.5)
        return {**self.events, "stopped_with": how, "left_over_processes": left}


def clone_repo(dest: Path, figures_from: Path | None) -> None:
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    if figures_from is not None:
        for item in figures_from.iterdir():
            if item.is_file() and not item.name.startswith("."):
                shutil.copy2(item, dest / "docs" / "figures" / item.name)


def measure(mode: str, work: Path, figures_from: Path | None, timeout: float) -> list[dict]:
    clone = work / f"clone-{mode}"
    clone_repo(clone, figures_from)
    notebooks = sorted(p.stem for p in (clone / "docs" / "notebooks").glob("*.py"))
    defer = mode == "deferred"
    runs = []

    start = Start(clone, defer, notebooks)
    start.wait_pages(timeout)
    runs.append({"mode": mode, "start": "fresh clone", **start.stop("ctrl-c")})
    print(f"{mode}, fresh clone: {runs[-1]}", flush=True)

    start = Start(clone, defer, notebooks)
    start.wait_pages(timeout)
    runs.append({"mode": mode, "start": "warm cache", **start.stop("kill")})
    print(f"{mode}, warm cache: {runs[-1]}", flush=True)

    if defer:  # stopped while the notebooks still run in the background
        shutil.rmtree(clone / ".cache" / "mkdocs-jupyter")
        start = Start(clone, defer, notebooks)
        start.wait_pages(timeout, all_filled=False)
        time.sleep(3)  # the background run is under way
        running = any(re.search(r"notebook_runner", p) for p in clone_processes(clone))
        runs.append(
            {
                "mode": mode,
                "start": "cache deleted, stopped during the background run",
                "background_run_seen": running,
                **start.stop("kill"),
            }
        )
        print(f"{mode}, stopped early: {runs[-1]}", flush=True)
    return runs


def summary(runs: list[dict]) -> dict[str, Any]:
    def pick(mode: str, start: str, key: str) -> float | None:
        for run in runs:
            if run["mode"] == mode and run["start"] == start:
                return run.get(key)
        return None

    return {
        "goal_first_page_s": GOAL_S,
        "first_page_s": pick("deferred", "fresh clone", "first_page_s"),
        "all_notebooks_s": pick("deferred", "fresh clone", "all_notebooks_s"),
        "warm_first_page_s": pick("deferred", "warm cache", "first_page_s"),
        "before_first_page_s": pick("inline", "fresh clone", "first_page_s"),
        "left_over_processes": sum(len(r["left_over_processes"]) for r in runs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--modes", default="deferred,inline", help="comma-separated: deferred, inline"
    )
    parser.add_argument("--figures-from", type=Path, help="copy fresh figures from this folder")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per start"
    )
    parser.add_argument("--out-dir", type=Path, help="where first_start.json goes")
    parser.add_argument("--keep", action="store_true", help="keep the clones (printed)")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("deferred", "inline")]
    if bad or not modes:
        parser.error(f"--modes {args.modes!r}: use deferred, inline or both (comma-separated)")
    if args.figures_from is not None and not args.figures_from.is_dir():
        parser.error(f"--figures-from {args.figures_from}: not a folder")

    commit = subprocess.run(  # what the clones check out
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="block4-first-start-"))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    try:
        runs = []
        for mode in modes:
            runs += measure(mode, work, args.figures_from, args.timeout)
    finally:
        if args.keep:
            print(f"clones kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results = {
        **summary(runs),
        "commit": commit,
        "figures_seeded": args.figures_from is not None,
        "load_average_at_start": load,
        "runs": runs,
    }
    path = write_result("first_start", results, out_dir=args.out_dir)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
