"""Time ``mkdocs build --strict``: cold (no notebook cache) and warm (unchanged sources).

Usage::

    python benchmarks/site_build.py [--repeats 2] [--out-dir benchmarks/results]

Cold means the executed-notebook cache is empty, so every companion notebook runs; warm is the
same build again with nothing changed. Figures are never regenerated here (the site uses the
committed figures). Writes ``site_build.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, python, write_result  # noqa: E402

NOTEBOOK_CACHE = ROOT / ".cache" / "mkdocs-jupyter"


def build_once(site_dir: Path) -> float:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    start = time.perf_counter()
    proc = subprocess.run(
        [python(), "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"mkdocs build failed:\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="warm builds to time (median)")
    parser.add_argument("--out-dir", type=Path, default=None, help="where the JSON goes")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        backup = Path(tmp) / "nb-cache"
        # Cold: move the notebook cache aside (and put it back afterwards, untouched).
        had_cache = NOTEBOOK_CACHE.is_dir()
        if had_cache:
            shutil.move(str(NOTEBOOK_CACHE), backup)
        try:
            cold = build_once(site)
            warm = [build_once(site) for _ in range(args.repeats)]
        finally:
            if had_cache:
                shutil.rmtree(NOTEBOOK_CACHE, ignore_errors=True)
                shutil.move(str(backup), NOTEBOOK_CACHE)
        pages = sum(1 for _ in site.rglob("index.html"))

    results = {
        "cold_s": round(cold, 2),
        "warm_s": round(statistics.median(warm), 2),
        "warm_runs_s": [round(w, 2) for w in warm],
        "pages": pages,
        "goal_warm_s": 60,
    }
    path = write_result("site_build", results, args.out_dir)
    print(f"cold {cold:.1f} s, warm {results['warm_s']:.1f} s, {pages} pages -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
