"""Stop signals sent to a real ``scripts/make_figures.py`` run, at every phase of it.

Each test copies a miniature checkout whose figures were made once, makes them stale, starts
the real command line in a subprocess with some figures slowed down, signals the parent
process the way a terminal, ``kill`` or a CI cancel does, and then checks what a user relies
on: the exit status, one closing line and no traceback, no process left behind, no temporary
file, a manifest that is valid JSON whose entries all match their files, the finished figures
kept and the unfinished ones as they were.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _helpers import MAKE_FIGURES, alive, figures_env, run_make_figures
from test_pipeline import make_project

FIGURES = '''\
"""Figures for the stop-signal tests.

Each leaves a mark ``marks/<kind>.<figure>.<pid>`` (so the test knows the worker processes);
with SIGNAL_SLOW set, the slow figures mark that they started and then wait to be stopped.
With SIGNAL_PAUSE=write (or lock), the process that makes quick_plot pauses after writing its
first SVG (or while holding the manifest lock to write its entry), marking it.
"""
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt

from block4 import pipeline
from block4.figures.registry import FigureContext, figure

MARKS = Path(__file__).resolve().parents[3] / "marks"
PAUSE_S = 0.5  # shorter than the grace a stopped worker gets


def mark(kind: str, name: str) -> None:
    MARKS.mkdir(exist_ok=True)
    (MARKS / f"{kind}.{name}.{os.getpid()}").touch()


def wait_if_slow(name: str) -> None:
    mark("started", name)
    if os.environ.get("SIGNAL_SLOW"):
        end = time.monotonic() + 60
        while time.monotonic() < end:
            time.sleep(0.02)


def plot(values):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot(values)
    return fig


_write, _dump = pipeline.atomic_write, pipeline._dump_manifest


def paused_write(path, data):
    _write(path, data)
    if os.environ.get("SIGNAL_PAUSE") == "write" and path.name == "quick_plot.svg":
        mark("paused", "write")
        time.sleep(PAUSE_S)


def paused_dump(manifest):
    entry = manifest["figures"].get("quick_plot", {})
    if os.environ.get("SIGNAL_PAUSE") == "lock" and entry.get("params") == {"n": 2}:
        mark("paused", "lock")
        time.sleep(PAUSE_S)
    return _dump(manifest)


pipeline.atomic_write, pipeline._dump_manifest = paused_write, paused_dump


@figure("quick_plot", chapter="signals", params={"n": 1})
def quick_plot(ctx: FigureContext, n: int):
    mark("pid", "quick_plot")
    return plot([0, n]), {"n": n}


@figure("slow_sleep", chapter="signals", params={"n": 1})
def slow_sleep(ctx: FigureContext, n: int):
    mark("pid", "slow_sleep")
    wait_if_slow("slow_sleep")
    return plot([n, 0]), {"n": n}


@figure("slow_training", chapter="signals", params={"n": 1})
def slow_training(ctx: FigureContext, n: int):
    import pytorch_lightning as pl
    import torch

    mark("pid", "slow_training")

    class Model(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.layer(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class Slow(pl.Callback):
        def on_train_batch_end(self, *args):
            wait_if_slow("slow_training")

    x = torch.randn(8, 2)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x[:, :1]), batch_size=4)
    trainer = pl.Trainer(**ctx.trainer_kwargs(max_epochs=1, callbacks=[Slow()]))
    trainer.fit(Model(), data)
    return plot([0, n, 0]), {"n": n}
'''


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkout whose three signal figures were made once, then edited (all stale)."""
    repo = make_project(tmp_path_factory.mktemp("signals") / "repo")
    module = repo / "src" / "block4" / "figures" / "signals.py"
    module.write_text(FIGURES)
    proc = run_make_figures(repo, "--profile", "smoke", "--jobs", "2", timeout=180)
    assert proc.returncode == 0, proc.stderr
    # a long recorded time starts quick_plot first (longest first): it is finished by the
    # time its worker starts slow_sleep
    manifest = repo / "docs" / "figures" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["figures"]["quick_plot"]["wall_time_s"] = 100.0
    # and slow_sleep, which needs no Lightning, too long to be made by the run's own process
    # while the fork server imports: both slow figures are made by workers
    data["figures"]["slow_sleep"]["wall_time_s"] = 50.0
    manifest.write_text(json.dumps(data, indent=2))
    module.write_text(FIGURES.replace('params={"n": 1}', 'params={"n": 2}'))
    shutil.rmtree(repo / "marks")
    return repo


