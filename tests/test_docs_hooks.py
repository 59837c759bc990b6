"""The MkDocs hook: figure blocks, provenance, numbers in prose, freshness in strict builds."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from mkdocs.exceptions import PluginError
from test_pipeline import make_project

from block4 import docs_hooks, notebook_runner, pipeline, serve_loop


def _entry(name: str, numbers: dict, profile: str = "full") -> dict:
    return {
        "profile": profile,
        "device": "NVIDIA H100 x1",
        "date": "2026-11-27T21:00:00+00:00",
        "fingerprint": "0123456789abcdef" * 4,
        "source": "src/block4/figures/demo.py",
        "line": 9,
        "files": {"light": f"{name}.svg", "dark": f"{name}.dark.svg"},
        "numbers": numbers,
    }


def hook_config(root: Path, repo_url: str = "", edit_uri: str = "") -> SimpleNamespace:
    """The part of MkDocs' config the figure hook reads, for a miniature checkout."""
    return SimpleNamespace(
        config_file_path=str(root / "mkdocs.yml"),
        docs_dir=str(root / "docs"),
        repo_url=repo_url,
        edit_uri=edit_uri,
        plugins={},
    )


@pytest.fixture
def hooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The hook configured for a miniature checkout, with a hand-made status table."""
    root = make_project(tmp_path, with_docs=True)
    config = hook_config(
        root, repo_url="https://example.org/demo/demo/", edit_uri="edit/trunk/docs/"
    )
    monkeypatch.delenv("BLOCK4_MKDOCS_COMMAND", raising=False)
    docs_hooks.on_config(config)
    docs_hooks.on_pre_build(config)
    fresh = pipeline.FigureStatus(
        "line_plot", "fresh", entry=_entry("line_plot", {"slope": 2.0, "third": 1 / 3, "n": 5})
    )
    stale = pipeline.FigureStatus(
        "other_plot",
        "stale",
        "changed: block4/helper.py",
        entry=_entry("other_plot", {"end": 0.25}, "quick"),
    )
    never = pipeline.FigureStatus("new_plot", "missing", "never made")
    monkeypatch.setattr(
        docs_hooks._state,
        "status",
        {"line_plot": fresh, "other_plot": stale, "new_plot": never},
    )
    return docs_hooks


def page_markdown(hooks, text: str, src_uri: str = "chapter.md") -> str:
    page = SimpleNamespace(file=SimpleNamespace(src_uri=src_uri))
    return hooks.on_page_markdown(text, page=page, config=None, files=None)


def test_a_figure_reference_becomes_a_figure_with_both_variants_and_provenance(hooks) -> None:
    md = page_markdown(hooks, '![A rising line](figures/line_plot.svg "It rises.")\n')
    assert '<figure class="b4-figure" id="figure-line-plot" markdown="span">' in md
    assert "![A rising line](figures/line_plot.svg#only-light){ loading=lazy }" in md
    assert "![A rising line](figures/line_plot.dark.svg#only-dark){ loading=lazy }" in md
    assert '<figcaption markdown="span">It rises.<br><span class="b4-provenance"' in md
    assert "full profile · NVIDIA H100 x1 · 2026-11-27 · " in md
    assert '<code title="fingerprint">01234567</code>' in md
    assert (
        '<a href="https://example.org/demo/demo/blob/trunk/src/block4/figures/demo.py#L9">'
        "demo.py:9</a>"
    ) in md


def test_relative_paths_attributes_and_indentation_are_kept(hooks) -> None:
    md = page_markdown(
        hooks,
        '    ![Alt](../figures/line_plot.svg "Cap."){ width="400" }\n',
        src_uri="sub/page.md",
    )
    assert '    ![Alt](../figures/line_plot.svg#only-light){ width="400" }' in md
    assert all(line.startswith("    ") for line in md.strip("\n").splitlines())


def test_a_figure_inside_a_sentence_is_left_alone_with_a_warning(
    hooks, caplog: pytest.LogCaptureFixture
) -> None:
    text = 'See ![inline](figures/line_plot.svg) here.\n\n```md\n![A](figures/other_plot.svg "c")\n```\n'
    with caplog.at_level(logging.WARNING, logger="mkdocs"):
        assert page_markdown(hooks, text) == text
    assert "figure 'line_plot' on chapter.md is not on a line of its own" in caplog.text
    assert "other_plot" not in caplog.text  # inside code: neither rewritten nor checked


def test_numbers_are_replaced_with_optional_format_specs(hooks) -> None:
    md = page_markdown(
        hooks,
        "slope {{ line_plot.slope }}, third {{line_plot.third}}, {{ line_plot.third:.2% }}, "
        "n={{ line_plot.n:03d }}; code `{{ line_plot.slope }}` stays.",
    )
    assert md == "slope 2, third 0.3333, 33.33%, n=005; code `{{ line_plot.slope }}` stays."


def test_numbers_inside_fenced_code_stay(hooks) -> None:
    text = "~~~\n{{ nothing.here }}\n~~~\n"
    assert page_markdown(hooks, text) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{ lin_plot.slope }}", "unknown figure 'lin_plot' in {{ lin_plot.slope }} (known: "),
        (
            "{{ line_plot.slop }}",
            "figure 'line_plot' has no number 'slop' (it has: n, slope, third)",
        ),
        ("{{ line_plot.slope:q }}", "{{ line_plot.slope:q }}: bad format spec"),
        ("![x](figures/no_plot.svg)", "unknown figure 'no_plot' (known: line_plot, new_plot"),
        ("![](figures/line_plot.svg)", "figure 'line_plot' has no alt text"),
    ],
)
def test_unknown_names_and_keys_stop_the_build(hooks, text: str, message: str) -> None:
    with pytest.raises(PluginError) as err:
        page_markdown(hooks, text + "\n", src_uri="chapter.md")
    assert "block4: chapter.md: " in str(err.value)
    assert message in str(err.value)


def test_a_stale_figure_on_a_page_warns_with_the_refresh_command(
    hooks, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="mkdocs"):
        md = page_markdown(hooks, '![Other](figures/other_plot.svg "c")\n{{ other_plot.end }}')
    assert "0.25" in md  # the build still shows the last figure and number
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "block4: figure 'other_plot' used on chapter.md is stale (changed: block4/helper.py); "
        "refresh it with: python scripts/make_figures.py --only other_plot"
    ]


def test_a_never_made_figure_warns_and_shows_a_placeholder(
    hooks, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="mkdocs"):
        md = page_markdown(hooks, "value {{ new_plot.anything }}")
    assert 'class="b4-missing-number"' in md
    assert "'new_plot' used on chapter.md is missing (never made)" in caplog.text


NOTEBOOK_USES_HELPER = """\
# %% [markdown]
# # A notebook that scales

