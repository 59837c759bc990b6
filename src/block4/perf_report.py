"""MkDocs hook that renders ``benchmarks/results/*.json`` into the Performance page.

Markers in ``docs/performance.md`` are replaced at build time, so the page always shows the
latest measured numbers and the machine they were measured on:

- ``<!-- benchmark: NAME -->``: the results of ``benchmarks/results/NAME.json`` as tables
  (scalars as a metric/value table, lists of records as their own table) plus its machine line.
- ``<!-- benchmark-goals: all -->``: the performance goals, each with the measured value and
  whether it is met.
- ``<!-- benchmark-plot: figures -->``: a bar chart of per-figure wall times for every profile
  measured (``figures_<profile>.json``), inlined as SVG that follows the light/dark palette.

A marker naming a result file that does not exist yet renders a "not measured yet" note; a
malformed file fails the build with the file's name.

Prose on any page quotes a measured number as ``{{ bench NAME.key }}`` or
``{{ bench NAME.key:.1f }}`` (a Python format spec; without one, floats get 4 significant
digits): the value ``key`` of the ``results`` of ``NAME.json``, so a sentence that says how
long something takes is rewritten with every new measurement. A missing file or key, or a
value that is not a number or text, fails the build naming the page. Code is never
rewritten.
"""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

from block4.site_render import format_number, split_code

log = logging.getLogger("mkdocs.plugins.block4.perf_report")

MARKER = re.compile(
    r"^([ \t]*)<!--\s*benchmark(-plot|-goals)?:\s*([A-Za-z0-9_]+)\s*-->", re.MULTILINE
)
#: A measured number in prose: ``{{ bench NAME.key }}`` or ``{{ bench NAME.key:FORMAT }}``.
BENCH_NUMBER = re.compile(
    r"\{\{\s*bench\s+(?P<name>[A-Za-z0-9_]+)\.(?P<key>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"
    r"(?::(?P<spec>[^}]*?))?\s*\}\}"
)
_BENCH_START = re.compile(r"\{\{\s*bench\b")
#: Shown beside a figure run's time: the machine's speed at that moment (``import_s``, a
#: fresh Python importing what every figure needs; the run itself may import nothing).
_SPEED = "machine speed then: a fresh import of torch, Lightning and matplotlib took"
#: Sentinel colour swapped for ``currentColor`` in the SVG so text follows the page palette.
_INK = "#010203"


def _results_dir(config: Any) -> Path:
    return Path(config["config_file_path"]).resolve().parent / "benchmarks" / "results"


def load_result(results_dir: Path, name: str) -> dict[str, Any]:
    """Read one result file, with a clear error when it is missing or malformed."""
    path = results_dir / f"{name}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PluginError(
            f"performance page: {path} is missing; run the benchmark that writes it "
            f"(see benchmarks/README.md)"
        ) from None
    except json.JSONDecodeError as exc:
        raise PluginError(f"performance page: {path} is not valid JSON: {exc}") from None
    for key in ("benchmark", "date", "machine", "results"):
        if key not in data:
            raise PluginError(f"performance page: {path} has no {key!r} field")
    return data


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            # 4 digits: a ratio of 1.103 must not read as 1.1 beside a goal of 1.1
            return f"{value:.4g}" if abs(value) < 10 else f"{value:.1f}"
        return f"{value:.2e}"
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        return ", ".join(_fmt(v) for v in value)
    if value is None:
        return "—"
    return str(value).replace("|", "\\|")


def _flatten(prefix: str, value: Any, scalars: list[tuple[str, Any]], tables: dict) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            if key.startswith("_"):  # detail kept in the file, not shown on the page
                continue
            _flatten(f"{prefix}.{key}" if prefix else key, sub, scalars, tables)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        tables[prefix] = value
    else:
        scalars.append((prefix, value))


