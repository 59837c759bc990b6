"""End-to-end runs of ``scripts/make_figures.py`` (smoke profile) in a miniature checkout.

Every test works in a temporary copy (see ``make_project`` in test_pipeline.py) and runs the
real command line in a subprocess: real matplotlib figures, real files, real manifest.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _helpers import alive
from test_pipeline import ROOT, make_project

from block4 import figure_runs, make_figures, pipeline

SCRIPT = "scripts/make_figures.py"


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    for var in ("BLOCK4_FIGURES_PLAN", "LOCAL_RANK", "RANK", "NODE_RANK", "SLURM_PROCID"):
        env.pop(var, None)
    return env


def run(
    root: Path, *args: str, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, SCRIPT, *args],
        cwd=root,
        env={**_env(), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(root: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    """Start make_figures.py in ``root`` (a process to signal, or to read its pid)."""
    return subprocess.Popen(
        [sys.executable, SCRIPT, *args],
        cwd=root,
        env={**_env(), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def snapshot(out_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out_dir.iterdir()) if p.is_file()}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_project(tmp_path / "repo")


@pytest.fixture
def made(repo: Path) -> Path:
    """A checkout whose two figures have been made once (smoke profile)."""
    proc = run(repo, "--profile", "smoke")
    assert proc.returncode == 0, proc.stderr
    return repo


def figures_dir(repo: Path) -> Path:
    return repo / "docs" / "figures"


def manifest(repo: Path) -> dict:
    return json.loads((figures_dir(repo) / "manifest.json").read_text())


def break_line_plot(repo: Path) -> None:
    """Make line_plot raise ``RuntimeError('boom')``."""
    demo = repo / "src" / "block4" / "figures" / "demo.py"
    demo.write_text(
        demo.read_text().replace(
            "    return fig, {", "    raise RuntimeError('boom')\n    return fig, {"
        )
    )


def slow_down_line_plot(repo: Path) -> None:
    """With DEMO_SLOW set, line_plot prints 'working' and sleeps; it also becomes stale."""
    demo = repo / "src" / "block4" / "figures" / "demo.py"
    slow = demo.read_text().replace(
        "    return fig, {",
        "    import os, time\n"
        "    if os.environ.get('DEMO_SLOW'):\n"
        "        print('working', flush=True)\n"
        "        time.sleep(60)\n"
        "    return fig, {",
    )
    demo.write_text(slow.replace('"n": 5', '"n": 6'))  # a real change, so line_plot is stale


def interrupt_when(repo: Path, line: str, *args: str) -> tuple[int, str]:
    """Run make_figures.py with DEMO_SLOW set, send SIGINT to it (only) once it prints
    ``line``; return its exit status and stderr."""
    proc = subprocess.Popen(
        [sys.executable, SCRIPT, *args],
        cwd=repo,
        env=dict(_env(), DEMO_SLOW="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == line  # inside the figure function now
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


# -- making figures ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_writes_both_files_and_the_entry_and_a_second_run_does_nothing(repo: Path) -> None:
    proc = run(repo, "--profile", "smoke")
    assert proc.returncode == 0, proc.stderr
    assert "figure 1/2: line_plot (demo, smoke)" in proc.stderr
    assert "figure 2/2: other_plot (demo2, smoke)" in proc.stderr
    assert "ETA" in proc.stderr and "elapsed" in proc.stderr
    out = figures_dir(repo)
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == [
        "line_plot.dark.svg",
        "line_plot.svg",
        "manifest.json",
        "other_plot.dark.svg",
        "other_plot.svg",
    ]
    entry = manifest(repo)["figures"]["line_plot"]
    assert entry["numbers"] == {"slope": 2.0, "n": 5, "profile": "smoke", "ok": True}
    assert entry["profile"] == "smoke" and entry["seed"] == 0
    assert entry["files"] == {"light": "line_plot.svg", "dark": "line_plot.dark.svg"}
    assert entry["source"] == "src/block4/figures/demo.py"
    assert entry["device"] == "cpu"
    assert {"python", "matplotlib", "numpy"} <= set(entry["versions"])
    assert entry["wall_time_s"] >= 0 and entry["date"].endswith("+00:00")
    assert 0 < entry["draw_time_s"] < 60  # drawing both SVGs, timed apart from the function
    assert "block4.helper:SCALE" in entry["sources"] and entry["format"] == 4
    assert entry["results"] == []  # line_plot computes nothing through ctx.compute
    before = snapshot(out)

    again = run(repo, "--profile", "smoke")
    assert again.returncode == 0, again.stderr
    assert "all 2 figures are fresh; nothing to do" in again.stdout
    assert "figure 1/" not in again.stderr
    assert snapshot(out) == before  # nothing rewritten, not even the manifest


@pytest.mark.slow
def test_force_reproduces_byte_identical_svgs(made: Path) -> None:
    before = snapshot(figures_dir(made))
    proc = run(made, "--force", "--profile", "smoke")
    assert proc.returncode == 0, proc.stderr
    after = snapshot(figures_dir(made))
    for name in ("line_plot.svg", "line_plot.dark.svg", "other_plot.svg", "other_plot.dark.svg"):
        assert after[name] == before[name], name
    assert after["line_plot.svg"] != after["line_plot.dark.svg"]


@pytest.mark.slow
def test_a_better_profile_remakes_and_a_worse_one_keeps(made: Path) -> None:
    proc = run(made, "--profile", "quick", "--only", "other_plot")
    assert "figure 1/1: other_plot (demo2, quick)" in proc.stderr
    assert manifest(made)["figures"]["other_plot"]["numbers"] == {"end": 0.25}
    proc = run(made, "--profile", "smoke")  # never downgrades a figure
    assert "nothing to do" in proc.stdout
    assert manifest(made)["figures"]["other_plot"]["profile"] == "quick"
    proc = run(made, "--seed", "3", "--only", "line_plot", "--profile", "smoke")  # another seed
    assert "figure 1/1: line_plot (demo, smoke)" in proc.stderr
    assert manifest(made)["figures"]["line_plot"]["seed"] == 3
    proc = run(made)  # the default (quick) is better than smoke: upgrades line_plot, keeps seed 3
    assert "figure 1/1: line_plot (demo, quick)" in proc.stderr
    assert manifest(made)["figures"]["line_plot"]["seed"] == 3
    listing = run(made, "--list").stdout.splitlines()
    assert listing[0].split()[:5] == ["NAME", "CHAPTER", "STATUS", "PROFILE", "DEVICE"]
    assert listing[1].split()[:5] == ["line_plot", "demo", "fresh", "quick", "cpu"]
    assert listing[2].split()[:5] == ["other_plot", "demo2", "fresh", "quick", "cpu"]
    # without --profile a stale figure keeps its profile: a published (full) one stays full
    run(made, "--profile", "full", "--only", "other_plot")
    (made / "src" / "block4" / "figures" / "demo2.py").write_text(
        (made / "src" / "block4" / "figures" / "demo2.py")
        .read_text()
        .replace('"other"', '"other!"')
    )
    proc = run(made, "--check")
    assert "stale: other_plot (changed: block4.figures.demo2:other_plot)" in proc.stdout
    assert "refresh with: python scripts/make_figures.py --only other_plot\n" in proc.stdout
    proc = run(made)
    assert "figure 1/1: other_plot (demo2, full)" in proc.stderr
    assert "(full profile) into" in proc.stderr
    assert manifest(made)["figures"]["other_plot"]["profile"] == "full"
    assert manifest(made)["figures"]["other_plot"]["numbers"] == {"end": 0.125}


# -- freshness --------------------------------------------------------------------------------


@pytest.mark.slow
def test_editing_a_dependency_makes_exactly_that_figure_stale(made: Path) -> None:
    assert run(made, "--check").returncode == 0
    helper = made / "src" / "block4" / "helper.py"
    helper.write_text("SCALE = 3.0\n")
    proc = run(made, "--check")
    assert proc.returncode == 1
    assert "stale: line_plot (changed: block4.helper:SCALE)" in proc.stdout
    assert "other_plot" not in proc.stdout.replace("--only line_plot", "")
    assert "refresh with: python scripts/make_figures.py --only line_plot" in proc.stdout
    helper.write_text("SCALE = 2.0\n")  # back to the recorded source: fresh again
    assert run(made, "--check").returncode == 0


@pytest.mark.slow
def test_editing_an_unrelated_module_keeps_figures_fresh(made: Path) -> None:
    (made / "src" / "block4" / "unrelated.py").write_text("VALUE = 42\n")
    proc = run(made, "--check")
    assert proc.returncode == 0, proc.stdout
    assert "all 2 figures are fresh" in proc.stdout


@pytest.mark.slow
def test_editing_params_or_deleting_a_file_is_noticed(made: Path) -> None:
    demo = made / "src" / "block4" / "figures" / "demo.py"
    demo.write_text(demo.read_text().replace('"n": 5', '"n": 7'))
    (figures_dir(made) / "other_plot.dark.svg").unlink()
    proc = run(made, "--check")
    assert proc.returncode == 1
    assert (
        "stale: line_plot (changed: block4.figures.demo:line_plot; parameters changed)"
        in proc.stdout
    )
    assert "missing: other_plot (file other_plot.dark.svg is missing)" in proc.stdout
    proc = run(made, "--profile", "smoke")
    assert proc.returncode == 0, proc.stderr
    assert manifest(made)["figures"]["line_plot"]["numbers"]["n"] == 7
    assert run(made, "--check").returncode == 0


@pytest.mark.slow
def test_a_renamed_figure_is_pruned(made: Path) -> None:
    demo = made / "src" / "block4" / "figures" / "demo.py"
    demo.write_text(demo.read_text().replace('@figure("line_plot"', '@figure("rising_line"'))
    proc = run(made, "--check")
    assert proc.returncode == 1
    assert "orphan: line_plot" in proc.stdout and "missing: rising_line" in proc.stdout
    proc = run(made, "--profile", "smoke")
    assert proc.returncode == 0, proc.stderr
    assert "removed orphaned figures: line_plot" in proc.stderr
    assert not (figures_dir(made) / "line_plot.svg").exists()
    assert sorted(manifest(made)["figures"]) == ["other_plot", "rising_line"]


# -- failures and interruptions ---------------------------------------------------------------


@pytest.mark.slow
def test_a_failing_figure_leaves_previous_files_and_entry_byte_identical(made: Path) -> None:
    before = snapshot(figures_dir(made))
    break_line_plot(made)
    proc = run(made, "--profile", "smoke")
    assert proc.returncode == 1
    assert "FAILED line_plot" in proc.stderr and "RuntimeError: boom" in proc.stderr
    assert "their previous files and manifest entries are unchanged" in proc.stderr
    assert snapshot(figures_dir(made)) == before
    assert run(made, "--check").returncode == 1  # still stale: the code changed


@pytest.mark.slow
def test_a_bad_return_value_is_reported_and_nothing_written(made: Path) -> None:
    before = snapshot(figures_dir(made))
    demo = made / "src" / "block4" / "figures" / "demo.py"
    demo.write_text(demo.read_text().replace('"ok": True}', '"ok": [1]}'))
    proc = run(made, "--profile", "smoke")
    assert proc.returncode == 1
    assert "numbers['ok'] is a builtins.list; allowed are float, int, str and bool" in proc.stderr
    assert snapshot(figures_dir(made)) == before


@pytest.mark.slow
def test_sigint_mid_figure_leaves_no_partial_file_and_a_rerun_completes(made: Path) -> None:
    before = snapshot(figures_dir(made))
    slow_down_line_plot(made)
    returncode, err = interrupt_when(made, "working", "--profile", "smoke")
    assert returncode == 130, err
    assert "interrupted during line_plot" in err and "to resume" in err
    assert snapshot(figures_dir(made)) == before
    assert [p.name for p in figures_dir(made).iterdir() if ".tmp" in p.name] == []

    resumed = run(made, "--profile", "smoke")  # DEMO_SLOW unset: the figure finishes
    assert resumed.returncode == 0, resumed.stderr
    assert "figure 1/1: line_plot" in resumed.stderr  # only what was still stale
    assert manifest(made)["figures"]["line_plot"]["numbers"]["n"] == 6
    assert run(made, "--check").returncode == 0


@pytest.mark.slow
def test_two_runs_at_once_both_land_in_the_manifest(repo: Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, SCRIPT, "--profile", "smoke", "--only", name],
            cwd=repo,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name in ("line_plot", "other_plot")
    ]
    for p in procs:
        p.communicate(timeout=120)
        assert p.returncode == 0
    assert sorted(manifest(repo)["figures"]) == ["line_plot", "other_plot"]
    assert run(repo, "--check").returncode == 0


# -- parallel runs (--jobs) ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("start", ["", "spawn"])  # "": forked from a fork server (Linux)
def test_jobs_makes_the_same_files_in_parallel_processes(made: Path, start: str) -> None:
    before = snapshot(figures_dir(made))
    proc = run(made, "--force", "--profile", "smoke", "--jobs", "2", BLOCK4_WORKER_START=start)
    assert proc.returncode == 0, proc.stderr
    assert "making 2 figures in 2 parallel processes (smoke profile)" in proc.stderr
    assert "1/2 done" in proc.stderr and "2/2 done" in proc.stderr and "ETA" in proc.stderr
    assert "made 2 figure(s)" in proc.stderr and "2 processes" in proc.stderr
    after = snapshot(figures_dir(made))
    for name in ("line_plot.svg", "line_plot.dark.svg", "other_plot.svg", "other_plot.dark.svg"):
        assert after[name] == before[name], name  # one process or two: the same bytes
    entries = manifest(made)["figures"]
    assert sorted(entries) == ["line_plot", "other_plot"]
    assert entries["line_plot"]["numbers"] == {"slope": 2.0, "n": 5, "profile": "smoke", "ok": True}
    assert run(made, "--check").returncode == 0


@pytest.mark.slow
def test_jobs_a_failing_figure_is_reported_and_the_other_is_made(made: Path) -> None:
    break_line_plot(made)
    before = snapshot(figures_dir(made))
    proc = run(made, "--force", "--profile", "smoke", "--jobs", "2")
    assert proc.returncode == 1
    assert "FAILED line_plot" in proc.stderr and "RuntimeError: boom" in proc.stderr
    assert "done other_plot" in proc.stderr
    after = snapshot(figures_dir(made))
    assert after["line_plot.svg"] == before["line_plot.svg"]  # the failed figure kept its files
    assert "line_plot" in manifest(made)["figures"]


@pytest.mark.slow
def test_jobs_sigint_stops_every_worker_and_leaves_no_partial_file(made: Path) -> None:
    slow_down_line_plot(made)
    before = snapshot(figures_dir(made))
    # a worker is inside line_plot; SIGINT goes to the main process only, as `kill -INT` would
    args = ("--profile", "smoke", "--force", "--jobs", "2")
    returncode, err = interrupt_when(made, "working", *args)
    assert returncode == 130, err
    assert "interrupted during" in err and "line_plot" in err and "to resume" in err
    after = snapshot(figures_dir(made))
    assert after["line_plot.svg"] == before["line_plot.svg"]
    assert manifest(made)["figures"]["line_plot"]["numbers"]["n"] == 5
    assert [p.name for p in figures_dir(made).iterdir() if ".tmp" in p.name] == []


PID_FIGURE = '''\
"""A figure that records which process made it."""
import os
{imports}
from block4.figures.registry import FigureContext, figure
from block4.style import subplots


@figure("{name}", chapter="demo")
def {name}(ctx: FigureContext):
    if os.environ.get("DEMO_SLOW") and "{name}" == "light_pid":
        import time
        print("working", flush=True)
        time.sleep(60)
    fig, ax = subplots(width=3, height=2)
    ax.plot([0, 1], [0, 1])
    return fig, {{"pid": os.getpid()}}
'''


def add_pid_figures(repo: Path) -> None:
    """Two figures that record their process: light_pid needs only matplotlib, heavy_pid's
    module imports Lightning. Made once, so that the next run knows how long they take."""
    figures = repo / "src" / "block4" / "figures"
    for name, imports in (("light_pid", ""), ("heavy_pid", "import pytorch_lightning")):
        (figures / f"{name}.py").write_text(PID_FIGURE.format(name=name, imports=imports))
    proc = run(repo, "--profile", "smoke", timeout=180)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the default fork server")
def test_figures_without_lightning_are_made_by_the_run_while_the_server_imports(
    made: Path,
) -> None:
    add_pid_figures(made)
    before = snapshot(figures_dir(made))
    proc = start(made, "--force", "--profile", "smoke", "--jobs", "2")
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert "made 4 figure(s)" in err
    pids = {name: e["numbers"]["pid"] for name, e in manifest(made)["figures"].items()
            if "pid" in e["numbers"]}  # fmt: skip
    assert pids["light_pid"] == proc.pid  # on the core the importing server leaves idle
    assert pids["heavy_pid"] != proc.pid  # in a worker the server forked
    after = snapshot(figures_dir(made))
    for name in ("light_pid", "heavy_pid", "line_plot", "other_plot"):  # the same drawing
        assert after[f"{name}.svg"] == before[f"{name}.svg"], name
    # made last with a worse profile (smoke), their time says nothing of a quick run: all
    # go to the workers
    proc = start(made, "--force", "--profile", "quick", "--jobs", "2")
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert manifest(made)["figures"]["light_pid"]["numbers"]["pid"] != proc.pid


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the default fork server")
def test_sigint_while_the_server_imports_ends_the_run_and_the_server(made: Path) -> None:
    add_pid_figures(made)
    before = snapshot(figures_dir(made))
    proc = start(made, "--force", "--profile", "smoke", "--jobs", "2", DEMO_SLOW="1")
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "working"  # this process makes light_pid
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    seconds = time.monotonic() - sent
    print(f"the run ended {seconds:.2f} s after SIGINT")
    assert proc.returncode == 130, err
    # at once, not when the server has finished importing (it is ended instead)
    assert seconds < 3.0, f"the run took {seconds:.2f} s to end"
    assert "interrupted during" in err and "light_pid" in err and "Traceback" not in err
    after = snapshot(figures_dir(made))
    assert after["light_pid.svg"] == before["light_pid.svg"]
    assert [p.name for p in figures_dir(made).iterdir() if ".tmp" in p.name] == []
    assert _fork_servers(made) == []  # the fork server, still importing, was ended with the run


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the default fork server")
def test_sigint_while_the_run_waits_for_the_server_starts_no_worker(made: Path) -> None:
    add_pid_figures(made)
    before = snapshot(figures_dir(made))
    proc = start(made, "--force", "--profile", "smoke", "--jobs", "2")
    assert proc.stderr is not None
    lines = []
    while sum(" done " in line for line in lines) < 3:  # the three figures without Lightning
        lines.append(proc.stderr.readline())
        assert lines[-1], "".join(lines)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)  # the run now waits for the server's imports
    err = "".join(lines) + proc.communicate(timeout=60)[1]
    seconds = time.monotonic() - sent
    assert proc.returncode == 130, err
    assert seconds < 3.0, f"the run took {seconds:.2f} s to end"
    assert "3 finished figure(s) saved" in err and "Traceback" not in err
    entries = manifest(made)["figures"]
    assert entries["light_pid"]["numbers"]["pid"] == proc.pid  # made before the stop
    after = snapshot(figures_dir(made))
    assert after["heavy_pid.svg"] == before["heavy_pid.svg"]  # no worker made it after
    assert entries["heavy_pid"]["numbers"]["pid"] != proc.pid
    time.sleep(1.0)  # a worker started after the stop would have written by now
    assert manifest(made)["figures"]["heavy_pid"] == entries["heavy_pid"]
    assert _fork_servers(made) == []


def _fork_servers(repo: Path) -> list[int]:
    """Fork servers still running in ``repo`` (none should outlive their run)."""
    return [
        pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
        if alive(pid) and str(repo) in _cwd(pid) and "forkserver" in _cmdline(pid)
    ]  # fmt: skip


def _cwd(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.slow
def test_jobs_on_the_real_figures_gives_the_files_of_one_process(tmp_path: Path) -> None:
    """Figures sharing trained models (group "trained-models") give the same bytes when they
    run in a parallel worker as when they run one after another in one process."""
    # backprop_patterns needs no Lightning: with --jobs 2 the run's own process makes it
    # while the fork server imports (the committed manifest gives the times that allow it)
    names = [
        "poisson_counts",
        "regression_calibration",
        "activation_functions",
        "backprop_patterns",
    ]
    outs = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"jobs{jobs}"
        out.mkdir()
        shutil.copy(ROOT / "docs" / "figures" / "manifest.json", out / "manifest.json")
        proc = run(ROOT, "--profile", "smoke", "--force", "--only", *names, "--out-dir",
                   str(out), "--jobs", jobs, "--no-progress", timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        outs[jobs] = json.loads((out / "manifest.json").read_text())["figures"]
    for name in names:
        assert outs["1"][name]["sha256"] == outs["2"][name]["sha256"], name
        assert outs["1"][name]["numbers"] == outs["2"][name]["numbers"], name


# -- in-process units ------------------------------------------------------------------------


def test_parallel_units_keep_groups_together_longest_first() -> None:
    def info(name: str, group: str | None = None, module: str = "block4.figures.m") -> Any:
        return pipeline.FigureInfo(name, "c", {}, module, name, Path("m.py"), 1, group)

    jobs = [
        (info("a", "g"), None),
        (info("b"), None),
        (info("c", "g"), None),
        (info("d"), None),
        (info("e", "g", module="block4.figures.other"), None),  # same name, other module
        (info("new"), None),
    ]
    estimates = {"a": 10.0, "b": 15.0, "c": 7.0, "d": 1.0, "e": 2.0}
    units = figure_runs.parallel_units(jobs, estimates)
    names = [[i.name for i, _ in unit] for unit in units]
    # "new" has no estimate: it starts first; then a+c (17 s), b (15 s), e, d
    assert names == [["new"], ["a", "c"], ["b"], ["e"], ["d"]]


def test_the_run_itself_makes_only_short_figures_that_need_no_lightning(repo: Path) -> None:
    figures = repo / "src" / "block4" / "figures"
    (figures / "trains.py").write_text(PID_FIGURE.format(name="trains", imports=""))
    (figures / "heavy.py").write_text(
        PID_FIGURE.format(name="heavy", imports="import torchmetrics")
    )
    (figures / "inside.py").write_text(  # Lightning imported by the figure's own body
        PID_FIGURE.format(name="inside", imports="").replace(
            "    fig, ax =", "    import pytorch_lightning\n    fig, ax ="
        )
    )
    project = pipeline.Project(repo)
    found = pipeline.discover(project)
    units = [
        [(found[name], None)] for name in ("line_plot", "trains", "heavy", "inside", "other_plot")
    ]
    hints = {"line_plot": 0.5, "trains": 6.0, "heavy": 0.5, "inside": 0.5}  # other_plot: new
    picked = figure_runs.made_while_importing(project, units, hints)
    assert [[info.name for info, _ in unit] for unit in picked] == [["line_plot"]]
    hints["trains"] = 5.0
    picked = figure_runs.made_while_importing(project, units, hints)
    assert [[info.name for info, _ in unit] for unit in picked] == [["line_plot"], ["trains"]]
    together = [[(found["line_plot"], None), (found["trains"], None)]]  # one group: 5.5 s
    assert figure_runs.made_while_importing(project, together, hints) == []
    (figures / "trains.py").write_text("def broken(:\n")  # unreadable now: the workers decide
    assert figure_runs.made_while_importing(project, units, hints) == []


def test_workers_are_forked_on_linux_and_spawned_elsewhere_unless_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BLOCK4_WORKER_START", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert figure_runs.worker_start_method() == "forkserver"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert figure_runs.worker_start_method() == "spawn"
    monkeypatch.setenv("BLOCK4_WORKER_START", " spawn ")
    assert figure_runs.worker_start_method() == "spawn"
    monkeypatch.setenv("BLOCK4_WORKER_START", "forkserver")
    assert figure_runs.worker_start_method() == "forkserver"
    monkeypatch.setenv("BLOCK4_WORKER_START", "fork")
    with pytest.raises(pipeline.PipelineError) as err:
        figure_runs.worker_start_method()
    assert str(err.value) == (
        "BLOCK4_WORKER_START='fork' is not a way to start workers here; allowed: forkserver, "
        "spawn (or unset: forkserver on Linux, spawn elsewhere)"
    )


def test_a_bad_worker_start_is_one_line_and_writes_nothing(made: Path) -> None:
    before = snapshot(figures_dir(made))
    proc = run(made, "--force", "--jobs", "2", BLOCK4_WORKER_START="threads")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "make_figures.py: error: BLOCK4_WORKER_START='threads' is not a way to start workers "
        "here; allowed: forkserver, spawn (or unset: forkserver on Linux, spawn elsewhere)"
    ]
    assert snapshot(figures_dir(made)) == before


@pytest.mark.slow
@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="/proc and the default fork server"
)
def test_forked_workers_have_the_libraries_and_the_runs_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BLOCK4_WORKER_START", raising=False)
    pool = figure_runs.WorkerPool(1)
    assert pool.start_method == "forkserver"
    monkeypatch.setenv("BLOCK4_RUN_MARK", "after the server started")
    try:
        info = pool.executor.submit(_worker_facts).result(timeout=120)
    finally:
        pool.close()
    assert info["preloaded"] == {"torch": True, "pytorch_lightning": True, "matplotlib": True}
    assert info["mark"] == "after the server started"
    assert info["parent"] != os.getpid()  # a child of the fork server, not of this process
    deadline = time.monotonic() + 5
    while alive(info["parent"]):  # close() ended the fork server too (SIGKILL)
        assert time.monotonic() < deadline, "the fork server outlived close()"
        time.sleep(0.02)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks a worker")
def test_stopping_the_workers_also_ends_the_executors_manager_thread() -> None:
    # Python 3.11's exit hook for process pools writes to the manager thread's wake-up pipe
    # without a lock: a thread still closing it at exit printed a traceback under the run's
    # last line (seen after SIGHUP). Without the wait, the thread was still there in 8 of 10
    # tries on a 2-core machine. The executor's manager thread also reaps the worker that
    # SIGTERM ended: asking `is_alive` instead of waiting on the sentinel took it for one
    # still running (and so killed) in 12 of 100 stops; 20 tries catch that 9 times in 10.
    import concurrent.futures
    import multiprocessing

    for _ in range(20):
        executor = concurrent.futures.ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("fork")
        )
        running = executor.submit(time.sleep, 60)
        deadline = time.monotonic() + 30
        while not running.running():
            assert time.monotonic() < deadline, "the worker never started"
            time.sleep(0.01)
        manager = executor._executor_manager_thread
        assert manager is not None and manager.is_alive()
        assert figure_runs.stop_workers(executor, signal.SIGTERM) is False  # SIGTERM sufficed
        assert not manager.is_alive()


def _worker_facts() -> dict[str, Any]:
    """In a worker: what the fork server preloaded (checked before anything imports it)."""
    import sys as worker_sys

    return {
        "preloaded": {
            m: m in worker_sys.modules for m in ("torch", "pytorch_lightning", "matplotlib")
        },
        "mark": os.environ.get("BLOCK4_RUN_MARK"),
        "parent": os.getppid(),
    }


@pytest.mark.parametrize(
    ("text", "value"), [("auto", "auto"), ("2", 2), ("-1", -1), ("0,1", "0,1")]
)
def test_parse_devices_accepts_lightning_forms(text, value) -> None:
    assert make_figures.parse_devices(text) == value


@pytest.mark.parametrize("text", ["0", "x", "1.5", "-2", ""])
def test_parse_devices_rejects_others(text) -> None:
    with pytest.raises(make_figures.UsageError, match="allowed: auto, a positive count"):
        make_figures.parse_devices(text)


def test_rank_zero_follows_the_launcher_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "GROUP_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert figure_runs.is_rank_zero()
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert figure_runs.is_rank_zero()
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert not figure_runs.is_rank_zero()
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("SLURM_PROCID", "5")
    assert not figure_runs.is_rank_zero()


def test_help_documents_profiles_and_clusters(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        make_figures.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for word in ("smoke", "quick", "full", "--strategy ddp", "srun", "--num-nodes", "--check"):
        assert word in out


def test_every_profile_has_help_and_no_figure_depends_on_the_help_text() -> None:
    from block4.figures.registry import PROFILES

    assert PROFILES == ("smoke", "quick", "full")  # names only: what the figures depend on
    assert list(make_figures.PROFILE_HELP) == list(PROFILES)
    # rewording the help must leave every figure fresh: no fingerprint covers make_figures
    manifest = json.loads((ROOT / "docs" / "figures" / "manifest.json").read_text())
    figures = manifest.get("figures", manifest)
    sources = {name for entry in figures.values() for name in entry["sources"]}
    assert any(name.startswith("block4.figures.registry:") for name in sources)
    assert not [name for name in sources if name.startswith("block4.make_figures:")]


def test_progress_lines_of_one_process_and_of_parallel_workers() -> None:
    import io

    info = pipeline.FigureInfo("a_plot", "demo", {}, "block4.figures.m", "a_plot", Path("m.py"), 1)
    stream = io.StringIO()
    progress = figure_runs.Progress(total=2, estimates={"a_plot": 3.0}, stream=stream)
    progress.begin(1, info, "smoke", ["a_plot", "b_plot"])
    progress.finished(info, 2.0, True, " (hint)")
    progress.finished(info, 1.0, False, remaining=["b_plot"])
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[....................] figure 1/2: a_plot (demo, smoke)")
    assert lines[0].endswith("ETA ?")  # b_plot has no estimate and nothing has finished yet
    assert lines[1] == "    done a_plot in 2.0 s (hint)"
    assert lines[2].startswith("[####################] 2/2 FAILED a_plot (demo) in 1.0 s |")
    assert lines[2].endswith("ETA 0:02")  # b_plot: the average of the finished figures
    assert progress.spent == [2.0]


def test_the_pipeline_exports_only_the_torch_free_contract() -> None:
    assert "main" not in pipeline.__all__ and "parse_jobs" not in pipeline.__all__
    for name in pipeline.__all__:
        assert hasattr(pipeline, name), name
    for name in make_figures.__all__ + figure_runs.__all__:
        assert hasattr(make_figures, name) or hasattr(figure_runs, name), name


# -- bad inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--only", "nope"], "unknown figure 'nope'; allowed: line_plot, other_plot"),
        (["--profile", "turbo"], "invalid choice: 'turbo' (choose from 'smoke', 'quick', 'full')"),
        (["--devices", "two"], "--devices 'two' is not valid; allowed: auto, a positive count"),
        (["--num-nodes", "0"], "--num-nodes '0' is not valid; allowed: a positive integer"),
        (["--accelerator", "abacus"], "invalid choice: 'abacus' (choose from 'auto', 'cpu'"),
        (["--strategy", "magic"], "invalid choice: 'magic' (choose from 'auto', 'ddp'"),
        (["--seed", "x"], "argument --seed: invalid int value: 'x'"),
        (["--jobs", "0"], "--jobs '0' is not valid; allowed: a positive count (e.g. 4) or auto"),
        (["--jobs", "many"], "--jobs 'many' is not valid; allowed: a positive count"),
        (
            ["--jobs", "2", "--devices", "2"],
            "--jobs 2 runs figures in separate processes, one device each; it cannot be "
            "combined with a multi-process Trainer",
        ),
        (["--jobs", "2", "--strategy", "ddp"], "allowed: --jobs 1 with those"),
    ],
)
def test_bad_inputs_exit_2_with_one_message_and_write_nothing(
    repo: Path, args: list[str], message: str
) -> None:
    proc = run(repo, *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stderr.count("error:") == 1
    assert not figures_dir(repo).exists()


@pytest.mark.slow
def test_asking_for_a_gpu_that_is_not_there_exits_2(repo: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = run(repo, "--accelerator", "gpu", "--profile", "smoke")
    assert proc.returncode == 2
    assert "--accelerator gpu but no CUDA GPU is available here" in proc.stderr
    assert not figures_dir(repo).exists()


# -- speed: listing and checking never import the heavy libraries ------------------------------

_PROBE = """
import runpy, sys, time
start = time.perf_counter()
sys.argv = ["make_figures.py", *sys.argv[1:]]
try:
    runpy.run_path("scripts/make_figures.py", run_name="__main__")
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "lightning", "pytorch_lightning", "matplotlib")
               if m in sys.modules)
