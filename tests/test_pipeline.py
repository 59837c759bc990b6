"""Unit tests of block4.pipeline: discovery, dependencies, fingerprints, status, numbers.

They work on a small project written into a temporary directory (``make_project``), never on
docs/figures. The end-to-end runs of the command line are in test_make_figures.py.
"""

from __future__ import annotations

import json
import math
import shutil
import textwrap
from pathlib import Path

import pytest

from block4 import figure_env, pipeline, style

ROOT = Path(__file__).resolve().parents[1]

DEMO = '''\
"""Demo figures for the pipeline tests."""
import os
import time

from block4.figures.registry import FigureContext, figure
from block4.style import PALETTE, subplots


@figure("line_plot", chapter="demo", params={"n": 5, "label": "a line"})
def line_plot(ctx: FigureContext, n: int, label: str):
    from block4 import helper  # an import inside the function is a dependency too

    fig, ax = subplots(width=3, height=2)
    xs = list(range(n))
    ax.plot(xs, [helper.SCALE * x for x in xs], color=PALETTE[0], label=label)
    ax.plot(xs, xs, color="black", label="reference")
    ax.set_xlabel("x (units)")
    ax.set_ylabel("y (units)")
    ax.legend()
    return fig, {"slope": helper.SCALE, "n": n, "profile": ctx.profile, "ok": True}


'''

DEMO2 = '''\
"""A second figure module that does not use block4.helper."""
from block4.figures.registry import FigureContext, figure
from block4.style import subplots


@figure("other_plot", chapter="demo2")
def other_plot(ctx: FigureContext):
    fig, ax = subplots(width=3, height=2)
    ax.plot([0, 1], [1, ctx.pick(smoke=0.5, quick=0.25, full=0.125)])
    ax.set_title("other")
    return fig, {"end": ctx.pick(smoke=0.5, quick=0.25, full=0.125)}
'''

MKDOCS_YML = """\
site_name: demo
site_url: http://localhost:8000/
repo_url: https://example.org/demo/demo
edit_uri: edit/trunk/docs/
theme:
  name: material
  font: false
markdown_extensions:
  - attr_list
  - md_in_html
hooks:
  - src/block4/docs_hooks.py
watch:
  - src
"""

INDEX_MD = """\
# Demo

The slope is {{ line_plot.slope }} and, formatted, {{ line_plot.slope:.2f }}.

![A rising line and a reference line](figures/line_plot.svg "The line rises twice as fast.")

![Another line](figures/other_plot.svg "Another takeaway.")

`{{ not_a_figure.key }}` stays as it is in code.
"""


def make_project(tmp: Path, *, with_docs: bool = False) -> Path:
    """A miniature checkout: the real pipeline, registry, style and hook, plus demo figures."""
    src = tmp / "src" / "block4"
    (src / "figures").mkdir(parents=True)
    for rel in (
        "__init__.py",
        "code_closure.py",
        "pipeline_sources.py",
        "figure_env.py",
        "results_cache.py",
        "pipeline.py",
        "figure_runs.py",
        "worker_pool.py",
        "make_figures.py",
        "compare.py",
        "compare_options.py",
        "figure_diff.py",
        "prose_diff.py",
        "stop_signals.py",
        "figure_output.py",
        "figure_options.py",
        "docs_hooks.py",
        "site_render.py",
        "notebook_runner.py",
        "serve_loop.py",
        "warm_figures.py",
        "figures/__init__.py",
        "figures/registry.py",
        "style.py",
    ):
        shutil.copy(ROOT / "src" / "block4" / rel, src / rel)
    (src / "helper.py").write_text("SCALE = 2.0\n")
    (src / "unrelated.py").write_text("VALUE = 1\n")
    (src / "figures" / "demo.py").write_text(DEMO)
    (src / "figures" / "demo2.py").write_text(DEMO2)
    (tmp / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "make_figures.py", tmp / "scripts" / "make_figures.py")
    if with_docs:
        (tmp / "docs").mkdir()
        (tmp / "mkdocs.yml").write_text(MKDOCS_YML)
        (tmp / "docs" / "index.md").write_text(INDEX_MD)
    return tmp


@pytest.fixture
def project(tmp_path: Path) -> pipeline.Project:
    return pipeline.Project(make_project(tmp_path))


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


# -- discovery --------------------------------------------------------------------------------


def test_discover_reads_names_chapters_and_params(project: pipeline.Project) -> None:
    figures = pipeline.discover(project)
    assert list(figures) == ["line_plot", "other_plot"]
    line = figures["line_plot"]
    assert line.chapter == "demo"
    assert line.params == {"n": 5, "label": "a line"}
    assert line.module == "block4.figures.demo"
    assert line.function == "line_plot"
    assert line.path == project.figures_dir / "demo.py"
    assert figures["other_plot"].params == {}
    assert figures["other_plot"].module == "block4.figures.demo2"


def test_discover_rejects_non_literal_arguments(project: pipeline.Project) -> None:
    write(
        project.figures_dir / "bad.py",
        """
        from block4.figures.registry import figure
        N = 3
        @figure("bad_plot", chapter="demo", params={"n": N})
        def bad_plot(ctx, n):
            pass
        """,
    )
    with pytest.raises(
        pipeline.PipelineError, match=r"bad.py:4: params of @figure must be a literal"
    ):
        pipeline.discover(project)


