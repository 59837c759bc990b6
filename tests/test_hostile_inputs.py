"""Bad inputs a user may give, each in a miniature checkout with the real command line.

Every case asserts what the user sees and keeps: one clear error naming the problem (and what
is allowed, or the fix), no traceback, the right exit status, and nothing overwritten. A
damaged manifest entry is the one exception to "refused": it is reported stale with the
command that repairs it, so one bad entry never blocks the other figures.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import figures_env, run_make_figures
from test_pipeline import make_project

from block4.data.mnist import IDXFormatError, read_idx


def tree(repo: Path) -> dict[str, bytes]:
    """Every file under docs/ (what a bad input must not change)."""
    docs = repo / "docs"
    if not docs.exists():
        return {}
    return {
        str(p.relative_to(docs)): p.read_bytes() for p in sorted(docs.rglob("*")) if p.is_file()
    }


def one_error(proc: subprocess.CompletedProcess[str], status: int = 2) -> str:
    """The single error line of a refused input (no traceback, nothing else said)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == status, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1, proc.stderr
    return errors[0]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_project(tmp_path / "repo")


def write_manifest(repo: Path, text: str | bytes) -> Path:
    path = repo / "docs" / "figures" / "manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def add_figure_module(repo: Path, body: str) -> None:
    header = "import matplotlib.pyplot as plt\nfrom block4.figures.registry import figure\n\n"
    (repo / "src" / "block4" / "figures" / "hostile.py").write_text(header + body)


# -- outside the project's environment ------------------------------------------------------------

# -S: no site-packages (so no numpy, matplotlib, torch, Lightning), as with a system Python
BARE_PYTHON = (sys.executable, "-S")


def test_outside_the_environment_a_run_says_once_what_to_activate(repo: Path) -> None:
    proc = run_make_figures(repo, "--profile", "smoke", python=BARE_PYTHON)
    line = one_error(proc)
    assert line.startswith("make_figures.py: error: numpy, matplotlib, torch, pytorch_lightning")
    assert "source .venv/bin/activate" in line and "./dev.sh setup" in line
    assert "No module named" not in proc.stderr
    assert "figure 1/" not in proc.stderr  # refused before any figure starts
    assert tree(repo) == {}


def test_outside_the_environment_asking_for_a_gpu_says_the_same(repo: Path) -> None:
    line = one_error(
        run_make_figures(repo, "--profile", "smoke", "--accelerator", "gpu", python=BARE_PYTHON)
    )
    assert "torch" in line and "source .venv/bin/activate" in line


def test_outside_the_environment_list_still_works(repo: Path) -> None:
    proc = run_make_figures(repo, "--list", python=BARE_PYTHON)
    assert proc.returncode == 0, proc.stderr
    assert "line_plot" in proc.stdout and "2 figures: 2 missing" in proc.stdout


# -- hostile manifests ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{"format": 4, "figures": {"line_plot": 5}}', id="entry-not-an-object"),
        pytest.param(
            '{"format": 4, "figures": {"line_plot": {"files": "line_plot.svg", "sha256": []}}}',
            id="entry-fields-of-the-wrong-type",
        ),
    ],
)
def test_a_damaged_entry_is_stale_with_its_reason_and_the_repairing_command(
    repo: Path, text: str
) -> None:
    # One bad entry must not block the other figures: it is reported stale (why, and the
    # command that re-makes it), and the next run writes a sound entry in its place.
    write_manifest(repo, text)
    before = tree(repo)
    proc = run_make_figures(repo, "--check")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "stale: line_plot (its manifest entry is" in proc.stdout
    assert "refresh with: python scripts/make_figures.py --only line_plot" in proc.stdout
    listed = run_make_figures(repo, "--list")
    assert listed.returncode == 0 and "stale" in listed.stdout
    assert tree(repo) == before