@pytest.fixture
def repo(template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(template, tmp_path / "repo", symlinks=True))


def out_dir(repo: Path) -> Path:
    return repo / "docs" / "figures"


def snapshot(repo: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out_dir(repo).iterdir()) if p.is_file()}


def marks(repo: Path, kind: str) -> dict[str, set[int]]:
    """``{figure: {pid, ...}}`` of the marks of one kind."""
    found: dict[str, set[int]] = {}
    for path in (repo / "marks").glob(f"{kind}.*") if (repo / "marks").is_dir() else ():
        _, name, pid = path.name.split(".")
        found.setdefault(name, set()).add(int(pid))
    return found


def children(pid: int) -> set[int]:
    """The direct child processes of ``pid`` (Linux /proc)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``: with forked workers, the fork server and its workers."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children(todo.pop()) - found:
            found.add(child)
            todo.append(child)
    return found


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


def start(repo: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, MAKE_FIGURES, "--profile", "smoke", *args],
        cwd=repo,
        env=figures_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_consistent(repo: Path) -> dict:
    """No temporary file; the manifest parses and every entry matches its files."""
    out = out_dir(repo)
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []
    entries = json.loads((out / "manifest.json").read_text())["figures"]
    for name, entry in entries.items():
        assert {"fingerprint", "files", "sha256", "numbers"} <= set(entry), name
        for file, digest in entry["sha256"].items():
            assert hashlib.sha256((out / file).read_bytes()).hexdigest() == digest, file
    return entries


def closing_line(stderr: str) -> str:
    """The run's one closing line (and that nothing else was said about the interruption)."""
    assert "Traceback" not in stderr, stderr
    assert "KeyboardInterrupt" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if "interrupted" in ln.lower()]
    assert len(lines) == 1, stderr
    assert stderr.rstrip().splitlines()[-1] == lines[0], stderr
    return lines[0]


def stop_and_time(proc: subprocess.Popen[str], sig: int, workers: set[int]) -> float:
    """Send ``sig`` to the parent; the seconds until every one of ``workers`` is gone."""
    sent = time.monotonic()
    proc.send_signal(sig)
    wait_until(lambda: not any(alive(pid) for pid in workers), 10, "the workers to end")
    return time.monotonic() - sent


# -- --jobs 2: every signal, while two figures are being made -----------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_a_signal_to_the_parent_stops_every_worker_and_keeps_finished_figures(
    repo: Path, sig: int
) -> None:
    before = snapshot(repo)
    proc = start(repo, "--jobs", "2", SIGNAL_SLOW="1")
    both = lambda: {"slow_sleep", "slow_training"} <= set(marks(repo, "started"))  # noqa: E731
    wait_until(both, 90, "both slow figures to start")
    workers = descendants(proc.pid)  # the workers, their fork server, multiprocessing's helper
    made_in = {pid for pids in marks(repo, "pid").values() for pid in pids}
    assert made_in <= workers and len(made_in) == 2  # both workers are making figures
    servers = {parent_of(pid) for pid in made_in}
    assert len(servers) == 1 and servers <= workers - made_in  # forked by one fork server

    # The promise (reproduce.md: "every worker process stops within two seconds") is about
    # the processes making figures; the fork server and multiprocessing's resource tracker
    # follow the run's own exit, which a loaded machine may delay: they get 10 s, untimed.
    seconds = stop_and_time(proc, sig, made_in)
    wait_until(lambda: not any(alive(pid) for pid in workers), 10, "the fork server to end")
    _, err = proc.communicate(timeout=30)

    print(f"{sig.name}: both workers stopped {seconds:.2f} s after the signal")
    assert seconds < 2.0, f"workers took {seconds:.2f} s to stop"
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL  # no chance to say anything
    else:
        assert proc.returncode == 128 + sig, err
        line = closing_line(err)
        assert line.startswith("interrupted during slow_sleep, slow_training by " + sig.name)
        assert "1 finished figure(s) saved in docs/figures" in line
        assert line.endswith("Run the same command again to resume.")
    entries = assert_consistent(repo)
    assert entries["quick_plot"]["params"] == {"n": 2}  # finished: kept
    after = snapshot(repo)
    for name in ("slow_sleep", "slow_training"):  # being made: as they were
        assert entries[name]["params"] == {"n": 1}
        assert after[f"{name}.svg"] == before[f"{name}.svg"]
        assert after[f"{name}.dark.svg"] == before[f"{name}.dark.svg"]


