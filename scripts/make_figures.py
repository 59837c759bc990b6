#!/usr/bin/env python
"""Make the figures of the block4 site: ``python scripts/make_figures.py --help``.

A thin wrapper around :func:`block4.make_figures.main`. It puts this checkout's ``src/`` first
on ``sys.path``, so the figures are always made from the code next to this script (not from
another installed copy of block4), and it never imports torch or Lightning unless a figure
has to be made.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from block4.make_figures import main  # noqa: E402

if __name__ == "__main__":
    try:
        sys.exit(main(root=ROOT))
    except BrokenPipeError:  # e.g. `make_figures.py --list | head`
        sys.stderr.close()
        sys.exit(0)
