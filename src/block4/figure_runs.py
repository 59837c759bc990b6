"""Running many figures: one after another, or in a pool of processes, with progress lines.

`run_sequentially` makes figures in this process (the distributed ranks of a DDP run
all take this path; only rank 0 writes); `run_in_parallel` makes them in worker
processes (``make_figures.py --jobs N``), keeping figures of one ``group`` in one process;
while forked workers wait for their server's imports, it makes the short figures that need
none of Lightning (`made_while_importing`) in this process, on a core that would be idle.
Both write each figure's files and manifest entry as soon as it is made (through
`block4.pipeline.run_figure`), so an interrupt or a crash loses at most the figures
still running, and both report a failure in the same words (`report_failure`).

Stopping:
    SIGINT (Ctrl+C), SIGTERM (a CI cancel, ``kill``) and SIGHUP (a closed terminal) raise
    `Stopped` in the process that runs the figures. A parallel run passes the stop on
    to every worker and ends them within `STOP_GRACE_S` seconds (killing those that do
    not); every finished figure is kept, a figure being made keeps its previous files and
    manifest entry (the three writes of one figure are never split by a held signal), and no
    temporary file is left. The run ends with one line and exit status 128 + the signal
    (130, 143, 129). Workers also stop when the run's process is gone, however it ended
    (``SIGKILL`` included; see `block4.worker_pool`, which starts them).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from block4.figures.registry import FigureContext
from block4.pipeline import (
    FigureInfo,
    PipelineError,
    Project,
    Sources,
    load_manifest,
    manifest_lock,
    run_figure,
)
from block4.stop_signals import (
    Stopped,
    raising_on_stop_signals,
    signal_name,
    stop_signals_blocked,
)
from block4.worker_pool import (
    RUN_PACKAGES,
    WORKER_START_ENV,
    MissingPackages,
    WorkerPool,
    failure_message,
    figure_outcome,
    require_packages,
    stop_workers,
    unit_in_worker,
    worker_start_method,
)

__all__ = [
    "LARGE_SVG_BYTES",
    "MADE_WHILE_IMPORTING_S",
    "RUN_PACKAGES",
    "SLOW_IMPORTS",
    "MissingPackages",
    "Outcome",
    "Progress",
    "Stopped",
    "WORKER_START_ENV",
    "WorkerPool",
    "external_world_size",
    "interruption_line",
    "is_rank_zero",
    "made_while_importing",
    "parallel_units",
    "raising_on_stop_signals",
    "report_failure",
    "require_packages",
    "run_in_parallel",
    "run_sequentially",
    "signal_name",
    "worker_start_method",
]

#: A light SVG larger than this gets a hint (pages load every figure in two variants).
LARGE_SVG_BYTES = 400_000

Job = tuple[FigureInfo, FigureContext]


def is_rank_zero() -> bool:
    """False in the extra processes of a distributed run (only rank 0 writes files)."""
    for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "GROUP_RANK"):
        value = os.environ.get(var)
        if value not in (None, "", "0"):
            return False
    return True


def external_world_size() -> int:
    """How many processes a cluster launcher (``srun``, ``torchrun``) started for this run."""
    for var in ("WORLD_SIZE", "SLURM_NTASKS"):
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return 1


@dataclass
class Outcome:
    """What a run did: the figures made and failed, and where it was interrupted (if it was).

    Attributes:
        made: the figures saved, in the order they finished.
        failed: the figures that raised an error.
        interrupted: None for a run that went to its end; else the figures that were being
            made when it stopped (comma-separated; empty between figures).
        stop_signal: the signal that stopped it (SIGINT when a library caught Ctrl+C itself).
    """

    made: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    interrupted: str | None = None
    stop_signal: int | None = None

    @property
    def interrupt_status(self) -> int:
        """The exit status of an interrupted run: 128 + the signal (130 for Ctrl+C)."""
        return 128 + int(self.stop_signal or signal.SIGINT)


def interruption_line(project: Project, outcome: Outcome) -> str:
    """The one line an interrupted run ends with: what was saved, and how to resume."""
    how = signal_name(outcome.stop_signal or signal.SIGINT)
    saved = f"{len(outcome.made)} finished figure(s) saved in {project.relative(project.out_dir)}"
    running = outcome.interrupted
    if not running:
        return f"interrupted by {how}: {saved}. Run the same command again to resume."
    return (
        f"interrupted during {running} by {how}: {saved}; the figure(s) being made keep their "
        "previous files and manifest entries. Run the same command again to resume."
    )


def _entries(project: Project) -> dict[str, Any]:
    """The manifest's entries now (empty when it is missing or unreadable)."""
    try:
        return dict(load_manifest(project)["figures"])
    except (PipelineError, OSError):
        return {}


