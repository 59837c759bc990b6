"""Figures of the chapter "Probabilistic heads": Gaussian, Poisson and mixture heads.

The models are trained by the ``*_runs`` functions of `block4.probabilistic_runs` (several
seeds or data splits as the members of one stack) and reach the figures as plain data: the
parameters of each member's predicted distribution. The figures draw the first seed and
report every comparison as mean and spread over all of them; the calibration figure at the
end reuses the runs (``ctx.compute``: the pipeline computes them once; the figures form one
``group`` so that ``--jobs`` makes them in one process, in order).
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib.colors
import numpy as np
import torch
from torch import distributions as D

from block4.calibration import central_interval, interval_coverage, pit, pit_histogram, quantile
from block4.data.synthetic import count_rate
from block4.figures.registry import FigureContext, figure
from block4.probabilistic_runs import (
    count_runs,
    diabetes_runs,
    mixture_dist,
    mixture_runs,
    normal_dist,
    synthetic_runs,
)
from block4.style import PALETTE, ROLE, subplots
from block4.training import spread

#: Colours of the two Gaussian flavours on every figure of the chapter.
HOMO, HETERO = PALETTE[1], PALETTE[0]


def test_nll(params: dict[str, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """``[E]`` mean test NLL of each member's normal prediction."""
    return -normal_dist(params).log_prob(y).mean(-1)


@figure(
    "heteroscedastic_regression",
    chapter="probabilistic-heads",
    params={"bulk": [-1.8, 1.8], "n_seeds": {"smoke": 2, "quick": 2, "full": 5}},
    group="trained-models",
)
def heteroscedastic_regression(ctx: FigureContext, bulk: list[float], n_seeds: dict[str, int]):
    """Learned mean and +-2 sigma(x) bands against the truth, and sigma(x) itself.

    The heteroscedastic head never sees a true sigma: only the likelihood of the targets.
    ``bulk`` is the range of x (the central 90 % of the inputs) over which the learned
    sigma(x) is compared with the true one. Top: the first seed; bottom: sigma(x) of every
    seed (the band is the range over seeds).
    """
    data = ctx.compute(synthetic_runs, n_seeds=ctx.pick(**n_seeds))
    xs, mu, sd = data["grid"].numpy(), data["true_mean"], data["true_sigma"]
    het, hom = data["heteroscedastic"], data["homoscedastic"]
    fig, (ax_d, ax_s) = subplots(2, 1, width=6.8, height=6.4)
    ax_d.plot(
        data["x_train"], data["y_train"], ".", color=PALETTE[6], ms=2, alpha=0.35,
        rasterized=True, label="training data",
    )  # fmt: skip
    m, s = het["grid"]["mean"][0], het["grid"]["sigma"][0]
    ax_d.fill_between(
        xs, m - 2 * s, m + 2 * s, color=HETERO, alpha=0.25, lw=0, label=r"$\mu(x) \pm 2\sigma(x)$"
    )
    ax_d.plot(xs, m, color=HETERO, lw=2)
    ax_d.plot(xs, mu, color="black", lw=1.2, ls="--", label=r"truth $\pm 2\sigma$")
    hm, hs = hom["grid"]["mean"][0], hom["grid"]["sigma"][0]
    for sign in (-1, 1):
        ax_d.plot(xs, mu + sign * 2 * sd, color="black", lw=1.0, ls=":")
        ax_d.plot(
            xs, hm + sign * 2 * hs, color=HOMO, lw=1.3, ls="-.",
            label=r"one $\sigma$: $\pm 2\sigma$" if sign == 1 else None,
        )  # fmt: skip
    ax_d.set_xlabel("input x")
    ax_d.set_ylabel("target y")
    ax_d.set_title("(a) mean and ±2σ bands (seed 1)")
    ax_d.legend(loc="upper left", ncol=2)
    ax_d.set_ylim(-3.2, 5.5)  # room for the legend above the data

    sig = het["grid"]["sigma"]
    n = len(data["seeds"])
    ax_s.plot(xs, sd, color="black", ls="--", lw=1.2, label=r"true $\sigma(x)$")
    ax_s.plot(xs, sig.mean(0), color=HETERO, lw=2, label=r"learned $\sigma(x)$, mean")
    if n > 1:
        ax_s.fill_between(
            xs, sig.min(0).values, sig.max(0).values, color=HETERO, alpha=0.3, lw=0,
            label=f"range over {n} seeds",
        )  # fmt: skip
    ax_s.plot(xs, hom["grid"]["sigma"].mean(0), color=HOMO, lw=1.5, ls="-.", label=r"one $\sigma$")
    ax_s.axvspan(xs[0], bulk[0], color=PALETTE[6], alpha=0.12, lw=0, label="edges, not scored")
    ax_s.axvspan(bulk[1], xs[-1], color=PALETTE[6], alpha=0.12, lw=0)
    ax_s.set_xlabel("input x")
    ax_s.set_ylabel(r"noise level $\sigma(x)$")
    ax_s.set_title(f"(b) learned vs true noise level, {n} seed{'s' if n > 1 else ''}")
    ax_s.legend(loc="upper left")

    inside = torch.as_tensor((xs >= bulk[0]) & (xs <= bulk[1]))
    rel = (sig / sd - 1.0)[:, inside].abs()  # [E, G]
    nll_het, nll_hom = test_nll(het["test"], data["y_test"]), test_nll(hom["test"], data["y_test"])
    numbers = {
        "n_train": data["n_train"],
        "n_seeds": n,
        "bulk_low": bulk[0],
        "bulk_high": bulk[1],
        **spread(rel.max(1).values * 100, "sigma_rel_err_max_percent"),
        **spread(rel.median(1).values * 100, "sigma_rel_err_median_percent"),
        "sigma_true_left": float(sd[0]),
        "sigma_true_right": float(sd[-1]),
        **spread(hom["grid"]["sigma"][:, 0], "sigma_homoscedastic"),
        **spread(nll_hom, "test_nll_homoscedastic"),
        **spread(nll_het, "test_nll_heteroscedastic"),
        **spread(nll_het - nll_hom, "test_nll_diff"),
        "het_better_seeds": int((nll_het < nll_hom).sum()),
        **spread((het["grid"]["mean"] - mu)[:, inside].pow(2).mean(1).sqrt(), "mean_rmse_vs_truth"),
        "diverged_members": len(het["diverged"]) + len(hom["diverged"]),
    }
    return fig, numbers


