"""Benchmark scripts run (at tiny sizes) and write valid JSON; the Performance page renders it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mkdocs.exceptions import PluginError

from block4 import perf_report

ROOT = Path(__file__).resolve().parents[1]


def _write(dir_: Path, name: str, results: dict) -> None:
    payload = {
        "benchmark": name,
        "date": "2026-01-02T03:04:05+00:00",
        "machine": {
            "cpu": "Test CPU",
            "cores": 2,
            "gpu": None,
            "torch": "2.x",
            "pytorch_lightning": "2.y",
        },
        "results": results,
    }
    (dir_ / f"{name}.json").write_text(json.dumps(payload))


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """The empty ``benchmarks/results/`` of a project whose ``mkdocs.yml`` is in ``tmp_path``."""
    path = tmp_path / "benchmarks" / "results"
    path.mkdir(parents=True)
    return path


def test_render_result_tables_scalars_and_machine(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "demo",
        {
            "ratio": 1.0634,
            "goal_met": True,
            "per_epoch": {"plain_s": 0.5},
            "rows": [{"a": 1, "b": "x"}],
        },
    )
    md = perf_report.render_result(perf_report.load_result(tmp_path, "demo"))
    assert "| ratio | 1.063 |" in md
    assert "| goal_met | yes |" in md
    assert "| per_epoch.plain_s | 0.5 |" in md
    assert "| a | b |" in md and "| 1 | x |" in md
    assert "Test CPU (2 cores), no GPU" in md and "*Measured 2026-01-02 on" in md
    # a log whose rows were measured on their own dates says so, with the range
    changes = [{"date": "2025-12-30", "change": "a"}, {"date": "2026-01-02", "change": "b"}]
    _write(tmp_path, "log", {"changes": changes})
    md = perf_report.render_result(perf_report.load_result(tmp_path, "log"))
    assert "*Rows measured 2025-12-30 to 2026-01-02, each on its date, on Test CPU" in md


def test_missing_or_broken_result_is_a_clear_build_error(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="nothing.json is missing"):
        perf_report.load_result(tmp_path, "nothing")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PluginError, match="not valid JSON"):
        perf_report.load_result(tmp_path, "bad")
    (tmp_path / "partial.json").write_text('{"benchmark": "partial"}')
    with pytest.raises(PluginError, match="has no 'date' field"):
        perf_report.load_result(tmp_path, "partial")


def test_figure_time_plot_is_inline_svg_following_the_palette(tmp_path: Path) -> None:
    rows = [{"name": "fig_a", "wall_s": 1.5}, {"name": "fig_b", "wall_s": 12.0}]
    _write(tmp_path, "figures_quick", {"profile": "quick", "figures": rows})
    html = perf_report.figure_times_svg(tmp_path)
    assert html.startswith('<div class="perf-plot"') and "<svg" in html
    assert "currentColor" in html and perf_report._INK not in html
    assert "fig_a" in html and "fig_b" in html


def test_markers_are_replaced_and_unknown_plot_rejected(tmp_path: Path, results: Path) -> None:
    _write(tmp_path, "demo", {"x": 2})
    config = {"config_file_path": str(tmp_path / "mkdocs.yml")}
    _write(results, "demo", {"x": 2})
    out = perf_report.on_page_markdown("A\n<!-- benchmark: demo -->\nB", None, config, None)
    assert "| x | 2 |" in out and "<!--" not in out
    with pytest.raises(PluginError, match="unknown plot 'nope'"):
        perf_report.on_page_markdown("<!-- benchmark-plot: nope -->", None, config, None)


@pytest.mark.slow
def test_figures_benchmark_writes_valid_json(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "figures.py"),
            "--profile",
            "smoke",
            "--only",
            "graph_matmul_product",
            "--out-dir",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    data = json.loads((tmp_path / "figures_smoke.json").read_text())
    assert data["benchmark"] == "figures_smoke"
    results = data["results"]
    assert results["n_figures"] == 1
    assert results["figures"][0]["name"] == "graph_matmul_product"
    assert results["total_s"] > 0 and results["no_change_run_s"] > 0
    assert results["import_s"] > 0 and len(results["imports_s"]) == 1
    row = results["figures"][0]
    assert row["draw_s"] > 0 and row["training_s"] == 0  # a graph drawing trains nothing
    assert results["drawing_s"] == round(row["draw_s"], 1) and results["training_s"] == 0
    assert results["per_process_s"] == round(row["wall_s"] + row["draw_s"], 1)
    assert data["machine"]["cores"] >= 1


@pytest.mark.slow
def test_figures_benchmark_records_a_run_cut_short_by_its_time_limit(tmp_path: Path) -> None:
    # activation_functions takes well under a second, resnet_degradation well over ten
    # (full profile)
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "figures.py"),
            "--profile",
            "full",
            "--only",
            "activation_functions",
            "resnet_degradation",
            "--time-limit",
            "9",
            "--out-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "incomplete run: stopped by its 9 s time limit" in proc.stdout
    results = json.loads((tmp_path / "figures_full.json").read_text())["results"]
    assert results["complete"] is False and results["of_figures"] == 2
    assert results["figures_made"] == len(results["figures"]) <= 1
    # stopped like Ctrl+C; SIGTERM follows only if that did not end it within 5 s
    assert results["stopped_by"] in (["SIGINT"], ["SIGINT", "SIGTERM"]), results["stopped_by"]
    assert [r["name"] for r in results["figures"]] in ([], ["activation_functions"])
    made = results["figures_made"]
    assert f"incomplete: stopped at 9 s with {made} of 2 figures made" in perf_report.goals_table(
        tmp_path
    )


def test_goals_table_and_indented_markers(tmp_path: Path, results: Path) -> None:
    _write(results, "site_build", {"cold_s": 30.0, "warm_s": 12.5})
    _write(
        results,
        "figures_quick",
        {"profile": "quick", "total_s": 400.0, "no_change_run_s": 1.2, "import_s": 9.0},
    )
    config = {"config_file_path": str(tmp_path / "mkdocs.yml")}
    out = perf_report.on_page_markdown(
        '<!-- benchmark-goals: all -->\n\n=== "Tab"\n\n    <!-- benchmark: site_build -->\n',
        None,
        config,
        None,
    )
    assert "| warm site build | <= 60 s | 12.5 s | yes |" in out
    speed = f"({perf_report._SPEED} 9 s)"
    assert f"| quick profile, all figures | <= 15 s on 2 CPU cores | 400 s {speed} | no |" in out
    assert "| full profile, all figures | <= 60 s on 2 CPU cores | not measured |" in out
    assert "| full profile, all figures | <= 60 s on one GPU | not measured |" in out
    assert f"| no-change make_figures.py run | <= 0.3 s | 1.2 s {speed} | no |" in out
    # the tab's table stays indented under its tab
    assert "\n    | metric | value |" in out and "\n    | warm_s | 12.5 |" in out


def test_the_seconds_of_a_run_split_into_training_building_and_drawing() -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks.figures import where_the_seconds_go

    rows = [
        {"wall_s": 5.0, "training_s": 4.0, "draw_s": 0.5},  # trained here
        {"wall_s": 1.0, "training_s": 0.0, "draw_s": 0.25},  # re-used its runs, or trains none
        {"wall_s": 2.0, "training_s": 0.0, "draw_s": None},  # made before drawing was timed
    ]
    assert where_the_seconds_go(rows, jobs=2) == {
        "training_s": 4.0,
        "building_s": 4.0,
        "drawing_s": 0.8,  # 0.75, rounded to one decimal
        "per_process_s": 4.4,
    }


def test_prose_quotes_measured_numbers_and_leaves_code_alone(tmp_path: Path, results: Path) -> None:
    from types import SimpleNamespace

    _write(
        results,
        "figures_quick",
        {"total_s": 17.24, "jobs": 2, "figures": [{"name": "a"}], "snap": {"first_s": 1.31}},
    )
    config = {"config_file_path": str(tmp_path / "mkdocs.yml")}
    page = SimpleNamespace(file=SimpleNamespace(src_uri="performance.md"))

    def quote(text: str) -> str:
        return perf_report.on_page_markdown(text, page, config, None)

    text = "All in {{ bench figures_quick.total_s:.1f }} s with {{bench figures_quick.jobs}} jobs"
    assert quote(text) == "All in 17.2 s with 2 jobs"
    assert quote("{{ bench figures_quick.total_s }}") == "17.24"  # 4 significant digits
    assert quote("{{ bench figures_quick.snap.first_s:.1f }} s") == "1.3 s"  # a nested table
    code = "`{{ bench figures_quick.total_s }}`\n```\n{{ bench nope.x }}\n```\n"
    assert quote(code) == code
    for text, message in [
        ("{{ bench nope.total_s }}", "performance.md: {{ bench nope.total_s }} quotes "
         "benchmarks/results/nope.json, which does not exist"),
        ("{{ bench figures_quick.sum_s }}", "figures_quick.json has no number 'sum_s' "
         "(it has: jobs, total_s)"),
        ("{{ bench figures_quick.figures }}", "has no number 'figures'"),
        ("{{ bench figures_quick.snap }}", "has no number 'snap'"),
        ("{{ bench figures_quick.snap.last_s }}", "has no number 'snap.last_s' (it has: first_s)"),
        ("{{ bench figures_quick.total_s.x }}", "figures_quick.json has no table 'total_s'"),
        ("{{ bench figures_quick.nope.x }}", "figures_quick.json has no table 'nope'"),
        ("{{ bench figures_quick.total_s:d }}", "{{ bench figures_quick.total_s:d }}: bad "
         "format spec"),
        ("took {{ bench figures_quick total_s }} s", "'{{ bench figures_quick total_s }} s' is "
         "not a benchmark number; write {{ bench NAME.key }}"),
    ]:  # fmt: skip
        with pytest.raises(PluginError) as err:
            quote(text)
        assert message in str(err.value)


def test_a_benchmark_not_run_yet_is_shown_as_such(tmp_path: Path, results: Path) -> None:
    config = {"config_file_path": str(tmp_path / "mkdocs.yml")}
    out = perf_report.on_page_markdown("<!-- benchmark: site_build -->", None, config, None)
    assert "Not measured yet" in out and "site_build.json" in out


def test_an_incomplete_full_run_is_reported_as_such(results: Path) -> None:
    _write(
        results,
        "figures_full",
        {
            "profile": "full",
            "complete": False,
            "time_limit_s": 115,
            "figures_made": 1,
            "of_figures": 24,
        },
    )
    table = perf_report.goals_table(results)
    assert "incomplete: stopped at 115 s with 1 of 24 figures made" in table
    # the plot of the times per figure leaves it out: its other figures were never made
    rows = [{"name": "fig_a", "wall_s": 2.0, "device": "cpu"}]
    _write(results, "figures_quick", {"profile": "quick", "total_s": 12.0, "figures": rows})
    html = perf_report.figure_times_svg(results)
    assert "quick, 2 CPU cores" in html and "full" not in html


def test_a_ratio_goal_keeps_the_digit_that_decides_it(tmp_path: Path) -> None:
    summary = [{"batching": "in-memory", "config": "small MLP", "ratio": 1.103}]
    _write(tmp_path, "lightning_overhead", {"summary": summary})
    table = perf_report.goals_table(tmp_path)
    goal = "| Lightning / plain loop per epoch (small MLP; medians) | <= 1.1 x |"
    assert f"{goal} 1.103 x | no |" in table
    # the ratio of the fastest runs is shown beside the medians' when it was measured
    configs = {"small MLP": {"memory": {"ratio_of_minima": 1.1033}}}
    _write(tmp_path, "lightning_overhead", {"summary": summary, "_configs": configs})
    table = perf_report.goals_table(tmp_path)
    assert f"{goal} 1.103 x (fastest runs: 1.103 x) | no |" in table
    # the machine column names the CPU without trademark signs
    xeon = {"machine": {"cores": 2, "cpu": "Intel(R) Xeon(R) Processor"}}
    assert perf_report._cpu_of(xeon) == "2 CPU cores (Intel Xeon)"


def test_figure_goals_name_jobs_and_count_each_run_for_its_kind_of_machine(tmp_path: Path) -> None:
    cpu_rows = [{"name": "fig_a", "wall_s": 2.0, "device": "cpu"}]
    gpu_rows = [{"name": "fig_a", "wall_s": 9.0, "device": "NVIDIA H100 x1"}]
    _write(tmp_path, "figures_quick", {"profile": "quick", "total_s": 12.0, "figures": cpu_rows})
    _write(
        tmp_path,
        "figures_quick_jobs2",
        {"profile": "quick", "jobs": 2, "total_s": 35.0, "figures": cpu_rows},
    )
    _write(
        tmp_path,
        "figures_full_cpu_jobs2",
        {"profile": "full", "jobs": 2, "total_s": 50.0, "import_s": 5.2, "figures": cpu_rows},
    )
    table = perf_report.goals_table(tmp_path)
    on_cpu = "| <= 15 s on 2 CPU cores |"
    # the one-process run is shown next to the parallel one, not judged against the goal
    one = "| quick profile, all figures, one process (for comparison)"
    when = '<span style="white-space: nowrap">2026-01-02</span>'  # a date stays on one line
    assert f"{one} {on_cpu} 12 s | — | 2 CPU cores (Test CPU), {when} |" in table
    assert f"| quick profile, all figures, --jobs 2 {on_cpu} 35 s | no |" in table
    assert (
        "| full profile, all figures, --jobs 2 | <= 60 s on 2 CPU cores | "
        f"50 s ({perf_report._SPEED} 5.2 s) | yes |" in table
    )
    assert "| full profile, all figures | <= 60 s on one GPU | not measured |" in table
    _write(tmp_path, "figures_full", {"profile": "full", "total_s": 200.0, "figures": gpu_rows})
    table = perf_report.goals_table(tmp_path)
    assert "| full profile, all figures | <= 60 s on one GPU | 200 s | no | NVIDIA H100," in table
    # the plot draws each profile and device once: quick (CPU) once although run twice
    html = perf_report.figure_times_svg(tmp_path)
    assert html.count("quick, 2 CPU cores (Test CPU)") == 1
    assert "full, 2 CPU cores (Test CPU)" in html and "full, NVIDIA H100" in html


@pytest.mark.slow
def test_edit_loop_benchmark_lists_what_each_edit_makes_stale(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "edit_loop.py"),
            *("--profile", "smoke", "--figure", "backprop_worked_example"),
            *("--edit", "block4.models:mlp", "--out-dir", str(tmp_path), "--no-serve"),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    data = json.loads((tmp_path / "edit_loop.json").read_text())
    results = data["results"]
    loop = results["plotting_edit"]
    assert loop["stale_after_edit"] == ["backprop_worked_example"]  # not its neighbours
    assert loop["remade"] == 1 and loop["edit_to_fresh_s"] > 0
    (mlp,) = results["shared_edits"]
    assert mlp["edited"] == "block4.models:mlp"
    assert "relu_vs_tanh" in mlp["stale"] and "backprop_worked_example" not in mlp["stale"]
    assert results["check_s"] > 0


def test_the_edit_loop_goal_is_the_served_page_with_the_full_rebuild_and_the_cli_beside(
    tmp_path: Path,
) -> None:
    goal = "| plotting-only edit of one figure under `mkdocs serve`: page fresh | <= 5 s |"
    assert f"{goal} not measured |" in perf_report.goals_table(tmp_path)
    _write(tmp_path, "edit_loop", {"plotting_edit": {"edit_to_fresh_s": 8.06}})
    assert f"{goal} 8.06 s (`make_figures.py` alone: 8.06 s) | no |" in perf_report.goals_table(
        tmp_path
    )
    serve = {"page_fresh_s": 3.45, "full_rebuild_done_s": 20.75}
    _write(tmp_path, "edit_loop", {"plotting_edit": {"edit_to_fresh_s": 8.06}, "serve": serve})
    assert (
        f"{goal} 3.45 s (full rebuild done at 20.8 s; `make_figures.py` alone: 8.06 s) | yes |"
    ) in perf_report.goals_table(tmp_path)


def test_the_live_cell_goals_show_the_first_run_with_and_without_the_snapshot(
    tmp_path: Path,
) -> None:
    assert "| live cell: first Run on a page (local server) | <= 4 s | not measured |" in (
        perf_report.goals_table(tmp_path)
    )
    snap = {"first_run_s": 1.31, "first_run_mb": 19.99, "later_run_ms": 8.0}
    _write(tmp_path, "live_cells", {"snapshot": snap, "no_snapshot": {"first_run_s": 4.32}})
    table = perf_report.goals_table(tmp_path)
    assert (
        "| live cell: first Run on a page (local server) | <= 4 s | 1.31 s (loads 20 MB; "
        "without the start-up snapshot 4.32 s) | yes |"
    ) in table
    assert "| live cell: later Runs | <= 200 ms | 8 ms | yes |" in table


def test_the_first_start_goal_shows_the_first_page_the_filled_notebooks_and_before(
    tmp_path: Path,
) -> None:
    assert "| fresh clone `./dev.sh serve` to first page | <= 60 s | not measured |" in (
        perf_report.goals_table(tmp_path)
    )
    results = {"goal_first_page_s": 60.0, "first_page_s": 36.93, "all_notebooks_s": 238.4}
    _write(tmp_path, "first_start", {**results, "before_first_page_s": 152.2})
    assert (
        "| fresh clone `./dev.sh serve` to first page | <= 60 s | 36.9 s (notebooks filled in "
        "at 238 s; before (notebooks run first): 152 s) | yes | 2 CPU cores (Test CPU), "
        '<span style="white-space: nowrap">2026-01-02</span> |'
    ) in perf_report.goals_table(tmp_path)
