"""The background notebook run of ``mkdocs serve`` ends with the server, however it ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _helpers import alive

from block4 import notebook_runner

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads processes from /proc")

SLOW_NOTEBOOK = """\
# %%
import time

time.sleep(120)
"""

# A stand-in for the server: starts the background run as the hook does, then waits.
SERVER = """\
import json, sys, time
from pathlib import Path
from block4 import notebook_runner
job = notebook_runner.Job(**json.loads(sys.argv[1]))
notebook_runner.ensure([job], Path(sys.argv[2]))
print(notebook_runner._current.proc.pid, flush=True)
if sys.argv[3] == "stop":
    sys.stdin.readline()
    notebook_runner.stop()
    print("stopped", flush=True)
time.sleep(300)
"""


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _wait(condition, timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.1)
    return False


def _start_server(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[str], int, int]:
    """The stand-in server, its background run and the run's notebook kernel."""
    import json
    from dataclasses import asdict

    notebook = tmp_path / "slow.py"
    notebook.write_text(SLOW_NOTEBOOK)
    (tmp_path / "cache").mkdir()
    job = notebook_runner.Job(
        str(notebook), str(tmp_path / "cache" / "k.json"), {"execute": True}, 6
    )
    src = str(Path(notebook_runner.__file__).resolve().parents[1])
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, json.dumps(asdict(job)), str(tmp_path / "stamp"), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": src},
    )
    assert server.stdout is not None
    runner = int(server.stdout.readline())
    kernels: list[int] = []
    assert _wait(lambda: bool(kernels.extend(_children(runner)) or kernels)), "no kernel started"
    return server, runner, kernels[0]


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_the_background_run_and_its_kernel_end_with_the_server(tmp_path: Path, how: str) -> None:
    server, runner, kernel = _start_server(tmp_path, how)
    try:
        assert alive(runner) and alive(kernel)
        if how == "kill":  # the server dies without a word: the run notices within a second
            server.send_signal(signal.SIGKILL)
            server.wait()
        else:  # the server stops (Ctrl+C): it ends the run itself
            assert server.stdin is not None and server.stdout is not None
            server.stdin.write("\n")
            server.stdin.flush()
            assert server.stdout.readline() == "stopped\n"
            assert not alive(runner)
        assert _wait(lambda: not alive(runner), 5), "the background run outlived the server"
        assert _wait(lambda: not alive(kernel), 5), "the notebook's kernel outlived the server"
    finally:
        for pid in (server.pid, runner, kernel):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        server.wait()


def test_a_run_covering_the_wanted_notebooks_keeps_going(tmp_path: Path) -> None:
    stamp = tmp_path / "stamp"
    a = notebook_runner.Job(str(tmp_path / "a.py"), str(tmp_path / "a.json"))
    b = notebook_runner.Job(str(tmp_path / "b.py"), str(tmp_path / "b.json"))
    (tmp_path / "a.py").write_text(SLOW_NOTEBOOK)
    (tmp_path / "b.py").write_text(SLOW_NOTEBOOK)
    try:
        assert notebook_runner.ensure([a, b], stamp)
        first = notebook_runner._current
        assert not notebook_runner.ensure([b], stamp)  # a is done: the same run goes on with b
        assert notebook_runner._current is first and notebook_runner.running()
        assert notebook_runner.ensure(
            [b, notebook_runner.Job(a.source, str(tmp_path / "a2.json"))], stamp
        )
        assert first is not None and first.proc.poll() is not None  # a changed: started anew
        notebook_runner.ensure([], stamp)  # nothing left to run: stopped
        assert not notebook_runner.running()
    finally:
        notebook_runner.stop()