# -- one process (--jobs 1) -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "figure"),
    [
        (signal.SIGTERM, "slow_training"),
        (signal.SIGHUP, "slow_sleep"),
    ],  # in Lightning's fit, or not
)
def test_a_sequential_run_stops_the_same_way(repo: Path, sig: int, figure: str) -> None:
    before = snapshot(repo)
    proc = start(repo, "--only", "quick_plot", figure, SIGNAL_SLOW="1")
    wait_until(lambda: figure in marks(repo, "started"), 60, f"{figure} to start")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 128 + sig, err
    line = closing_line(err)
    assert line.startswith(f"interrupted during {figure} by {sig.name}: 1 finished figure")
    assert "Detected KeyboardInterrupt" not in err
    entries = assert_consistent(repo)
    assert entries["quick_plot"]["params"] == {"n": 2}
    assert entries[figure]["params"] == {"n": 1}
    assert snapshot(repo)[f"{figure}.svg"] == before[f"{figure}.svg"]


# -- the phases of a run: planning, writing the files, holding the manifest lock ----------------


@pytest.mark.slow
def test_a_signal_while_planning_writes_nothing(repo: Path) -> None:
    """Planning reads every source; a stop then ends the run before any figure starts."""
    before = snapshot(repo)
    wrapper = (
        "import runpy, sys, time\n"
        "sys.path.insert(0, 'src')\n"
        "import block4.make_figures as m\n"
        "plan = m.plan\n"
        "def slow_plan(request):\n"
        "    print('planning', flush=True)\n"
        "    time.sleep(30)\n"
        "    return plan(request)\n"
        "m.plan = slow_plan\n"
        f"sys.argv = [{MAKE_FIGURES!r}, '--profile', 'smoke']\n"
        f"runpy.run_path({MAKE_FIGURES!r}, run_name='__main__')\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", wrapper],
        cwd=repo,
        env=figures_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "planning"
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 129, err
    assert closing_line(err) == (
        "make_figures.py: interrupted by SIGHUP; every figure made so far is saved. "
        "Run the same command again to resume."
    )
    assert snapshot(repo) == before


@pytest.mark.slow
@pytest.mark.parametrize(("phase", "jobs"), [("write", "1"), ("write", "2"), ("lock", "2")])
def test_a_signal_between_a_figures_writes_waits_for_all_three(
    repo: Path, phase: str, jobs: str
) -> None:
    """A signal after the first SVG (or under the manifest lock) lands after the second SVG
    and the entry are written: the figure is saved whole and counted as saved."""
    proc = start(
        repo,
        "--jobs",
        jobs,
        "--only",
        "quick_plot",
        "slow_sleep",
        SIGNAL_PAUSE=phase,
        SIGNAL_SLOW="1",
    )
    wait_until(lambda: phase in marks(repo, "paused"), 60, f"the pause in {phase}")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 143, err
    line = closing_line(err)
    assert "1 finished figure(s) saved" in line
    entries = assert_consistent(repo)  # the new SVGs match the new entry
    assert entries["quick_plot"]["params"] == {"n": 2}
    assert entries["slow_sleep"]["params"] == {"n": 1}
    if phase != "lock":
        return
    # the lock was released: the next run makes what is left and ends
    resumed = run_make_figures(repo, "--profile", "smoke", "--only", "slow_sleep", timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    assert assert_consistent(repo)["slow_sleep"]["params"] == {"n": 2}
