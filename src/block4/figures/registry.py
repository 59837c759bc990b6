"""Marking figure functions, profiles and the context a figure runs in.

A figure function takes a `FigureContext` (plus the keyword parameters given in the
decorator) and returns ``(matplotlib.figure.Figure, numbers)``, where ``numbers`` is a flat
``dict`` of JSON-serialisable values (floats, ints, strings, booleans) that the prose of the
site may quote as ``{{ figure_name.key }}``.

The arguments of `figure` must be literals (strings, numbers, dicts/lists of literals):
the pipeline reads them from the source with `ast`, without importing the module
(`block4.pipeline_sources.discover` is the one list of the figures). The decorator only
checks its arguments and marks the function (`figure_mark`); it keeps no registry.

Example:

    from block4.figures.registry import FigureContext, figure

    @figure("sigmoid_gradient", chapter="activations", params={"points": 201})
    def sigmoid_gradient(ctx: FigureContext, points: int):
        n_epochs = ctx.pick(smoke=1, quick=10, full=40)
        ...
        return fig, {"grad_at_0": 0.25}
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

#: The profiles, from fastest to best: ``smoke`` for the tests, ``quick`` a preview of every
#: figure, ``full`` what the site publishes (``make_figures.py --help`` describes each). Only
#: the names are here: a figure depends on them, not on how the help text describes them.
PROFILES: tuple[str, ...] = ("smoke", "quick", "full")

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


@dataclass(frozen=True)
class FigureMark:
    """What ``@figure(...)`` attached to a function (see `figure_mark`)."""

    name: str
    chapter: str
    params: dict[str, Any] = field(default_factory=dict)
    group: str | None = None


# The attribute under which @figure stores its FigureMark on the function.
_MARK_ATTRIBUTE = "__block4_figure__"


def figure_mark(func: Callable[..., Any]) -> FigureMark | None:
    """The `FigureMark` of a function decorated with `figure` (else None)."""
    mark = getattr(func, _MARK_ATTRIBUTE, None)
    return mark if isinstance(mark, FigureMark) else None


@dataclass
class FigureContext:
    """Everything a figure function may depend on besides its parameters.

    Attributes:
        profile: one of `PROFILES`.
        seed: the base seed; figures derive every random choice from it.
        accelerator: passed to Lightning's ``Trainer`` (``"auto"``, ``"cpu"``, ``"gpu"``).
        devices: passed to the ``Trainer`` (``"auto"`` or a number).
        num_nodes: passed to the ``Trainer``.
        strategy: passed to the ``Trainer`` (``"auto"``, ``"ddp"``, ...).
        out_dir: where the figure files go.
        progress: whether Lightning may show its per-run progress bar.
        name: the name of the figure being made (empty outside the pipeline).
        results_cache: set by the pipeline while it makes a figure: where
            `compute` keeps results (None: `compute` just calls the function).
    """

    profile: str = "quick"
    seed: int = 0
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    out_dir: Path = Path("docs/figures")
    progress: bool = False
    name: str = ""
    results_cache: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; allowed: {', '.join(PROFILES)}")

    def pick(self, *, smoke: Any, quick: Any, full: Any) -> Any:
        """Return the value for the current profile (e.g. epochs or data size)."""
        return {"smoke": smoke, "quick": quick, "full": full}[self.profile]

    def compute(self, fn: Callable[..., T], /, **kwargs: Any) -> T:
        """``fn(self, **kwargs)``: a figure's expensive part, cached by the pipeline.

        Put training runs and sweeps in a top-level function of the figure's module (or
        of a shared ``block4`` module) that returns data: nested dict/list/tuple of numbers,
        strings, NumPy arrays and torch tensors. When the pipeline makes the figure, the
        result is kept on disk keyed by the code of ``fn`` and everything it uses, ``kwargs``
        (plain values), the profile, the seed and the accelerator, so a change to the
        plotting code re-plots without computing again (see `block4.results_cache`).
        Outside the pipeline (tests, notebooks) it simply calls ``fn``.
        """
        if self.results_cache is None:
            return fn(self, **kwargs)
        return self.results_cache.compute(self, fn, kwargs)

    def trainer_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``pytorch_lightning.Trainer`` that honour this context.

        Figures train small models: no logger, no checkpoints, no model summary, and
        deterministic algorithms (``"warn"``: on a GPU an operation without a deterministic
        kernel warns instead of failing). ``overrides`` win over the defaults (e.g.
        ``max_epochs=5``).
        """
        kwargs: dict[str, Any] = {
            "accelerator": self.accelerator,
            "devices": self.devices,
            "num_nodes": self.num_nodes,
            "strategy": self.strategy,
            "logger": False,
            "enable_checkpointing": False,
            "enable_model_summary": False,
            "enable_progress_bar": self.progress,
            "deterministic": "warn",
        }
        kwargs.update(overrides)
        return kwargs


def figure_mark_of(name: Any, chapter: Any, params: Any = None, group: Any = None) -> FigureMark:
    """Check the arguments of `figure` and return the mark they make.

    The one set of rules for a figure's declaration: the decorator applies it when a module
    is imported, and the pipeline applies it to the literals it reads from the source.

    Raises:
        ValueError: naming the bad argument and what is allowed.
    """
    if not (isinstance(name, str) and NAME_PATTERN.match(name)):
        raise ValueError(f"figure name {name!r} must be snake_case: [a-z][a-z0-9_]*")
    if not (isinstance(chapter, str) and chapter):
        raise ValueError(f"chapter of figure {name!r} must be a non-empty string, got {chapter!r}")
    if params is not None and not (
        isinstance(params, dict) and all(isinstance(k, str) and k.isidentifier() for k in params)
    ):
        raise ValueError(
            f"params of figure {name!r} must be a dict of keyword arguments, got {params!r}"
        )
    if group is not None and not (isinstance(group, str) and group):
        raise ValueError(f"group of figure {name!r} must be a non-empty string, got {group!r}")
    return FigureMark(name=name, chapter=chapter, params=dict(params or {}), group=group)


def figure(
    name: str,
    *,
    chapter: str,
    params: dict[str, Any] | None = None,
    group: str | None = None,
) -> Callable[[F], F]:
    """Mark ``func`` as the figure ``name`` of ``chapter``.

    Args:
        name: unique snake_case name; files are written as ``<name>.svg`` (and a dark variant).
        chapter: the chapter page the figure belongs to (e.g. ``"activations"``).
        params: literal keyword arguments passed to the function; they are part of the
            figure's fingerprint, so changing one makes the figure stale.
        group: figures of one module that reuse each other's work (training runs that
            `compute` keeps in the results cache) name the same group: ``make_figures.py --jobs N``
            then makes them one after another in the same process, in the order they are
            defined. It changes where a figure runs, never what it computes, so it is not
            part of the fingerprint.
    """
    mark = figure_mark_of(name, chapter, params, group)

    def decorate(func: F) -> F:
        setattr(func, _MARK_ATTRIBUTE, mark)
        return func

    return decorate
