"""The built site as a reader meets it, in a real browser (Debian chromium driven by Playwright).

Every page, in the light and in the dark palette, must load with the network cut off:
0 console errors, 0 failed requests, 0 requests to any host other than the local server,
every <img> decoded, every formula typeset by the site's own KaTeX. Search works offline and
the palette toggle switches the scheme.

Outputs (gitignored) under ``test-output/``: ``screenshots/<page>--<theme>.png`` (full page)
and ``browser-results.json`` (one row per page and theme), also printed as a table.

Run it alone with ``python -m pytest tests/test_browser.py -s``. The browser is Debian's
``/usr/bin/chromium`` (``apt-get install -y chromium``); ``playwright install`` is never needed.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from _helpers import serve_directory, wait_until_quiet

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "test-output"
THEMES = ("light", "dark")
SCHEME = {"light": "default", "dark": "slate"}
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
INLINE_SCHEMES = {"data", "blob", "about"}


# ---------------------------------------------------------------------------------------------
# What the static HTML promises (counted without a browser)
# ---------------------------------------------------------------------------------------------


class _FormulaCounter(HTMLParser):
    """Counts formulas in a built page: arithmatex elements (Markdown pages) and $-delimited
    math in the text of notebook markdown cells (outside code)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.arithmatex = 0
        self._stack: list[tuple[str, bool, bool]] = []  # (tag, in_notebook_md, in_code)
        self._notebook_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        in_md, in_code = self._stack[-1][1:] if self._stack else (False, False)
        if "arithmatex" in classes:
            self.arithmatex += 1
        if "jp-RenderedMarkdown" in classes:
            in_md = True
            self._notebook_text.append("\n\n")  # a new cell: no formula spans two cells
        if tag in ("code", "pre"):
            in_code = True
        if tag not in ("br", "img", "hr", "input", "meta", "link", "wbr", "source"):
            self._stack.append((tag, in_md, in_code))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                del self._stack[i:]
                break

    def handle_data(self, data: str) -> None:
        if self._stack and self._stack[-1][1] and not self._stack[-1][2]:
            self._notebook_text.append(data)

    @property
    def notebook_formulas(self) -> int:
        return count_delimited_math("".join(self._notebook_text))


# The delimiters docs/javascripts/math.js gives KaTeX's auto-render on notebook pages.
NOTEBOOK_DELIMITERS = [
    ("$$", "$$"),
    ("\\[", "\\]"),
    *[
        (f"\\begin{{{env}}}", f"\\end{{{env}}}")
        for env in ("equation", "equation*", "align", "align*", "gather")
    ],
    ("$", "$"),
    ("\\(", "\\)"),
]


def _end_of_math(text: str, start: int, right: str) -> int:
    """Index of ``right`` closing a formula that starts at ``start``, as auto-render finds it:
    backslash escapes are skipped and the delimiter must be outside braces; -1 if none."""
    depth, i = 0, start
    while i < len(text):
        if depth <= 0 and text.startswith(right, i):
            return i
        if text[i] == "\\":
            i += 2
            continue
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return -1


def count_delimited_math(text: str) -> int:
    """Formulas KaTeX's auto-render finds in ``text``: at each step the earliest left
    delimiter (ties go to the first in NOTEBOOK_DELIMITERS) opens a formula."""
    count, pos = 0, 0
    while True:
        found = [(text.find(left, pos), n) for n, (left, _) in enumerate(NOTEBOOK_DELIMITERS)]
        found = [(i, n) for i, n in found if i >= 0]
        if not found:
            return count
        start, n = min(found)
        left, right = NOTEBOOK_DELIMITERS[n]
        end = _end_of_math(text, start + len(left), right)
        if end < 0:
            pos = start + len(left)
            continue
        count += 1
        pos = end + len(right)


def expected_formulas(html: str) -> int:
    """Number of formulas a page's HTML contains before any script runs."""
    counter = _FormulaCounter()
    counter.feed(html)
    return counter.arithmatex + counter.notebook_formulas


