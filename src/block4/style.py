"""One look for every figure: sizes, fonts and a colour cycle that reads on light and dark pages.

Figure functions draw in the light style with `subplots`; the pipeline writes the light
file and derives the dark variant from the same Figure (text, axes and grid recoloured), so no
figure is computed twice. Data colours come from `PALETTE`, chosen to keep contrast on
both a white and a near-black background.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
from cycler import cycler
from matplotlib.ticker import FuncFormatter, NullFormatter

#: Colour cycle (Okabe-Ito based, colour-blind safe); readable on white and on #1e2129.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#8C8C8C", "#F0E442"]

#: The activation functions of the course, with the colour each keeps on every figure.
ACTIVATION_COLORS = {
    "sigmoid": PALETTE[0],
    "tanh": PALETTE[1],
    "relu": PALETTE[2],
    "leaky_relu": PALETTE[3],
    "gelu": PALETTE[4],
}

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


def wide_bottom_row(fig: Any, axes: Any) -> Any:
    """Replace the bottom row of a 2 x 2 grid of ``axes`` (from `subplots`) by one axis
    as wide as the figure, and return that axis."""
    if getattr(axes, "shape", None) != (2, 2):
        raise ValueError(
            f"wide_bottom_row: axes must be a 2 x 2 grid, got shape {getattr(axes, 'shape', None)}"
        )
    gs = axes[1, 0].get_gridspec()
    for ax in axes[1]:
        ax.remove()
    return fig.add_subplot(gs[1, :])


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _decade(value: float, _position: object = None) -> str:
    """``1e-5 -> "10⁻⁵"`` in plain text (mathtext would draw the exponent at 70 % of the
    font size, too small to read at page width); "" between decades."""
    if value <= 0 or abs(math.log10(value) - round(math.log10(value))) > 1e-6:
        return ""
    exponent = round(math.log10(value))
    return {0: "1", 1: "10"}.get(exponent, "10" + str(exponent).translate(_SUPERSCRIPT))


def rate_ticks(ax: Any, rates: Sequence[float]) -> None:
    """Learning rates on a log x axis, labelled with their values (``0.003``)."""
    ax.set_xticks(list(rates), [f"{r:g}" for r in rates])
    ax.xaxis.set_minor_formatter(NullFormatter())


def log_decade_labels(*axes: Any, axis: str = "y") -> None:
    """Label the decades of log-scale axes as ``10⁻⁵`` in full-size text, nothing between.

    ``axis`` is ``"y"`` (the default) or ``"x"``.
    """
    if axis not in ("x", "y"):
        raise ValueError(f"log_decade_labels: axis must be 'x' or 'y', got {axis!r}")
    for ax in axes:
        target = ax.yaxis if axis == "y" else ax.xaxis
        target.set_major_formatter(FuncFormatter(_decade))
        target.set_minor_formatter(NullFormatter())


#: Colours of the dark variant: text and axes become this light grey...
DARK_FOREGROUND = "#e6e6e6"
#: ...and near-white fills (annotation boxes, white edges) become this dark page colour.
DARK_BACKGROUND = "#1e2129"

# A colour counts as "neutral" (black, greys, white) below this HLS saturation or chroma;
# neutral colours are mirrored for the dark page, coloured data is kept as it is.
_NEUTRAL_CHROMA = 0.08
# Saturated colours darker than this (relative luminance) are lightened on the dark page.
_MIN_DARK_LUMINANCE = 0.2


def _luminance(r: float, g: float, b: float) -> float:
    """WCAG relative luminance of an sRGB colour."""

    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b)


def dark_colour(colour: Any) -> Any:
    """Map one colour of a light figure to its counterpart on a dark page.

    Neutral colours (black, greys, white) are mirrored in lightness between
    `DARK_FOREGROUND` and `DARK_BACKGROUND`: black text becomes light grey, a white
    box becomes the page colour, a mid grey stays a mid grey. Saturated colours keep their
    hue; the few too dark to read on a dark page (relative luminance below
    ``0.2``, e.g. the palette's blue) are mixed with a quarter of white. ``"none"`` is
    returned unchanged and alpha is kept.
    """
    if colour is None or (isinstance(colour, str) and colour.lower() == "none"):
        return colour
    try:
        r, g, b, a = matplotlib.colors.to_rgba(colour)
    except (ValueError, TypeError):
        return colour
    if max(r, g, b) - min(r, g, b) > _NEUTRAL_CHROMA:
        if _luminance(r, g, b) >= _MIN_DARK_LUMINANCE:
            return colour
        return (r + (1 - r) * 0.25, g + (1 - g) * 0.25, b + (1 - b) * 0.25, a)
    light = (r + g + b) / 3
    fg = matplotlib.colors.to_rgb(DARK_FOREGROUND)
    bg = matplotlib.colors.to_rgb(DARK_BACKGROUND)
    return tuple(f + (b_ - f) * light for f, b_ in zip(fg, bg, strict=True)) + (a,)


def _hex(colour: Any) -> str:
    return matplotlib.colors.to_hex(colour, keep_alpha=False)


def _dark_array(colours: Any) -> Any:
    import numpy as np

    arr = np.asarray(colours, dtype=float)
    if arr.ndim != 2 or arr.shape[1] != 4:
        return colours
    return np.array([dark_colour(tuple(row)) for row in arr], dtype=float)


#: ``gid`` prefix of the figure's and the axes' background patches in the light SVG, so
#: `dark_svg` can make them transparent.
BACKGROUND_GID = "block4-background"

_STYLE_ATTRIBUTE = re.compile(rb'(style|fill|stroke)="([^"]*)"')
_HEX_COLOUR = re.compile(rb"#[0-9a-fA-F]{6}\b")
_SVG_ROOT = re.compile(rb"<svg ")
_BACKGROUND_FILL = re.compile(
    rb'(<g id="'
    + BACKGROUND_GID.encode()
    + rb'-\d+">\s*<path\b[^>]*?style="[^"]*?)fill: #[0-9a-fA-F]{6}'
)


def recolourable(fig: Any) -> bool:
    """Whether `dark_svg` can derive ``fig``'s dark SVG from its light one.

    Not when a colour-mapped collection (``scatter(c=...)``, ``pcolormesh``, contours) holds
    data colours, which `dark_variant` keeps but a recolouring of the file would
    change, nor when an artist is ``rasterized`` (its pixels are an embedded image that only
    a second drawing recolours).

    Of an x or y axis, the walk looks at the axis label and offset text but not the ticks
    (lines and text, never colour-mapped; matplotlib makes them when it draws): asking
    an axis for its ticks places them, which costs a tenth of the drawing itself (1.4 s of
    14 s for the 28 figures).
    """
    from matplotlib.axis import Axis
    from matplotlib.collections import Collection
    from matplotlib.image import AxesImage, FigureImage

    stack: list[Any] = [fig]
    while stack:
        artist = stack.pop()
        if isinstance(artist, Collection) and artist.get_array() is not None:
            return False
        if artist.get_rasterized() and not isinstance(artist, (AxesImage, FigureImage)):
            return False
        if isinstance(artist, Axis):
            stack.extend((artist.label, artist.offsetText))
        else:
            stack.extend(artist.get_children())
    return True


def mark_backgrounds(fig: Any) -> None:
    """Name the figure's and every axes' background patch (``gid``) for `dark_svg`."""
    patches = [fig.patch] + [ax.patch for ax in fig.get_axes()]
    for i, patch in enumerate(patches):
        if patch.get_gid() is None:
            patch.set_gid(f"{BACKGROUND_GID}-{i}")


def dark_svg(light: bytes) -> bytes:
    """The dark SVG of a light one drawn after `mark_backgrounds`, without drawing again.

    Every colour in a ``style``/``fill``/``stroke`` attribute goes through
    `dark_colour` (exactly what `dark_variant` does to the artists) and the
    backgrounds become transparent, as ``savefig(transparent=True)`` makes them. Text
    content is never touched. Only for figures that are `recolourable`.
    """
    cache: dict[bytes, bytes] = {}

    def colour(match: re.Match[bytes]) -> bytes:
        key = match.group(0)
        if key not in cache:
            cache[key] = _hex(dark_colour(key.decode())).encode()
        return cache[key]

    def attribute(match: re.Match[bytes]) -> bytes:
        name, value = match.group(1), match.group(2)
        return name + b'="' + _HEX_COLOUR.sub(colour, value) + b'"'

    transparent = _BACKGROUND_FILL.sub(rb"\1fill: none", light)
    recoloured = _STYLE_ATTRIBUTE.sub(attribute, transparent)
    # Matplotlib leaves out black fills (black is SVG's default); on the root element the
    # dark counterpart becomes the default that every element without a fill inherits.
    default_fill = b'<svg style="fill: ' + _hex(dark_colour("#000000")).encode() + b'" '
    return _SVG_ROOT.sub(default_fill, recoloured, count=1)


def _recolour_patch(patch: Any) -> None:
    """Map a patch's face and edge colours; an invisible one (alpha 0, e.g. ``"none"``) is left
    alone: set again on a patch with an ``alpha`` it would take that alpha and appear."""
    for get, put in ((patch.get_facecolor, patch.set_facecolor),
                     (patch.get_edgecolor, patch.set_edgecolor)):  # fmt: skip
        colour = get()
        if matplotlib.colors.to_rgba(colour)[3] > 0:
            put(dark_colour(colour))


def dark_variant(fig: Any) -> None:
    """Recolour ``fig`` in place for a dark page (text, spines, ticks, grid, legend, black lines).

    Called by the pipeline after the light SVG has been written, so the dark file shows
    exactly the same data: nothing is computed twice. Images (``imshow``) and colour-mapped
    collections keep their colours; only neutral colours change (see `dark_colour`).
    """
    from matplotlib.collections import Collection
    from matplotlib.image import AxesImage, FigureImage
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.text import Text

    seen: set[int] = set()
    for ax in fig.get_axes():
        # Ticks are recoloured through the axis so ticks created on a redraw match; their
        # artists are then skipped below (mapping a colour twice would undo it).
        for axis in (ax.xaxis, ax.yaxis):
            ticks = axis.get_major_ticks() + axis.get_minor_ticks()
            if not ticks:
                continue
            tick = ticks[0]
            axis.set_tick_params(
                which="both",
                color=_hex(dark_colour(tick.tick1line.get_color())),
                labelcolor=_hex(dark_colour(tick.label1.get_color())),
                grid_color=_hex(dark_colour(tick.gridline.get_color())),
                grid_alpha=tick.gridline.get_alpha(),
            )
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                for part in (
                    tick.tick1line,
                    tick.tick2line,
                    tick.gridline,
                    tick.label1,
                    tick.label2,
                ):
                    seen.add(id(part))

    for artist in fig.findobj():
        if id(artist) in seen or isinstance(artist, (AxesImage, FigureImage)):
            continue
        seen.add(id(artist))
        if isinstance(artist, Text):
            artist.set_color(dark_colour(artist.get_color()))
            box = artist.get_bbox_patch()
            if box is not None and id(box) not in seen:
                seen.add(id(box))
                _recolour_patch(box)
            arrow = getattr(artist, "arrow_patch", None)
            if arrow is not None and id(arrow) not in seen:
                seen.add(id(arrow))
                _recolour_patch(arrow)
        elif isinstance(artist, Line2D):
            # read the marker colours first: "auto" ones follow the line's colour, which
            # would otherwise be mapped twice
            face, edge = artist.get_markerfacecolor(), artist.get_markeredgecolor()
            artist.set_color(dark_colour(artist.get_color()))
            artist.set_markerfacecolor(dark_colour(face))
            artist.set_markeredgecolor(dark_colour(edge))
        elif isinstance(artist, Patch):
            _recolour_patch(artist)
        elif isinstance(artist, Collection):
            if artist.get_array() is None:  # colour-mapped data keeps its colour map
                artist.set_facecolor(_dark_array(artist.get_facecolor()))
            artist.set_edgecolor(_dark_array(artist.get_edgecolor()))
