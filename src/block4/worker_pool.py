"""The worker processes of ``make_figures.py --jobs N``: how they start, what they import
once, how each makes its figures and how they are stopped.

On Linux the workers are forked from one server process that imported numpy,
matplotlib, torch and Lightning once (Python's ``forkserver`` start method, preloading
``block4.warm_figures.PRELOAD``, never ``block4``: each worker imports this checkout's
code afresh). ``--jobs N`` then pays those imports (5-12 s on 2 CPU cores) once instead
of once per worker, and the server imports while this process plans the run and makes the
short figures that need no Lightning (`block4.figure_runs.made_while_importing`). Elsewhere
each worker is a fresh interpreter (``spawn``). ``BLOCK4_WORKER_START=spawn`` (or ``forkserver``)
chooses.

A worker stops when the run's process is gone, however it ended (``SIGKILL`` included): a
spawned worker is told by the kernel (``PR_SET_PDEATHSIG``, Linux) and checks its parent
every ``block4.stop_signals.PARENT_CHECK_S`` seconds; a forked worker, whose parent is
the server, waits on multiprocessing's sentinel of the run's process, and then ends the
server too. `WorkerPool.close` ends the server at the end of a run: left alone, it would
outlive the run by the seconds Python takes to tear down torch and Lightning.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

from block4.figures.registry import FigureContext
from block4.pipeline import FigureInfo, PipelineError, Project, Sources, run_figure
from block4.stop_signals import (
    STOP_GRACE_S,
    STOP_SIGNALS,
    STOPPED,
    Stopped,
    stop_signals_blocked,
    watch_parent,
    watch_process,
)

__all__ = [
    "RUN_PACKAGES",
    "WORKER_START_ENV",
    "MissingPackages",
    "WorkerPool",
    "failure_message",
    "figure_outcome",
    "require_packages",
    "stop_workers",
    "unit_in_worker",
    "worker_start_method",
]

#: What making figures imports (``--list`` and ``--check`` need none of it).
RUN_PACKAGES = ("numpy", "matplotlib", "torch", "pytorch_lightning")

Job = tuple[FigureInfo, FigureContext]

WORKER_START_ENV = "BLOCK4_WORKER_START"
"""The environment variable that chooses how workers start: ``spawn`` or ``forkserver``."""
_WORKER_STARTS = ("forkserver", "spawn")


class MissingPackages(PipelineError):
    """Making figures needs packages this Python cannot import (it is not the project's)."""


def require_packages(packages: Sequence[str] = RUN_PACKAGES) -> None:
    """Fail once, before any figure starts, when ``packages`` cannot be imported.

    Raises:
        MissingPackages: naming the missing packages and the environment to activate.
    """
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingPackages(
            f"{', '.join(missing)} cannot be imported by {sys.executable}, and making figures "
            f"needs {'it' if len(missing) == 1 else 'them'}; activate the project's environment with `source .venv/bin/activate` "
            "(create it first with `./dev.sh setup`) and run the same command again"
        )


def failure_message(err: BaseException) -> str:
    """The error as text, with its traceback unless it is a `PipelineError` (a user fix)."""
    message = str(err)
    if not isinstance(err, PipelineError):
        message += "\n" + traceback.format_exc().rstrip()
    return message


# --------------------------------------------------------------------------------------------
# In a worker
# --------------------------------------------------------------------------------------------


def figure_outcome(project: Project, info: FigureInfo, ctx: FigureContext, cache: bool) -> tuple:
    """Make one figure in this process: ``(ok, entry or message, seconds)``, as a worker
    reports it (`run_in_parallel` also makes some figures in the run's own process).

    Errors travel back as text: not every exception a figure may raise can be pickled.
    """
    start = time.perf_counter()
    try:
        entry = run_figure(project, info, ctx, sources=Sources(project), cache=cache)
    except Exception as err:
        return False, failure_message(err), time.perf_counter() - start
    return True, entry, time.perf_counter() - start


_REPORTS: Any = None  # in a worker process: the queue its results go back through
_IN_FIGURE = False  # in a worker process: a figure is being made (a stop must unwind it)


def _stop_worker(signum: int, _frame: Any) -> None:
    """A worker's stop-signal handler: unwind the figure being made, else end at once."""
    STOPPED.append(signum)
    if len(STOPPED) > 1:
        return  # already unwinding: let it finish removing its temporary files
    if _IN_FIGURE:
        raise Stopped(signum)
    os._exit(128 + signum)


def _skip_teardown() -> None:
    """End a worker process without tearing down its interpreter.

    Runs at exit, after multiprocessing has flushed the worker's reports and files are all
    written (atomically): freeing torch, Lightning and matplotlib object by object would
    only add about 1.5 s to every parallel run.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def _start_worker(reports: Any, parent: int | None, env: dict[str, str] | None) -> None:
    """Initialise a worker process: handlers first, then the watch on the run, then unblock.

    A spawned worker starts with the stop signals blocked (see `WorkerPool`) and watches its
    parent ``parent``. A forked one (``parent`` None) is a child of the fork server: it
    watches the process that started the run through multiprocessing's sentinel, ends the
    server too when that process is gone, and takes the run's environment ``env`` (the
    server's is that of the moment it started).
    """
    global _REPORTS
    _REPORTS = reports
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    atexit.register(_skip_teardown)
    for sig in STOP_SIGNALS:
        signal.signal(sig, _stop_worker)
    if parent is None:
        import multiprocessing

        server, run = os.getppid(), multiprocessing.parent_process()
        if run is None:  # not started by multiprocessing: watch the parent it has
            watch_parent(server)
        else:
            watch_process(run, then=lambda: os.kill(server, signal.SIGKILL))
    else:
        watch_parent(parent)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def unit_in_worker(project: Project, unit: list[Job], cache: bool) -> None:
    """Make the figures of one unit in order, reporting each as soon as it is done."""
    global _IN_FIGURE
    for info, ctx in unit:
        _IN_FIGURE = True
        try:
            result = figure_outcome(project, info, ctx, cache)
        except (Stopped, KeyboardInterrupt, SystemExit) as stop:
            # the figure has unwound: its temporary files are gone, its old files untouched
            os._exit(128 + getattr(stop, "signum", signal.SIGINT))
        _IN_FIGURE = False
        _REPORTS.put((info.name, *result))


# --------------------------------------------------------------------------------------------
# The pool, from the run's process
# --------------------------------------------------------------------------------------------


def stop_workers(executor: Any, signum: int) -> bool:
    """Pass the stop on to every worker of ``executor``, give them `STOP_GRACE_S` seconds to
    unwind, kill those still there; end the executor. True when a worker had to be killed.

    Returns only once the executor's manager thread has ended too: Python 3.11's exit hook
    for process pools writes to that thread's wake-up pipe without a lock, and if the thread
    is still closing the pipe as the process exits, the hook prints a traceback (``Bad file
    descriptor``) under the run's last line."""
    from multiprocessing.connection import wait as wait_for_sentinels

    processes = list((getattr(executor, "_processes", None) or {}).values())
    manager = getattr(executor, "_executor_manager_thread", None)
    for proc in processes:
        with contextlib.suppress(ProcessLookupError, OSError, ValueError):
            os.kill(proc.pid, signum if signum in STOP_SIGNALS else signal.SIGTERM)
    executor.shutdown(wait=False, cancel_futures=True)
    # Wait on each worker's sentinel (readable once it has ended), not `is_alive`: the
    # manager thread joins the same processes, and a worker it reaped between our two
    # `waitpid` calls looked alive (12 of 100 stops, within 3 ms of SIGTERM).
    running = {proc.sentinel: proc for proc in processes}
    deadline = time.monotonic() + STOP_GRACE_S
    while running and (left := deadline - time.monotonic()) > 0:
        for ended in wait_for_sentinels(list(running), left):
            running.pop(ended)
    killed = list(running.values())
    for proc in killed:
        proc.kill()
    for proc in killed:
        proc.join(1.0)
    if manager is not None:  # with every worker gone it ends within moments
        manager.join(STOP_GRACE_S)
    return bool(killed)


def worker_start_method() -> str:
    """How the workers of ``--jobs N`` start: ``"forkserver"`` on Linux, else ``"spawn"``;
    ``BLOCK4_WORKER_START`` overrides (see the module's description).

    Raises:
        PipelineError: ``BLOCK4_WORKER_START`` names another method, or one this platform
            does not have.
    """
    import multiprocessing

    available = multiprocessing.get_all_start_methods()
    asked = os.environ.get(WORKER_START_ENV, "").strip()
    if not asked:
        return "forkserver" if sys.platform.startswith("linux") else "spawn"
    allowed = [m for m in _WORKER_STARTS if m in available]
    if asked not in allowed:
        raise PipelineError(
            f"{WORKER_START_ENV}={asked!r} is not a way to start workers here; allowed: "
            f"{', '.join(allowed)} (or unset: forkserver on Linux, spawn elsewhere)"
        )
    return asked


class WorkerPool:
    """The worker processes of ``--jobs N``, started before the figures are planned.

    Torch, Lightning and matplotlib take 5-12 s to import on 2 CPU cores. Forked workers (see
    the module's description) come from a server that starts importing them at once, while this
    process reads the sources and works out what is stale; the workers themselves are
    forked when `run_in_parallel` first asks for ``executor``. Spawned workers start at
    once and each import the libraries. Used by ``--force`` (everything is re-made, so the
    workers will have work); ``close`` ends whatever got none.

    Raises:
        MissingPackages: this Python cannot make figures.
        PipelineError: a bad ``BLOCK4_WORKER_START``.
    """

    def __init__(self, workers: int) -> None:
        import multiprocessing

        require_packages()
        self.workers = workers
        self.start_method = worker_start_method()
        self._mp = multiprocessing.get_context(self.start_method)
        self._executor: Any = None
        self.reports = self._mp.Queue()
        # Spawned workers start with the stop signals blocked and unblock them once their
        # own handlers are in place: a stop during start-up is neither lost nor a traceback.
        with stop_signals_blocked():
            if self.start_method == "forkserver":
                from multiprocessing import forkserver

                from block4.warm_figures import PRELOAD

                self._mp.set_forkserver_preload(list(PRELOAD))
                forkserver.ensure_running()  # starts importing now, returns at once
            else:
                for _ in range(workers):
                    self.executor.submit(_preload)

    @property
    def executor(self) -> Any:
        """The ``ProcessPoolExecutor`` of the workers (forked workers start here, once the
        server has finished importing)."""
        from concurrent.futures import ProcessPoolExecutor

        if self._executor is None:
            forked = self.start_method == "forkserver"
            with stop_signals_blocked():
                self._executor = ProcessPoolExecutor(
                    max_workers=self.workers,
                    mp_context=self._mp,
                    initializer=_start_worker,
                    initargs=(
                        self.reports,
                        None if forked else os.getpid(),
                        dict(os.environ) if forked else None,
                    ),
                )
        return self._executor

    @property
    def context(self) -> Any:
        """The multiprocessing context the workers start with."""
        return self._mp

    @property
    def awaiting_server(self) -> bool:
        """Whether the workers are still to be forked by a server that may be importing
        (no figure has been handed to them yet)."""
        return self.start_method == "forkserver" and self._executor is None

    def close(self) -> None:
        """Stop the workers (those still importing, or waiting for figures that never came),
        and end the fork server (left alone, it would outlive this process by the seconds
        Python takes to tear down torch and Lightning)."""
        if self._executor is not None:
            stop_workers(self._executor, signal.SIGTERM)
        if self.start_method == "forkserver":
            _end_fork_server()


def _end_fork_server() -> None:
    """Kill this process's fork server; multiprocessing reaps it and starts a new one when
    one is needed again."""
    from multiprocessing import forkserver

    pid = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)
    if pid:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _preload() -> None:
    """In a spawned worker: import what every figure needs while the parent plans the run."""
    import importlib

    import matplotlib

    from block4.warm_figures import PRELOAD

    matplotlib.use("Agg")
    for name in PRELOAD:
        importlib.import_module(name)