def test_discover_reads_groups_and_rejects_bad_ones(project: pipeline.Project) -> None:
    write(
        project.figures_dir / "grouped.py",
        """
        from block4.figures.registry import figure
        @figure("first_plot", chapter="demo", group="shared")
        def first_plot(ctx):
            pass
        @figure("second_plot", chapter="demo", params={}, group="shared")
        def second_plot(ctx):
            pass
        """,
    )
    figures = pipeline.discover(project)
    assert figures["first_plot"].group == figures["second_plot"].group == "shared"
    assert figures["line_plot"].group is None
    write(
        project.figures_dir / "grouped.py",
        """
        from block4.figures.registry import figure
        @figure("first_plot", chapter="demo", group="")
        def first_plot(ctx):
            pass
        """,
    )
    with pytest.raises(
        pipeline.PipelineError,
        match="grouped.py:3: group of figure 'first_plot' must be a non-empty string, got ''",
    ):
        pipeline.discover(project)


def test_a_group_is_not_part_of_the_fingerprint_header(project: pipeline.Project) -> None:
    info = pipeline.discover(project)["other_plot"]
    grouped = pipeline.FigureInfo(**{**info.__dict__, "group": "g"})
    deps = {"src/block4/figures/demo2.py": "0" * 64}
    assert pipeline._fingerprint_of(grouped, "quick", 0, deps) == pipeline._fingerprint_of(
        info, "quick", 0, deps
    )


def test_discover_rejects_duplicate_and_badly_named_figures(project: pipeline.Project) -> None:
    write(
        project.figures_dir / "dup.py",
        """
        from block4.figures import registry
        @registry.figure("line_plot", chapter="demo")
        def again(ctx):
            pass
        """,
    )
    with pytest.raises(pipeline.PipelineError, match="'line_plot' is defined twice"):
        pipeline.discover(project)
    write(
        project.figures_dir / "dup.py",
        """
        from block4.figures.registry import figure
        @figure("Bad-Name", chapter="demo")
        def again(ctx):
            pass
        """,
    )
    with pytest.raises(pipeline.PipelineError, match="must be snake_case"):
        pipeline.discover(project)


def test_discover_rejects_a_figure_that_is_not_at_the_top_level(
    project: pipeline.Project,
) -> None:
    write(
        project.figures_dir / "nested.py",
        """
        from block4.figures.registry import figure
        class Holder:
            @figure("nested_plot", chapter="demo")
            def nested_plot(self, ctx):
                pass
        """,
    )
    with pytest.raises(pipeline.PipelineError, match=r"nested.py:4: @figure must decorate"):
        pipeline.discover(project)


def test_discover_reports_a_syntax_error_with_file_and_line(project: pipeline.Project) -> None:
    (project.figures_dir / "broken.py").write_text("def f(:\n")
    with pytest.raises(pipeline.PipelineError, match=r"broken.py:1: cannot parse"):
        pipeline.discover(project)


# -- dependencies -----------------------------------------------------------------------------


def test_dependencies_follow_names_transitively(project: pipeline.Project) -> None:
    pkg = project.package_dir
    write(pkg / "sub" / "__init__.py", "")
    write(
        pkg / "sub" / "leaf.py", "import math\ndef leaf_value():\n    return math.pi\nOTHER = 1\n"
    )
    write(
        pkg / "sub" / "mid.py",
        """
        from ..helper import SCALE
        from . import leaf

        def mid_value():
            return leaf.leaf_value() * SCALE

        def unused():
            return 0
        """,
    )
    write(pkg / "_data" / "table.csv", "a,b\n1,2\n")
    write(pkg / "loader.py", 'FILE = "table.csv"\ndef load():\n    return FILE\n')
    write(
        project.figures_dir / "deps.py",
        """
        import torch  # not part of block4: ignored
        from block4.figures.registry import figure

        @figure("deps_plot", chapter="demo")
        def deps_plot(ctx):
            from block4.sub import mid
            import block4.loader
            return mid.mid_value(), block4.loader.load(), torch.zeros(1)
        """,
    )
    info = pipeline.discover(project)["deps_plot"]
    deps = pipeline.dependencies(project, info)
    own = ("block4.figures.registry", "block4.style")
    code = {
        k
        for k in deps
        if ":" in k and not k.endswith(("<top level>", ":*")) and not k.startswith(own)
    }
    assert code == {
        "block4.figures.deps:deps_plot",
        "block4.sub.mid:mid_value",
        "block4.sub.leaf:leaf_value",
        "block4.helper:SCALE",
        "block4.loader:load",
        "block4.loader:FILE",
    }
    assert "block4/_data/table.csv" in deps  # data named by a string: by its bytes
    assert "block4.figures.registry:FigureContext" in deps  # every figure gets a context
    assert "block4.style:*" in deps  # and is drawn in the style
    # importing a module runs its top-level code and that of the packages above it
    tops = {"block4:<top level>", "block4.sub:<top level>", "block4.sub.mid:<top level>"}
    assert tops <= set(deps)
    assert all(len(d) == 64 for d in deps.values())


