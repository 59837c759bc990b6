"""Figures of the chapter "Probabilistic heads": can the predicted probabilities be trusted?

A reliability diagram and the ECE of digits classifiers (several seeds trained as one stack),
and PIT histograms and interval coverage of the chapter's regressors on held-out data. The
regressors are the runs of `block4.probabilistic_runs` that the other figures of the chapter
draw (through ``ctx.compute`` the pipeline trains them once).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import distributions as D

from block4.calibration import (
    expected_calibration_error,
    interval_coverage,
    pit,
    pit_histogram,
    reliability_curve,
)
from block4.data import DigitsDataModule
from block4.figures.registry import FigureContext, figure
from block4.figures.style import PALETTE, subplots
from block4.modules import Classifier
from block4.probabilistic_runs import (
    count_runs,
    diabetes_runs,
    fit_members,
    mixture_dist,
    mixture_runs,
    normal_dist,
    synthetic_runs,
)
from block4.stacked_data import MemberBatches

HOMO, HETERO = PALETTE[1], PALETTE[0]


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
    epochs = ctx.pick(smoke=2, quick=25, full=40)
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


def _spread(values: Any, name: str) -> dict[str, float]:
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    return {f"{name}_mean": float(v.mean()), f"{name}_sd": float(v.std(unbiased=False))}


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
    ax_t.set_xlabel("epoch")
    ax_t.set_title(f"(b) over training: mean and range over {probs.shape[0]} seeds")
    ax_t.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))

    nll = hist[:, :, 0]  # [epochs, E]
    best_epoch = nll.argmin(0)  # per member
    members = torch.arange(nll.shape[1])
    conf = probs.max(-1).values  # [E, n]
    numbers = {
        "epochs": int(hist.shape[0]),
        "n_seeds": int(probs.shape[0]),
        "n_test": len(y),
        **_spread(eces, "ece"),
        **_spread((probs.argmax(-1) == y).double().mean(-1), "accuracy"),
        **_spread(nll[-1], "test_nll"),
        **_spread(nll[best_epoch, members], "best_nll"),
        **_spread(best_epoch + 1, "best_nll_epoch"),
        **_spread(hist[best_epoch, members, 2], "best_nll_ece"),
        **_spread(conf.mean(-1), "mean_confidence"),
        **_spread((conf > 0.99).double().mean(-1) * 100, "share_above_099_percent"),
        "diverged_members": len(data["diverged"]),
    }
    return fig, numbers


LABELS = {
    "synthetic_homoscedastic": "synthetic, one σ",
    "synthetic_heteroscedastic": "synthetic, σ(x)",
    "diabetes_homoscedastic": "diabetes, one σ",
    "diabetes_heteroscedastic": "diabetes, σ(x)",
    "inverse_sine_gaussian": "inverse sine, Gaussian",
    "inverse_sine_mixture": "inverse sine, mixture",
    "counts_poisson": "counts, Poisson",
}


def _first(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v[0] for k, v in params.items()}


def _cases(ctx: FigureContext, n_seeds: dict[str, int], n_splits: dict[str, int], x_probe: float):
    """``{case: (dist, y, x)}`` of the first seed of each model, from the chapter's runs."""
    syn = ctx.compute(synthetic_runs, n_seeds=ctx.pick(**n_seeds))
    dia = ctx.compute(diabetes_runs, n_splits=ctx.pick(**n_splits))
    mix = ctx.compute(mixture_runs, n_seeds=ctx.pick(**n_seeds), x_probe=x_probe)
    cnt = ctx.compute(count_runs, n_seeds=ctx.pick(**n_seeds))
    return {
        "synthetic_homoscedastic": (
            normal_dist(_first(syn["homoscedastic"]["test"])), syn["y_test"][0], syn["x_test"][0]
        ),
        "synthetic_heteroscedastic": (
            normal_dist(_first(syn["heteroscedastic"]["test"])), syn["y_test"][0], syn["x_test"][0]
        ),
        "diabetes_homoscedastic": (
            normal_dist(_first(dia["homoscedastic"]["test"])), dia["y_test"][0], None
        ),
        "diabetes_heteroscedastic": (
            normal_dist(_first(dia["heteroscedastic"]["test"])), dia["y_test"][0], None
        ),
        "inverse_sine_gaussian": (
            normal_dist(_first(mix["gaussian"]["test"])), mix["y_test"][0], None
        ),
        "inverse_sine_mixture": (
            mixture_dist(_first(mix["mixture"]["test"])), mix["y_test"][0], None
        ),
        "counts_poisson": (
            D.Poisson(cnt["poisson"]["test"]["rate"][0]), cnt["y_test"][0], None
        ),
    }  # fmt: skip


