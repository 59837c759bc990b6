"""The author's loop: what an edit makes stale, and how long until its figure is fresh again.

Usage::

    python benchmarks/edit_loop.py                       # quick profile, default sample edits
    python benchmarks/edit_loop.py --profile smoke --figure backprop_worked_example

In a temporary copy of the repository (the committed figures stay untouched) it

1. times ``make_figures.py --check`` with nothing changed (the median of three runs);
2. makes the figure ``--figure`` once, then edits its function only (a plotting-only change)
   and times ``make_figures.py --jobs auto`` until it is fresh again, recording which figures
   were re-made and whether their ``ctx.compute`` results were re-used from the cache or
   computed (``computed`` 0 means no training ran);
3. for every ``--edit MODULE:NAME`` (default: a shared training helper and the model builder)
   edits that function and lists the figures whose fingerprint changed, i.e. that go stale;
4. the loop as an author lives it: ``mkdocs serve`` runs (notebook outputs cached), the figure's
   function gets a visible plotting change (``--replace OLD NEW``, a label by default), and the
   clock runs until the browsers are told to reload with the new SVG served (``page_fresh_s``),
   then until the full rebuild that follows is done. Its results were computed before (step
   2, at the profile the figure was published with), as in a checkout where it was made.

The edits of steps 2 and 3 add one statement at the top of the function's body, so only its
code changes. Writes ``edit_loop.json``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, write_result  # noqa: E402
from benchmarks.figures import copy_repo, run_cli  # noqa: E402
from benchmarks.first_start import fetch, free_port  # noqa: E402

sys.path.insert(0, str(ROOT / "src"))
from block4 import pipeline  # noqa: E402  (no torch import)

#: The visible plotting change of the serve measurement (in the edited figure's function).
DEFAULT_REPLACE = ('xlabel="epoch"', 'xlabel="training epoch"')

#: Seconds the serve measurement waits for the server, a reload, the full rebuild.
SERVE_TIMEOUT_S = 240.0

#: Sample edits of shared code, tried in order; the first that exists is used per pair.
DEFAULT_EDITS = [
    ("block4.training:train_members",),
    ("block4.models:mlp",),
]


def function_file(repo: Path, target: str) -> tuple[Path, ast.FunctionDef | ast.ClassDef] | None:
    """The file and definition of ``module:name`` in ``repo`` (None: there is none)."""
    module, _, name = target.partition(":")
    sources = pipeline.Sources(pipeline.Project(repo))
    path = sources.module_file(module)
    if path is None:
        return None
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == name:
            return path, node
    return None


def edit(repo: Path, target: str) -> None:
    """Add one statement at the top of ``target``'s body (after its docstring)."""
    found = function_file(repo, target)
    if found is None:
        raise SystemExit(f"--edit {target}: no such function in the repository")
    path, node = found
    body = node.body
    first = body[1] if len(body) > 1 and isinstance(body[0], ast.Expr) else body[0]
    lines = path.read_text().splitlines(keepends=True)
    indent = " " * first.col_offset
    lines.insert(first.lineno - 1, f"{indent}_edited_for_the_benchmark = True\n")
    path.write_text("".join(lines))


def fingerprints(repo: Path) -> dict[str, str]:
    """Every figure's fingerprint (recorded profile and seed do not matter for a comparison)."""
    project = pipeline.Project(repo)
    sources = pipeline.Sources(project)
    figures = pipeline.discover(project, sources=sources)
    return {
        n: pipeline.fingerprint(project, i, "quick", 0, sources=sources) for n, i in figures.items()
    }


def made_stale(repo: Path, target: str) -> list[str]:
    """The figures an edit of ``target`` makes stale (the edit is undone afterwards)."""
    found = function_file(repo, target)
    assert found is not None
    path = found[0]
    before_text = path.read_text()
    before = fingerprints(repo)
    edit(repo, target)
    after = fingerprints(repo)
    path.write_text(before_text)
    return sorted(n for n in after if after[n] != before.get(n))


def _ok(proc, what: str) -> None:
    if proc is None or proc.returncode != 0:
        detail = "" if proc is None else proc.stderr[-3000:]
        raise SystemExit(f"{what} failed:\n{detail}")


