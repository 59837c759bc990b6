"""A warm helper process for ``mkdocs serve``: figures re-made without paying for imports.

When an edit makes a figure stale, ``mkdocs serve`` re-makes it. A new Python process spends
seconds importing torch, Lightning and matplotlib before it draws anything; after a
plotting-only edit, whose training results come from the results cache, that is most of the
wait. `WarmFigures` starts one helper process that imports those libraries once, and
never ``block4`` (its code is what the author is editing). For every request the helper forks
a child, which imports this checkout's ``block4`` afresh and runs ``scripts/make_figures.py``
with the given arguments, its output going to the server's terminal; the exit status comes
back. The helper preloads only while it has a single thread, so forking it is safe.

Where ``os.fork`` does not exist (Windows), or the helper cannot start or has died, the same
command runs in a new process instead: slower, never different.

Standard library only: the server imports this module, and the helper runs it as a script.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

__all__ = ["PRELOAD", "WarmFigures"]

#: Seconds ``close`` waits at each step (input closed, SIGTERM) before the next.
_CLOSE_GRACE_S = 5.0

#: What the helper imports once: the libraries every figure needs, none of ``block4``.
PRELOAD = ("numpy", "matplotlib", "matplotlib.pyplot", "torch", "pytorch_lightning")


class WarmFigures:
    """Runs ``scripts/make_figures.py ARGS`` in a child of the warm helper (see the module).

    Args:
        root: the repository root (holds ``scripts/make_figures.py`` and ``src/``).
        python: the interpreter of the helper and of the fallback process.
    """

    def __init__(self, root: Path, python: str = sys.executable) -> None:
        self.root = Path(root)
        self.python = python
        self.script = self.root / "scripts" / "make_figures.py"
        self._proc: subprocess.Popen[str] | None = None
        self._ready = False
        self._closed = False
        self._lock = threading.Lock()

    @property
    def warm(self) -> bool:
        """Whether requests go to the helper (it started and has not failed)."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the helper without waiting for its imports (nothing happens without fork)."""
        if not hasattr(os, "fork") or self.warm:
            return
        env = dict(os.environ, MPLBACKEND="Agg")
        try:
            self._proc = subprocess.Popen(
                [self.python, str(Path(__file__).resolve()), "--serve"],
                cwd=self.root,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                bufsize=1,
                env=env,
                start_new_session=True,  # Ctrl+C in the terminal stops the server, which ends it
            )
        except OSError:
            self._proc = None
        self._ready = self._closed = False

    def run(self, args: Sequence[str]) -> int:
        """``scripts/make_figures.py ARGS`` in this checkout; its exit status."""
        with self._lock:
            if self.warm:
                try:
                    return self._request(list(args))
                except (OSError, ValueError, RuntimeError):
                    if self._closed:  # ended by `close` while this ran: stopped, not failed
                        return 128 + signal.SIGTERM
                    self.close()  # a broken helper: from now on, new processes
            cmd = [self.python, str(self.script), *args]
            return subprocess.run(cmd, cwd=self.root, check=False).returncode

    def _reply(self) -> dict:
        assert self._proc is not None and self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the warm figure process ended")
        return json.loads(line)

    def _request(self, args: list[str]) -> int:
        assert self._proc is not None and self._proc.stdin is not None
        if not self._ready:
            hello = self._reply()
            if not hello.get("ready"):
                raise RuntimeError(f"the warm figure process cannot fork: {hello.get('why')}")
            self._ready = True
        self._proc.stdin.write(json.dumps({"args": args, "cwd": str(self.root)}) + "\n")
        self._proc.stdin.flush()
        return int(self._reply()["rc"])

    def close(self) -> None:
        """End the helper: closing its input ends an idle one. One still making a figure gets
        SIGTERM with its child (they share a process group), which stops the figure as
        ``make_figures.py`` stops on a signal (no half-written file); then SIGKILL."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        self._closed = True
        with contextlib.suppress(OSError, ValueError):
            if proc.stdin is not None:
                proc.stdin.close()
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=_CLOSE_GRACE_S)
                break
            except subprocess.TimeoutExpired:
                continue
        if proc.stdout is not None:
            proc.stdout.close()


# ---------------------------------------------------------------------------------------------
# The helper process
# ---------------------------------------------------------------------------------------------


def _say(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _child(script: str, args: list[str], cwd: str) -> None:
    """In a forked child: run the command line of ``script`` with ``args``; never returns."""
    code = 1
    try:
        os.chdir(cwd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)  # the request pipe is the helper's
        os.dup2(2, 1)  # the reply pipe too: the command's output goes to the terminal
        signal.signal(signal.SIGINT, signal.default_int_handler)
        import runpy

        sys.argv = [script, *args]
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _serve() -> int:
    """The helper: preload, say whether forking is safe, then fork a child per request."""
    import importlib

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server ends it by closing its input
    for name in PRELOAD:
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    if threading.active_count() > 1:
        _say({"ready": False, "why": f"{threading.active_count()} threads after the imports"})
        return 1
    _say({"ready": True, "preloaded": [n for n in PRELOAD if n in sys.modules]})
    script = str(Path.cwd() / "scripts" / "make_figures.py")
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(script, list(request["args"]), request["cwd"])
        _, status = os.waitpid(pid, 0)
        _say({"rc": os.waitstatus_to_exitcode(status)})
    return 0


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    sys.path.pop(0)  # this file's folder (src/block4) must not shadow anything
    sys.exit(_serve())
