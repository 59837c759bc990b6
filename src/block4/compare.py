"""What a change did to the figures: every figure that differs from a git revision.

``python -m block4.compare REV`` compares the figures of the working tree
(``docs/figures/manifest.json`` and its SVG files) with those committed at ``REV`` (read with
``git show``; it works offline and needs no server) and writes two files:

- ``report.html``: one self-contained page (the images are inlined, it opens from disk and
  follows the reader's light or dark setting) with, for each figure that differs, the sources
  whose digest changed, the numbers before -> after (the ones that moved highlighted, with
  their relative change) and the old and new images side by side, light and dark;
- ``summary.md``: the same in a few lines of Markdown, for a CI job summary.

Both also list every paragraph of the pages that reads differently (`block4.prose_diff`): the
numbers of a re-made figure rewrite the sentences that quote them, and the words around the
numbers must still be true, so the reports show each such paragraph (``report.html`` with
the changed words marked, ``summary.md`` as a diff of its lines).

A figure *differs* when its fingerprint, its numbers or its image files differ from ``REV``;
a figure absent at ``REV`` is shown as *new*, one absent now as *removed*; figures that are
the same are left out. Which sources changed is read from the manifest entries' ``sources``
maps, whatever their keys are (source files such as ``block4/figures/likelihood.py``, or
functions such as ``block4.figures.likelihood:decision_under_cost``): every key whose digest
differs, appeared or disappeared is named.

The same report from the figure command: `add_arguments` (from `block4.compare_options`,
which the figure command imports on every run without this module) adds ``--compare REV``
and ``--compare-out DIR`` to an argument parser, `run` writes the report when ``--compare``
was given. Nothing here imports torch or matplotlib.
"""

from __future__ import annotations

import argparse
import base64
import html
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from block4.compare_options import DEFAULT_OUT, REPORT_HTML, SUMMARY_MD, add_arguments
from block4.figure_diff import (
    ROUNDING,
    VARIANTS,
    CompareError,
    Comparison,
    FigureChange,
    Number,
    NumberChange,
    Setting,
    SourceChange,
    compare,
    diff_entries,
    is_numeric,
    short_text,
)
from block4.pipeline import PipelineError, Project
from block4.prose_diff import (
    ProseChange,
    html_section,
    markdown_lines,
    prose_headline,
    prose_of,
)

__all__ = [
    "REPORT_HTML",
    "ROUNDING",
    "SUMMARY_MD",
    "CompareError",
    "Comparison",
    "FigureChange",
    "NumberChange",
    "SourceChange",
    "Setting",
    "add_arguments",
    "build_parser",
    "compare",
    "diff_entries",
    "format_change",
    "format_pair",
    "main",
    "prose_headline",
    "prose_of",
    "render_html",
    "render_markdown",
    "run",
    "write_report",
]

# --------------------------------------------------------------------------------------------
# Formatting numbers
# --------------------------------------------------------------------------------------------


def _format_value(value: Number | None, precision: int = 6) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.{precision}g}"
    return str(value)


def format_pair(before: Number | None, after: Number | None) -> tuple[str, str]:
    """``before`` and ``after`` as text, with enough digits to show that they differ."""
    for precision in range(6, 17):
        texts = _format_value(before, precision), _format_value(after, precision)
        if texts[0] != texts[1] or before == after:
            return texts
    # Floats one rounding step apart: the shortest text that reads back as each value.
    return tuple(repr(v) if isinstance(v, float) else _format_value(v) for v in (before, after))  # type: ignore[return-value]


def format_change(number: NumberChange) -> str:
    """The change of a number: ``+0.0312 (+4.1 %)``, ``new``, ``removed`` or empty."""
    if not number.changed:
        return ""
    if number.before is None:
        return "new"
    if number.after is None:
        return "removed"
    if not (is_numeric(number.before) and is_numeric(number.after)):
        return "changed"
    delta = number.after - number.before  # type: ignore[operator]
    text = f"{delta:+.3g}"
    relative = number.relative
    if relative is not None and math.isfinite(relative):
        text += f" ({relative * 100:+.3g} %)"
    text = text.replace("-", "−")
    return f"{text}, rounding" if number.negligible else text