@pytest.mark.parametrize(
    ("text", "what"),
    [
        pytest.param('{"format": 99, "figures": {}}', "format 99", id="format-99"),
        pytest.param("[]", "figures", id="a-list-not-a-table"),
        pytest.param(
            b"\xff\xfe\x00garbage",
            "UTF-8",
            id="not-utf8-text",
        ),
        pytest.param('{"format": 3, "figures": {', "not valid JSON", id="truncated"),
    ],
)
@pytest.mark.parametrize("mode", ["--list", "--check"])
def test_a_hostile_manifest_is_one_error_naming_it_and_stays_as_it_is(
    repo: Path, text: str | bytes, what: str, mode: str
) -> None:
    path = write_manifest(repo, text)
    before = tree(repo)
    line = one_error(run_make_figures(repo, mode))
    assert "manifest.json" in line and what in line
    assert tree(repo) == before
    assert path.exists()


def test_a_manifest_that_is_a_directory_is_one_error(repo: Path) -> None:
    (repo / "docs" / "figures" / "manifest.json").mkdir(parents=True)
    line = one_error(run_make_figures(repo, "--list"))
    assert "manifest.json" in line and "directory" in line


def test_unknown_manifest_keys_and_huge_numbers_are_tolerated(repo: Path) -> None:
    """Keys from a newer version and absurd values make a figure stale, never a crash."""
    write_manifest(
        repo,
        '{"format": 3, "figures": {"line_plot": {"files": {"light": "line_plot.svg"}, '
        '"seed": 1e400, "profile": "turbo", "wall_time_s": -1}}, "made_by": "the future"}',
    )
    before = tree(repo)
    proc = run_make_figures(repo, "--check")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "stale: line_plot (its manifest entry is damaged" in proc.stdout
    assert tree(repo) == before


# -- hostile figure declarations --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            '@figure("../evil", chapter="demo")\ndef f(ctx):\n    pass\n',
            "figure name '../evil' must be snake_case",
            id="path-in-the-name",
        ),
        pytest.param(
            '@figure("line_plot", chapter="demo")\ndef f(ctx):\n    pass\n',
            "figure 'line_plot' is defined twice",
            id="duplicate-name",
        ),
        pytest.param(
            '@figure("p_plot", chapter="demo", params=[1])\ndef f(ctx):\n    pass\n',
            "params of figure 'p_plot' must be a dict of keyword arguments",
            id="params-a-list",
        ),
        pytest.param(
            '@figure("c_plot", chapter="")\ndef f(ctx):\n    pass\n',
            "chapter of figure 'c_plot' must be a non-empty string",
            id="empty-chapter",
        ),
        pytest.param(
            '@figure("d_plot")\ndef f(ctx):\n    pass\n', "needs chapter=", id="no-chapter"
        ),
    ],
)
def test_a_bad_declaration_is_one_error_with_its_line(repo: Path, body: str, message: str) -> None:
    add_figure_module(repo, body)
    line = one_error(run_make_figures(repo, "--profile", "smoke"))
    assert "hostile.py" in line or "demo.py" in line
    assert message in line
    assert tree(repo) == {}


@pytest.mark.slow
def test_a_figure_returning_nan_is_refused_and_writes_nothing(repo: Path) -> None:
    add_figure_module(
        repo,
        '@figure("nan_plot", chapter="demo")\ndef nan_plot(ctx):\n'
        '    import numpy as np\n    return plt.figure(), {"loss": np.float64("nan")}\n',
    )
    proc = run_make_figures(repo, "--profile", "smoke", "--only", "nan_plot")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "numbers['loss'] is nan; JSON has no NaN/inf" in proc.stderr
    assert not (repo / "docs" / "figures" / "nan_plot.svg").exists()


@pytest.mark.slow
def test_params_the_function_does_not_take_are_one_error(repo: Path) -> None:
    add_figure_module(
        repo,
        '@figure("q_plot", chapter="demo", params={"nope": 1})\n'
        "def q_plot(ctx):\n    return plt.figure(), {}\n",
    )
    proc = run_make_figures(repo, "--profile", "smoke", "--only", "q_plot")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "nope" in proc.stderr and "q_plot" in proc.stderr


