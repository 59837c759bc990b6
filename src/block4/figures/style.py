"""One look for every figure: sizes, fonts and a colour cycle that reads on light and dark pages.

Figure functions draw in the light style with :func:`subplots`; the pipeline writes the light
file and derives the dark variant from the same Figure (text, axes and grid recoloured), so no
figure is computed twice. Data colours come from :data:`PALETTE`, chosen to keep contrast on
both a white and a near-black background.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from cycler import cycler  # noqa: E402

#: Colour cycle (Okabe-Ito based, colour-blind safe); readable on white and on #1e2129.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#8C8C8C", "#F0E442"]

#: Colours with a meaning, used the same way on every page.
ROLE = {
    "forward": "#0072B2",  # values flowing forward
    "backward": "#D55E00",  # gradients flowing backward
    "truth": "#8C8C8C",  # ground truth / reference curves
    "model": "#0072B2",
    "highlight": "#CC79A7",
}

RC: dict[str, Any] = {
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.prop_cycle": cycler(color=PALETTE),
    "lines.linewidth": 1.8,
    "svg.fonttype": "none",  # text stays text: smaller files, selectable, recolourable
    "svg.hashsalt": "block4",  # deterministic SVG ids
    "font.family": "DejaVu Sans",
}


def context():
    """A context manager applying the course style; the pipeline runs every figure in it."""
    return plt.rc_context(RC)


def subplots(nrows: int = 1, ncols: int = 1, *, width: float = 6.4, height: float = 3.6, **kw: Any):
    """``plt.subplots`` in the course style; returns ``(fig, axes)``.

    The style is applied here too, so a figure function called outside the pipeline (in a
    notebook, say) looks the same.
    """
    with context():
        fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), layout="constrained", **kw)
    return fig, axes
