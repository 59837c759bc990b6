"""Figures of the chapter "Maximum likelihood".

Every number the chapter quotes is computed here and returned in the figure's numbers dict:
the decision under cost made with a predicted distribution, the likelihood of five training
points of a binary classifier (checked against ``torch.nn.functional.cross_entropy``), the
Gaussian likelihood of the 22-year-old woman's blood pressure, and linear regression fitted by
maximum likelihood with Lightning next to the closed-form least-squares solution.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.ticker import FuncFormatter, NullFormatter
from torch import distributions as D

from block4.data import load_blood_pressure
from block4.figures.registry import FigureContext, figure
from block4.heads import least_squares
from block4.style import PALETTE, ROLE, subplots

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


def _blood_pressure() -> tuple[torch.Tensor, torch.Tensor]:
    return load_blood_pressure(torch.float64)


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def _travel_plan(cost_per_minute_early: float, cost_late: float) -> dict[str, Any]:
    """The travel-time density on a grid and the expected cost of every departure."""
    duration = travel_time_distribution()
    grid = torch.linspace(0.01, 150.0, 15000, dtype=torch.float64)
    step = grid[1] - grid[0]
    density = duration.log_prob(grid).exp()
    mean = float((grid * density).sum() * step)
    buffers = torch.linspace(20.0, 90.0, 701, dtype=torch.float64)
    costs = {"cost_per_minute_early": cost_per_minute_early, "cost_late": cost_late, "grid": grid}
    curve = expected_cost(buffers, duration, **costs)
    best = int(torch.argmin(curve))
    at_mean = float(expected_cost(torch.tensor([mean], dtype=torch.float64), duration, **costs)[0])
    median_index = int(
        torch.searchsorted(torch.cumsum(density, 0) * step, torch.tensor(0.5).double())
    )
    return {
        "grid": grid,
        "density": density,
        "buffers": buffers,
        "costs": curve,
        "travel_mean": mean,
        "travel_median": float(grid[median_index]),
        "best_buffer": float(buffers[best]),
        "best_cost": float(curve[best]),
        "cost_at_mean": at_mean,
        "p_late_best_percent": 100 * float(1.0 - duration.cdf(buffers[best])),
        "p_late_mean_percent": 100 * float(1.0 - duration.cdf(torch.tensor(mean).double())),
    }


def _draw_cancer(ax: Any, p: torch.Tensor, threshold: float) -> None:
    ax.bar(["patient A", "patient B"], p.numpy(), color=[PALETTE[4], PALETTE[2]], width=0.5)
    ax.set_yscale("log")
    ax.set_ylim(1e-7, 30)
    # plain tick labels: mathtext exponents render at 70 % of the font size
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.axhline(0.5, color=ROLE["truth"], ls="--", lw=1.2)
    ax.axhline(threshold, color=PALETTE[0], ls=":", lw=1.5)
    ax.text(1.5, 0.6, "0.5: both 'no'", ha="right", va="bottom")
    ax.text(1.5, threshold * 1.3, f"check if p > {threshold:g}", ha="right", va="bottom",
            color=PALETTE[0])  # fmt: skip
    for i, value in enumerate(p.tolist()):
        ax.text(i, value * 1.4, f"{100 * value:g} %", ha="center", va="bottom")
    ax.set_ylabel("predicted P(cancer)")
    ax.set_title("(a) cancer from tissue")


def _draw_travel(ax_t: Any, ax_e: Any, plan: dict[str, Any], cost_late: float) -> None:
    coarse = slice(None, None, 25)  # 600 points are plenty for the drawing
    grid, density = plan["grid"][coarse].numpy(), plan["density"][coarse].numpy()
    mean, best = plan["travel_mean"], plan["best_buffer"]
    ax_t.plot(grid, density, color=ROLE["model"])
    ax_t.fill_between(grid, density, color=ROLE["model"], alpha=0.15)
    ax_t.axvline(mean, color=ROLE["truth"], ls="--", lw=1.2)
    ax_t.axvline(best, color=BAR, lw=1.5)
    top = float(density.max())
    ax_t.text(mean - 1, top, f"mean\n{mean:.1f}", ha="right", va="top", color=ROLE["truth"])
    ax_t.text(best + 1, top, f"best\n{best:.1f}", ha="left", va="top", color=BAR)
    ax_t.set_xlim(15, 85)
    ax_t.set_xlabel("travel time (minutes)")
    ax_t.set_ylabel("density (1/min)")
    ax_t.set_title("(b) predicted travel time")

    ax_e.plot(plan["buffers"].numpy(), plan["costs"].numpy(), color=PALETTE[3])
    at_mean, best_cost = plan["cost_at_mean"], plan["best_cost"]
    ax_e.plot(
        [mean], [at_mean], "o", color=ROLE["truth"], label=f"leave at the mean: {at_mean:.1f}"
    )
    ax_e.plot([best], [best_cost], "o", color=BAR, label=f"minimum: {best_cost:.1f}")
    ax_e.set_xlabel("leave this many minutes before the train")
    ax_e.set_ylabel("expected cost")
    ax_e.set_title(f"(c) 1 per minute early, {cost_late:g} if late")
    ax_e.set_ylim(0, max(at_mean, best_cost) * 1.6)
    ax_e.legend(loc="upper center")


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

    (a) The cancer example. A deterministic classifier (threshold 0.5) says "no cancer" to
    both patients; with probabilities and costs the doctor checks patient A, not B.
    (b, c) Leave early enough for a train. With the predicted travel-time distribution the
    departure that minimises the expected cost is found on a grid; planning with the mean
    travel time alone misses the train on every jam day.
    """
    fig, _ = subplots(1, 1, width=6.8, height=5.8)
    fig.clear()
    grid = fig.add_gridspec(2, 2)
    ax_c, ax_t = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    ax_e = fig.add_subplot(grid[1, :])
    # Cancer: the decision "check" costs cost_check; "send home" costs p * cost_missed.
    p = torch.tensor(p_cancer, dtype=torch.float64)
    threshold = cost_check / cost_missed
    _draw_cancer(ax_c, p, threshold)
    plan = _travel_plan(cost_per_minute_early, cost_late)
    _draw_travel(ax_t, ax_e, plan, cost_late)
    numbers = {
        "p_a_percent": 100 * float(p[0]),
        "p_b_percent": 100 * float(p[1]),
        "threshold": threshold,
        "cost_check": cost_check,
        "cost_missed": cost_missed,
        "cost_home_a": float(p[0] * cost_missed),
        "cost_home_b": float(p[1] * cost_missed),
        "cost_late": cost_late,
        "cost_per_minute_early": cost_per_minute_early,
        "p_jam_percent": 100 * TRAVEL_REGIME_PROBS[1],
        "travel_free_minutes": TRAVEL_REGIME_MINUTES[0],
        "travel_jam_minutes": TRAVEL_REGIME_MINUTES[1],
    }
    numbers.update({k: v for k, v in plan.items() if isinstance(v, float)})
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

    fig, (ax_m, ax_n) = subplots(2, 1, width=6.8, height=6.2)
    xs = torch.linspace(-3.0, 4.4, 371, dtype=torch.float64)
    p1 = torch.sigmoid(w_hat * xs + b_hat)
    ax_m.plot(xs.numpy(), p1.numpy(), color=ROLE["model"], label="fitted p₁(x)")
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
            va="center",
        )
    ax_m.set_xlim(-3.0, 4.4)
    ax_m.set_xlabel("feature x")
    ax_m.set_ylabel("P(y = 1 | x)  /  class")
    ax_m.set_title(f"(a) bars: p(observed class); their product L = {after['likelihood']:.3f}")
    ax_m.legend(loc="center right")

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
    ax_n.set_ylabel("mean NLL (nats)")
    ax_n.set_title("(b) maximising likelihood = minimising NLL = cross-entropy")
    ax_n.legend(loc="upper right")

    numbers = {"w_hat": w_hat, "b_hat": b_hat, "w0": w0, "b0": b0}
    numbers.update({f"start_{k}": v for k, v in before.items()})
    numbers.update({f"fit_{k}": v for k, v in after.items()})
    numbers["fit_likelihood_from_nll"] = math.exp(-5 * after["nll"])
    return fig, numbers


