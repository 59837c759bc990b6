"""Stopping a figure run cleanly: which signals stop it, and how workers notice a lost parent.

SIGINT, SIGTERM and SIGHUP stop a run. Inside `raising_on_stop_signals` the first of
them raises `Stopped` (not a ``KeyboardInterrupt``, which Lightning turns into
``exit(1)``); `holding_stop_signals` delays them until a figure's files and manifest
entry are all written. A worker process calls `watch_parent` (or, when a fork server
forked it, `watch_process`) so that it ends when the process that started it is gone,
even after a SIGKILL of that process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = [
    "PARENT_CHECK_S",
    "STOPPED",
    "STOP_GRACE_S",
    "STOP_SIGNALS",
    "Stopped",
    "holding_stop_signals",
    "raising_on_stop_signals",
    "set_parent_death_signal",
    "signal_name",
    "stop_signals_blocked",
    "watch_parent",
    "watch_process",
]

#: Seconds the workers of a stopped parallel run get to clean up before they are killed.
STOP_GRACE_S = 1.5

#: How often a worker checks that its parent is still there (where the kernel cannot tell it).
PARENT_CHECK_S = 0.5

#: The signals that stop a run (and are held while a figure's files and entry are written).
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@contextlib.contextmanager
def holding_stop_signals() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP until the block ends, then deliver the first one.

    A figure's two files and its manifest entry are written inside one such block, so a stop
    signal lands before or after all three, never between them. (SIGKILL cannot be held: a
    figure whose files changed while its entry did not is then reported stale by their
    digests, and the next run re-makes it.) Outside the main thread this holds nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, _: held.append(signum)) for sig in STOP_SIGNALS
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        if held:
            signal.raise_signal(held[0])


class Stopped(BaseException):
    """A stop signal (SIGINT, SIGTERM or SIGHUP) arrived: the run ends, keeping what is done.

    A ``BaseException`` like ``KeyboardInterrupt``, so no ``except Exception`` in a figure
    swallows it; but not a ``KeyboardInterrupt``, which Lightning turns into ``exit(1)``.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = int(signum)


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15 (the number itself where the platform has no name for it)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


STOPPED: list[int] = []  # the stop signals this process received (it acts on the first)


def _raise_stopped(signum: int, _frame: Any) -> None:
    """Raise `Stopped` for the first stop signal; ignore the others while the run cleans up."""
    STOPPED.append(signum)
    if len(STOPPED) == 1:
        raise Stopped(signum)


@contextlib.contextmanager
def raising_on_stop_signals() -> Iterator[None]:
    """Within the block, the first SIGINT, SIGTERM or SIGHUP raises `Stopped` (in the
    main thread; elsewhere this changes nothing). The previous handlers come back after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


@contextlib.contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Block the stop signals in this thread; a process started inside inherits the block."""
    block = getattr(signal, "pthread_sigmask", None)
    if block is None:  # pragma: no cover - not POSIX
        yield
        return
    previous = block(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        block(signal.SIG_SETMASK, previous)


def set_parent_death_signal(signum: int) -> None:
    """Linux: have the kernel send ``signum`` to this process when its parent ends."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signum), 0, 0, 0)


def _stop_this_process() -> None:
    """From a watch thread: stop this process as a signal would, then make sure it ends."""
    os.kill(os.getpid(), signal.SIGTERM)  # handled in the main thread, like any stop
    time.sleep(5 * STOP_GRACE_S)  # a figure's writes and clean-up take far less
    os._exit(128 + signal.SIGTERM)


def watch_parent(parent: int) -> None:
    """Stop this worker when its parent ``parent`` is gone (re-parented workers see a new
    parent id): the kernel's signal on Linux, plus a polling thread on every platform."""
    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent:  # the parent ended before the kernel was told to watch it
        os._exit(128 + signal.SIGTERM)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        _stop_this_process()

    threading.Thread(target=watch, name="block4-parent-watch", daemon=True).start()


def watch_process(process: Any, *, then: Callable[[], None] | None = None) -> None:
    """Stop this worker when ``process`` ends: a ``multiprocessing`` process object with a
    sentinel, such as ``multiprocessing.parent_process()`` in a worker that a fork server
    forked (its parent id is the server's; the sentinel still follows the process that asked
    for it). A thread waits on the sentinel, calls ``then`` and stops this process as
    `watch_parent` does."""

    def watch() -> None:
        process.join()
        if then is not None:
            with contextlib.suppress(Exception):
                then()
        _stop_this_process()

    threading.Thread(target=watch, name="block4-process-watch", daemon=True).start()
