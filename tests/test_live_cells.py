"""Live cells: block4.live_cells and its hook here, then the real pages in a real browser.

The fast tests run ``block4.live_cells`` on CPython (the same functions the browser runs on
Pyodide) and the MkDocs hook on its own. The slow tests serve a built site from a local
http.server and drive Debian's chromium with Playwright: a live cell runs offline and prints the
gradients the manifest holds for the worked example; an edited expression gives the values
``torch.autograd`` gives; an error shows its traceback on the page; the sigmoid-gate explorer
shows the numbers at x = -10, 0 and 10. They print the first-Run and later-Run times and the
bytes the first Run loads, and write screenshots (light and dark) to ``test-output/live-cells/``.

The site is built once per session (``mkdocs build --strict``), or taken from
``BLOCK4_LIVE_SITE`` when that names an already built site.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest
import torch
from _helpers import serve_directory

from block4 import live_hooks
from block4.live_cells import CELL_NAME, gate, run_cell

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
MANIFEST = ROOT / "docs" / "figures" / "manifest.json"


def manifest_numbers(name: str) -> dict:
    data = json.loads(MANIFEST.read_text())
    return data.get("figures", data)[name]["numbers"]


def expected_worked_example_line() -> str:
    n = manifest_numbers("backprop_worked_example")
    return f"df/dx = {n['df_dx']:g}, df/dy = {n['df_dy']:g}, df/dz = {n['df_dz']:g}"


# ---------------------------------------------------------------------------------------------
# block4.live_cells on CPython
# ---------------------------------------------------------------------------------------------


def test_the_backprop_cell_prints_the_gradients_of_the_manifest() -> None:
    result = json.loads(run_cell((EXAMPLES / "live_backprop.py").read_text()))
    assert result["error"] is None
    assert expected_worked_example_line() in result["output"]
    assert result["output"].splitlines()[-1] == "df/dx = -4, df/dy = -4, df/dz = 3"
    nodes = {n["label"]: (n["op"], n["data"], n["grad"]) for n in result["nodes"]}
    assert nodes == {
        "x": ("", -2.0, -4.0),
        "y": ("", 5.0, -4.0),
        "z": ("", -4.0, 3.0),
        "q": ("+", 3.0, -4.0),  # named after its variable
        "f": ("*", -12.0, 1.0),
    }
    assert result["svg"].startswith("<svg") and ">grad -4</text>" in result["svg"]


def test_the_graph_cell_shows_values_only_until_a_backward_pass() -> None:
    result = json.loads(run_cell((EXAMPLES / "live_graph.py").read_text()))
    n = manifest_numbers("graph_matmul_product")
    assert result["output"] == f"product = {n['product']:g}\n"
    assert result["nodes"][-1] == {"label": "product", "op": "*", "data": 120.0, "grad": None}
    assert {"m1_1", "m2_2", "matmul", ""} <= {node["label"] for node in result["nodes"]}
    assert "grad" not in result["svg"]


def test_an_error_shows_the_traceback_of_the_readers_code() -> None:
    code = "from block4.autograd import Value\nx = Value(0.0, 'x')\nprint('before')\ny = 1 / x\n"
    result = json.loads(run_cell(code))
    assert result["output"] == "before\n"
    error = result["error"]
    assert error.startswith("Traceback (most recent call last):")
    assert f'File "{CELL_NAME}", line 4' in error and "y = 1 / x" in error
    assert error.rstrip().endswith("ZeroDivisionError: division by zero: divisor Value 'x' is 0")
    assert "live_cells.py" not in error  # the runner's own frames are left out
    syntax = json.loads(run_cell("f = (1 +\n"))["error"]
    assert "SyntaxError" in syntax and CELL_NAME in syntax


def test_a_cell_without_values_has_no_graph() -> None:
    result = json.loads(run_cell("print(6 * 7)"))
    assert result == {"output": "42\n", "error": None, "nodes": [], "svg": ""}


@pytest.mark.parametrize("x", [-10.0, 0.0, 10.0, 2.5])
def test_the_sigmoid_gate(x: float) -> None:
    g = json.loads(gate(x, 2.0))
    s = 1 / (1 + math.exp(-x))
    assert g["out"] == pytest.approx(s, rel=1e-12)
    assert g["local"] == pytest.approx(s * (1 - s), rel=1e-9)
    assert g["passed"] == pytest.approx(2.0 * s * (1 - s), rel=1e-9)
    assert g["svg"].startswith("<svg")


def test_relu_blocks_only_negative_inputs() -> None:
    for x, passed in [(-10.0, 0.0), (-0.1, 0.0), (0.0, 0.0), (0.1, 3.0), (10.0, 3.0)]:
        g = json.loads(gate(x, 3.0, "relu"))
        assert (g["out"], g["passed"]) == (max(x, 0.0), passed)
    with pytest.raises(ValueError, match="'sigmoid' or 'relu'"):
        gate(1.0, 1.0, "tanh")


# ---------------------------------------------------------------------------------------------
# The hook
# ---------------------------------------------------------------------------------------------


def test_only_pages_with_live_cells_load_the_script(tmp_path: Path) -> None:
    config = {"docs_dir": str(tmp_path)}
    page = SimpleNamespace(url="backpropagation/")
    plain = "<p>no cells here</p>"
    assert live_hooks.on_page_content(plain, page, config, None) == plain
    html = live_hooks.on_page_content('<div class="live-cell">', page, config, None)
    assert 'src="../javascripts/live.js"' in html and 'href="../javascripts/live.css"' in html
    assert 'data-runtime=""' in html  # no runtime vendored into tmp_path: the cells say so
    runtime = tmp_path / "javascripts" / "vendor" / "pyodide"
    runtime.mkdir(parents=True)
    (runtime / "VERSION").write_text("pyodide 314.0.7\nnpm tarball sha512-...\n")
    html = live_hooks.on_page_content('<div class="live-explorer">', page, config, None)
    assert 'data-runtime="../javascripts/vendor/pyodide/"' in html
    assert 'data-runtime-version="314.0.7"' in html
    assert (
        live_hooks.site_root("") == "" and live_hooks.site_root("reference/autograd/") == "../../"
    )


def test_the_build_ships_the_real_engine(tmp_path: Path) -> None:
    live_hooks.on_post_build({"site_dir": str(tmp_path)})
    for name in live_hooks.SHIPPED:
        shipped = tmp_path / live_hooks.SITE_FOLDER / name
        assert shipped.read_bytes() == (ROOT / "src" / "block4" / name).read_bytes()


def test_the_runtime_is_fetched_not_committed() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "docs/javascripts/vendor/pyodide", "docs/live"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert tracked.stdout == ""
    script = (ROOT / "scripts" / "vendor_pyodide.sh").read_text()
    assert "VERSION=314.0.7" in script and "INTEGRITY=sha512-" in script


# ---------------------------------------------------------------------------------------------
# In the browser
# ---------------------------------------------------------------------------------------------

SHOTS = ROOT / "test-output" / "live-cells"


@pytest.fixture(scope="module")
def live_site(request: pytest.FixtureRequest) -> Path:
    given = os.environ.get("BLOCK4_LIVE_SITE")
    site = Path(given) if given else request.getfixturevalue("built_site")
    if not (site / "javascripts" / "vendor" / "pyodide" / "VERSION").is_file():
        pytest.fail(f"{site} has no Python runtime: run scripts/vendor_pyodide.sh and rebuild")
    return site


@pytest.fixture(scope="module")
def live_url(live_site: Path) -> Iterator[str]:
    with serve_directory(live_site) as url:
        yield url


class Network:
    """Every request of one page: off-site ones are cut off and recorded; bytes are counted."""

    def __init__(self, page) -> None:
        self.requests: list[str] = []
        self.offsite: list[str] = []
        self.bytes = 0
        self.console_errors: list[str] = []
        page.route("**/*", self._route)
        page.on("response", self._on_response)
        page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        page.on("pageerror", lambda e: self.console_errors.append(f"uncaught: {e}"))

    def _route(self, route) -> None:
        parts = urlsplit(route.request.url)
        if parts.scheme in ("data", "blob", "about") or parts.hostname in (
            "127.0.0.1",
            "localhost",
        ):
            route.continue_()
        else:
            self.offsite.append(route.request.url)
            route.abort()

    def _on_response(self, response) -> None:
        self.requests.append(response.url)
        self.bytes += int(response.headers.get("content-length") or 0)

    def mark(self) -> tuple[int, int]:
        return len(self.requests), self.bytes


@contextlib.contextmanager
def open_page(browser, url: str, theme: str = "light") -> Iterator[tuple[Any, Network]]:
    """``url`` loaded in a fresh browser context; yields the page and its `Network`."""
    context = browser.new_context(
        color_scheme=theme, viewport={"width": 1280, "height": 900}, service_workers="block"
    )
    try:
        page = context.new_page()
        network = Network(page)
        page.goto(url, wait_until="load")
        yield page, network
    finally:
        context.close()


def run_cell_in(page, cell, code: str | None = None, timeout_s: float = 60.0) -> float:
    """Press Run (after typing ``code``); the seconds until the output is on the page."""
    runs = int(cell.get_attribute("data-runs") or 0)
    if code is not None:
        cell.locator("textarea").fill(code)
    start = time.perf_counter()
    cell.locator("button.live-run").click()
    page.wait_for_function(
        "([c, n]) => Number(c.dataset.runs || 0) > n || c.querySelector('.live-result .live-error')",
        arg=[cell.element_handle(), runs],
        timeout=timeout_s * 1000,
    )
    return time.perf_counter() - start


@pytest.mark.slow
def test_a_live_cell_runs_offline_and_prints_the_manifest_gradients(
    browser, live_url: str, live_site: Path
):
    with open_page(browser, live_url + "backpropagation/") as (page, network):
        before_requests, before_bytes = network.mark()
        assert not any("pyodide" in u or "/live/block4/" in u for u in network.requests)
        cell = page.locator(".live-cell").first
        first_s = run_cell_in(page, cell)
        printed = cell.locator(".live-printed").inner_text()
        assert expected_worked_example_line() in printed
        grads = [
            float(v)
            for v in cell.locator(".live-grad").evaluate_all(
                "cells => cells.map(c => c.dataset.value)"
            )
        ]
        assert grads == [-4.0, -4.0, -4.0, 3.0, 1.0]  # x, y, q, z, f
        assert cell.locator(".live-graph svg text").count() > 10
        first_bytes = network.bytes - before_bytes
        later_ms = []
        for _ in range(5):
            run_cell_in(page, cell)
            later_ms.append(float(cell.get_attribute("data-last-run-ms")))
        assert network.offsite == [] and network.console_errors == []
        shipped = [u for u in network.requests[before_requests:] if "/live/block4/" in u]
        assert sorted(Path(urlsplit(u).path).name for u in shipped) == sorted(live_hooks.SHIPPED)
        page_ms = float(cell.get_attribute("data-first-run-ms"))
        phases = page.evaluate(
            "performance.getEntriesByType('measure').filter(m => m.name.startsWith('block4-live'))"
            ".map(m => `${m.name.slice(13)} ${Math.round(m.duration)} ms`).join(', ')"
        )
        has_snapshot = (live_site / "javascripts/vendor/pyodide/snapshot.bin.gz").is_file()
        assert ("start Python (snapshot)" in phases) == has_snapshot
        # How long Runs take is measured by benchmarks/live_cells.py (on idle cores, against
        # its goals), not here: next to the other tests, the machine's load decides it.
        print(
            f"\nlive cell: page load {before_bytes / 1e3:.0f} kB; first Run {first_s:.2f} s "
            f"(script's clock {page_ms / 1000:.2f} s: {phases}), "
            f"{first_bytes / 1e6:.2f} MB loaded by it; later Runs {later_ms} ms "
            f"(median {statistics.median(later_ms):.0f} ms); "
            f"{len(network.offsite)} off-site requests"
        )


def torch_values(code: str, names: list[str]) -> dict[str, tuple[float, float]]:
    """Run ``code`` with torch float64 tensors in place of Values: each name's value and grad."""
    scope: dict = {}
    exec(
        code,
        {"Value": lambda v, label="": torch.tensor(v, dtype=torch.float64, requires_grad=True)},
        scope,
    )
    out = scope[names[-1]]
    for name in names:
        if scope[name].grad_fn is not None:
            scope[name].retain_grad()
    out.backward()
    return {n: (float(scope[n].detach()), float(scope[n].grad)) for n in names}


