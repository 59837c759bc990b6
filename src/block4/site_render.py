"""How the site shows figures and numbers: Markdown in, Markdown/HTML out, nothing else.

Plain functions without MkDocs, used by the hook `block4.docs_hooks`:

* `render_page` turns ``![Alt](figures/NAME.svg "Caption.")`` lines into ``<figure>``
  blocks (light and dark SVG, caption, provenance) and ``{{ NAME.key }}`` /
  ``{{ NAME.key:FORMAT }}`` into the numbers the manifest recorded, leaving code alone, and
  reports the problems (unknown figure or key, missing alt text, bad format) and the figures
  the page uses;
* `provenance` is the line under a figure; `format_number` formats a number for
  prose; `unwrap_figures` repairs figures Markdown wrapped in a paragraph.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FIGURE_RE",
    "NUMBER_RE",
    "PageReport",
    "Site",
    "format_number",
    "provenance",
    "render_page",
    "split_code",
    "unwrap_figures",
]

#: Figure references turned into ``<figure>`` blocks (alone on their line).
FIGURE_RE = re.compile(
    r"^(?P<indent>[ \t]*)!\[(?P<alt>[^\]\n]*)\]\((?P<prefix>(?:\.\./)*)figures/"
    r"(?P<name>[a-z][a-z0-9_]*)\.svg(?:\s+\"(?P<caption>[^\"\n]*)\")?\)"
    r"(?P<attrs>\{[^}\n]*\})?[ \t]*$",
    re.MULTILINE,
)

#: Number placeholders: ``{{ figure.key }}`` or ``{{ figure.key:.3g }}``.
NUMBER_RE = re.compile(
    r"\{\{\s*(?P<name>[a-z][a-z0-9_]*)\.(?P<key>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?::(?P<spec>[^}]*?))?\s*\}\}"
)

# A figure referenced anywhere else (inside a sentence, say): still checked for freshness.
_INLINE_FIGURE_RE = re.compile(r"\]\((?:\.\./)*figures/(?P<name>[a-z][a-z0-9_]*)\.svg[\s\)]")

# Fenced code blocks and inline code spans: never rewritten.
_CODE_RE = re.compile(
    r"(?P<fence>^[ \t]*(?P<tick>`{3,}|~{3,})[^\n]*\n.*?^[ \t]*(?P=tick)[ \t]*$)"
    r"|(?P<inline>(?P<bt>`+)[^`\n]*?(?P=bt))",
    re.MULTILINE | re.DOTALL,
)

# Inside an admonition or a content tab md_in_html does not apply: Markdown then wraps the
# figure in a paragraph and keeps the markdown="span" attributes.
_WRAPPED_FIGURE_RE = re.compile(
    r"<p>\s*(<figure class=\"b4-figure\"(?:(?!</figure>).)*</figure>)\s*</p>", re.DOTALL
)
_MARKDOWN_SPAN_RE = re.compile(
    r"(<(?:figure class=\"b4-figure\"|figcaption)[^>]*?) markdown=\"span\""
)


@dataclass(frozen=True)
class Site:
    """Where a figure's source links point: ``<repo_url>/blob/<branch>/<source>#L<line>``."""

    repo_url: str = ""
    branch: str = "main"


@dataclass
class PageReport:
    """What `render_page` found on a page.

    Attributes:
        problems: errors that must stop the build (unknown figure or key, no alt text, ...).
        used: figures the page shows or quotes (to check their freshness), in order.
        inline: figures referenced inside a sentence (shown without caption or dark variant).
    """

    problems: list[str] = field(default_factory=list)
    used: list[str] = field(default_factory=list)
    inline: list[str] = field(default_factory=list)


def split_code(markdown: str) -> list[tuple[bool, str]]:
    """Split into ``(is_code, text)`` pieces so code is never rewritten."""
    pieces: list[tuple[bool, str]] = []
    pos = 0
    for m in _CODE_RE.finditer(markdown):
        if m.start() > pos:
            pieces.append((False, markdown[pos : m.start()]))
        pieces.append((True, m.group(0)))
        pos = m.end()
    if pos < len(markdown):
        pieces.append((False, markdown[pos:]))
    return pieces


def format_number(value: Any, spec: str | None) -> str:
    """Format a manifest number for prose (``spec`` is a Python format spec; without one,
    floats get 4 significant digits)."""
    if spec:
        return format(value, spec)
    if isinstance(value, float):
        return format(value, ".4g")
    return str(value)


