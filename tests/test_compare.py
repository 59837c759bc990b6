"""``block4.compare``: what a change did to the figures, against a git revision.

The main scenario is a real one, built once per module in a temporary git repository: a
miniature checkout (this package's own sources, with four tiny demo figures instead of the
chapters) whose figures are made by the real ``scripts/make_figures.py`` (smoke profile) and
committed; then one figure function is edited, one figure module deleted and one added, and
the figures are made again. The comparison against ``HEAD`` must show exactly that.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

from block4 import compare as cmp
from block4.pipeline import Project

ROOT = Path(__file__).resolve().parents[1]

FIGURE = '''\
"""Demo figure {name}."""
from matplotlib.figure import Figure

from block4.figures.registry import FigureContext, figure


@figure("{name}", chapter="{chapter}", params={{"n": 5}})
def {name}(ctx: FigureContext, n: int):
    slope = {slope}
    fig = Figure(figsize=(3, 2))
    ax = fig.add_subplot()
    xs = list(range(n))
    ax.plot(xs, [slope * x for x in xs], color="{colour}")
    ax.set_xlabel("x (units)")
    ax.set_ylabel("y (units)")
    return fig, {{"slope": slope, "end": slope * (n - 1), "n": n, "label": "{name}"}}
'''

#: A page that quotes the figures' numbers (committed with the figures).
PAGE = """\
# Demo

The line rises by {{ line_plot.slope:g }} per step and ends at {{ line_plot.end:g }}.

The other plot keeps its slope of {{ other_plot.slope:g }}.

![A line](figures/line_plot.svg "The line.")
"""

#: A page added by the change under review.
NEW_PAGE = "The new plot's slope is {{ new_plot.slope:g }}.\n"

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.org",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.org",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def git(root: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-c", "commit.gpgsign=false", *args],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
        check=True,
    )
    return proc.stdout


def write_figure(root: Path, module: str, name: str, slope: float, colour: str = "#0072b2") -> None:
    path = root / "src" / "block4" / "figures" / f"{module}.py"
    path.write_text(FIGURE.format(name=name, chapter=module, slope=slope, colour=colour))


def make_figures(root: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "scripts/make_figures.py", "--profile", "smoke", "--no-progress"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def make_checkout(root: Path) -> None:
    """This package's sources with four demo figures (and no chapter figures) in ``root``."""
    shutil.copytree(
        ROOT / "src" / "block4",
        root / "src" / "block4",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    keep = {"__init__.py", "registry.py", "style.py"}
    for path in (root / "src" / "block4" / "figures").glob("*.py"):
        if path.name not in keep:
            path.unlink()
    (root / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "make_figures.py", root / "scripts" / "make_figures.py")
    write_figure(root, "demo", "line_plot", 2.0)
    write_figure(root, "demo2", "other_plot", 1.0)
    write_figure(root, "gone", "gone_plot", 3.0)


@dataclass
class Scenario:
    root: Path
    project: Project
    before: dict[str, bytes]  # committed SVG files by name
    comparison: cmp.Comparison


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    root = tmp_path_factory.mktemp("repo")
    make_checkout(root)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "sources only")
    git(root, "tag", "no-figures")
    make_figures(root)
    (root / "docs" / "demo.md").write_text(PAGE)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "figures")
    figures = root / "docs" / "figures"
    before = {p.name: p.read_bytes() for p in figures.glob("*.svg")}

    # The change under review: one function edited, one figure removed, one added (and a
    # page that quotes the new one).
    write_figure(root, "demo", "line_plot", 2.5, colour="#d55e00")
    (root / "src" / "block4" / "figures" / "gone.py").unlink()
    write_figure(root, "fresh", "new_plot", 4.0)
    (root / "docs" / "guide").mkdir()
    (root / "docs" / "guide" / "new_page.md").write_text(NEW_PAGE)
    make_figures(root)
    project = Project(root)
    return Scenario(root, project, before, cmp.compare(project, "HEAD"))