EDITED = """x, y, z = Value(1.5, "x"), Value(-0.5, "y"), Value(0.8, "z")
h = (x * y + z.exp()).tanh()
g = h * x + (y - z).relu() + (x / z) ** 2
"""


@pytest.mark.slow
def test_an_edited_expression_gives_the_values_of_torch_autograd(browser, live_url: str):
    with open_page(browser, live_url + "backpropagation/") as (page, network):
        cell = page.locator(".live-cell").first
        code = "from block4.autograd import Value\n" + EDITED + "g.backward()\n"
        run_cell_in(page, cell, code)
        rows = cell.locator(".live-nodes tbody tr").evaluate_all(
            "rows => rows.map(r => [r.cells[0].textContent, r.cells[2].dataset.value,"
            " r.cells[3].dataset.value])"
        )
        ours = {label: (float(v), float(g)) for label, v, g in rows if label in "xyzhg"}
        theirs = torch_values(EDITED, ["x", "y", "z", "h", "g"])
        for name, (value, grad) in theirs.items():
            assert ours[name] == pytest.approx((value, grad), rel=1e-12, abs=1e-12), name
        assert network.offsite == [] and network.console_errors == []


@pytest.mark.slow
def test_an_error_shows_its_traceback_in_the_output_area(browser, live_url: str):
    with open_page(browser, live_url + "backpropagation/") as (page, network):
        cell = page.locator(".live-cell").first
        code = "from block4.autograd import Value\nx = Value(-1.0, 'x')\nprint(x.log())\n"
        run_cell_in(page, cell, code)
        error = cell.locator(".live-result .live-error").inner_text()
        assert "Traceback (most recent call last)" in error and f'"{CELL_NAME}", line 3' in error
        assert "ValueError: log is defined only for positive numbers" in error
        assert network.console_errors == []  # on the page, not in the console