def _draw_bells(
    ax: Any,
    ages: torch.Tensor,
    sbps: torch.Tensor,
    line: dict[str, float],
    bell_ages: list[int],
    woman: tuple[int, int, float],
    odd: int,
) -> None:
    """The data, the line and sideways bells p(y | x), and the likelihood bar of one woman."""
    intercept, slope, sd = line["intercept"], line["slope"], line["sigma"]
    age, sbp, f_fit = woman
    xs = np.linspace(0, 90, 2)
    ax.plot(ages.numpy(), sbps.numpy(), "o", color=PALETTE[0], ms=5, alpha=0.8, label="33 women")
    ax.plot(xs, intercept + slope * xs, color=ROLE["truth"], lw=1.5, label=r"$\mu(x) = a + b\,x$")
    scale = 9.0 * math.sqrt(2 * math.pi) * sd  # the widest bell is 9 years wide
    for a in bell_ages:
        m = intercept + slope * a
        ys = np.linspace(m - 3 * sd, m + 3 * sd, 200)
        dens = np.exp(-0.5 * ((ys - m) / sd) ** 2) / (math.sqrt(2 * math.pi) * sd)
        ax.plot(a + scale * dens, ys, color=PALETTE[3], lw=1.3)
        ax.plot([a, a], [ys[0], ys[-1]], color=PALETTE[3], lw=0.6, alpha=0.6)
    ax.plot([age, age + scale * f_fit], [sbp, sbp], color=BAR, lw=3.5, solid_capstyle="butt")
    ax.plot([age], [sbp], "o", color=BAR, ms=6, zorder=5)
    ax.annotate(
        f"{age}-year-old, sbp {sbp}:\nlikelihood = bar length", (age + scale * f_fit, sbp),
        xytext=(12, 22), textcoords="offset points", color=BAR,
        arrowprops={"arrowstyle": "-", "color": BAR, "lw": 0.8},
    )  # fmt: skip
    ax.annotate(
        f"age {int(ages[odd])}\nas published", (float(ages[odd]), float(sbps[odd])),
        xytext=(-12, 9), textcoords="offset points", color=ROLE["truth"],
    )  # fmt: skip
    ax.set_xlim(0, 92)
    ax.set_xlabel("age x (years)")
    ax.set_ylabel("blood pressure y (mmHg)")
    ax.set_title("(a) linear model with conditional densities p(y | x)")
    ax.legend(loc="upper left")