def plotting_edit(repo: Path, figure: str, profile: str) -> dict:
    """Make ``figure``, edit its function, time the run that makes it fresh again."""
    info = pipeline.discover(pipeline.Project(repo)).get(figure)
    if info is None:
        raise SystemExit(f"--figure {figure!r}: no such figure")
    first_s, proc = run_cli(repo, ["--only", figure, "--profile", profile, "--force"])
    _ok(proc, "making the figure")
    target = f"{info.module}:{info.function}"
    stale = made_stale(repo, target)
    edit(repo, target)
    loop_s, proc = run_cli(repo, ["--only", figure, "--profile", profile, "--jobs", "auto"])
    _ok(proc, "re-making the figure")
    entry = json.loads((repo / "docs" / "figures" / "manifest.json").read_text())["figures"][figure]
    results = entry.get("results", [])
    return {
        "figure": figure,
        "edited": target,
        "first_make_s": round(first_s, 2),
        "stale_after_edit": stale,
        "remade": proc.stderr.count("done "),
        "edit_to_fresh_s": round(loop_s, 2),
        "figure_wall_s": entry.get("wall_time_s"),
        "results_reused": sum(1 for r in results if r.get("reused")),
        "results_computed": sum(1 for r in results if not r.get("reused")),
    }


class _Reloads:
    """Long-polls the server's livereload endpoint the way a browser tab does; records the
    time of every reload it is told of."""

    def __init__(self, base: str, epoch: int) -> None:
        self.base, self.epoch, self.times = base, epoch, []
        self._stop = False
        threading.Thread(target=self._poll, daemon=True).start()

    def _poll(self) -> None:
        while not self._stop:
            try:
                url = f"{self.base}livereload/{self.epoch}/1"
                with urllib.request.urlopen(url, timeout=90) as response:
                    epoch = int(float(response.read().decode()))
            except (OSError, ValueError):
                time.sleep(0.2)
                continue
            if epoch > self.epoch:
                self.epoch = epoch
                self.times.append(time.monotonic())

    def wait(self, count: int, timeout: float) -> float | None:
        end = time.monotonic() + timeout
        while len(self.times) < count and time.monotonic() < end:
            time.sleep(0.02)
        return self.times[count - 1] if len(self.times) >= count else None

    def stop(self) -> None:
        self._stop = True


def _svg(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def _full_build_done(log: Path, mark: int, reloads: _Reloads) -> float | None:
    """When the browsers were told to reload after the next full build ("Building
    documentation..." in the server's log, after ``mark``) had finished."""
    end = time.monotonic() + SERVE_TIMEOUT_S
    while time.monotonic() < end:
        count = len(reloads.times)
        if "Building documentation" in log.read_text()[mark:]:
            return reloads.wait(count + 1, max(0.0, end - time.monotonic()))
        time.sleep(0.05)
    return None


def serve_edit(repo: Path, figure: str, replace: tuple[str, str]) -> dict:
    """Edit ``figure``'s function visibly while ``mkdocs serve`` runs: seconds until the
    browsers reload with the new SVG, and until the full rebuild after it is done."""
    info = pipeline.discover(pipeline.Project(repo))[figure]
    path, node = function_file(repo, f"{info.module}:{info.function}") or (None, None)
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    start = sum(len(line) for line in lines[: node.lineno - 1])
    end = sum(len(line) for line in lines[: node.end_lineno])
    if replace[0] not in text[start:end]:
        raise SystemExit(f"--replace: {replace[0]!r} is not in the function of {figure}")
    edited = text[:start] + text[start:end].replace(replace[0], replace[1], 1) + text[end:]
    cached = ROOT / ".cache" / "mkdocs-jupyter"  # notebook outputs, as in a working checkout
    if cached.is_dir():
        shutil.copytree(cached, repo / ".cache" / "mkdocs-jupyter", dirs_exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}/"
    log = (repo / ".serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mkdocs", "serve", "-a", f"127.0.0.1:{port}"],
        cwd=repo, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1", PYTHONPATH=str(repo / "src")),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + SERVE_TIMEOUT_S
        while fetch(base)[0] != 200:
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(
                    f"mkdocs serve did not start:\n{(repo / '.serve.log').read_text()}"
                )
            time.sleep(0.5)
        page = fetch(base)[1]
        epoch = int(re.search(r"livereload\((\d+),", page).group(1))
        time.sleep(15)  # the warm figure process imports torch and Lightning meanwhile
        svg_url = f"{base}figures/{figure}.svg"
        before = _svg(svg_url)
        reloads = _Reloads(base, epoch)
        time.sleep(1.0)
        mark = (repo / ".serve.log").stat().st_size
        t0 = time.monotonic()
        path.write_text(edited)
        first = reloads.wait(1, SERVE_TIMEOUT_S)
        shown = _svg(svg_url) if first is not None else before
        full = _full_build_done(repo / ".serve.log", mark, reloads) if first else None
        reloads.stop()
        output = (repo / ".serve.log").read_text()[mark:]
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGINT)  # Ctrl+C
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        log.close()
    return {
        "figure": figure,
        "replaced": list(replace),
        "page_fresh_s": None if first is None else round(first - t0, 2),
        "svg_changed": shown != before,
        "full_rebuild_done_s": None if full is None else round(full - t0, 2),
        "figures_remade": sorted(set(re.findall(r"re-making figure (\w+)", output))),
        "shown_before_full_build": "showing the re-drawn" in output,
        "notebooks_rerun": len(re.findall(r"notebook\(s\) execute in the background", output)),
    }


