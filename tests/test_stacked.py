"""Stacked training is exact: E members in one Lightning run = E separate runs, step by step."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from _helpers import trainer
from torch import distributions as D

from block4.callbacks import (
    ActivationStats,
    FiniteLossGuard,
    GradientFlowMonitor,
    NonFiniteLossError,
)
from block4.data import MemberBatches, TensorBatches
from block4.modules import (
    Classifier,
    ProbabilisticRegressor,
    aleatoric_variance,
    epistemic_variance,
)

E = 4


def _data(n: int = 96, features: int = 8, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, features, generator=gen)
    y = (x[:, :classes] + 0.5 * torch.randn(n, classes, generator=gen)).argmax(1)
    return x, y


class StepLosses(pl.Callback):
    """Every training step's loss (per member for a stacked model)."""

    def __init__(self) -> None:
        self.losses: list[Any] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.members > 1:
            self.losses.append(pl_module.last_member_losses.tolist())
        else:
            self.losses.append(float(outputs["loss"]))


def _run(model: Classifier, batches: Any, **kw: Any) -> list[Any]:
    record = StepLosses()
    trainer(max_epochs=3, callbacks=[record], **kw).fit(model, train_dataloaders=batches)
    return record.losses


OPTIONS = dict(in_features=8, n_classes=4, depth=3, width=8, norm="batch", residual=True)
#: per-member shortcuts: residual and plain nets of one shape train in one stack
RESIDUAL = [True, False, True, True]


@pytest.mark.parametrize(
    ("optimizer", "lrs"),
    [("sgd", [0.05, 0.2, 1e35, 0.01]), ("adam", [1e-3, 1e-2, 1e35, 3e-3])],
)
def test_stacked_run_equals_separate_runs_with_one_diverging_member(optimizer, lrs):
    x, y = _data()
    stacked = Classifier(
        **{**OPTIONS, "residual": RESIDUAL}, members=E, seed=0, optimizer=optimizer, lr=lrs
    )
    stacked_losses = _run(stacked, MemberBatches(x, y, 16, seeds=0, members=E))
    diverged = stacked.diverged_step.tolist()
    assert diverged[2] >= 0 and [d for k, d in enumerate(diverged) if k != 2] == [-1] * 3
    assert stacked.member_active.tolist() == [True, True, False, True]
    worst_loss = worst_weight = 0.0
    for k in range(E):
        single = Classifier(
            **{**OPTIONS, "residual": RESIDUAL[k]}, seed=k, optimizer=optimizer, lr=lrs[k]
        )
        # the diverged member is frozen at the weights of the step before its divergence
        stop = {"max_steps": diverged[k]} if diverged[k] >= 0 else {}
        single_losses = _run(single, TensorBatches(x, y, 16, shuffle=True, seed=k), **stop)
        steps = len(single_losses)
        assert steps == (diverged[k] if diverged[k] >= 0 else len(stacked_losses))
        mine = torch.tensor([row[k] for row in stacked_losses[:steps]])
        torch.testing.assert_close(mine, torch.tensor(single_losses), atol=1e-5, rtol=1e-5)
        worst_loss = max(worst_loss, float((mine - torch.tensor(single_losses)).abs().max()))
        got, want = stacked.body.member(k).state_dict(), single.body.state_dict()
        for name in want:
            if name.endswith("num_batches_tracked"):
                continue
            if diverged[k] >= 0:
                # one step at learning rate 1e35 leaves weights of order 1e34-1e35, each the float32
                # rounding of a gradient summed in another order (batched or not): equal
                # relative to the tensor's scale, not element by element
                scale = float(want[name].abs().max())
                torch.testing.assert_close(
                    got[name], want[name], atol=1e-5 * scale, rtol=0.0, msg=name
                )
                continue
            torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-5, msg=name)
            worst_weight = max(worst_weight, float((got[name] - want[name]).abs().max()))
        if diverged[k] >= 0:
            assert all(torch.isfinite(v).all() for v in got.values())
            assert not math.isfinite(stacked_losses[diverged[k]][k])
    print(
        f"{optimizer}: worst |loss diff| {worst_loss:.2e}, "
        f"worst |weight diff| of the members that did not diverge {worst_weight:.2e}"
    )


