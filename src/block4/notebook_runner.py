"""Runs the companion notebooks in the background while ``mkdocs serve`` already serves the site.

Executing the six notebooks takes most of a first ``mkdocs serve`` build. So that a fresh
checkout shows its site at once, the serve build (see `block4.docs_hooks`) shows a notebook
whose outputs are not cached yet *without outputs*, under a note saying they are being
computed, and hands it to this module: one background process executes those notebooks exactly
as mkdocs-jupyter would (same options, same cache entry), one after the other, and after each
touches a file the server watches, so the next build takes the outputs from the cache and the
browser reloads. ``mkdocs build`` never defers: it executes every notebook itself.

The background process belongs to the server: `stop` ends it (the hook calls it when the
server stops), and it ends itself within a second when the server process is gone, however it
ended (Ctrl+C, ``kill``, a crash), and it ends the notebook's kernel as it goes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePath
from typing import Any

#: The options of mkdocs-jupyter's ``nb2html`` that shape a rendered notebook.
RENDER_OPTIONS = (
    "kernel_name",
    "theme",
    "allow_errors",
    "show_input",
    "no_input",
    "no_prompt",
    "remove_tag_config",
    "highlight_extra_classes",
    "include_requirejs",
    "custom_mathjax_url",
)

#: Written next to a cache entry when running its notebook failed: the error, for the page.
ERROR_SUFFIX = ".error.txt"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class Job:
    """One notebook to execute and the mkdocs-jupyter cache entry its rendering goes to."""

    source: str
    cache_file: str
    options: dict[str, Any] = field(default_factory=dict)
    toc_depth: int = 6

    @property
    def name(self) -> str:
        return Path(self.source).name

    @property
    def error_file(self) -> Path:
        return Path(self.cache_file).with_suffix(ERROR_SUFFIX)


def job_for(source: Path, cache_dir: Path, plugin_config: Mapping[str, Any]) -> Job | None:
    """The job that executes ``source`` into the cache entry mkdocs-jupyter (configured by
    ``plugin_config``, caching in ``cache_dir``) looks up for it; ``None`` when the plugin
    does not execute this notebook (``execute: false`` or ``execute_ignore``) or its cache key
    cannot be computed (another mkdocs-jupyter release), in which case the build renders it."""
    if not plugin_config.get("execute") or not plugin_config.get("cache"):
        return None
    if any(PurePath(source).match(p) for p in plugin_config.get("execute_ignore") or []):
        return None
    try:
        from mkdocs_jupyter.plugin import _compute_cache_key
    except ImportError:  # the cache key is that plugin's own recipe; without it, no deferral
        return None
    key = _compute_cache_key(str(source), plugin_config, True)
    return Job(
        source=str(source),
        cache_file=str(cache_dir / f"{key}.json"),
        options={"execute": True, **{k: plugin_config[k] for k in RENDER_OPTIONS}},
        toc_depth=int(plugin_config.get("toc_depth", 6)),
    )


def failure(job: Job) -> str | None:
    """The error (one line) running ``job`` gave, if it failed under this server process (a
    restarted server tries again)."""
    try:
        server, summary, *_ = job.error_file.read_text(encoding="utf-8").split("\n", 2)
    except (OSError, ValueError):
        return None
    return (summary or "unknown error") if server == str(os.getpid()) else None


def _summary(err: BaseException) -> str:
    """One line for the page: a notebook's own exception (``ValueError: ...``), else ours."""
    ename, evalue = getattr(err, "ename", None), getattr(err, "evalue", None)
    if ename:  # nbclient's CellExecutionError carries the cell's exception
        line = f"{ename}: {evalue}" if evalue else str(ename)
    else:
        line = f"{type(err).__name__}: {err}"
    return " ".join(_ANSI.sub("", line).split())


# -- the background process, seen from the server ---------------------------------------------


@dataclass
class _Run:
    proc: subprocess.Popen[bytes]
    cache_files: frozenset[str]


# This module is imported once per server process (the hook file itself is reloaded on every
# rebuild), so the process handle survives rebuilds here.
_current: _Run | None = None


def running() -> bool:
    """Whether a background run is in progress."""
    return _current is not None and _current.proc.poll() is None


