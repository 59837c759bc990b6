"""Time ``scripts/make_figures.py``: every figure of a profile, a no-change run and ``--check``.

Usage::

    python benchmarks/figures.py --profile quick              # in a temporary copy of the repo
    python benchmarks/figures.py --profile full --accelerator gpu --in-place
    python benchmarks/figures.py --profile quick --jobs 2    # two figures at a time

By default the figures are made in a temporary copy of the repository, so the committed
figures stay untouched; ``--in-place`` regenerates the repository's own figures (what one does
on a GPU to publish the ``full`` profile). Per-figure wall times come from the manifest the run
writes. Writes ``figures_<profile>.json`` (``figures_<profile>_jobs<N>.json`` with ``--jobs N``,
``N > 1``; ``--name`` chooses another name).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, python, write_result  # noqa: E402

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


def run_cli(repo: Path, args: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = dict(os.environ, PYTHONPATH=str(repo / "src"))
    start = time.perf_counter()
    proc = subprocess.run(
        [python(), str(repo / "scripts" / "make_figures.py"), *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - start, proc


def figure_rows(manifest_path: Path, only: list[str], profile: str | None = None) -> list[dict]:
    """Per-figure wall times recorded in a manifest, slowest first."""
    manifest = json.loads(manifest_path.read_text())
    entries = manifest.get("figures", manifest)
    rows = []
    for name, entry in sorted(entries.items()):
        if (only and name not in only) or (profile and entry.get("profile") != profile):
            continue
        rows.append(
            {
                "name": name,
                "chapter": entry.get("chapter"),
                "wall_s": round(float(entry.get("wall_time_s", entry.get("wall_s", 0.0))), 2),
                "device": entry.get("device"),
            }
        )
    rows.sort(key=lambda r: -r["wall_s"])
    return rows


def measure(repo: Path, profile: str, extra: list[str], only: list[str], jobs: int = 1) -> dict:
    selection = ["--only", *only] if only else []
    total, proc = run_cli(
        repo, ["--force", "--profile", profile, "--jobs", str(jobs), *extra, *selection]
    )
    if proc.returncode != 0:
        raise SystemExit(f"make_figures.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    no_change, proc2 = run_cli(repo, ["--profile", profile, *extra, *selection])
    if proc2.returncode != 0:
        raise SystemExit(f"no-change run failed:\n{proc2.stderr[-3000:]}")
    check, proc3 = run_cli(repo, ["--check"])
    rows = figure_rows(repo / "docs" / "figures" / "manifest.json", only)
    return {
        "profile": profile,
        "jobs": jobs,
        "total_s": round(total, 1),
        "sum_of_figures_s": round(sum(r["wall_s"] for r in rows), 1),
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
        "--jobs", type=int, default=1, metavar="N", help="passed to make_figures.py (default 1)"
    )
    parser.add_argument("--in-place", action="store_true", help="regenerate the repo's own figures")
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
    if args.jobs < 1:
        parser.error(f"--jobs must be a positive count, got {args.jobs}")
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
        results = measure(ROOT, args.profile, extra, args.only, args.jobs)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            results = measure(copy_repo(Path(tmp)), args.profile, extra, args.only, args.jobs)
    path = write_result(name, results, args.out_dir)
    print(
        f"{results['n_figures']} figures, profile {args.profile}: total {results['total_s']} s, "
        f"no-change {results['no_change_run_s']} s, --check {results['check_s']} s -> {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
