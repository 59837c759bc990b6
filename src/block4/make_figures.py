"""The command line that makes the figures: ``python scripts/make_figures.py --help``.

`main` parses and checks the arguments (bad input: one line, exit 2, nothing written),
works out which figures to make (`plan`), makes them one after another or in parallel
processes (`block4.figure_runs`) and ends with one report. ``--list``, ``--check`` and a
run with nothing to do never import torch, Lightning or matplotlib.

The freshness contract it relies on (fingerprints, manifest, one figure run) is
`block4.pipeline`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from block4 import compare_options
from block4.figure_options import (
    ACCELERATORS,
    MAX_SEED,
    STRATEGIES,
    UsageError,
    available_cpus,
    check_accelerator,
    check_jobs,
    check_out_dir,
    parse_devices,
    parse_jobs,
    parse_num_nodes,
)
from block4.figure_runs import (
    Outcome,
    Progress,
    WorkerPool,
    clock,
    external_world_size,
    interruption_line,
    is_rank_zero,
    run_in_parallel,
    run_sequentially,
)
from block4.figures.registry import PROFILES, FigureContext
from block4.pipeline import (
    COMMAND,
    PROFILE_RANK,
    FigureInfo,
    FigureStatus,
    PipelineError,
    Project,
    Sources,
    discover,
    figure_status,
    prune_orphans,
    refresh_command,
)
from block4.results_cache import RESULTS_DIR, expected_seconds

__all__ = [
    "ACCELERATORS",
    "PROFILE_HELP",
    "STRATEGIES",
    "Request",
    "UsageError",
    "available_cpus",
    "build_parser",
    "list_table",
    "main",
    "parse_devices",
    "parse_jobs",
    "parse_num_nodes",
    "plan",
]

# Environment variable through which a run tells the processes Lightning's DDP launcher
# starts (they re-execute the script) exactly which figures to make, in which order.
_PLAN_ENV = "BLOCK4_FIGURES_PLAN"

#: What each profile of `block4.figures.registry.PROFILES` gives, for ``--help`` (kept apart
#: from the names, so that rewording it leaves every figure fresh).
PROFILE_HELP: dict[str, str] = {
    "smoke": "seconds per figure: tiny data, one or two epochs; used by the tests",
    "quick": "a preview: one or two seeds, short runs, half the digits; all figures in under "
    "half a minute with --jobs 2 on 2 CPU cores; the default for new figures",
    "full": "the published figures: full data and training, at least 5 seeds where runs are "
    "compared, error bands; about a minute with --jobs 2 on 2 CPU cores",
}

_EPILOG = f"""\
profiles:
  smoke   {PROFILE_HELP["smoke"]}
  quick   {PROFILE_HELP["quick"]}
  full    {PROFILE_HELP["full"]}

freshness:
  A figure is fresh when the fingerprint stored in docs/figures/manifest.json (a hash of the
  code of the figure's function and of every block4 function, class and constant it uses,
  its parameters, profile and seed) still matches the code. A run makes only stale or
  missing figures, plus figures made with a worse profile than --profile (default quick) or
  another --seed; --force re-makes everything selected. Without --profile a figure is re-made
  at the profile it was made with (new figures: quick), so refreshing published figures keeps
  them full. Results a figure computes with ctx.compute are cached in .cache/results, so a
  plotting-only change re-plots without training (--no-cache computes afresh).
  `mkdocs build --strict` refuses a page that shows a stale figure. Interrupt any time: a
  re-run resumes.

examples:
  {COMMAND}                          # make stale/missing figures (each keeps its profile)
  {COMMAND} --list                   # name, chapter, status, profile, device of every figure
  {COMMAND} --check                  # exit 1 and name every stale figure (used by CI)
  {COMMAND} --only activation_functions --force
  {COMMAND} --jobs auto               # one figure per CPU core at a time (same files)
  {COMMAND} --profile full --accelerator cpu --jobs auto   # publication figures on all CPU cores
  {COMMAND} --profile full --accelerator gpu --devices 1     # publication figures on one GPU

