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

Every notebook page opens with three buttons: download the notebook as a ``.py`` (jupytext
percent format, the file in ``docs/notebooks/``), download it as an ``.ipynb`` (written next to
the page at build time with jupytext, without outputs), and open it in Google Colab. The Colab
link is built here, in one place, from ``repo_url`` and the branch of ``edit_uri``; it opens
``docs/notebooks/<name>.ipynb`` of that branch, which the repository carries beside each
``.py`` (a test keeps the two in step).

Registered in ``mkdocs.yml`` under ``hooks:``.
"""

from __future__ import annotations

import html as html_lib
import logging
import os
import posixpath
import re
from urllib.parse import quote, unquote, urlsplit

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


_GITHUB = re.compile(r"^https?://github\.com/(?P<owner>[^/]+)/(?P<repo>[^/]+?)(?:\.git)?/?$")


def branch_of(edit_uri: str | None) -> str:
    """The branch named in an ``edit_uri`` such as ``edit/main/docs/`` (``main`` if none)."""
    match = re.match(r"(?:edit|blob|tree)/([^/]+)/", edit_uri or "")
    return match.group(1) if match else "main"


def colab_url(repo_url: str, branch: str, path: str) -> str:
    """The Google Colab address that opens the notebook ``path`` of a GitHub repository.

    Args:
        repo_url: the repository's address, ``https://github.com/<owner>/<repo>``.
        branch: the branch (or tag) to open the notebook from.
        path: the ``.ipynb`` file's path inside the repository.

    Raises:
        ValueError: if ``repo_url`` is not a GitHub repository address or ``path`` is not an
            ``.ipynb`` file (Colab opens notebooks from GitHub only).
    """
    match = _GITHUB.match(repo_url or "")
    if match is None:
        raise ValueError(
            f"repo_url must be a GitHub repository address like https://github.com/owner/repo "
            f"for the 'Open in Colab' links, got {repo_url!r}"
        )
    if not path.endswith(".ipynb"):
        raise ValueError(f"Colab opens .ipynb notebooks; got the path {path!r}")
    owner, repo = match.group("owner"), match.group("repo")
    return (
        f"https://colab.research.google.com/github/{owner}/{repo}/blob/"
        f"{quote(branch)}/{quote(path.lstrip('/'))}"
    )


def notebook_actions(src_uri: str, docs_path: str, repo_url: str, branch: str) -> str:
    """The button bar of a notebook page: download ``.py``, download ``.ipynb``, open in Colab.

    ``src_uri`` is the notebook's path inside the docs folder (``notebooks/name.py``),
    ``docs_path`` the docs folder's path inside the repository (``docs``). The downloads are
    relative links to files next to the page.
    """
    stem = posixpath.splitext(posixpath.basename(src_uri))[0]
    py, ipynb = f"{stem}.py", f"{stem}.ipynb"
    repo_path = posixpath.join(docs_path, posixpath.dirname(src_uri), ipynb)
    buttons = [
        f'<a class="md-button b4-notebook-actions__button" href="{py}" download>'
        f"Download <code>.py</code></a>",
        f'<a class="md-button b4-notebook-actions__button" href="{ipynb}" download>'
        f"Download <code>.ipynb</code></a>",
    ]
    if repo_url:
        href = html_lib.escape(colab_url(repo_url, branch, repo_path))
        buttons.append(
            f'<a class="md-button md-button--primary b4-notebook-actions__button" href="{href}" '
            'target="_blank" rel="noopener">Open in Colab</a>'
        )
        install = html_lib.escape(f"!pip install git+{repo_url}")
        buttons.append(
            '<p class="b4-notebook-actions__note">In Colab, run '
            f"<code>{install}</code> in a first cell: the notebook imports <code>block4</code>.</p>"
        )
    return '<div class="b4-notebook-actions">' + "".join(buttons) + "</div>\n"


def write_ipynb(py_path: str, target: str) -> None:
    """Write the jupytext percent-format notebook ``py_path`` as an ``.ipynb`` (no outputs)."""
    import jupytext  # only needed on notebook pages

    os.makedirs(os.path.dirname(target), exist_ok=True)
    jupytext.write(jupytext.read(py_path), target, fmt="ipynb")


def _docs_path(config) -> str:
    root = os.path.dirname(os.path.abspath(config["config_file_path"]))
    return os.path.relpath(os.path.abspath(config["docs_dir"]), root).replace(os.sep, "/")


def on_page_content(html, page, config, files):  # noqa: ARG001 - MkDocs hook signature
    """Make notebook pages self-contained; warn (strict: fail) on any remaining off-site asset."""
    if "jupyter-wrapper" in html:
        html = (
            notebook_actions(
                page.file.src_uri,
                _docs_path(config),
                (config["repo_url"] or "").rstrip("/"),
                branch_of(config["edit_uri"]),
            )
            + html
        )
        stem = os.path.splitext(os.path.basename(page.file.abs_src_path))[0]
        write_ipynb(
            page.file.abs_src_path,
            os.path.join(os.path.dirname(page.file.abs_dest_path), f"{stem}.ipynb"),
        )
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
