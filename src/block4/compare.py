"""What a change did to the figures: every figure that differs from a git revision.

``python -m block4.compare REV`` compares the figures of the working tree
(``docs/figures/manifest.json`` and its SVG files) with those committed at ``REV`` (read with
``git show``; it works offline and needs no server) and writes two files:

- ``report.html``: one self-contained page (the images are inlined, it opens from disk and
  follows the reader's light or dark setting) with, for each figure that differs, the sources
  whose digest changed, the numbers before -> after (the ones that moved highlighted, with
  their relative change) and the old and new images side by side, light and dark;
- ``summary.md``: the same in a few lines of Markdown, for a CI job summary.

A figure *differs* when its fingerprint, its numbers or its image files differ from ``REV``;
a figure absent at ``REV`` is shown as *new*, one absent now as *removed*; figures that are
the same are left out. Which sources changed is read from the manifest entries' ``sources``
maps, whatever their keys are (source files such as ``block4/figures/likelihood.py``, or
functions such as ``block4.figures.likelihood:decision_under_cost``): every key whose digest
differs, appeared or disappeared is named.

The same report from the figure command: :func:`add_arguments` adds ``--compare REV`` and
``--compare-out DIR`` to an argument parser, :func:`run` writes the report when
``--compare`` was given. Nothing here imports torch or matplotlib.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from block4.pipeline import PipelineError, Project, load_manifest

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
    "render_html",
    "render_markdown",
    "run",
    "write_report",
]

#: File names of the report inside the output directory.
REPORT_HTML = "report.html"
SUMMARY_MD = "summary.md"

#: Where the report goes when no directory is given (relative to the repository root;
#: ``.cache/`` is ignored by git and safe to delete).
DEFAULT_OUT = Path(".cache") / "compare"

#: Image variants, in the order they are shown.
VARIANTS = ("light", "dark")

#: Manifest fields shown when they differ (besides the sources and the numbers): they explain
#: why a figure was re-made, or why the same code gave other numbers.
SETTINGS = ("profile", "seed", "params", "module", "function", "chapter", "device", "cpu_threads")

Number = bool | int | float | str

#: Relative changes up to this size are marked as rounding (e.g. another summation order).
ROUNDING = 1e-9


class CompareError(PipelineError):
    """The comparison cannot be made: no git, an unknown revision, no manifest at it."""


# --------------------------------------------------------------------------------------------
# What differs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceChange:
    """One key of the manifest's ``sources`` map whose digest differs.

    Attributes:
        key: a source file (``block4/figures/likelihood.py``) or a function
            (``block4.figures.likelihood:decision_under_cost``), as the manifest names it.
        before: its digest at the revision (None: the figure did not depend on it then).
        after: its digest now (None: the figure no longer depends on it).
    """

    key: str
    before: str | None
    after: str | None

    @property
    def kind(self) -> str:
        """``changed``, ``added`` (a new dependency) or ``removed`` (no longer used)."""
        if self.before is None:
            return "added"
        if self.after is None:
            return "removed"
        return "changed"


@dataclass(frozen=True)
class NumberChange:
    """One number of a figure, before and after (None: absent on that side)."""

    key: str
    before: Number | None
    after: Number | None

    @property
    def changed(self) -> bool:
        # True == 1 in Python, yet a flag that became a count did change.
        kinds_differ = isinstance(self.before, bool) != isinstance(self.after, bool)
        return self.before != self.after or kinds_differ

    @property
    def negligible(self) -> bool:
        """A numeric change at the level of floating-point rounding (relative <= 1e-9)."""
        if not (self.changed and _is_numeric(self.before) and _is_numeric(self.after)):
            return False
        scale = max(abs(self.before), abs(self.after))  # type: ignore[arg-type]
        return abs(self.after - self.before) <= ROUNDING * scale  # type: ignore[operator]

    @property
    def relative(self) -> float | None:
        """``(after - before) / |before|`` for two numbers with ``before != 0``, else None."""
        if not (_is_numeric(self.before) and _is_numeric(self.after)) or self.before == 0:
            return None
        return (self.after - self.before) / abs(self.before)  # type: ignore[operator]


@dataclass(frozen=True)
class Setting:
    """A manifest field other than sources and numbers that differs (profile, seed, ...)."""

    key: str
    before: Any
    after: Any


@dataclass
class FigureChange:
    """A figure that differs from the revision.

    Attributes:
        name: the figure's name.
        status: ``changed``, ``new`` (absent at the revision) or ``removed`` (absent now).
        chapter: the chapter it belongs to.
        sources: the sources whose digest changed (empty for new and removed figures).
        numbers: every number of the figure on either side, in key order.
        settings: other manifest fields that differ (profile, seed, params, device, versions).
        before: the SVG bytes at the revision by variant (``light``, ``dark``); None where
            the file is absent.
        after: the SVG bytes now by variant; None where the file is absent.
        same_fingerprint: True when the code is the same and only the output differs (a
            library update, a non-deterministic figure or a file edited by hand).
    """

    name: str
    status: str
    chapter: str = ""
    sources: list[SourceChange] = field(default_factory=list)
    numbers: list[NumberChange] = field(default_factory=list)
    settings: list[Setting] = field(default_factory=list)
    before: dict[str, bytes | None] = field(default_factory=dict)
    after: dict[str, bytes | None] = field(default_factory=dict)
    same_fingerprint: bool = False

    @property
    def moved(self) -> list[NumberChange]:
        """The numbers whose value differs."""
        return [n for n in self.numbers if n.changed]

    def reason(self, limit: int | None = None) -> str:
        """One line: why the figure differs (naming at most ``limit`` sources)."""
        if self.status == "new":
            return "new figure"
        if self.status == "removed":
            return "removed"
        parts = []
        if self.sources:
            shown = self.sources if limit is None else self.sources[:limit]
            more = len(self.sources) - len(shown)
            parts.append(
                ", ".join(_source_text(s) for s in shown) + (f" and {more} more" if more else "")
            )
        parts += [
            f"{s.key} {_short(s.before)} -> {_short(s.after)}"
            for s in self.settings
            if s.key in ("profile", "seed", "params")
        ]
        if self.same_fingerprint:
            versions = [s for s in self.settings if s.key.startswith("versions.")]
            detail = "; ".join(
                f"{s.key.split('.', 1)[1]} {_short(s.before)} -> {_short(s.after)}"
                for s in versions
            )
            parts.append("same code, different output" + (f" ({detail})" if detail else ""))
        return "; ".join(parts) or "fingerprint changed"


@dataclass
class Comparison:
    """The figures of the working tree against those of a git revision.

    Attributes:
        rev: the revision as given (``main``, ``HEAD~1``, ``origin/main``).
        commit: the commit it names (full hash).
        figures_dir: the figures directory, relative to the repository root.
        changes: the figures that differ: changed, then new, then removed, by name.
        unchanged: how many figures are the same on both sides.
        formats: the manifest format at the revision and now; when they differ, the
            fingerprint recipe changed, so every figure's digests may differ.
    """

    rev: str
    commit: str
    figures_dir: str
    changes: list[FigureChange]
    unchanged: int
    formats: tuple[Any, Any] = (None, None)

    def format_note(self) -> str:
        """A sentence when the fingerprint recipe changed between the two sides, else ''."""
        before, after = self.formats
        if before == after:
            return ""
        return (
            f"The fingerprint recipe changed (manifest format {before} -> {after}): digests "
            "are computed differently, so sources may be listed although their code is the same."
        )

    def by_status(self, status: str) -> list[FigureChange]:
        return [c for c in self.changes if c.status == status]

    def headline(self) -> str:
        """One line: how many figures differ from the revision, and how."""
        against = f"{self.rev} ({self.commit[:10]})"
        if not self.changes:
            return f"no figure differs from {against}; {self.unchanged} unchanged"
        counts = ", ".join(
            f"{len(self.by_status(s))} {s}"
            for s in ("changed", "new", "removed")
            if self.by_status(s)
        )
        n = len(self.changes)
        return (
            f"{n} figure{'s' if n != 1 else ''} differ{'s' if n == 1 else ''} from {against}: "
            f"{counts}; {self.unchanged} unchanged"
        )


def _is_numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _digests_differ(before: str, after: str) -> bool:
    # Digests may be stored at different lengths (a short prefix, or the whole sha256).
    n = min(len(before), len(after))
    return before[:n] != after[:n] or (n == 0 and before != after)


def _source_text(change: SourceChange) -> str:
    if change.kind == "added":
        return f"{change.key} (new dependency)"
    if change.kind == "removed":
        return f"{change.key} (no longer used)"
    return change.key


def _short(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return "(none)" if value is None else str(value)


def diff_entries(
    name: str, old: dict[str, Any] | None, new: dict[str, Any] | None
) -> FigureChange | None:
    """What differs between two manifest entries of figure ``name`` (images not read).

    Args:
        name: the figure's name.
        old: its entry at the revision, or None when it did not exist there.
        new: its entry now, or None when it has been removed.

    Returns:
        The change, or None when the fingerprint, the numbers and the image digests are all
        the same (a figure re-made with the same result is not a change).
    """
    if old is None and new is None:
        return None
    old_e, new_e = old or {}, new or {}
    status = "new" if old is None else "removed" if new is None else "changed"
    old_numbers: dict[str, Any] = old_e.get("numbers") or {}
    new_numbers: dict[str, Any] = new_e.get("numbers") or {}
    numbers = [
        NumberChange(key, old_numbers.get(key), new_numbers.get(key))
        for key in sorted(set(old_numbers) | set(new_numbers))
    ]
    change = FigureChange(
        name=name, status=status, chapter=str(new_e.get("chapter") or old_e.get("chapter") or "")
    )
    change.numbers = numbers
    if status != "changed":
        return change
    same_fingerprint = old_e.get("fingerprint") == new_e.get("fingerprint")
    same_numbers = not any(n.changed for n in numbers)
    same_files = old_e.get("sha256") == new_e.get("sha256") and old_e.get("files") == new_e.get(
        "files"
    )
    if same_fingerprint and same_numbers and same_files:
        return None
    old_sources: dict[str, str] = old_e.get("sources") or {}
    new_sources: dict[str, str] = new_e.get("sources") or {}
    change.sources = [
        SourceChange(key, old_sources.get(key), new_sources.get(key))
        for key in sorted(set(old_sources) | set(new_sources))
        if key not in old_sources
        or key not in new_sources
        or _digests_differ(str(old_sources[key]), str(new_sources[key]))
    ]
    settings = [
        Setting(key, old_e.get(key), new_e.get(key))
        for key in SETTINGS
        if old_e.get(key) != new_e.get(key)
    ]
    old_versions: dict[str, Any] = old_e.get("versions") or {}
    new_versions: dict[str, Any] = new_e.get("versions") or {}
    settings += [
        Setting(f"versions.{lib}", old_versions.get(lib), new_versions.get(lib))
        for lib in sorted(set(old_versions) | set(new_versions))
        if old_versions.get(lib) != new_versions.get(lib)
    ]
    change.settings = settings
    change.same_fingerprint = same_fingerprint
    return change


# --------------------------------------------------------------------------------------------
# Reading the revision with git
# --------------------------------------------------------------------------------------------


def _git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, check=False)
    except FileNotFoundError:
        raise CompareError(
            "git is not installed; the comparison reads the figures of a revision with git show"
        ) from None
    if check and proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip()
        raise CompareError(f"git {' '.join(args)} failed: {message}")
    return proc


def _repository_root(root: Path) -> Path:
    proc = _git(root, "rev-parse", "--show-toplevel", check=False)
    if proc.returncode != 0:
        raise CompareError(
            f"{root} is not inside a git repository; the comparison reads the figures of a "
            "revision with git show (run it in a clone of the project)"
        )
    return Path(proc.stdout.decode().strip()).resolve()


def _resolve(root: Path, rev: str) -> str:
    if not rev or rev.startswith("-") or any(c.isspace() for c in rev):
        raise CompareError(
            f"{rev!r} is not a revision; allowed: a commit, branch or tag such as HEAD, "
            "HEAD~1, main or origin/main"
        )
    proc = _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    if proc.returncode != 0:
        raise CompareError(
            f"unknown revision {rev!r}; allowed: a commit, branch or tag of this repository "
            "such as HEAD, HEAD~1, main or origin/main (a shallow clone lacks older commits "
            "and other branches: fetch them, e.g. with fetch-depth: 0 in actions/checkout)"
        )
    return proc.stdout.decode().strip()


def _show(repo: Path, commit: str, path: str) -> bytes | None:
    """The bytes of ``path`` (relative to the repository root) at ``commit``, or None."""
    spec = f"{commit}:{path}"
    if _git(repo, "cat-file", "-e", spec, check=False).returncode != 0:
        return None
    return _git(repo, "show", spec).stdout


def _figures_dir_in_repo(project: Project, repo: Path) -> PurePosixPath:
    """Where the project's figures live relative to the repository root."""
    for directory in (project.out_dir, project.root / "docs" / "figures"):
        try:
            return PurePosixPath(Path(directory).resolve().relative_to(repo).as_posix())
        except ValueError:  # e.g. --out-dir outside the repository: compare with docs/figures
            continue
    raise CompareError(f"the project at {project.root} is not inside the repository {repo}")