# %%
from block4.helper import SCALE

print(SCALE * 2)
"""

NOTEBOOK_USES_UNRELATED = """\
# %%
import block4.unrelated as unrelated

print(unrelated.VALUE)
"""


class _JupyterPlugin:
    """The part of mkdocs-jupyter the hook talks to."""

    def __init__(self) -> None:
        self.config = {"cache": True, "cache_dir": ".cache/mkdocs-jupyter"}

    def should_include(self, file: Any) -> bool:
        return file.src_uri.startswith("notebooks/")


def _notebook_page(root: Path, name: str) -> SimpleNamespace:
    path = root / "docs" / "notebooks" / name
    return SimpleNamespace(
        file=SimpleNamespace(src_uri=f"notebooks/{name}", abs_src_path=str(path))
    )


def test_each_notebook_is_cached_on_its_text_and_the_code_it_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_project(tmp_path, with_docs=True)
    (root / "docs" / "notebooks").mkdir()
    (root / "docs" / "notebooks" / "scales.py").write_text(NOTEBOOK_USES_HELPER)
    (root / "docs" / "notebooks" / "values.py").write_text(NOTEBOOK_USES_UNRELATED)
    plugin = _JupyterPlugin()
    config = SimpleNamespace(**{**vars(hook_config(root)), "plugins": {"mkdocs-jupyter": plugin}})
    monkeypatch.delenv("BLOCK4_MKDOCS_COMMAND", raising=False)

    def build() -> dict[str, str]:
        docs_hooks.on_config(config)
        docs_hooks.on_pre_build(config)
        dirs = {}
        for name in ("scales.py", "values.py"):
            docs_hooks.on_pre_page(_notebook_page(root, name), config=config, files=None)
            dirs[name] = plugin.config["cache_dir"]
        docs_hooks.on_post_build(config)
        return dirs

    first = build()
    assert Path(first["scales.py"]).parent == root / ".cache" / "mkdocs-jupyter"
    assert first["scales.py"] != first["values.py"]
    assert build() == first  # nothing changed: both notebooks come from their caches
    (root / "src" / "block4" / "helper.py").write_text('"""Scales."""\nSCALE = 2.0  # same\n')
    assert build() == first  # a docstring and a comment are not code
    (root / "src" / "block4" / "helper.py").write_text("SCALE = 3.0\n")
    with caplog.at_level(logging.INFO, logger="mkdocs"):
        second = build()
    assert second["values.py"] == first["values.py"]  # does not use the helper: kept
    assert second["scales.py"] != first["scales.py"]  # uses it: runs again, and says why
    assert "notebook scales.py runs again (changed: block4.helper:SCALE)" in caplog.text
    assert "values.py runs again" not in caplog.text
    assert not Path(first["scales.py"]).exists()  # the cache of the old code is removed
    assert Path(second["values.py"]).is_dir()


NOTEBOOK_ANSWERS = """\
# %% [markdown]
# # The answer

