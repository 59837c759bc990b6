"""Tests of the LightningModules (block4.modules): real Trainer runs on tiny data."""

from __future__ import annotations

import pytest
import torch
from _helpers import trainer
from torch import nn

from block4.data import (
    BloodPressureDataModule,
    DigitsDataModule,
    HeteroscedasticDataModule,
    TensorBatches,
)
from block4.heads import GaussianHead
from block4.models import MLP
from block4.modules import Classifier, ProbabilisticRegressor


@pytest.fixture(scope="module")
def trained_classifier():
    model = Classifier(in_features=64, n_classes=10, depth=2, width=64, norm="batch", lr=3e-3)
    tr = trainer(max_epochs=4)
    tr.fit(model, DigitsDataModule())
    return model, tr


def test_classifier_learns_digits(trained_classifier):
    model, tr = trained_classifier
    m = tr.callback_metrics
    assert float(m["val_acc"]) > 0.9
    assert float(m["val_loss"]) < 0.5 and float(m["train_loss"]) < 0.7
    assert isinstance(model.body, MLP) and model.body.depth == 2
    assert model.hparams["width"] == 64 and model.hparams["norm"] == "batch"


def test_checkpoint_round_trip_identical_predictions(trained_classifier, tmp_path):
    model, tr = trained_classifier
    path = tmp_path / "clf.ckpt"
    tr.save_checkpoint(path)
    loaded = Classifier.load_from_checkpoint(path, weights_only=True)
    x = DigitsDataModule().tensors("test")[0]
    torch.testing.assert_close(
        loaded.predict_dist(x).logits, model.predict_dist(x).logits, rtol=0, atol=0
    )
    assert loaded.hparams == model.hparams


def test_checkpoint_with_own_body(tmp_path):
    body = nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 8))
    model = Classifier(body, n_classes=10, body_out_features=8)
    assert model.head.in_features == 8  # the head owns the 8 -> 10 projection
    tr = trainer(limit_train_batches=3, limit_val_batches=1)
    tr.fit(model, DigitsDataModule())
    tr.save_checkpoint(tmp_path / "own.ckpt")
    fresh = nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 8))
    loaded = Classifier.load_from_checkpoint(tmp_path / "own.ckpt", body=fresh, weights_only=True)
    x = torch.randn(5, 64)
    torch.testing.assert_close(
        loaded.predict_dist(x).probs, model.predict_dist(x).probs, rtol=0, atol=0
    )


def test_predict_dist_uses_eval_mode_and_restores_it():
    model = Classifier(in_features=64, n_classes=10, depth=1, width=8, norm="batch")
    model.train()
    x = torch.randn(4, 64)
    with torch.no_grad():
        model.eval()
        expected = model(x).logits
        model.train()
    dist = model.predict_dist(x)
    assert model.training
    torch.testing.assert_close(dist.logits, expected)
    assert not dist.logits.requires_grad


def test_seed_fixes_initial_weights_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = Classifier(in_features=64, depth=2, width=16, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    b = Classifier(in_features=64, depth=2, width=16, seed=7)
    c = Classifier(in_features=64, depth=2, width=16, seed=8)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.body.block0.linear.weight, c.body.block0.linear.weight)


def test_heteroscedastic_regressor_recovers_sigma_of_x():
    dm = HeteroscedasticDataModule(n_train=2000, n_val=500, n_test=0, batch_size=100, seed=0)
    model = ProbabilisticRegressor(
        in_features=1, head="gaussian", heteroscedastic=True, depth=2, width=32, lr=1e-2
    )
    tr = trainer(max_epochs=25)
    tr.fit(model, dm)
    x = torch.linspace(-1.8, 1.8, 50).unsqueeze(1)
    dist = model.predict_dist(x)
    true_sigma = dm.true_sigma(x).squeeze(1)
    assert float((dist.stddev - true_sigma).abs().mean()) < 0.1
    assert float((dist.mean - dm.true_mean(x).squeeze(1)).abs().mean()) < 0.15
    assert float(tr.callback_metrics["val_rmse"]) < 0.6


@pytest.mark.parametrize(
    "head,options,dist_name",
    [
        ("poisson", {}, "Poisson"),
        ("student_t", {"df": 4.0}, "StudentT"),
        ("mixture", {"n_components": 3}, "MixtureSameFamily"),
        ("gaussian", {"sigma": 1.0}, "Normal"),
    ],
)
def test_regressor_heads_train(head, options, dist_name):
    dm = HeteroscedasticDataModule(n_train=200, n_val=50, n_test=0, seed=0)
    if head == "poisson":  # counts: round a positive function of x
        x, y = dm.tensors("train")
        dm.splits["train"] = (x, torch.poisson(torch.exp(x.squeeze(1))))
        xv, _ = dm.tensors("val")
        dm.splits["val"] = (xv, torch.poisson(torch.exp(xv.squeeze(1))))
    model = ProbabilisticRegressor(in_features=1, head=head, head_options=options, depth=1, width=8)
    tr = trainer(max_epochs=2)
    tr.fit(model, dm)
    assert type(model.predict_dist(torch.zeros(3, 1))).__name__ == dist_name
    assert torch.isfinite(tr.callback_metrics["val_loss"])


