"""Heteroscedastic regression recovers sigma(x) and gives calibrated intervals.

These train the chapter's quick-profile models for real (a few seconds on one core): the
numbers the chapter reports are the numbers tested here.
"""

from __future__ import annotations

import pytest
import torch

from block4.calibration import interval_coverage, pit, pit_histogram
from block4.figures.probabilistic import heteroscedastic_data, synthetic_models
from block4.figures.registry import FigureContext


@pytest.fixture(scope="module")
def quick():
    ctx = FigureContext(profile="quick", accelerator="cpu", devices=1)
    return ctx, heteroscedastic_data(ctx), synthetic_models(ctx)


def test_learned_sigma_is_within_15_percent_of_the_truth(quick):
    _, data, models = quick
    x = torch.linspace(-1.8, 1.8, 200)[:, None]  # the bulk: central 90 % of the inputs
    sigma = models["heteroscedastic"].predict_dist(x).stddev
    rel = (sigma / data.true_sigma(x[:, 0]) - 1).abs()
    assert float(rel.max()) < 0.15
    assert float(rel.median()) < 0.06


def test_90_percent_intervals_cover_85_to_95_percent_of_held_out_points(quick):
    _, data, models = quick
    x, y = data.tensors("test")
    dist = models["heteroscedastic"].predict_dist(x)
    assert 0.85 <= interval_coverage(dist, y, [0.9])[0.9] <= 0.95
    # ... and the PIT is close to uniform, unlike the homoscedastic model's.
    _, ks_het = pit_histogram(pit(dist, y))
    _, ks_hom = pit_histogram(pit(models["homoscedastic"].predict_dist(x), y))
    assert ks_het < 0.05 < ks_hom


def test_heteroscedastic_model_has_the_lower_held_out_nll(quick):
    _, data, models = quick
    x, y = data.tensors("test")
    nll = {k: float(-m.predict_dist(x).log_prob(y).mean()) for k, m in models.items()}
    assert nll["heteroscedastic"] < nll["homoscedastic"] - 0.1


def test_training_is_deterministic():
    from block4.figures import probabilistic

    ctx = FigureContext(profile="smoke", accelerator="cpu", devices=1)
    x = torch.linspace(-2, 2, 7)[:, None]
    runs = []
    for _ in range(2):
        probabilistic._CACHE.clear()
        runs.append(synthetic_models(ctx)["heteroscedastic"].predict_dist(x).stddev)
    assert torch.equal(runs[0], runs[1])