@pytest.mark.slow
def test_the_gate_explorer_answers_the_three_questions(browser, live_url: str):
    with open_page(browser, live_url + "backpropagation/") as (page, network):
        box = page.locator(".live-explorer")
        box.locator("input.live-incoming").fill("1")
        for x in (-10, 0, 10):
            box.locator(f'button.live-preset[data-x="{x}"]').click()
            page.wait_for_function(
                "([b, x]) => b.dataset.x === String(x)",
                arg=[box.element_handle(), x],
                timeout=60_000,
            )
            shown = {
                key: float(box.locator(f"td.live-{key}").get_attribute("data-value"))
                for key in ("out", "local", "passed")
            }
            s = 1 / (1 + math.exp(-x))
            assert shown["out"] == pytest.approx(s, rel=1e-12)
            assert shown["local"] == pytest.approx(s * (1 - s), rel=1e-9)
            assert shown["passed"] == pytest.approx(s * (1 - s), rel=1e-9)
            text = box.locator("td.live-local").inner_text()
            assert text == ("0.25" if x == 0 else "4.540e-5")
        box.locator("input.live-relu").check()
        page.wait_for_function(
            "b => b.querySelector('td.live-out').dataset.value === '10'", arg=box.element_handle()
        )
        assert box.locator("td.live-passed").get_attribute("data-value") == "1"
        box.locator('button.live-preset[data-x="-10"]').click()
        page.wait_for_function("b => b.dataset.x === '-10'", arg=box.element_handle())
        assert box.locator("td.live-passed").get_attribute("data-value") == "0"
        assert network.offsite == [] and network.console_errors == []