def test_shared_order_gives_every_member_the_batches_of_the_first_seed():
    x, y = _data()
    batches = MemberBatches(x, y, 16, seeds=[5, 6, 7], shared_order=True)
    single = TensorBatches(x, y, 16, shuffle=True, seed=5)
    for _ in range(2):
        for (xb, yb), (xs, ys) in zip(batches, single, strict=True):
            assert torch.equal(xb, xs) and torch.equal(yb, ys)
    for k, seed in enumerate([5, 6, 7]):
        own = MemberBatches(x, y, 16, seeds=[5, 6, 7])
        reference = TensorBatches(x, y, 16, shuffle=True, seed=seed)
        for (xb, yb), (xs, ys) in zip(own, reference, strict=True):
            assert torch.equal(xb[k], xs) and torch.equal(yb[k], ys)
    with pytest.raises(ValueError, match="seeds has 3 entries but members=2"):
        MemberBatches(x, y, 16, seeds=[1, 2, 3], members=2)
    with pytest.raises(ValueError, match="members must be an integer >= 1"):
        MemberBatches(x, y, 16, seeds=0)


def test_stacked_checkpoint_round_trip_and_per_member_metrics(tmp_path):
    x, y = _data()
    options = {**OPTIONS, "residual": [True, False, True]}
    model = Classifier(**options, members=3, lr=[1e-2, 1e-3, 1e-35], seed=[4, 2, 9])
    fit = trainer(max_epochs=2, default_root_dir=tmp_path, enable_checkpointing=True)
    fit.fit(model, MemberBatches(x, y, 32, seeds=0, members=3), TensorBatches(x, y, 96))
    metrics = fit.callback_metrics
    for name in ("train_loss", "val_loss", "val_acc", "members_active"):
        assert name in metrics
    for k in range(3):
        assert f"val_acc/member_{k}" in metrics and f"train_loss/member_{k}" in metrics
    path = next(tmp_path.rglob("*.ckpt"))
    loaded = Classifier.load_from_checkpoint(path)
    assert loaded.members == 3 and loaded.hparams.seed == [4, 2, 9]
    assert loaded.body.residual == (True, False, True)
    torch.testing.assert_close(loaded.state_dict(), model.state_dict(), atol=0, rtol=0)
    torch.testing.assert_close(loaded.predict_dist(x).probs, model.predict_dist(x).probs)


def test_regressor_ensemble_predictive_mixture_and_variance_split():
    x = torch.linspace(-1, 1, 64)[:, None]
    y = torch.sin(3 * x[:, 0]) + 0.1 * torch.randn(64, generator=torch.Generator().manual_seed(1))
    model = ProbabilisticRegressor(in_features=1, members=5, lr=1e-2, width=16)
    trainer(max_epochs=3).fit(model, MemberBatches(x, y, 16, seeds=0, members=5))
    mixture = model.predict_dist(x.double().numpy())  # float64 numpy is converted
    members = model.member_dists(x)
    assert isinstance(mixture, D.MixtureSameFamily) and tuple(mixture.mean.shape) == (64,)
    assert isinstance(members, D.Normal) and tuple(members.mean.shape) == (5, 64)
    torch.testing.assert_close(mixture.mean, members.mean.mean(0))
    total = aleatoric_variance(members) + epistemic_variance(members)
    torch.testing.assert_close(mixture.variance, total, atol=1e-6, rtol=1e-5)
    assert bool((epistemic_variance(members) > 0).all())
    single = ProbabilisticRegressor(in_features=1)
    assert isinstance(single.predict_dist(np.zeros((2, 1), dtype=np.int64)), D.Normal)


