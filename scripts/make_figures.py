#!/usr/bin/env python
"""Make the figures of the block4 site: ``python scripts/make_figures.py --help``.

A thin wrapper around `block4.make_figures.main`. It puts this checkout's ``src/`` first
on ``sys.path``, so the figures are always made from the code next to this script (not from
another installed copy of block4), and it never imports torch or Lightning unless a figure
has to be made. It ends every run with an exit status and at most one line of its own:
a stop signal at any moment (SIGINT, SIGTERM, SIGHUP) exits with 128 + the signal, and a
Python without the project's packages is told once which environment to activate (exit 2).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from block4.figure_runs import (  # noqa: E402
    RUN_PACKAGES,
    MissingPackages,
    Stopped,
    raising_on_stop_signals,
    require_packages,
    signal_name,
)
from block4.make_figures import main  # noqa: E402


def run() -> int:
    """Run the command line; the exit status."""
    try:
        with raising_on_stop_signals():  # the runs install their own; this covers the rest
            return main(root=ROOT)
    except Stopped as stop:  # while reading the sources and planning, or while reporting
        print(
            f"make_figures.py: interrupted by {signal_name(stop.signum)}; every figure made so "
            "far is saved. Run the same command again to resume.",
            file=sys.stderr,
        )
        return 128 + stop.signum
    except MissingPackages as err:
        print(f"make_figures.py: error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:  # e.g. torch for --accelerator gpu, before any figure
        if (err.name or "").partition(".")[0] not in RUN_PACKAGES:
            raise
        try:
            require_packages()
        except MissingPackages as missing:
            print(f"make_figures.py: error: {missing}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `make_figures.py --list | head`
        sys.stderr.close()
        return 0


def exit_now(status: int) -> None:
    """Exit with ``status``; after figures were made in this process, without the ~1.5 s
    teardown of torch and Lightning (every file is written and closed by then)."""
    if "torch" not in sys.modules:
        sys.exit(status)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    exit_now(run())