def test_load_imports_follow_what_runs_when_a_module_loads(project: pipeline.Project) -> None:
    pkg = project.package_dir
    write(pkg / "sub" / "__init__.py", "import numpy\n")
    write(pkg / "sub" / "heavy.py", "import pytorch_lightning as pl\n")
    write(
        pkg / "sub" / "light.py",
        """
        from typing import TYPE_CHECKING
        import matplotlib.pyplot as plt
        from torch import nn

        if TYPE_CHECKING:
            import torchmetrics
        else:
            import base64
        if not TYPE_CHECKING:
            import csv
        match 1:
            case 1:
                import zlib

        def later():
            from . import heavy
            import scipy

        class Model:
            import json

            def method(self):
                import sqlite3
        """,
    )
    write(pkg / "sub" / "chain.py", "from .light import plt\nfrom block4.sub import heavy\n")
    write(
        project.figures_dir / "uses.py",
        """
        try:
            import gzip
        except ImportError:
            import bz2
        from block4.sub.light import later
        from block4.figures.registry import figure

        @figure("uses_plot", chapter="demo")
        def uses_plot(ctx):
            return later()
        """,
    )
    sources = pipeline.Sources(project)
    # parent packages (block4.sub imports numpy), class bodies, both ways of an if (but not
    # the body of `if TYPE_CHECKING:`), match cases run; function bodies do not
    light = {"typing", "matplotlib", "torch", "numpy", "base64", "csv", "zlib", "json"}
    assert sources.load_imports("block4.sub.light") == light
    assert sources.load_imports("block4.sub.chain") == light | {"pytorch_lightning"}
    module = sources.load_imports("block4.figures.uses")
    assert module == light | {"gzip", "bz2"} | sources.load_imports("block4.figures.registry")
    assert "pytorch_lightning" not in module
    # the figure's function calls later(), which imports Lightning (through heavy) and scipy
    called = sources.load_imports("block4.figures.uses", "uses_plot")
    assert called == module | {"pytorch_lightning", "scipy"}


def test_line_plot_depends_on_helper_but_not_on_unrelated(project: pipeline.Project) -> None:
    figures = pipeline.discover(project)
    line = pipeline.dependencies(project, figures["line_plot"])
    other = pipeline.dependencies(project, figures["other_plot"])
    assert "block4.helper:SCALE" in line
    assert not any(k.startswith("block4.unrelated") for k in line)
    assert not any(k.startswith("block4.helper") for k in other)
    assert "block4.figures.demo:line_plot" not in other


def _fingerprints(project: pipeline.Project) -> dict[str, str]:
    figures = pipeline.discover(project)
    return {n: pipeline.fingerprint(project, i, "smoke", 0) for n, i in figures.items()}


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


TWO = """\
from block4.figures.registry import figure
from block4.style import subplots

UNUSED = 1
LABEL = "shared"


def _shared_curve(n, scale=2.0):
    return [scale * x for x in range(n)]


@figure("a_plot", chapter="demo")
def a_plot(ctx):
    fig, ax = subplots()
    ax.plot(_shared_curve(3), label=LABEL)
    ax.set_ylim(0, 10)
    return fig, {"a": 1}


@figure("b_plot", chapter="demo")
def b_plot(ctx):
    fig, ax = subplots()
    ax.plot(_shared_curve(4))
    return fig, {"b": 1}
"""


def test_editing_one_figure_function_makes_only_that_figure_stale(
    project: pipeline.Project,
) -> None:
    two = project.figures_dir / "two.py"
    two.write_text(TWO)
    base = _fingerprints(project)

    def changed() -> set[str]:
        now = _fingerprints(project)
        return {n for n in now if now[n] != base[n]}

    _edit(two, "ax.set_ylim(0, 10)", "ax.set_ylim(0, 12)")  # a plotting edit in a_plot
    assert changed() == {"a_plot"}
    two.write_text(TWO)
    _edit(two, "scale=2.0", "scale=3.0")  # a default value of a shared helper
    assert changed() == {"a_plot", "b_plot"}
    two.write_text(TWO)
    _edit(two, 'LABEL = "shared"', 'LABEL = "other"')  # a constant only a_plot uses
    assert changed() == {"a_plot"}
    two.write_text(TWO)
    _edit(two, "UNUSED = 1", "UNUSED = 2")  # used by no figure
    _edit(two, "def _shared_curve", "def _new_helper():\n    return 0\n\n\ndef _shared_curve")
    assert changed() == set()
    (project.package_dir / "helper.py").write_text("SCALE = 3.0\n")  # used by line_plot only
    assert changed() == {"line_plot"}


def test_methods_decorators_and_base_classes_are_followed(project: pipeline.Project) -> None:
    write(
        project.package_dir / "shapes.py",
        """
        import functools

        def traced(func):
            return functools.wraps(func)(lambda *a: func(*a))

        class Base:
            def area(self):
                return 0

        class Square(Base):
            @traced
            def area(self):
                return self.side() ** 2

            def side(self):
                return 2
        """,
    )
    write(
        project.figures_dir / "cls.py",
        """
        from block4.figures.registry import figure
        from block4.shapes import Square

        @figure("square_plot", chapter="demo")
        def square_plot(ctx):
            return None, {"area": Square().area()}
        """,
    )
    base = _fingerprints(project)["square_plot"]
    shapes = project.package_dir / "shapes.py"
    for old, new in [
        ("return 2", "return 3"),  # a method the figure calls only indirectly
        ("return functools.wraps(func)(lambda *a: func(*a))", "return func"),  # a decorator
        ("return 0", "return -1"),  # the base class
    ]:
        text = shapes.read_text()
        _edit(shapes, old, new)
        assert _fingerprints(project)["square_plot"] != base, old
        shapes.write_text(text)
    assert _fingerprints(project)["square_plot"] == base