# --------------------------------------------------------------------------------------------
# Markdown summary
# --------------------------------------------------------------------------------------------


def _md_code(text: str) -> str:
    text = str(text).replace("|", "\\|").replace("\n", " ")
    return f"``{text}``" if "`" in text else f"`{text}`"


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_what(change: FigureChange, limit: int = 5) -> str:
    if change.status in ("new", "removed"):
        return "**new figure**" if change.status == "new" else "**removed**"
    parts = [
        _md_code(s.key) + {"changed": "", "added": " (new)", "removed": " (gone)"}[s.kind]
        for s in change.sources[:limit]
    ]
    if len(change.sources) > limit:
        parts.append(f"and {len(change.sources) - limit} more")
    parts += [
        f"{s.key} {_md_code(short_text(s.before))} → {_md_code(short_text(s.after))}"
        for s in change.settings
        if s.key in ("profile", "seed", "params")
    ]
    if change.same_fingerprint:
        parts.append("same code, different output")
    return "<br>".join(parts) or "fingerprint changed"


def _md_numbers(change: FigureChange, limit: int = 3) -> str:
    if change.status != "changed":
        n = len(change.numbers)
        return f"{n} number{'s' if n != 1 else ''}" if n else "—"
    moved = change.moved
    if not moved:
        return f"none of {len(change.numbers)}"
    by_size = sorted(moved, key=_significance, reverse=True)
    shown = []
    for number in by_size[:limit]:
        before, after = format_pair(number.before, number.after)
        shown.append(f"`{number.key}` {before} → {after} ({format_change(number)})")
    more = f"<br>and {len(moved) - limit} more" if len(moved) > limit else ""
    tiny = sum(n.negligible for n in moved)
    note = f" ({tiny} by rounding)" if tiny else ""
    return (
        _md_cell(f"{len(moved)} of {len(change.numbers)}{note}: ")
        + "<br>".join(_md_cell(s) for s in shown)
        + more
    )


def _significance(number: NumberChange) -> float:
    """How much a moved number moved, for ordering (non-numeric and new ones first)."""
    relative = number.relative
    if relative is None or not math.isfinite(relative):
        return math.inf
    return abs(relative)