def _table(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def machine_line(data: dict[str, Any]) -> str:
    """The machine and the date; a log whose rows carry their own dates gives their range."""
    m = data["machine"]
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    dates = sorted(
        {
            str(row["date"])[:10]
            for rows in data["results"].values()
            if isinstance(rows, list)
            for row in rows
            if isinstance(row, dict) and "date" in row
        }
    )
    if len(dates) > 1:
        when = f"Rows measured {dates[0]} to {dates[-1]}, each on its date,"
    else:
        when = f"Measured {data['date'][:10]}"
    return (
        f"*{when} on {m.get('cpu')} ({m.get('cores')} cores){gpu}; "
        f"torch {m.get('torch')}, pytorch-lightning {m.get('pytorch_lightning')}.*"
    )


def render_result(data: dict[str, Any]) -> str:
    """Markdown for one result file: its tables, its scalars and its machine."""
    scalars: list[tuple[str, Any]] = []
    tables: dict[str, list[dict[str, Any]]] = {}
    _flatten("", data["results"], scalars, tables)
    parts = []
    if scalars:
        parts.append(_table([{"metric": k, "value": v} for k, v in scalars]))
    for name, rows in tables.items():
        parts.append(f"**{name}**\n\n{_table(rows)}")
    parts.append(machine_line(data))
    return "\n\n".join(parts)


#: The wall-time goal of each figure profile by kind of machine: (seconds, the machine).
FIGURE_GOALS = {
    ("quick", "cpu"): (15.0, "2 CPU cores"),
    ("full", "cpu"): (60.0, "2 CPU cores"),
    ("full", "gpu"): (60.0, "one GPU"),
}


def _on_gpu(results: dict[str, Any]) -> bool:
    """Whether a figures run trained on a GPU (its figures name the device they ran on)."""
    return any(
        not str(r.get("device") or "cpu").startswith("cpu") for r in results.get("figures", [])
    )


def _device_of(data: dict[str, Any]) -> str:
    """The device a figures run trained on: the GPU's name, else the machine's CPU cores."""
    results = data["results"]
    if _on_gpu(results):
        devices = [r["device"] for r in results["figures"] if not r["device"].startswith("cpu")]
        return str(devices[0]).removesuffix(" x1")
    return _cpu_of(data)


def _cpu_of(data: dict[str, Any]) -> str:
    """``2 CPU cores (AMD EPYC)``: the cores a result was measured on, and their model
    (without trademark signs and filler: ``Intel(R) Xeon(R) Processor`` is ``Intel Xeon``)."""
    machine = data["machine"]
    cpu = re.sub(r"\((R|TM)\)|\bProcessor\b", "", str(machine.get("cpu") or ""))
    cpu = " ".join(cpu.split())
    return f"{machine.get('cores')} CPU cores" + (f" ({cpu})" if cpu else "")


def _when(data: dict[str, Any]) -> str:
    """The date of a result, kept on one line in a table cell."""
    return f'<span style="white-space: nowrap">{data["date"][:10]}</span>'


def figure_runs(results_dir: Path) -> list[dict[str, Any]]:
    """Every ``figures_*.json`` result, one process before ``--jobs N``, then by name."""
    runs = [load_result(results_dir, path.stem) for path in results_dir.glob("figures_*.json")]
    return sorted(runs, key=lambda d: (d["results"].get("jobs", 1), d["benchmark"]))


def figure_times_svg(results_dir: Path) -> str:
    """Inline SVG: wall time per figure, one bar group per profile and device measured.

    Runs with ``--jobs N`` repeat the per-figure times of the one-process run of the same
    profile and device, so only the first run of each profile and device is drawn; a run
    stopped by its time limit is left out (the goals table says where it stopped).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {}
    for data in figure_runs(results_dir):
        rows = data["results"].get("figures", [])
        if data["results"].get("complete") is False:
            continue
        label = f"{data['results'].get('profile', data['benchmark'])}, {_device_of(data)}"
        if rows and label not in runs:
            runs[label] = {r["name"]: float(r["wall_s"]) for r in rows}
    if not runs:
        raise PluginError(
            f"performance page: no figures_<profile>.json in {results_dir}; "
            "run python benchmarks/figures.py"
        )
    names = sorted({n for times in runs.values() for n in times})
    colors = ["#0072B2", "#E69F00", "#009E73", "#CC79A7"]
    height = 0.8 / len(runs)
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "block4", "font.size": 9}):
        fig, ax = plt.subplots(
            figsize=(7.0, 0.16 * len(names) * len(runs) + 1.2), layout="constrained"
        )
        for i, (label, times) in enumerate(runs.items()):
            ys = [k + i * height for k in range(len(names))]
            ax.barh(
                ys,
                [times.get(n, 0.0) for n in names],
                height=height,
                label=label,
                color=colors[i % 4],
            )
        ax.set_yticks([k + 0.4 - height / 2 for k in range(len(names))], names)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("wall time per figure (s, log scale)")
        ax.legend(loc="lower right", labelcolor=_INK, frameon=False)
        for spine in ("top", "right"):
            ax.spines[spine].set_visible(False)
        for item in [ax.xaxis.label, *ax.get_xticklabels(), *ax.get_yticklabels()]:
            item.set_color(_INK)
        ax.tick_params(colors=_INK)
        for spine in ax.spines.values():
            spine.set_color(_INK)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", transparent=True, metadata={"Date": None})
        plt.close(fig)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    return (
        '<div class="perf-plot" role="img" aria-label="Wall time per figure and profile">'
        + svg.replace(_INK, "currentColor")
        + "</div>"
    )


def _goal(goal: str, limit: float, measured: float | None, unit: str, where: str) -> dict:
    if measured is None:
        return {
            "goal": goal,
            "target": f"<= {limit:g} {unit}",
            "measured": "not measured",
            "met": "—",
            "measured on": where,
        }
    # a ratio keeps 4 digits: 1.103 must not read as 1.1 next to a goal of <= 1.1
    digits = 4 if unit == "x" else 3
    return {
        "goal": goal,
        "target": f"<= {limit:g} {unit}",
        "measured": f"{measured:.{digits}g} {unit}",
        "met": "yes" if measured <= limit else "no",
        "measured on": where,
    }


def figure_goal_rows(results_dir: Path) -> list[dict[str, Any]]:
    """One goal row per measured run of a profile, against the goal of its kind of machine.

    A run cut short by a time limit says where it stopped; a goal never measured says so.
    Where a parallel run (``--jobs``) of the same profile and kind of machine exists, a
    one-process run is listed for comparison, not judged: the goal is the machine's.
    """
    rows = []
    runs = figure_runs(results_dir)
    for (profile, kind), (limit, machine) in FIGURE_GOALS.items():
        mine = [
            d
            for d in runs
            if d["results"].get("profile") == profile
            and ("gpu" if _on_gpu(d["results"]) else "cpu") == kind
        ]
        if not mine:
            row = _goal(f"{profile} profile, all figures", limit, None, "s", "—")
            rows.append({**row, "target": f"{row['target']} on {machine}"})
        parallel = any(d["results"].get("jobs", 1) > 1 for d in mine)
        for data in mine:
            r = data["results"]
            jobs = r.get("jobs", 1)
            name = f"{profile} profile, all figures" + (f", --jobs {jobs}" if jobs > 1 else "")
            row = _goal(name, limit, r.get("total_s"), "s", f"{_device_of(data)}, {_when(data)}")
            row["target"] += f" on {machine}"
            # the machine's speed at the time: a shared machine's varies from hour to hour
            _with_context(row, (_SPEED, r.get("import_s"), "s"))
            if parallel and jobs == 1:
                row["goal"] += ", one process (for comparison)"
                row["met"] = "—"
            if r.get("complete") is False:
                row["measured"] = (
                    f"incomplete: stopped at {r.get('time_limit_s'):g} s with "
                    f"{r.get('figures_made')} of {r.get('of_figures')} figures made"
                )
                row["met"] = "—"
            rows.append(row)
    return rows


def goals_table(results_dir: Path) -> str:
    """The performance goals of the project with the latest measured values."""

    def maybe(name: str) -> dict[str, Any] | None:
        return load_result(results_dir, name) if (results_dir / f"{name}.json").is_file() else None

    def where(data: dict[str, Any] | None) -> str:
        if data is None:
            return "—"
        return f"{data['machine'].get('gpu') or _cpu_of(data)}, {_when(data)}"

    rows = []
    overhead = maybe("lightning_overhead")
    if overhead:
        configs = overhead["results"].get("_configs", {})
        for row in overhead["results"]["summary"]:
            if row["batching"] == "in-memory":
                goal = _goal(
                    f"Lightning / plain loop per epoch ({row['config']}; medians)",
                    1.10,
                    row["ratio"],
                    "x",
                    where(overhead),
                )
                # the medians' ratio can hide noise: the fastest runs' ratio goes with it
                minima = configs.get(row["config"], {}).get("memory", {}).get("ratio_of_minima")
                rows.append(_with_context(goal, ("fastest runs:", minima, "x")))
    stacked = maybe("stacked")
    if stacked:
        by_members = {row["members"]: row for row in stacked["results"]["rows"]}
        if 16 in by_members:
            rows.append(
                _goal(
                    "stacked training, E = 16: time per member-epoch / plain loop",
                    0.2,
                    by_members[16]["ratio_to_plain"],
                    "x",
                    where(stacked),
                )
            )
    rows += figure_goal_rows(results_dir)
    quick = maybe("figures_quick")
    no_change = quick and quick["results"].get("no_change_run_s")
    row = _goal("no-change make_figures.py run", 0.3, no_change, "s", where(quick))
    speed = quick and quick["results"].get("import_s")
    rows.append(_with_context(row, (_SPEED, speed, "s")))
    rows.append(edit_loop_goal_row(maybe("edit_loop"), where))
    rows += live_cell_goal_rows(maybe("live_cells"), where)
    site = maybe("site_build")
    rows.append(_goal("warm site build", 60, site and site["results"]["warm_s"], "s", where(site)))
    rows.append(first_start_goal_row(maybe("first_start"), where))
    return _table(rows)


def edit_loop_goal_row(data: dict[str, Any] | None, where: Any) -> dict[str, Any]:
    """A plotting-only edit of one figure under ``mkdocs serve`` until the browsers reload with
    the new figure (``benchmarks/edit_loop.py``), with the full rebuild after it and the
    command line alone."""
    r = data["results"] if data else {}
    serve, cli = r.get("serve") or {}, r.get("plotting_edit") or {}
    row = _goal(
        "plotting-only edit of one figure under `mkdocs serve`: page fresh",
        5,
        serve.get("page_fresh_s", cli.get("edit_to_fresh_s")),
        "s",
        where(data),
    )
    return _with_context(
        row,
        ("full rebuild done at", serve.get("full_rebuild_done_s"), "s"),
        ("`make_figures.py` alone:", cli.get("edit_to_fresh_s"), "s"),
    )


def _with_context(row: dict[str, Any], *extras: tuple[str, float | None, str]) -> dict[str, Any]:
    """``row`` with ``(label value unit; ...)`` after its measurement, for the ``extras``
    that were measured (nothing when the row itself was not)."""
    # a ratio keeps 4 digits, as in `_goal`
    shown = [
        f"{label} {value:.{4 if unit == 'x' else 3}g} {unit}"
        for label, value, unit in extras
        if value is not None
    ]
    if shown and row["measured"] != "not measured":
        row["measured"] += f" ({'; '.join(shown)})"
    return row


def live_cell_goal_rows(data: dict[str, Any] | None, where: Any) -> list[dict[str, Any]]:
    """The live cells' first Run and later Runs in Chromium (``benchmarks/live_cells.py``),
    with the first Run without the start-up snapshot and the bytes it loads."""
    r = data["results"] if data else {}
    snap, plain = r.get("snapshot") or {}, r.get("no_snapshot") or {}
    first = _goal(
        "live cell: first Run on a page (local server)",
        r.get("goal_first_run_s", 4),
        snap.get("first_run_s"),
        "s",
        where(data),
    )
    _with_context(
        first,
        ("loads", snap.get("first_run_mb"), "MB"),
        ("without the start-up snapshot", plain.get("first_run_s"), "s"),
    )
    later = _goal(
        "live cell: later Runs",
        r.get("goal_later_run_ms", 200),
        snap.get("later_run_ms"),
        "ms",
        where(data),
    )
    return [first, later]


def first_start_goal_row(data: dict[str, Any] | None, where: Any) -> dict[str, Any]:
    """Fresh clone to first page of ``./dev.sh serve`` (``benchmarks/first_start.py``), with
    when every notebook page had its outputs and what the first page took before."""
    r = data["results"] if data else {}
    row = _goal(
        "fresh clone `./dev.sh serve` to first page",
        r.get("goal_first_page_s", 60),
        r.get("first_page_s"),
        "s",
        where(data),
    )
    return _with_context(
        row,
        ("notebooks filled in at", r.get("all_notebooks_s"), "s"),
        ("before (notebooks run first):", r.get("before_first_page_s"), "s"),
    )


def bench_number(
    results_dir: Path,
    name: str,
    key: str,
    spec: str | None,
    where: str,
    loaded: dict[str, dict[str, Any]] | None = None,
) -> str:
    """The text of ``{{ bench NAME.key:spec }}`` on page ``where``; ``loaded`` keeps the
    result files already read for the page (each is read once however often it is quoted).

    Raises:
        PluginError: no such result file, no such key in its ``results``, a value that is a
            table rather than a number, or a format spec that does not fit the value.
    """
    placeholder = f"{{{{ bench {name}.{key}{':' + spec if spec else ''} }}}}"
    if not (results_dir / f"{name}.json").is_file():
        raise PluginError(
            f"{where}: {placeholder} quotes benchmarks/results/{name}.json, which does not "
            "exist; run the benchmark that writes it (see benchmarks/README.md)"
        )
    loaded = {} if loaded is None else loaded
    if name not in loaded:
        loaded[name] = load_result(results_dir, name)["results"]
    results = loaded[name]
    # ``a.b`` is the number ``b`` of the table ``a`` (``results["a"]["b"]``)
    *path, last = key.split(".")
    for part in path:
        results = results.get(part)
        if not isinstance(results, dict):
            raise PluginError(
                f"{where}: {placeholder}: {name}.json has no table {'.'.join(path)!r}"
            )
    value = results.get(last)
    if value is None or isinstance(value, (dict, list)):
        quotable = sorted(k for k, v in results.items() if not isinstance(v, (dict, list)))
        raise PluginError(
            f"{where}: {placeholder}: {name}.json has no number {key!r} "
            f"(it has: {', '.join(quotable) or 'none'})"
        )
    try:
        return format_number(value, spec and spec.strip())
    except (ValueError, TypeError) as err:
        raise PluginError(f"{where}: {placeholder}: bad format spec ({err})") from None


def _quote_numbers(markdown: str, results_dir: Path, where: str) -> str:
    loaded: dict[str, dict[str, Any]] = {}

    def number(m: re.Match[str]) -> str:
        return bench_number(results_dir, m["name"], m["key"], m["spec"], where, loaded)

    pieces = []
    for is_code, text in split_code(markdown):
        if not is_code:
            text = BENCH_NUMBER.sub(number, text)
            left = _BENCH_START.search(text)
            if left:
                raise PluginError(
                    f"{where}: {text[left.start() : left.start() + 60]!r} is not a benchmark "
                    "number; write {{ bench NAME.key }} or {{ bench NAME.key:FORMAT }}"
                )
        pieces.append(text)
    return "".join(pieces)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace the benchmark markers and the quoted numbers of any page."""
    results_dir = _results_dir(config)
    if _BENCH_START.search(markdown):
        where = getattr(getattr(page, "file", None), "src_uri", "a page")
        markdown = _quote_numbers(markdown, results_dir, where)
    if "<!-- benchmark" not in markdown:
        return markdown

    def replace(match: re.Match[str]) -> str:
        indent, kind, name = match.groups()
        if kind == "-goals":
            text = goals_table(results_dir)
        elif kind == "-plot":
            if name != "figures":
                raise PluginError(f"performance page: unknown plot {name!r}; allowed: figures")
            text = figure_times_svg(results_dir)
        elif not (results_dir / f"{name}.json").is_file():
            # A benchmark not yet run on this checkout is shown as such (the site must build
            # before the site-build benchmark can measure it); a broken file is still an error.
            log.info("performance page: %s.json not measured yet", name)
            text = (
                f'!!! note "Not measured yet"\n    `benchmarks/results/{name}.json` does not '
                f"exist yet; see `benchmarks/README.md` for the script that writes it."
            )
        else:
            text = render_result(load_result(results_dir, name))
        # keep the marker's indentation, so a marker inside a content tab stays inside it
        return "\n".join(indent + line if line else line for line in text.splitlines())

    return MARKER.sub(replace, markdown)