print("HEAVY", ",".join(heavy) or "-", f"{time.perf_counter() - start:.3f}")
"""


def _probe(root: Path, *args: str) -> tuple[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        cwd=root,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("HEAVY")][-1]
    _, heavy, seconds = line.split()
    return heavy, float(seconds)


@pytest.mark.parametrize("args", [["--list"], ["--check"]])
def test_list_and_check_on_the_repository_import_no_heavy_library(args: list[str]) -> None:
    # The time this takes is a benchmark goal (benchmarks/figures.py), not a test: here only
    # what it imports, which is what keeps it fast on any machine.
    heavy, _ = _probe(ROOT, *args)
    assert heavy == "-"


@pytest.mark.slow
def test_a_no_change_run_imports_no_figure_module_and_is_fast(made: Path) -> None:
    heavy, _ = _probe(made, "--profile", "smoke")
    assert heavy == "-"
    proc = run(made, "--profile", "smoke")
    assert "nothing to do" in proc.stdout


TRAIN = '''\
"""A figure trained with Lightning (tiny)."""
import pytorch_lightning as pl
import torch

from block4.figures.registry import FigureContext, figure
from block4.style import subplots


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.losses = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.losses.append(loss.item())
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Slow(pl.Callback):
    """With DEMO_SLOW set, announce the first epoch and wait (to be interrupted)."""

    def on_train_epoch_start(self, trainer, pl_module):
        import os
        import time

        if os.environ.get("DEMO_SLOW"):
            print("training", flush=True)
            time.sleep(60)


@figure("tiny_training", chapter="demo3", params={"epochs": 2})
def tiny_training(ctx: FigureContext, epochs: int):
    torch.manual_seed(ctx.seed)
    x = torch.randn(64, 4)
    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=16
    )
    model = Tiny()
    trainer = pl.Trainer(**ctx.trainer_kwargs(max_epochs=epochs, callbacks=[Slow()]))
    trainer.fit(model, data)
    fig, ax = subplots(width=3, height=2)
    ax.plot(model.losses)
    ax.set_xlabel("step")
    ax.set_ylabel("MSE")
    return fig, {
        "final_loss": model.losses[-1],
        "steps": len(model.losses),
        "world_size": int(trainer.world_size),
    }
'''


@pytest.mark.slow
def test_a_ddp_run_on_two_cpu_processes_writes_once(made: Path) -> None:
    """Lightning's DDP launcher re-runs the script per rank: all ranks make the same figure,
    only rank 0 writes it."""
    (made / "src" / "block4" / "figures" / "train.py").write_text(TRAIN)
    proc = run(
        made,
        *("--profile", "smoke", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"),
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("figure 1/1: tiny_training") == 1  # one progress line: rank 0
    entry = manifest(made)["figures"]["tiny_training"]
    assert entry["numbers"]["world_size"] == 2
    assert entry["numbers"]["steps"] == 4  # 64 samples / 16 per batch / 2 ranks x 2 epochs
    assert entry["device"] == "cpu x2"
    assert entry["trainer"] == {
        "accelerator": "cpu",
        "devices": 2,
        "num_nodes": 1,
        "strategy": "ddp",
    }
    assert run(made, "--check").returncode == 0


@pytest.mark.slow
def test_sigint_during_a_lightning_run_is_an_interruption_too(made: Path) -> None:
    """Lightning catches Ctrl+C inside ``fit`` and exits; the pipeline still reports it."""
    (made / "src" / "block4" / "figures" / "train.py").write_text(TRAIN)
    before = snapshot(figures_dir(made))
    args = ("--profile", "smoke", "--only", "tiny_training")
    returncode, err = interrupt_when(made, "training", *args)
    assert returncode == 130, err
    assert "interrupted during tiny_training" in err
    assert snapshot(figures_dir(made)) == before


# -- the repository itself ---------------------------------------------------------------------


@pytest.mark.slow
def test_the_committed_figures_match_the_code() -> None:
    """CI fails while a figure in docs/figures is older than the code that makes it."""
    proc = run(ROOT, "--check")
    assert proc.returncode == 0, (
        "figures are stale; re-make and commit them:\n" + proc.stdout + proc.stderr
    )


# -- the results cache: a plotting edit re-plots without computing again ------------------------

CACHED = '''\
"""A figure whose expensive part goes through ctx.compute; it counts its runs in a file."""
from pathlib import Path

from block4.figures.registry import FigureContext, figure
from block4.style import subplots

COUNTER = Path(__file__).resolve().parents[3] / "computed.txt"


def expensive_runs(ctx: FigureContext, n: int) -> dict:
    with COUNTER.open("a") as fh:
        fh.write("run\\n")
    return {"curve": [0.5 * x * x for x in range(n)], "n": n}


@figure("cached_plot", chapter="demo3")
def cached_plot(ctx: FigureContext):
    data = ctx.compute(expensive_runs, n=6)
    fig, ax = subplots(width=3, height=2)
    ax.plot(data["curve"])
    ax.set_ylabel("loss")
    return fig, {"last": data["curve"][-1]}
'''


def computed(repo: Path) -> int:
    counter = repo / "computed.txt"
    return len(counter.read_text().splitlines()) if counter.exists() else 0


@pytest.mark.slow
def test_a_plotting_edit_replots_from_the_results_cache(made: Path) -> None:
    cached = made / "src" / "block4" / "figures" / "cached.py"
    cached.write_text(CACHED)
    assert run(made, "--profile", "smoke").returncode == 0
    assert computed(made) == 1
    first = manifest(made)["figures"]["cached_plot"]
    assert [r["reused"] for r in first["results"]] == [False]
    assert first["results"][0]["function"] == "block4.figures.cached:expensive_runs"

    cached.write_text(CACHED.replace('"loss"', '"training loss"'))  # plotting only
    check = run(made, "--check")
    assert check.stdout.splitlines()[0] == (
        "stale: cached_plot (changed: block4.figures.cached:cached_plot)"
    )
    assert "line_plot" not in check.stdout.split("refresh with")[0]
    proc = run(made, "--profile", "smoke")
    assert proc.returncode == 0, proc.stderr
    assert "figure 1/1: cached_plot" in proc.stderr  # only the edited figure
    assert computed(made) == 1  # no computation: the results came from the cache
    second = manifest(made)["figures"]["cached_plot"]
    assert second["results"][0]["reused"] is True
    assert second["results"][0]["computed"] == first["results"][0]["computed"]
    assert second["numbers"] == first["numbers"] == {"last": 12.5}
    assert second["sha256"] != first["sha256"]  # the new label

    for entry in (made / ".cache" / "results").rglob("*.npz"):
        entry.write_bytes(b"partial")  # a corrupt entry is ignored and rebuilt
    assert run(made, "--profile", "smoke", "--force", "--only", "cached_plot").returncode == 0
    assert computed(made) == 2
    assert run(made, "--profile", "smoke", "--force", "--only", "cached_plot").returncode == 0
    assert computed(made) == 2
    assert run(made, "--profile", "smoke", "--force", "--no-cache").returncode == 0
    assert computed(made) == 3

    cached.write_text(cached.read_text().replace("0.5 * x * x", "0.25 * x * x"))  # computation
    check = run(made, "--check")
    assert "stale: cached_plot (changed: block4.figures.cached:expensive_runs)" in check.stdout
    assert run(made, "--profile", "smoke").returncode == 0
    assert computed(made) == 4
    assert manifest(made)["figures"]["cached_plot"]["numbers"] == {"last": 6.25}


def test_an_out_dir_that_is_a_file_is_one_line_and_exit_2(repo: Path) -> None:
    (repo / "notes.txt").write_text("not a folder")
    for out in ("notes.txt", "notes.txt/figures"):
        proc = run(repo, "--out-dir", out, "--profile", "smoke")
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [
            f"make_figures.py: error: --out-dir {out}: "
            + ("notes.txt" if out == "notes.txt" else str(repo / "notes.txt"))
            + " is a file; allowed: a directory (created if missing)"
        ]


@pytest.mark.slow
def test_check_and_list_honour_profile_and_seed_and_a_damaged_entry_is_repaired(
    made: Path,
) -> None:
    assert run(made, "--check", "--profile", "smoke", "--seed", "0").returncode == 0
    proc = run(made, "--check", "--profile", "quick")
    assert proc.returncode == 1
    assert "stale: line_plot (made with the smoke profile, not quick)" in proc.stdout
    assert "refresh with: python scripts/make_figures.py --only line_plot other_plot " in (
        proc.stdout
    )
    assert "--profile quick" in proc.stdout
    # a better profile than asked is fresh, as a run with that profile would leave it alone
    assert run(made, "--only", "other_plot", "--profile", "quick").returncode == 0
    assert run(made, "--check", "--profile", "smoke").returncode == 0
    proc = run(made, "--check", "--profile", "quick")
    assert proc.returncode == 1 and "other_plot" not in proc.stdout
    proc = run(made, "--check", "--seed", "3", "--only", "other_plot")
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[0] == "stale: other_plot (made with seed 0, not 3)"
    listing = run(made, "--list", "--seed", "3").stdout
    assert "made with seed 0, not 3" in listing

    path = figures_dir(made) / "manifest.json"
    data = json.loads(path.read_text())
    data["figures"]["line_plot"]["numbers"] = [1, 2]  # e.g. a merge gone wrong
    path.write_text(json.dumps(data))
    proc = run(made, "--check")
    assert proc.returncode == 1
    assert (
        "stale: line_plot (its manifest entry is damaged (numbers missing or of the wrong type))"
        in proc.stdout
    )
    proc = run(made, "--profile", "smoke")  # the ordinary run repairs it
    assert proc.returncode == 0, proc.stderr
    assert "figure 1/1: line_plot" in proc.stderr
    assert run(made, "--check").returncode == 0
