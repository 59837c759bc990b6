"""Figure of the chapter "Probabilistic heads": deep ensembles (Lakshminarayanan et al., 2017).

E heteroscedastic Gaussian MLPs, trained as the members of one stack on the same data
(full-batch steps: they differ by their initial weights only), predict the equal-weight
mixture of their normals. Its variance splits into the mean of the members' variances (aleatoric: the noise every
member sees) and the variance of their means (epistemic: where they disagree). On data with
a gap inside the input range and nothing beyond it, the ensemble widens where there are no
data; a single member does not. Several ensembles (seeds) give the spread of every number.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import distributions as D

from block4.calibration import central_interval, interval_coverage
from block4.data import GAP_TRAIN_RANGES, gap_mean, gap_sigma, make_gap_data
from block4.figures.registry import FigureContext, figure
from block4.modules import aleatoric_variance, epistemic_variance
from block4.probabilistic_runs import MemberData, fit_members, gaussian_members
from block4.style import PALETTE, subplots
from block4.training import spread

SINGLE, ENSEMBLE = PALETTE[1], PALETTE[0]
#: Where the test points of each region lie: the training ranges, the gap, beyond.
REGIONS: dict[str, tuple[tuple[float, float], ...]] = {
    "data": GAP_TRAIN_RANGES,
    "gap": ((-1.0, 1.0),),
    "beyond": ((-4.5, -3.0), (3.0, 4.5)),
}


def ensemble_runs(ctx: FigureContext, n_ensembles: int, members: int) -> dict[str, Any]:
    """``n_ensembles * members`` heteroscedastic Gaussian MLPs (2 hidden ReLU layers of 50)
    as one stack, all on the same gap data; member ``j * members + k`` is member ``k`` of
    ensemble ``j``. Returns each member's mean and sigma on a grid and on the test points
    of every region (`REGIONS`)."""
    n = ctx.pick(smoke=200, quick=300, full=600)
    steps = ctx.pick(smoke=20, quick=60, full=460)  # full-batch Adam steps
    total = n_ensembles * members
    x, y = make_gap_data(n, ctx.seed)
    model = gaussian_members(
        total, ctx.seed, heteroscedastic=True, depth=2, width=50, activation="relu", lr=1e-2
    )
    # full-batch steps: the members differ by their initial weights only, as in the paper
    batches = MemberData(x.expand(total, -1, -1), y.expand(total, -1), n, passes=20)
    fit_members(ctx, model, batches, steps // 20)
    grid = torch.linspace(-4.5, 4.5, 361)
    out: dict[str, Any] = {"x_train": x[:, 0], "y_train": y, "grid": grid, "members": members}
    out["grid_pred"] = _mean_sigma(model, grid[:, None])
    for region, ranges in REGIONS.items():
        xt, yt = make_gap_data(ctx.pick(smoke=200, quick=300, full=2000), ctx.seed + 1, ranges)
        out[region] = {"x": xt[:, 0], "y": yt, **_mean_sigma(model, xt)}
    out["diverged"] = [k for k, ok in enumerate(model.member_active.tolist()) if not ok]
    return out


def _mean_sigma(model: Any, x: torch.Tensor) -> dict[str, torch.Tensor]:
    dist = model.member_dists(x)
    return {"mean": dist.mean.clone(), "sigma": dist.stddev.clone()}


# --8<-- [start:ensemble]
def ensemble_mixture(mean: torch.Tensor, sigma: torch.Tensor) -> D.MixtureSameFamily:
    """The ensemble's predictive distribution: the equal-weight mixture of the members'
    normals (``mean``, ``sigma``: ``[E, n]``), as ``ProbabilisticRegressor.predict_dist``
    returns it for a stack."""
    members = D.Normal(mean.T, sigma.T)  # mixture over the last dimension
    weights = D.Categorical(logits=torch.zeros(mean.shape[1], mean.shape[0]))
    return D.MixtureSameFamily(weights, members)


def variance_split(mean: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(aleatoric, epistemic)`` variance of the mixture: the mean of the members'
    variances and the variance of their means; their sum is the mixture's variance."""
    members = D.Normal(mean, sigma)
    return aleatoric_variance(members), epistemic_variance(members)


# --8<-- [end:ensemble]


