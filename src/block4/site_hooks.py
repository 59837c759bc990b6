"""MkDocs hooks that keep every page of the site self-contained (no request leaves the site).

mkdocs-jupyter renders each notebook with nbconvert's ``lab`` template, which embeds

* a MathJax 2 loader (``<script src="...">`` pointing at a CDN, or at ``""`` when the plugin's
  ``custom_mathjax_url`` is left empty) plus its ``text/x-mathjax-config`` block, and
* an inline ES module that imports mermaid (and its ELK layouts) from a CDN when the page
  contains a mermaid diagram.

The site typesets math itself with a vendored KaTeX (``docs/javascripts/math.js``), so both
blocks are removed from the rendered notebook HTML. A notebook that does contain a mermaid
diagram gets a warning, which fails ``mkdocs build --strict``: such a diagram could not be
drawn offline.

Jupyter's markdown renderer (nbconvert) treats ``\\(`` as an escaped parenthesis, so a notebook
formula written as ``\\( ... \\)`` or ``\\[ ... \\]`` reaches the page as plain text with its
backslashes gone. Notebooks must use ``$ ... $`` and ``$$ ... $$``; the hook warns (strict: fails)
on the other form, naming the notebook.

Links in notebook markdown are written as in the repository (``../maximum-likelihood.md``, which
also works inside Jupyter); MkDocs does not rewrite them on notebook pages, so the hook does:
each relative link to a documentation file becomes that page's URL, and a link to a file that
does not exist gets a warning.

mkdocs-jupyter builds a notebook's table of contents from its own Markdown export, whose heading
slugs drop inline code (``## Capturing with `torch.fx` `` becomes ``#capturing-with``) while the
page's headings keep it (``#capturing-with-torchfx``). The hook points such entries at the real
heading and gives them its full title.

mkdocs-material, given a ``repo_url``, asks the GitHub API for the repository's stars and forks
on every page load. The repository link stays; the hook only unmarks it as the ``source``
component, so the theme never makes that request.

Registered in ``mkdocs.yml`` under ``hooks:``.
"""

from __future__ import annotations

import html as html_lib
import logging
import posixpath
import re
from urllib.parse import unquote, urlsplit

log = logging.getLogger("mkdocs.plugins.block4.site_hooks")

# nbconvert's base/mathjax.html.j2 macro: from its opening comment to its closing one.
_MATHJAX2 = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.S)
# nbconvert's base/mermaidjs.html.j2 macro: the module script, its <style>, and the end marker.
_MERMAID = re.compile(
    r"<script type=\"module\">(?:(?!</script>).)*?mermaid.*?<!-- End of mermaid configuration -->",
    re.S,
)
# Anything else that would load a script, stylesheet or font from another host.
_OFFSITE = re.compile(
    r"<(?:script|link|img|iframe)\b[^>]*?\b(?:src|href)=[\"'](?:https?:)?//[^\"']*[\"']", re.I
)


# Code spans and fenced code, where a backslash-parenthesis is not math.
_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)
_BACKSLASH_MATH = re.compile(r"\\[(\[]")


def notebook_backslash_math(path: str) -> list[str]:
    """Markdown-cell lines of a notebook that write math as ``\\( \\)`` or ``\\[ \\]``."""
    import jupytext  # only needed on notebook pages

    found = []
    for cell in jupytext.read(path).cells:
        if cell.cell_type != "markdown":
            continue
        text = _CODE.sub("", cell.source)
        found += [line.strip() for line in text.splitlines() if _BACKSLASH_MATH.search(line)]
    return found


_HREF = re.compile(r'(<a\b[^>]*?\bhref=")([^"]+)(")')


def rewrite_notebook_links(html: str, page, files) -> str:
    """Point relative links to documentation sources (``*.md``, notebooks) at their pages."""

    def replace(match: re.Match) -> str:
        href = match.group(2)
        parts = urlsplit(href)
        if parts.scheme or parts.netloc or not parts.path or href.startswith("/"):
            return match.group(0)
        src_dir = posixpath.dirname(page.file.src_uri)
        target_uri = posixpath.normpath(posixpath.join(src_dir, unquote(parts.path)))
        target = files.get_file_from_path(target_uri)
        if target is None:
            if target_uri.endswith((".md", ".py", ".ipynb")):
                log.warning("%s links to %s, which is not in the docs", page.file.src_uri, href)
            return match.group(0)
        url = target.url_relative_to(page.file)
        if parts.fragment:
            url += "#" + parts.fragment
        return match.group(1) + url + match.group(3)

    return _HREF.sub(replace, html)


_HEADING = re.compile(r'<h([1-6]) id="([^"]+)"[^>]*>(.*?)</h\1>', re.S)


def repair_notebook_toc(html: str, toc) -> None:
    """Point table-of-contents entries whose anchor is missing at the heading it was cut from."""
    headings = {}
    for _, anchor, inner in _HEADING.findall(html):
        inner = re.sub(r'<a class="anchor-link".*?</a>', "", inner, flags=re.S)
        headings[anchor] = html_lib.unescape(re.sub(r"<[^>]+>", "", inner)).strip()

    def walk(items) -> None:
        for item in items:
            if item.id not in headings:
                matches = [anchor for anchor in headings if anchor.startswith(item.id)]
                if len(matches) == 1:
                    item.id = matches[0]
                    item.title = headings[matches[0]]
            walk(item.children)

    walk(toc)


def strip_notebook_cdn_assets(html: str) -> str:
    """Remove the MathJax 2 loader and the CDN mermaid import from a notebook's HTML."""
    html = _MATHJAX2.sub("", html)
    return _MERMAID.sub("", html)


def offsite_assets(html: str) -> list[str]:
    """Tags in ``html`` that would make the browser fetch something from another host."""
    return _OFFSITE.findall(html)


# The header's repository link: material fetches GitHub facts for this component.
_SOURCE_COMPONENT = re.compile(r'(<a [^>]*class="md-source") data-md-component="source"')


def on_page_content(html, page, config, files):  # noqa: ARG001 - MkDocs hook signature
    """Make notebook pages self-contained; warn (strict: fail) on any remaining off-site asset."""
    if "jupyter-wrapper" in html:
        html = strip_notebook_cdn_assets(html)
        html = rewrite_notebook_links(html, page, files)
        repair_notebook_toc(html, page.toc)
        for line in notebook_backslash_math(page.file.abs_src_path):
            log.warning(
                "%s: write notebook math as $...$ or $$...$$; Jupyter's markdown drops the "
                "backslashes of \\( \\) and \\[ \\]: %s",
                page.file.src_uri,
                line[:120],
            )
        if 'class="jp-Mermaid' in html:
            log.warning(
                "%s contains a mermaid diagram, which cannot be drawn offline; "
                "use a figure from block4.figures instead",
                page.file.src_uri,
            )
    for tag in offsite_assets(html):
        log.warning("%s loads an asset from another host: %s", page.file.src_uri, tag)
    return html


def on_post_page(output, page, config):  # noqa: ARG001 - MkDocs hook signature
    """Keep the repository link but stop the theme from querying the GitHub API for it."""
    return _SOURCE_COMPONENT.sub(r"\1", output)


def on_post_template(output_content, template_name, config):  # noqa: ARG001 - MkDocs hook
    """The same for static templates (the 404 page)."""
    return _SOURCE_COMPONENT.sub(r"\1", output_content)