@figure(
    "diabetes_nll",
    chapter="probabilistic-heads",
    params={"n_splits": {"smoke": 2, "quick": 2, "full": 10}},
    group="trained-models",
)
def diabetes_nll(ctx: FigureContext, n_splits: dict[str, int]):
    """Test NLL of one-sigma vs sigma(x) Gaussian MLPs on the diabetes data, per split.

    Top: the test NLL of both models on each random split (a line joins the two models of
    one split), with mean +-1 sd. Bottom: for the sigma(x) model of the first split, the
    predicted sigma of each test patient against the absolute error of its mean.
    """
    data = ctx.compute(diabetes_runs, n_splits=ctx.pick(**n_splits))
    scale = data["target_std"]
    y = data["y_test"]
    nll, rmse = {}, {}
    for name in ("homoscedastic", "heteroscedastic"):
        params = data[name]["test"]
        nll[name] = (test_nll(params, y) + scale.log()).numpy()
        rmse[name] = ((params["mean"] - y).pow(2).mean(-1).sqrt() * scale).numpy()
    hom, het = nll["homoscedastic"], nll["heteroscedastic"]

    fig, (ax_n, ax_s) = subplots(1, 2, width=6.8, height=3.6)
    for h, e in zip(hom, het, strict=True):
        ax_n.plot([0, 1], [h, e], color=PALETTE[6], lw=0.8, alpha=0.7)
    ax_n.plot(np.zeros_like(hom), hom, "o", color=HOMO, ms=5)
    ax_n.plot(np.ones_like(het), het, "o", color=HETERO, ms=5)
    ax_n.errorbar(
        [-0.2, 1.2], [hom.mean(), het.mean()], yerr=[hom.std(), het.std()], fmt="s",
        color=ROLE["truth"], capsize=4, label="mean ± sd",
    )  # fmt: skip
    ax_n.set_xticks([0, 1], ["one σ", "σ(x)"])
    ax_n.set_xlim(-0.5, 1.5)
    ax_n.set_ylabel("test NLL (nats)")
    ax_n.set_title(f"(a) {len(hom)} splits")
    ax_n.legend(loc="upper center")
    ax_n.set_ylim(None, max(hom.max(), het.max()) + 0.25 * np.ptp(np.r_[hom, het]) + 0.05)

    first = data["heteroscedastic"]["test"]
    s0 = float(scale[0])
    sigma = (first["sigma"][0] * s0).numpy()
    err = ((first["mean"][0] - y[0]).abs() * s0).numpy()
    hom_sigma = float(data["homoscedastic"]["test"]["sigma"][0, 0]) * s0
    ax_s.plot(sigma, err, "o", color=HETERO, ms=3, alpha=0.6)
    top = max(float(sigma.max()), hom_sigma) * 1.1
    # the expected |error| of a right Gaussian and the shared sigma, labelled in a legend at
    # the top left, where no predicted sigma(x) is that small: no points there
    ax_s.plot(
        [0, top], [0, top * math.sqrt(2 / math.pi)], color="black", ls="--", lw=1,
        label=r"$E|y-\mu| = 0.8\,\sigma$",
    )  # fmt: skip
    ax_s.axvline(hom_sigma, color=HOMO, ls="-.", lw=1.3, label="one σ")
    ax_s.legend(loc="upper left")
    ax_s.set_xlabel("predicted σ(x)")
    ax_s.set_ylabel("|y − μ(x)|")
    ax_s.set_title("(b) σ(x) vs error, split 1")

    diff = het - hom
    numbers = {
        "n_splits": len(hom),
        "n_test": int(y.shape[1]),
        **spread(hom, "nll_homoscedastic"),
        **spread(het, "nll_heteroscedastic"),
        **spread(diff, "nll_diff"),
        **_paired_t(diff),
        "het_better_splits": int((diff < 0).sum()),
        **spread(rmse["homoscedastic"], "rmse_homoscedastic"),
        **spread(rmse["heteroscedastic"], "rmse_heteroscedastic"),
        "sigma_min": float(sigma.min()),
        "sigma_max": float(sigma.max()),
        "sigma_homoscedastic": hom_sigma,
        "sigma_error_correlation": float(np.corrcoef(sigma, err)[0, 1]),
    }
    for i, (h, e) in enumerate(zip(hom, het, strict=True)):
        numbers[f"split{i}_nll_homoscedastic"] = float(h)
        numbers[f"split{i}_nll_heteroscedastic"] = float(e)
    return fig, numbers