def test_linear_gaussian_mle_is_least_squares():
    # depth 0 = a linear model; maximum likelihood with a Gaussian = ordinary least squares
    dm = BloodPressureDataModule()
    model = ProbabilisticRegressor(
        in_features=1, depth=0, heteroscedastic=False, lr=5.0, head_options={"init_sigma": 20.0}
    )
    trainer(max_epochs=300).fit(model, dm)
    x, y = dm.tensors("train")
    design = torch.cat([x, torch.ones_like(x)], 1).double()
    coef = torch.linalg.lstsq(design, y.double().unsqueeze(1)).solution.squeeze(1)
    assert float(model.body.weight.detach()) == pytest.approx(float(coef[0]), abs=0.05)
    assert float(model.body.bias.detach()) == pytest.approx(float(coef[1]), abs=0.05)
    resid = y.double() - design @ coef
    assert float(model.head.sigma.detach()) == pytest.approx(
        float(resid.pow(2).mean().sqrt()), rel=1e-3
    )


def test_regressor_accepts_head_instance(tmp_path):
    head = GaussianHead(heteroscedastic=True, in_features=4)
    model = ProbabilisticRegressor(head=head, in_features=3, depth=1, width=6, body_out_features=4)
    assert model.body.head.out_features == 4 and "head" not in model.hparams
    tr = trainer()
    tr.fit(model, train_dataloaders=TensorBatches(torch.randn(8, 3), torch.randn(8), batch_size=4))
    tr.save_checkpoint(tmp_path / "head.ckpt")
    fresh = GaussianHead(heteroscedastic=True, in_features=4)
    loaded = ProbabilisticRegressor.load_from_checkpoint(
        tmp_path / "head.ckpt", head=fresh, weights_only=True
    )
    x = torch.randn(5, 3)
    torch.testing.assert_close(
        loaded.predict_dist(x).stddev, model.predict_dist(x).stddev, rtol=0, atol=0
    )


# --- bad inputs -----------------------------------------------------------------------------


def test_nan_regression_targets_fail_clearly():
    dm = HeteroscedasticDataModule(n_train=64, n_val=0, n_test=0, seed=0)
    x, y = dm.tensors("train")
    y = y.clone()
    y[10] = float("nan")
    dm.splits["train"] = (x, y)
    # refused where the batches are made, before the model sees them
    with pytest.raises(ValueError, match=r"y has a non-finite value \(nan\) at row 10"):
        trainer().fit(ProbabilisticRegressor(in_features=1), dm)


def test_bad_module_arguments():
    with pytest.raises(
        ValueError, match="optimizer 'rmsprop' is not supported; choose one of: adam, adamw, sgd"
    ):
        Classifier(optimizer="rmsprop")
    with pytest.raises(ValueError, match="lr must be > 0"):
        Classifier(lr=0.0)
    with pytest.raises(
        ValueError,
        match="head 'laplace' is not a regression head; choose one of: gaussian, poisson",
    ):
        ProbabilisticRegressor(head="laplace")
    with pytest.raises(ValueError, match="option.s. n_components not accepted by GaussianHead"):
        ProbabilisticRegressor(head="gaussian", head_options={"n_components": 2})
    with pytest.raises(ValueError, match="use Classifier for class labels"):
        ProbabilisticRegressor(head="categorical")
    with pytest.raises(ValueError, match="activation 'relu6' is not supported"):
        Classifier(activation="relu6")
    with pytest.raises(ValueError, match="the body produces 5 features but the head expects 4"):
        ProbabilisticRegressor(
            head=GaussianHead(heteroscedastic=True, in_features=4), body_out_features=5
        )


def test_input_of_the_wrong_width_is_a_clear_error() -> None:
    classifier = Classifier(in_features=64, n_classes=10, depth=1, width=8)
    with pytest.raises(ValueError, match=r"shape \(5, 3\).*expects 64 features per example"):
        classifier(torch.zeros(5, 3))
    regressor = ProbabilisticRegressor(in_features=2, depth=0)
    with pytest.raises(ValueError, match=r"expects 2 features per example"):
        regressor.predict_dist(torch.zeros(4, 7))
    assert regressor.predict_dist(torch.zeros(4, 2)).mean.shape == (4,)
