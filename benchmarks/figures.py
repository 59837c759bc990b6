"""Time ``scripts/make_figures.py``: every figure of a profile, a no-change run and ``--check``.

Usage::

    python benchmarks/figures.py --profile quick              # in a temporary copy of the repo
    python benchmarks/figures.py --profile full --accelerator gpu --in-place
    python benchmarks/figures.py --profile quick --jobs 2    # two figures at a time
    python benchmarks/figures.py --profile quick --jobs 2 --repeats 3   # median of 3 runs

By default the figures are made in a temporary copy of the repository, so the committed
figures stay untouched; ``--in-place`` regenerates the repository's own figures (what one does
on a GPU to publish the ``full`` profile). Per-figure wall times come from the manifest the run
writes. Before each run a fresh interpreter imports what the workers preload (torch,
Lightning, matplotlib); its seconds (``import_s``) record how fast the machine was at the
time. Writes ``figures_<profile>.json`` (``figures_<profile>_jobs<N>.json`` with ``--jobs N``,
``N > 1``; ``--name`` chooses another name).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, python, write_result  # noqa: E402

sys.path.insert(0, str(ROOT / "src"))
from block4.make_figures import UsageError, parse_jobs  # noqa: E402  (no torch import)
from block4.warm_figures import PRELOAD  # noqa: E402  (standard library only)

PROFILES = ("smoke", "quick", "full")


def copy_repo(dest: Path) -> Path:
    """Copy the tracked and untracked-but-not-ignored files of the repository to ``dest``."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, listing.split("\0")):
        src = ROOT / rel
        if src.is_file():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return dest


#: Seconds a run gets to end after each stop signal at its time limit (SIGINT, then SIGTERM).
STOP_GRACE_S = 5.0


def run_cli(
    repo: Path,
    args: list[str],
    time_limit: float | None = None,
    stopped_by: list[str] | None = None,
) -> tuple[float, subprocess.CompletedProcess[str] | None]:
    """Run make_figures.py in ``repo``; ``None`` instead of the process when the time ran out.

    At the time limit the run is interrupted like Ctrl+C (it stops its workers and keeps
    every figure finished so far). A run still there `STOP_GRACE_S` later gets SIGTERM (which
    it treats the same way), then SIGKILL; the names of the signals it took are appended to
    ``stopped_by``.
    """
    env = dict(os.environ, PYTHONPATH=str(repo / "src"))
    start = time.perf_counter()
    proc = subprocess.Popen(
        [python(), str(repo / "scripts" / "make_figures.py"), *args],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=time_limit)
    except subprocess.TimeoutExpired:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            if stopped_by is not None:
                stopped_by.append(signal.Signals(sig).name)
            proc.send_signal(sig)
            try:
                proc.communicate(timeout=STOP_GRACE_S)
                break
            except subprocess.TimeoutExpired:
                continue
        return time.perf_counter() - start, None
    return time.perf_counter() - start, subprocess.CompletedProcess(
        proc.args, proc.returncode, out, err
    )


def figure_rows(manifest_path: Path, only: list[str], profile: str | None = None) -> list[dict]:
    """Per-figure wall times recorded in a manifest, slowest first."""
    manifest = json.loads(manifest_path.read_text())
    entries = manifest.get("figures", manifest)
    rows = []
    for name, entry in sorted(entries.items()):
        if (only and name not in only) or (profile and entry.get("profile") != profile):
            continue
        training = sum(
            float(r.get("seconds") or 0.0) for r in entry.get("results", []) if not r.get("reused")
        )
        drawing = entry.get("draw_time_s")
        rows.append(
            {
                "name": name,
                "chapter": entry.get("chapter"),
                "wall_s": round(float(entry.get("wall_time_s", entry.get("wall_s", 0.0))), 2),
                "training_s": round(training, 2),
                "draw_s": None if drawing is None else round(float(drawing), 2),
                "device": entry.get("device"),
            }
        )
    rows.sort(key=lambda r: -r["wall_s"])
    return rows