@pytest.mark.parametrize(
    ("module", "use"),
    [
        # getattr on a module: the name cannot be read from the syntax tree
        ("from block4 import dyn", 'getattr(dyn, "NAME" + "S")'),
        # globals() inside the module
        ("from block4.dyn import lookup", 'lookup("NAMES")'),
        # a star import: any name may come from it
        ("from block4.dyn import *", "NAMES"),
        # a module named by a string
        ("import importlib", 'importlib.import_module("block4.dyn").NAMES'),
    ],
)
def test_what_cannot_be_resolved_statically_falls_back_to_the_whole_module(
    project: pipeline.Project, module: str, use: str
) -> None:
    dyn = project.package_dir / "dyn.py"
    dyn.write_text("NAMES = ['a']\nHIDDEN = 1\n\n\ndef lookup(name):\n    return globals()[name]\n")
    write(
        project.figures_dir / "dynamic.py",
        f"""
        from block4.figures.registry import figure
        {module}

        @figure("dynamic_plot", chapter="demo")
        def dynamic_plot(ctx):
            return None, {{"n": len({use})}}
        """,
    )
    base = _fingerprints(project)
    info = pipeline.discover(project)["dynamic_plot"]
    assert "block4.dyn:*" in pipeline.dependencies(project, info)
    _edit(dyn, "HIDDEN = 1", "HIDDEN = 2")  # a name the figure never spells out
    now = _fingerprints(project)
    assert {n for n in now if now[n] != base[n]} == {"dynamic_plot"}


def test_the_code_index_makes_a_no_change_check_parse_nothing(project: pipeline.Project) -> None:
    first = pipeline.Sources(project)
    info = pipeline.discover(project)["line_plot"]
    pipeline.update_manifest(project, "line_plot", _fake_entry(project, "line_plot"))
    status = pipeline.figure_status(project, sources=first)  # keeps its analysis
    assert status["line_plot"].fresh
    assert first.index_path.is_file()
    again = pipeline.Sources(project)
    deps = pipeline.dependencies(project, info, sources=again)
    assert deps == pipeline.dependencies(project, info, sources=first)
    assert again._trees == {}  # every digest and dependency came from the index
    (project.package_dir / "helper.py").write_text("SCALE = 5.0\n")
    edited = pipeline.dependencies(project, info, sources=pipeline.Sources(project))
    assert edited["block4.helper:SCALE"] != deps["block4.helper:SCALE"]
    first.index_path.write_text("{broken")  # a damaged index is ignored
    assert pipeline.figure_status(project)["line_plot"].reason == "changed: block4.helper:SCALE"


def test_the_code_index_keeps_the_figure_declarations_until_a_file_changes(
    project: pipeline.Project,
) -> None:
    read = pipeline.discover(project)
    pipeline.figure_status(project)  # saves the index, declarations included
    again = pipeline.Sources(project)
    assert pipeline.discover(project, sources=again) == read
    assert again._trees == {}  # nothing was parsed
    _edit(project.figures_dir / "demo.py", '"n": 5', '"n": 7')
    edited = pipeline.discover(project, sources=pipeline.Sources(project))
    assert edited["line_plot"].params == {"n": 7, "label": "a line"}
    assert edited["other_plot"] == read["other_plot"]


# -- fingerprints -----------------------------------------------------------------------------


def test_fingerprint_changes_with_sources_params_profile_and_seed(
    project: pipeline.Project,
) -> None:
    info = pipeline.discover(project)["line_plot"]
    base = pipeline.fingerprint(project, info, "smoke", 0)
    assert base == pipeline.fingerprint(project, info, "smoke", 0)
    assert base != pipeline.fingerprint(project, info, "quick", 0)
    assert base != pipeline.fingerprint(project, info, "smoke", 1)
    changed = pipeline.FigureInfo(**{**info.__dict__, "params": {"n": 6, "label": "a line"}})
    assert base != pipeline.fingerprint(project, changed, "smoke", 0)
    (project.package_dir / "helper.py").write_text("SCALE = 3.0\n")
    assert base != pipeline.fingerprint(project, info, "smoke", 0)
    (project.package_dir / "helper.py").write_text("SCALE = 2.0\n")
    assert base == pipeline.fingerprint(project, info, "smoke", 0)
    (project.package_dir / "unrelated.py").write_text("VALUE = 2\n")
    assert base == pipeline.fingerprint(project, info, "smoke", 0)


def test_comments_docstrings_and_layout_do_not_change_the_fingerprint(
    project: pipeline.Project,
) -> None:
    info = pipeline.discover(project)["line_plot"]
    base = pipeline.fingerprint(project, info, "smoke", 0)
    helper = project.package_dir / "helper.py"
    helper.write_text('"""Scales."""\n\n# the scale of every line\nSCALE = (\n    2.0\n)\n')
    assert base == pipeline.fingerprint(project, info, "smoke", 0)
    helper.write_text('"""Scales."""\nSCALE = 2.0\nOTHER = "text"\n')  # an unused name does not
    assert base == pipeline.fingerprint(project, info, "smoke", 0)
    helper.write_text('"""Scales."""\nSCALE = 2.0\nprint("hello")\n')  # code run on import does
    assert base != pipeline.fingerprint(project, info, "smoke", 0)


def test_code_signature_keeps_code_and_drops_docstrings() -> None:
    import ast

    def sig(text: str) -> str:
        return pipeline.code_signature(ast.parse(textwrap.dedent(text)))

    plain = sig("def f(x):\n    return x + 1\n")
    assert plain == sig('def f(x):\n    """Add one."""\n    # comment\n    return x + 1\n')
    assert plain != sig("def f(x):\n    return x + 2\n")
    # a function whose body is only a docstring still has a body
    assert sig('def g():\n    """Nothing."""\n') == sig("def g():\n    pass\n")
    # a string that is not the first statement is code, not a docstring
    assert sig('def h():\n    x = 1\n    "kept"\n') != sig("def h():\n    x = 1\n")


# -- status -----------------------------------------------------------------------------------