multi-GPU and clusters (Lightning is the distributed engine; only rank 0 writes files):
  {COMMAND} --profile full --accelerator gpu --devices 4 --strategy ddp
  SLURM: in an sbatch script with `#SBATCH --nodes=2 --ntasks-per-node=4 --gpus-per-node=4`
    srun {COMMAND} --profile full --accelerator gpu --devices 4 --num-nodes 2 --strategy ddp
  (--devices and --num-nodes must match the SLURM allocation; Lightning reads the ranks
  from SLURM's environment.)

exit status: 0 success, 1 a figure failed or --check found stale figures,
  2 bad command-line input (nothing is written), 128 + the signal when stopped (130 Ctrl+C,
  143 SIGTERM, 129 SIGHUP: finished figures are kept; run the same command to resume).
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line, exit 2
        self.print_usage(sys.stderr)
        self.exit(2, f"make_figures.py: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``make_figures.py`` argument parser."""
    p = _Parser(
        prog="make_figures.py",
        description="Make the figures of the block4 site and keep them in step with the code.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--profile",
        choices=list(PROFILES),
        default=None,
        help="how much compute each figure gets (default: the profile it was made with; "
        "quick for new figures); see 'profiles' below",
    )
    p.add_argument("--only", nargs="+", metavar="NAME", help="make only these figures")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--list", action="store_true", help="list figures and their status")
    mode.add_argument(
        "--check", action="store_true", help="exit 1 if a figure is stale or missing; run nothing"
    )
    p.add_argument("--force", action="store_true", help="re-make the selected figures")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="base seed (default: the seed a figure was made with, else 0)",
    )
    p.add_argument(
        "--accelerator",
        choices=list(ACCELERATORS),
        default="auto",
        help="Lightning Trainer accelerator (default: auto)",
    )
    p.add_argument(
        "--devices",
        default="auto",
        help="Lightning Trainer devices: auto, a count N, -1 (all) or a list like 0,1",
    )
    p.add_argument(
        "--num-nodes", default="1", help="Lightning Trainer num_nodes (default: 1)", metavar="N"
    )
    p.add_argument(
        "--strategy",
        choices=list(STRATEGIES),
        default="auto",
        help="Lightning Trainer strategy (default: auto; ddp for several GPUs or nodes)",
    )
    p.add_argument(
        "--jobs",
        "-j",
        default="1",
        metavar="N",
        help="make up to N figures at once, each in its own process (default: 1; 'auto': one "
        "per CPU core). Every figure runs on one CPU thread either way, so the numbers and "
        "files are the same as with --jobs 1",
    )
    p.add_argument(
        "--no-cache",
        dest="cache",
        action="store_false",
        help="compute every result afresh: ignore the results cache (.cache/results) that "
        "lets a plotting-only change re-plot without training",
    )
    p.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="where figures and manifest.json go (default: docs/figures)",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show Lightning's progress bar per training run (default: when a terminal)",
    )
    compare_options.add_arguments(p)
    return p