def site_pages(site: Path) -> list[str]:
    """URL paths of every page of a built site ('' is the home page)."""
    pages = []
    for html in sorted(site.rglob("index.html")):
        rel = html.parent.relative_to(site).as_posix()
        pages.append("" if rel == "." else rel + "/")
    return pages


def _slug(path: str) -> str:
    return path.strip("/").replace("/", "__") or "home"


# ---------------------------------------------------------------------------------------------
# Serving and browsing
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site_url(built_site: Path) -> Iterator[str]:
    """The built site served by a local http.server thread on a free port."""
    with serve_directory(built_site) as url:
        yield url


class PageProbe:
    """Records everything one page asks of the network and prints to the console.

    Everything that is not the local server is cut off (and recorded), so the tests never reach
    the internet even when the machine can.
    """

    def __init__(self, page) -> None:
        target = page
        self.requests: list[str] = []
        self.offsite: list[str] = []
        self.failed: list[str] = []
        self.console_errors: list[str] = []
        self._pending: set = set()
        target.route("**/*", self._route)
        target.on("request", self._on_request)
        target.on("requestfinished", lambda r: self._pending.discard(r))
        target.on("requestfailed", self._on_failed)
        target.on("response", self._on_response)
        target.on("console", self._on_console)
        target.on("pageerror", lambda e: self.console_errors.append(f"uncaught: {e}"))

    def _route(self, route) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in INLINE_SCHEMES or parts.hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            self.offsite.append(url)
            route.abort()

    def _on_request(self, request) -> None:
        if urlsplit(request.url).scheme not in INLINE_SCHEMES:
            self.requests.append(request.url)
            self._pending.add(request)

    def _on_failed(self, request) -> None:
        self._pending.discard(request)
        self.failed.append(f"{request.url} ({request.failure})")

    def _on_response(self, response) -> None:
        if response.status >= 400:
            self.failed.append(f"{response.url} (HTTP {response.status})")

    def _on_console(self, message) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def settle(self, page, quiet_ms: int = 150, timeout_s: float = 15.0) -> None:
        """Wait until no request has been in flight for ``quiet_ms`` (a faster networkidle)."""
        wait_until_quiet(page, self._pending, quiet_ms, timeout_s)


_IMAGES_JS = """() => [...document.images].map(img => ({
    src: img.getAttribute('src') || '',
    alt: img.getAttribute('alt'),
    loaded: img.complete && img.naturalWidth > 0,
    visible: img.getClientRects().length > 0 && getComputedStyle(img).visibility !== 'hidden',
}))"""

# Figures on the page whose caption (provenance line aside) is empty.
_UNCAPTIONED_FIGURES_JS = """() => [...document.querySelectorAll('.md-content figure')]
    .filter(f => f.querySelector('img, svg'))
    .filter(f => {
        const caption = f.querySelector('figcaption');
        if (!caption) return true;
        const text = [...caption.childNodes]
            .filter(n => !(n.classList && n.classList.contains('b4-provenance')))
            .map(n => n.textContent).join('').trim();
        return text.length === 0;
    })
    .map(f => f.id || (f.querySelector('img') || {}).src || 'figure')"""

_DARK_VARIANT = re.compile(r"(#only-dark|[-_.]dark\.(svg|png|webp)(\?|#|$))")
_LIGHT_VARIANT = re.compile(r"#only-light")


def _figure_palette_problems(images: list[dict], theme: str) -> list[str]:
    """The figure variant shown must match the palette (dark files only on the dark page)."""
    problems = []
    dark_sources = {i["src"] for i in images if _DARK_VARIANT.search(i["src"])}
    for img in images:
        if not img["visible"]:
            continue
        src = img["src"]
        is_dark = bool(_DARK_VARIANT.search(src))
        has_dark_twin = any(_DARK_VARIANT.sub("", d) == src.split("#")[0] for d in dark_sources)
        has_dark_twin = has_dark_twin or bool(_LIGHT_VARIANT.search(src))
        if theme == "light" and is_dark:
            problems.append(f"dark variant shown on the light page: {src}")
        if theme == "dark" and not is_dark and has_dark_twin:
            problems.append(f"light variant shown on the dark page: {src}")
    return problems