def _region_scores(data: dict[str, Any], level: float) -> dict[str, torch.Tensor]:
    """Per region: ``[J]`` coverage and NLL of each ensemble and of its first member alone."""
    m = data["members"]
    out = {}
    for region in REGIONS:
        part = data[region]
        mean, sigma, y = part["mean"], part["sigma"], part["y"]
        ens_cov, ens_nll, one_cov, one_nll = [], [], [], []
        for j in range(mean.shape[0] // m):
            block = slice(j * m, (j + 1) * m)
            mix = ensemble_mixture(mean[block], sigma[block])
            one = D.Normal(mean[j * m], sigma[j * m])
            ens_cov.append(interval_coverage(mix, y, [level])[level])
            one_cov.append(interval_coverage(one, y, [level])[level])
            ens_nll.append(float(-mix.log_prob(y).mean()))
            one_nll.append(float(-one.log_prob(y).mean()))
        out[region] = {
            "ensemble_cov": torch.tensor(ens_cov) * 100,
            "single_cov": torch.tensor(one_cov) * 100,
            "ensemble_nll": torch.tensor(ens_nll),
            "single_nll": torch.tensor(one_nll),
        }
    return out


def _shade_regions(ax: Any) -> None:
    for lo, hi in REGIONS["gap"] + REGIONS["beyond"]:
        ax.axvspan(lo, hi, color=PALETTE[6], alpha=0.13, lw=0)


@figure(
    "deep_ensemble",
    chapter="probabilistic-heads",
    params={"members": 5, "level": 0.9, "n_ensembles": {"smoke": 1, "quick": 1, "full": 5}},
)
def deep_ensemble(ctx: FigureContext, members: int, level: float, n_ensembles: dict[str, int]):
    """A single heteroscedastic network vs a deep ensemble, on data with a gap.

    (a) One member: its mean and central ``level`` interval. (b) The ensemble of ``members``:
    the mixture's interval and the members' means. (c) The ensemble's standard deviation
    split into aleatoric and epistemic parts. Grey: the gap and the region beyond the data.
    Drawn: the first ensemble; the numbers are mean and sd over all ensembles
    (``<region>_<ensemble|single>_<cov|nll>_<mean|sd|min|max>``), and
    ``<region>_ensemble_nll_better``: in how many ensembles the mixture's NLL is lower than
    its first member's (``<region>``: ``data``, ``gap``, ``beyond``).
    """
    data = ctx.compute(ensemble_runs, n_ensembles=ctx.pick(**n_ensembles), members=members)
    grid = data["grid"]
    mean, sigma = data["grid_pred"]["mean"][:members], data["grid_pred"]["sigma"][:members]
    mix = ensemble_mixture(mean, sigma)
    alea, epis = variance_split(mean, sigma)
    fig, axes = subplots(3, 1, width=6.8, height=8.2, sharex=True)
    truth = gap_mean(grid)
    one = D.Normal(mean[0], sigma[0])
    for ax, dist, colour, title in (
        (axes[0], one, SINGLE, f"(a) one network: mean and {100 * level:g} % interval"),
        (
            axes[1],
            mix,
            ENSEMBLE,
            f"(b) ensemble of {members}: mixture's {100 * level:g} % interval",
        ),
    ):
        _shade_regions(ax)
        lo, hi = central_interval(dist, level)
        ax.fill_between(
            grid, lo, hi, color=colour, alpha=0.3, lw=0, label=f"{100 * level:g} % interval"
        )
        ax.plot(data["x_train"], data["y_train"], ".", color=PALETTE[6], ms=2.5, alpha=0.5,
                rasterized=True, label="training data")  # fmt: skip
        ax.plot(grid, truth, color="black", ls="--", lw=1.1, label="true mean")
        ax.plot(grid, dist.mean, color=colour, lw=2, label="predicted mean")
        ax.set_ylim(-4.5, 4.5)
        ax.set_ylabel("target y")
        ax.set_title(title)
    for k in range(members):
        axes[1].plot(grid, mean[k], color=ENSEMBLE, lw=0.7, alpha=0.6)
    axes[0].legend(loc="upper left", ncol=2)
    axes[0].text(0, -4.2, "gap", ha="center", va="bottom")
    for x_text in (-3.75, 3.75):
        axes[0].text(x_text, -4.2, "beyond", ha="center", va="bottom")
    _shade_regions(axes[2])
    axes[2].plot(grid, alea.sqrt(), color=PALETTE[2], lw=2, label="aleatoric: √mean σ²ₖ")
    axes[2].plot(grid, epis.sqrt(), color=PALETTE[3], lw=2, label="epistemic: √var μₖ")
    axes[2].plot(grid, gap_sigma(grid), color="black", ls="--", lw=1.1, label="true noise σ")
    axes[2].set_xlabel("input x")
    axes[2].set_ylabel("standard deviation")
    axes[2].set_title("(c) the ensemble's uncertainty, split in two")
    axes[2].legend(loc="upper center")
    axes[2].set_ylim(0, None)

    scores = _region_scores(data, level)
    numbers: dict[str, Any] = {
        "members": members,
        "n_ensembles": ctx.pick(**n_ensembles),
        "level_percent": 100 * level,
        "n_train": len(data["y_train"]),
        "diverged_members": len(data["diverged"]),
    }
    for region, values in scores.items():
        for key, v in values.items():
            numbers.update(spread(v, f"{region}_{key}"))
        # paired: in how many ensembles the mixture scores better than its first member
        numbers[f"{region}_ensemble_nll_better"] = int(
            (values["ensemble_nll"] < values["single_nll"]).sum()
        )
    numbers.update(_uncertainty_numbers(grid, data["grid_pred"], members))
    return fig, numbers


def _uncertainty_numbers(
    grid: torch.Tensor, grid_pred: dict[str, torch.Tensor], members: int
) -> dict[str, Any]:
    """The epistemic standard deviation averaged over the grid points on the data, in the
    gap and beyond: of the first ensemble (the one drawn), mean and sd over all ensembles,
    and in how many ensembles it is larger in the gap and beyond than on the data; the
    first ensemble's aleatoric standard deviation on the data."""
    regions = {
        "data": (grid.abs() >= 1.0) & (grid.abs() <= 3.0),
        "gap": grid.abs() < 1.0,
        "beyond": grid.abs() > 3.0,
    }
    mean, sigma = grid_pred["mean"], grid_pred["sigma"]
    per: dict[str, list[float]] = {region: [] for region in regions}
    aleatoric = []
    for j in range(mean.shape[0] // members):
        block = slice(j * members, (j + 1) * members)
        alea, epis = variance_split(mean[block], sigma[block])
        aleatoric.append(float(alea[regions["data"]].sqrt().mean()))
        for region, where in regions.items():
            per[region].append(float(epis[where].sqrt().mean()))
    out: dict[str, Any] = {"aleatoric_sd_data": aleatoric[0]}
    for region, values in per.items():
        out[f"epistemic_sd_{region}"] = values[0]
        out.update(spread(values, f"epistemic_sd_{region}"))
    out["epistemic_larger_off_data"] = sum(
        gap > on and beyond > on
        for on, gap, beyond in zip(per["data"], per["gap"], per["beyond"], strict=True)
    )
    return out
