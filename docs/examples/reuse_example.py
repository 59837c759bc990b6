"""Use block4 on your own tensors: the example of the page "Use block4 in your project".

Run it with ``python docs/examples/reuse_example.py`` (well under a minute on a CPU). The tests
run it too (``tests/test_reuse.py``), so the code on the page always works.
"""

from __future__ import annotations

from pathlib import Path

import torch


def make_my_data(n: int = 2000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stand-in for your data: 3 features, a target whose noise grows with the first one."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=gen)
    noise = 0.2 + 0.5 * torch.sigmoid(2 * x[:, 0])
    y = x[:, 0] - 0.5 * x[:, 1] ** 2 + noise * torch.randn(n, generator=gen)
    return x, y


def main(out_dir: str | Path = "reuse_example_output", max_epochs: int = 20) -> dict[str, float]:
    out_dir = Path(out_dir)
    # --8<-- [start:data]
    import pytorch_lightning as pl

    from block4.data import TensorBatches

    x, y = make_my_data()  # your tensors: x of shape (N, 3), y of shape (N,)
    x_train, y_train, x_val, y_val = x[:1600], y[:1600], x[1600:], y[1600:]
    train_batches = TensorBatches(x_train, y_train, batch_size=64, shuffle=True, seed=0)
    val_batches = TensorBatches(x_val, y_val, batch_size=len(x_val))
    # --8<-- [end:data]

    # --8<-- [start:model]
    from block4.callbacks import FiniteLossGuard, GradientFlowMonitor, MetricHistory
    from block4.modules import ProbabilisticRegressor

    model = ProbabilisticRegressor(
        in_features=3,
        head="gaussian",
        heteroscedastic=True,  # predict a mean and a standard deviation per input
        depth=2,
        width=64,
        lr=3e-3,
        seed=0,
    )
    monitor, history = GradientFlowMonitor(every_n_steps=50), MetricHistory()
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        accelerator="auto",  # the GPU if there is one
        callbacks=[FiniteLossGuard(), monitor, history],
        default_root_dir=out_dir,
        logger=False,
        enable_progress_bar=False,
    )
    trainer.fit(model, train_batches, val_batches)
    # --8<-- [end:model]

    # --8<-- [start:predict]
    dist = model.predict_dist(x_val)  # a torch.distributions.Normal, one per row
    lower, upper = dist.icdf(torch.tensor(0.05)), dist.icdf(torch.tensor(0.95))
    coverage = ((y_val >= lower) & (y_val <= upper)).float().mean()
    print(
        f"validation NLL {trainer.callback_metrics['val_loss']:.3f}, "
        f"90% interval covers {coverage:.1%} of the targets"
    )
    print("gradient norms at step 0:", monitor.grad_norms(0))
    # --8<-- [end:predict]

    # --8<-- [start:checkpoint]
    path = out_dir / "regressor.ckpt"
    trainer.save_checkpoint(path)
    restored = ProbabilisticRegressor.load_from_checkpoint(path, weights_only=True)
    assert torch.equal(restored.predict_dist(x_val).mean, dist.mean)
    # --8<-- [end:checkpoint]

    # --8<-- [start:plain]
    from block4.heads import PoissonHead, nll
    from block4.models import mlp

    # The same parts without Lightning: a body, a head, the NLL, your own loop.
    counts = torch.poisson(torch.exp(0.5 * x_train[:, 0]))  # count targets
    body, head = mlp(3, 1, depth=2, width=32, init="kaiming"), PoissonHead()
    optimizer = torch.optim.Adam(body.parameters(), lr=1e-2)
    for _ in range(200):
        loss = nll(head(body(x_train)), counts)  # = -head(...).log_prob(counts).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # --8<-- [end:plain]

    # --8<-- [start:own_body]
    from torch import nn

    from block4.modules import Classifier

    # Your own body: any nn.Module. Here it outputs 16 features, so the categorical head
    # gets its own 16 -> 3 linear layer (body_out_features=16).
    my_body = nn.Sequential(nn.Linear(3, 32), nn.GELU(), nn.Linear(32, 16))
    classifier = Classifier(my_body, n_classes=3, body_out_features=16, lr=1e-2)
    labels = torch.bucketize(y_train, torch.tensor([-0.5, 0.5]))  # 3 classes from y
    pl.Trainer(
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(classifier, TensorBatches(x_train, labels, batch_size=64, shuffle=True))
    probs = classifier.predict_dist(x_val).probs  # (400, 3) class probabilities
    # --8<-- [end:own_body]

    return {
        "val_loss": float(trainer.callback_metrics["val_loss"]),
        "coverage_90": float(coverage),
        "epochs_recorded": len(history.table),
        "poisson_nll": float(loss.detach()),
        "class_prob_sum": float(probs.sum(1).mean()),
    }


if __name__ == "__main__":
    main()
