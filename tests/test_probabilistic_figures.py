"""Every figure of the chapter "Probabilistic heads" runs in the smoke profile."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import block4.figures.probabilistic  # noqa: F401 - registers the figures
from block4.figures.registry import FigureContext
from block4.pipeline import Project, discover, load_figure

REGISTRY = discover(Project(Path(__file__).resolve().parents[1]))

NAMES = [
    "heteroscedastic_regression",
    "diabetes_nll",
    "poisson_counts",
    "mixture_density",
    "digits_calibration",
    "regression_calibration",
]


@pytest.mark.parametrize("name", NAMES)
def test_figure_runs_and_returns_plain_numbers(name, tmp_path):
    spec = REGISTRY[name]
    assert spec.chapter == "probabilistic-heads"
    ctx = FigureContext(profile="smoke", accelerator="cpu", devices=1, out_dir=tmp_path)
    fig, numbers = load_figure(spec)(ctx, **spec.params)
    assert fig.axes
    json.dumps(numbers)
    for key, value in numbers.items():
        if isinstance(value, float):
            assert math.isfinite(value), key
    if name == "regression_calibration":
        for model in ("synthetic_heteroscedastic", "counts_poisson", "inverse_sine_mixture"):
            covs = [numbers[f"{model}_cov{level}"] for level in (50, 80, 90, 95)]
            assert covs == sorted(covs) and covs[0] >= 0 and covs[-1] <= 100
    if name == "digits_calibration":
        assert 0 <= numbers["ece"] <= 1 and 0 <= numbers["accuracy"] <= 1
