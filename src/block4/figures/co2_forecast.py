"""Figure of the chapter "Maximum likelihood": a forecast as p(y | x) for every time x.

The seed shows global-warming forecasts, a probability distribution of the temperature for
every future year from several models. Our data are the measurable driver instead: the
weekly CO2 concentration at Mauna Loa (`block4.data.load_co2`). Four models of
p(ppm | time), all fitted by maximum likelihood on the weeks up to 1990, forecast 1991-2001
(held out) and a few years beyond:

- a linear trend plus a yearly cycle with Gaussian noise (closed-form least squares and the
  maximum-likelihood sigma, as in the blood-pressure example),
- the same with a quadratic trend,
- a small MLP with a heteroscedastic Gaussian head, sigma(x) from the network,
- a deep ensemble of such MLPs (their equal-weight mixture).

The MLPs train as the members of one stack: ``n_ensembles`` ensembles of ``members`` each.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import distributions as D

from block4.calibration import central_interval, interval_coverage
from block4.data import load_co2
from block4.figures.registry import FigureContext, figure
from block4.probabilistic_runs import MemberData, fit_members, gaussian_members
from block4.style import PALETTE, subplots
from block4.training import spread

MODELS = {
    "linear": "linear trend + yearly cycle",
    "quadratic": "quadratic trend + yearly cycle",
    "mlp": "MLP with σ(x)",
    "ensemble": "deep ensemble of MLPs",
}
#: Centre and scale of the time axis (years) for the models' inputs.
T0, T_SCALE = 1975.0, 10.0


def _features(year: torch.Tensor) -> torch.Tensor:
    """Inputs of every model: scaled time and the yearly cycle ``sin, cos(2 pi year)``."""
    t = (year - T0) / T_SCALE
    phase = 2 * math.pi * year
    return torch.stack([t, torch.sin(phase), torch.cos(phase)], dim=1)


def _polynomial(x: torch.Tensor, degree: int) -> torch.Tensor:
    columns = [torch.ones_like(x[:, 0])] + [x[:, 0] ** d for d in range(1, degree + 1)]
    return torch.stack(columns + [x[:, 1], x[:, 2]], dim=1)


def _trend_fit(x: torch.Tensor, y: torch.Tensor, x_eval: torch.Tensor, degree: int):
    """Least squares of ``y`` on a polynomial trend and the cycle: the Gaussian ML mean;
    sigma is the ML estimate, the root mean squared residual. ``(mean, sigma)`` at x_eval."""
    coef = torch.linalg.lstsq(_polynomial(x, degree), y[:, None]).solution[:, 0]
    sigma = (_polynomial(x, degree) @ coef - y).pow(2).mean().sqrt()
    mean = _polynomial(x_eval, degree) @ coef
    return mean, sigma.expand_as(mean)


def co2_runs(
    ctx: FigureContext, train_until: float, horizon: float, n_ensembles: int, members: int
) -> dict[str, Any]:
    """Fit the four models on the weeks before ``train_until``; predict every week of the
    record and a grid up to ``horizon``. Returns ppm means and sigmas (MLPs: ``[E, n]``)."""
    year, ppm = load_co2(torch.float64)
    train = year < train_until
    y_mean, y_std = float(ppm[train].mean()), float(ppm[train].std())
    x_all = _features(year)
    grid_year = torch.arange(float(year[0]), horizon, 1 / 24, dtype=torch.float64)  # twice a month
    x_grid = _features(grid_year)
    y_s = (ppm[train] - y_mean) / y_std
    out: dict[str, Any] = {"year": year, "ppm": ppm, "grid": grid_year, "train_until": train_until}
    for name, degree in (("linear", 1), ("quadratic", 2)):
        mean, sigma = _trend_fit(x_all[train], y_s, torch.cat([x_all, x_grid]), degree)
        out[name] = {"mean": mean * y_std + y_mean, "sigma": sigma * y_std}
    steps = ctx.pick(smoke=10, quick=60, full=400)
    total = n_ensembles * members
    model = gaussian_members(
        total, ctx.seed, heteroscedastic=True, in_features=3, depth=2, width=32, lr=1e-2
    )
    x_tr = x_all[train].float()
    batches = MemberData(
        x_tr.expand(total, -1, -1), y_s.float().expand(total, -1), 256, seed=ctx.seed, passes=10
    )
    fit_members(ctx, model, batches, max(1, steps // (10 * batches.batches_per_pass())))
    dist = model.member_dists(torch.cat([x_all, x_grid]).float())
    out["members"] = {
        "mean": dist.mean.double() * y_std + y_mean,
        "sigma": dist.stddev.double() * y_std,
        "per_ensemble": members,
    }
    out["diverged"] = [k for k, ok in enumerate(model.member_active.tolist()) if not ok]
    return out


def _predictions(data: dict[str, Any]) -> dict[str, list[D.Distribution]]:
    """Per model, one predictive distribution per seed over ``year`` followed by ``grid``."""
    m = data["members"]["per_ensemble"]
    mean, sigma = data["members"]["mean"], data["members"]["sigma"]
    n_ens = mean.shape[0] // m
    ensembles = []
    for j in range(n_ens):
        block = slice(j * m, (j + 1) * m)
        weights = D.Categorical(logits=torch.zeros(mean.shape[1], m, dtype=mean.dtype))
        ensembles.append(D.MixtureSameFamily(weights, D.Normal(mean[block].T, sigma[block].T)))
    return {
        "linear": [D.Normal(data["linear"]["mean"], data["linear"]["sigma"])],
        "quadratic": [D.Normal(data["quadratic"]["mean"], data["quadratic"]["sigma"])],
        "mlp": [D.Normal(mean[j * m], sigma[j * m]) for j in range(n_ens)],
        "ensemble": ensembles,
    }


def _take(dist: D.Distribution, index: torch.Tensor) -> D.Distribution:
    if isinstance(dist, D.Normal):
        return D.Normal(dist.loc[index], dist.scale[index])
    comp = dist.component_distribution
    return D.MixtureSameFamily(
        D.Categorical(logits=dist.mixture_distribution.logits[index]),
        D.Normal(comp.loc[index], comp.scale[index]),
    )


def _band_numbers(
    name: str, dists: list[D.Distribution], on_grid: torch.Tensor, grid: torch.Tensor, level: float
) -> dict[str, Any]:
    """Width of the central ``level`` band in mid-1985 (inside the data) and mid-2001 (ten
    years past them): the first seed's widths, and over all seeds how many bands widen and
    their mean growth (width 2001 / width 1985)."""
    at = {year: int((grid - year).abs().argmin()) for year in (1985.5, 2001.5)}
    widths = []
    for dist in dists:
        lo, hi = central_interval(_take(dist, on_grid), level)
        widths.append([float((hi - lo)[at[year]]) for year in (1985.5, 2001.5)])
    growth = [w2001 / w1985 for w1985, w2001 in widths]
    return {
        f"{name}_band_width_1985": widths[0][0],
        f"{name}_band_width_2001": widths[0][1],
        f"{name}_band_widens": sum(g > 1 for g in growth),
        f"{name}_band_growth_mean": sum(growth) / len(growth),
    }


@figure(
    "co2_forecast",
    chapter="maximum-likelihood",
    params={
        "train_until": 1991.0,
        "horizon": 2007.0,
        "level": 0.9,
        "members": 5,
        "n_ensembles": {"smoke": 1, "quick": 1, "full": 5},
    },
)
def co2_forecast(
    ctx: FigureContext,
    train_until: float,
    horizon: float,
    level: float,
    members: int,
    n_ensembles: dict[str, int],
):
    """Four models of p(CO2 | time) fitted up to 1990, each drawn as its mean and central
    ``level`` band over the whole record and the forecast; the held-out weeks 1991-2001 in
    black. Numbers: each model's test NLL and coverage on the held-out weeks (MLPs: mean and
    sd over seeds), its band's width in 1985 and 2001 (first seed), how many seeds'
    bands widen from 1985 to 2001 (see `_band_numbers`), and ``ensemble_nll_better``: in
    how many seeds the ensemble's NLL is below that of the single network (its first
    member)."""
    data = ctx.compute(
        co2_runs, train_until=train_until, horizon=horizon,
        n_ensembles=ctx.pick(**n_ensembles), members=members,
    )  # fmt: skip
    year, ppm, grid = data["year"], data["ppm"], data["grid"]
    n = len(year)
    test = year >= train_until
    preds = _predictions(data)
    on_grid = torch.arange(n, n + len(grid))
    fig, axes = subplots(2, 2, width=6.8, height=5.6, sharex=True, sharey=True)
    numbers: dict[str, Any] = {
        "train_until": train_until,
        "n_train": int((~test).sum()),
        "n_test": int(test.sum()),
        "level_percent": 100 * level,
        # calendar years of the first and the last week (decimal years: 2001.99 is in 2001)
        "first_year": math.floor(float(year[0])),
        "last_year": math.floor(float(year[-1])),
        "n_seeds": len(preds["mlp"]),
        "members": members,
        "diverged_members": len(data["diverged"]),
    }
    nlls = {}
    for i, (ax, (name, dists)) in enumerate(zip(axes.flat, preds.items(), strict=True)):
        held_out = [_take(d, test.nonzero()[:, 0]) for d in dists]
        nll = nlls[name] = torch.tensor([float(-d.log_prob(ppm[test]).mean()) for d in held_out])
        cov = (
            torch.tensor([interval_coverage(d, ppm[test], [level])[level] for d in held_out]) * 100
        )
        for key, v in (("nll", nll), ("coverage", cov)):
            numbers.update(spread(v, f"{name}_{key}"))
        first = _take(dists[0], on_grid)
        lo, hi = central_interval(first, level)
        colour = PALETTE[i]
        ax.axvspan(train_until, float(grid[-1]), color=PALETTE[6], alpha=0.1, lw=0)
        ax.plot(year[~test], ppm[~test], ".", color=PALETTE[6], ms=1.2, alpha=0.6, rasterized=True)
        ax.plot(year[test], ppm[test], ".", color="black", ms=1.2, rasterized=True)
        ax.fill_between(grid, lo, hi, color=colour, alpha=0.35, lw=0, rasterized=True)
        ax.plot(grid, first.mean, color=colour, lw=0.8)
        ax.set_title(f"({'abcd'[i]}) {MODELS[name]}")
        ax.text(
            0.03, 0.97, f"held out: NLL {numbers[f'{name}_nll_mean']:.2f}\n"
            f"{100 * level:g} % band covers {numbers[f'{name}_coverage_mean']:.0f} %",
            transform=ax.transAxes, va="top", ha="left",
        )  # fmt: skip
        numbers.update(_band_numbers(name, dists, on_grid, grid, level))
    for ax in axes[1]:
        ax.set_xlabel("year")
    for ax in axes[:, 0]:
        ax.set_ylabel("CO₂ (ppm)")
    axes[0, 0].set_xlim(1957, float(grid[-1]))
    # paired by seed: each ensemble against its own first member
    numbers["ensemble_nll_better"] = int((nlls["ensemble"] < nlls["mlp"]).sum())
    return fig, numbers
