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
   edits that function and lists the figures whose fingerprint changed, i.e. that go stale.

Every edit adds one statement at the top of the function's body, so only its code changes.
Writes ``edit_loop.json``.
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, write_result  # noqa: E402
from benchmarks.figures import copy_repo, run_cli  # noqa: E402

sys.path.insert(0, str(ROOT / "src"))
from block4 import pipeline  # noqa: E402  (no torch import)

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


def measure(repo: Path, figure: str, profile: str, edits: list[tuple[str, ...]]) -> dict:
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
    return {
        "profile": profile,
        "check_s": round(statistics.median(checks), 3),
        "plotting_edit": plotting_edit(repo, figure, profile),
        "shared_edits": shared,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=("smoke", "quick", "full"), default="quick")
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
    parser.add_argument("--out-dir", type=Path, default=None, help="where the JSON goes")
    args = parser.parse_args(argv)
    edits = [(e,) for e in args.edit] if args.edit else DEFAULT_EDITS
    with tempfile.TemporaryDirectory() as tmp:
        repo = copy_repo(Path(tmp))
        results = measure(repo, args.figure, args.profile, edits)
    path = write_result("edit_loop", results, args.out_dir)
    loop = results["plotting_edit"]
    print(
        f"--check {results['check_s']} s; editing {loop['edited']}: "
        f"{len(loop['stale_after_edit'])} stale, fresh again in {loop['edit_to_fresh_s']} s "
        f"({loop['results_computed']} results computed, {loop['results_reused']} re-used); "
        + "; ".join(f"{e['edited']}: {e['n_stale']} stale" for e in results["shared_edits"])
        + f" -> {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
