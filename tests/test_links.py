"""Every internal link, anchor and asset reference of the built site resolves, and every
chapter has the parts a reader navigates by.

``mkdocs build --strict`` already rejects broken links between Markdown pages; this test also
covers what it does not see: links inside raw HTML, notebook pages, the theme's own assets,
``#anchor`` targets on other pages, and ``url(...)`` references in the site's stylesheets.
"""

from __future__ import annotations

import html as html_lib
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

# Link-bearing attributes of HTML elements.
_LINK_ATTRS = {"href", "src", "srcset", "poster", "data"}
# Schemes that never point into the site.
_EXTERNAL_SCHEMES = {"http", "https", "mailto", "tel", "data", "javascript", "blob"}


class _PageLinks(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in ("id", "name") and tag != "meta":
                self.ids.add(value)
            elif name == "srcset":
                self.links += [part.split()[0] for part in value.split(",") if part.strip()]
            elif name in _LINK_ATTRS:
                self.links.append(value)


def _parse(path: Path) -> _PageLinks:
    parser = _PageLinks()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _target(site: Path, page: Path, link: str) -> tuple[Path, str] | None:
    """The file and fragment an internal link points to; None for external links."""
    parts = urlsplit(link)
    if parts.scheme in _EXTERNAL_SCHEMES or parts.netloc:
        return None
    path = unquote(parts.path)
    if not path:
        return page, parts.fragment
    base = site if path.startswith("/") else page.parent
    target = (base / path.lstrip("/")).resolve()
    if target.is_dir() or path.endswith("/"):
        target = target / "index.html"
    return target, parts.fragment


def broken_links(site: Path) -> list[str]:
    """Every internal link or anchor in ``site`` that does not resolve, as readable lines."""
    site = site.resolve()
    pages = sorted(site.rglob("*.html"))
    parsed = {page: _parse(page) for page in pages}
    problems = []
    for page, links in parsed.items():
        rel = page.relative_to(site)
        for link in links.links:
            target = _target(site, page, link)
            if target is None:
                continue
            file, fragment = target
            if site not in file.parents and file != site:
                problems.append(f"{rel}: {link} points outside the site")
            elif not file.is_file():
                problems.append(f"{rel}: {link} -> missing {file.relative_to(site)}")
            elif fragment and file.suffix == ".html":
                ids = parsed[file].ids if file in parsed else _parse(file).ids
                if unquote(fragment) not in ids:
                    problems.append(
                        f"{rel}: {link} -> no anchor #{fragment} in {file.relative_to(site)}"
                    )
    return problems


_CSS_URL = re.compile(r"url\(\s*['\"]?([^'\")]+)['\"]?\s*\)")


def broken_stylesheet_urls(site: Path, stylesheets: list[Path]) -> list[str]:
    problems = []
    for css in stylesheets:
        for ref in _CSS_URL.findall(css.read_text(encoding="utf-8")):
            parts = urlsplit(ref)
            if parts.scheme or ref.startswith("#"):
                continue  # data: URIs, SVG fragment references
            if not (css.parent / unquote(parts.path)).is_file():
                problems.append(f"{css.relative_to(site)}: url({ref}) is missing")
    return problems


def test_link_checker_finds_broken_links_and_anchors(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "index.html").write_text(
        '<h2 id="top">T</h2><a href="a/">ok</a> <a href="a/#sec">ok</a> <a href="#top">ok</a>'
        '<a href="b/">missing page</a> <a href="a/#nope">missing anchor</a>'
        '<img src="img/x.png"> <a href="https://example.org/x">external</a>'
    )
    (tmp_path / "a" / "index.html").write_text(
        '<p id="sec">S</p><a href="../index.html#top">up</a>'
    )
    problems = broken_links(tmp_path)
    assert len(problems) == 3, problems
    assert any("b/" in p for p in problems)
    assert any("#nope" in p for p in problems)
    assert any("img/x.png" in p for p in problems)


@pytest.mark.slow
def test_every_internal_link_and_anchor_resolves(built_site: Path) -> None:
    problems = broken_links(built_site)
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_site_stylesheets_reference_only_existing_files(built_site: Path) -> None:
    own = [p for p in built_site.glob("stylesheets/*.css")]
    own += list(built_site.glob("javascripts/vendor/**/*.css"))
    assert own, "the site's own stylesheets were not copied into the build"
    problems = broken_stylesheet_urls(built_site, own)
    assert not problems, "\n".join(problems)


CHAPTERS = [
    "computational-graphs",
    "backpropagation",
    "activations",
    "normalization-and-residuals",
    "maximum-likelihood",
    "probabilistic-heads",
]


def chapter_structure_problems(html: str) -> list[str]:
    """What a chapter page lacks: learning goals first, exercises whose questions are visible
    and whose solutions are folded, a summary followed by further reading, a companion notebook
    link, previous/next links in the footer."""
    problems = []
    article = html.split('<article class="md-content__inner', 1)[-1].split("</article>", 1)[0]
    headings = re.findall(r"<h2[^>]*>(.*?)</h2>", article, re.S)
    titles = [html_lib.unescape(re.sub(r"<[^>]+>", "", h)).strip(" ¶").lower() for h in headings]
    goals = article.lower().find("learning goals")
    first_h2 = article.find("<h2")
    if goals < 0 or (first_h2 >= 0 and goals > first_h2):
        problems.append("no 'Learning goals' before the first section")
    if not any(t.startswith("exercises") for t in titles):
        problems.append("no 'Exercises' section")
    elif "<details" not in article.split("Exercises", 1)[-1]:
        problems.append("exercises have no collapsible solutions (??? blocks)")
    # A question folded away takes a click to even see: questions are plain admonitions.
    folded_questions = re.findall(
        r'<details class="question"[^>]*>\s*<summary>(.*?)</summary>', article, re.S
    )
    problems += [f"question folded away: {html_lib.unescape(q).strip()}" for q in folded_questions]
    if titles[-2:] != ["summary", "further reading"]:
        problems.append(
            f"the last two sections are not 'Summary' and 'Further reading' (sections: {titles})"
        )
    figures = article.count('<figure class="b4-figure"')
    zoomable = sum(
        'class="glightbox"' in f
        for f in re.findall(r'<figure class="b4-figure".*?</figure>', article, re.S)
    )
    if zoomable < figures:
        problems.append(f"{figures - zoomable} of {figures} figures do not open in the lightbox")
    if "notebooks/" not in article:
        problems.append("no link to the companion notebook")
    if "md-footer__link--prev" not in html or "md-footer__link--next" not in html:
        problems.append("no previous/next links in the footer")
    return problems


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_has_goals_exercises_summary_notebook_and_prev_next(
    built_site: Path, chapter: str
) -> None:
    html = (built_site / chapter / "index.html").read_text(encoding="utf-8")
    problems = chapter_structure_problems(html)
    assert not problems, f"{chapter}: " + "; ".join(problems)


def _chapter_html(exercise: str, last_sections: str) -> str:
    footer = '<a class="md-footer__link md-footer__link--prev"></a>'
    footer += '<a class="md-footer__link md-footer__link--next"></a>'
    return (
        '<article class="md-content__inner md-typeset"><div class="admonition abstract">'
        "<p>Learning goals</p></div><h2>Idea</h2><a href='notebooks/x/'>notebook</a>"
        f'<h2 id="exercises">Exercises</h2>{exercise}{last_sections}</article>{footer}'
    )


def test_chapter_structure_checker_wants_visible_questions_and_further_reading() -> None:
    visible = (
        '<div class="admonition question"><p class="admonition-title">Exercise 1</p></div>'
        '<details class="success"><summary>Solution</summary><p>42</p></details>'
    )
    folded = (
        '<details class="question"><summary>Exercise 1</summary><p>Q?</p></details>'
        '<details class="success"><summary>Solution</summary><p>42</p></details>'
    )
    good_end = "<h2>Summary</h2><p>r</p><h2>Further reading</h2><ul><li>x</li></ul>"
    assert chapter_structure_problems(_chapter_html(visible, good_end)) == []
    problems = chapter_structure_problems(_chapter_html(folded, good_end))
    assert problems == ["question folded away: Exercise 1"], problems
    problems = chapter_structure_problems(_chapter_html(visible, "<h2>Summary</h2>"))
    assert len(problems) == 1 and "Further reading" in problems[0], problems


def test_the_five_points_in_the_text_are_the_five_points_in_the_code(root: Path) -> None:
    # The maximum-likelihood chapter lists the x values so the example can be done by hand.
    from block4.figures.likelihood import five_point_example

    text = (root / "docs" / "maximum-likelihood.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| ([1-5]) \| \\\((-?[0-9.]+)\\\) \| ([01]) \|$", text, re.M)
    x, y = five_point_example()
    assert [(float(r[1]), int(r[2])) for r in rows] == list(
        zip(x.tolist(), y.tolist(), strict=True)
    ), rows