def _paired_t(diff: np.ndarray) -> dict[str, float]:
    """The paired t statistic of per-split differences and the two-sided 5 % critical value
    for their number (``nll_diff_t``, ``nll_diff_t_critical``)."""
    n = len(diff)
    t = float(diff.mean() / (diff.std(ddof=1) / math.sqrt(n)))
    critical = quantile(D.StudentT(torch.tensor([n - 1.0], dtype=torch.float64)), 0.975)
    return {"nll_diff_t": t, "nll_diff_t_critical": float(critical[0])}


def _poisson_interval(rate: torch.Tensor, level: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Central interval of a Poisson: smallest counts whose CDF reaches (1 -/+ level) / 2."""
    ks = torch.arange(0, 200, dtype=rate.dtype)
    cdf = torch.special.gammaincc(ks[None, :] + 1.0, rate[:, None])  # P(Y <= k)
    lo = ((cdf < (1 - level) / 2).sum(dim=1)).to(rate.dtype)
    hi = ((cdf < (1 + level) / 2).sum(dim=1)).to(rate.dtype)
    return lo, hi


def _count_numbers(data: dict[str, Any], level: float) -> dict[str, Any]:
    """Coverage (of all test counts, and of those whose true rate is below / above the
    median), NLL and errors of both count models, mean and spread over seeds.

    The Poisson's coverage is counted two ways: ``coverage_poisson_*`` with the randomised
    PIT (`block4.calibration.interval_coverage`: exactly ``level`` for a right model), and
    ``coverage_poisson_counts_*`` for the central interval of whole counts that the figure
    draws (`_poisson_interval`), which holds at least ``level``; ``coverage_true_counts``
    is the latter for the true rate."""
    truth, y = data["true_rate"], data["y_test"]
    rate = data["poisson"]["test"]["rate"]
    gauss = normal_dist(data["gaussian"]["test"])
    # per seed: all test points, those whose true rate is below the seed's median, those above
    rate_true = count_rate(data["x_test"])
    low = rate_true < rate_true.median(-1, keepdim=True).values
    cov_p, cov_c, cov_g, cov_t = (torch.zeros(len(y), 3) for _ in range(4))
    for k in range(len(y)):
        for j, part in enumerate((torch.ones_like(low[k]), low[k], ~low[k])):
            poisson = D.Poisson(rate[k][part])
            normal = normal_dist({"mean": gauss.mean[k][part], "sigma": gauss.stddev[k][part]})
            cov_p[k, j] = 100 * interval_coverage(poisson, y[k][part], [level])[level]
            cov_g[k, j] = 100 * interval_coverage(normal, y[k][part], [level])[level]
            for cov, r in ((cov_c, rate[k][part]), (cov_t, rate_true[k][part])):
                lo, hi = _poisson_interval(r, level)
                cov[k, j] = 100 * ((lo <= y[k][part]) & (y[k][part] <= hi)).double().mean()
    # A density is not a probability of a count: integrate the Gaussian over [y - 1/2, y + 1/2].
    mass = gauss.cdf(y + 0.5) - gauss.cdf(y - 0.5)
    g_grid = data["gaussian"]["grid"]
    lo_g = g_grid["mean"] - 1.6449 * g_grid["sigma"]
    return {
        **spread(cov_p[:, 0], "coverage_poisson_percent"),
        **spread(cov_g[:, 0], "coverage_gaussian_percent"),
        **spread(cov_p[:, 1], "coverage_poisson_low_rate_percent"),
        **spread(cov_p[:, 2], "coverage_poisson_high_rate_percent"),
        **spread(cov_g[:, 1], "coverage_gaussian_low_rate_percent"),
        **spread(cov_g[:, 2], "coverage_gaussian_high_rate_percent"),
        **spread(cov_c[:, 0], "coverage_poisson_counts_percent"),
        **spread(cov_c[:, 1], "coverage_poisson_counts_low_rate_percent"),
        **spread(cov_c[:, 2], "coverage_poisson_counts_high_rate_percent"),
        **spread(cov_t[:, 0], "coverage_true_counts_percent"),
        "gaussian_wide_low_narrow_high": int(
            ((cov_g[:, 1] > 100 * level) & (cov_g[:, 2] < 100 * level)).sum()
        ),
        **spread(-torch.distributions.Poisson(rate).log_prob(y).mean(-1), "poisson_test_nll"),
        **spread(-mass.clamp_min(1e-12).log().mean(-1), "gaussian_test_nll_discretised"),
        **spread((lo_g < 0).double().mean(-1) * 100, "negative_lower_gaussian_percent"),
        **spread(
            ((data["poisson"]["grid"]["rate"] - truth).abs() / truth).max(-1).values * 100,
            "max_rel_err_poisson_percent",
        ),
        **spread(g_grid["sigma"][:, 0], "gaussian_sigma"),
        "max_rate": float(truth.max()),
        "min_rate": float(truth.min()),
    }


@figure(
    "poisson_counts",
    chapter="probabilistic-heads",
    params={"level": 0.9, "n_seeds": {"smoke": 2, "quick": 2, "full": 5}},
    group="trained-models",
)
def poisson_counts(ctx: FigureContext, level: float, n_seeds: dict[str, int]):
    """Counts: a Poisson head against a one-sigma Gaussian head on synthetic count data.

    Left: the counts, the true rate, the Poisson model's mean and its central ``level``
    interval. Right: the same for the Gaussian head, whose interval runs below zero where
    counts are small and is too narrow where they are large. Drawn: the first seed.
    """
    data = ctx.compute(count_runs, n_seeds=ctx.pick(**n_seeds))
    xs, truth = data["grid"].numpy(), data["true_rate"].numpy()
    fig, axes = subplots(1, 2, width=6.8, height=3.7, sharey=True)
    gen = torch.Generator().manual_seed(ctx.seed)
    y = data["y_train"]
    jitter = (torch.rand(len(y), generator=gen) - 0.5) * 0.3
    for ax, name, colour, title in (
        (axes[0], "poisson", HETERO, "(a) Poisson head"),
        (axes[1], "gaussian", HOMO, "(b) Gaussian, one σ"),
    ):
        grid = data[name]["grid"]
        if name == "poisson":
            mean = grid["rate"][0]
            lo, hi = _poisson_interval(mean, level)
        else:
            dist = normal_dist({k: v[0] for k, v in grid.items()})
            mean = dist.mean
            lo, hi = central_interval(dist, level)
        ax.plot(
            data["x_train"], y + jitter, ".", color=PALETTE[6], ms=2, alpha=0.4,
            rasterized=True, label="counts (jittered)",
        )  # fmt: skip
        ax.fill_between(
            xs, lo.numpy(), hi.numpy(), color=colour, alpha=0.22, lw=0,
            step="mid" if name == "poisson" else None, label=f"{100 * level:g} % interval",
        )  # fmt: skip
        ax.plot(xs, mean.numpy(), color=colour, lw=2, label="predicted mean")
        ax.plot(xs, truth, color="black", ls="--", lw=1.2, label="true rate")
        ax.axhline(0, color=ROLE["truth"], lw=0.8)
        ax.set_xlabel("input x")
        ax.set_title(title)
    axes[0].set_ylabel("count y")
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, columnspacing=1.0)
    numbers = {"level_percent": 100 * level, "n_train": data["n_train"]}
    numbers["n_seeds"] = len(data["seeds"])
    numbers.update(_count_numbers(data, level))
    return fig, numbers


@figure(
    "mixture_density",
    chapter="probabilistic-heads",
    params={"x_probe": 0.5, "n_seeds": {"smoke": 2, "quick": 2, "full": 5}},
    group="trained-models",
)
def mixture_density(ctx: FigureContext, x_probe: float, n_seeds: dict[str, int]):
    """A multimodal target: a 3-component mixture density head vs a Gaussian head.

    (a) The inverse-sine data with the sigma(x) Gaussian's mean and +-2 sigma band, which
    averages the branches. (b) The mixture's predictive density p(y | x) as an image.
    (c) Both predictive densities at ``x = x_probe``. Drawn: the first seed.

    Numbers: ``probe_weights_sorted`` (the first seed's mixture weights at the probe),
    ``probe_three_modes`` (how many seeds give every component at least
    ``probe_three_modes_min_percent`` % of the weight there), held-out NLL of both heads over
    the seeds (``test_nll_*``).
    """
    data = ctx.compute(mixture_runs, n_seeds=ctx.pick(**n_seeds), x_probe=x_probe)
    x, y = data["x_train"], data["y_train"]
    xs = data["grid"]
    ys = torch.linspace(-0.1, 1.1, 160)
    first = {name: {p: {k: v[0] for k, v in data[name][p].items()} for p in ("grid", "probe")}
             for name in ("mixture", "gaussian")}  # fmt: skip
    g = normal_dist(first["gaussian"]["grid"])
    m = mixture_dist(first["mixture"]["grid"])
    density = m.log_prob(ys[:, None].expand(-1, len(xs))).exp()  # (len(ys), len(xs))

    fig, _ = subplots(1, 1, width=6.8, height=6.0)
    fig.clear()
    grid = fig.add_gridspec(2, 2)
    ax_g, ax_m = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    ax_p = fig.add_subplot(grid[1, :])
    ax_g.plot(x, y, ".", color=PALETTE[6], ms=2, alpha=0.35, rasterized=True)
    ax_m.plot(x[:400], y[:400], ".", color=PALETTE[4], ms=1.5, alpha=0.5, rasterized=True)
    for ax in (ax_g, ax_m):
        ax.set_xlabel("input x")
        ax.set_ylim(-0.1, 1.1)
    ax_g.fill_between(
        xs.numpy(), g.mean - 2 * g.stddev, g.mean + 2 * g.stddev, color=HOMO, alpha=0.25, lw=0
    )
    ax_g.plot(xs.numpy(), g.mean, color=HOMO, lw=2)
    ax_g.set_ylabel("target y")
    ax_g.set_title("(a) Gaussian: μ ± 2σ")
    # Each column is p(y | x) for one x; scale columns to their maximum so that the narrow
    # single-branch columns do not wash out the three-branch middle. One colour with the
    # density as opacity reads on light and dark pages.
    column_scaled = density / density.max(dim=0, keepdim=True).values
    rgba = np.zeros((*column_scaled.shape, 4))
    rgba[..., :3] = matplotlib.colors.to_rgb(HETERO)
    rgba[..., 3] = column_scaled.numpy() ** 0.8
    ax_m.imshow(
        rgba, origin="lower", aspect="auto", interpolation="none",
        extent=(float(xs[0]), float(xs[-1]), float(ys[0]), float(ys[-1])),
    )  # fmt: skip
    ax_m.axvline(x_probe, color=PALETTE[4], lw=1.2, ls="--")
    ax_m.set_title("(b) mixture: p(y | x)")

    yy = torch.linspace(-0.3, 1.3, 400)
    p_mdn = mixture_dist(first["mixture"]["probe"]).log_prob(yy[:, None]).exp()[:, 0]
    gp = normal_dist(first["gaussian"]["probe"])
    p_g = gp.log_prob(yy[:, None]).exp()[:, 0]
    near = (x - x_probe).abs() < 0.02
    ax_p.hist(
        y[near].numpy(), bins=30, range=(-0.1, 1.1), density=True, color=PALETTE[6], alpha=0.4,
        label=f"data, |x − {x_probe:g}| < 0.02",
    )  # fmt: skip
    ax_p.plot(yy.numpy(), p_mdn.numpy(), color=HETERO, lw=2, label="mixture (3 components)")
    ax_p.plot(yy.numpy(), p_g.numpy(), color=HOMO, lw=1.6, ls="-.", label="Gaussian")
    ax_p.set_xlabel("target y")
    ax_p.set_ylabel("density")
    ax_p.set_title(f"(c) p(y | x = {x_probe:g})")
    ax_p.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))

    numbers = {"x_probe": x_probe, **_mixture_numbers(data)}
    numbers["probe_gaussian_mean"] = float(gp.mean[0])
    numbers["probe_gaussian_sigma"] = float(gp.stddev[0])
    return fig, numbers


def _mixture_numbers(data: dict[str, Any], three_modes_min: float = 0.1) -> dict[str, Any]:
    """`mixture_density`'s numbers from its runs: held-out NLL of both heads over the seeds,
    the first seed's mixture weights at the probe, and how many seeds give each of their
    components at least ``three_modes_min`` of the weight there."""
    y_test = data["y_test"]
    nll_mdn = -mixture_dist(data["mixture"]["test"]).log_prob(y_test).mean(-1)
    weights = torch.softmax(data["mixture"]["probe"]["logits"][:, 0], -1)  # [seeds, K]
    return {
        "n_train": data["n_train"],
        "n_seeds": len(data["seeds"]),
        **spread(nll_mdn, "test_nll_mixture"),
        **spread(test_nll(data["gaussian"]["test"], y_test), "test_nll_gaussian"),
        "probe_weights_sorted": ", ".join(
            f"{w:.2f}" for w in sorted(weights[0].tolist(), reverse=True)
        ),
        "probe_three_modes": int((weights.min(-1).values >= three_modes_min).sum()),
        "probe_three_modes_min_percent": 100 * three_modes_min,
    }


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


def _cases(
    ctx: FigureContext,
    syn: dict[str, Any],
    n_seeds: dict[str, int],
    n_splits: dict[str, int],
    x_probe: float,
):
    """``{case: (dist, y, x)}`` of the first seed of each model, from the chapter's runs
    (``syn``: the synthetic runs, already computed)."""
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


def _half_coverage(syn: dict[str, Any]) -> dict[str, Any]:
    """Coverage can look right on average and still be wrong everywhere: the 90 % coverage
    of both synthetic Gaussian models on the quiet left half (x < 0) and on the noisy right
    half of the test inputs (``syn``: `synthetic_runs`), for the first seed and as mean and
    sd over all seeds."""
    out: dict[str, Any] = {}
    for model in ("homoscedastic", "heteroscedastic"):
        params = syn[model]["test"]
        for side in ("left", "right"):
            covs = []
            for k, (x, y) in enumerate(zip(syn["x_test"], syn["y_test"], strict=True)):
                mask = x < 0 if side == "left" else x >= 0
                dist = normal_dist({key: value[k][mask] for key, value in params.items()})
                covs.append(100 * interval_coverage(dist, y[mask], [0.9])[0.9])
            name = f"synthetic_{model}_cov90_{side}"
            out[name] = covs[0]
            out.update(spread(torch.tensor(covs), name))
    return out


@figure(
    "regression_calibration",
    chapter="probabilistic-heads",
    params={
        "levels": [0.5, 0.8, 0.9, 0.95],
        "bins": 10,
        "n_seeds": {"smoke": 2, "quick": 2, "full": 5},
        "n_splits": {"smoke": 2, "quick": 2, "full": 10},
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
    syn = ctx.compute(synthetic_runs, n_seeds=ctx.pick(**n_seeds))
    cases = _cases(ctx, syn, n_seeds, n_splits, x_probe)
    numbers: dict[str, Any] = _half_coverage(syn)
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
