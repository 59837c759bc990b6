"""What a change did to the pages' text: every paragraph a reader sees differently.

The pages quote figure numbers through ``{{ figure.number }}`` placeholders, so a re-made
figure rewrites the sentences around them by itself. The numbers are right by construction;
the words around them are not: "three modes, as in the data" stays on the page when a re-made
mixture has one. `prose_changes` renders every page twice, as it was at a git revision (its
text with that revision's manifest) and as it is now, and returns each paragraph that reads
differently, with the words that changed, so that exactly those sentences get re-read.

Paragraphs are the blocks between blank lines of the rendered Markdown; figure blocks are left
out (their provenance line changes with every re-make, and their captions are not numbers).
Paragraphs are paired in page order (`difflib`), so a paragraph added or removed with the text
shows up as new or removed. `markdown_lines` and `html_section` are the list's part of the
reports of `block4.compare`. Nothing here imports torch or matplotlib.
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


def page_paragraphs(markdown: str, entries: Mapping[str, Any]) -> list[str]:
    """The paragraphs of a page as a reader sees its text: placeholders filled from the
    manifest ``entries`` (a figure's ``numbers``), figure blocks left out."""
    status = {name: _Status(entry) for name, entry in entries.items()}
    text, _report = render_page(markdown, status)
    blocks = (block.strip("\n") for block in _BLANK_LINES.split(text))
    return [b for b in blocks if b.strip() and "<figure" not in b]


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
        matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
        for op, i1, i2, j1, j2 in matcher.get_opcodes():
            if op == "equal":
                continue
            olds, news = old[i1:i2], new[j1:j2]
            paired = min(len(olds), len(news))
            changes += [ProseChange(page, a, b) for a, b in zip(olds, news, strict=False)]
            changes += [ProseChange(page, a, None) for a in olds[paired:]]
            changes += [ProseChange(page, None, b) for b in news[paired:]]
    return changes


def word_diff(before: str, after: str) -> list[tuple[str, str]]:
    """``after`` as pieces ``(kind, text)``: ``same`` text, ``old`` text that was replaced
    or removed (from ``before``) and ``new`` text that replaced it or was added, in reading
    order. Joining the ``same`` and ``new`` pieces gives ``after``, the ``same`` and ``old``
    ones ``before``."""
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
    merged: list[tuple[str, str]] = []
    for kind, text in pieces:  # neighbours of one kind become one piece
        if merged and merged[-1][0] == kind:
            merged[-1] = (kind, merged[-1][1] + text)
        else:
            merged.append((kind, text))
    return merged


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


def _md_piece(kind: str, text: str) -> str:
    """A piece of `ProseChange.words` in Markdown: ~~old~~, **new**, or as it is."""
    word = text.strip()
    if kind == "same" or not word:
        return "" if kind == "old" else text
    gap = text[len(text.rstrip()) :]
    return f"~~{word}~~ " if kind == "old" else f"**{word}**{gap}"


def markdown_lines(prose: list[ProseChange]) -> list[str]:
    """The Markdown part of a report: the changed paragraphs, page by page, as quotes with
    the changed words marked ~~old~~ **new** (no lines when ``prose`` is empty)."""
    if not prose:
        return []
    lines = ["", f"### Page text: {prose_headline(prose)}"]
    for page in sorted({change.page for change in prose}):
        here = [change for change in prose if change.page == page]
        lines += ["", f"<details><summary>{html.escape(page)}: {len(here)}</summary>", ""]
        for change in here:
            marked = "".join(_md_piece(kind, text) for kind, text in change.words())
            quoted = "\n".join(f"> {line}" for line in marked.strip().splitlines())
            lines += [f"*{change.status}*", "", quoted, ""]
        lines.append("</details>")
    return lines


def html_section(prose: list[ProseChange]) -> str:
    """The HTML part of a report: the changed paragraphs, page by page, the old words in
    ``<del>``, the new ones in ``<ins>`` (an empty string when ``prose`` is empty)."""
    if not prose:
        return ""
    parts = [f"<section class='prose' id='page-text'><h2>Page text</h2>"
             f"<p class='muted'>{html.escape(prose_headline(prose))}: re-read the words around the "
             "numbers that moved.</p>"]  # fmt: skip
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