def change_of(comparison: cmp.Comparison, name: str) -> cmp.FigureChange:
    found = [c for c in comparison.changes if c.name == name]
    assert found, f"{name} not in {[c.name for c in comparison.changes]}"
    return found[0]


# -- the comparison -------------------------------------------------------------------------


def test_only_the_figures_that_differ_are_reported(scenario: Scenario) -> None:
    comparison = scenario.comparison
    assert [(c.name, c.status) for c in comparison.changes] == [
        ("line_plot", "changed"),
        ("new_plot", "new"),
        ("gone_plot", "removed"),
    ]
    assert comparison.unchanged == 1  # other_plot: same code, same numbers, same files
    assert comparison.commit == git(scenario.root, "rev-parse", "HEAD").strip()
    assert comparison.figures_dir == "docs/figures"
    assert "3 figures differ from HEAD" in comparison.headline()


def test_the_changed_sources_are_those_whose_digest_differs(scenario: Scenario) -> None:
    old = json.loads(git(scenario.root, "show", "HEAD:docs/figures/manifest.json"))
    new = json.loads((scenario.root / "docs/figures/manifest.json").read_text())
    old_sources = old["figures"]["line_plot"]["sources"]
    new_sources = new["figures"]["line_plot"]["sources"]
    differing = {
        k
        for k in old_sources.keys() | new_sources.keys()
        if old_sources.get(k) != new_sources.get(k)
    }
    line = change_of(scenario.comparison, "line_plot")
    assert {s.key for s in line.sources} == differing
    # The edited module is named (as a file or as its function), and nothing it did not edit.
    assert differing and all("demo" in key and "demo2" not in key for key in differing)
    assert all(s.kind == "changed" for s in line.sources)
    assert line.settings == [] and not line.same_fingerprint


def test_numbers_before_and_after(scenario: Scenario) -> None:
    line = change_of(scenario.comparison, "line_plot")
    numbers = {n.key: n for n in line.numbers}
    assert set(numbers) == {"slope", "end", "n", "label"}
    assert (numbers["slope"].before, numbers["slope"].after) == (2.0, 2.5)
    assert (numbers["end"].before, numbers["end"].after) == (8.0, 10.0)
    assert numbers["slope"].relative == pytest.approx(0.25)
    assert numbers["end"].relative == pytest.approx(0.25)
    assert [n.key for n in line.moved] == ["end", "slope"]
    assert not numbers["n"].changed and not numbers["label"].changed


def test_images_before_and_after(scenario: Scenario) -> None:
    figures = scenario.root / "docs" / "figures"
    line = change_of(scenario.comparison, "line_plot")
    assert line.before == {
        "light": scenario.before["line_plot.svg"],
        "dark": scenario.before["line_plot.dark.svg"],
    }
    assert line.after == {
        "light": (figures / "line_plot.svg").read_bytes(),
        "dark": (figures / "line_plot.dark.svg").read_bytes(),
    }
    assert line.before["light"] != line.after["light"]
    assert b"#d55e00" in line.after["light"] and b"#d55e00" not in line.before["light"]


def test_a_new_figure_and_a_removed_one(scenario: Scenario) -> None:
    figures = scenario.root / "docs" / "figures"
    new = change_of(scenario.comparison, "new_plot")
    assert new.before == {}
    assert new.after["light"] == (figures / "new_plot.svg").read_bytes()
    assert {n.key: n.after for n in new.numbers}["slope"] == 4.0
    assert all(n.before is None for n in new.numbers)
    gone = change_of(scenario.comparison, "gone_plot")
    assert not (figures / "gone_plot.svg").exists()  # make_figures.py pruned it
    assert gone.after == {}
    assert gone.before["dark"] == scenario.before["gone_plot.dark.svg"]
    assert {n.key: n.before for n in gone.numbers}["slope"] == 3.0


