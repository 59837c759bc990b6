"""Running many figures: one after another, or in a pool of processes, with progress lines.

:func:`run_sequentially` makes figures in this process (the distributed ranks of a DDP run
all take this path; only rank 0 writes); :func:`run_in_parallel` makes them in worker
processes (``make_figures.py --jobs N``), keeping figures of one ``group`` in one process.
Both write each figure's files and manifest entry as soon as it is made (through
:func:`block4.pipeline.run_figure`), so an interrupt or a crash loses at most the figures
still running, and both report a failure in the same words (:func:`report_failure`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from block4.figures.registry import FigureContext
from block4.pipeline import FigureInfo, PipelineError, Project, Sources, run_figure

__all__ = [
    "LARGE_SVG_BYTES",
    "Outcome",
    "Progress",
    "external_world_size",
    "is_rank_zero",
    "parallel_units",
    "report_failure",
    "run_in_parallel",
    "run_sequentially",
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
    """What a run did: the figures made and failed, and where it was interrupted (if it was)."""

    made: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    interrupted: str | None = None


def size_hint(entry: dict[str, Any]) -> str:
    """A hint to shrink a figure whose light SVG is over :data:`LARGE_SVG_BYTES`."""
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


def _failure_message(err: BaseException) -> str:
    """The error as text, with its traceback unless it is a `PipelineError` (a user fix)."""
    message = str(err)
    if not isinstance(err, PipelineError):
        message += "\n" + traceback.format_exc().rstrip()
    return message


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
        """A figure ended. Without ``remaining`` the line completes the one of :meth:`begin`;
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
    ``cache=False`` computes every ``ctx.compute`` result afresh.
    A failing figure is reported and the run goes on; an interrupt (Ctrl+C, or the
    ``SystemExit`` Lightning raises after catching it) ends the run, recorded in the outcome.
    """
    outcome = Outcome()
    names = [info.name for info, _ in jobs]
    for k, (info, ctx) in enumerate(jobs, start=1):
        if write:
            progress.begin(k, info, ctx.profile, names[k - 1 :])
        start = time.perf_counter()
        try:
            entry = run_figure(
                project, info, ctx, write=write, sources=Sources(project), cache=cache
            )
        except (KeyboardInterrupt, SystemExit):
            outcome.interrupted = info.name
            return outcome
        except Exception as err:  # one failing figure must not stop the others
            outcome.failed.append(info.name)
            if write:
                progress.finished(info, time.perf_counter() - start, False)
                report_failure(project, info, _failure_message(err))
            continue
        outcome.made.append(info.name)
        if write:
            progress.finished(info, time.perf_counter() - start, True, size_hint(entry))
    return outcome


# --------------------------------------------------------------------------------------------
# Several processes
# --------------------------------------------------------------------------------------------


def _figure_in_worker(project: Project, info: FigureInfo, ctx: FigureContext, cache: bool) -> tuple:
    """Make one figure in a worker process: ``(ok, entry or message, seconds)``.

    Errors travel back as text: not every exception a figure may raise can be pickled.
    """
    start = time.perf_counter()
    try:
        entry = run_figure(project, info, ctx, sources=Sources(project), cache=cache)
    except Exception as err:
        return False, _failure_message(err), time.perf_counter() - start
    return True, entry, time.perf_counter() - start


_REPORTS: Any = None  # in a worker process: the queue its results go back through


def _start_worker(reports: Any) -> None:
    global _REPORTS
    _REPORTS = reports


def _unit_in_worker(project: Project, unit: list[Job], cache: bool) -> None:
    """Make the figures of one unit in order, reporting each as soon as it is done."""
    for info, ctx in unit:
        _REPORTS.put((info.name, *_figure_in_worker(project, info, ctx, cache)))


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


def _stop_workers(executor: Any) -> None:
    """Interrupt the workers of ``executor`` (each cleans up its temporary files), then end it."""
    import signal

    processes = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)  # no new work: idle workers exit
    deadline = time.monotonic() + 0.5  # a Ctrl+C from the terminal reached them already
    for proc in processes:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in processes:
        if proc.is_alive():
            with contextlib.suppress(ProcessLookupError, OSError):
                os.kill(proc.pid, signal.SIGINT)
    for proc in processes:
        proc.join(10)
        if proc.is_alive():
            proc.terminate()


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


def run_in_parallel(
    project: Project,
    jobs: list[Job],
    workers: int,
    progress: Progress,
    hints: dict[str, float],
    *,
    cache: bool = True,
) -> Outcome:
    """Make ``jobs`` in ``workers`` processes (units from `parallel_units`, longest first).

    ``hints`` are the seconds each figure is expected to take, used only to start the
    longest first; ``cache=False`` computes every ``ctx.compute`` result afresh.

    Every worker writes its own figures' files and manifest entries (atomically, under the
    manifest lock). An interrupt stops every worker; the figures still running are named in
    the outcome.
    """
    import multiprocessing
    import queue as queue_module
    from concurrent.futures import ProcessPoolExecutor

    units = parallel_units(jobs, hints)
    # "spawn": a fresh interpreter per worker (no forked torch/OpenMP state, any platform).
    mp = multiprocessing.get_context("spawn")
    reports = mp.Queue()
    executor = ProcessPoolExecutor(
        max_workers=min(workers, len(units)),
        mp_context=mp,
        initializer=_start_worker,
        initargs=(reports,),
    )
    collect = _Collector(project, jobs, progress)
    all_ended = 0.0
    try:
        futures = {executor.submit(_unit_in_worker, project, unit, cache): unit for unit in units}
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
    except KeyboardInterrupt:
        _stop_workers(executor)
        running = [info.name for info, _ in jobs if info.name in collect.pending]
        collect.outcome.interrupted = ", ".join(running)
        return collect.outcome
    executor.shutdown(wait=True)
    return collect.outcome
