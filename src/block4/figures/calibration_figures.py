"""Figure of the chapter "Probabilistic heads": can a classifier's probabilities be trusted?

A reliability diagram and the ECE of digits classifiers (several seeds trained as one stack).
The regressors' calibration figure is in `block4.figures.probabilistic`, next to the figures
whose runs it reuses.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from matplotlib.ticker import FuncFormatter, NullFormatter

from block4.calibration import expected_calibration_error, reliability_curve
from block4.data import DigitsDataModule, MemberBatches
from block4.figures.registry import FigureContext, figure
from block4.modules import Classifier
from block4.probabilistic_runs import fit_members
from block4.style import PALETTE, subplots
from block4.training import spread

HETERO = PALETTE[0]


class _TestMetrics(pl.Callback):
    """Each member's test NLL, error rate and ECE after every epoch."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, n_bins: int) -> None:
        self.x, self.y, self.n_bins = x, y, n_bins
        self.rows: list[list[list[float]]] = []  # epoch -> member -> (nll, error, ece)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        probs = pl_module.member_dists(self.x).probs.cpu()  # [E, n, 10]
        row = []
        for p in probs:
            nll = torch.nn.functional.nll_loss(p.clamp_min(1e-12).log(), self.y)
            error = (p.argmax(1) != self.y).double().mean()
            row.append(
                [float(nll), float(error), expected_calibration_error(p, self.y, self.n_bins)]
            )
        self.rows.append(row)


def digits_runs(ctx: FigureContext, n_seeds: int, n_bins: int) -> dict[str, Any]:
    """Digits MLPs (2 hidden layers of 64, Adam) from ``n_seeds`` seeds, trained as one stack
    (each member its own initial weights and batch order); test metrics every epoch."""
    epochs = ctx.pick(smoke=2, quick=6, full=40)
    data = DigitsDataModule(batch_size=64, seed=ctx.seed)
    data.setup()
    x, y = (t.cpu() for t in data.tensors("train"))
    x_test, y_test = (t.cpu() for t in data.tensors("test"))
    model = Classifier(
        in_features=64, n_classes=10, depth=2, width=64, lr=3e-3, members=n_seeds, seed=ctx.seed
    )
    metrics = _TestMetrics(x_test, y_test, n_bins)
    batches = MemberBatches(x, y, 64, seeds=ctx.seed, members=n_seeds)
    fit_members(ctx, model, batches, epochs, [metrics])
    return {
        "history": torch.tensor(metrics.rows),  # [epochs, E, 3]
        "probs": model.member_dists(x_test).probs.clone(),
        "y_test": y_test,
        "diverged": [k for k, ok in enumerate(model.member_active.tolist()) if not ok],
    }


@figure(
    "digits_calibration",
    chapter="probabilistic-heads",
    params={"n_bins": 10, "n_seeds": {"smoke": 2, "quick": 2, "full": 5}},
)
def digits_calibration(ctx: FigureContext, n_bins: int, n_seeds: dict[str, int]):
    """Reliability diagram and expected calibration error of digits classifiers.

    Top: test accuracy per confidence bin against the bin's mean confidence (a calibrated
    model lies on the diagonal), with the share of predictions per bin, first seed. Bottom:
    test NLL, error rate and ECE over training, mean over seeds with the range as a band:
    the NLL rises again when the model becomes over-confident, the error rate barely moves.
    """
    data = ctx.compute(digits_runs, n_seeds=ctx.pick(**n_seeds), n_bins=n_bins)
    probs, y = data["probs"], data["y_test"]
    hist = data["history"]  # [epochs, E, 3]
    curve = reliability_curve(probs[0], y, n_bins=n_bins)
    eces = torch.tensor([expected_calibration_error(p, y, n_bins=n_bins) for p in probs])

    fig, (ax_r, ax_t) = subplots(2, 1, width=6.8, height=6.6)
    edges = curve["edges"].numpy()
    centres = (edges[:-1] + edges[1:]) / 2
    filled = curve["count"].numpy() > 0
    ax_r.plot([0, 1], [0, 1], color="black", ls="--", lw=1, label="perfect calibration")
    ax_r.bar(
        centres[filled], curve["accuracy"].numpy()[filled], width=0.9 / n_bins, color=HETERO,
        alpha=0.75, label="accuracy in bin",
    )  # fmt: skip
    share = curve["count"].numpy() / curve["count"].numpy().sum()
    ax_r.bar(
        centres, share * 0.25, width=0.9 / n_bins, color=PALETTE[1], alpha=0.8,
        label="share of predictions (×0.25)",
    )  # fmt: skip
    ax_r.set_xlim(0, 1)
    ax_r.set_ylim(0, 1.02)
    ax_r.set_xlabel("confidence (largest class probability)")
    ax_r.set_ylabel("accuracy")
    ax_r.set_title(f"(a) reliability diagram, seed 1: ECE = {float(eces[0]):.3f}")
    ax_r.legend(loc="upper left")

    epochs = np.arange(1, hist.shape[0] + 1)
    for i, (label, colour) in enumerate(
        (("test NLL (nats)", PALETTE[3]), ("test error rate", PALETTE[2]), ("test ECE", PALETTE[4]))
    ):
        values = hist[:, :, i]
        ax_t.plot(epochs, values.mean(1), color=colour, label=label)
        if values.shape[1] > 1:
            ax_t.fill_between(
                epochs, values.min(1).values, values.max(1).values, color=colour, alpha=0.2, lw=0
            )
    ax_t.set_yscale("log")
    # plain tick labels: mathtext exponents render at 70 % of the font size
    ax_t.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax_t.yaxis.set_minor_formatter(NullFormatter())
    ax_t.set_xlabel("epoch")
    ax_t.set_title(f"(b) over training: mean and range over {probs.shape[0]} seeds")
    ax_t.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))

    nll = hist[:, :, 0]  # [epochs, E]
    best_epoch = nll.argmin(0)  # per member
    members = torch.arange(nll.shape[1])
    conf = probs.max(-1).values  # [E, n]
    accuracy = (probs.argmax(-1) == y).double().mean(-1)
    numbers = {
        "epochs": int(hist.shape[0]),
        "n_seeds": int(probs.shape[0]),
        "n_test": len(y),
        **spread(eces, "ece"),
        **spread(accuracy, "accuracy"),
        **spread(nll[-1], "test_nll"),
        **spread(nll[best_epoch, members], "best_nll"),
        **spread(best_epoch + 1, "best_nll_epoch"),
        **spread(hist[best_epoch, members, 2], "best_nll_ece"),
        **spread(hist[best_epoch, members, 1], "best_nll_error"),
        **spread(hist[-1, :, 1], "error"),
        # seeds whose ECE grew after the best-NLL epoch / that end more confident than right
        "ece_rose": int((hist[-1, :, 2] > hist[best_epoch, members, 2]).sum()),
        "overconfident": int((conf.mean(-1) > accuracy).sum()),
        **spread(conf.mean(-1), "mean_confidence"),
        **spread((conf > 0.99).double().mean(-1) * 100, "share_above_099_percent"),
        "diverged_members": len(data["diverged"]),
    }
    return fig, numbers
