"""Figure of the chapter "Maximum likelihood": linear regression fitted by maximum
likelihood with Lightning, next to the closed-form least-squares solution."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import distributions as D
from torch import nn

from block4.data import BloodPressureDataModule, load_blood_pressure
from block4.figures.registry import FigureContext, figure
from block4.heads import least_squares
from block4.modules import ProbabilisticRegressor
from block4.style import PALETTE, ROLE, subplots
from block4.training import trainer

#: Colour of "the likelihood bar" on every figure of the chapter.
BAR = ROLE["backward"]


class _LinePath(pl.Callback):
    """Records the line ``(intercept, slope)`` in data units at the start and after each epoch."""

    def __init__(self, age_mean: float, age_std: float) -> None:
        self.age_mean, self.age_std = age_mean, age_std
        self.path: list[tuple[float, float]] = []

    def _record(self, module: pl.LightningModule) -> None:
        self.path.append(line_in_data_units(module.body, self.age_mean, self.age_std))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record(pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record(pl_module)


def line_in_data_units(linear: nn.Linear, age_mean: float, age_std: float) -> tuple[float, float]:
    """``(intercept, slope)`` in mmHg and mmHg/year of a ``Linear(1, 1)`` on standardised age."""
    slope = float(linear.weight.detach().reshape(())) / age_std
    intercept = float(linear.bias.detach().reshape(())) - slope * age_mean
    return intercept, slope


#: Learning rate of the fixed-sigma fit in units of sigma**2 (the inverse of the NLL's curvature).
LR_OVER_SIGMA2 = 0.3


# --8<-- [start:fit_line_by_ml]
def fit_line_by_ml(
    ctx: FigureContext,
    *,
    sigma: float | None,
    epochs: int,
    callbacks: list[pl.Callback] | None = None,
) -> tuple[ProbabilisticRegressor, BloodPressureDataModule]:
    """Fit ``sbp ~ a + b * age`` by maximum likelihood with Lightning.

    The body is one ``nn.Linear(1, 1)`` (``depth=0``) on standardised age; the head is a
    ``GaussianHead`` with ``sigma`` fixed, or learned when ``sigma`` is ``None``. With a fixed
    sigma the NLL's curvature in the weights is about ``1 / sigma**2``, so plain SGD with a
    learning rate of ``0.3 * sigma**2`` converges in a few dozen full-batch steps; with a
    learned sigma the curvature changes during training and Adam is the robust choice.
    """
    data = BloodPressureDataModule(batch_size=33, seed=ctx.seed)
    if sigma is not None:
        head_options, optimizer, lr = {"sigma": sigma}, "sgd", LR_OVER_SIGMA2 * sigma**2
    else:
        head_options, optimizer, lr = {"init_sigma": 20.0}, "adam", 2.0
    model = ProbabilisticRegressor(
        depth=0,
        head="gaussian",
        heteroscedastic=False,
        head_options=head_options,
        optimizer=optimizer,
        lr=lr,
        momentum=0.0,
        seed=ctx.seed,
    )
    trainer(
        ctx,
        max_epochs=epochs,
        callbacks=callbacks or [],
        limit_val_batches=0,  # all 33 women are training data; nothing to validate on
        num_sanity_val_steps=0,
    ).fit(model, data)
    return model, data


# --8<-- [end:fit_line_by_ml]


def mle_runs(ctx: FigureContext, sigma: float) -> dict[str, Any]:
    """Fit the line by ML with ``sigma`` fixed (recording its path) and with sigma learned."""
    pl.seed_everything(ctx.seed, workers=True, verbose=False)
    epochs = ctx.pick(smoke=40, quick=40, full=200)
    # with sigma learned too: after 600 epochs sigma is within 3e-5 of sqrt(RSS / n)
    epochs_sigma = ctx.pick(smoke=80, quick=80, full=600)
    data = BloodPressureDataModule(batch_size=33, seed=ctx.seed)
    recorder = _LinePath(data.age_mean, data.age_std)
    model, data = fit_line_by_ml(ctx, sigma=sigma, epochs=epochs, callbacks=[recorder])
    learned, _ = fit_line_by_ml(ctx, sigma=None, epochs=epochs_sigma)
    return {
        "epochs": epochs,
        "epochs_sigma": epochs_sigma,
        "path": torch.tensor(recorder.path, dtype=torch.float64),
        "line": line_in_data_units(model.body, data.age_mean, data.age_std),
        "learned_line": line_in_data_units(learned.body, data.age_mean, data.age_std),
        "learned_sigma": float(learned.head.sigma.detach()),
    }


def _draw_contours(ax: Any, path: np.ndarray, ls: tuple[float, float], nll: Any, sigma: float):
    a_lo, a_hi = min(path[:, 0].min(), ls[0]) - 25, max(path[:, 0].max(), ls[0]) + 25
    b_lo, b_hi = min(path[:, 1].min(), ls[1]) - 0.6, max(path[:, 1].max(), ls[1]) + 0.6
    A, B = torch.meshgrid(
        torch.linspace(a_lo, a_hi, 200, dtype=torch.float64),
        torch.linspace(b_lo, b_hi, 200, dtype=torch.float64),
        indexing="xy",
    )
    Z = nll(A, B)
    levels = float(Z.min()) + np.geomspace(0.02, float(Z.max() - Z.min()), 14)
    cs = ax.contour(
        A.numpy(), B.numpy(), Z.numpy(), levels=levels, colors=PALETTE[6], linewidths=0.8
    )
    ax.clabel(cs, cs.levels[::4], fmt="%.1f", fontsize=9)
    ax.plot(path[:, 0], path[:, 1], ".-", color=ROLE["model"], ms=3, lw=1.0, label="SGD on the NLL")
    ax.plot(path[0, 0], path[0, 1], "o", color=ROLE["model"], ms=6)
    ax.plot([ls[0]], [ls[1]], "*", color=BAR, ms=14, label="least squares")
    ax.set_xlabel("intercept a (mmHg)")
    ax.set_ylabel("slope b (mmHg / year)")
    ax.set_title(rf"(a) mean NLL with $\sigma = {sigma:g}$ fixed")
    ax.legend(loc="upper right")


@figure("mle_least_squares", chapter="maximum-likelihood", params={"sigma": 20.0})
def mle_least_squares(ctx: FigureContext, sigma: float):
    """Linear regression trained by maximum likelihood (Lightning) vs closed-form least squares.

    (a) Contours of the mean Gaussian NLL (fixed sigma) over intercept and slope, the path
    of full-batch gradient descent, and the least-squares point. (b) The data with both
    lines. A second run learns sigma too and reports it next to ``sqrt(RSS / n)``.
    """
    run = ctx.compute(mle_runs, sigma=sigma)
    ages, sbps = load_blood_pressure(torch.float64)
    intercept_ls, slope_ls = least_squares(ages, sbps)
    intercept_ml, slope_ml = run["line"]
    residual = sbps - (intercept_ls + slope_ls * ages)

    def mean_nll(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        mu = a[..., None] + b[..., None] * ages
        return -D.Normal(mu, sigma).log_prob(sbps).mean(-1)

    path = run["path"].numpy()
    fig, (ax_c, ax_l) = subplots(2, 1, width=6.8, height=6.6)
    _draw_contours(ax_c, path, (intercept_ls, slope_ls), mean_nll, sigma)
    xs = np.linspace(0, 90, 2)
    ax_l.plot(ages.numpy(), sbps.numpy(), "o", color=PALETTE[0], ms=5, alpha=0.7, label="33 women")
    ax_l.plot(xs, intercept_ls + slope_ls * xs, color=BAR, lw=4, alpha=0.5, label="least squares")
    ax_l.plot(xs, intercept_ml + slope_ml * xs, color=ROLE["model"], lw=1.5, ls="--",
              label="maximum likelihood")  # fmt: skip
    ax_l.set_xlabel("age x (years)")
    ax_l.set_ylabel("blood pressure y (mmHg)")
    ax_l.set_title(f"(b) the two lines after {run['epochs']} epochs")
    ax_l.legend(loc="upper left")

    span = torch.linspace(float(ages.min()), float(ages.max()), 100, dtype=torch.float64)
    line_diff = (intercept_ml - intercept_ls) + (slope_ml - slope_ls) * span
    numbers = {
        "sigma": sigma,
        "epochs": run["epochs"],
        "lr": LR_OVER_SIGMA2 * sigma**2,
        "lr_over_sigma2": LR_OVER_SIGMA2,
        "two_sigma2": 2 * sigma**2,
        "epochs_sigma": run["epochs_sigma"],
        "intercept_ls": intercept_ls,
        "slope_ls": slope_ls,
        "intercept_ml": intercept_ml,
        "slope_ml": slope_ml,
        "max_line_diff": float(line_diff.abs().max()),
        "nll_ls": float(mean_nll(torch.tensor(intercept_ls), torch.tensor(slope_ls))),
        "nll_start": float(mean_nll(torch.tensor(path[0, 0]), torch.tensor(path[0, 1]))),
        "sigma_learned": run["learned_sigma"],
        "sigma_closed": float(torch.sqrt((residual**2).mean())),
        "learned_intercept": run["learned_line"][0],
        "learned_slope": run["learned_line"][1],
    }
    return fig, numbers