# %%
print("The answer is", 6 * 7)
"""

NOTEBOOK_FAILS = """\
# %%
raise ValueError("no answer here")
"""


class _ServeBuild:
    """One checkout's notebook pages through the hook and the real mkdocs-jupyter plugin."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from mkdocs.config.defaults import MkDocsConfig

        self.root = root
        self.docs = root / "docs"
        self.mkdocs = MkDocsConfig()
        self.mkdocs.load_dict({"site_name": "t", "docs_dir": str(self.docs), "site_dir": "s"})
        assert self.mkdocs.validate() == ([], [])
        self.monkeypatch = monkeypatch

    def build(self, *names: str, command: str) -> dict[str, str]:
        """Render ``names`` as a ``command`` build does; their HTML as the hook leaves it."""
        from mkdocs.structure.files import File
        from mkdocs.structure.pages import Page
        from mkdocs_jupyter.plugin import Plugin

        plugin = Plugin()  # a fresh configuration per build, as mkdocs serve reads it
        opts = {"include": ["notebooks/*.py"], "execute": True, "allow_errors": False}
        assert plugin.load_config(opts) == ([], [])
        config = SimpleNamespace(**{**vars(hook_config(self.root)), "plugins": {}})
        config.plugins["mkdocs-jupyter"] = plugin
        self.monkeypatch.delenv("BLOCK4_MKDOCS_COMMAND", raising=False)
        docs_hooks.on_config(config)
        docs_hooks.on_pre_build(config)
        self.monkeypatch.setenv("BLOCK4_MKDOCS_COMMAND", command)
        plugin.on_pre_build(self.mkdocs)
        pages = {}
        for name in names:
            page = Page(None, File(f"notebooks/{name}", str(self.docs), "s", True), self.mkdocs)
            docs_hooks.on_pre_page(page, config=config, files=None)
            plugin.on_pre_page(page, self.mkdocs, None)
            page.render(self.mkdocs, None)
            pages[name] = docs_hooks.on_page_content(page.content, page, config, None)
        docs_hooks.on_post_build(config)
        plugin.on_post_build(self.mkdocs)
        return pages


@pytest.fixture
def background():
    """Waits for the background notebook run the hook started; stops it at the end."""

    def wait(timeout: float = 120.0) -> None:
        end = time.monotonic() + timeout
        while notebook_runner.running() and time.monotonic() < end:
            time.sleep(0.1)
        assert not notebook_runner.running(), "the background run did not finish"

    yield wait
    notebook_runner.stop()


def _jobs() -> list:
    return [job for job, _error in docs_hooks._state.deferred.values()]