def test_diagnostics_callbacks_report_per_member():
    x, y = _data()
    monitor, acts = GradientFlowMonitor(steps=[0]), ActivationStats(steps=[0])
    model = Classifier(**OPTIONS, members=3)
    trainer(max_steps=1, callbacks=[monitor, acts]).fit(model, MemberBatches(x, y, 16, 0, 3))
    assert len(monitor.table) == 3 * 4 and len(acts.table) == 3 * 3
    assert sorted({r["member"] for r in monitor.table}) == [0, 1, 2]
    # member k's row is what a single run of member k records
    single_monitor, single_acts = GradientFlowMonitor(steps=[0]), ActivationStats(steps=[0])
    single = Classifier(**OPTIONS, seed=1)
    batches = TensorBatches(x, y, 16, shuffle=True, seed=1)
    trainer(max_steps=1, callbacks=[single_monitor, single_acts]).fit(single, batches)
    for layer, value in single_monitor.grad_norms(0).items():
        assert monitor.grad_norms(0, member=1)[layer] == pytest.approx(value, rel=1e-5)
    for row in single_acts.table:
        mine = acts.table.where(member=1, layer=row["layer"])[0]
        assert mine["pre_std"] == pytest.approx(row["pre_std"], rel=1e-5)
        assert mine["hist"] == row["hist"]
    with pytest.raises(ValueError, match="pass member=k"):
        monitor.grad_norms(0)


def test_finite_loss_guard_records_members_and_stops_when_none_is_left():
    x, y = _data()
    guard = FiniteLossGuard()
    model = Classifier(**OPTIONS, members=2, optimizer="sgd", lr=[1e-2, 1e36])
    with pytest.warns(UserWarning, match="member 1's training loss became"):
        trainer(max_epochs=2, callbacks=[guard]).fit(model, MemberBatches(x, y, 16, 0, 2))
    assert [r["member"] for r in guard.table] == [1]
    assert model.member_active.tolist() == [True, False]
    doomed = Classifier(**OPTIONS, members=2, optimizer="sgd", lr=[1e36, 1e36])
    with pytest.raises(NonFiniteLossError, match="every member's training loss"):
        trainer(max_epochs=3, callbacks=[FiniteLossGuard()]).fit(
            doomed, MemberBatches(x, y, 16, 0, 2)
        )


def test_finite_loss_guard_names_a_member_frozen_by_its_gradient():
    # member 1's loss stays finite, but at step 2 its gradient is infinite (a hook on a stacked
    # weight makes it so, as an overflow in backward would): the module freezes it before the
    # step, and the guard names it with the cause
    x, y = _data()
    guard = FiniteLossGuard()
    model = Classifier(**OPTIONS, members=2, optimizer="sgd", lr=0.01)
    weight = next(model.body.parameters())  # [members, ...]

    def overflow(grad: torch.Tensor) -> torch.Tensor:
        if model.global_step != 2:
            return grad
        grad = grad.clone()
        grad[1] = math.inf
        return grad

    weight.register_hook(overflow)
    with pytest.warns(UserWarning, match="member 1's gradient became NaN or infinite at step 2"):
        trainer(max_epochs=2, callbacks=[guard]).fit(model, MemberBatches(x, y, 16, 0, 2))
    assert model.member_active.tolist() == [True, False]
    assert model.diverged_step.tolist() == [-1, 2]
    (row,) = guard.table
    assert (row["member"], row["step"], row["cause"]) == (1, 2, "gradient")
    assert math.isfinite(row["loss"])


def test_one_member_is_todays_single_module():
    model = Classifier(**OPTIONS)
    assert model.members == 1 and not hasattr(model.body, "members")
    reference = Classifier(**OPTIONS, members=1, seed=0)
    torch.testing.assert_close(model.state_dict(), reference.state_dict(), atol=0, rtol=0)