# -- the Markdown summary and the HTML report -----------------------------------------------


def test_markdown_summary_lists_the_changed_function_and_numbers(scenario: Scenario) -> None:
    md = cmp.render_markdown(scenario.comparison)
    line = change_of(scenario.comparison, "line_plot")
    assert md.startswith("### Figures: 3 figures differ from HEAD")
    row = next(r for r in md.splitlines() if r.startswith("| `line_plot`"))
    for source in line.sources:
        assert f"`{source.key}`" in row
    assert "2 of 4" in row and "`slope` 2 → 2.5 (+0.5 (+25 %))" in row
    assert re.search(r"^\| `new_plot` .*\*\*new figure\*\*", md, re.M)
    assert re.search(r"^\| `gone_plot` .*\*\*removed\*\*", md, re.M)
    assert "other_plot" not in md
    assert "| `end` | 8 | 10 | +2 (+25 %) |" in md


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: dict[str, bytes] = {}
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            src = a["src"] or ""
            prefix = "data:image/svg+xml;base64,"
            assert src.startswith(prefix), src[:60]
            self.images[a["alt"] or ""] = base64.b64decode(src[len(prefix) :])
        self.links += [v for k, v in attrs if k in ("href", "src") and v and "://" in v[:12]]


def test_html_report_is_self_contained_with_both_images(scenario: Scenario) -> None:
    page = cmp.render_html(scenario.comparison)
    # Well-formed markup (it parses as XML), readable in both colour schemes.
    ET.fromstring(page.split("\n", 1)[1])
    assert "prefers-color-scheme: dark" in page
    parser = _Images()
    parser.feed(page)
    assert parser.links == []  # nothing is fetched: the page works offline
    line = change_of(scenario.comparison, "line_plot")
    for variant in ("light", "dark"):
        assert parser.images[f"line_plot, {variant}, before"] == line.before[variant]
        assert parser.images[f"line_plot, {variant}, after"] == line.after[variant]
    assert "new_plot, light, after" in parser.images
    assert "new_plot, light, before" not in parser.images and "not at the revision" in page
    assert "gone_plot, dark, before" in parser.images
    assert "gone_plot, dark, after" not in parser.images
    assert not any(alt.startswith("other_plot") for alt in parser.images)
    moved = re.findall(r"<tr class='moved'><td><code>(\w+)</code>", page)
    assert moved == ["end", "slope"]