def render_markdown(comparison: Comparison, prose: list[ProseChange] | None = None) -> str:
    """The Markdown summary: a headline, one table row per figure, the moved numbers, and
    the paragraphs of the pages that read differently (``prose``: `prose_of` when None)."""
    lines = [f"### Figures: {comparison.headline()}", ""]
    if comparison.format_note():
        lines += [f"> {comparison.format_note()}", ""]
    prose = prose_of(comparison) if prose is None else prose
    if not comparison.changes:
        return "\n".join(lines + markdown_lines(prose)) + "\n"
    lines += ["| Figure | Chapter | What changed | Numbers moved |", "| --- | --- | --- | --- |"]
    for change in comparison.changes:
        lines.append(
            f"| {_md_code(change.name)} | {_md_cell(change.chapter)} | {_md_what(change)} "
            f"| {_md_numbers(change)} |"
        )
    for change in comparison.changes:
        if change.status != "changed" or not change.moved:
            continue
        lines += [
            "",
            f"<details><summary>{html.escape(change.name)}: {len(change.moved)} of "
            f"{len(change.numbers)} numbers moved</summary>",
            "",
            "| Number | Before | After | Change |",
            "| --- | ---: | ---: | ---: |",
        ]
        for number in change.moved:
            before, after = format_pair(number.before, number.after)
            lines.append(
                f"| {_md_code(number.key)} | {_md_cell(before)} | {_md_cell(after)} "
                f"| {_md_cell(format_change(number))} |"
            )
        lines += ["", "</details>"]
    lines += markdown_lines(prose)
    lines += [
        "",
        f"The images before and after, light and dark, are in `{REPORT_HTML}` next to this "
        "summary.",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# HTML report
# --------------------------------------------------------------------------------------------

_CSS = """
:root { color-scheme: light dark; --fg: #1f2328; --muted: #59636e; --bg: #ffffff;
  --panel: #f6f8fa; --line: #d1d9e0; --moved: #fff1c2; --moved-fg: #5c4400;
  --new: #1a7f37; --removed: #cf222e; --changed: #9a6700; --dark-panel: #1e2129; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e6edf3; --muted: #9198a1; --bg: #0d1117; --panel: #151b23;
    --line: #3d444d; --moved: #3d2e00; --moved-fg: #f2cc60; --new: #3fb950;
    --removed: #f85149; --changed: #d29922; }
}
* { box-sizing: border-box; }
body { margin: 0; padding: 24px clamp(12px, 3vw, 40px); background: var(--bg); color: var(--fg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
h1 { font-size: 1.5rem; margin: 0 0 4px; }
h2 { font-size: 1.2rem; margin: 0; }
code { font: 0.9em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.muted { color: var(--muted); }
table.toc td { vertical-align: top; }
table.toc td:nth-child(3) { color: var(--muted); }
section.figure { border: 1px solid var(--line); border-radius: 8px; margin: 24px 0;
  padding: 16px; }
.head { display: flex; gap: 12px; align-items: baseline; flex-wrap: wrap; }
.badge { font-size: 0.8rem; font-weight: 600; padding: 1px 8px; border-radius: 10px;
  border: 1px solid currentColor; text-transform: uppercase; letter-spacing: 0.03em; }
.badge.changed { color: var(--changed); } .badge.new { color: var(--new); }
.badge.removed { color: var(--removed); }
ul.why { margin: 8px 0; padding-left: 20px; }
table { border-collapse: collapse; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 12px 3px 0; text-align: left; }
td.num { text-align: right; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
tr.moved td { background: var(--moved); color: var(--moved-fg); font-weight: 600; }
tr.moved.rounding td { background: transparent; color: var(--muted); font-weight: 400; }
tr.moved td:first-child { box-shadow: inset 3px 0 0 var(--changed); padding-left: 6px; }
.images { display: grid; grid-template-columns: auto 1fr 1fr; gap: 8px; align-items: start;
  margin-top: 12px; }
.images .col { font-weight: 600; }
.images .row { writing-mode: vertical-rl; transform: rotate(180deg); color: var(--muted);
  align-self: center; }
.shot { border: 1px solid var(--line); border-radius: 6px; padding: 6px; min-height: 60px;
  display: flex; align-items: center; justify-content: center; }
.shot.light { background: #ffffff; color: #59636e; }
.shot.dark { background: var(--dark-panel); color: #9198a1; }
.shot img { display: block; max-width: 100%; height: auto; }
.shot .none { font-style: italic; padding: 24px 8px; }
.note { border-left: 3px solid var(--changed); padding: 4px 12px; background: var(--panel); }
.same { font-weight: 400; color: var(--muted); font-size: 0.85rem; }
section.prose h3 { font-size: 1rem; margin: 16px 0 4px; }
.para { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; margin: 8px 0; }
.para pre { white-space: pre-wrap; margin: 6px 0 0; font: 14px/1.5 ui-monospace, SFMono-Regular,
  Menlo, Consolas, monospace; }
del { color: var(--removed); text-decoration: line-through; }
ins { color: var(--new); text-decoration: none; font-weight: 700; }
del + ins { margin-left: 0.4em; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _data_uri(svg: bytes) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii")


def _html_why(change: FigureChange) -> str:
    items: list[str] = []
    if change.status == "new":
        items.append("<li>new figure: it did not exist at the revision</li>")
    elif change.status == "removed":
        items.append("<li>removed: it exists at the revision, not in the working tree</li>")
    kind_text = {
        "changed": "changed",
        "added": "new dependency",
        "removed": "no longer used",
    }
    for s in change.sources:
        items.append(
            f"<li><code>{_e(s.key)}</code> <span class='muted'>{kind_text[s.kind]}"
            f" ({_e(s.before or '—')} → {_e(s.after or '—')})</span></li>"
        )
    for s in change.settings:
        items.append(
            f"<li>{_e(s.key)}: <code>{_e(short_text(s.before))}</code> → "
            f"<code>{_e(short_text(s.after))}</code></li>"
        )
    if change.same_fingerprint:
        items.append(
            "<li>same code (same fingerprint), different output: a library update, "
            "non-deterministic code or a file edited by hand</li>"
        )
    return f"<ul class='why'>{''.join(items)}</ul>" if items else ""


def _html_number_rows(numbers: list[NumberChange], highlight: bool) -> str:
    rows = []
    for number in numbers:
        before, after = format_pair(number.before, number.after)
        row_class = ""
        if highlight:
            row_class = " class='moved rounding'" if number.negligible else " class='moved'"
        rows.append(
            f"<tr{row_class}><td><code>{_e(number.key)}</code></td>"
            f"<td class='num'>{_e(before)}</td><td class='num'>{_e(after)}</td>"
            f"<td class='num'>{_e(format_change(number) if highlight else '')}</td></tr>"
        )
    return (
        "<table><thead><tr><th>Number</th><th>Before</th><th>After</th><th>Change</th></tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _html_numbers(change: FigureChange) -> str:
    """The moved numbers highlighted; the others folded (a new or removed figure: all)."""
    if not change.numbers:
        return "<p class='muted'>No numbers.</p>"
    if change.status != "changed":
        return f"<p class='muted'>{len(change.numbers)} numbers</p>" + _html_number_rows(
            change.numbers, highlight=False
        )
    moved = change.moved
    still = [n for n in change.numbers if not n.changed]
    tiny = sum(n.negligible for n in moved)
    note = f" ({tiny} only by rounding)" if tiny else ""
    parts = [f"<p class='muted'>{len(moved)} of {len(change.numbers)} numbers moved{note}</p>"]
    if moved:
        parts.append(_html_number_rows(moved, highlight=True))
    if still:
        parts.append(
            f"<details><summary>{len(still)} unchanged number{'s' if len(still) != 1 else ''}"
            f"</summary>{_html_number_rows(still, highlight=False)}</details>"
        )
    return "".join(parts)


def _html_shot(svg: bytes | None, variant: str, alt: str, missing: str) -> str:
    if svg is None:
        return f"<div class='shot {variant}'><span class='none'>{_e(missing)}</span></div>"
    return f"<div class='shot {variant}'><img alt='{_e(alt)}' src='{_data_uri(svg)}' /></div>"


def _html_images(change: FigureChange, rev: str) -> str:
    cells = [
        "<div></div>",
        f"<div class='col'>Before <span class='muted'>({_e(rev)})</span></div>",
        "<div class='col'>After <span class='muted'>(working tree)</span></div>",
    ]
    for variant in VARIANTS:
        before, after = change.before.get(variant), change.after.get(variant)
        same = before is not None and before == after
        mark = " <span class='same'>(same)</span>" if same else ""
        cells.append(f"<div class='row'>{variant}{mark}</div>")
        cells.append(
            _html_shot(
                before,
                variant,
                f"{change.name}, {variant}, before",
                "not at the revision" if change.status == "new" else "file missing",
            )
        )
        cells.append(
            _html_shot(
                after,
                variant,
                f"{change.name}, {variant}, after",
                "removed" if change.status == "removed" else "file missing",
            )
        )
    return f"<div class='images'>{''.join(cells)}</div>"


def _moved_text(change: FigureChange) -> str:
    if change.status != "changed":
        return f"{len(change.numbers)} numbers"
    tiny = sum(n.negligible for n in change.moved)
    note = f" ({tiny} by rounding)" if tiny else ""
    return f"{len(change.moved)} of {len(change.numbers)}{note}"


def render_html(comparison: Comparison, prose: list[ProseChange] | None = None) -> str:
    """The report as one self-contained HTML page (images inlined as data URIs, no script);
    it ends with the paragraphs of the pages that read differently (``prose``: `prose_of`
    when None)."""
    title = f"Figures against {comparison.rev}"
    toc = "".join(
        f"<tr><td><a href='#{_e(c.name)}'><code>{_e(c.name)}</code></a></td>"
        f"<td><span class='badge {c.status}'>{c.status}</span></td>"
        f"<td>{_e(c.reason(limit=3))}</td>"
        f"<td class='num'>{_e(_moved_text(c))}</td></tr>"
        for c in comparison.changes
    )
    sections = []
    for change in comparison.changes:
        sections.append(
            f"<section class='figure' id='{_e(change.name)}'>"
            f"<div class='head'><h2><code>{_e(change.name)}</code></h2>"
            f"<span class='badge {change.status}'>{change.status}</span>"
            f"<span class='muted'>chapter {_e(change.chapter or '—')}</span></div>"
            f"{_html_why(change)}{_html_numbers(change)}"
            f"{_html_images(change, comparison.rev)}</section>"
        )
    body = (
        f"<h1>{_e(title)}</h1>"
        f"<p class='muted'>{_e(comparison.headline())}. Working tree "
        f"<code>{_e(comparison.figures_dir)}</code> against commit "
        f"<code>{_e(comparison.commit)}</code>.</p>"
        + (
            f"<p class='note'>{_e(comparison.format_note())}</p>"
            if comparison.format_note()
            else ""
        )
        + (
            "<nav><table class='toc'><thead><tr><th>Figure</th><th>Status</th>"
            f"<th>Why</th><th>Numbers moved</th></tr></thead><tbody>{toc}</tbody></table></nav>"
            if toc
            else ""
        )
        + "".join(sections)
        + html_section(prose_of(comparison) if prose is None else prose)
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8' />"
        "<meta name='viewport' content='width=device-width, initial-scale=1' />"
        f"<meta name='color-scheme' content='light dark' /><title>{_e(title)}</title>"
        f"<style>{_CSS}</style></head><body>{body}</body></html>\n"
    )


def write_report(
    comparison: Comparison, out_dir: Path, prose: list[ProseChange] | None = None
) -> tuple[Path, Path]:
    """Write ``report.html`` and ``summary.md`` into ``out_dir``; return their paths
    (``prose``: the page text that reads differently, `prose_of` when None)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CompareError(f"{out_dir} exists and is not a directory; allowed: a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, md_path = out_dir / REPORT_HTML, out_dir / SUMMARY_MD
    prose = prose_of(comparison) if prose is None else prose
    html_path.write_text(render_html(comparison, prose), encoding="utf-8")
    md_path.write_text(render_markdown(comparison, prose), encoding="utf-8")
    return html_path, md_path


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, project: Project) -> int:
    """Write the report asked for by ``args.compare`` (and ``args.compare_out``).

    Returns:
        0 when written (or when ``args.compare`` is None: nothing to do), 2 when the
        comparison cannot be made (the reason goes to stderr, nothing is written).
    """
    rev = getattr(args, "compare", None)
    if rev is None:
        return 0
    out = getattr(args, "compare_out", None) or project.root / DEFAULT_OUT
    try:
        comparison = compare(project, rev)
        prose = prose_of(comparison)
        html_path, md_path = write_report(comparison, Path(out), prose)
    except PipelineError as err:
        print(f"compare: error: {err}", file=sys.stderr)
        return 2
    print(comparison.headline())
    if comparison.format_note():
        print(comparison.format_note())
    for change in comparison.changes:
        print(f"  {change.status:8} {change.name}: {change.reason(limit=4)}")
    print(f"page text: {prose_headline(prose)}")
    for page in sorted({change.page for change in prose}):
        print(f"  {page}: {sum(change.page == page for change in prose)}")
    print(f"report: {project.relative(html_path)}\nsummary: {project.relative(md_path)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m block4.compare`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m block4.compare",
        description="Report every figure of docs/figures that differs from git revision REV: "
        "the changed functions, the numbers before -> after and the images side by side, "
        "light and dark; and every paragraph of the pages that reads differently, its "
        "changed words marked. Works offline; reads the old files with git show.",
        epilog="exit status: 0 report written, 2 bad input (not a git repository, unknown "
        "revision, no manifest at REV).",
    )
    parser.add_argument("rev", metavar="REV", help="a commit, branch or tag, e.g. main or HEAD~1")
    parser.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        default=None,
        help=f"where to write {REPORT_HTML} and {SUMMARY_MD} (default: {DEFAULT_OUT})",
    )
    return parser


def main(argv: Sequence[str] | None = None, *, root: Path | None = None) -> int:
    """Run ``python -m block4.compare``; returns the exit status."""
    args = build_parser().parse_args(argv)
    project = Project(Path(root or Path.cwd()))
    return run(argparse.Namespace(compare=args.rev, compare_out=args.out), project)


if __name__ == "__main__":
    sys.exit(main())
