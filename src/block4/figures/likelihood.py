"""Figures of the chapter "Maximum likelihood".

Every number the chapter quotes is computed here and returned in the figure's numbers dict:
the decision under cost made with a predicted distribution, the likelihood of five training
points of a binary classifier (checked against ``torch.nn.functional.cross_entropy``), the
Gaussian likelihood of the 22-year-old woman's blood pressure, and linear regression fitted by
maximum likelihood with Lightning next to the closed-form least-squares solution.
"""

from __future__ import annotations

import math

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import distributions as D
from torch import nn

from block4.data import BloodPressureDataModule, load_blood_pressure
from block4.figures.registry import FigureContext, figure
from block4.modules import ProbabilisticRegressor
from block4.style import PALETTE, ROLE, subplots
from block4.training import trainer

#: Colour of "the likelihood bar" on every figure of the chapter.
BAR = ROLE["backward"]


# --------------------------------------------------------------------------------------------
# Small pure functions (tested on their own, shown on the page)
# --------------------------------------------------------------------------------------------


#: Probabilities of the two travel regimes (free road, jam) and their typical durations (minutes).
TRAVEL_REGIME_PROBS = (0.8, 0.2)
TRAVEL_REGIME_MINUTES = (30.0, 50.0)


def travel_time_distribution() -> D.Distribution:
    """The predicted distribution of a trip's duration in minutes (a two-regime forecast).

    On most days (80 %) the road is free and the trip takes about 30 minutes; on the other
    days there is a jam and it takes about 50. A log-normal per regime keeps times positive
    and right-skewed.
    """
    regime = D.Categorical(probs=torch.tensor(TRAVEL_REGIME_PROBS, dtype=torch.float64))
    duration = D.LogNormal(
        loc=torch.log(torch.tensor(TRAVEL_REGIME_MINUTES, dtype=torch.float64)),
        scale=torch.tensor([0.10, 0.15], dtype=torch.float64),
    )
    return D.MixtureSameFamily(regime, duration)


# --8<-- [start:expected_cost]
def expected_cost(
    buffer: torch.Tensor,
    duration: D.Distribution,
    *,
    cost_per_minute_early: float,
    cost_late: float,
    grid: torch.Tensor,
) -> torch.Tensor:
    """Expected cost of leaving ``buffer`` minutes before a fixed deadline.

    Arriving early costs ``cost_per_minute_early`` per minute of waiting; arriving late costs
    ``cost_late`` once (the train is gone). The expectation over the predicted ``duration`` is a
    Riemann sum on ``grid`` (minutes), accurate to far below the differences that matter.

    Args:
        buffer: departure times, in minutes before the deadline, shape ``(k,)``.
        duration: predicted distribution of the trip's duration in minutes.
        cost_per_minute_early: cost of one minute of waiting.
        cost_late: cost of missing the deadline.
        grid: equally spaced durations covering the distribution's mass.

    Returns:
        The expected cost for every departure, shape ``(k,)``.
    """
    step = grid[1] - grid[0]
    density = duration.log_prob(grid).exp()  # (g,)
    early = (buffer[:, None] - grid[None, :]).clamp(min=0.0) * cost_per_minute_early
    late = (grid[None, :] > buffer[:, None]).to(grid.dtype) * cost_late
    return ((early + late) * density[None, :]).sum(dim=1) * step


# --8<-- [end:expected_cost]


def five_point_example() -> tuple[torch.Tensor, torch.Tensor]:
    """Five training points of a binary problem: three of class 0, then two of class 1.

    The classes overlap (one class-0 point lies right of a class-1 point), so the maximum
    likelihood estimate is finite.
    """
    x = torch.tensor([-2.0, -1.0, 0.6, 0.2, 1.5], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1])
    return x, y