def _fake_entry(project: pipeline.Project, name: str, profile: str = "full") -> dict:
    """A manifest entry as a run with ``profile`` would record it (files written too)."""
    info = pipeline.discover(project)[name]
    deps = pipeline.dependencies(project, info)
    files = {"light": f"{name}.svg", "dark": f"{name}.dark.svg"}
    project.out_dir.mkdir(parents=True, exist_ok=True)
    for f in files.values():
        (project.out_dir / f).write_text("<svg/>")
    return {
        "format": pipeline.FORMAT_VERSION,
        "profile": profile,
        "seed": 0,
        "params": info.params,
        "function": info.function,
        "module": info.module,
        "fingerprint": pipeline.fingerprint(project, info, profile, 0),
        "sources": {k: v[:16] for k, v in deps.items()},
        "files": files,
        "numbers": {},
    }


def test_status_is_judged_against_the_recorded_profile(project: pipeline.Project) -> None:
    status = pipeline.figure_status(project)
    assert {n: s.state for n, s in status.items()} == {
        "line_plot": "missing",
        "other_plot": "missing",
    }
    pipeline.update_manifest(project, "line_plot", _fake_entry(project, "line_plot", "full"))
    status = pipeline.figure_status(project)
    assert status["line_plot"].state == "fresh"  # made with `full`: fresh, whatever the default
    (project.package_dir / "helper.py").write_text("SCALE = 4.0\n")
    status = pipeline.figure_status(project)
    assert status["line_plot"].state == "stale"
    assert status["line_plot"].reason == "changed: block4.helper:SCALE"
    assert status["other_plot"].state == "missing"


def test_a_deleted_file_means_missing_and_an_edited_one_stale(project: pipeline.Project) -> None:
    entry = _fake_entry(project, "line_plot")
    entry["sha256"] = {"line_plot.svg": pipeline._file_digest(project.out_dir / "line_plot.svg")}
    pipeline.update_manifest(project, "line_plot", entry)
    assert pipeline.figure_status(project)["line_plot"].fresh
    (project.out_dir / "line_plot.svg").write_text("<svg>edited</svg>")
    st = pipeline.figure_status(project)["line_plot"]
    assert (st.state, st.reason) == ("stale", "line_plot.svg changed outside the pipeline")
    (project.out_dir / "line_plot.dark.svg").unlink()
    st = pipeline.figure_status(project)["line_plot"]
    assert (st.state, st.reason) == ("missing", "file line_plot.dark.svg is missing")


def test_an_entry_without_a_function_is_an_orphan(project: pipeline.Project) -> None:
    entry = _fake_entry(project, "line_plot")
    pipeline.update_manifest(project, "gone_plot", entry)
    status = pipeline.figure_status(project)
    assert status["gone_plot"].state == "orphan"
    pipeline.prune_orphans(project, ["gone_plot"])
    assert "gone_plot" not in pipeline.load_manifest(project)["figures"]
    assert not (project.out_dir / "line_plot.svg").exists()  # the orphan's files are removed


def test_stale_figures_and_refresh_command(project: pipeline.Project) -> None:
    names = [s.name for s in pipeline.stale_figures(project)]
    assert names == ["line_plot", "other_plot"]
    assert pipeline.refresh_command(names) == (
        "python scripts/make_figures.py --only line_plot other_plot"
    )


# -- manifest ---------------------------------------------------------------------------------


def test_manifest_is_written_atomically_and_sorted(project: pipeline.Project) -> None:
    pipeline.update_manifest(project, "b_plot", {"x": 1})
    pipeline.update_manifest(project, "a_plot", {"x": 2})
    text = project.manifest_path.read_text()
    data = json.loads(text)
    assert data["format"] == pipeline.FORMAT_VERSION
    assert list(data["figures"]) == ["a_plot", "b_plot"]
    assert text.endswith("}\n")
    assert [p.name for p in project.out_dir.iterdir() if ".tmp" in p.name] == []
    pipeline.update_manifest(project, "b_plot", None)
    assert list(pipeline.load_manifest(project)["figures"]) == ["a_plot"]


def test_atomic_write_leaves_the_old_file_when_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f.svg"
    target.write_bytes(b"old")

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.svg"]


def test_a_broken_manifest_is_reported(project: pipeline.Project) -> None:
    project.out_dir.mkdir(parents=True)
    project.manifest_path.write_text("{not json")
    with pytest.raises(pipeline.PipelineError, match="manifest.json is not valid JSON"):
        pipeline.load_manifest(project)


# -- numbers and inputs -----------------------------------------------------------------------


def test_validate_numbers_accepts_plain_values() -> None:
    numbers = {"a": 1, "b": 0.5, "c": "text", "d": True}
    assert pipeline.validate_numbers("f", numbers) == numbers


@pytest.mark.parametrize(
    ("numbers", "message"),
    [
        ([1, 2], "the second item is a list"),
        ({"a b": 1}, "must be an identifier"),
        ({"a": float("nan")}, "JSON has no NaN/inf"),
        ({"a": [1, 2]}, "numbers\\['a'\\] is a builtins.list; allowed are float, int, str"),
        ({"a": {"nested": 1}}, "is a builtins.dict"),
    ],
)
def test_validate_numbers_rejects_bad_values(numbers, message) -> None:
    with pytest.raises(pipeline.PipelineError, match=message):
        pipeline.validate_numbers("f", numbers)


def test_validate_numbers_names_numpy_scalars() -> None:
    import numpy as np

    assert pipeline.validate_numbers("f", {"a": np.float64(0.5)}) == {"a": 0.5}
    with pytest.raises(pipeline.PipelineError, match=r"numpy.int64.*int\(\.\.\.\)"):
        pipeline.validate_numbers("f", {"a": np.int64(3)})


# -- dark variant -----------------------------------------------------------------------------