@pytest.mark.slow
@pytest.mark.parametrize("snapshot", ["missing", "not gzip", "another build"])
def test_without_a_usable_snapshot_python_starts_the_ordinary_way(
    browser, live_url: str, snapshot: str
):
    import gzip

    body = {"not gzip": b"\x00" * 64, "another build": gzip.compress(os.urandom(4096))}
    with open_page(browser, live_url + "backpropagation/") as (page, network):
        if snapshot == "missing":
            page.route("**/snapshot.bin.gz", lambda route: route.fulfill(status=404))
        else:
            page.route("**/snapshot.bin.gz", lambda route: route.fulfill(body=body[snapshot]))
        cell = page.locator(".live-cell").first
        run_cell_in(page, cell)
        assert expected_worked_example_line() in cell.locator(".live-printed").inner_text()
        phases = page.evaluate(
            "performance.getEntriesByType('measure').map(m => m.name).join(', ')"
        )
        assert "block4-live: start Python" in phases and "(snapshot)" not in phases
        assert network.offsite == []


@pytest.mark.slow
def test_the_live_cell_benchmark_writes_its_timings(live_site: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "live_cells.py"), "--site", str(live_site)]
        + ["--runs", "1", "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "live_cells.json").read_text())["results"]
    for case in ("snapshot", "no_snapshot"):
        assert results[case]["first_run_s"] > 0 and results[case]["later_run_ms"] >= 0
        assert results[case]["page_kb"] > 0
    # the runtime and the snapshot are fetched on the first Run only: before it, the page
    # loads none of their files, and it weighs the same with or without a snapshot (to the
    # few kB of a favicon Chromium may ask for late)
    for case in ("snapshot", "no_snapshot"):
        assert results[case]["runtime_files_before_run"] == []
        assert results[case]["runtime_files_first_run"] >= 3  # loader, Python, block4
    assert abs(results["snapshot"]["page_kb"] - results["no_snapshot"]["page_kb"]) <= 3
    assert "start Python (snapshot)" in results["snapshot"]["phases_ms"]
    assert "start Python" in results["no_snapshot"]["phases_ms"]


@pytest.mark.slow
def test_pages_without_live_cells_load_nothing_new(browser, live_url: str):
    with open_page(browser, live_url + "activations/") as (page, network):
        assert page.locator(".live-cell, .live-explorer").count() == 0
        assert not any("live." in u or "pyodide" in u for u in network.requests)


@pytest.mark.slow
def test_a_build_without_the_runtime_says_so(browser, live_url: str):
    context = browser.new_context()
    page = context.new_page()

    def without_runtime(route) -> None:
        html = (
            route.fetch()
            .text()
            .replace('data-runtime="../javascripts/vendor/pyodide/"', 'data-runtime=""')
        )
        route.fulfill(body=html, content_type="text/html")

    page.route("**/backpropagation/", without_runtime)
    try:
        page.goto(live_url + "backpropagation/")
        cell = page.locator(".live-cell").first
        assert "not available in this build" in cell.locator(".live-status").inner_text()
        cell.locator("button.live-run").click()
        assert "not available in this build" in cell.locator(".live-error").inner_text()
    finally:
        context.close()


@pytest.mark.slow
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_screenshots_of_the_cell_and_the_explorer(browser, live_url: str, theme: str):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with open_page(browser, live_url + "backpropagation/", theme) as (page, network):
        cell = page.locator(".live-cell").first
        run_cell_in(page, cell)
        cell.screenshot(path=str(SHOTS / f"live-cell--{theme}.png"))
        box = page.locator(".live-explorer")
        box.locator('button.live-preset[data-x="-10"]').click()
        page.wait_for_function("b => b.dataset.x === '-10'", arg=box.element_handle())
        box.screenshot(path=str(SHOTS / f"gate-explorer--{theme}.png"))
        graphs = page.locator(".live-cell").first
        graphs.scroll_into_view_if_needed()
        assert network.console_errors == []
