"""Every figure of the chapters "Probabilistic heads" and "Maximum likelihood" (the trained
ones) runs in the smoke profile and reports mean and spread over its seeds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

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
    "deep_ensemble",
    "co2_forecast",
]
#: A key with mean and spread (``_mean`` and ``_sd``) that each figure must report.
SPREAD_KEYS = {
    "heteroscedastic_regression": "test_nll_heteroscedastic",
    "diabetes_nll": "nll_diff",
    "poisson_counts": "coverage_poisson_percent",
    "mixture_density": "test_nll_mixture",
    "digits_calibration": "ece",
    "deep_ensemble": "gap_ensemble_cov",
    "co2_forecast": "ensemble_coverage",
}


@pytest.mark.parametrize("name", NAMES)
def test_figure_runs_and_returns_plain_numbers(name, tmp_path):
    spec = REGISTRY[name]
    chapter = "maximum-likelihood" if name == "co2_forecast" else "probabilistic-heads"
    assert spec.chapter == chapter
    ctx = FigureContext(profile="smoke", accelerator="cpu", devices=1, out_dir=tmp_path)
    fig, numbers = load_figure(spec)(ctx, **spec.params)
    assert fig.axes
    assert fig.get_size_inches()[0] <= 6.9  # readable at page width
    json.dumps(numbers)
    for key, value in numbers.items():
        if isinstance(value, float):
            assert math.isfinite(value), key
    if name in SPREAD_KEYS:
        key = SPREAD_KEYS[name]
        assert numbers[f"{key}_sd"] >= 0 and f"{key}_mean" in numbers
    if "diverged_members" in numbers:
        assert numbers["diverged_members"] == 0
    if name == "regression_calibration":
        for model in ("synthetic_heteroscedastic", "counts_poisson", "inverse_sine_mixture"):
            covs = [numbers[f"{model}_cov{level}"] for level in (50, 80, 90, 95)]
            assert covs == sorted(covs) and covs[0] >= 0 and covs[-1] <= 100
    if name == "digits_calibration":
        assert 0 <= numbers["ece_mean"] <= 1 and 0 <= numbers["accuracy_mean"] <= 1
        # the last epoch of the history is the final model on the same test digits
        assert numbers["error_mean"] == pytest.approx(1 - numbers["accuracy_mean"], abs=1e-6)
        for key in ("ece_rose", "overconfident"):
            assert 0 <= numbers[key] <= numbers["n_seeds"]
    if name == "co2_forecast":
        for model in ("linear", "quadratic", "mlp", "ensemble"):
            assert 0 <= numbers[f"{model}_coverage_mean"] <= 100
        # one sigma for all times: the trend models' bands are as wide in 2001 as in 1985
        assert numbers["linear_band_width_2001"] == pytest.approx(numbers["linear_band_width_1985"])


def test_count_numbers_split_the_coverage_at_the_median_rate():
    # A Poisson model that knows the true rate covers about 90 % of both halves; a Gaussian
    # of one sigma (the spread at the average rate) is too wide where the rate is low and too
    # narrow where it is high.
    import torch

    from block4.data.synthetic import count_rate
    from block4.figures.probabilistic import _count_numbers

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 4000, generator=gen) * 5
    rate = count_rate(x)
    y = torch.poisson(rate, generator=gen)
    sigma = rate.mean().sqrt() * torch.ones_like(rate)
    grid = torch.linspace(0, 5, 50)
    data = {
        "true_rate": count_rate(grid),
        "x_test": x,
        "y_test": y,
        "poisson": {"test": {"rate": rate}, "grid": {"rate": count_rate(grid).expand(3, -1)}},
        "gaussian": {
            "test": {"mean": rate, "sigma": sigma},
            "grid": {"mean": count_rate(grid).expand(3, -1), "sigma": sigma[:, :50]},
        },
    }
    numbers = _count_numbers(data, 0.9)
    for half in ("low", "high"):
        assert 86 < numbers[f"coverage_poisson_{half}_rate_percent_mean"] < 94
    assert numbers["coverage_gaussian_low_rate_percent_min"] > 95
    assert numbers["coverage_gaussian_high_rate_percent_max"] < 88
    assert numbers["gaussian_wide_low_narrow_high"] == 3
    low, high, both = (
        numbers[f"coverage_gaussian_{h}percent_mean"] for h in ("low_rate_", "high_rate_", "")
    )
    assert min(low, high) <= both <= max(low, high)
    assert numbers["max_rel_err_poisson_percent_max"] == pytest.approx(0, abs=1e-4)