def _format_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def list_table(status: dict[str, FigureStatus]) -> str:
    """The ``--list`` table."""
    rows = [["NAME", "CHAPTER", "STATUS", "PROFILE", "DEVICE", "DATE", "REASON"]]
    for name, st in sorted(
        status.items(), key=lambda kv: ((kv[1].info.chapter if kv[1].info else "~"), kv[0])
    ):
        entry = st.entry or {}
        rows.append(
            [
                name,
                st.info.chapter if st.info else entry.get("chapter", "-"),
                st.state,
                entry.get("profile", "-"),
                entry.get("device", "-"),
                entry.get("date", "-")[:10],
                st.reason,
            ]
        )
    counts: dict[str, int] = {}
    for st in status.values():
        counts[st.state] = counts.get(st.state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    return _format_table(rows) + f"\n\n{len(status)} figures: {summary}"


# --------------------------------------------------------------------------------------------
# Parse and plan
# --------------------------------------------------------------------------------------------


@dataclass
class Request:
    """A checked command line: what to make, where and on which devices."""

    args: argparse.Namespace
    project: Project
    figures: dict[str, FigureInfo]
    status: dict[str, FigureStatus]
    selected: list[str]
    devices: int | str
    num_nodes: int
    jobs: int
    pool: WorkerPool | None = None  # the workers of --force --jobs N, started while planning

    @property
    def profile(self) -> str:
        return self.args.profile or "quick"


def _as_asked(
    status: dict[str, FigureStatus], profile: str | None, seed: int | None
) -> dict[str, FigureStatus]:
    """``--check``/``--list`` with ``--profile``/``--seed``: a fresh figure made with a worse
    profile than asked, or with another seed, does not count as fresh. As in `plan`, a better
    profile does (a run with ``--profile quick`` leaves a full-profile figure alone)."""
    result = dict(status)
    for name, st in status.items():
        entry = st.entry or {}
        if not st.fresh:
            continue
        wrong = []
        made_with = entry.get("profile")
        if profile is not None and PROFILE_RANK.get(made_with, -1) < PROFILE_RANK[profile]:
            wrong.append(f"made with the {made_with} profile, not {profile}")
        if seed is not None and entry.get("seed") != seed:
            wrong.append(f"made with seed {entry.get('seed')}, not {seed}")
        if wrong:
            result[name] = FigureStatus(name, "stale", "; ".join(wrong), st.info, st.entry)
    return result


def parse(argv: Sequence[str] | None, root: Path) -> Request:
    """Parse and check the command line, read the sources and the manifest.

    Raises:
        PipelineError: a bad input (``UsageError``) or a broken declaration or manifest.
        SystemExit: ``--help``, or an input argparse rejects (exit 2, one line).
    """
    args = build_parser().parse_args(argv)
    devices = parse_devices(args.devices)
    num_nodes = parse_num_nodes(args.num_nodes)
    jobs = parse_jobs(args.jobs)
    check_jobs(jobs, devices, num_nodes, args.strategy)
    if args.seed is not None and not 0 <= args.seed < MAX_SEED:
        raise UsageError(f"--seed {args.seed} is not valid; allowed: 0 to {MAX_SEED - 1}")
    if args.out_dir is not None:
        check_out_dir(args.out_dir, make=not (args.list or args.check))
    project = Project(root, out_dir=args.out_dir.resolve() if args.out_dir else None)
    # --force re-makes every selected figure: the workers can import torch and Lightning
    # while the sources are read and analysed below
    workers = min(jobs, len(args.only)) if args.only else jobs
    early = args.force and workers > 1 and not (args.list or args.check) and is_rank_zero()
    pool = WorkerPool(workers) if early else None
    try:
        sources = Sources(project)
        figures = discover(project, sources=sources)
        unknown = [n for n in args.only or () if n not in figures]
        if unknown:
            raise UsageError(
                f"unknown figure {', '.join(map(repr, unknown))}; allowed: "
                + (", ".join(sorted(figures)) or "(no figures are defined)")
            )
        selected = list(args.only) if args.only else list(figures)
        status = figure_status(project, figures=figures, sources=sources)
    except BaseException:
        if pool is not None:
            pool.close()
        raise
    if args.check or args.list:
        status = _as_asked(status, args.profile, args.seed)
    return Request(args, project, figures, status, selected, devices, num_nodes, jobs, pool)


#: One figure to make: its name, seed and profile.
Planned = tuple[str, int, str]


def plan(request: Request) -> list[Planned]:
    """The figures to make, in order, with their seeds and profiles.

    A figure is made when it is stale or missing, made with a worse profile than asked, or
    with another seed than ``--seed``; ``--force`` makes every selected figure. Without
    ``--profile`` each keeps the profile it was made with (a new figure, or one made with
    ``smoke``, gets ``quick``), as each keeps its seed without ``--seed``. The extra
    processes Lightning's DDP launcher starts follow the plan of rank 0 exactly.
    """
    args, status = request.args, request.status
    plan_env = os.environ.get(_PLAN_ENV)
    if plan_env:  # a process started by Lightning's DDP launcher: do what rank 0 does
        recorded = json.loads(plan_env)
        return [
            (name, seed, profile)
            for name, seed, profile in recorded["figures"]
            if name in request.figures
        ]
    force = args.force
    if not force and external_world_size() > 1:
        # srun/torchrun start every rank at once; a rank that starts late would see the
        # manifest rank 0 already updated and plan fewer figures. Make all selected figures.
        force = True
        if is_rank_zero():
            print("several ranks were launched: making every selected figure", file=sys.stderr)
    todo = []
    for name in request.selected:
        st = status[name]
        entry = st.entry or {}
        made_with = entry.get("profile")
        upgrade = made_with in PROFILE_RANK and (
            PROFILE_RANK[request.profile] > PROFILE_RANK[made_with]
        )
        reseed = args.seed is not None and entry.get("seed") != args.seed
        if force or not st.fresh or upgrade or reseed:
            seed = args.seed if args.seed is not None else entry.get("seed", 0)
            # without --profile a figure keeps the profile it was made with (new ones: quick)
            kept = made_with if made_with in PROFILE_RANK and not upgrade else request.profile
            todo.append((name, int(seed), args.profile or kept))
    return todo


def _check(request: Request) -> int:
    """``--check``: name every figure that is not fresh and how to refresh it."""
    only = set(request.args.only or ())
    bad = [s for n, s in sorted(request.status.items()) if not s.fresh and (not only or n in only)]
    if not bad:
        print(f"all {len(request.selected)} figures are fresh")
        return 0
    for st in bad:
        print(f"{st.state}: {st.name} ({st.reason})")
    runnable = [s.name for s in bad if s.state != "orphan"]
    if runnable:
        args = request.args
        print(f"refresh with: {refresh_command(runnable, args.profile, args.seed)}")
    if any(s.state == "orphan" for s in bad):
        print(f"remove orphans with: {COMMAND}")
    return 1


# --------------------------------------------------------------------------------------------
# Run and report
# --------------------------------------------------------------------------------------------


def _contexts(request: Request, todo: list[Planned], workers: int) -> list:
    args = request.args
    progress_bar = sys.stderr.isatty() if args.progress is None else args.progress
    return [
        (
            request.figures[name],
            FigureContext(
                profile=profile,
                seed=seed,
                accelerator=args.accelerator,
                # a parallel worker is one process: "auto" must not start DDP on many GPUs
                devices=1 if workers > 1 and request.devices == "auto" else request.devices,
                num_nodes=request.num_nodes,
                strategy=args.strategy,
                out_dir=request.project.out_dir,
                progress=progress_bar and is_rank_zero() and workers == 1,
                name=name,
            ),
        )
        for name, seed, profile in todo
    ]


def profiles_text(todo: Sequence[Planned]) -> str:
    """``full profile`` or, for a run that keeps several, ``full and quick profiles``."""
    profiles = sorted({p for _, _, p in todo}, key=lambda p: -PROFILE_RANK.get(p, 0))
    if len(profiles) == 1:
        return f"{profiles[0]} profile"
    return f"{', '.join(profiles[:-1])} and {profiles[-1]} profiles"


def _run(request: Request, todo: list[Planned]) -> Outcome:
    """Make ``todo``: in this process, or in ``--jobs`` worker processes."""
    os.environ[_PLAN_ENV] = json.dumps({"figures": todo})
    entries = {name: request.status[name].entry or {} for name, _, _ in todo}
    planned = {name: profile for name, _, profile in todo}
    # ETA: the last wall time plus the training of results no longer cached, for runs with
    # this profile. Order of parallel work (longest first): as if nothing were cached, since
    # a changed figure may well miss its old results; any profile. A bound on the time (for
    # the figures made while the workers start): a run with this profile or a better one.
    cache_dir = request.project.root / RESULTS_DIR if request.args.cache else None
    made = {n: e for n, e in entries.items() if "wall_time_s" in e}
    expected = {n: expected_seconds(e, None) for n, e in made.items()}
    estimates = {
        n: expected_seconds(e, cache_dir) for n, e in made.items() if e.get("profile") == planned[n]
    }
    bounded = {
        n: seconds
        for n, seconds in expected.items()
        if PROFILE_RANK.get(made[n].get("profile"), -1) >= PROFILE_RANK[planned[n]]
    }
    workers = min(request.jobs, len(todo))
    progress = Progress(total=len(todo), estimates=estimates, jobs=workers)
    jobs = _contexts(request, todo, workers)
    if workers == 1:
        return run_sequentially(
            request.project, jobs, progress, write=is_rank_zero(), cache=request.args.cache
        )
    print(
        f"making {len(todo)} figures in {workers} parallel processes ({profiles_text(todo)})",
        file=sys.stderr,
    )
    return run_in_parallel(
        request.project,
        jobs,
        workers,
        progress,
        expected,
        cache=request.args.cache,
        pool=request.pool,
        known=bounded,
    )


def _report(
    request: Request, todo: list[Planned], outcome: Outcome, seconds: float, workers: int
) -> int:
    """The last lines of a run and its exit status (the single place failures are summed up)."""
    project, profile = request.project, request.args.profile
    if outcome.interrupted is not None:
        print(interruption_line(project, outcome), file=sys.stderr)
        return outcome.interrupt_status
    print(
        f"made {len(outcome.made)} figure(s) in {clock(seconds)} ({profiles_text(todo)}"
        f"{f', {workers} processes' if workers > 1 else ''}) into "
        f"{project.relative(project.out_dir)}",
        file=sys.stderr,
    )
    if outcome.failed:
        print(
            f"{len(outcome.failed)} figure(s) failed: {', '.join(outcome.failed)}; their "
            "previous files and manifest entries are unchanged. Fix and re-run: "
            f"{refresh_command(outcome.failed, profile)}",
            file=sys.stderr,
        )
        return 1
    return 0


def _usage_error(err: PipelineError) -> int:
    print(f"make_figures.py: error: {err}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None, *, root: Path | None = None) -> int:
    """Run the command line; returns the exit status (see ``make_figures.py --help``).

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
        root: the repository root (default: the current directory).
    """
    try:
        request = parse(argv, Path(root or Path.cwd()))
    except PipelineError as err:
        return _usage_error(err)
    try:
        status = _main(request)
    finally:
        if request.pool is not None:
            request.pool.close()
    if request.args.compare is not None and is_rank_zero():
        # after making what was stale: what the change did, against git revision REV
        from block4 import compare  # the report's machinery, only when asked for

        status = max(status, compare.run(request.args, request.project))
    return status


def _main(request: Request) -> int:
    """List, check, or make the stale figures of ``request``; returns the exit status."""
    if request.args.list:
        only = set(request.args.only or ())
        shown = {n: s for n, s in request.status.items() if not only or n in only}
        print(list_table(shown) if shown else "no figures are defined")
        return 0
    if request.args.check:
        return _check(request)
    todo = plan(request)
    rank_zero = is_rank_zero()
    orphans = [n for n, s in request.status.items() if s.state == "orphan"]
    if orphans and not request.args.only and rank_zero:
        prune_orphans(request.project, orphans)
        print(f"removed orphaned figures: {', '.join(orphans)}", file=sys.stderr)
    if not todo:
        if rank_zero:
            print(f"all {len(request.selected)} figures are fresh; nothing to do")
        return 0
    try:
        check_accelerator(request.args.accelerator, request.devices)
    except PipelineError as err:
        return _usage_error(err)
    start = time.perf_counter()
    outcome = _run(request, todo)
    if not rank_zero:  # the extra ranks of a DDP run: rank 0 reports
        return (
            outcome.interrupt_status
            if outcome.interrupted is not None
            else int(bool(outcome.failed))
        )
    workers = min(request.jobs, len(todo))
    return _report(request, todo, outcome, time.perf_counter() - start, workers)