def test_dark_colour_mirrors_neutrals_and_keeps_data_colours() -> None:
    from matplotlib.colors import to_hex

    assert to_hex(style.dark_colour("black")) == style.DARK_FOREGROUND
    assert to_hex(style.dark_colour("white")) == style.DARK_BACKGROUND
    for colour in style.PALETTE[1:6]:  # light enough for a dark page: kept exactly
        assert style.dark_colour(colour) == colour
    blue = style.dark_colour(style.PALETTE[0])  # too dark on a dark page: lightened, same hue
    assert to_hex(blue) == "#4095c5"
    assert style.dark_colour("none") == "none"
    assert style.dark_colour((0, 0, 0, 0.5))[3] == 0.5


def test_render_gives_a_recoloured_dark_svg_deterministically() -> None:
    def draw():
        fig, ax = style.subplots(width=3, height=2)
        ax.plot([0, 1], [0, 1], color=style.PALETTE[2], label="data")
        ax.plot([0, 1], [1, 0], color="black", label="reference")
        ax.set_xlabel("x (m)")
        ax.legend()
        return fig

    light, dark = pipeline.render(draw())
    light2, dark2 = pipeline.render(draw())
    assert (light, dark) == (light2, dark2)  # byte-identical for the same figure
    assert b"Date" not in light and b"<dc:date>" not in light
    assert style.PALETTE[2].lower().encode() in dark.lower()  # a data colour kept
    assert style.DARK_FOREGROUND.encode() in dark  # text, spines and the black line
    assert b"#000000" in light and b"#000000" not in dark


def _drawn(fig) -> list:
    draws: list = []
    fig.canvas.mpl_connect("draw_event", lambda event: draws.append(event))
    return draws


def _painted(svg: bytes) -> list[tuple[str, str, str]]:
    """``(element, fill, stroke)`` of every text and path as a browser paints it: a missing
    fill is inherited from the root element (SVG's default: black)."""
    import re

    root = re.search(rb"<svg ([^>]*)>", svg).group(1)
    default = re.search(rb"fill: (#[0-9a-f]{6})", root)
    default_fill = default.group(1).decode() if default else "#000000"
    out = []
    for tag, attrs in re.findall(rb"<(text|path|use)\b([^>]*?)/?>", svg):
        css = (
            dict(
                part.split(":", 1)
                for part in re.findall(rb'style="([^"]*)"', attrs)[0].decode().split(";")
                if ":" in part
            )
            if b"style=" in attrs
            else {}
        )
        css = {k.strip(): v.strip() for k, v in css.items()}
        if tag != b"path" or b" id=" not in attrs:  # definitions are painted where used
            out.append((tag.decode(), css.get("fill", default_fill), css.get("stroke", "none")))
    return out


def _example_figure():
    fig, axes = style.subplots(1, 2, width=5, height=2)
    for ax in axes:
        ax.plot([0, 1], [0, 1000], label="a long legend entry")
        ax.plot([0, 1], [1000, 0], "o-", color="black", label="black line, black markers")
        ax.bar([0.2, 0.6], [300, 600], width=0.2, alpha=0.6, label="bars with alpha, no edge")
        ax.fill_between([0, 1], [100, 200], [300, 500], color=style.PALETTE[1], alpha=0.2)
        ax.text(0.5, 800, "#ffffff stays text", bbox={"facecolor": "white", "edgecolor": "0.5"})
        ax.set_ylabel("a label that constrained layout makes room for")
        ax.legend()
    return fig


def test_the_dark_svg_is_the_light_one_recoloured_without_a_second_drawing(monkeypatch) -> None:
    import re

    fig = _example_figure()
    draws = _drawn(fig)
    light, dark = pipeline.render(fig)
    assert len(draws) == 2  # the light file: a layout pass and the drawing; the dark: none
    # the same drawing: identical geometry, colours mapped, the text content untouched
    assert re.sub(rb"#[0-9a-f]{6}|fill: none", b"", dark).count(b"<path") == light.count(b"<path")
    assert b"#ffffff stays text" in dark and b"#000000" not in dark
    assert re.findall(rb'id="block4-background-\d+">\s*<path [^>]*style="fill: none"', dark)
    # ...and painted exactly as recolouring the artists and drawing again paints it
    monkeypatch.setattr(style, "recolourable", lambda fig: False)
    again = _example_figure()
    redrawn = _drawn(again)
    _, slow = pipeline.render(again)
    assert len(redrawn) == 3  # the fallback: light (layout pass + drawing), dark (drawing)
    # (the same up to rounding: the recoloured file starts from the 8-bit light colours)
    assert len(_painted(dark)) == len(_painted(slow))
    for fast_one, slow_one in zip(_painted(dark), _painted(slow), strict=True):
        assert fast_one[0] == slow_one[0]
        for a, b in zip(fast_one[1:], slow_one[1:], strict=True):
            assert a == b or max(abs(int(a[i : i + 2], 16) - int(b[i : i + 2], 16))
                                 for i in (1, 3, 5)) <= 2, (fast_one, slow_one)  # fmt: skip
    assert ("text", style.DARK_FOREGROUND, "none") in _painted(dark)  # black text -> light grey


