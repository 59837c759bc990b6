"""block4.site_hooks: notebook pages lose their CDN scripts, notebook math and links are checked."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from jinja2 import Environment, FileSystemLoader
from jupyter_core.paths import jupyter_path

from block4 import site_hooks

NOTEBOOKS = Path(__file__).resolve().parents[1] / "docs" / "notebooks"


def _nbconvert_header() -> str:
    """The MathJax 2 and mermaid blocks exactly as the installed nbconvert writes them."""
    dirs = [d for d in jupyter_path("nbconvert", "templates") if Path(d, "base").is_dir()]
    assert dirs, "nbconvert's templates were not found"
    env = Environment(loader=FileSystemLoader(dirs))
    return env.from_string(
        '{% from "base/mathjax.html.j2" import mathjax %}'
        '{% from "lab/mermaidjs.html.j2" import mermaid_js %}'
        "<p>before</p>{{ mathjax() }}{{ mermaid_js() }}<p>after</p>"
    ).render()


def test_notebook_cdn_scripts_are_stripped() -> None:
    html = _nbconvert_header()
    assert "cdnjs" in html and "mermaid" in html  # the template still does what we strip
    stripped = site_hooks.strip_notebook_cdn_assets(html)
    assert "cdnjs" not in stripped
    assert "<script" not in stripped
    assert "mathjax" not in stripped.lower()
    assert stripped.startswith("<p>before</p>") and stripped.endswith("<p>after</p>")


def test_offsite_assets_are_found() -> None:
    html = (
        '<img src="https://img.example.org/badge.svg"><script src="//cdn.example.org/x.js">'
        '</script><a href="https://example.org">a link is fine</a><img src="figures/a.svg">'
    )
    assert len(site_hooks.offsite_assets(html)) == 2


def test_notebook_math_with_backslash_delimiters_is_reported(tmp_path: Path) -> None:
    notebook = tmp_path / "nb.py"
    notebook.write_text(
        "# %% [markdown]\n"
        "# Good: $x^2$ and $$y$$; code `\\(not math\\)` is ignored.\n"
        "# Bad: \\(p(y \\mid x)\\)\n"
        "\n"
        "# %%\n"
        'print("\\\\(in code\\\\)")\n'
    )
    found = site_hooks.notebook_backslash_math(str(notebook))
    assert found == ["Bad: \\(p(y \\mid x)\\)"]


def test_notebook_links_point_at_pages() -> None:
    from mkdocs.structure.files import File, Files

    def doc(path: str) -> File:
        return File(path, "/docs", "/site", use_directory_urls=True)

    # A notebook page lives at notebooks/<name>/ like a Markdown page of the same name.
    files = Files([doc("maximum-likelihood.md"), doc("notebooks/maximum_likelihood.md")])
    page = SimpleNamespace(file=files.get_file_from_path("notebooks/maximum_likelihood.md"))
    html = (
        '<a href="../maximum-likelihood.md#the-recipe">chapter</a>'
        '<a href="https://example.org/x.md">external</a><a href="#local">local</a>'
    )
    out = site_hooks.rewrite_notebook_links(html, page, files)
    assert '<a href="../../maximum-likelihood/#the-recipe">' in out
    assert 'href="https://example.org/x.md"' in out and 'href="#local"' in out


def test_github_facts_request_is_disabled() -> None:
    header = '<a href="https://github.com/o/r" title="Go to repository" class="md-source" data-md-component="source">'
    out = site_hooks.on_post_page(header, page=None, config=None)
    assert 'data-md-component="source"' not in out and 'class="md-source"' in out


@pytest.mark.parametrize(
    "src", ["docs/javascripts/math.js", "docs/javascripts/vendor/katex/katex.min.js"]
)
def test_math_assets_are_in_the_repository(root: Path, src: str) -> None:
    # The site never downloads its math renderer: the files are committed.
    assert (root / src).is_file()
    fonts = list((root / "docs/javascripts/vendor/katex/fonts").glob("*.woff2"))
    assert len(fonts) >= 15


def test_notebook_toc_entries_follow_headings_with_code() -> None:
    from mkdocs.structure.toc import AnchorLink

    toc = [AnchorLink("2. Capturing with", "2-capturing-with", 2), AnchorLink("Kept", "kept", 2)]
    html = (
        '<h2 id="2-capturing-with-torchfx">2. Capturing with <code>torch.fx</code>'
        '<a class="anchor-link" href="#2-capturing-with-torchfx">¶</a></h2><h2 id="kept">Kept</h2>'
    )
    site_hooks.repair_notebook_toc(html, toc)
    assert toc[0].id == "2-capturing-with-torchfx"
    assert toc[0].title == "2. Capturing with torch.fx"
    assert toc[1].id == "kept"


def test_colab_url_is_built_from_the_repository_address() -> None:
    url = site_hooks.colab_url(
        "https://github.com/block4/block4/", "main", "docs/notebooks/a.ipynb"
    )
    assert url == (
        "https://colab.research.google.com/github/block4/block4/blob/main/docs/notebooks/a.ipynb"
    )
    assert site_hooks.colab_url("https://github.com/o/r.git", "v1.0", "nb.ipynb").endswith(
        "/github/o/r/blob/v1.0/nb.ipynb"
    )
    with pytest.raises(ValueError, match="GitHub repository address"):
        site_hooks.colab_url("https://gitlab.com/o/r", "main", "a.ipynb")
    with pytest.raises(ValueError, match=r"\.ipynb"):
        site_hooks.colab_url("https://github.com/o/r", "main", "a.py")


def test_branch_comes_from_edit_uri() -> None:
    assert site_hooks.branch_of("edit/dev/docs/") == "dev"
    assert site_hooks.branch_of("blob/main/docs/") == "main"
    assert site_hooks.branch_of(None) == "main"


def test_notebook_actions_link_both_downloads_and_colab() -> None:
    bar = site_hooks.notebook_actions(
        "notebooks/activations.py", "docs", "https://github.com/o/r", "main"
    )
    assert 'href="activations.py" download' in bar
    assert 'href="activations.ipynb" download' in bar
    assert "colab.research.google.com/github/o/r/blob/main/docs/notebooks/activations.ipynb" in bar
    assert "!pip install git+https://github.com/o/r" in bar
    # Without a repository there is nothing Colab could open: no Colab button.
    assert "colab" not in site_hooks.notebook_actions("notebooks/a.py", "docs", "", "main")


def test_write_ipynb_converts_the_percent_format(tmp_path: Path) -> None:
    import json

    src = tmp_path / "nb.py"
    src.write_text("# %% [markdown]\n# # Title\n\n# %%\nx = 1 + 1\n")
    target = tmp_path / "site" / "nb" / "nb.ipynb"
    site_hooks.write_ipynb(str(src), str(target))
    cells = json.loads(target.read_text())["cells"]
    assert [c["cell_type"] for c in cells] == ["markdown", "code"]
    assert "".join(cells[1]["source"]) == "x = 1 + 1"


def _cells(notebook) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in notebook.cells]


@pytest.mark.parametrize("name", sorted(p.stem for p in NOTEBOOKS.glob("*.py")))
def test_committed_ipynb_matches_its_py(name: str) -> None:
    # Colab opens docs/notebooks/<name>.ipynb from GitHub: it must say what the .py says.
    import jupytext

    py, ipynb = NOTEBOOKS / f"{name}.py", NOTEBOOKS / f"{name}.ipynb"
    assert ipynb.is_file(), f"{ipynb} is missing; run: jupytext --update --to ipynb {py}"
    assert _cells(jupytext.read(ipynb)) == _cells(jupytext.read(py)), (
        f"{ipynb.name} is out of step with {py.name}; run: jupytext --update --to ipynb {py}"
    )


def test_every_notebook_ends_with_tasks_and_hidden_solutions() -> None:
    import jupytext

    for py in sorted(NOTEBOOKS.glob("*.py")):
        cells = jupytext.read(py).cells
        start = next((i for i, c in enumerate(cells) if c.source.startswith("## Your turn")), None)
        assert start is not None, f"{py.name} has no '## Your turn' section"
        text = "\n".join(c.source for c in cells[start:])
        tasks = text.count("**Task ")
        assert 2 <= tasks <= 3, f"{py.name}: {tasks} tasks"
        assert text.count("<details><summary>Solution</summary>") == tasks, py.name
        assert all(c.cell_type == "markdown" for c in cells[start:]), (
            f"{py.name}: the tasks come last, after every code cell"
        )
