"""block4.site_render: figure blocks, numbers in prose and provenance, without MkDocs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from block4 import site_render

ENTRY = {
    "profile": "quick",
    "device": "cpu",
    "date": "2026-11-27T21:00:00+00:00",
    "fingerprint": "89abcdef" * 8,
    "source": "src/block4/figures/demo.py",
    "line": 12,
    "files": {"light": "line_plot.svg", "dark": "line_plot.dark.svg"},
    "numbers": {"slope": 2.0, "third": 1 / 3, "n": 5, "label": "tanh"},
}
STATUS = {
    "line_plot": SimpleNamespace(entry=ENTRY),
    "new_plot": SimpleNamespace(entry=None),
}


def test_a_figure_line_becomes_a_block_and_the_page_reports_it() -> None:
    site = site_render.Site("https://example.org/r", "trunk")
    text, report = site_render.render_page(
        '  ![A line](../figures/line_plot.svg "Rises."){ width="300" }\n', STATUS, site
    )
    lines = text.strip("\n").splitlines()
    assert lines[0] == '  <figure class="b4-figure" id="figure-line-plot" markdown="span">'
    assert lines[1] == '  ![A line](../figures/line_plot.svg#only-light){ width="300" }'
    assert lines[2] == '  ![A line](../figures/line_plot.dark.svg#only-dark){ width="300" }'
    assert 'href="https://example.org/r/blob/trunk/src/block4/figures/demo.py#L12"' in lines[3]
    assert (report.used, report.problems, report.inline) == (["line_plot"], [], [])


def test_numbers_use_their_format_and_code_is_left_alone() -> None:
    text, report = site_render.render_page(
        "{{ line_plot.slope }} {{line_plot.third}} {{ line_plot.third:.1% }} "
        "{{ line_plot.label }} `{{ line_plot.n }}`\n```\n{{ x.y }}\n```\n{{ new_plot.n }}",
        STATUS,
    )
    assert text.startswith("2 0.3333 33.3% tanh `{{ line_plot.n }}`\n```\n{{ x.y }}\n```\n")
    assert text.endswith('title="figure new_plot was never made">??</span>')
    assert report.used == ["line_plot"] * 4 + ["new_plot"] and not report.problems


@pytest.mark.parametrize(
    ("markdown", "problem"),
    [
        ("{{ nope.x }}", "unknown figure 'nope' in {{ nope.x }} (known: line_plot, new_plot)"),
        ("{{ line_plot.x }}", "figure 'line_plot' has no number 'x' (it has: label, n, slope"),
        ("{{ line_plot.n:z }}", "{{ line_plot.n:z }}: bad format spec"),
        ("![](figures/line_plot.svg)", "figure 'line_plot' has no alt text"),
        ("![a](figures/gone.svg)", "unknown figure 'gone' (known: line_plot, new_plot)"),
    ],
)
def test_problems_are_reported_and_the_text_kept(markdown: str, problem: str) -> None:
    text, report = site_render.render_page(markdown + "\n", STATUS)
    assert len(report.problems) == 1 and report.problems[0].startswith(problem)
    if "figures/" not in markdown:
        assert text == markdown + "\n"


def test_an_inline_figure_is_reported_not_rewritten() -> None:
    text, report = site_render.render_page("See ![x](figures/line_plot.svg) here.", STATUS)
    assert text == "See ![x](figures/line_plot.svg) here."
    assert report.inline == ["line_plot"]


def test_provenance_without_a_repository_and_escaping() -> None:
    line = site_render.provenance("a<b", {**ENTRY, "device": "<gpu>"})
    assert 'data-figure="a&lt;b"' in line and "&lt;gpu&gt;" in line
    assert line.endswith("demo.py:12</span>")
    assert site_render.format_number(0.000123456, None) == "0.0001235"
    assert site_render.format_number(7, None) == "7"


def test_unwrap_figures_only_touches_figure_blocks() -> None:
    html = '<p><figure class="b4-figure" markdown="span"><figcaption markdown="span">c</figcaption></figure></p>'
    assert site_render.unwrap_figures(html) == (
        '<figure class="b4-figure"><figcaption>c</figcaption></figure>'
    )
    assert site_render.unwrap_figures('<p markdown="span">x</p>') == '<p markdown="span">x</p>'