def check_page(context, base_url: str, path: str, theme: str, shots: Path) -> dict:
    """Load one page in a context of one palette and return its row of the results table."""
    page = context.new_page()
    probe = PageProbe(page)
    started = time.perf_counter()
    try:
        response = page.goto(base_url + path, wait_until="load", timeout=30_000)
        source = response.text() if response else ""
        # Lazy images below the fold would otherwise never load in a headless screenshot.
        page.evaluate(
            "document.querySelectorAll('img[loading=lazy]').forEach(i => i.loading='eager')"
        )
        page.wait_for_function("[...document.images].every(i => i.complete)", timeout=15_000)
        page.wait_for_function("document.body.dataset.mathRendered !== undefined", timeout=15_000)
        probe.settle(page)
        load_s = time.perf_counter() - started
        scheme = page.evaluate("document.body.getAttribute('data-md-color-scheme')")
        images = page.evaluate(_IMAGES_JS)
        uncaptioned = page.evaluate(_UNCAPTIONED_FIGURES_JS)
        rendered = page.evaluate("document.querySelectorAll('.katex').length")
        math_errors = page.evaluate(
            "[...document.querySelectorAll('.katex-error')]"
            ".map(e => e.getAttribute('title') || e.textContent)"
        )
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / f"{_slug(path)}--{theme}.png"), full_page=True)
    finally:
        page.close()
    return {
        "page": "/" + path,
        "theme": theme,
        "scheme": scheme,
        "requests": len(probe.requests),
        "offsite_requests": probe.offsite,
        "failed_requests": probe.failed,
        "console_errors": probe.console_errors,
        "images": len(images),
        "images_loaded": sum(i["loaded"] for i in images),
        "images_without_alt": [i["src"] for i in images if not i["alt"]],
        "figure_palette_problems": _figure_palette_problems(images, theme),
        "figures_without_caption": uncaptioned,
        "formulas_expected": expected_formulas(source),
        "formulas_rendered": rendered,
        "math_errors": math_errors,
        "load_s": round(load_s, 2),
    }


def palette_context(browser, theme: str):
    """A fresh browser context whose system colour scheme selects the theme's palette."""
    return browser.new_context(
        color_scheme=theme, viewport={"width": 1280, "height": 900}, service_workers="block"
    )


def row_problems(row: dict) -> list[str]:
    problems = []
    if row["scheme"] != SCHEME[row["theme"]]:
        problems.append(f"palette is {row['scheme']!r}, expected {SCHEME[row['theme']]!r}")
    for key in ("offsite_requests", "failed_requests", "console_errors", "math_errors"):
        problems += [f"{key}: {item}" for item in row[key]]
    problems += [f"image without alt text: {src}" for src in row["images_without_alt"]]
    problems += row["figure_palette_problems"]
    problems += [f"figure without a caption: {f}" for f in row["figures_without_caption"]]
    if row["images_loaded"] < row["images"]:
        problems.append(f"only {row['images_loaded']} of {row['images']} images loaded")
    if row["formulas_rendered"] < row["formulas_expected"]:
        problems.append(
            f"only {row['formulas_rendered']} of {row['formulas_expected']} formulas rendered"
        )
    return problems


def format_table(rows: list[dict]) -> str:
    head = f"{'page':44} {'theme':5} {'req':>4} {'off':>4} {'fail':>4} {'cons':>4} "
    head += f"{'img':>7} {'math':>9} {'load s':>6}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['page'][:44]:44} {r['theme']:5} {r['requests']:>4} {len(r['offsite_requests']):>4} "
            f"{len(r['failed_requests']):>4} {len(r['console_errors']):>4} "
            f"{r['images_loaded']:>3}/{r['images']:<3} "
            f"{r['formulas_rendered']:>4}/{r['formulas_expected']:<4} {r['load_s']:>6.2f}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