@figure(
    "regression_calibration",
    chapter="probabilistic-heads",
    params={
        "levels": [0.5, 0.8, 0.9, 0.95],
        "bins": 10,
        "n_seeds": {"smoke": 2, "quick": 2, "full": 5},
        "n_splits": {"smoke": 2, "quick": 4, "full": 10},
        "x_probe": 0.5,
    },
    group="trained-models",  # after the figures whose runs it reuses: one computation
)
def regression_calibration(
    ctx: FigureContext,
    levels: list[float],
    bins: int,
    n_seeds: dict[str, int],
    n_splits: dict[str, int],
    x_probe: float,
):
    """PIT histograms and interval coverage of the chapter's regressors on held-out data.

    Top: PIT histograms (uniform = calibrated) of the one-sigma and sigma(x) Gaussians on
    the synthetic data, of the sigma(x) model on diabetes (first split) and of the mixture
    head. Bottom: observed coverage of the central intervals against their nominal level.
    The arguments other than ``levels`` and ``bins`` select the runs of the other figures.
    """
    cases = _cases(ctx, n_seeds, n_splits, x_probe)
    numbers: dict[str, Any] = {}
    # Coverage can look right on average and still be wrong everywhere: split the synthetic
    # test inputs into the quiet left half and the noisy right half.
    for name in ("synthetic_homoscedastic", "synthetic_heteroscedastic"):
        dist, y, x = cases[name]
        for side, mask in (("left", x < 0), ("right", x >= 0)):
            part = D.Normal(dist.mean[mask], dist.stddev[mask])
            numbers[f"{name}_cov90_{side}"] = 100 * interval_coverage(part, y[mask], [0.9])[0.9]
    fig, _ = subplots(1, 1, width=6.8, height=7.4)
    fig.clear()
    grid = fig.add_gridspec(3, 2, height_ratios=[1, 1, 1.5])
    pit_axes = [fig.add_subplot(grid[r, c]) for r in range(2) for c in range(2)]
    ax_c = fig.add_subplot(grid[2, :])
    shown = [
        "synthetic_homoscedastic",
        "synthetic_heteroscedastic",
        "diabetes_heteroscedastic",
        "inverse_sine_mixture",
    ]
    gen = torch.Generator().manual_seed(ctx.seed)
    for name, (dist, y, _) in cases.items():
        density, ks = pit_histogram(pit(dist, y, generator=gen), bins=bins)
        numbers[f"{name}_ks"] = ks
        numbers[f"{name}_n"] = len(y)
        numbers[f"{name}_label"] = LABELS[name]
        for level, c in interval_coverage(dist, y, levels).items():
            numbers[f"{name}_cov{round(100 * level)}"] = 100 * c
        if name in shown:
            ax = pit_axes[shown.index(name)]
            ax.bar(
                (np.arange(bins) + 0.5) / bins, density.numpy(), width=0.9 / bins,
                color=HOMO if "homo" in name else HETERO, alpha=0.8,
            )  # fmt: skip
            ax.axhline(1.0, color="black", ls="--", lw=1)
            ax.set_title(f"{LABELS[name]}: KS {ks:.3f}")
            ax.set_ylim(0, max(2.2, float(density.max()) * 1.1))
    for ax in pit_axes[2:]:
        ax.set_xlabel("PIT value")
    for ax in pit_axes[::2]:
        ax.set_ylabel("density")
    ax_c.plot([0.4, 1], [0.4, 1], color="black", ls="--", lw=1, label="nominal")
    for i, name in enumerate(cases):
        ax_c.plot(
            levels, [numbers[f"{name}_cov{round(100 * lv)}"] / 100 for lv in levels],
            marker="osD^v<>"[i], ms=4, lw=1.2, color=PALETTE[i % len(PALETTE)], label=LABELS[name],
            # the simpler baseline of each pair dotted, the better-suited model solid
            ls=":" if name.endswith(("_homoscedastic", "_gaussian")) else "-",
        )  # fmt: skip
    ax_c.set_xlabel("nominal level of the central interval")
    ax_c.set_ylabel("observed coverage")
    ax_c.set_title("interval coverage on held-out data (first seed)")
    ax_c.legend(loc="upper left", bbox_to_anchor=(1.0, 1.05))
    numbers["levels"] = ", ".join(f"{round(100 * lv)} %" for lv in levels)
    return fig, numbers