def test_the_dark_svg_of_colour_mapped_or_rasterized_data_is_drawn_again() -> None:
    import re

    for draw in (
        lambda ax: ax.scatter([0, 1, 2], [0, 1, 0], c=[0.0, 0.5, 1.0], cmap="Greys"),
        lambda ax: ax.plot(range(50), ".", color="black", rasterized=True),
        lambda ax: ax.xaxis.label.set_rasterized(True),  # inside an axis, not a tick
    ):
        fig, axes = style.subplots(1, 2, width=5, height=2)
        for ax in axes:
            draw(ax)
            ax.set_ylabel("a label that constrained layout makes room for")
        assert not style.recolourable(fig)
        draws = _drawn(fig)
        light, dark = pipeline.render(fig)
        # constrained layout ran for the light file only; the dark one re-used its positions
        assert fig.get_layout_engine() is None
        assert len(draws) == 3  # light: a layout pass and the drawing; dark: the drawing only
        clip = re.compile(rb'<clipPath id="[^"]+">\s*<rect ([^/]+)/>')
        assert clip.findall(light) == clip.findall(dark) != []


def test_images_and_plain_artists_keep_the_figure_recolourable() -> None:
    fig, axes = style.subplots(1, 2, width=5, height=2)
    axes[0].imshow([[0.0, 1.0], [1.0, 0.0]], cmap="viridis")  # an image keeps its colours
    axes[1].plot([0, 1], [1, 0], label="line")
    axes[1].legend()
    assert style.recolourable(fig)


def test_recolouring_artists_leaves_invisible_edges_invisible() -> None:
    fig, ax = style.subplots()
    bars = ax.bar([0, 1], [1, 2], alpha=0.5)  # no edge: it must not appear on the dark page
    style.dark_variant(fig)
    for bar in bars:
        assert bar.get_edgecolor()[3] == 0
        assert bar.get_facecolor()[:3] != (0.0, 0.4470588235294118, 0.6980392156862745)


def test_expected_seconds_adds_the_training_of_results_no_longer_cached(tmp_path: Path) -> None:
    from block4.results_cache import expected_seconds, holds

    entry = {
        "wall_time_s": 0.5,
        "results": [
            {"key": "ab12" * 4, "reused": True, "seconds": 20.0},
            {"key": "cd34" * 4, "reused": False, "seconds": 3.0},  # counted in the wall time
        ],
    }
    assert expected_seconds(entry, None) == 20.5  # cache off: everything is computed again
    assert expected_seconds(entry, tmp_path) == 20.5  # the entry is gone
    (tmp_path / "ab").mkdir()
    (tmp_path / "ab" / ("ab12" * 4 + "ff" * 24 + ".npz")).write_bytes(b"")
    assert holds(tmp_path, "ab12" * 4)
    assert expected_seconds(entry, tmp_path) == 0.5  # re-used again: the last wall time
    assert not holds(tmp_path, "../x") and not holds(tmp_path, "")
    assert expected_seconds({}, tmp_path) == 0.0


def test_figures_run_with_a_fixed_cpu_thread_count() -> None:
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        figure_env.reset_torch_globals()
        assert torch.get_num_threads() == pipeline.FIGURE_THREADS == 1
    finally:
        torch.set_num_threads(before)


def test_the_figure_decorator_checks_its_arguments_and_only_marks() -> None:
    from block4.figures import registry
    from block4.figures.registry import FigureMark, figure, figure_mark

    with pytest.raises(ValueError, match="must be snake_case"):
        figure("Bad-Name", chapter="demo")
    with pytest.raises(ValueError, match="group of figure 'ok_name' must be a non-empty string"):
        figure("ok_name", chapter="demo", group="")
    with pytest.raises(ValueError, match="chapter of figure 'ok_name' must be a non-empty"):
        figure("ok_name", chapter="")
    with pytest.raises(ValueError, match="params of figure 'ok_name' must be a dict of keyword"):
        figure("ok_name", chapter="demo", params={"not an identifier": 1})

    def plot(ctx, n):
        return n

    marked = figure("ok_name", chapter="demo", params={"n": 2}, group="g")(plot)
    assert marked is plot  # the same function, only marked
    assert figure_mark(plot) == FigureMark("ok_name", "demo", {"n": 2}, "g")
    assert figure_mark(len) is None
    assert not any(isinstance(v, dict) and "ok_name" in v for v in vars(registry).values())


def test_discover_applies_the_decorator_rules_and_load_figure_checks_the_mark(
    project: pipeline.Project,
) -> None:
    write(
        project.figures_dir / "bad.py",
        """
        from block4.figures.registry import figure
        @figure("bad_plot", chapter="demo", params={"not an identifier": 1})
        def bad_plot(ctx):
            pass
        """,
    )
    with pytest.raises(pipeline.PipelineError, match="bad.py:3: params of figure 'bad_plot'"):
        pipeline.discover(project)
    info = next(iter(pipeline.discover(pipeline.Project(ROOT)).values()))
    func = pipeline.load_figure(info)  # the repository's own figure
    assert func.__name__ == info.function
    renamed = pipeline.FigureInfo(**{**info.__dict__, "name": "another_name"})
    with pytest.raises(pipeline.PipelineError, match=r"is not marked @figure\('another_name'\)"):
        pipeline.load_figure(renamed)


# -- results cache ----------------------------------------------------------------------------


def test_results_round_trip_exactly_and_what_cannot_be_cached_is_named() -> None:
    import numpy as np
    import torch

    from block4 import results_cache

    data = {
        "curve": np.arange(3.0),
        "weights": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
        "steps": 3,
        "diverged": float("nan"),
        "runs": [(1, "tanh"), {"lr": np.float32(0.5)}],
        7: None,
    }
    tree, arrays = results_cache.encode(data)
    back = results_cache.decode(json.loads(json.dumps(tree)), arrays)
    assert list(back) == ["curve", "weights", "steps", "diverged", "runs", 7]
    assert np.array_equal(back["curve"], data["curve"])
    assert back["weights"].dtype == torch.bfloat16
    assert torch.equal(back["weights"], data["weights"])
    assert back["steps"] == 3 and math.isnan(back["diverged"])
    assert back["runs"][0] == (1, "tanh") and back["runs"][1]["lr"] == np.float32(0.5)
    with pytest.raises(TypeError, match=r"results\['model'\] is a torch.nn.modules.linear.Linear"):
        results_cache.encode({"model": torch.nn.Linear(1, 1)})


