"""Every figure's smallest text is legible at page width: >= 11 CSS px in a 1280-px window.

A figure is an SVG shown as an ``<img>`` in the content column, which is about 688 CSS px wide
in a 1280-px window. The browser scales the whole drawing to its displayed width, so a text of
font size ``s`` (in the SVG's user units) renders at

    s x displayed width / viewBox width,   displayed width = min(the SVG's own width, column)

where the SVG's own width is its ``width`` attribute in CSS px (matplotlib writes points:
1 pt = 4/3 CSS px). A three-panel figure 1000 px wide shrinks 7-pt text below 5 px.

This file computes that number from the SVG files alone (fast); ``tests/test_browser.py``
measures the same in Chromium on every page, in both palettes. Run with ``-s`` to see the
table of the smallest rendered text per figure.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"
#: Width of mkdocs-material's content column in a 1280-px window, in CSS px.
COLUMN_PX = 688.0
#: The smallest text size a reader can read without zooming, in CSS px.
MIN_TEXT_PX = 11.0

_SVG = "{http://www.w3.org/2000/svg}"
_UNITS_PX = {
    "": 1.0,
    "px": 1.0,
    "pt": 4 / 3,
    "pc": 16.0,
    "in": 96.0,
    "cm": 96 / 2.54,
    "mm": 9.6 / 2.54,
}
_LENGTH = re.compile(r"^\s*([0-9.]+(?:e[+-]?\d+)?)\s*([a-z]*)\s*$", re.I)
_FONT_SIZE_STYLE = re.compile(r"font-size\s*:\s*([0-9.]+)(px)?", re.I)
_TRANSFORM = re.compile(r"(matrix|translate|scale|rotate|skewX|skewY)\s*\(([^)]*)\)")


def css_px(length: str) -> float:
    """A length attribute (``720pt``, ``500px``, ``500``) in CSS px."""
    match = _LENGTH.match(length or "")
    if not match or match.group(2).lower() not in _UNITS_PX:
        raise ValueError(f"cannot read the SVG length {length!r}")
    return float(match.group(1)) * _UNITS_PX[match.group(2).lower()]


def transform_scale(transform: str | None) -> float:
    """How much a ``transform`` attribute scales lengths (sqrt of its determinant)."""
    det = 1.0
    for name, args in _TRANSFORM.findall(transform or ""):
        values = [float(v) for v in re.split(r"[\s,]+", args.strip()) if v]
        if name == "matrix":
            a, b, c, d = values[:4]
            det *= abs(a * d - b * c)
        elif name == "scale":
            sx = values[0]
            sy = values[1] if len(values) > 1 else sx
            det *= abs(sx * sy)
    return math.sqrt(det)


def _font_size(element: ET.Element) -> float | None:
    style = _FONT_SIZE_STYLE.search(element.get("style", ""))
    if style:
        return float(style.group(1))
    attr = element.get("font-size")
    return css_px(attr) if attr else None


@dataclass(frozen=True)
class FigureText:
    """The smallest text of one SVG, in its own units and as it renders in the column."""

    name: str
    font_size: float  # SVG user units, transforms applied
    text: str
    own_width_px: float  # the SVG's width attribute in CSS px
    viewbox_width: float
    displayed_width_px: float

    @property
    def rendered_px(self) -> float:
        return self.font_size * self.displayed_width_px / self.viewbox_width


def smallest_text(svg: Path, column_px: float = COLUMN_PX) -> FigureText:
    """The smallest text of ``svg`` and its rendered size in a column ``column_px`` wide.

    Font sizes are inherited down the tree (``style="font-size: ..."`` or ``font-size=``) and
    scaled by every ``transform`` on the way; texts with no visible characters are skipped.

    Raises:
        ValueError: if the SVG has no text or no readable width.
    """
    root = ET.parse(svg).getroot()
    view_box = root.get("viewBox")
    if view_box:
        viewbox_width = float(re.split(r"[\s,]+", view_box.strip())[2])
    else:
        viewbox_width = css_px(root.get("width", ""))
    own_width = css_px(root.get("width")) if root.get("width") else viewbox_width
    best: tuple[float, str] | None = None

    def walk(element: ET.Element, size: float, scale: float) -> None:
        nonlocal best
        size = _font_size(element) or size
        scale *= transform_scale(element.get("transform"))
        if element.tag in (f"{_SVG}text", f"{_SVG}tspan"):
            own = (element.text or "").strip()
            if own and (best is None or size * scale < best[0]):
                best = (size * scale, own)
        for child in element:
            walk(child, size, scale)

    walk(root, 16.0, 1.0)  # 16 px: the browser's default font size
    if best is None:
        raise ValueError(f"{svg.name} has no text")
    return FigureText(
        name=svg.name.removesuffix(".svg"),
        font_size=best[0],
        text=best[1],
        own_width_px=own_width,
        viewbox_width=viewbox_width,
        displayed_width_px=min(own_width, column_px),
    )


def figure_svgs() -> list[Path]:
    """The light variant of every figure (the dark one has the same geometry)."""
    return sorted(p for p in FIGURES.glob("*.svg") if not p.name.endswith(".dark.svg"))


def format_table(rows: list[FigureText]) -> str:
    head = f"{'figure':28} {'smallest px':>11} {'font':>6} {'own px':>7} {'shown px':>8}  text"
    lines = [head, "-" * len(head)]
    for r in sorted(rows, key=lambda r: r.rendered_px):
        flag = "" if r.rendered_px >= MIN_TEXT_PX else "  < 11"
        lines.append(
            f"{r.name:28} {r.rendered_px:11.1f} {r.font_size:6.2f} {r.own_width_px:7.0f} "
            f"{r.displayed_width_px:8.0f}  {r.text[:24]}{flag}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def test_measurement_follows_units_inheritance_transforms_and_the_column(tmp_path: Path) -> None:
    svg = tmp_path / "wide.svg"
    svg.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="720pt" height="200pt" '
        'viewBox="0 0 720 200"><g style="font-size: 10px"><text x="1" y="1">ten</text>'
        '<g transform="translate(5 5) scale(0.5)"><text x="1" y="1">five</text></g>'
        '<text x="1" y="1" style="font-size: 12px"> </text></g></svg>'
    )
    found = smallest_text(svg)
    assert (found.text, found.font_size) == ("five", 5.0)
    assert found.own_width_px == pytest.approx(960.0)  # 720 pt
    assert found.displayed_width_px == COLUMN_PX  # wider than the column: shrunk into it
    assert found.rendered_px == pytest.approx(5.0 * 688 / 720)

    narrow = tmp_path / "narrow.svg"
    narrow.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="300" viewBox="0 0 150 50">'
        '<text font-size="8" x="0" y="10">doubled</text></svg>'
    )
    found = smallest_text(narrow)
    assert found.displayed_width_px == 300.0  # narrower than the column: its own width
    assert found.rendered_px == pytest.approx(16.0)

    empty = tmp_path / "empty.svg"
    empty.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" viewBox="0 0 10 10"/>')
    with pytest.raises(ValueError, match="no text"):
        smallest_text(empty)


def test_every_figure_has_measurable_text() -> None:
    svgs = figure_svgs()
    assert len(svgs) >= 20, f"expected the course's figures in {FIGURES}, found {len(svgs)}"
    for svg in svgs:
        found = smallest_text(svg)
        assert found.font_size > 0 and found.displayed_width_px > 0, svg.name


def test_smallest_figure_text_is_at_least_11_css_px_at_page_width() -> None:
    rows = [smallest_text(svg) for svg in figure_svgs()]
    print("\n" + format_table(rows))
    small = [
        f"{r.name}: {r.rendered_px:.1f} px ({r.text!r})"
        for r in rows
        if r.rendered_px < MIN_TEXT_PX
    ]
    assert not small, (
        f"{len(small)} of {len(rows)} figures have text below 11 CSS px:\n" + "\n".join(small)
    )