def ensure(jobs: Sequence[Job], stamp: Path) -> bool:
    """Have ``jobs`` executed in the background, touching ``stamp`` after each; return whether
    a new process was started. A run that already covers every job keeps going (it was started
    for these notebooks and more); any other run is stopped first. No jobs: stop any run."""
    global _current
    wanted = frozenset(job.cache_file for job in jobs)
    if running() and wanted and _current is not None and wanted <= _current.cache_files:
        return False
    stop()
    if not jobs:
        return False
    stamp.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps([asdict(job) for job in jobs])
    src = str(Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
    }
    cmd = [sys.executable, "-m", "block4.notebook_runner", "--stamp", str(stamp)]
    cmd += ["--parent", str(os.getpid())]
    # A session of its own: Ctrl+C in the terminal reaches the server, which stops this run
    # cleanly, instead of interrupting a notebook mid-cell with a traceback.
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, env=env, start_new_session=True)
    assert proc.stdin is not None
    proc.stdin.write(payload.encode())
    proc.stdin.close()
    _current = _Run(proc, wanted)
    return True


def stop(timeout: float = 5.0) -> None:
    """End the background run, if any, and wait for it."""
    global _current
    run, _current = _current, None
    if run is None or run.proc.poll() is not None:
        return
    try:
        os.killpg(run.proc.pid, signal.SIGTERM)
        run.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(run.proc.pid, signal.SIGKILL)
        run.proc.wait()
    except ProcessLookupError:
        pass


# -- the background process itself ------------------------------------------------------------


def _say(message: str) -> None:
    # the server's terminal, in the server's own log format
    print(f"INFO    -  block4: {message}", file=sys.stderr, flush=True)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def execute(job: Job) -> bool:
    """Execute one notebook and write its rendering where mkdocs-jupyter looks for it (or, when
    it fails, the error next to it); return whether it succeeded."""
    from mkdocs_jupyter import convert
    from mkdocs_jupyter.plugin import _get_nb_toc_tokens

    cache_file = Path(job.cache_file)
    try:
        body = convert.nb2html(job.source, **job.options)
        toc_tokens, title = _get_nb_toc_tokens(job.source, job.toc_depth)
    except Exception as err:  # the notebook's own error, whatever it is, goes to its page
        error = traceback.format_exc()
        print(error, file=sys.stderr, flush=True)
        if cache_file.parent.is_dir():
            text = f"{os.getppid()}\n{_summary(err)}\n\n{_ANSI.sub('', error)}"
            _atomic_write(job.error_file, text)
        return False
    if not cache_file.parent.is_dir():
        return False  # the notebook or its code changed meanwhile: this version is not shown
    entry = {"content": body, "toc_tokens": toc_tokens, "title": title}
    _atomic_write(cache_file, json.dumps(entry))
    return True


def _children() -> list[int]:
    """The processes this one started (the notebook's kernel); none known off Linux."""
    me, found = os.getpid(), []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == me:  # the field after the state: ppid
            found.append(int(entry.name))
    return found


def _end(code: int) -> None:
    """End this process and the kernel it started (a kernel runs in a session of its own,
    so the signal that ended this process did not reach it; left alone, it would only notice
    its parent is gone once its own start-up is over, or never under a sub-reaper)."""
    for pid in _children():
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGTERM)
            else:
                os.kill(pid, signal.SIGTERM)
        except OSError:  # already gone
            pass
    os._exit(code)


def _exit_with(parent: int) -> None:
    """End this process as soon as ``parent`` (the server) is gone."""
    while os.getppid() == parent:
        time.sleep(0.5)
    _end(0)


def run(jobs: Sequence[Job], stamp: Path) -> int:
    """Execute ``jobs`` in order, touching ``stamp`` after each; return the number that failed."""
    failed = 0
    for job in jobs:
        start = time.perf_counter()
        ok = execute(job)
        failed += not ok
        took = time.perf_counter() - start
        _say(
            f"notebook {job.name} executed in the background in {took:.1f} s; its page fills in"
            if ok
            else f"notebook {job.name} failed in the background after {took:.1f} s (see above)"
        )
        stamp.write_text(f"{job.name}\n", encoding="utf-8")  # a change the server sees
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--stamp", type=Path, required=True, help="file touched after each notebook"
    )
    parser.add_argument("--parent", type=int, default=0, help="end when this process is gone")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, _: _end(128 + signum))  # `stop`
    if args.parent:
        threading.Thread(target=_exit_with, args=(args.parent,), daemon=True).start()
    jobs = [Job(**item) for item in json.load(sys.stdin)]
    return 1 if run(jobs, args.stamp) else 0


if __name__ == "__main__":
    sys.exit(main())