def _draw_zoom(ax: Any, mu: float, sigma: float, sbp: int, f_seed: float) -> None:
    ys = np.linspace(mu - 4 * sigma, mu + 4 * sigma, 400)
    dens = D.Normal(mu, sigma).log_prob(torch.tensor(ys)).exp().numpy()
    ax.plot(ys, dens, color=PALETTE[3])
    ax.fill_between(ys, dens, color=PALETTE[3], alpha=0.12)
    ax.plot([sbp, sbp], [0, f_seed], color=BAR, lw=3.5, solid_capstyle="butt")
    ax.axvline(mu, color=ROLE["truth"], ls="--", lw=1.0)
    ax.annotate(
        f"f({sbp}) = {f_seed:.6f}", (sbp, f_seed), xytext=(10, 10), textcoords="offset points",
        color=BAR,
    )  # fmt: skip
    ax.set_xlabel("systolic blood pressure y (mmHg)")
    ax.set_ylabel("density f(y) (1/mmHg)")
    ax.set_title(rf"(b) zoom: $\mu = {mu:g}$, $\sigma = {sigma:g}$")
    ax.set_ylim(0, None)


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
        2, 1, width=6.8, height=7.0, gridspec_kw={"height_ratios": [1.4, 1]}
    )
    line = {"intercept": intercept, "slope": slope, "sigma": sigma_unbiased}
    _draw_bells(ax_l, ages, sbps, line, bell_ages, (age, sbp, f_fit), odd)
    _draw_zoom(ax_z, mu, sigma, sbp, f_seed)

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