def test_serve_shows_uncached_notebooks_at_once_and_fills_them_in_from_the_background_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, background
) -> None:
    root = make_project(tmp_path, with_docs=True)
    (root / "docs" / "notebooks").mkdir()
    (root / "docs" / "notebooks" / "answers.py").write_text(NOTEBOOK_ANSWERS)
    (root / "docs" / "notebooks" / "fails.py").write_text(NOTEBOOK_FAILS)
    serve = _ServeBuild(root, monkeypatch)

    pages = serve.build("answers.py", "fails.py", command="serve")
    for html in pages.values():  # shown at once, without outputs, and saying so
        assert html.startswith('<div class="admonition info block4-notebook-pending"')
        assert 'class="jp-OutputArea jp-Cell-outputArea"' not in html
    assert "print(" in pages["answers.py"]  # the code is there
    jobs = _jobs()
    assert [job.name for job in jobs] == ["answers.py", "fails.py"]
    assert notebook_runner.running()  # started after the build, while the site is served
    background()
    stamp = root / docs_hooks.NOTEBOOK_STAMP
    assert stamp.read_text() == "fails.py\n"  # touched after each: the server rebuilds

    pages = serve.build("answers.py", "fails.py", command="serve")
    answers, fails = pages["answers.py"], pages["fails.py"]
    assert "block4-notebook" not in answers  # its outputs came from the cache entry it wrote
    assert "The answer is 42" in answers
    assert fails.startswith('<div class="admonition failure block4-notebook-failed"')
    assert "ValueError: no answer here" in fails
    assert _jobs() == [jobs[1]]  # shown with its error, not run again until it changes
    assert not notebook_runner.running()
    for folder in (root / docs_hooks.NOTEBOOK_CACHE).iterdir():  # mkdocs-jupyter evicts none
        assert (folder / "deps.json").is_file()

    error = jobs[1].error_file  # written under another server process: a restart tries again
    server, _, rest = error.read_text().partition("\n")
    assert server == str(os.getpid())
    error.write_text(f"1\n{rest}")
    fails = serve.build("answers.py", "fails.py", command="serve")["fails.py"]
    assert fails.startswith('<div class="admonition info block4-notebook-pending"')
    assert notebook_runner.running()
    notebook_runner.stop()

    (root / "docs" / "notebooks" / "fails.py").write_text(NOTEBOOK_FAILS.replace("raise", "# "))
    serve.build("answers.py", "fails.py", command="serve")
    assert [job.name for job in _jobs()] == ["fails.py"]
    assert docs_hooks._state.deferred["notebooks/fails.py"][1] is None  # a new version: pending
    assert notebook_runner.running()


def test_a_strict_build_never_defers_notebooks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(tmp_path, with_docs=True)
    (root / "docs" / "notebooks").mkdir()
    (root / "docs" / "notebooks" / "answers.py").write_text(NOTEBOOK_ANSWERS)
    serve = _ServeBuild(root, monkeypatch)
    monkeypatch.setenv("BLOCK4_DEFER_NOTEBOOKS", "0")
    html = serve.build("answers.py", command="serve")["answers.py"]
    assert "The answer is 42" in html  # serve told not to defer executes before it serves
    monkeypatch.delenv("BLOCK4_DEFER_NOTEBOOKS")
    html = serve.build("answers.py", command="build")["answers.py"]
    assert "The answer is 42" in html and "block4-notebook" not in html  # from the cache
    assert docs_hooks._state.deferred == {}
    assert not docs_hooks.defer_notebooks()


def test_a_bad_defer_setting_stops_the_build_saying_what_is_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BLOCK4_MKDOCS_COMMAND", "serve")
    monkeypatch.setenv("BLOCK4_DEFER_NOTEBOOKS", "yes")
    with pytest.raises(PluginError, match=r"BLOCK4_DEFER_NOTEBOOKS='yes' is not allowed; use 1"):
        docs_hooks.defer_notebooks()
    monkeypatch.setenv("BLOCK4_DEFER_NOTEBOOKS", "1")
    assert docs_hooks.defer_notebooks()
    monkeypatch.setenv("BLOCK4_MKDOCS_COMMAND", "build")
    assert not docs_hooks.defer_notebooks()


def test_the_hook_is_wired_in_mkdocs_yml() -> None:
    text = (Path(__file__).resolve().parents[1] / "mkdocs.yml").read_text()
    assert "  - src/block4/docs_hooks.py" in text
    assert "  - stylesheets/figures.css" in text


# -- real builds ------------------------------------------------------------------------------


def _env(root: Path) -> dict[str, str]:
    # the hook imports the block4 of the checkout it belongs to
    env = dict(os.environ, OMP_NUM_THREADS="1", NO_MKDOCS_2_WARNING="1")
    env["PYTHONPATH"] = str(root / "src")
    env.pop("BLOCK4_FIGURES_PLAN", None)
    env.pop("BLOCK4_MKDOCS_COMMAND", None)
    return env