def test_every_page_reads_offline_in_both_palettes(browser, site_url: str, built_site: Path):
    pages = site_pages(built_site)
    assert "" in pages and "maximum-likelihood/" in pages, pages
    shutil.rmtree(OUTPUT / "screenshots", ignore_errors=True)  # no leftovers of removed pages
    rows = []
    for theme in THEMES:
        context = palette_context(browser, theme)
        try:
            rows += [
                check_page(context, site_url, path, theme, OUTPUT / "screenshots") for path in pages
            ]
        finally:
            context.close()
    rows.sort(key=lambda r: (r["page"], THEMES.index(r["theme"])))
    OUTPUT.mkdir(exist_ok=True)
    (OUTPUT / "browser-results.json").write_text(json.dumps(rows, indent=2) + "\n")
    table = format_table(rows)
    (OUTPUT / "browser-results.txt").write_text(table + "\n")
    print("\n" + table)
    problems = [
        f"/{r['page'].lstrip('/')} [{r['theme']}] {p}" for r in rows for p in row_problems(r)
    ]
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# Figure text at page width (the 11-px rule of issue 14; tests/test_figure_legibility.py
# computes the same from the SVG files)
# ---------------------------------------------------------------------------------------------

MIN_FIGURE_TEXT_PX = 11.0

# Figures are <img> elements, whose SVG text the page cannot reach. For each visible figure
# image the page fetches its SVG, places an inline copy exactly as wide as the image is shown
# (off screen), and reads the rendered size of every <text>/<tspan>: its computed font size
# times the scale of its screen transform (what getBoundingClientRect reflects), i.e. the CSS
# px the reader sees. The copy is removed again.
_FIGURE_TEXT_JS = """async () => {
    const rows = [];
    const images = [...document.querySelectorAll('.md-content figure img')]
        .filter(img => img.getClientRects().length > 0 && /\\.svg(#|$)/.test(img.src));
    for (const img of images) {
        const width = img.getBoundingClientRect().width;
        const source = await (await fetch(img.src.split('#')[0])).text();
        const svg = new DOMParser().parseFromString(source, 'image/svg+xml').documentElement;
        svg.removeAttribute('height');
        svg.setAttribute('width', String(width));
        const box = document.createElement('div');
        box.style.cssText = 'position:absolute; left:-20000px; top:0; visibility:hidden;';
        box.style.width = width + 'px';
        box.appendChild(document.importNode(svg, true));
        document.body.appendChild(box);
        let smallest = Infinity, text = '', boxHeight = 0;
        for (const el of box.querySelectorAll('text, tspan')) {
            const own = [...el.childNodes].filter(n => n.nodeType === 3)
                .map(n => n.textContent).join('').trim();
            if (!own) continue;
            const m = el.getScreenCTM();
            const scale = Math.sqrt(Math.abs(m.a * m.d - m.b * m.c));
            const px = parseFloat(getComputedStyle(el).fontSize) * scale;
            if (px < smallest) {
                smallest = px; text = own; boxHeight = el.getBoundingClientRect().height;
            }
        }
        box.remove();
        const name = img.src.split('#')[0].split('/').pop().replace(/\\.svg$/, '');
        rows.push({figure: name, shown_px: width, smallest_px: smallest, text: text,
                   text_box_px: boxHeight});
    }
    return rows;
}"""


def figure_text_sizes(context, base_url: str, path: str) -> list[dict]:
    """The smallest rendered text of every visible figure on one page (one row per figure)."""
    page = context.new_page()
    PageProbe(page)  # keeps the page off the network
    try:
        page.goto(base_url + path, wait_until="load", timeout=30_000)
        page.evaluate(
            "document.querySelectorAll('img[loading=lazy]').forEach(i => i.loading='eager')"
        )
        page.wait_for_function("[...document.images].every(i => i.complete)", timeout=15_000)
        rows = page.evaluate(_FIGURE_TEXT_JS)
    finally:
        page.close()
    return [{"page": "/" + path, **row} for row in rows]


