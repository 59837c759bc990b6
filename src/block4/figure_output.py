"""What a figure returns, checked and rendered: its numbers and its light and dark SVG.

A figure function returns ``(matplotlib Figure, numbers)``. `validate_numbers` checks
the numbers (a flat dict of JSON values the prose quotes as ``{{ figure.key }}``) and
`render` writes the Figure as two SVGs, the dark one derived from the same drawing.
"""

from __future__ import annotations

import importlib
import io
import math
import re
from typing import Any

from block4.pipeline_sources import STYLE_MODULE, PipelineError

__all__ = ["NUMBER_KEY", "render", "validate_numbers"]

#: Keys of the numbers dict: they appear in prose as ``{{ figure.key }}``.
NUMBER_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def validate_numbers(name: str, numbers: Any) -> dict[str, bool | int | float | str]:
    """Check that a figure's numbers are a flat dict of JSON values; return a plain copy."""
    if not isinstance(numbers, dict):
        raise PipelineError(
            f"figure {name!r} must return (Figure, dict of numbers); "
            f"the second item is a {type(numbers).__name__}"
        )
    clean: dict[str, bool | int | float | str] = {}
    for key, value in numbers.items():
        if not isinstance(key, str) or not NUMBER_KEY.match(key):
            raise PipelineError(
                f"figure {name!r}: number key {key!r} must be an identifier "
                "(letters, digits, underscores) so prose can quote it as {{ figure.key }}"
            )
        if isinstance(value, bool):
            clean[key] = value
        elif isinstance(value, int):
            clean[key] = int(value)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise PipelineError(
                    f"figure {name!r}: numbers[{key!r}] is {value}; JSON has no NaN/inf "
                    "(return a string such as 'diverged' instead)"
                )
            clean[key] = float(value)
        elif isinstance(value, str):
            clean[key] = value
        else:
            kind = f"{type(value).__module__}.{type(value).__qualname__}"
            raise PipelineError(
                f"figure {name!r}: numbers[{key!r}] is a {kind}; allowed are float, int, str "
                "and bool (convert tensors and numpy scalars with float(...) or int(...))"
            )
    return clean


def _freeze_layout(fig: Any) -> None:
    """Remove ``fig``'s layout engine: the artists keep their positions, and the next
    ``savefig`` draws once instead of twice (a layout pass, then the drawing)."""
    import matplotlib

    with matplotlib.rc_context(
        {"figure.autolayout": False, "figure.constrained_layout.use": False}
    ):
        fig.set_layout_engine(None)


def render(fig: Any) -> tuple[bytes, bytes]:
    """The light and the dark SVG of ``fig`` (deterministic bytes for the same figure).

    The dark SVG is the light one recoloured (`block4.style.dark_svg`: one drawing for
    both); a figure with colour-mapped or rasterized data (see `block4.style.recolourable`)
    is recoloured as artists and drawn again, in the light drawing's layout.
    """
    style = importlib.import_module(STYLE_MODULE)
    with style.context():
        recolour = style.recolourable(fig)
        if recolour:
            style.mark_backgrounds(fig)
        light = io.BytesIO()
        fig.savefig(light, format="svg", metadata={"Date": None}, facecolor="white")
        if recolour:
            return light.getvalue(), style.dark_svg(light.getvalue())
        # The light drawing has placed everything: keep that layout for the dark one (the
        # same text and sizes would give the same positions, at the cost of a second pass).
        _freeze_layout(fig)
        style.dark_variant(fig)
        dark = io.BytesIO()
        fig.savefig(dark, format="svg", metadata={"Date": None}, transparent=True)
    return light.getvalue(), dark.getvalue()