def compare(project: Project, rev: str) -> Comparison:
    """Compare the working tree's figures of ``project`` with those committed at ``rev``.

    The working tree side is ``project.manifest_path`` and the files next to it; the
    revision side is the same path at ``rev`` (``docs/figures`` when the project's figures
    directory lies outside the repository).

    Raises:
        CompareError: git is missing, ``project.root`` is not in a git repository, ``rev`` is
            unknown, or there is no readable manifest at ``rev`` or in the working tree.
        PipelineError: the working tree's manifest is not valid JSON.
    """
    root = project.root
    if not root.is_dir():
        raise CompareError(f"{root} is not a directory")
    repo = _repository_root(root)
    commit = _resolve(repo, rev)
    figures_dir = _figures_dir_in_repo(project, repo)
    manifest_rel = str(figures_dir / "manifest.json")
    raw = _show(repo, commit, manifest_rel)
    if raw is None:
        raise CompareError(
            f"{rev} ({commit[:10]}) has no {manifest_rel}; allowed: a revision at which the "
            "figures and their manifest were committed"
        )
    try:
        old_manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CompareError(f"{manifest_rel} at {rev} is not valid JSON ({err})") from None
    if not isinstance(old_manifest, dict) or not isinstance(old_manifest.get("figures"), dict):
        raise CompareError(f"{manifest_rel} at {rev} has no 'figures' table")
    if not project.manifest_path.is_file():
        raise CompareError(
            f"the working tree has no {project.relative(project.manifest_path)}; run the "
            "comparison from the repository root, after making the figures"
        )
    new_manifest = load_manifest(project)
    old_entries: dict[str, Any] = old_manifest["figures"]
    new_entries: dict[str, Any] = new_manifest["figures"]

    changes: list[FigureChange] = []
    unchanged = 0
    for name in sorted(set(old_entries) | set(new_entries)):
        change = diff_entries(name, old_entries.get(name), new_entries.get(name))
        if change is None:
            unchanged += 1
            continue
        old_files = (old_entries.get(name) or {}).get("files") or {}
        new_files = (new_entries.get(name) or {}).get("files") or {}
        for variant in VARIANTS:
            if name in old_entries:
                old_file = old_files.get(variant)
                change.before[variant] = (
                    _show(repo, commit, str(figures_dir / old_file)) if old_file else None
                )
            if name in new_entries:
                new_file = new_files.get(variant)
                path = project.out_dir / new_file if new_file else None
                change.after[variant] = path.read_bytes() if path and path.is_file() else None
        changes.append(change)
    order = {"changed": 0, "new": 1, "removed": 2}
    changes.sort(key=lambda c: (order[c.status], c.name))
    formats = (old_manifest.get("format"), new_manifest.get("format"))
    return Comparison(rev, commit, str(figures_dir), changes, unchanged, formats)


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
    if not (_is_numeric(number.before) and _is_numeric(number.after)):
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
        f"{s.key} {_md_code(_short(s.before))} → {_md_code(_short(s.after))}"
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