def _make(root: Path, *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "scripts/make_figures.py", *args],
        cwd=root,
        env=_env(root),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def _build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=root,
        env=_env(root),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_strict_build_passes_when_fresh_and_fails_naming_the_stale_figure(tmp_path: Path) -> None:
    root = make_project(tmp_path / "repo", with_docs=True)
    _make(root, "--profile", "smoke")
    site = tmp_path / "site"
    proc = _build(root, site)
    assert proc.returncode == 0, proc.stderr
    html = (site / "index.html").read_text()
    assert "The slope is 2 and, formatted, 2.00." in html
    assert 'src="figures/line_plot.svg#only-light"' in html
    assert 'src="figures/line_plot.dark.svg#only-dark"' in html
    assert 'alt="A rising line and a reference line"' in html
    assert "The line rises twice as fast." in html
    assert "smoke profile · cpu · " in html
    assert "https://example.org/demo/demo/blob/trunk/src/block4/figures/demo.py#L" in html
    assert "<code>{{ not_a_figure.key }}</code>" in html
    assert (site / "figures" / "line_plot.dark.svg").is_file()

    (root / "src" / "block4" / "unrelated.py").write_text("VALUE = 7\n")
    assert _build(root, site).returncode == 0  # an unrelated edit keeps the site buildable

    (root / "src" / "block4" / "helper.py").write_text("SCALE = 5.0\n")
    proc = _build(root, site)
    assert proc.returncode == 1
    assert (
        "figure 'line_plot' used on index.md is stale (changed: block4.helper:SCALE); "
        "refresh it with: python scripts/make_figures.py --only line_plot"
    ) in proc.stderr
    assert "'other_plot' used on" not in proc.stderr
    assert "Aborted with 2 warnings in strict mode!" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_serve_remakes_stale_figures_before_a_build_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_project(tmp_path / "repo", with_docs=True)
    _make(root, "--profile", "smoke")
    (root / "src" / "block4" / "helper.py").write_text("SCALE = 4.0\n")
    config = hook_config(root)
    monkeypatch.delenv("BLOCK4_MKDOCS_COMMAND", raising=False)
    docs_hooks.on_startup(command="serve", dirty=False)
    try:
        docs_hooks.on_config(config)
        with caplog.at_level(logging.INFO, logger="mkdocs"):
            docs_hooks.on_pre_build(config)
    finally:
        os.environ.pop("BLOCK4_MKDOCS_COMMAND", None)
        serve_loop.close_all()
    assert "re-making figure line_plot (changed: block4.helper:SCALE; quick profile)" in caplog.text
    assert "re-making figure other_plot" not in caplog.text
    status = docs_hooks._state.status
    assert status["line_plot"].fresh
    assert status["line_plot"].entry["profile"] == "quick"  # smoke is never kept
    assert status["line_plot"].entry["numbers"]["slope"] == 4.0
    assert status["other_plot"].entry["profile"] == "smoke"  # fresh figures are not re-made


@pytest.mark.slow
def test_serve_keeps_serving_when_a_figure_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_project(tmp_path / "repo", with_docs=True)
    _make(root, "--profile", "smoke")
    demo = root / "src" / "block4" / "figures" / "demo.py"
    demo.write_text(demo.read_text().replace("    return fig, {", "    1 / 0\n    return fig, {"))
    config = hook_config(root)
    monkeypatch.setenv("BLOCK4_MKDOCS_COMMAND", "serve")
    docs_hooks.on_config(config)
    try:
        with caplog.at_level(logging.WARNING, logger="mkdocs"):
            docs_hooks.on_pre_build(config)
    finally:
        serve_loop.close_all()
    assert "block4: re-making figures failed: line_plot" in caplog.text
    assert docs_hooks._state.status["line_plot"].state == "stale"  # the old figure is shown


def test_a_figure_inside_an_admonition_is_unwrapped_from_its_paragraph(hooks) -> None:
    html = (
        '<div class="admonition"><p><figure class="b4-figure" id="figure-x" markdown="span">\n'
        '<img src="a.svg#only-light" />\n<figcaption markdown="span">Cap <em>x</em></figcaption>\n'
        "</figure></p></div>"
    )
    out = hooks.on_page_content(html, page=None, config=None, files=None)
    assert out == (
        '<div class="admonition"><figure class="b4-figure" id="figure-x">\n'
        '<img src="a.svg#only-light" />\n<figcaption>Cap <em>x</em></figcaption>\n'
        "</figure></div>"
    )


@pytest.mark.slow
def test_a_build_that_imports_another_copy_of_block4_stops_with_advice(tmp_path: Path) -> None:
    root = make_project(tmp_path / "repo", with_docs=True)
    env = dict(_env(root), PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "but Python imports block4 from" in proc.stderr
    assert f"PYTHONPATH={root / 'src'}" in proc.stderr
