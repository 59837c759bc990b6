"""Calibration helpers: PIT, coverage, quantiles, reliability curve and ECE."""

from __future__ import annotations

import pytest
import torch
from scipy import stats
from torch import distributions as D
from torchmetrics.functional.classification import multiclass_calibration_error

from block4.calibration import (
    DEFAULT_LEVELS,
    cdf,
    central_interval,
    expected_calibration_error,
    interval_coverage,
    pit,
    pit_histogram,
    quantile,
    reliability_curve,
)


def _gaussian_sample(n: int, sigma_scale: float = 1.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(n, generator=g, dtype=torch.float64)
    sigma = 0.5 + torch.rand(n, generator=g, dtype=torch.float64)
    y = mu + sigma * torch.randn(n, generator=g, dtype=torch.float64)
    return D.Normal(mu, sigma * sigma_scale), y


def test_pit_of_normal_is_its_cdf():
    dist = D.Normal(torch.zeros(3), torch.ones(3))
    u = pit(dist, torch.tensor([0.0, 1.0, -1.0]))
    assert torch.allclose(u, torch.tensor([0.5, 0.841344746, 0.158655254]), atol=1e-6)


def test_pit_accepts_column_targets_and_rejects_wrong_shapes():
    dist = D.Normal(torch.zeros(4), torch.ones(4))
    assert pit(dist, torch.zeros(4, 1)).shape == (4,)
    with pytest.raises(ValueError, match="do not match"):
        pit(dist, torch.zeros(3))
    with pytest.raises(TypeError, match="torch.Tensor"):
        pit(dist, [0.0, 0.0, 0.0, 0.0])


def test_calibrated_model_has_uniform_pit_and_nominal_coverage():
    dist, y = _gaussian_sample(20000)
    density, ks = pit_histogram(pit(dist, y), bins=10)
    assert density.mean().item() == pytest.approx(1.0)
    assert torch.all((density - 1).abs() < 0.08)
    assert ks < 0.015
    cov = interval_coverage(dist, y)
    assert list(cov) == list(DEFAULT_LEVELS)
    for level, c in cov.items():
        assert c == pytest.approx(level, abs=0.015)


def test_overconfident_model_undercovers_and_has_u_shaped_pit():
    dist, y = _gaussian_sample(20000, sigma_scale=0.5)
    density, ks = pit_histogram(pit(dist, y), bins=10)
    assert density[0] > 2 and density[-1] > 2 and density[5] < 0.8
    assert ks > 0.1
    assert interval_coverage(dist, y, [0.9])[0.9] < 0.7
    # ... and an under-confident one over-covers.
    wide, y = _gaussian_sample(20000, sigma_scale=2.0)
    assert interval_coverage(wide, y, [0.5])[0.5] > 0.8


def test_coverage_equals_counting_inside_the_interval():
    dist, y = _gaussian_sample(3000, sigma_scale=0.8, seed=1)
    for level in (0.5, 0.9):
        lo, hi = central_interval(dist, level)
        inside = ((y >= lo) & (y <= hi)).double().mean().item()
        assert interval_coverage(dist, y, [level])[level] == pytest.approx(inside, abs=1e-9)


def test_bad_levels_are_rejected():
    dist, y = _gaussian_sample(10)
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            interval_coverage(dist, y, [bad])


def test_student_t_cdf_and_quantile_match_scipy():
    dist = D.StudentT(
        torch.tensor([3.0, 10.0]), torch.tensor([1.0, -2.0]), torch.tensor([2.0, 0.5])
    )
    y = torch.tensor([2.5, -2.2])
    expected = stats.t.cdf([(2.5 - 1.0) / 2.0, (-2.2 + 2.0) / 0.5], [3.0, 10.0])
    assert torch.allclose(cdf(dist, y).double(), torch.tensor(expected), atol=1e-6)
    q = quantile(dist, 0.95)
    expected_q = stats.t.ppf(0.95, [3.0, 10.0]) * [2.0, 0.5] + [1.0, -2.0]
    assert torch.allclose(q.double(), torch.tensor(expected_q), atol=1e-4)


def test_mixture_quantile_by_bisection_inverts_the_cdf():
    mix = D.MixtureSameFamily(
        D.Categorical(logits=torch.zeros(2, 2)),
        D.Normal(torch.tensor([[-2.0, 2.0], [0.0, 5.0]]), torch.tensor([[0.5, 0.5], [1.0, 2.0]])),
    )
    for q in (0.05, 0.5, 0.9):
        x = quantile(mix, q)
        assert torch.allclose(mix.cdf(x), torch.full((2,), q), atol=1e-5)


def test_poisson_cdf_and_randomised_pit():
    rate = torch.tensor([0.5, 3.0, 12.0])
    k = torch.tensor([0.0, 2.0, 15.0])
    expected = stats.poisson.cdf(k.numpy(), rate.numpy())
    assert torch.allclose(
        cdf(D.Poisson(rate), k).double(), torch.tensor(expected).double(), atol=1e-6
    )
    # Counts drawn from the model itself: the randomised PIT is uniform.
    g = torch.Generator().manual_seed(123)
    rates = torch.rand(20000, generator=g) * 8 + 0.2
    counts = torch.poisson(rates, generator=g)
    u = pit(D.Poisson(rates), counts, generator=torch.Generator().manual_seed(1))
    _, ks = pit_histogram(u)
    assert ks < 0.015
    assert interval_coverage(D.Poisson(rates), counts, [0.9])[0.9] == pytest.approx(0.9, abs=0.015)


def test_pit_histogram_rejects_empty_input_and_bad_bins():
    with pytest.raises(ValueError, match="no PIT values"):
        pit_histogram(torch.tensor([]))
    with pytest.raises(ValueError, match="bins"):
        pit_histogram(torch.rand(5), bins=0)


def test_reliability_curve_and_ece_agree_with_torchmetrics():
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(2000, 5, generator=g)
    probs = torch.softmax(logits, dim=1)
    # Sample labels from a sharper distribution: the probs are under-confident.
    targets = torch.distributions.Categorical(logits=2 * logits).sample()
    curve = reliability_curve(probs, targets, n_bins=10)
    assert curve["edges"].shape == (11,) and curve["count"].sum() == 2000
    filled = curve["count"] > 0
    gaps = (curve["accuracy"] - curve["confidence"]).abs()[filled]
    ece_from_curve = float((gaps * curve["count"][filled]).sum() / 2000)
    ece = expected_calibration_error(probs, targets, n_bins=10)
    reference = float(multiclass_calibration_error(probs, targets, num_classes=5, n_bins=10))
    assert ece == pytest.approx(reference, abs=1e-7)
    assert ece_from_curve == pytest.approx(reference, abs=1e-5)
    assert ece > 0.05  # the mismatch is visible
    # Under-confident: in the upper bins, accuracy exceeds confidence.
    top = filled & (curve["confidence"] > 0.6)
    assert torch.all(curve["accuracy"][top] > curve["confidence"][top])


def test_reliability_curve_rejects_bad_targets():
    probs = torch.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match="out of range"):
        reliability_curve(probs, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(TypeError, match="integer"):
        expected_calibration_error(probs, torch.zeros(4))
    with pytest.raises(ValueError, match="shape"):
        reliability_curve(probs, torch.zeros(5, dtype=torch.long))
