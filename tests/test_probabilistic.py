"""Heads in the chapter "Probabilistic heads": data, intervals, bad inputs (fast)."""

from __future__ import annotations

import pytest
import torch
from scipy import stats
from torch import distributions as D

from block4.data import count_rate, make_counts, make_inverse_sine
from block4.figures.probabilistic import _poisson_interval
from block4.heads import GaussianHead, MixtureGaussianHead, PoissonHead, StudentTHead
from block4.modules import Classifier, ProbabilisticRegressor


def test_synthetic_counts_follow_their_rate():
    x, y = make_counts(20000, seed=0)
    assert x.shape == (20000, 1) and y.shape == (20000,)
    assert torch.all(y >= 0) and torch.all(y == y.round())
    rate = count_rate(x[:, 0])
    # Poisson: mean = variance = rate; check the standardised residuals.
    z = (y - rate) / rate.sqrt()
    assert abs(float(z.mean())) < 0.03 and abs(float(z.var()) - 1) < 0.05
    x2, y2 = make_counts(20000, seed=0)
    assert torch.equal(x, x2) and torch.equal(y, y2)


def test_inverse_sine_is_multivalued_in_the_middle():
    x, y = make_inverse_sine(5000, seed=0)
    middle = (x[:, 0] - 0.5).abs() < 0.02
    values = y[middle]
    # Three branches: targets near 0.2, 0.5 and 0.8 all occur for the same x.
    for centre in (0.2, 0.5, 0.8):
        assert bool(((values - centre).abs() < 0.1).any())


def test_poisson_interval_matches_scipy():
    rate = torch.tensor([0.3, 1.0, 4.5, 20.0], dtype=torch.float64)
    lo, hi = _poisson_interval(rate, 0.9)
    assert lo.tolist() == stats.poisson.ppf(0.05, rate.numpy()).tolist()
    assert hi.tolist() == stats.poisson.ppf(0.95, rate.numpy()).tolist()


def test_every_head_returns_a_torch_distribution():
    features = torch.randn(5, 6)
    cases = [
        (GaussianHead(heteroscedastic=True), features[:, :2], D.Normal),
        (PoissonHead(), features[:, :1], D.Poisson),
        (StudentTHead(df=4.0), features[:, :2], D.StudentT),
        (MixtureGaussianHead(2), features[:, :6], D.MixtureSameFamily),
    ]
    for head, f, kind in cases:
        dist = head(f)
        assert isinstance(dist, kind) and dist.batch_shape == (5,)


# --8<-- [start:bad_inputs]
def test_bad_inputs_get_one_clear_error():
    regressor = ProbabilisticRegressor(in_features=3, head="poisson", depth=1, width=8)
    classifier = Classifier(in_features=64, n_classes=10, depth=1, width=8)
    # Features of the wrong width for a head: the head names the parameters it expects.
    with pytest.raises(ValueError, match=r"expects features of width 2"):
        GaussianHead(heteroscedastic=True)(torch.zeros(4, 3))
    # Counts must be 0, 1, 2, ...
    with pytest.raises(ValueError, match=r"Poisson targets must be counts.*negative"):
        regressor.training_step((torch.zeros(2, 3), torch.tensor([1.0, -2.0])), 0)
    # Class indices must lie in [0, n_classes).
    with pytest.raises(ValueError, match=r"class index out of range.*\[0, 9\]"):
        classifier.training_step((torch.zeros(2, 64), torch.tensor([3, 10])), 0)


# --8<-- [end:bad_inputs]
