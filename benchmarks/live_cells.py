"""The live cells in a real browser: seconds from pressing Run to the output, and bytes.

Usage::

    python benchmarks/live_cells.py                 # the built site in site/ (mkdocs build first)
    python benchmarks/live_cells.py --site DIR --runs 5

Serves the built site from a local server and drives Debian's Chromium (Playwright). Each
first Run is in a fresh browser context (an empty cache, as for a new reader) on the
Backpropagation page: with the start-up snapshot (``scripts/pyodide_snapshot.mjs``) and with
the snapshot withheld (Python started the ordinary way). Records the median first Run, how
its time splits (load the loader, start Python, import block4), the later Runs of the same
page, the bytes the page loads before any Run (once its formulas are typeset), the runtime
files it loads before and with the first Run, and the bytes the first Run loads. Writes
``live_cells.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import ROOT, write_result  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
from _helpers import chromium_browser, serve_directory, wait_until_quiet  # noqa: E402

PAGE = "backpropagation/"
# The files of the Python runtime (Pyodide, the start-up snapshot, block4's wheel): none of
# them may load before the first Run.
RUNTIME = ("javascripts/vendor/pyodide/", "snapshot.bin", ".whl")
PHASES = "performance.getEntriesByType('measure').filter(m => m.name.startsWith('block4-live'))"


def is_runtime(url: str) -> bool:
    """Whether ``url`` is one of the runtime's files."""
    return any(part in url for part in RUNTIME)


def settle(page: Any, pending: set[Any]) -> None:
    """Wait until the page is ready to read: formulas typeset, their fonts loaded, and then
    no request in flight for half a second (the fonts are requested only once KaTeX has
    typeset, which on a busy machine comes after the first quiet half second)."""
    page.wait_for_selector("body[data-math-rendered]", state="attached", timeout=60_000)
    page.evaluate("document.fonts.ready.then(() => document.fonts.size)")
    wait_until_quiet(page, pending, quiet_ms=500, timeout_s=60.0)


def first_run(browser: Any, url: str, snapshot: bool, later: int) -> dict[str, Any]:
    """One reader's first Run (and ``later`` more) on a fresh page."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        sizes: list[int] = []
        urls: list[str] = []
        page.on("response", lambda r: sizes.append(int(r.headers.get("content-length") or 0)))
        page.on("request", lambda r: urls.append(r.url.removeprefix(url)))
        pending: set[Any] = set()  # requests in flight
        page.on("request", lambda r: pending.add(r))
        page.on("requestfinished", lambda r: pending.discard(r))
        page.on("requestfailed", lambda r: pending.discard(r))
        if not snapshot:
            page.route("**/snapshot.bin.gz", lambda route: route.fulfill(status=404))
        page.goto(url + PAGE, wait_until="networkidle")
        settle(page, pending)
        before = sum(sizes)
        n_before = len(urls)
        runtime_before = sorted(u for u in urls if is_runtime(u))
        cell = page.locator(".live-cell").first
        handle = cell.element_handle()
        start = time.perf_counter()
        cell.locator("button.live-run").click()
        page.wait_for_function("c => Number(c.dataset.runs || 0) > 0", arg=handle, timeout=120_000)
        seconds = time.perf_counter() - start
        loaded = sum(sizes) - before
        runtime_first_run = sum(is_runtime(u) for u in urls[n_before:])
        phases = page.evaluate(f"{PHASES}.map(m => [m.name.slice(13), m.duration])")
        later_ms = []
        for k in range(later):
            cell.locator("button.live-run").click()
            page.wait_for_function(
                "([c, n]) => Number(c.dataset.runs || 0) > n", arg=[handle, k + 1]
            )
            later_ms.append(float(cell.get_attribute("data-last-run-ms")))
        return {
            "first_run_s": seconds,
            "phases_ms": {name: round(ms) for name, ms in phases},
            "page_bytes": before,
            "runtime_files_before_run": runtime_before,
            "runtime_files_first_run": runtime_first_run,
            "first_run_bytes": loaded,
            "later_runs_ms": later_ms,
        }
    finally:
        context.close()


def measure(site: Path, runs: int) -> dict[str, Any]:
    if not (site / "javascripts" / "vendor" / "pyodide" / "VERSION").is_file():
        raise SystemExit(f"{site} has no Python runtime: run scripts/vendor_pyodide.sh, build")
    results: dict[str, Any] = {"goal_first_run_s": 4.0, "goal_later_run_ms": 200.0}
    with serve_directory(site) as url, chromium_browser() as browser:
        first_run(browser, url, True, 0)  # the server's and the browser's own warm-up
        for snapshot in (True, False):
            samples = [first_run(browser, url, snapshot, 5) for _ in range(runs)]
            key = "snapshot" if snapshot else "no_snapshot"
            results[key] = {
                "first_run_s": round(statistics.median(s["first_run_s"] for s in samples), 2),
                "first_runs_s": [round(s["first_run_s"], 2) for s in samples],
                "phases_ms": samples[len(samples) // 2]["phases_ms"],
                "first_run_mb": round(samples[-1]["first_run_bytes"] / 1e6, 2),
                "page_kb": round(samples[-1]["page_bytes"] / 1e3),
                "runtime_files_before_run": sorted(
                    {u for s in samples for u in s["runtime_files_before_run"]}
                ),
                "runtime_files_first_run": samples[-1]["runtime_files_first_run"],
                "later_run_ms": statistics.median(ms for s in samples for ms in s["later_runs_ms"]),
            }
    results["load_average_at_end"] = round(os.getloadavg()[0], 2)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", type=Path, default=ROOT / "site", help="a built site")
    parser.add_argument("--runs", type=int, default=3, help="first Runs per case (median)")
    parser.add_argument("--out-dir", type=Path, default=None, help="where the JSON goes")
    args = parser.parse_args(argv)
    results = measure(args.site, args.runs)
    path = write_result("live_cells", results, args.out_dir)
    snap, plain = results["snapshot"], results["no_snapshot"]
    print(
        f"first Run {snap['first_run_s']} s with the snapshot, {plain['first_run_s']} s "
        f"without; later Runs {snap['later_run_ms']} ms; first Run loads "
        f"{snap['first_run_mb']} MB ({plain['first_run_mb']} MB without) -> {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