def _saved_since(project: Project, before: dict[str, Any], names: Sequence[str]) -> list[str]:
    """Those of ``names`` whose manifest entry changed since ``before`` (saved by this run)."""
    after = _entries(project)
    return [name for name in names if after.get(name) not in (None, before.get(name))]


def size_hint(entry: dict[str, Any]) -> str:
    """A hint to shrink a figure whose light SVG is over `LARGE_SVG_BYTES`."""
    size = int(entry.get("bytes", {}).get("light", 0))
    if size <= LARGE_SVG_BYTES:
        return ""
    return (
        f" (the SVG is {size // 1000} kB: draw fewer points, or pass rasterized=True to dense "
        "artists such as fills, images and scatter clouds)"
    )


def report_failure(project: Project, info: FigureInfo, message: str) -> None:
    """One figure failed: name it, where it is defined and why (after its progress line)."""
    where = f"{project.relative(info.path)}:{info.line}"
    print(f"    error in {info.name} ({where}): {message}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------------


def clock(seconds: float) -> str:
    """``m:ss``."""
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


@dataclass
class Progress:
    """One line per figure with the overall position, elapsed time and an ETA."""

    total: int
    estimates: dict[str, float] = field(default_factory=dict)
    stream: Any = None
    done: int = 0
    start: float = field(default_factory=time.perf_counter)
    spent: list[float] = field(default_factory=list)
    jobs: int = 1

    def _eta(self, remaining: Sequence[str]) -> str:
        avg = sum(self.spent) / len(self.spent) if self.spent else None
        total = 0.0
        for name in remaining:
            guess = self.estimates.get(name, avg)
            if guess is None:
                return "?"
            total += guess
        return clock(total / min(self.jobs, max(len(remaining), 1)))

    def _bar(self) -> str:
        width = 20
        filled = int(width * self.done / max(self.total, 1))
        return "#" * filled + "." * (width - filled)

    def _position(self, remaining: Sequence[str]) -> str:
        elapsed = clock(time.perf_counter() - self.start)
        return f"elapsed {elapsed} | ETA {self._eta(remaining)}"

    def begin(self, k: int, info: FigureInfo, profile: str, remaining: Sequence[str]) -> None:
        """Figure ``k`` of the run starts (``remaining``: it and those after it)."""
        self._print(
            f"[{self._bar()}] figure {k}/{self.total}: {info.name} ({info.chapter}, {profile})"
            f" | {self._position(remaining)}"
        )

    def finished(
        self,
        info: FigureInfo,
        seconds: float,
        ok: bool,
        detail: str = "",
        remaining: Sequence[str] | None = None,
    ) -> None:
        """A figure ended. Without ``remaining`` the line completes the one of `begin`;
        with it (parallel workers finish in any order) the line stands alone."""
        self.done += 1
        if ok:
            self.spent.append(seconds)
        mark = "done" if ok else "FAILED"
        if remaining is None:
            self._print(f"    {mark} {info.name} in {seconds:.1f} s{detail}")
            return
        self._print(
            f"[{self._bar()}] {self.done}/{self.total} {mark} {info.name} ({info.chapter}) in "
            f"{seconds:.1f} s{detail} | {self._position(remaining)}"
        )

    def _print(self, line: str) -> None:
        print(line, file=self.stream or sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# One process
# --------------------------------------------------------------------------------------------


def run_sequentially(
    project: Project, jobs: list[Job], progress: Progress, *, write: bool = True, cache: bool = True
) -> Outcome:
    """Make ``jobs`` one after another in this process.

    ``write=False`` (the extra ranks of a DDP run) computes without writing or printing;
    ``cache=False`` computes every ``ctx.compute`` result afresh. A failing figure is reported and the run goes on; a stop signal (or the ``SystemExit``
    Lightning raises after catching Ctrl+C itself) ends the run, recorded in the outcome.

    Raises:
        MissingPackages: this Python cannot make figures (checked before the first one).
    """
    require_packages()
    outcome = Outcome()
    names = [info.name for info, _ in jobs]
    before = _entries(project) if write else {}
    current: str | None = None
    with raising_on_stop_signals():
        try:
            for k, (info, ctx) in enumerate(jobs, start=1):
                current = info.name
                if write:
                    progress.begin(k, info, ctx.profile, names[k - 1 :])
                start = time.perf_counter()
                try:
                    entry = run_figure(
                        project, info, ctx, write=write, sources=Sources(project), cache=cache
                    )
                except (KeyboardInterrupt, SystemExit):  # Ctrl+C, caught by a library first
                    raise Stopped(signal.SIGINT) from None
                except Exception as err:  # one failing figure must not stop the others
                    current = None
                    outcome.failed.append(info.name)
                    if write:
                        progress.finished(info, time.perf_counter() - start, False)
                        report_failure(project, info, failure_message(err))
                    continue
                current = None
                outcome.made.append(info.name)
                if write:
                    progress.finished(info, time.perf_counter() - start, True, size_hint(entry))
        except Stopped as stop:
            # a signal held until a figure's writes were done arrives just after them
            if current is not None and write and _saved_since(project, before, [current]):
                outcome.made.append(current)
                current = None
            outcome.interrupted = current or ""
            outcome.stop_signal = stop.signum
    return outcome


# --------------------------------------------------------------------------------------------
# Several processes
# --------------------------------------------------------------------------------------------


def parallel_units(jobs: list[Job], estimates: dict[str, float]) -> list[list[Job]]:
    """The units of work of ``--jobs N``, the longest first.

    Figures that name the same ``group`` form one unit (in the order given); every other
    figure is a unit of its own. A unit's length is the sum of its figures' estimated
    seconds; a figure without an estimate counts as longer than any unit of known figures,
    so it starts early.
    """
    units: dict[str, list[Job]] = {}
    for info, ctx in jobs:
        key = f"group:{info.module}:{info.group}" if info.group else f"figure:{info.name}"
        units.setdefault(key, []).append((info, ctx))
    unknown = sum(estimates.values()) + 1.0  # longer than any unit of known figures

    def length(unit: list[Job]) -> float:
        return sum(estimates.get(info.name, unknown) for info, _ in unit)

    return sorted(units.values(), key=length, reverse=True)


def _remove_temporaries(project: Project, names: Sequence[str]) -> None:
    """Remove the temporary files a killed worker may have left (``atomic_write`` names them
    ``.<file>.<random>.tmp``): those of ``names`` and the manifest's."""
    out = project.out_dir
    if not out.is_dir():
        return
    prefixes = tuple(f".{name}{suffix}." for name in names for suffix in (".svg", ".dark.svg"))
    for path in out.glob(".*.tmp"):
        if path.name.startswith(prefixes):
            path.unlink(missing_ok=True)
    with manifest_lock(project):  # a manifest temporary outside the lock is a leftover
        for path in out.glob(f".{project.manifest_path.name}.*.tmp"):
            path.unlink(missing_ok=True)


class _Collector:
    """Turns the reports of the workers into progress lines and the outcome."""

    def __init__(self, project: Project, jobs: list[Job], progress: Progress) -> None:
        self.project = project
        self.infos = {info.name: info for info, _ in jobs}
        self.pending = set(self.infos)
        self.progress = progress
        self.outcome = Outcome()

    def report(self, name: str, ok: bool, result: Any, seconds: float) -> None:
        if name not in self.pending:
            return
        self.pending.discard(name)
        info, remaining = self.infos[name], sorted(self.pending)
        if ok:
            self.outcome.made.append(name)
            self.progress.finished(info, seconds, True, size_hint(result), remaining)
            return
        self.outcome.failed.append(name)
        self.progress.finished(info, seconds, False, remaining=remaining)
        report_failure(self.project, info, result)

    def worker_died(self, unit: list[Job], error: BaseException) -> None:
        for info, _ in unit:
            self.report(info.name, False, f"its worker process died: {error!r}", 0.0)


#: What a fork server spends most of its start-up importing (5-12 s on 2 CPU cores, see
#: `block4.worker_pool`). Figures that need none of it need only torch and matplotlib:
#: `run_in_parallel` makes them in its own process while the server imports.
SLOW_IMPORTS = frozenset({"pytorch_lightning", "lightning", "lightning_fabric", "torchmetrics"})

#: The longest a figure made that way is expected to take (seconds, from its last run): the
#: workers are there within seconds, and a figure is not handed on once it has begun.
MADE_WHILE_IMPORTING_S = 5.0


def made_while_importing(
    project: Project, units: list[list[Job]], hints: dict[str, float]
) -> list[list[Job]]:
    """Those of ``units`` the run's own process can make while the fork server imports:
    their figures took at most `MADE_WHILE_IMPORTING_S` seconds together last time
    (``hints``), and no figure's module, nor any code its function uses, imports any of
    `SLOW_IMPORTS` (read from the source, see
    `block4.pipeline_sources.Sources.load_imports`). None when a source cannot be read:
    the workers then make every figure (and report what is wrong with it)."""
    sources = Sources(project)

    def light(unit: list[Job]) -> bool:
        if sum(hints.get(info.name, math.inf) for info, _ in unit) > MADE_WHILE_IMPORTING_S:
            return False
        return not any(  # the modules first: reading what a function uses takes longer
            SLOW_IMPORTS & sources.load_imports(info.module) for info, _ in unit
        ) and not any(
            SLOW_IMPORTS & sources.load_imports(info.module, info.function) for info, _ in unit
        )

    try:
        return [unit for unit in units if light(unit)]
    except (PipelineError, OSError):
        return []


class _ServerReady(threading.Thread):
    """Waits, in a thread of its own, until the fork server has imported: it asks the server
    for a process that does nothing (the server forks only once its imports are done). The
    pool's executor is not touched, so a stop meanwhile finds no worker and no held lock.

    ``ready`` is set when that process has started, or when asking failed (the server was
    ended by a stop, or could not start: the workers' own start then says why).
    """

    def __init__(self, context: Any) -> None:
        super().__init__(name="block4-server-ready", daemon=True)
        self.context = context
        self.ready = threading.Event()

    def run(self) -> None:
        # stop signals are the main thread's to handle; a failure is reported by the workers
        try:
            with stop_signals_blocked(), contextlib.suppress(BaseException):
                probe = self.context.Process(target=os.getpid, daemon=True)
                probe.start()  # returns once the server has forked it
                self.ready.set()
                probe.join()
        finally:
            self.ready.set()


def _make_while_importing(
    project: Project,
    here: list[list[Job]],
    pool: WorkerPool,
    collect: _Collector,
    cache: bool,
) -> list[list[Job]]:
    """Make units of ``here`` in this process until the fork server of ``pool`` has
    imported; returns those left for the workers (once it has: a stop while this waits ends
    the run without a worker ever being started)."""
    server = _ServerReady(pool.context)
    server.start()
    left = list(here)
    while left and not server.ready.is_set():
        for info, ctx in left.pop(0):
            collect.report(info.name, *figure_outcome(project, info, ctx, cache))
    while not server.ready.wait(0.2):  # short waits: a stop signal gets through
        pass
    return left


def _collect_reports(collect: _Collector, futures: dict[Any, list[Job]], reports: Any) -> None:
    """Turn the workers' reports into progress lines until every figure is reported (a unit
    whose worker died, or ended without reporting, counts as failed)."""
    import queue as queue_module

    all_ended = 0.0
    while collect.pending:
        try:
            collect.report(*reports.get(timeout=0.2))
            continue
        except queue_module.Empty:
            pass
        for future in [f for f in futures if f.done()]:
            unit = futures.pop(future)
            if future.exception() is not None:
                collect.worker_died(unit, future.exception())
        if not futures:  # every unit has ended; a report in flight arrives within moments
            all_ended = all_ended or time.monotonic()
            if time.monotonic() - all_ended > 5.0:
                for name in sorted(collect.pending):
                    collect.report(name, False, "its worker ended without a result", 0.0)


def run_in_parallel(
    project: Project,
    jobs: list[Job],
    workers: int,
    progress: Progress,
    hints: dict[str, float],
    *,
    cache: bool = True,
    pool: WorkerPool | None = None,
    known: dict[str, float] | None = None,
) -> Outcome:
    """Make ``jobs`` in ``workers`` processes (units from `parallel_units`, longest first).

    ``hints`` are the seconds each figure is expected to take, used to start the longest
    first; ``known`` (default: ``hints``) those that bound the time each figure takes now
    (its last run was at the profile it is made with now or a better one), from which
    `made_while_importing` picks the figures this process makes while the fork server
    imports (the rest go to the workers as soon as they are there); ``cache=False`` computes every ``ctx.compute`` result afresh; ``pool`` has the
    workers already started (its size wins over ``workers``).

    Every worker writes its own figures' files and manifest entries (atomically, under the
    manifest lock). A stop signal stops every worker (see the module's "Stopping"); the
    figures still running are named in the outcome.

    Raises:
        MissingPackages: this Python cannot make figures (checked before any worker starts).
    """
    units = parallel_units(jobs, hints)
    collect = _Collector(project, jobs, progress)
    before = _entries(project)
    executor = None
    own = pool is None
    with raising_on_stop_signals():
        try:
            pool = pool or WorkerPool(min(workers, len(units)))
            here = []
            if pool.awaiting_server:
                here = made_while_importing(project, units, known if known is not None else hints)
            if here:
                left = _make_while_importing(project, here, pool, collect, cache)
                units = [unit for unit in units if all(unit is not h for h in here)] + left
            executor, reports = pool.executor, pool.reports
            # Spawned workers inherit this thread's signal mask; forked ones come from the
            # server (whose imports the first submit waits for: a stop may interrupt that).
            spawned = pool.start_method == "spawn"
            futures: dict[Any, list[Job]] = {}
            with stop_signals_blocked() if spawned else contextlib.nullcontext():
                for unit in units:
                    futures[executor.submit(unit_in_worker, project, unit, cache)] = unit
            _collect_reports(collect, futures, reports)
        except (Stopped, KeyboardInterrupt) as stop:
            signum = getattr(stop, "signum", signal.SIGINT)
            killed = stop_workers(executor, signum) if executor is not None else False
            running = [info.name for info, _ in jobs if info.name in collect.pending]
            saved = _saved_since(project, before, running)  # done, but not yet reported
            collect.outcome.made.extend(saved)
            running = [name for name in running if name not in saved]
            if killed:
                _remove_temporaries(project, running)
            collect.outcome.interrupted = ", ".join(running)
            collect.outcome.stop_signal = signum
            if own and pool is not None:
                pool.close()
            return collect.outcome
    executor.shutdown(wait=True)
    if own:
        pool.close()
    return collect.outcome