def test_the_results_cache_reuses_rebuilds_and_keys_on_the_code(
    project: pipeline.Project,
) -> None:
    import dataclasses

    import numpy as np

    from block4.figures.registry import FigureContext
    from block4.results_cache import ResultsCache

    (project.package_dir / "runs.py").write_text(
        "from block4.helper import SCALE\n\n\ndef train(ctx, n):\n    return n * SCALE\n"
    )
    calls: list[int] = []

    def train(ctx: FigureContext, n: int) -> dict:  # stands for block4.runs.train
        calls.append(n)
        return {"curve": np.arange(n) * 2.0, "final": 2.0 * n}

    train.__module__, train.__qualname__ = "block4.runs", "train"
    ctx = FigureContext(profile="smoke")

    def cache(**kw: bool) -> ResultsCache:
        return ResultsCache(project.root / ".cache" / "results", pipeline.Sources(project), **kw)

    first = cache()
    result = first.compute(ctx, train, {"n": 3})
    assert calls == [3] and first.used[0]["reused"] is False
    assert first.used[0]["function"] == "block4.runs:train" and first.used[0]["seconds"] >= 0
    again = cache()
    assert again.compute(ctx, train, {"n": 3})["final"] == result["final"] == 6.0
    assert calls == [3]  # from the cache
    assert again.used[0]["reused"] is True
    assert again.used[0]["computed"] == first.used[0]["computed"]  # provenance of the numbers
    cache().compute(dataclasses.replace(ctx, seed=1), train, {"n": 3})  # another seed
    cache().compute(ctx, train, {"n": 4})  # other arguments
    assert calls == [3, 3, 4]

    entry = first.path(first.key(ctx, train, {"n": 3}))
    entry.write_bytes(entry.read_bytes()[:40])  # a partial entry: ignored and rebuilt
    assert cache().compute(ctx, train, {"n": 3})["final"] == 6.0
    assert calls == [3, 3, 4, 3]
    cache().compute(ctx, train, {"n": 3})
    assert calls == [3, 3, 4, 3]  # rebuilt: used again

    (project.package_dir / "helper.py").write_text("SCALE = 4.0\n")  # code train uses
    cache().compute(ctx, train, {"n": 3})
    assert calls == [3, 3, 4, 3, 3]
    cache(enabled=False).compute(ctx, train, {"n": 3})  # --no-cache
    assert calls == [3, 3, 4, 3, 3, 3]
    shutil.rmtree(project.root / ".cache" / "results")  # safe to delete
    cache().compute(ctx, train, {"n": 3})
    assert len(calls) == 7
    with pytest.raises(TypeError, match="only plain values"):
        cache().compute(ctx, train, {"n": object()})
    assert FigureContext(profile="smoke").compute(train, n=2)["final"] == 4.0  # no pipeline
    assert len(calls) == 8


def test_damaged_and_older_entries_are_stale_with_the_reason(project: pipeline.Project) -> None:
    good = _fake_entry(project, "line_plot")
    assert pipeline.entry_problem(good) == ""
    for damage, reason in [
        ({"files": {"light": "x.svg"}}, "damaged (files missing or of the wrong type)"),
        ({"seed": "0"}, "damaged (seed missing or of the wrong type)"),
        ({"profile": "turbo"}, "names an unknown profile 'turbo'"),
    ]:
        pipeline.update_manifest(project, "line_plot", {**good, **damage})
        st = pipeline.figure_status(project)["line_plot"]
        assert (st.state, st.entry) == ("stale", None)  # shown as never made
        assert reason in st.reason
    pipeline.update_manifest(project, "line_plot", [1, 2])
    assert pipeline.figure_status(project)["line_plot"].reason == (
        "its manifest entry is a list, not a table"
    )
    older = {k: v for k, v in good.items() if k != "format"}
    pipeline.update_manifest(project, "line_plot", older)
    st = pipeline.figure_status(project)["line_plot"]
    assert st.state == "stale" and st.entry == older  # still shown until it is re-made
    assert (
        st.reason == f"made by an older pipeline (format 3 or older, now {pipeline.FORMAT_VERSION})"
    )


def test_figure_runs_hide_only_the_known_harmless_lightning_warnings() -> None:
    """A figure that trains without a validation set (on purpose) prints no warning about
    it; a warning nobody anticipated still reaches the terminal."""
    import warnings

    import torch
    from _helpers import trainer
    from torch.utils.data import DataLoader, TensorDataset

    from block4.modules import Classifier

    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    model = Classifier(in_features=4, n_classes=3, depth=1, width=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figure_env.quiet_lightning()
        trainer().fit(model, DataLoader(TensorDataset(x, y), batch_size=16))
        warnings.warn("an unexpected problem", UserWarning, stacklevel=1)
    messages = [str(w.message) for w in caught]
    assert not any("validation_step" in m for m in messages), messages
    assert "an unexpected problem" in messages
    # without the filter, the same run warns: the test above can fail
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer().fit(
            Classifier(in_features=4, n_classes=3, depth=1, width=8),
            DataLoader(TensorDataset(x, y), batch_size=16),
        )
    assert any("validation_step" in str(w.message) for w in caught)