def test_command_line_writes_both_files_without_torch(scenario: Scenario, tmp_path: Path) -> None:
    run_python = functools.partial(
        subprocess.run,
        cwd=scenario.root,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        timeout=60,
    )
    proc = run_python(
        [sys.executable, "-m", "block4.compare", "HEAD", "--out", str(tmp_path / "r")]
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("3 figures differ from HEAD")
    assert re.search(r"changed +line_plot: .*demo", proc.stdout)
    assert (tmp_path / "r" / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert (tmp_path / "r" / "summary.md").read_text() == cmp.render_markdown(scenario.comparison)
    check = (
        "import sys; from block4 import compare; rc = compare.main(['HEAD', '--out', sys.argv[1]]);"
        "heavy = {'torch', 'matplotlib', 'lightning'} & set(sys.modules); print(sorted(heavy));"
        "sys.exit(rc)"
    )
    proc = run_python([sys.executable, "-c", check, str(tmp_path / "r2")])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("[]"), proc.stdout


# -- bad input: one clear error, exit 2, nothing written ------------------------------------


@pytest.mark.parametrize(
    ("rev", "message"),
    [
        ("no-such-branch", "unknown revision 'no-such-branch'"),
        ("HEAD~5", "unknown revision 'HEAD~5'"),
        ("--all", "'--all' is not a revision"),
        ("no-figures", "has no docs/figures/manifest.json"),
    ],
)
def test_bad_revisions_are_one_clear_error(
    scenario: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture[str], rev: str, message: str
) -> None:
    out = tmp_path / "report"
    assert cmp.main(["--out", str(out), "--", rev], root=scenario.root) == 2
    err = capsys.readouterr().err
    assert err.startswith("compare: error: ") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_outside_a_git_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "docs" / "figures").mkdir(parents=True)
    (tmp_path / "docs" / "figures" / "manifest.json").write_text('{"figures": {}}')
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # no repository above
    assert cmp.main(["HEAD"], root=tmp_path) == 2
    err = capsys.readouterr().err
    assert "is not inside a git repository" in err and "Traceback" not in err
    assert not (tmp_path / ".cache").exists()


def test_an_unknown_option_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cmp.main(["HEAD", "--colour", "red"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --colour red" in capsys.readouterr().err


# -- the hooks for make_figures.py ----------------------------------------------------------


def test_add_arguments_and_run_for_the_figure_command(
    scenario: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    cmp.add_arguments(parser)
    args = parser.parse_args([])
    assert (args.compare, args.compare_out) == (None, None)
    assert cmp.run(args, scenario.project) == 0  # not asked for: nothing written
    assert capsys.readouterr().out == ""
    args = parser.parse_args(["--compare", "HEAD", "--compare-out", str(tmp_path / "out")])
    assert cmp.run(args, scenario.project) == 0
    assert "report: " in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "summary.md"]


# -- entries compared without git -----------------------------------------------------------


def entry(**fields: object) -> dict:
    base = {
        "chapter": "activations",
        "fingerprint": "f1",
        "profile": "quick",
        "seed": 0,
        "params": {},
        "numbers": {"loss": 0.5},
        "files": {"light": "x.svg", "dark": "x.dark.svg"},
        "sha256": {"x.svg": "a", "x.dark.svg": "b"},
        "sources": {},
        "versions": {"torch": "2.12.0"},
        "date": "2026-01-01T00:00:00+00:00",
        "wall_time_s": 1.0,
    }
    base.update(fields)
    return base


def test_function_level_source_keys_are_compared_generically() -> None:
    old = entry(
        sources={
            "block4.figures.activations:relu_vs_tanh": "1111aaaa",
            "block4.style:PALETTE": "2222bbbb",
            "block4.training:fit": "3333cccc",
        }
    )
    new = entry(
        fingerprint="f2",
        sources={
            "block4.figures.activations:relu_vs_tanh": "9999ffff",
            "block4.style:PALETTE": "2222bbbb0123",  # a longer digest of the same code
            "block4.training:train_classifier": "4444dddd",
        },
    )
    change = cmp.diff_entries("relu_vs_tanh", old, new)
    assert change is not None and change.status == "changed"
    assert [(s.key, s.kind) for s in change.sources] == [
        ("block4.figures.activations:relu_vs_tanh", "changed"),
        ("block4.training:fit", "removed"),
        ("block4.training:train_classifier", "added"),
    ]
    assert change.reason() == (
        "block4.figures.activations:relu_vs_tanh, block4.training:fit (no longer used), "
        "block4.training:train_classifier (new dependency)"
    )


def test_a_figure_remade_with_the_same_result_is_not_a_change() -> None:
    assert cmp.diff_entries("x", entry(), entry(date="2027-01-01", wall_time_s=9.0)) is None


def test_same_code_with_other_output_names_the_library_versions() -> None:
    new = entry(numbers={"loss": 0.51}, versions={"torch": "2.13.0"})
    change = cmp.diff_entries("x", entry(), new)
    assert change is not None and change.same_fingerprint and change.sources == []
    assert change.reason() == "same code, different output (torch 2.12.0 -> 2.13.0)"


def test_a_profile_change_is_the_reason_when_no_source_changed() -> None:
    change = cmp.diff_entries("x", entry(), entry(fingerprint="f2", profile="full"))
    assert change is not None and change.reason() == "profile quick -> full"


def test_number_formatting_shows_the_digits_that_differ() -> None:
    assert cmp.format_pair(0.1 + 0.2, 0.3) == ("0.30000000000000004", "0.3")
    assert cmp.format_pair(1 / 3, 1 / 3) == ("0.333333", "0.333333")
    assert cmp.format_pair(None, True) == ("—", "true")
    assert cmp.format_change(cmp.NumberChange("k", 4.0, 3.0)) == "−1 (−25 %)"
    assert cmp.format_change(cmp.NumberChange("k", 0.0, 3.0)) == "+3"
    assert cmp.format_change(cmp.NumberChange("k", None, 3.0)) == "new"
    assert cmp.format_change(cmp.NumberChange("k", "a", "b")) == "changed"
    assert cmp.format_change(cmp.NumberChange("k", 0.5, 0.5 + 2**-40)).endswith(
        " (+1.82e−10 %), rounding"
    )
    assert cmp.NumberChange("k", 30.0, 30.0 + 3e-14).negligible
    assert not cmp.NumberChange("k", 30.0, 30.001).negligible
    assert not cmp.NumberChange("k", 30.0, 30.0).negligible
    assert cmp.NumberChange("k", 1, True).changed  # a count that became a flag
    assert not cmp.NumberChange("k", 1, 1.0).changed


def test_make_figures_compare_writes_the_report_after_making(
    scenario: Scenario, tmp_path: Path
) -> None:
    # Nothing is stale any more: the command makes nothing, then compares with HEAD.
    proc = subprocess.run(
        [
            sys.executable,
            "scripts/make_figures.py",
            "--profile",
            "smoke",
            "--compare",
            "HEAD",
            "--compare-out",
            str(tmp_path / "report"),
        ],
        cwd=scenario.root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "nothing to do" in proc.stdout
    assert "3 figures differ from HEAD" in proc.stdout
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert summary == cmp.render_markdown(scenario.comparison)
    bad = subprocess.run(
        [sys.executable, "scripts/make_figures.py", "--profile", "smoke", "--compare", "nope"],
        cwd=scenario.root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "nope" in bad.stderr


# -- the page text ---------------------------------------------------------------------------


def test_the_paragraphs_that_read_differently_are_listed_with_their_words(
    scenario: Scenario,
) -> None:
    prose = cmp.prose_of(scenario.comparison)
    assert [(c.page, c.status) for c in prose] == [
        ("demo.md", "changed"),
        ("guide/new_page.md", "new"),
    ]
    changed, new = prose
    assert changed.before == "The line rises by 2 per step and ends at 8."
    assert changed.after == "The line rises by 2.5 per step and ends at 10."
    assert [piece for piece in changed.words() if piece[0] != "same"] == [
        ("old", "2"),
        ("new", "2.5"),
        ("old", "8."),
        ("new", "10."),
    ]
    assert new.before is None and new.after == "The new plot's slope is 4."
    # the unchanged paragraph and the figure block (its provenance changes) are not listed
    assert all("other plot" not in (c.after or "") and "<figure" not in (c.after or "")
               for c in prose)  # fmt: skip


def test_the_reports_mark_the_words_that_changed(scenario: Scenario, tmp_path: Path) -> None:
    html_path, md_path = cmp.write_report(scenario.comparison, tmp_path)
    summary = md_path.read_text()
    assert "### Page text: 2 paragraphs on 2 pages read differently" in summary
    assert (
        "```diff\n@@ changed @@\n- The line rises by 2 per step and ends at 8.\n"
        "+ The line rises by 2.5 per step and ends at 10.\n```"
    ) in summary
    report = html_path.read_text()
    assert "<del>2</del><ins>2.5</ins>" in report and "<del>8.</del><ins>10.</ins>" in report
    assert "guide/new_page.md" in report


def test_word_diff_rebuilds_both_sides() -> None:
    from block4.prose_diff import word_diff

    before, after = "a median 3.6 % (± 0.9 sd)\nof the true one", "a median 3.4 % (± 1.1 sd) of one"
    pieces = word_diff(before, after)
    assert "".join(t for kind, t in pieces if kind != "new") == before
    assert "".join(t for kind, t in pieces if kind != "old") == after
    assert word_diff("same text", "same text") == [("same", "same text")]


ENTRIES = {"fig": {"numbers": {"a": 1.5, "b": 2}}}
ENTRIES_AFTER = {"fig": {"numbers": {"a": 1.75, "b": 2}}}


def test_line_endings_and_rewrapping_are_not_changes() -> None:
    from block4.prose_diff import prose_changes

    page = "First {{ fig.a }} here and\nthere.\n\nSecond {{ fig.b }}.\n"
    crlf_rewrapped = "First {{ fig.a }} here  and there.\r\n\r\nSecond {{ fig.b }}.\r\n"
    assert prose_changes({"p.md": (page, crlf_rewrapped)}, ENTRIES, ENTRIES) == []
    changed = prose_changes({"p.md": (page, page)}, ENTRIES, ENTRIES_AFTER)
    assert [(c.before, c.after) for c in changed] == [
        ("First 1.5 here and\nthere.", "First 1.75 here and\nthere.")
    ]


def test_an_inserted_paragraph_is_new_and_the_edited_one_stays_paired() -> None:
    from block4.prose_diff import prose_changes

    before = "Intro text that stays.\n\nThe loss is {{ fig.a }} after training on all seeds.\n"
    after = (
        "Intro text that stays.\n\nA brand new remark about something else entirely.\n\n"
        "The loss is {{ fig.a }} after training on all seeds.\n"
    )
    changes = prose_changes({"p.md": (before, after)}, ENTRIES, ENTRIES_AFTER)
    assert [(c.status, c.after) for c in changes] == [
        ("new", "A brand new remark about something else entirely."),
        ("changed", "The loss is 1.75 after training on all seeds."),
    ]
    assert changes[1].before == "The loss is 1.5 after training on all seeds."


def test_a_damaged_manifest_entry_reads_as_a_missing_number() -> None:
    from block4.prose_diff import prose_changes

    damaged = {"fig": {"numbers": None}}
    changes = prose_changes(
        {"p.md": ("Value {{ fig.a }}.", "Value {{ fig.a }}.")}, damaged, ENTRIES
    )
    assert len(changes) == 1 and "??" in changes[0].before and changes[0].after == "Value 1.5."


def test_only_the_sites_figure_blocks_are_left_out() -> None:
    from block4.prose_diff import page_paragraphs

    page = (
        "The hook turns it into a `<figure>` element, {{ fig.a }}.\n\n"
        '![A line](figures/fig.svg "The line.")\n'
    )
    assert page_paragraphs(page, ENTRIES) == ["The hook turns it into a `<figure>` element, 1.5."]


def test_a_long_table_is_compared_row_by_row() -> None:
    from block4.prose_diff import word_diff

    rows = [f"| row {i} | {i * 0.5} | {i % 7} |" for i in range(2000)]
    edited = list(rows)
    edited[1234] = "| row 1234 | 999 | 2 |"
    pieces = word_diff("\n".join(rows), "\n".join(edited))
    assert [p for p in pieces if p[0] != "same"] == [("old", "617.0"), ("new", "999")]


def test_the_markdown_summary_keeps_page_markdown_as_text() -> None:
    from block4.prose_diff import ProseChange, markdown_lines

    change = ProseChange("p.md", "Keep `code = 1` and **bold**", "Keep `code = 2` and **bold**")
    text = "\n".join(markdown_lines([change]))
    assert "```diff\n@@ changed @@\n- Keep `code = 1` and **bold**\n+ Keep `code = 2`" in text
    fenced = ProseChange("p.md", None, "```python\nx = 1\n```")
    text = "\n".join(markdown_lines([fenced]))
    assert "````diff" in text and text.count("````") == 2  # a longer fence than the page's