def test_bad_stacked_arguments_give_one_clear_error_each(tmp_path):
    with pytest.raises(ValueError, match="members must be an integer >= 1, got 0"):
        Classifier(members=0)
    with pytest.raises(ValueError, match="lr has 2 entries but there are 3 members"):
        Classifier(members=3, lr=[0.1, 0.2])
    with pytest.raises(ValueError, match="lr must be > 0 .for every member."):
        Classifier(members=2, lr=[0.1, -1.0])
    with pytest.raises(ValueError, match="seed has 2 entries but there are 3 members"):
        Classifier(members=3, seed=[1, 2])
    with pytest.raises(ValueError, match="lr is a list"):
        Classifier(lr=[0.1, 0.2])
    with pytest.raises(ValueError, match="needs a head without parameters"):
        ProbabilisticRegressor(members=2, heteroscedastic=False)
    with pytest.raises(ValueError, match="pass body=None"):
        Classifier(torch.nn.Linear(64, 10), members=2)
    model = Classifier(in_features=3, n_classes=2, depth=1, width=4)
    with pytest.raises(ValueError, match=r"inputs must be finite, got nan at row 1, column 2"):
        model.predict_dist(torch.tensor([[0.0, 1.0, 2.0], [0.0, 1.0, float("nan")]]))
    with pytest.raises(TypeError, match="must be a torch.Tensor or numpy array, got list"):
        model.predict_dist([[0.0, 1.0, 2.0]])
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty.ckpt is empty \(0 bytes\)"):
        Classifier.load_from_checkpoint(empty)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="junk.ckpt is (truncated or corrupt|corrupt)"):
        Classifier.load_from_checkpoint(junk)
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(ValueError, match="plain.pt is a PyTorch file but not a Lightning"):
        Classifier.load_from_checkpoint(plain)
    regressor = tmp_path / "regressor.ckpt"
    fit = trainer(max_steps=1, default_root_dir=tmp_path)
    x = torch.zeros(8, 1)
    fit.fit(ProbabilisticRegressor(), TensorBatches(x, torch.zeros(8), 8))
    fit.save_checkpoint(regressor)
    with pytest.raises(ValueError, match="regressor.ckpt is not a Classifier checkpoint"):
        Classifier.load_from_checkpoint(regressor)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(regressor.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated.ckpt is truncated or corrupt"):
        ProbabilisticRegressor.load_from_checkpoint(truncated)
    with pytest.raises(FileNotFoundError, match="missing.ckpt does not exist"):
        Classifier.load_from_checkpoint(tmp_path / "missing.ckpt")


def test_stacked_example_of_the_reuse_page_runs(root):
    import importlib.util
    import re

    path = root / "docs" / "examples" / "stacked_example.py"
    spec = importlib.util.spec_from_file_location("stacked_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.main()  # as the page shows it (3 epochs; 90 for the ensemble)
    assert result["logits_shape"] == (8, 5, 10)
    assert result["member_is_single"] and result["restacked_equal"]
    assert list(result["frozen"]) == [5]  # the 1e30 learning rate, and only that one
    assert max(result["val_acc"][:4]) > 0.6
    in_data, in_gap, _ = result["epistemic"]
    assert in_gap > 3 * in_data  # the members disagree where there were no data
    for total, a, e in zip(
        result["mixture_variance"], result["aleatoric"], result["epistemic"], strict=True
    ):
        assert total == pytest.approx(a + e, rel=1e-4)
    page = (root / "docs" / "reuse.md").read_text()
    included = set(re.findall(r'--8<-- "docs/examples/stacked_example.py:(\w+)"', page))
    assert included == set(re.findall(r"# --8<-- \[start:(\w+)\]", path.read_text()))


def test_stacked_benchmark_runs_tiny_and_its_goal_is_on_the_performance_page(root, tmp_path):
    import sys

    from block4 import perf_report

    sys.path.insert(0, str(root))
    from benchmarks import stacked as bench

    out = bench.main(
        [
            "--members",
            "1",
            "16",
            "--epochs",
            "2",
            "--plain-members",
            "1",
            "--out",
            str(tmp_path / "stacked.json"),
        ]
    )
    data = perf_report.load_result(tmp_path, "stacked")
    assert out == tmp_path / "stacked.json"
    assert [row["members"] for row in data["results"]["rows"]] == [1, 16]
    assert all(row["stacked_s_per_member_epoch"] > 0 for row in data["results"]["rows"])
    assert "stacked training, E = 16" in perf_report.goals_table(tmp_path)
    assert "stacked_s_per_member_epoch" in perf_report.render_result(data)
