"""The heteroscedastic head learns sigma(x) from the targets alone (real Lightning runs).

Quick-profile runs of `block4.probabilistic_runs.synthetic_runs` (two seeds, each a member of
one stack): the learned sigma(x), the held-out coverage and the NLL are checked per seed.
"""

from __future__ import annotations

import pytest
import torch

from block4.calibration import interval_coverage, pit, pit_histogram
from block4.figures.registry import FigureContext
from block4.probabilistic_runs import normal_dist, synthetic_runs


@pytest.fixture(scope="module")
def quick():
    ctx = FigureContext(profile="quick", accelerator="cpu", devices=1)
    return synthetic_runs(ctx, n_seeds=2)


def test_learned_sigma_is_within_15_percent_of_the_truth(quick):
    bulk = quick["grid"].abs() <= 1.8  # the central 90 % of the inputs
    sigma = quick["heteroscedastic"]["grid"]["sigma"][:, bulk]
    rel = (sigma / quick["true_sigma"][bulk] - 1).abs()
    assert float(rel.max()) < 0.15
    assert float(rel.median()) < 0.06


def test_90_percent_intervals_cover_85_to_95_percent_of_held_out_points(quick):
    for k in range(2):
        y = quick["y_test"][k]
        het = normal_dist({n: v[k] for n, v in quick["heteroscedastic"]["test"].items()})
        hom = normal_dist({n: v[k] for n, v in quick["homoscedastic"]["test"].items()})
        assert 0.85 <= interval_coverage(het, y, [0.9])[0.9] <= 0.95
        # ... and the PIT is close to uniform, unlike the one-sigma model's.
        _, ks_het = pit_histogram(pit(het, y))
        _, ks_hom = pit_histogram(pit(hom, y))
        assert ks_het < 0.05 < ks_hom


def test_heteroscedastic_model_has_the_lower_held_out_nll(quick):
    nll = {
        name: -normal_dist(quick[name]["test"]).log_prob(quick["y_test"]).mean(-1)
        for name in ("homoscedastic", "heteroscedastic")
    }
    assert bool((nll["heteroscedastic"] < nll["homoscedastic"] - 0.1).all())


def test_one_sigma_model_gets_the_ml_sigma_of_its_residuals(quick):
    # sigma is the root mean squared training residual: close to the noise averaged over x
    sigma = quick["homoscedastic"]["grid"]["sigma"][:, 0]
    assert torch.all((sigma > 0.4) & (sigma < 0.6))


def test_training_is_deterministic():
    ctx = FigureContext(profile="smoke", accelerator="cpu", devices=1)
    a, b = (synthetic_runs(ctx, n_seeds=2, grid=7) for _ in range(2))
    assert torch.equal(a["heteroscedastic"]["grid"]["sigma"], b["heteroscedastic"]["grid"]["sigma"])