def format_figure_text_table(rows: list[dict]) -> str:
    head = f"{'page':34} {'theme':5} {'figure':36} {'shown px':>8} {'smallest px':>11}"
    lines = [head, "-" * len(head)]
    for r in rows:
        flag = "" if r["smallest_px"] >= MIN_FIGURE_TEXT_PX else "  < 11"
        lines.append(
            f"{r['page'][:34]:34} {r['theme']:5} {r['figure'][:36]:36} {r['shown_px']:8.0f} "
            f"{r['smallest_px']:11.1f}{flag}"
        )
    return "\n".join(lines)


def test_figure_text_is_at_least_11_css_px_on_every_page(browser, site_url: str, built_site):
    rows = []
    for theme in THEMES:
        context = palette_context(browser, theme)
        try:
            for path in site_pages(built_site):
                rows += [
                    {**row, "theme": theme} for row in figure_text_sizes(context, site_url, path)
                ]
        finally:
            context.close()
    OUTPUT.mkdir(exist_ok=True)
    (OUTPUT / "figure-text.json").write_text(json.dumps(rows, indent=2) + "\n")
    table = format_figure_text_table(rows)
    (OUTPUT / "figure-text.txt").write_text(table + "\n")
    print("\n" + table)
    # Every figure the chapters show was measured, in both palettes.
    measured = {(r["figure"].removesuffix(".dark"), r["theme"]) for r in rows}
    assert {theme for _, theme in measured} == set(THEMES), rows
    small = [r for r in rows if r["smallest_px"] < MIN_FIGURE_TEXT_PX]
    assert not small, f"{len(small)} figure views have text below 11 CSS px:\n" + "\n".join(
        f"{r['page']} [{r['theme']}] {r['figure']}: {r['smallest_px']:.1f} px ({r['text']!r})"
        for r in small
    )


def test_search_finds_the_maximum_likelihood_chapter(browser, site_url: str):
    context = palette_context(browser, "light")
    page = context.new_page()
    probe = PageProbe(page)
    try:
        page.goto(site_url, wait_until="load")
        search = page.locator("input.md-search__input")
        search.click()
        page.keyboard.type("likelihood", delay=20)  # the theme searches on key events
        results = page.locator(".md-search-result__item a")
        results.first.wait_for(timeout=15_000)
        hrefs = results.evaluate_all("links => links.map(a => a.href)")
    finally:
        context.close()
    assert any(urlsplit(h).path == "/maximum-likelihood/" for h in hrefs), hrefs
    assert not (probe.offsite or probe.failed or probe.console_errors), (
        probe.offsite,
        probe.failed,
        probe.console_errors,
    )


def test_palette_toggle_switches_between_light_and_dark(browser, site_url: str):
    context = palette_context(browser, "light")
    page = context.new_page()
    try:
        page.goto(site_url, wait_until="load")
        scheme = "document.body.getAttribute('data-md-color-scheme')"
        background = "getComputedStyle(document.body).backgroundColor"
        assert page.evaluate(scheme) == "default"
        light_bg = page.evaluate(background)
        page.locator("form[data-md-component='palette'] label:visible").first.click()
        page.wait_for_function(f"{scheme} === 'slate'", timeout=5_000)
        dark_bg = page.evaluate(background)
        page.locator("form[data-md-component='palette'] label:visible").first.click()
        page.wait_for_function(f"{scheme} === 'default'", timeout=5_000)
    finally:
        context.close()
    assert light_bg != dark_bg, (light_bg, dark_bg)


def test_formula_counter_counts_arithmatex_and_notebook_math():
    html = (
        '<p><span class="arithmatex">\\(a\\)</span> and <div class="arithmatex">\\[b\\]</div></p>'
        '<div class="jp-RenderedMarkdown"><p>Inline $x^2$, $$\\sum_i y_i$$ and '
        "<code>a $ b $ c</code> costs \\$5.</p><p>\\begin{align}a&=b\\end{align}</p></div>"
        "<pre>$not math$</pre>"
    )
    assert expected_formulas(html) == 5
    # An environment inside an inline formula is part of that formula.
    assert count_delimited_math(r"$10 \begin{pmatrix} 3 & 3 \end{pmatrix}$ and $x$") == 2
    assert count_delimited_math(r"$\{a\}$ and $$ \text{\$} $$ and \begin{align}b\end{align}") == 3
