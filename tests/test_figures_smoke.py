"""Every figure the pipeline discovers runs through ``run_figure`` in the smoke profile.

One parametrized test for all chapters: the same path as ``make_figures.py`` (the pipeline's
seeding, thread count, style, return-value checks and rendering of both SVGs), without writing
anything. A new ``@figure`` is covered the moment it exists.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from block4 import pipeline
from block4.figures.registry import FigureContext

ROOT = Path(__file__).resolve().parents[1]
PROJECT = pipeline.Project(ROOT)
FIGURES = pipeline.discover(PROJECT)


def test_every_chapter_has_figures() -> None:
    assert len(FIGURES) >= 20
    assert len({info.chapter for info in FIGURES.values()}) >= 6


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figure_runs_through_the_pipeline_in_the_smoke_profile(name: str, tmp_path: Path) -> None:
    info = FIGURES[name]
    ctx = FigureContext(
        profile="smoke", seed=0, accelerator="cpu", devices=1, out_dir=tmp_path, name=name
    )
    entry = pipeline.run_figure(PROJECT, info, ctx, write=False, cache=False)  # compute for real
    assert list(tmp_path.iterdir()) == []  # write=False: nothing written
    assert entry["cpu_threads"] == pipeline.FIGURE_THREADS == 1
    import torch

    assert entry["cpu"]["capability"] == torch.backends.cpu.get_cpu_capability()
    assert entry["cpu"]["model"]  # the kind of CPU shapes the trained numbers too
    assert entry["fingerprint"] == pipeline.fingerprint(PROJECT, info, "smoke", 0)
    assert (entry["chapter"], entry["function"], entry["params"]) == (
        info.chapter,
        info.function,
        info.params,
    )
    assert entry["bytes"]["light"] > 1000 and entry["bytes"]["dark"] > 1000
    light, dark = (entry["sha256"][entry["files"][k]] for k in ("light", "dark"))
    assert light != dark  # the dark variant is recoloured, not a copy
    assert entry["numbers"], "a figure gives the prose at least one number"
    assert not any(r["reused"] for r in entry["results"])
    assert pipeline.validate_numbers(name, entry["numbers"]) == entry["numbers"]
