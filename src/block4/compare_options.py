"""The options of the ``--compare`` report, for any argument parser that offers it.

`add_arguments` adds ``--compare REV`` and ``--compare-out DIR``; `block4.compare` writes
the report. Kept apart from it so that a command which only *offers* the report (the
figure command parses its options on every run, most of which compare nothing) does not
import the report's machinery.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["DEFAULT_OUT", "REPORT_HTML", "SUMMARY_MD", "add_arguments"]

#: File names of the report inside the output directory.
REPORT_HTML = "report.html"
SUMMARY_MD = "summary.md"

#: Where the report goes when no directory is given (relative to the repository root;
#: ``.cache/`` is ignored by git and safe to delete).
DEFAULT_OUT = Path(".cache") / "compare"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--compare REV`` and ``--compare-out DIR`` to ``parser`` (e.g. make_figures')."""
    parser.add_argument(
        "--compare",
        metavar="REV",
        default=None,
        help="write a report of every figure that differs from git revision REV (changed "
        "functions, numbers before -> after, images side by side) and of every paragraph of "
        "the pages that reads differently; see python -m block4.compare --help",
    )
    parser.add_argument(
        "--compare-out",
        metavar="DIR",
        type=Path,
        default=None,
        help=f"where --compare writes {REPORT_HTML} and {SUMMARY_MD} (default: {DEFAULT_OUT})",
    )