def render_markdown(comparison: Comparison) -> str:
    """The Markdown summary: a headline, one table row per figure, the moved numbers."""
    lines = [f"### Figures: {comparison.headline()}", ""]
    if comparison.format_note():
        lines += [f"> {comparison.format_note()}", ""]
    if not comparison.changes:
        return "\n".join(lines)
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
            f"<li>{_e(s.key)}: <code>{_e(_short(s.before))}</code> → "
            f"<code>{_e(_short(s.after))}</code></li>"
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


def render_html(comparison: Comparison) -> str:
    """The report as one self-contained HTML page (images inlined as data URIs, no script)."""
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
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8' />"
        "<meta name='viewport' content='width=device-width, initial-scale=1' />"
        f"<meta name='color-scheme' content='light dark' /><title>{_e(title)}</title>"
        f"<style>{_CSS}</style></head><body>{body}</body></html>\n"
    )


def write_report(comparison: Comparison, out_dir: Path) -> tuple[Path, Path]:
    """Write ``report.html`` and ``summary.md`` into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CompareError(f"{out_dir} exists and is not a directory; allowed: a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, md_path = out_dir / REPORT_HTML, out_dir / SUMMARY_MD
    html_path.write_text(render_html(comparison), encoding="utf-8")
    md_path.write_text(render_markdown(comparison), encoding="utf-8")
    return html_path, md_path


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--compare REV`` and ``--compare-out DIR`` to ``parser`` (e.g. make_figures')."""
    parser.add_argument(
        "--compare",
        metavar="REV",
        default=None,
        help="write a report of every figure that differs from git revision REV (changed "
        "functions, numbers before -> after, images side by side); see python -m "
        "block4.compare --help",
    )
    parser.add_argument(
        "--compare-out",
        metavar="DIR",
        type=Path,
        default=None,
        help=f"where --compare writes {REPORT_HTML} and {SUMMARY_MD} (default: {DEFAULT_OUT})",
    )


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
        html_path, md_path = write_report(comparison, Path(out))
    except PipelineError as err:
        print(f"compare: error: {err}", file=sys.stderr)
        return 2
    print(comparison.headline())
    if comparison.format_note():
        print(comparison.format_note())
    for change in comparison.changes:
        print(f"  {change.status:8} {change.name}: {change.reason(limit=4)}")
    print(f"report: {project.relative(html_path)}\nsummary: {project.relative(md_path)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m block4.compare`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m block4.compare",
        description="Report every figure of docs/figures that differs from git revision REV: "
        "the changed functions, the numbers before -> after and the images side by side, "
        "light and dark. Works offline; reads the old files with git show.",
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
