"""The worked examples of the chapter "Maximum likelihood" (no training; fast)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from block4.data import load_blood_pressure
from block4.figures.likelihood import (
    TRAVEL_REGIME_MINUTES,
    TRAVEL_REGIME_PROBS,
    expected_cost,
    fit_logistic,
    five_point_example,
    gaussian_likelihood,
    likelihood_table,
    travel_time_distribution,
    two_class_logits,
)
from block4.heads import least_squares


def test_gaussian_likelihood_of_the_22_year_old():
    f = gaussian_likelihood(131.0, 111.0, 20.0)
    by_hand = math.exp(-((131 - 111) ** 2) / (2 * 20**2)) / math.sqrt(2 * math.pi * 20**2)
    assert f == pytest.approx(by_hand, rel=1e-6)
    assert f == pytest.approx(0.01209, abs=1e-5)


def test_nll_of_five_points_is_cross_entropy():
    x, y = five_point_example()
    assert y.tolist() == [0, 0, 0, 1, 1]
    logits = two_class_logits(
        x, torch.tensor(1.3, dtype=torch.float64), torch.tensor(-0.2, dtype=torch.float64)
    )
    table = likelihood_table(logits, y)
    p1 = torch.sigmoid(1.3 * x - 0.2)
    p_obs = torch.where(y == 1, p1, 1 - p1)
    assert [table[f"p_obs_{i}"] for i in range(1, 6)] == pytest.approx(p_obs.tolist(), rel=1e-12)
    assert table["likelihood"] == pytest.approx(float(torch.prod(p_obs)), rel=1e-12)
    assert table["log_likelihood"] == pytest.approx(math.log(table["likelihood"]), rel=1e-12)
    assert table["nll"] == pytest.approx(float(F.cross_entropy(logits, y)), abs=1e-14)
    assert table["nll_minus_ce"] < 1e-12
    # The binary form of the same number.
    bce = F.binary_cross_entropy_with_logits(1.3 * x - 0.2, y.double())
    assert table["nll"] == pytest.approx(float(bce), abs=1e-12)


def test_fitted_logistic_model_is_a_stationary_point_of_the_nll():
    x, y = five_point_example()
    w_hat, b_hat = fit_logistic(x, y)
    w = torch.tensor(w_hat, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(b_hat, dtype=torch.float64, requires_grad=True)
    loss = F.cross_entropy(two_class_logits(x, w, b), y)
    loss.backward()
    assert abs(float(w.grad)) < 1e-6 and abs(float(b.grad)) < 1e-6
    # Any other slope has a smaller likelihood.
    for dw in (-0.3, 0.3):
        other = F.cross_entropy(two_class_logits(x, w.detach() + dw, b.detach()), y)
        assert float(other) > float(loss.detach())


def test_expected_cost_matches_monte_carlo():
    duration = travel_time_distribution()
    grid = torch.linspace(0.01, 150.0, 15000, dtype=torch.float64)
    buffers = torch.tensor([35.0, 55.0], dtype=torch.float64)
    exact = expected_cost(buffers, duration, cost_per_minute_early=1.0, cost_late=120.0, grid=grid)
    torch.manual_seed(0)
    t = duration.sample((400_000,))
    mc = torch.stack(
        [((b - t).clamp(min=0) + 120.0 * (t > b).double()).mean() for b in buffers.tolist()]
    )
    assert torch.allclose(exact, mc, rtol=0.01)
    # Far ahead of every trip, the cost is the waiting time: buffer - mean duration.
    far = expected_cost(
        torch.tensor([140.0], dtype=torch.float64),
        duration,
        cost_per_minute_early=1.0,
        cost_late=120.0,
        grid=grid,
    )
    assert float(far[0]) == pytest.approx(140.0 - float(duration.mean), abs=0.01)


def test_least_squares_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 10, 50)
    y = 3.0 + 0.5 * x + rng.normal(0, 1, 50)
    slope, intercept = np.polyfit(x, y, 1)
    a, b = least_squares(torch.tensor(x), torch.tensor(y))
    assert (a, b) == pytest.approx((intercept, slope), rel=1e-10)


def test_least_squares_is_the_same_bit_for_bit_on_every_call():
    # LAPACK's gelsy (torch.linalg.lstsq's CPU default) gave three different last bits in
    # 200 calls on the blood-pressure data; the closed form from exact sums gives one answer.
    age, sbp = load_blood_pressure(torch.float64)
    answers = {least_squares(age.clone(), sbp.clone()) for _ in range(50)}
    assert len(answers) == 1
    (a, b) = answers.pop()
    design = torch.stack([torch.ones_like(age), age], dim=1)
    normal = torch.linalg.solve(design.T @ design, design.T @ sbp)
    assert (a, b) == pytest.approx(normal.tolist(), rel=1e-12)
    assert least_squares(age.float(), sbp.float()) == pytest.approx((a, b), rel=1e-6)


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (torch.ones(3, 2), torch.ones(3, 2), "1-D tensors of one length"),
        (torch.arange(3.0), torch.arange(4.0), "shapes (3,) and (4,)"),
        (torch.full((5,), 2.0), torch.arange(5.0), "at least two distinct values"),
    ],
)
def test_least_squares_rejects_inputs_without_a_line(x, y, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        least_squares(x, y)


def test_travel_regimes_are_the_ones_the_chapter_quotes():
    # The chapter renders "about 30 minutes, 20 % of days about 50" from these constants.
    duration = travel_time_distribution()
    probs = duration.mixture_distribution.probs
    assert probs.tolist() == pytest.approx(list(TRAVEL_REGIME_PROBS))
    medians = duration.component_distribution.icdf(torch.tensor(0.5, dtype=torch.float64))
    assert medians.tolist() == pytest.approx(list(TRAVEL_REGIME_MINUTES), rel=1e-9)