def measure(
    repo: Path,
    figure: str,
    profile: str | None,
    edits: list[tuple[str, ...]],
    replace: tuple[str, str] | None,
) -> dict:
    checks = []
    for _ in range(3):
        seconds, proc = run_cli(repo, ["--check"])
        assert proc is not None
        checks.append(seconds)
    shared = []
    for candidates in edits:
        target = next((t for t in candidates if function_file(repo, t) is not None), None)
        if target is None:
            continue
        stale = made_stale(repo, target)
        shared.append({"edited": target, "stale": stale, "n_stale": len(stale)})
    if profile is None:  # the profile the figure was published with
        manifest = json.loads((repo / "docs" / "figures" / "manifest.json").read_text())
        profile = manifest["figures"].get(figure, {}).get("profile", "quick")
    results = {
        "profile": profile,
        "check_s": round(statistics.median(checks), 3),
        "plotting_edit": plotting_edit(repo, figure, profile),
        "shared_edits": shared,
    }
    if replace is not None:
        results["serve"] = serve_edit(repo, figure, replace)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--profile",
        choices=("smoke", "quick", "full"),
        default=None,
        help="the profile of the plotting edit (default: the one the figure was made with)",
    )
    parser.add_argument(
        "--figure", default="relu_vs_tanh", help="the figure whose function is edited"
    )
    parser.add_argument(
        "--edit",
        nargs="+",
        default=None,
        metavar="MODULE:NAME",
        help="shared functions to edit, one at a time (default: a training helper, mlp)",
    )
    parser.add_argument(
        "--replace",
        nargs=2,
        default=list(DEFAULT_REPLACE),
        metavar=("OLD", "NEW"),
        help="the visible change made in the figure's function under mkdocs serve "
        f"(default: {DEFAULT_REPLACE[0]} -> {DEFAULT_REPLACE[1]})",
    )
    parser.add_argument("--no-serve", action="store_true", help="skip the mkdocs serve part")
    parser.add_argument("--out-dir", type=Path, default=None, help="where the JSON goes")
    args = parser.parse_args(argv)
    edits = [(e,) for e in args.edit] if args.edit else DEFAULT_EDITS
    replace = None if args.no_serve else tuple(args.replace)
    with tempfile.TemporaryDirectory() as tmp:
        repo = copy_repo(Path(tmp))
        results = measure(repo, args.figure, args.profile, edits, replace)
    path = write_result("edit_loop", results, args.out_dir)
    loop = results["plotting_edit"]
    serve = results.get("serve")
    print(
        f"--check {results['check_s']} s; editing {loop['edited']}: "
        f"{len(loop['stale_after_edit'])} stale, fresh again in {loop['edit_to_fresh_s']} s "
        f"({loop['results_computed']} results computed, {loop['results_reused']} re-used); "
        + "; ".join(f"{e['edited']}: {e['n_stale']} stale" for e in results["shared_edits"])
        + (
            f"; under mkdocs serve the page shows the change after {serve['page_fresh_s']} s, "
            f"the full rebuild is done after {serve['full_rebuild_done_s']} s"
            if serve
            else ""
        )
        + f" -> {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
