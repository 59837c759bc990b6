"""Maximum likelihood with a Gaussian head equals least squares (real Lightning runs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from block4.data import load_blood_pressure
from block4.figures.likelihood_fit import (
    fit_line_by_ml,
    line_in_data_units,
)
from block4.figures.registry import FigureContext
from block4.heads import least_squares
from block4.pipeline import Project, discover, load_figure

REGISTRY = discover(Project(Path(__file__).resolve().parents[1]))


@pytest.fixture
def ctx(tmp_path):
    return FigureContext(profile="smoke", accelerator="cpu", devices=1, out_dir=tmp_path)


def test_ml_line_with_fixed_sigma_is_the_least_squares_line(ctx):
    age, sbp = load_blood_pressure(torch.float64)
    a_ls, b_ls = least_squares(age, sbp)
    model, data = fit_line_by_ml(ctx, sigma=20.0, epochs=60)
    a_ml, b_ml = line_in_data_units(model.body, data.age_mean, data.age_std)
    assert a_ml == pytest.approx(a_ls, rel=1e-4)
    assert b_ml == pytest.approx(b_ls, rel=1e-4)
    # The head kept its sigma: nothing but the line was trained.
    assert float(model.head.sigma) == 20.0
    # ... and the line does not depend on the value of the fixed sigma.
    model5, _ = fit_line_by_ml(ctx, sigma=5.0, epochs=60)
    assert line_in_data_units(model5.body, data.age_mean, data.age_std) == pytest.approx(
        (a_ml, b_ml), rel=1e-4
    )


def test_fit_is_deterministic(ctx):
    m1, d = fit_line_by_ml(ctx, sigma=20.0, epochs=5)
    m2, _ = fit_line_by_ml(ctx, sigma=20.0, epochs=5)
    assert line_in_data_units(m1.body, d.age_mean, d.age_std) == line_in_data_units(
        m2.body, d.age_mean, d.age_std
    )


@pytest.mark.slow
def test_learned_sigma_is_the_root_mean_squared_residual(ctx):
    age, sbp = load_blood_pressure(torch.float64)
    a_ls, b_ls = least_squares(age, sbp)
    rms = math.sqrt(float(((sbp - a_ls - b_ls * age) ** 2).mean()))
    model, _ = fit_line_by_ml(ctx, sigma=None, epochs=600)  # as the full profile
    assert float(model.head.sigma.detach()) == pytest.approx(rms, rel=1e-3)


@pytest.mark.parametrize(
    "name", ["decision_under_cost", "binary_likelihood", "blood_pressure_likelihood"]
)
def test_chapter_figures_return_their_numbers(name, ctx):
    import block4.figures.likelihood  # noqa: F401 - registers the figures

    spec = REGISTRY[name]
    fig, numbers = load_figure(spec)(ctx, **spec.params)
    assert fig.axes
    json.dumps(numbers)  # plain numbers only
    if name == "blood_pressure_likelihood":
        assert numbers["f_131"] == pytest.approx(0.01209, abs=1e-5)
        assert numbers["mu_22"] == pytest.approx(112.0, abs=0.1)
        assert numbers["sigma_resid"] == pytest.approx(19.28, abs=0.01)
        assert (numbers["odd_age"], numbers["odd_sbp"]) == (9, 123)
    if name == "binary_likelihood":
        assert numbers["fit_nll"] < numbers["start_nll"]
        assert numbers["fit_nll_minus_ce"] < 1e-12
    if name == "decision_under_cost":
        assert numbers["best_cost"] < numbers["cost_at_mean"]
        assert numbers["best_buffer"] > numbers["travel_mean"]
        assert numbers["threshold"] == pytest.approx(0.001)


def test_mle_figure_smoke(ctx):
    import block4.figures.likelihood_fit  # noqa: F401

    spec = REGISTRY["mle_least_squares"]
    _, numbers = load_figure(spec)(ctx, **spec.params)
    assert numbers["max_line_diff"] < 0.05
    assert numbers["nll_ls"] < numbers["nll_start"]
    assert torch.isfinite(torch.tensor(numbers["sigma_learned"]))