def provenance(name: str, entry: Mapping[str, Any], site: Site = Site()) -> str:
    """The provenance line shown under a figure (HTML): profile, device, date, short
    fingerprint and a link to the figure's source."""
    date = str(entry.get("date", ""))[:10]
    parts = [
        f"{html.escape(str(entry.get('profile', '?')))} profile",
        html.escape(str(entry.get("device", "?"))),
        html.escape(date),
        f'<code title="fingerprint">{html.escape(str(entry.get("fingerprint", ""))[:8])}</code>',
    ]
    source = entry.get("source")
    if source:
        label = f"{source.rsplit('/', 1)[-1]}:{entry.get('line', '')}".rstrip(":")
        if site.repo_url:
            href = f"{site.repo_url}/blob/{site.branch}/{source}"
            if entry.get("line"):
                href += f"#L{entry['line']}"
            parts.append(f'<a href="{html.escape(href)}">{html.escape(label)}</a>')
        else:
            parts.append(html.escape(label))
    return (
        f'<span class="b4-provenance" data-figure="{html.escape(name)}">'
        + " · ".join(parts)
        + "</span>"
    )


def _known(status: Mapping[str, Any]) -> str:
    return ", ".join(sorted(status)) or "(none)"


def _figure_block(
    m: re.Match[str], status: Mapping[str, Any], site: Site, report: PageReport
) -> str:
    name = m.group("name")
    st = status.get(name)
    if st is None:
        report.problems.append(f"unknown figure '{name}' (known: {_known(status)})")
        return m.group(0)
    report.used.append(name)
    entry = st.entry or {}
    indent, prefix, alt = m.group("indent"), m.group("prefix"), m.group("alt")
    if not alt.strip():
        report.problems.append(
            f"figure '{name}' has no alt text: write ![what the figure shows](...)"
        )
    attrs = m.group("attrs") or "{ loading=lazy }"
    files = entry.get("files") or {"light": f"{name}.svg", "dark": f"{name}.dark.svg"}
    caption = (m.group("caption") or "").strip()
    lines = [
        f'<figure class="b4-figure" id="figure-{name.replace("_", "-")}" markdown="span">',
        f"![{alt}]({prefix}figures/{files['light']}#only-light){attrs}",
        f"![{alt}]({prefix}figures/{files['dark']}#only-dark){attrs}",
        f'<figcaption markdown="span">{caption}'
        + (f"<br>{provenance(name, entry, site)}" if entry else "")
        + "</figcaption>",
        "</figure>",
    ]
    return "\n" + "\n".join(indent + line for line in lines) + "\n"


def _number(m: re.Match[str], status: Mapping[str, Any], report: PageReport) -> str:
    name, key, spec = m.group("name"), m.group("key"), m.group("spec")
    st = status.get(name)
    if st is None:
        report.problems.append(
            f"unknown figure '{name}' in {{{{ {name}.{key} }}}} (known: {_known(status)})"
        )
        return m.group(0)
    report.used.append(name)
    if st.entry is None:  # declared but never made: like a stale figure, a warning
        return f'<span class="b4-missing-number" title="figure {name} was never made">??</span>'
    numbers = st.entry.get("numbers", {})
    if key not in numbers:
        report.problems.append(
            f"figure '{name}' has no number '{key}' "
            f"(it has: {', '.join(sorted(numbers)) or 'none'})"
        )
        return m.group(0)
    try:
        return format_number(numbers[key], spec and spec.strip())
    except (ValueError, TypeError) as err:
        report.problems.append(f"{{{{ {name}.{key}:{spec} }}}}: bad format spec ({err})")
        return m.group(0)


def render_page(
    markdown: str, status: Mapping[str, Any], site: Site = Site()
) -> tuple[str, PageReport]:
    """Rewrite a page's figure references and number placeholders.

    Args:
        markdown: the page's Markdown.
        status: the figures by name; each has ``entry`` (its manifest entry or None).
        site: where source links point.

    Returns:
        The new Markdown and what was found (problems, figures used).
    """
    report = PageReport()
    out = []
    for is_code, text in split_code(markdown):
        if not is_code:
            text = FIGURE_RE.sub(lambda m: _figure_block(m, status, site, report), text)
            report.inline += [m.group("name") for m in _INLINE_FIGURE_RE.finditer(text)]
            text = NUMBER_RE.sub(lambda m: _number(m, status, report), text)
        out.append(text)
    return "".join(out), report


def unwrap_figures(html_text: str) -> str:
    """Take figures out of the paragraphs Markdown put them in (inside admonitions and
    tabs) and drop the ``markdown="span"`` attributes left on them."""
    if "b4-figure" not in html_text:
        return html_text
    html_text = _WRAPPED_FIGURE_RE.sub(lambda m: m.group(1), html_text)
    return _MARKDOWN_SPAN_RE.sub(r"\1", html_text)