def where_the_seconds_go(rows: list[dict], jobs: int) -> dict[str, float]:
    """The figures' seconds of one run, summed over its processes: training (the runs
    computed, not re-used), building (the rest of the figure functions: data, evaluation,
    plotting) and drawing (rendering both SVGs); ``per_process_s`` is their sum over
    ``jobs``."""
    training = sum(r["training_s"] for r in rows)
    building = sum(r["wall_s"] for r in rows) - training
    drawing = sum(r["draw_s"] or 0.0 for r in rows)
    return {
        "training_s": round(training, 1),
        "building_s": round(building, 1),
        "drawing_s": round(drawing, 1),
        "per_process_s": round((training + building + drawing) / max(jobs, 1), 1),
    }


def figures_made_since(manifest_path: Path, started: datetime) -> list[dict]:
    """The rows of the figures a run that started at ``started`` (UTC) has written."""
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    since = started.replace(microsecond=0)
    fresh = [
        name
        for name, entry in manifest.get("figures", {}).items()
        if datetime.fromisoformat(entry.get("date", "1970-01-01T00:00:00+00:00")) >= since
    ]
    return figure_rows(manifest_path, fresh) if fresh else []


def import_seconds() -> float:
    """Seconds a fresh interpreter takes to import what every figure worker preloads
    (``block4.warm_figures.PRELOAD``): the machine's speed at the moment of a run, which on
    a shared machine varies from hour to hour."""
    start = time.perf_counter()
    subprocess.run(
        [python(), "-c", f"import {', '.join(PRELOAD)}"],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def measure(
    repo: Path,
    profile: str,
    extra: list[str],
    only: list[str],
    jobs: int = 1,
    time_limit: float | None = None,
    repeats: int = 1,
) -> dict:
    """Time ``repeats`` runs from scratch (the median counts; between runs the copy's caches
    are deleted), then the no-change run and ``--check``."""
    selection = ["--only", *only] if only else []
    totals, imports = [], []
    stopped_by: list[str] = []
    for repeat in range(repeats):
        if repeat:  # from scratch again: no cached results, no code index
            shutil.rmtree(repo / ".cache", ignore_errors=True)
        imports.append(import_seconds())
        started = datetime.now(timezone.utc)
        total, proc = run_cli(
            repo,
            ["--force", "--profile", profile, "--jobs", str(jobs), *extra, *selection],
            time_limit,
            stopped_by,
        )
        if proc is None or proc.returncode != 0:
            break
        totals.append(total)
        print(f"run {repeat + 1} of {repeats}: {total:.1f} s", file=sys.stderr, flush=True)
    manifest = repo / "docs" / "figures" / "manifest.json"
    if proc is None:  # the time limit ran out: report what was made
        rows = figures_made_since(manifest, started)
        of = len(only) if only else len(json.loads(manifest.read_text())["figures"])
        return {
            "profile": profile,
            "jobs": jobs,
            "complete": False,
            "time_limit_s": time_limit,
            "stopped_by": stopped_by,
            "figures_made": len(rows),
            "of_figures": of,
            "sum_of_figures_s": round(sum(r["wall_s"] for r in rows), 1),
            "note": f"stopped by its {time_limit:g} s time limit with {len(rows)} of {of} "
            "figures made (their times are below)",
            "figures": rows,
        }
    if proc.returncode != 0:
        raise SystemExit(f"make_figures.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    no_changes, checks = [], []
    for _ in range(3):  # the median of three: one run is at the mercy of the machine's moment
        seconds, proc2 = run_cli(repo, ["--profile", profile, *extra, *selection])
        if proc2 is None or proc2.returncode != 0:
            raise SystemExit(f"no-change run failed:\n{proc2 and proc2.stderr[-3000:]}")
        no_changes.append(seconds)
        seconds, proc3 = run_cli(repo, ["--check"])
        assert proc3 is not None
        checks.append(seconds)
    no_change, check = statistics.median(no_changes), statistics.median(checks)
    rows = figure_rows(manifest, only)
    return {
        "profile": profile,
        "jobs": jobs,
        "total_s": round(statistics.median(totals), 1),
        "totals_s": [round(t, 1) for t in totals],
        "import_s": round(statistics.median(imports), 1),
        "imports_s": [round(t, 1) for t in imports],
        "sum_of_figures_s": round(sum(r["wall_s"] for r in rows), 1),
        **where_the_seconds_go(rows, jobs),
        "no_change_run_s": round(no_change, 2),
        "check_s": round(check, 2),
        "check_exit_code": proc3.returncode,
        "n_figures": len(rows),
        "figures": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=PROFILES, default="quick")
    parser.add_argument("--accelerator", default=None, help="passed to make_figures.py")
    parser.add_argument(
        "--only", nargs="+", default=[], metavar="NAME", help="time these figures only"
    )
    parser.add_argument(
        "--jobs",
        default="1",
        metavar="N",
        help="passed to make_figures.py: a count or auto (default 1)",
    )
    parser.add_argument("--in-place", action="store_true", help="regenerate the repo's own figures")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        metavar="N",
        help="time N runs from scratch and report the median (not with --in-place)",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=None,
        metavar="S",
        help="stop the run after S seconds and record the figures made so far as an "
        "incomplete run (e.g. on a machine booked for a short time)",
    )
    parser.add_argument(
        "--name", default=None, help="result name (default figures_<profile>[_jobs<N>])"
    )
    parser.add_argument("--out-dir", type=Path, default=None, help="where the JSON goes")
    parser.add_argument(
        "--from-manifest",
        type=Path,
        metavar="MANIFEST",
        help="run nothing: summarise the per-figure times of an existing manifest.json "
        "(e.g. of a run cut short by a time limit)",
    )
    args = parser.parse_args(argv)
    try:
        args.jobs = parse_jobs(args.jobs)
    except UsageError as err:
        parser.error(str(err))
    if args.repeats < 1 or (args.repeats > 1 and args.in_place):
        parser.error(
            f"--repeats must be >= 1, and 1 with --in-place (each run starts from scratch), "
            f"got {args.repeats}"
        )
    if args.time_limit is not None and not args.time_limit > 0:
        parser.error(f"--time-limit must be a positive number of seconds, got {args.time_limit}")
    extra = ["--accelerator", args.accelerator] if args.accelerator else []
    name = args.name or f"figures_{args.profile}" + (f"_jobs{args.jobs}" if args.jobs > 1 else "")

    if args.from_manifest:
        if not args.from_manifest.is_file():
            parser.error(f"--from-manifest: {args.from_manifest} does not exist")
        rows = figure_rows(args.from_manifest, args.only, args.profile)
        results = {
            "profile": args.profile,
            "sum_of_figures_s": round(sum(r["wall_s"] for r in rows), 1),
            "n_figures": len(rows),
            "figures": rows,
        }
        path = write_result(name, results, args.out_dir)
        print(f"{len(rows)} figures of profile {args.profile} summarised -> {path}")
        return 0
    if args.in_place:
        results = measure(ROOT, args.profile, extra, args.only, args.jobs, args.time_limit, 1)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            repo = copy_repo(Path(tmp))
            results = measure(
                repo, args.profile, extra, args.only, args.jobs, args.time_limit, args.repeats
            )
    path = write_result(name, results, args.out_dir)
    if results.get("complete") is False:
        print(f"incomplete run: {results['note']} -> {path}")
        return 0
    print(
        f"{results['n_figures']} figures, profile {args.profile}: total {results['total_s']} s, "
        f"no-change {results['no_change_run_s']} s, --check {results['check_s']} s -> {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
