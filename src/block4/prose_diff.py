"""What a change did to the pages' text: every paragraph a reader sees differently.

The pages quote figure numbers through ``{{ figure.number }}`` placeholders, so a re-made
figure rewrites the sentences around them by itself. The numbers are right by construction;
the words around them are not: "three modes, as in the data" stays on the page when a re-made
mixture has one. `prose_changes` renders every page twice, as it was at a git revision (its
text with that revision's manifest) and as it is now, and returns each paragraph that reads
differently, with the words that changed, so that exactly those sentences get re-read.

Paragraphs are the blocks between blank lines of the rendered Markdown; the figure blocks the
site puts in place of ``![...](figures/x.svg)`` are left out (their provenance line changes
with every re-make). Two paragraphs that differ only in line breaks or spaces read the same.
Paragraphs are paired in page order (`difflib`); where a run of edits adds or removes
paragraphs, each is paired with the most similar one, so an added paragraph shows up as new
rather than shifting every pair after it. `markdown_lines` and `html_section` are the list's part of the reports of
`block4.compare`. Nothing here imports torch or matplotlib.
"""

from __future__ import annotations

import difflib
import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from block4.figure_diff import Comparison
from block4.site_render import render_page

__all__ = [
    "ProseChange",
    "html_section",
    "markdown_lines",
    "page_paragraphs",
    "prose_changes",
    "prose_headline",
    "prose_of",
    "word_diff",
]

_BLANK_LINES = re.compile(r"\n[ \t]*\n")
_TOKENS = re.compile(r"\s+|[^\s]+")
_FIGURE_BLOCK = re.compile(r"\A\s*<figure\b.*</figure>\s*\Z", re.DOTALL)

#: Paragraphs at least this similar (`difflib` ratio of their words) are one paragraph edited.
SAME_PARAGRAPH = 0.5


@dataclass(frozen=True)
class _Status:
    """What `block4.site_render.render_page` needs of a figure: its manifest entry."""

    entry: dict[str, Any] | None


@dataclass(frozen=True)
class ProseChange:
    """One paragraph of a page that reads differently.

    Attributes:
        page: the page, relative to the docs directory (``probabilistic-heads.md``).
        before: the paragraph at the revision (``None``: it is new).
        after: the paragraph now (``None``: it was removed).
    """

    page: str
    before: str | None
    after: str | None

    @property
    def status(self) -> str:
        """``changed``, ``new`` or ``removed``."""
        if self.before is None:
            return "new"
        return "removed" if self.after is None else "changed"

    def words(self) -> list[tuple[str, str]]:
        """The paragraph as ``(kind, text)`` pieces: ``same``, ``old`` or ``new`` (see
        `word_diff`)."""
        return word_diff(self.before or "", self.after or "")


def _usable(entry: Any) -> dict[str, Any] | None:
    """A manifest entry the pages can take numbers from, else None (shown as missing)."""
    if isinstance(entry, dict) and isinstance(entry.get("numbers"), dict):
        return entry
    return None


def page_paragraphs(markdown: str, entries: Mapping[str, Any]) -> list[str]:
    """The paragraphs of a page as a reader sees its text: placeholders filled from the
    manifest ``entries`` (a figure's ``numbers``; a damaged entry counts as never made),
    figure blocks left out, line endings made ``\\n``."""
    status = {name: _Status(_usable(entry)) for name, entry in entries.items()}
    text, _report = render_page(markdown.replace("\r\n", "\n").replace("\r", "\n"), status)
    blocks = (block.strip("\n") for block in _BLANK_LINES.split(text))
    return [b for b in blocks if b.strip() and not _FIGURE_BLOCK.match(b)]


def _words(paragraph: str) -> str:
    return " ".join(paragraph.split())


def _pair(page: str, olds: list[str], news: list[str]) -> list[ProseChange]:
    """Changes for a run of edited paragraphs: as many old as new ones are paired in order;
    otherwise each new one is paired with the most similar old one left (if similar
    enough), and the others are new or removed."""
    if len(olds) == len(news):
        return [ProseChange(page, old, new) for old, new in zip(olds, news, strict=True)]
    changes: list[ProseChange] = []
    start = 0  # old paragraphs before this one are paired or passed
    for new in news:
        best, best_ratio = None, SAME_PARAGRAPH
        for i in range(start, len(olds)):
            matcher = difflib.SequenceMatcher(None, olds[i].split(), new.split(), autojunk=False)
            if matcher.quick_ratio() >= best_ratio and matcher.ratio() >= best_ratio:
                best, best_ratio = i, matcher.ratio()
        if best is None:
            changes.append(ProseChange(page, None, new))
            continue
        changes += [ProseChange(page, old, None) for old in olds[start:best]]
        changes.append(ProseChange(page, olds[best], new))
        start = best + 1
    changes += [ProseChange(page, old, None) for old in olds[start:]]
    return changes


def prose_changes(
    pages: Mapping[str, tuple[str | None, str | None]],
    entries_before: Mapping[str, Any],
    entries_after: Mapping[str, Any],
) -> list[ProseChange]:
    """Every paragraph that reads differently, page by page (in page order).

    Args:
        pages: each page's Markdown ``(at the revision, now)``, by its path relative to the
            docs directory; ``None`` where the page did not exist.
        entries_before: the manifest's figure entries at the revision.
        entries_after: the manifest's figure entries now.
    """
    changes: list[ProseChange] = []
    for page in sorted(pages):
        old_md, new_md = pages[page]
        old = page_paragraphs(old_md, entries_before) if old_md is not None else []
        new = page_paragraphs(new_md, entries_after) if new_md is not None else []
        keys_old, keys_new = [_words(p) for p in old], [_words(p) for p in new]
        matcher = difflib.SequenceMatcher(None, keys_old, keys_new, autojunk=False)
        for op, i1, i2, j1, j2 in matcher.get_opcodes():
            if op != "equal":
                changes += _pair(page, old[i1:i2], new[j1:j2])
    return changes