def two_class_logits(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Logits ``(0, w x + b)`` of a two-class softmax; the softmax of them is the sigmoid."""
    z1 = w * x + b
    return torch.stack([torch.zeros_like(z1), z1], dim=-1)


# --8<-- [start:likelihood_table]
def likelihood_table(logits: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Likelihood, log-likelihood and mean NLL of labels ``y`` under softmax(``logits``).

    Computed step by step as in the text (probabilities of the observed classes, their
    product, its log, minus the mean) and, for comparison, with
    ``torch.nn.functional.cross_entropy``.
    """
    probs = torch.softmax(logits, dim=-1)
    p_observed = probs[torch.arange(len(y)), y]
    likelihood = torch.prod(p_observed)
    log_likelihood = torch.log(p_observed).sum()
    nll = -log_likelihood / len(y)
    ce = F.cross_entropy(logits, y)
    out = {f"p_obs_{i + 1}": float(p) for i, p in enumerate(p_observed)}
    out.update(
        likelihood=float(likelihood),
        log_likelihood=float(log_likelihood),
        nll=float(nll),
        cross_entropy=float(ce),
        nll_minus_ce=float(abs(nll - ce)),
    )
    return out


# --8<-- [end:likelihood_table]


def fit_logistic(x: torch.Tensor, y: torch.Tensor, steps: int = 200) -> tuple[float, float]:
    """Maximum likelihood ``(w, b)`` of the one-feature logistic model (L-BFGS on the NLL)."""
    w = torch.zeros((), dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=steps,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(two_class_logits(x, w, b), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(w.detach()), float(b.detach())


def gaussian_likelihood(y: float, mu: float, sigma: float) -> float:
    """Density of ``Normal(mu, sigma)`` at ``y`` -- the likelihood of one observation."""
    return float(D.Normal(torch.tensor(mu), torch.tensor(sigma)).log_prob(torch.tensor(y)).exp())


def least_squares(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Closed-form least squares ``y ~ a + b x``: returns ``(intercept, slope)``."""
    design = torch.stack([torch.ones_like(x), x], dim=1).double()
    coef = torch.linalg.lstsq(design, y.double()[:, None]).solution[:, 0]
    return float(coef[0]), float(coef[1])


def _blood_pressure() -> tuple[torch.Tensor, torch.Tensor]:
    return load_blood_pressure(torch.float64)


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


@figure(
    "decision_under_cost",
    chapter="maximum-likelihood",
    params={
        "p_cancer": [0.49, 0.000001],
        "cost_check": 1.0,
        "cost_missed": 1000.0,
        "cost_per_minute_early": 1.0,
        "cost_late": 120.0,
    },
)
def decision_under_cost(
    ctx: FigureContext,
    p_cancer: list[float],
    cost_check: float,
    cost_missed: float,
    cost_per_minute_early: float,
    cost_late: float,
):
    """Why a distribution beats a point: two decisions that need probabilities.

    Left: the cancer example. A deterministic classifier (threshold 0.5) says "no cancer" to
    both patients; with probabilities and costs the doctor checks patient A, not B.
    Right: leave early enough for a train. With the predicted travel-time distribution the
    departure that minimises the expected cost is found on a grid; planning with the mean
    travel time alone misses the train on every jam day.
    """
    fig, (ax_c, ax_t, ax_e) = subplots(1, 3, width=11.0, height=3.5)

    # Cancer: the decision "check" costs cost_check; "send home" costs p * cost_missed.
    p = torch.tensor(p_cancer, dtype=torch.float64)
    threshold = cost_check / cost_missed
    cost_home = p * cost_missed
    names = ["patient A", "patient B"]
    ax_c.bar(names, p.numpy(), color=[PALETTE[4], PALETTE[2]], width=0.5)
    ax_c.set_yscale("log")
    ax_c.set_ylim(1e-7, 1.5)
    ax_c.axhline(0.5, color=ROLE["truth"], ls="--", lw=1.2)
    ax_c.axhline(threshold, color=PALETTE[0], ls=":", lw=1.5)
    ax_c.text(1.45, 0.4, "threshold 0.5:\nboth 'no cancer'", ha="right", va="top", fontsize=8)
    ax_c.text(
        1.45,
        threshold * 1.3,
        f"check if p > {threshold:g}\n(cost check / cost missed)",
        ha="right",
        va="bottom",
        fontsize=8,
        color=PALETTE[0],
    )
    for i, value in enumerate(p.tolist()):
        ax_c.text(i, value * 1.4, f"{100 * value:g} %", ha="center", va="bottom", fontsize=9)
    ax_c.set_ylabel("predicted P(cancer)")
    ax_c.set_title("(a) cancer from tissue")

    # Travel time: predicted distribution and the expected cost of each departure.
    duration = travel_time_distribution()
    grid = torch.linspace(0.01, 150.0, 15000, dtype=torch.float64)
    density = duration.log_prob(grid).exp()
    mean = float((grid * density).sum() * (grid[1] - grid[0]))
    buffers = torch.linspace(20.0, 90.0, 701, dtype=torch.float64)
    costs = expected_cost(
        buffers,
        duration,
        cost_per_minute_early=cost_per_minute_early,
        cost_late=cost_late,
        grid=grid,
    )
    best = int(torch.argmin(costs))
    best_buffer = float(buffers[best])
    best_cost = float(costs[best])
    at_mean = float(
        expected_cost(
            torch.tensor([mean], dtype=torch.float64),
            duration,
            cost_per_minute_early=cost_per_minute_early,
            cost_late=cost_late,
            grid=grid,
        )[0]
    )
    p_late_best = float(1.0 - duration.cdf(torch.tensor(best_buffer, dtype=torch.float64)))
    p_late_mean = float(1.0 - duration.cdf(torch.tensor(mean, dtype=torch.float64)))

    coarse = slice(None, None, 25)  # 600 points are plenty for the drawing
    ax_t.plot(grid[coarse].numpy(), density[coarse].numpy(), color=ROLE["model"])
    ax_t.fill_between(
        grid[coarse].numpy(), density[coarse].numpy(), color=ROLE["model"], alpha=0.15
    )
    ax_t.axvline(mean, color=ROLE["truth"], ls="--", lw=1.2, label=f"mean {mean:.1f} min")
    ax_t.axvline(best_buffer, color=BAR, lw=1.5, label=f"best departure {best_buffer:.1f} min")
    ax_t.set_xlim(15, 85)
    ax_t.set_xlabel("travel time (minutes)")
    ax_t.set_ylabel("predicted density (1/min)")
    ax_t.set_title("(b) predicted travel time")
    ax_t.legend(loc="upper right")

    ax_e.plot(buffers.numpy(), costs.numpy(), color=PALETTE[3])
    ax_e.plot(
        [mean], [at_mean], "o", color=ROLE["truth"], label=f"leave at the mean: {at_mean:.1f}"
    )
    ax_e.plot([best_buffer], [best_cost], "o", color=BAR, label=f"minimum: {best_cost:.1f}")
    ax_e.set_xlabel("leave this many minutes before the train")
    ax_e.set_ylabel("expected cost")
    ax_e.set_title(f"(c) 1 per minute early, {cost_late:g} if late")
    ax_e.set_ylim(0, max(at_mean, best_cost) * 1.6)
    ax_e.legend(loc="upper center")

    numbers = {
        "p_a_percent": 100 * float(p[0]),
        "p_b_percent": 100 * float(p[1]),
        "threshold": threshold,
        "cost_check": cost_check,
        "cost_missed": cost_missed,
        "cost_home_a": float(cost_home[0]),
        "cost_home_b": float(cost_home[1]),
        "cost_late": cost_late,
        "cost_per_minute_early": cost_per_minute_early,
        "travel_mean": mean,
        "travel_median": float(
            grid[
                int(
                    torch.searchsorted(
                        torch.cumsum(density, 0) * (grid[1] - grid[0]),
                        torch.tensor(0.5, dtype=torch.float64),
                    )
                )
            ]
        ),
        "best_buffer": best_buffer,
        "best_cost": best_cost,
        "cost_at_mean": at_mean,
        "p_late_best_percent": 100 * p_late_best,
        "p_late_mean_percent": 100 * p_late_mean,
        "p_jam_percent": 100 * TRAVEL_REGIME_PROBS[1],
        "travel_free_minutes": TRAVEL_REGIME_MINUTES[0],
        "travel_jam_minutes": TRAVEL_REGIME_MINUTES[1],
    }
    return fig, numbers


@figure("binary_likelihood", chapter="maximum-likelihood", params={"w0": 1.0, "b0": 0.0})
def binary_likelihood(ctx: FigureContext, w0: float, b0: float):
    """Likelihood of five training points under a logistic model, before and after fitting.

    Left: the fitted model p(y=1 | x) and, for every point, a bar as tall as the probability the
    model gives to the point's observed class; the likelihood is the product of the bars.
    Right: the mean NLL (cross-entropy) as a function of the slope w, with the intercept at its
    maximum likelihood value; its minimum is the maximum likelihood estimate.
    """
    x, y = five_point_example()
    w_hat, b_hat = fit_logistic(x, y)
    before = likelihood_table(
        two_class_logits(
            x, torch.tensor(w0, dtype=torch.float64), torch.tensor(b0, dtype=torch.float64)
        ),
        y,
    )
    after = likelihood_table(
        two_class_logits(
            x, torch.tensor(w_hat, dtype=torch.float64), torch.tensor(b_hat, dtype=torch.float64)
        ),
        y,
    )

    fig, (ax_m, ax_n) = subplots(1, 2, width=10.0, height=3.6)
    xs = torch.linspace(-3.0, 4.4, 371, dtype=torch.float64)
    p1 = torch.sigmoid(w_hat * xs + b_hat)
    ax_m.plot(xs.numpy(), p1.numpy(), color=ROLE["model"], label=r"fitted $p_1(x)$")
    ax_m.plot(
        xs.numpy(),
        torch.sigmoid(w0 * xs + b0).numpy(),
        color=ROLE["truth"],
        ls="--",
        lw=1.2,
        label=rf"start $w={w0:g}, b={b0:g}$",
    )
    colours = [PALETTE[0] if int(c) == 0 else PALETTE[1] for c in y]
    for i, (xi, yi) in enumerate(zip(x.tolist(), y.tolist(), strict=True)):
        p_fit = float(torch.sigmoid(torch.tensor(w_hat * xi + b_hat)))
        bottom, top = (p_fit, 1.0) if yi == 0 else (0.0, p_fit)
        ax_m.plot([xi, xi], [bottom, top], color=BAR, lw=5, alpha=0.55, solid_capstyle="butt")
        ax_m.plot([xi], [yi], "o", color=colours[i], ms=8, mec="white", zorder=5)
        ax_m.annotate(
            f"{after[f'p_obs_{i + 1}']:.2f}",
            (xi, (bottom + top) / 2),
            xytext=(6, 0),
            textcoords="offset points",
            fontsize=8,
            va="center",
        )
    ax_m.set_xlim(-3.0, 4.4)
    ax_m.set_xlabel("feature x")
    ax_m.set_ylabel("P(y = 1 | x)  /  class")
    ax_m.set_title(f"(a) bars: p(observed class); product = {after['likelihood']:.3f}")
    ax_m.legend(loc="center right", fontsize=8)

    ws = torch.linspace(-1.0, 5.0, 241, dtype=torch.float64)
    nll = torch.stack(
        [
            F.cross_entropy(two_class_logits(x, w, torch.tensor(b_hat, dtype=torch.float64)), y)
            for w in ws
        ]
    )
    ax_n.plot(ws.numpy(), nll.numpy(), color=PALETTE[3])
    ax_n.plot([w_hat], [after["nll"]], "o", color=BAR, label=rf"ML estimate $\hat w = {w_hat:.2f}$")
    ax_n.set_xlabel("slope w (intercept at its ML value)")
    ax_n.set_ylabel("mean NLL = cross-entropy (nats)")
    ax_n.set_title("(b) maximising likelihood = minimising NLL")
    ax_n.legend(loc="upper right")

    numbers = {"w_hat": w_hat, "b_hat": b_hat, "w0": w0, "b0": b0}
    numbers.update({f"start_{k}": v for k, v in before.items()})
    numbers.update({f"fit_{k}": v for k, v in after.items()})
    numbers["fit_likelihood_from_nll"] = math.exp(-5 * after["nll"])
    return fig, numbers


@figure(
    "blood_pressure_likelihood",
    chapter="maximum-likelihood",
    params={"age": 22, "sbp": 131, "mu": 111.0, "sigma": 20.0, "bell_ages": [22, 40, 60, 80]},
)
def blood_pressure_likelihood(
    ctx: FigureContext, age: int, sbp: int, mu: float, sigma: float, bell_ages: list[int]
):
    """The linear model of systolic blood pressure vs age with its conditional densities.

    Left: the 33 women, the least-squares line, bell-shaped conditional densities p(y | x) at a
    few ages (drawn sideways) and the likelihood bar of the 22-year-old woman with sbp 131.
    Right: that density alone with the course's rounded values mu = 111, sigma = 20.
    """
    ages, sbps = _blood_pressure()
    intercept, slope = least_squares(ages, sbps)
    residual = sbps - (intercept + slope * ages)
    n = len(sbps)
    sigma_unbiased = float(torch.sqrt((residual**2).sum() / (n - 2)))
    sigma_ml = float(torch.sqrt((residual**2).mean()))
    mu_fit = intercept + slope * age
    f_seed = gaussian_likelihood(float(sbp), mu, sigma)
    f_fit = gaussian_likelihood(float(sbp), mu_fit, sigma_unbiased)
    worst = int(torch.argmax(residual.abs()))  # the least likely woman under the fitted model
    f_worst = gaussian_likelihood(
        float(sbps[worst]), float(intercept + slope * ages[worst]), sigma_unbiased
    )
    odd = int(torch.argmin(ages))  # the published age 9
    keep = torch.arange(n) != odd
    intercept_wo, slope_wo = least_squares(ages[keep], sbps[keep])

    fig, (ax_l, ax_z) = subplots(
        1, 2, width=10.5, height=4.0, gridspec_kw={"width_ratios": [1.5, 1]}
    )
    xs = np.linspace(0, 90, 2)
    ax_l.plot(ages.numpy(), sbps.numpy(), "o", color=PALETTE[0], ms=5, alpha=0.8, label="33 women")
    ax_l.plot(xs, intercept + slope * xs, color=ROLE["truth"], lw=1.5, label=r"$\mu(x) = a + b\,x$")
    width = 9.0  # years of the widest bell
    scale = width / (1.0 / (math.sqrt(2 * math.pi) * sigma_unbiased))
    for a in bell_ages:
        m = intercept + slope * a
        ys = np.linspace(m - 3 * sigma_unbiased, m + 3 * sigma_unbiased, 200)
        dens = np.exp(-0.5 * ((ys - m) / sigma_unbiased) ** 2) / (
            math.sqrt(2 * math.pi) * sigma_unbiased
        )
        ax_l.plot(a + scale * dens, ys, color=PALETTE[3], lw=1.3)
        ax_l.plot([a, a], [ys[0], ys[-1]], color=PALETTE[3], lw=0.6, alpha=0.6)
    ax_l.plot([age, age + scale * f_fit], [sbp, sbp], color=BAR, lw=3.5, solid_capstyle="butt")
    ax_l.plot([age], [sbp], "o", color=BAR, ms=6, zorder=5)
    ax_l.annotate(
        f"{age}-year-old, sbp {sbp}:\nlikelihood = bar length",
        (age + scale * f_fit, sbp),
        xytext=(12, 22),
        textcoords="offset points",
        fontsize=8,
        color=BAR,
        arrowprops={"arrowstyle": "-", "color": BAR, "lw": 0.8},
    )
    ax_l.annotate(
        f"age {int(ages[odd])}\nas published",
        (float(ages[odd]), float(sbps[odd])),
        xytext=(-12, 9),
        textcoords="offset points",
        fontsize=8,
        color=ROLE["truth"],
    )
    ax_l.set_xlim(0, 92)
    ax_l.set_xlabel("age x (years)")
    ax_l.set_ylabel("systolic blood pressure y (mmHg)")
    ax_l.set_title("(a) linear model with conditional densities p(y | x)")
    ax_l.legend(loc="upper left")

    ys = np.linspace(mu - 4 * sigma, mu + 4 * sigma, 400)
    dens = D.Normal(mu, sigma).log_prob(torch.tensor(ys)).exp().numpy()
    ax_z.plot(ys, dens, color=PALETTE[3])
    ax_z.fill_between(ys, dens, color=PALETTE[3], alpha=0.12)
    ax_z.plot([sbp, sbp], [0, f_seed], color=BAR, lw=3.5, solid_capstyle="butt")
    ax_z.axvline(mu, color=ROLE["truth"], ls="--", lw=1.0)
    ax_z.annotate(
        f"f(131) = {f_seed:.6f}",
        (sbp, f_seed),
        xytext=(10, 10),
        textcoords="offset points",
        fontsize=9,
        color=BAR,
    )
    ax_z.set_xlabel("systolic blood pressure y (mmHg)")
    ax_z.set_ylabel("density f(y) (1/mmHg)")
    ax_z.set_title(rf"(b) zoom: $\mu = {mu:g}$, $\sigma = {sigma:g}$")
    ax_z.set_ylim(0, None)

    numbers = {
        "n": n,
        "age": age,
        "sbp": sbp,
        "mu": mu,
        "sigma": sigma,
        "f_131": f_seed,
        "intercept": intercept,
        "slope": slope,
        "mu_22": mu_fit,
        "sigma_resid": sigma_unbiased,
        "sigma_ml": sigma_ml,
        "f_131_fit": f_fit,
        "odd_age": int(ages[odd]),
        "odd_row": odd + 1,
        "odd_sbp": int(sbps[odd]),
        "slope_without_odd": slope_wo,
        "worst_age": int(ages[worst]),
        "worst_sbp": int(sbps[worst]),
        "worst_residual": float(residual[worst]),
        "worst_f": f_worst,
        "worst_over_best_f": f_worst / (1.0 / (math.sqrt(2 * math.pi) * sigma_unbiased)),
        "intercept_without_odd": intercept_wo,
    }
    return fig, numbers


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


@figure("mle_least_squares", chapter="maximum-likelihood", params={"sigma": 20.0})
def mle_least_squares(ctx: FigureContext, sigma: float):
    """Linear regression trained by maximum likelihood (Lightning) vs closed-form least squares.

    Left: contours of the mean Gaussian NLL (fixed sigma) over intercept and slope, the path
    of full-batch gradient descent, and the least-squares point. Right: the data with both
    lines. A second run learns sigma too and reports it next to ``sqrt(RSS / n)``.
    """
    pl.seed_everything(ctx.seed, workers=True, verbose=False)
    epochs = ctx.pick(smoke=40, quick=80, full=200)
    epochs_sigma = ctx.pick(smoke=300, quick=800, full=3000)
    ages, sbps = _blood_pressure()
    intercept_ls, slope_ls = least_squares(ages, sbps)

    data = BloodPressureDataModule(batch_size=33, seed=ctx.seed)
    recorder = _LinePath(data.age_mean, data.age_std)
    model, data = fit_line_by_ml(ctx, sigma=sigma, epochs=epochs, callbacks=[recorder])
    intercept_ml, slope_ml = line_in_data_units(model.body, data.age_mean, data.age_std)
    learned, _ = fit_line_by_ml(ctx, sigma=None, epochs=epochs_sigma)
    residual = sbps - (intercept_ls + slope_ls * ages)
    sigma_closed = float(torch.sqrt((residual**2).mean()))

    def mean_nll(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        mu = a[..., None] + b[..., None] * ages
        return -D.Normal(mu, sigma).log_prob(sbps).mean(-1)

    path = np.array(recorder.path)
    fig, (ax_c, ax_l) = subplots(1, 2, width=10.5, height=4.0)
    a_lo, a_hi = min(path[:, 0].min(), intercept_ls) - 25, max(path[:, 0].max(), intercept_ls) + 25
    b_lo, b_hi = min(path[:, 1].min(), slope_ls) - 0.6, max(path[:, 1].max(), slope_ls) + 0.6
    A, B = torch.meshgrid(
        torch.linspace(a_lo, a_hi, 200, dtype=torch.float64),
        torch.linspace(b_lo, b_hi, 200, dtype=torch.float64),
        indexing="xy",
    )
    Z = mean_nll(A, B)
    levels = float(Z.min()) + np.geomspace(0.02, float(Z.max() - Z.min()), 14)
    cs = ax_c.contour(
        A.numpy(), B.numpy(), Z.numpy(), levels=levels, colors=PALETTE[6], linewidths=0.8
    )
    ax_c.clabel(cs, cs.levels[::3], fmt="%.1f", fontsize=7)
    ax_c.plot(
        path[:, 0],
        path[:, 1],
        ".-",
        color=ROLE["model"],
        ms=3,
        lw=1.0,
        label="SGD on the NLL (Lightning)",
    )
    ax_c.plot(path[0, 0], path[0, 1], "o", color=ROLE["model"], ms=6)
    ax_c.plot(
        [intercept_ls], [slope_ls], "*", color=BAR, ms=14, label="least squares (closed form)"
    )
    ax_c.set_xlabel("intercept a (mmHg)")
    ax_c.set_ylabel("slope b (mmHg / year)")
    ax_c.set_title(rf"(a) mean NLL with $\sigma = {sigma:g}$ fixed")
    ax_c.legend(loc="upper left", fontsize=8)

    xs = np.linspace(0, 90, 2)
    ax_l.plot(ages.numpy(), sbps.numpy(), "o", color=PALETTE[0], ms=5, alpha=0.7, label="33 women")
    ax_l.plot(xs, intercept_ls + slope_ls * xs, color=BAR, lw=4, alpha=0.5, label="least squares")
    ax_l.plot(
        xs,
        intercept_ml + slope_ml * xs,
        color=ROLE["model"],
        lw=1.5,
        ls="--",
        label="maximum likelihood",
    )
    ax_l.set_xlabel("age x (years)")
    ax_l.set_ylabel("systolic blood pressure y (mmHg)")
    ax_l.set_title(f"(b) the two lines after {epochs} epochs")
    ax_l.legend(loc="upper left")

    span = torch.linspace(float(ages.min()), float(ages.max()), 100, dtype=torch.float64)
    line_diff = (intercept_ml - intercept_ls) + (slope_ml - slope_ls) * span
    learned_sigma = learned.head.sigma
    numbers = {
        "sigma": sigma,
        "epochs": epochs,
        "lr": LR_OVER_SIGMA2 * sigma**2,
        "lr_over_sigma2": LR_OVER_SIGMA2,
        "two_sigma2": 2 * sigma**2,
        "epochs_sigma": epochs_sigma,
        "intercept_ls": intercept_ls,
        "slope_ls": slope_ls,
        "intercept_ml": intercept_ml,
        "slope_ml": slope_ml,
        "max_line_diff": float(line_diff.abs().max()),
        "nll_ls": float(mean_nll(torch.tensor(intercept_ls), torch.tensor(slope_ls))),
        "nll_start": float(mean_nll(torch.tensor(path[0, 0]), torch.tensor(path[0, 1]))),
        "sigma_learned": float(learned_sigma.detach())
        if learned_sigma is not None
        else float("nan"),
        "sigma_closed": sigma_closed,
        "learned_intercept": line_in_data_units(learned.body, data.age_mean, data.age_std)[0],
        "learned_slope": line_in_data_units(learned.body, data.age_mean, data.age_std)[1],
    }
    return fig, numbers
