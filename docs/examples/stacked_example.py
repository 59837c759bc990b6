"""Train many small networks at once: a learning-rate sweep and a deep ensemble in one run each.

Run it with ``python docs/examples/stacked_example.py``; ``docs/reuse.md`` shows its sections
and the test suite runs it.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch


def main(max_epochs: int = 3) -> dict[str, Any]:
    torch.set_num_threads(1)
    # --8<-- [start:convert]
    from block4.models import mlp, stack

    nets = mlp(64, 10, depth=3, width=32, init="kaiming", members=8, seed=0)  # StackedMLP
    logits = nets(torch.randn(5, 64))  # one batch shared by all members -> [8, 5, 10]
    third = nets.member(2)  # an ordinary MLP, bit for bit mlp(..., seed=2)
    same = torch.equal(third.head.weight, mlp(64, 10, 3, 32, init="kaiming", seed=2).head.weight)
    restacked = stack([nets.member(k) for k in range(8)])  # and back
    # --8<-- [end:convert]

    # --8<-- [start:sweep]
    from block4.data import DigitsDataModule
    from block4.modules import Classifier
    from block4.stacked_data import MemberBatches

    data = DigitsDataModule(batch_size=64, seed=0)
    data.setup("fit")
    lrs = [0.003, 0.01, 0.03, 0.1, 0.3, 1e30]  # the last one will blow up
    sweep = Classifier(
        in_features=64, n_classes=10, depth=3, width=32, init="kaiming",
        members=len(lrs), optimizer="sgd", lr=lrs, seed=0,
    )  # fmt: skip
    # member k sees the batches a single run with data seed k would see
    train = MemberBatches.like(data.train_dataloader(), seeds=0, members=len(lrs))
    trainer = pl.Trainer(
        max_epochs=max_epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(sweep, train, data.val_dataloader())
    val_acc = [float(trainer.callback_metrics[f"val_acc/member_{k}"]) for k in range(len(lrs))]
    frozen = {k: int(s) for k, s in enumerate(sweep.diverged_step) if s >= 0}  # {5: step}
    # --8<-- [end:sweep]

    # --8<-- [start:ensemble]
    from block4.modules import ProbabilisticRegressor, aleatoric_variance, epistemic_variance

    gen = torch.Generator().manual_seed(0)
    x = torch.cat(
        [torch.rand(150, 1, generator=gen) * 2 - 3, torch.rand(150, 1, generator=gen) + 1]
    )
    y = torch.sin(2 * x[:, 0]) + 0.1 * torch.randn(300, generator=gen)  # no data in (-1, 1)
    ensemble = ProbabilisticRegressor(in_features=1, members=5, width=32, lr=1e-2)
    pl.Trainer(
        max_epochs=30 * max_epochs, accelerator="cpu", logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    ).fit(ensemble, MemberBatches(x, y, batch_size=50, seeds=0, members=5))  # fmt: skip
    grid = torch.tensor([[-2.0], [0.0], [1.5]])  # in the data, in the gap, in the data
    mixture = ensemble.predict_dist(grid)  # MixtureSameFamily over the 5 members
    members = ensemble.member_dists(grid)  # Normal with batch shape [5, 3]
    epistemic = epistemic_variance(members)  # members disagree: large in the gap
    aleatoric = aleatoric_variance(members)  # the noise every member sees
    # --8<-- [end:ensemble]

    return {
        "logits_shape": tuple(logits.shape),
        "member_is_single": same,
        "restacked_equal": torch.equal(restacked.head.weight, nets.head.weight),
        "val_acc": val_acc,
        "frozen": frozen,
        "mixture": type(mixture).__name__,
        "epistemic": epistemic.tolist(),
        "aleatoric": aleatoric.tolist(),
        "mixture_variance": mixture.variance.tolist(),
    }


if __name__ == "__main__":
    print(main())