def _token_diff(before: str, after: str) -> list[tuple[str, str]]:
    a, b = _TOKENS.findall(before), _TOKENS.findall(after)
    pieces: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            pieces.append(("same", "".join(a[i1:i2])))
            continue
        if i2 > i1:
            pieces.append(("old", "".join(a[i1:i2])))
        if j2 > j1:
            pieces.append(("new", "".join(b[j1:j2])))
    return pieces


def word_diff(before: str, after: str) -> list[tuple[str, str]]:
    """``after`` as pieces ``(kind, text)``: ``same`` text, ``old`` text that was replaced
    or removed (from ``before``) and ``new`` text that replaced it or was added, in reading
    order. Joining the ``same`` and ``new`` pieces gives ``after``, the ``same`` and ``old``
    ones ``before``.

    Lines are matched first and words only within a changed line, so a long table costs
    time in proportion to its rows, not to their square.
    """
    a, b = before.splitlines(keepends=True), after.splitlines(keepends=True)
    pieces: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            pieces.append(("same", "".join(a[i1:i2])))
        elif op == "replace" and i2 - i1 == j2 - j1:  # line by line
            for old, new in zip(a[i1:i2], b[j1:j2], strict=True):
                pieces += _token_diff(old, new)
        else:
            pieces += _token_diff("".join(a[i1:i2]), "".join(b[j1:j2]))
    merged: list[tuple[str, str]] = []
    for kind, text in pieces:  # neighbours of one kind become one piece
        if merged and merged[-1][0] == kind:
            merged[-1] = (kind, merged[-1][1] + text)
        elif text:
            merged.append((kind, text))
    return merged


# --------------------------------------------------------------------------------------------
# The list in the reports of block4.compare
# --------------------------------------------------------------------------------------------


def prose_of(comparison: Comparison) -> list[ProseChange]:
    """The paragraphs of the pages that read differently at ``comparison.rev`` and now
    (`prose_changes` of its pages and manifest entries)."""
    return prose_changes(comparison.pages, *comparison.entries)


def prose_headline(prose: list[ProseChange]) -> str:
    """One line: how many paragraphs on how many pages read differently."""
    if not prose:
        return "no paragraph of the pages reads differently"
    pages = len({change.page for change in prose})
    n = len(prose)
    return (
        f"{n} paragraph{'s' * (n != 1)} on {pages} page{'s' * (pages != 1)} "
        f"read{'s' * (n == 1)} differently"
    )


def _diff_lines(change: ProseChange) -> list[str]:
    """The paragraph as the lines of a unified diff: ``-`` at the revision, ``+`` now."""
    old = (change.before or "").splitlines()
    new = (change.after or "").splitlines()
    lines = [f"@@ {change.status} @@"]
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if op == "equal":
            lines += [f"  {line}".rstrip() for line in old[i1:i2]]
            continue
        lines += [f"- {line}".rstrip() for line in old[i1:i2]]
        lines += [f"+ {line}".rstrip() for line in new[j1:j2]]
    return lines


def markdown_lines(prose: list[ProseChange]) -> list[str]:
    """The Markdown part of a report: per page, the changed paragraphs as a ``diff`` code
    block (lines of the old text ``-``, of the new ``+``), where the page's own Markdown and
    HTML stay text. No lines when ``prose`` is empty."""
    if not prose:
        return []
    lines = ["", f"### Page text: {prose_headline(prose)}"]
    for page in sorted({change.page for change in prose}):
        here = [change for change in prose if change.page == page]
        body = [line for change in here for line in _diff_lines(change)]
        longest = max((len(m) for line in body for m in re.findall(r"`+", line)), default=0)
        fence = "`" * max(3, longest + 1)
        summary = f"{html.escape(page)}: {len(here)} paragraph{'s' * (len(here) != 1)}"
        lines += ["", f"<details><summary>{summary}</summary>", "", f"{fence}diff", *body]
        lines += [fence, "", "</details>"]
    return lines


def html_section(prose: list[ProseChange]) -> str:
    """The HTML part of a report: the changed paragraphs, page by page, the old words in
    ``<del>``, the new ones in ``<ins>`` (an empty string when ``prose`` is empty)."""
    if not prose:
        return ""
    parts = [f"<section class='prose' id='page-text'><h2>Page text</h2>"
             f"<p class='muted'>{html.escape(prose_headline(prose))}: re-read the words "
             "around the numbers that moved.</p>"]  # fmt: skip
    for page in sorted({change.page for change in prose}):
        parts.append(f"<h3><code>{html.escape(page)}</code></h3>")
        for change in (c for c in prose if c.page == page):
            text = "".join(
                html.escape(piece) if kind == "same"
                else f"<del>{html.escape(piece)}</del>" if kind == "old"
                else f"<ins>{html.escape(piece)}</ins>"
                for kind, piece in change.words()
            )  # fmt: skip
            parts.append(
                f"<div class='para {change.status}'><span class='badge {change.status}'>"
                f"{change.status}</span><pre>{text}</pre></div>"
            )
    return "".join(parts) + "</section>"