# -- hostile command lines --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--jobs", "-3"], "--jobs '-3' is not valid; allowed: a positive count"),
        (["--jobs", "1.5"], "--jobs '1.5' is not valid; allowed: a positive count"),
        (["--jobs", ""], "--jobs '' is not valid; allowed: a positive count"),
        (["--devices", "0,,1"], "--devices '0,,1' is not valid; allowed: auto, a positive count"),
        (["--devices", "foo"], "--devices 'foo' is not valid"),
        (["--only"], "argument --only: expected at least one argument"),
        (["--only", "line_plot", "nope"], "unknown figure 'nope'; allowed: line_plot, other_plot"),
        (["--profle", "full"], "unrecognized arguments: --profle full"),
        (["--list", "--check"], "argument --check: not allowed with argument --list"),
        (["--num-nodes", "abc"], "--num-nodes 'abc' is not valid; allowed: a positive integer"),
    ],
)
def test_a_bad_flag_is_one_error_and_writes_nothing(
    repo: Path, args: list[str], message: str
) -> None:
    line = one_error(run_make_figures(repo, *args, "--profile", "smoke"))
    assert message in line
    assert tree(repo) == {}


def test_a_seed_torch_cannot_take_is_refused(repo: Path) -> None:
    line = one_error(run_make_figures(repo, "--seed", str(10**30), "--profile", "smoke"))
    assert "--seed" in line
    assert tree(repo) == {}


def test_out_dir_on_a_file_is_one_error(repo: Path) -> None:
    (repo / "afile").write_text("precious")
    line = one_error(run_make_figures(repo, "--out-dir", "afile", "--profile", "smoke"))
    assert "--out-dir" in line and "afile" in line
    assert (repo / "afile").read_text() == "precious"


def test_an_out_dir_that_cannot_be_written_is_one_error_up_front(repo: Path) -> None:
    proc = run_make_figures(repo, "--out-dir", "/proc/block4-figures", "--profile", "smoke")
    line = one_error(proc)
    assert "--out-dir" in line
    assert "figure 1/" not in proc.stderr


def test_a_bad_thread_count_in_the_environment_is_one_error(repo: Path) -> None:
    line = one_error(run_make_figures(repo, "--list", BLOCK4_FIGURE_THREADS="abc"))
    assert "BLOCK4_FIGURE_THREADS" in line


# -- corrupt data files (the MNIST IDX reader) ------------------------------------------------------

_HEADER = struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">III", 2, 2, 2)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short for the 4-byte magic number"),
        (_HEADER + bytes(5), "truncated: shape (2, 2, 2) needs 8 data bytes, found 5"),
        (_HEADER + bytes(10), "2 unexpected bytes after the data"),
        (b"hello, not an IDX file", "wrong magic number"),
        (struct.pack(">HBB", 0, 0x07, 1) + struct.pack(">I", 1) + b"\0", "wrong magic number"),
        (struct.pack(">HBB", 0, 0x08, 1) + struct.pack(">I", 2**31), "needs 2147483648 data"),
    ],
    ids=["empty", "truncated", "trailing-bytes", "text", "unknown-type-code", "huge-shape"],
)
def test_a_corrupt_idx_file_is_one_error_naming_it(
    tmp_path: Path, data: bytes, message: str
) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(IDXFormatError, match="train-images-idx3-ubyte") as err:
        read_idx(path)
    assert message in str(err.value)
    assert path.read_bytes() == data


def test_a_corrupt_gzip_idx_file_is_one_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(IDXFormatError, match=r"t10k-labels-idx1-ubyte.gz: cannot read the file"):
        read_idx(path)


# -- the training command line (LightningCLI) -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [
                "fit",
                "--model",
                "Classifier",
                "--data",
                "DigitsDataModule",
                "--trainer.max_epochs",
                "x",
            ],
            "max_epochs",
        ),
        (["fit", "--config", "/nonexistent/run.yaml"], "File does not exist"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
    ids=["max-epochs-not-a-number", "missing-config", "unknown-subcommand"],
)
def test_the_training_cli_refuses_bad_flags_without_a_traceback(
    tmp_path: Path, args: list[str], message: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "block4", *args],
        cwd=tmp_path,
        env=figures_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no lightning_logs, no checkpoint
