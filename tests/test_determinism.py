"""Same seed -> identical metrics on CPU; a different seed -> different ones."""

from __future__ import annotations

import pytest
import torch
from _helpers import trainer

from block4.callbacks import GradientFlowMonitor, MetricHistory
from block4.data import DigitsDataModule, HeteroscedasticDataModule
from block4.modules import Classifier, ProbabilisticRegressor


def fit(model, dm, epochs=2):
    history, monitor = MetricHistory(), GradientFlowMonitor(every_n_steps=4)
    trainer(max_epochs=epochs, callbacks=[history, monitor]).fit(model, dm)
    params = torch.cat([p.detach().flatten() for p in model.parameters()])
    return history.table.to_dicts(), monitor.table.to_dicts(), params


@pytest.mark.parametrize("batching", ["memory", "dataloader"])
def test_classifier_same_seed_identical(batching):
    def run(seed):
        torch.manual_seed(1000 + seed)  # global RNG state must not matter
        return fit(
            Classifier(depth=2, width=32, norm="batch", seed=seed),
            DigitsDataModule(seed=seed, batching=batching),
        )

    h1, g1, p1 = run(0)
    h2, g2, p2 = run(0)
    assert h1 == h2 and g1 == g2
    assert torch.equal(p1, p2)
    h3, _, p3 = run(1)
    assert h3 != h1 and not torch.equal(p1, p3)


def test_regressor_same_seed_identical():
    def run(seed):
        return fit(
            ProbabilisticRegressor(
                in_features=1, head="mixture", head_options={"n_components": 2}, seed=seed
            ),
            HeteroscedasticDataModule(n_train=300, n_val=100, n_test=0, seed=seed),
        )

    h1, g1, p1 = run(3)
    h2, g2, p2 = run(3)
    assert h1 == h2 and g1 == g2 and torch.equal(p1, p2)
    assert run(4)[0] != h1
