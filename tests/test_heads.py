"""Tests of the probabilistic heads (block4.heads): real torch.distributions, real gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

from block4.heads import (
    CategoricalHead,
    GaussianHead,
    MixtureGaussianHead,
    PoissonHead,
    StudentTHead,
    check_targets,
    nll,
)


def test_blood_pressure_likelihood_bar():
    # f(y=131; mu=111, sigma=20) from the maximum-likelihood chapter
    dist = GaussianHead(sigma=20.0)(torch.tensor([[111.0]]))
    assert isinstance(dist, D.Normal)
    expected = math.exp(-(20.0**2) / (2 * 400)) / math.sqrt(2 * math.pi * 400)
    assert float(torch.exp(-nll(dist, torch.tensor([131.0])))) == pytest.approx(expected, rel=1e-6)
    assert abs(expected - 0.01209) < 1e-5


def test_categorical_matches_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(6, 4, requires_grad=True)
    y = torch.tensor([0, 3, 1, 2, 2, 0])
    head = CategoricalHead(4)
    loss = nll(head(logits), y)
    ref = torch.nn.functional.cross_entropy(logits, y)
    torch.testing.assert_close(loss, ref)
    (g,) = torch.autograd.grad(loss, logits)
    (g_ref,) = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, y), logits)
    torch.testing.assert_close(g, g_ref)


def test_gaussian_heteroscedastic_uses_softplus_with_floor():
    head = GaussianHead(heteroscedastic=True, min_sigma=1e-3)
    feats = torch.tensor([[1.0, 0.0], [2.0, -50.0], [0.0, 3.0]])
    dist = head(feats)
    torch.testing.assert_close(dist.mean, feats[:, 0])
    expected = torch.nn.functional.softplus(feats[:, 1]) + 1e-3
    torch.testing.assert_close(dist.stddev, expected)
    assert float(dist.stddev.min()) >= 1e-3
    y = torch.tensor([0.5, 2.0, -1.0])
    ref = 0.5 * torch.log(2 * math.pi * expected**2) + (y - feats[:, 0]) ** 2 / (2 * expected**2)
    torch.testing.assert_close(nll(dist, y), ref.mean())


def test_gaussian_homoscedastic_learns_shared_sigma():
    head = GaussianHead(init_sigma=2.0)
    assert head.n_params == 1 and head.in_features == 1
    assert float(head.sigma.detach()) == pytest.approx(2.0, rel=1e-5)
    dist = head(torch.zeros(3, 1))
    torch.testing.assert_close(dist.stddev, torch.full((3,), 2.0))
    # gradient of the NLL flows to the shared sigma parameter
    nll(dist, torch.tensor([0.0, 4.0, -4.0])).backward()
    assert head.raw_sigma.grad is not None and float(head.raw_sigma.grad) != 0.0
    fixed = GaussianHead(sigma=3.0)
    assert list(fixed.parameters()) == []
    torch.testing.assert_close(fixed(torch.zeros(2, 1)).stddev, torch.full((2,), 3.0))


def test_poisson_head_log_link():
    head = PoissonHead()
    f = torch.tensor([[0.0], [math.log(3.0)]])
    dist = head(f)
    torch.testing.assert_close(dist.rate, torch.tensor([1.0, 3.0]))
    y = torch.tensor([2, 0])  # integer counts are accepted
    ref = -(
        torch.tensor([2.0, 0.0]) * torch.log(dist.rate)
        - dist.rate
        - torch.lgamma(torch.tensor([3.0, 1.0]))
    )
    torch.testing.assert_close(nll(dist, y), ref.mean())


def test_student_t_fixed_and_learned_df():
    head = StudentTHead(df=4.0)
    dist = head(torch.tensor([[0.0, 1.0]]))
    assert isinstance(dist, D.StudentT) and float(dist.df) == 4.0
    learned = StudentTHead(init_df=5.0)
    assert float(learned.df.detach()) == pytest.approx(5.0, rel=1e-5)
    loss = nll(learned(torch.zeros(4, 2)), torch.tensor([0.0, 10.0, -10.0, 1.0]))
    loss.backward()
    assert learned.raw_df.grad is not None


def test_mixture_head_reduces_to_gaussian_with_one_component_and_is_bimodal():
    f = torch.tensor([[0.0, 1.5, 0.3]])
    mix = MixtureGaussianHead(1)(f)
    gauss = GaussianHead(heteroscedastic=True)(f[:, 1:])
    y = torch.tensor([0.7])
    torch.testing.assert_close(mix.log_prob(y), gauss.log_prob(y))
    two = MixtureGaussianHead(2)(torch.tensor([[0.0, 0.0, -3.0, 3.0, -2.0, -2.0]]))
    assert isinstance(two, D.MixtureSameFamily)
    lp = two.log_prob(torch.tensor([[-3.0], [0.0], [3.0]])).squeeze()
    assert lp[0] > lp[1] and lp[2] > lp[1]


def test_own_projection_layer():
    head = GaussianHead(heteroscedastic=True, in_features=8)
    assert head.in_features == 8 and head.n_params == 2
    dist = head(torch.randn(5, 8))
    assert dist.batch_shape == (5,)
    assert sum(p.numel() for p in head.parameters()) == 8 * 2 + 2


def test_targets_of_shape_n_by_1_are_squeezed_not_broadcast():
    dist = GaussianHead(sigma=1.0)(torch.zeros(4, 1))
    y = torch.arange(4.0)
    torch.testing.assert_close(nll(dist, y.unsqueeze(1)), nll(dist, y))
    with pytest.raises(ValueError, match=r"targets of shape \(4, 2\) do not match"):
        nll(dist, torch.zeros(4, 2))


# --- bad inputs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head,width,pattern",
    [
        (
            CategoricalHead(10),
            9,
            r"CategoricalHead\(10\) expects features of width 10 \(the 10 distribution parameters \(10 logits\)\)",
        ),
        (
            GaussianHead(heteroscedastic=True),
            1,
            r"GaussianHead\(heteroscedastic=True\) expects features of width 2 .*mean, raw sigma",
        ),
        (GaussianHead(), 2, r"expects features of width 1"),
        (
            PoissonHead(),
            3,
            r"PoissonHead expects features of width 1 .*log rate.*got shape \(5, 3\)",
        ),
        (StudentTHead(), 1, r"StudentTHead expects features of width 2"),
        (MixtureGaussianHead(3), 6, r"MixtureGaussianHead\(3\) expects features of width 9"),
        (
            CategoricalHead(3, in_features=16),
            15,
            r"width 16 \(the input of its linear projection\)",
        ),
    ],
)
def test_wrong_feature_width(head, width, pattern):
    with pytest.raises(ValueError, match=pattern):
        head(torch.zeros(5, width))


def test_poisson_negative_targets():
    dist = PoissonHead()(torch.zeros(3, 1))
    with pytest.raises(
        ValueError,
        match=r"Poisson targets must be counts 0, 1, 2, ...; got negative values \(1 of 3 values, e.g. \[-1.0\]",
    ):
        nll(dist, torch.tensor([0.0, -1.0, 2.0]))


def test_poisson_non_integer_targets():
    dist = PoissonHead()(torch.zeros(3, 1))
    with pytest.raises(ValueError, match=r"non-integer values \(1 of 3 values, e.g. \[2.5\]"):
        nll(dist, torch.tensor([0.0, 1.0, 2.5]))


@pytest.mark.parametrize(
    "head,feats",
    [
        (GaussianHead(heteroscedastic=True), torch.zeros(3, 2)),
        (GaussianHead(), torch.zeros(3, 1)),
        (StudentTHead(), torch.zeros(3, 2)),
        (MixtureGaussianHead(2), torch.zeros(3, 6)),
        (PoissonHead(), torch.zeros(3, 1)),
    ],
)
def test_nan_targets(head, feats):
    with pytest.raises(
        ValueError, match=r"targets contain NaN or infinite values \(1 of 3 values.*must be finite"
    ):
        nll(head(feats), torch.tensor([0.0, float("nan"), 1.0]))


def test_class_index_out_of_range_and_float_classes():
    dist = CategoricalHead(3)(torch.zeros(2, 3))
    with pytest.raises(
        ValueError,
        match=r"class index out of range: targets must lie in \[0, 2\] for 3 classes; got 1 of 2 values, e\.g\. \[3\]",
    ):
        nll(dist, torch.tensor([0, 3]))
    with pytest.raises(TypeError, match="class targets must be an integer tensor"):
        nll(dist, torch.tensor([0.0, 1.0]))


def test_bad_head_arguments():
    with pytest.raises(ValueError, match="n_classes must be an integer >= 2"):
        CategoricalHead(1)
    with pytest.raises(ValueError, match="a fixed sigma contradicts heteroscedastic=True"):
        GaussianHead(heteroscedastic=True, sigma=1.0)
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        GaussianHead(sigma=-1.0)
    with pytest.raises(ValueError, match="n_components must be an integer >= 1"):
        MixtureGaussianHead(0)
    with pytest.raises(ValueError, match="df must be a finite number > 0"):
        StudentTHead(df=0.0)
    with pytest.raises(TypeError, match="targets must be a torch.Tensor"):
        check_targets(GaussianHead()(torch.zeros(1, 1)), [1.0])
