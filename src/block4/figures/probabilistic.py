"""Figures of the chapter "Probabilistic heads".

Every model here is a `block4.modules.ProbabilisticRegressor` or
`block4.modules.Classifier` trained by a Lightning ``Trainer`` on the mean negative
log-likelihood; the heads return ``torch.distributions`` objects, and everything the figures
show (bands, densities, PIT values, coverages) is computed from those distributions.

Trained models are cached per (model, profile, seed, accelerator) for the lifetime of the
process, so the calibration figures reuse the models of the earlier figures instead of
training them again.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import matplotlib.colors
import numpy as np
import pytorch_lightning as pl
import torch
from torch import distributions as D

from block4.calibration import (
    central_interval,
    expected_calibration_error,
    interval_coverage,
    pit,
    pit_histogram,
    reliability_curve,
)
from block4.data import (
    DiabetesDataModule,
    DigitsDataModule,
    HeteroscedasticDataModule,
    InMemoryDataModule,
    count_rate,
    make_counts,
    make_inverse_sine,
)
from block4.figures.registry import FigureContext, figure
from block4.modules import Classifier, ProbabilisticRegressor
from block4.style import PALETTE, ROLE, subplots
from block4.training import fit

#: Colours of the two Gaussian flavours on every figure of the chapter.
HOMO, HETERO = PALETTE[1], PALETTE[0]

# Models trained once per process and shared by the figures of group "trained-models"
# (``make_figures.py --jobs N`` makes that group in one process, so they are shared there too).
# Every entry is made from its own seed, so a figure's result does not depend on which figure
# trained a model first.
_CACHE: dict[tuple, Any] = {}


def _cached(key: tuple, ctx: FigureContext, make: Callable[[], Any]) -> Any:
    full_key = (*key, ctx.profile, ctx.seed, ctx.accelerator, str(ctx.devices), ctx.strategy)
    if full_key not in _CACHE:
        _CACHE[full_key] = make()
    return _CACHE[full_key]


# --------------------------------------------------------------------------------------------
# The models (each trained once per process and profile)
# --------------------------------------------------------------------------------------------


def heteroscedastic_data(ctx: FigureContext, seed: int | None = None) -> HeteroscedasticDataModule:
    """The synthetic regression data of the chapter, sized by the profile (``seed``: ctx.seed)."""
    n = ctx.pick(smoke=600, quick=4000, full=8000)
    return HeteroscedasticDataModule(
        n_train=n,
        n_val=0,
        n_test=2000,
        batch_size=ctx.pick(smoke=200, quick=500, full=500),
        seed=ctx.seed if seed is None else seed,
    )


# --8<-- [start:synthetic_models]
def synthetic_models(
    ctx: FigureContext, seed: int | None = None
) -> dict[str, ProbabilisticRegressor]:
    """Homoscedastic and heteroscedastic Gaussian regressors on the synthetic data.

    Same body (2 hidden tanh layers of 32 units), same data, same optimiser; only the head
    differs: one shared sigma, or a sigma(x) computed by the network. ``seed`` (default
    ``ctx.seed``) draws the data and the initial weights.
    """
    seed = ctx.seed if seed is None else seed

    def make() -> dict[str, ProbabilisticRegressor]:
        epochs = ctx.pick(smoke=15, quick=150, full=400)
        models = {}
        for name, het in (("homoscedastic", False), ("heteroscedastic", True)):
            pl.seed_everything(seed, verbose=False)
            model = ProbabilisticRegressor(
                in_features=1,
                head="gaussian",
                heteroscedastic=het,
                depth=2,
                width=32,
                activation="tanh",
                lr=5e-3,
                seed=seed,
            )
            models[name] = fit(ctx, model, heteroscedastic_data(ctx, seed), epochs)
        return models

    return _cached(("synthetic", seed), ctx, make)


# --8<-- [end:synthetic_models]


def diabetes_runs(ctx: FigureContext) -> list[dict[str, Any]]:
    """Homoscedastic vs heteroscedastic Gaussian MLPs on the diabetes data, several splits.

    Each split seed gives a different random train/val/test split; both models see the same
    split, are early-stopped on the validation NLL, and are scored on the test patients.
    NLLs are reported in the target's own units (disease progression score).
    """

    def make() -> list[dict[str, Any]]:
        n_splits = ctx.pick(smoke=1, quick=4, full=10)
        epochs = ctx.pick(smoke=10, quick=100, full=300)
        runs = []
        for split in range(n_splits):
            seed = ctx.seed + split
            row: dict[str, Any] = {"split": seed}
            for name, het in (("homoscedastic", False), ("heteroscedastic", True)):
                pl.seed_everything(seed, verbose=False)
                data = DiabetesDataModule(batch_size=64, seed=seed, split_seed=seed)
                model = ProbabilisticRegressor(
                    in_features=10,
                    head="gaussian",
                    heteroscedastic=het,
                    depth=1,
                    width=16,
                    optimizer="adamw",
                    lr=3e-3,
                    weight_decay=1e-2,
                    seed=seed,
                )
                fit(ctx, model, data, epochs, early_stopping=True)
                x, y = data.tensors("test")
                dist = model.predict_dist(x.cpu())
                y = y.cpu()
                log_std = math.log(data.target_std)
                row[name] = {
                    "nll": float(-dist.log_prob(y).mean()) + log_std,
                    "rmse": float((dist.mean - y).pow(2).mean().sqrt()) * data.target_std,
                    "dist": dist,
                    "y": y,
                    "target_std": data.target_std,
                }
            runs.append(row)
        return runs

    return _cached(("diabetes",), ctx, make)


def _fit_one_feature_regressors(
    ctx: FigureContext,
    sample: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]],
    *,
    n: int,
    epochs: int,
    width: int,
    heads: tuple[tuple[str, str, dict[str, Any]], ...],
) -> dict[str, Any]:
    """Train one regressor per ``(name, head, options)`` on the same one-feature data.

    ``sample(n, seed)`` draws ``n`` training pairs from ``ctx.seed`` and 2000 test pairs
    from ``ctx.seed + 1``. Every model has the same body (2 hidden tanh layers of ``width``
    units) and optimiser and starts from ``ctx.seed``; the result maps ``"test"`` and
    ``"train"`` to the data and each name to its trained model.
    """
    x, y = sample(n, ctx.seed)
    x_test, y_test = sample(2000, ctx.seed + 1)
    out: dict[str, Any] = {"test": (x_test, y_test), "train": (x, y)}
    for name, head, options in heads:
        pl.seed_everything(ctx.seed, verbose=False)
        data = InMemoryDataModule((x, y), batch_size=250, seed=ctx.seed)
        model = ProbabilisticRegressor(
            in_features=1,
            head=head,
            depth=2,
            width=width,
            activation="tanh",
            lr=5e-3,
            seed=ctx.seed,
            **options,
        )
        out[name] = fit(ctx, model, data, epochs)
    return out


def count_models(ctx: FigureContext) -> dict[str, Any]:
    """A Poisson regressor and a homoscedastic Gaussian one on the synthetic counts."""

    def make() -> dict[str, Any]:
        n = ctx.pick(smoke=500, quick=3000, full=6000)
        epochs = ctx.pick(smoke=10, quick=120, full=300)
        return _fit_one_feature_regressors(
            ctx,
            make_counts,
            n=n,
            epochs=epochs,
            width=32,
            heads=(
                ("poisson", "poisson", {}),
                ("gaussian", "gaussian", {"heteroscedastic": False}),
            ),
        )

    return _cached(("counts",), ctx, make)


def mixture_models(ctx: FigureContext) -> dict[str, Any]:
    """A 3-component mixture density network and a heteroscedastic Gaussian on inverse sine."""

    def make() -> dict[str, Any]:
        n = ctx.pick(smoke=500, quick=3000, full=6000)
        epochs = ctx.pick(smoke=10, quick=150, full=600)
        return _fit_one_feature_regressors(
            ctx,
            make_inverse_sine,
            n=n,
            epochs=epochs,
            width=48,
            heads=(
                ("mixture", "mixture", {"head_options": {"n_components": 3}}),
                ("gaussian", "gaussian", {"heteroscedastic": True}),
            ),
        )

    return _cached(("mixture",), ctx, make)


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


@figure(
    "heteroscedastic_regression",
    chapter="probabilistic-heads",
    params={"bulk": [-1.8, 1.8]},
    group="trained-models",
)
def heteroscedastic_regression(ctx: FigureContext, bulk: list[float]):
    """Learned mean and +-2 sigma(x) bands against the truth, and sigma(x) itself.

    The heteroscedastic head never sees a true sigma: only the likelihood of the targets.
    ``bulk`` is the range of x (the central 90 % of the inputs) over which the learned
    sigma(x) is compared with the true one.
    """
    data = heteroscedastic_data(ctx)
    models = synthetic_models(ctx)
    x_train, y_train = data.tensors("train")
    x_train, y_train = x_train.cpu(), y_train.cpu()
    xs = torch.linspace(data.x_low, data.x_high, 400)[:, None]
    true_mu, true_sigma = data.true_mean(xs[:, 0]), data.true_sigma(xs[:, 0])
    het = models["heteroscedastic"].predict_dist(xs)
    hom = models["homoscedastic"].predict_dist(xs)

    fig, (ax_d, ax_s) = subplots(
        1, 2, width=11.0, height=4.0, gridspec_kw={"width_ratios": [1.4, 1]}
    )
    show = slice(0, 1500)
    ax_d.plot(
        x_train[show, 0],
        y_train[show],
        ".",
        color=PALETTE[6],
        ms=2,
        alpha=0.35,
        rasterized=True,
        label="training data",
    )
    x_np = xs[:, 0].numpy()
    ax_d.fill_between(
        x_np,
        (het.mean - 2 * het.stddev).numpy(),
        (het.mean + 2 * het.stddev).numpy(),
        color=HETERO,
        alpha=0.25,
        lw=0,
        label=r"learned $\mu(x) \pm 2\sigma(x)$",
    )
    ax_d.plot(x_np, het.mean.numpy(), color=HETERO, lw=2)
    ax_d.plot(
        x_np, true_mu.numpy(), color="black", lw=1.2, ls="--", label=r"true $\mu(x) \pm 2\sigma(x)$"
    )
    for sign in (-1, 1):
        ax_d.plot(x_np, (true_mu + sign * 2 * true_sigma).numpy(), color="black", lw=1.0, ls=":")
        ax_d.plot(
            x_np,
            (hom.mean + sign * 2 * hom.stddev).numpy(),
            color=HOMO,
            lw=1.3,
            ls="-.",
            label="homoscedastic $\\pm 2\\sigma$" if sign == 1 else None,
        )
    ax_d.set_xlabel("input x")
    ax_d.set_ylabel("target y")
    ax_d.set_title("(a) mean and ±2σ bands")
    ax_d.legend(loc="upper left", fontsize=8)

    ax_s.plot(x_np, true_sigma.numpy(), color="black", ls="--", lw=1.2, label=r"true $\sigma(x)$")
    ax_s.plot(x_np, het.stddev.numpy(), color=HETERO, lw=2, label=r"heteroscedastic $\sigma(x)$")
    ax_s.plot(
        x_np, hom.stddev.numpy(), color=HOMO, lw=1.5, ls="-.", label=r"homoscedastic $\sigma$"
    )
    ax_s.axvspan(data.x_low, bulk[0], color=PALETTE[6], alpha=0.12, lw=0, label="edges, not scored")
    ax_s.axvspan(bulk[1], data.x_high, color=PALETTE[6], alpha=0.12, lw=0)
    ax_s.set_xlabel("input x")
    ax_s.set_ylabel(r"standard deviation $\sigma(x)$")
    ax_s.set_title("(b) learned vs true noise level")
    ax_s.legend(loc="upper left", fontsize=8)

    inside = (xs[:, 0] >= bulk[0]) & (xs[:, 0] <= bulk[1])
    rel = (het.stddev / true_sigma - 1.0)[inside].abs()
    # The full profile repeats the fit with other seeds (new data, new initial weights) and
    # shows the spread of sigma(x) across them.
    seeds = [ctx.seed + k for k in range(ctx.pick(smoke=1, quick=1, full=5))]
    sigmas = torch.stack(
        [synthetic_models(ctx, s)["heteroscedastic"].predict_dist(xs).stddev for s in seeds]
    )
    if len(seeds) > 1:
        ax_s.fill_between(
            x_np,
            sigmas.min(0).values.numpy(),
            sigmas.max(0).values.numpy(),
            color=HETERO,
            alpha=0.25,
            lw=0,
            label=f"range over {len(seeds)} seeds",
        )
        ax_s.legend(loc="upper left", fontsize=8)
    rel_all = (sigmas / true_sigma - 1.0)[:, inside].abs()
    x_test, y_test = (t.cpu() for t in data.tensors("test"))
    nll = {k: float(-m.predict_dist(x_test).log_prob(y_test).mean()) for k, m in models.items()}
    numbers = {
        "n_train": len(y_train),
        "bulk_low": bulk[0],
        "bulk_high": bulk[1],
        "sigma_rel_err_median_percent": 100 * float(rel.median()),
        "sigma_rel_err_max_percent": 100 * float(rel.max()),
        "n_seeds": len(seeds),
        "sigma_rel_err_max_percent_all_seeds": 100 * float(rel_all.max()),
        "sigma_true_left": float(data.true_sigma(torch.tensor(data.x_low))),
        "sigma_true_right": float(data.true_sigma(torch.tensor(data.x_high))),
        "sigma_homoscedastic": float(hom.stddev[0]),
        "test_nll_homoscedastic": nll["homoscedastic"],
        "test_nll_heteroscedastic": nll["heteroscedastic"],
        "mean_rmse_vs_truth": float((het.mean - true_mu)[inside].pow(2).mean().sqrt()),
    }
    return fig, numbers


@figure("diabetes_nll", chapter="probabilistic-heads", params={}, group="trained-models")
def diabetes_nll(ctx: FigureContext):
    """Test NLL of homoscedastic vs heteroscedastic Gaussian MLPs on the diabetes data.

    Left: the test NLL of both models on each random split (a line joins the two models of
    one split). Right: for the heteroscedastic model of the first split, the predicted sigma
    of each test patient against the absolute error of the predicted mean.
    """
    runs = diabetes_runs(ctx)
    hom = np.array([r["homoscedastic"]["nll"] for r in runs])
    het = np.array([r["heteroscedastic"]["nll"] for r in runs])
    rmse_hom = np.array([r["homoscedastic"]["rmse"] for r in runs])
    rmse_het = np.array([r["heteroscedastic"]["rmse"] for r in runs])
    diff = het - hom

    fig, (ax_n, ax_s) = subplots(1, 2, width=10.0, height=3.8)
    for h, e in zip(hom, het, strict=True):
        ax_n.plot([0, 1], [h, e], color=PALETTE[6], lw=0.8, alpha=0.7)
    ax_n.plot(np.zeros_like(hom), hom, "o", color=HOMO, ms=6, label="per split")
    ax_n.plot(np.ones_like(het), het, "o", color=HETERO, ms=6)
    ax_n.errorbar(
        [-0.15, 1.15],
        [hom.mean(), het.mean()],
        yerr=[hom.std(), het.std()],
        fmt="s",
        color=ROLE["truth"],
        capsize=4,
        label="mean ± sd",
    )
    ax_n.set_xticks([0, 1], ["homoscedastic", "heteroscedastic"])
    ax_n.set_xlim(-0.5, 1.5)
    ax_n.set_ylabel("test NLL (nats, target units)")
    ax_n.set_title(f"(a) {len(runs)} random splits, lower is better")
    ax_n.legend(loc="upper center", fontsize=8)

    first = runs[0]["heteroscedastic"]
    scale = first["target_std"]
    sigma = (first["dist"].stddev * scale).numpy()
    err = ((first["dist"].mean - first["y"]).abs() * scale).numpy()
    hom_sigma = float(runs[0]["homoscedastic"]["dist"].stddev[0]) * scale
    ax_s.plot(sigma, err, "o", color=HETERO, ms=3.5, alpha=0.6, label="test patients")
    top = max(float(sigma.max()), hom_sigma) * 1.1
    grid = np.linspace(0, top, 2)
    ax_s.plot(
        grid,
        grid * math.sqrt(2 / math.pi),
        color="black",
        ls="--",
        lw=1,
        label=r"$E|y - \mu| = \sigma\sqrt{2/\pi}$",
    )
    ax_s.axvline(hom_sigma, color=HOMO, ls="-.", lw=1.3, label="homoscedastic σ")
    ax_s.set_xlabel("predicted σ(x) (progression units)")
    ax_s.set_ylabel("|y − μ(x)| (progression units)")
    ax_s.set_title("(b) does σ(x) track the error? (split 1)")
    ax_s.legend(loc="upper left", fontsize=8)

    corr = float(np.corrcoef(sigma, err)[0, 1])
    numbers = {
        "n_splits": len(runs),
        "nll_homoscedastic_mean": float(hom.mean()),
        "nll_homoscedastic_sd": float(hom.std()),
        "nll_heteroscedastic_mean": float(het.mean()),
        "nll_heteroscedastic_sd": float(het.std()),
        "nll_diff_mean": float(diff.mean()),
        "nll_diff_sd": float(diff.std()),
        "het_better_splits": int((diff < 0).sum()),
        "rmse_homoscedastic_mean": float(rmse_hom.mean()),
        "rmse_heteroscedastic_mean": float(rmse_het.mean()),
        "sigma_min": float(sigma.min()),
        "sigma_max": float(sigma.max()),
        "sigma_homoscedastic": hom_sigma,
        "sigma_error_correlation": corr,
        "n_test": len(err),
    }
    for i, (h, e) in enumerate(zip(hom, het, strict=True)):
        numbers[f"split{i}_nll_homoscedastic"] = float(h)
        numbers[f"split{i}_nll_heteroscedastic"] = float(e)
    return fig, numbers


@figure(
    "poisson_counts",
    chapter="probabilistic-heads",
    params={"level": 0.9},
    group="trained-models",
)
def poisson_counts(ctx: FigureContext, level: float):
    """Counts: a Poisson head against a Gaussian head on synthetic count data.

    Left: the counts, the true rate, the Poisson model's mean and its central ``level``
    interval. Right: the same for a homoscedastic Gaussian head, whose interval runs below
    zero where counts are small and is too narrow where they are large.
    """
    out = count_models(ctx)
    x, y = out["train"]
    x_test, y_test = out["test"]
    xs = torch.linspace(0, 5, 300)[:, None]
    truth = count_rate(xs[:, 0])
    fig, axes = subplots(1, 2, width=11.0, height=3.8, sharey=True)
    gen = torch.Generator().manual_seed(ctx.seed)
    jitter = (torch.rand(len(y), generator=gen) - 0.5) * 0.3
    show = slice(0, 1200)
    numbers: dict[str, Any] = {"level_percent": 100 * level, "n_train": len(y)}
    for ax, name, colour, title in (
        (axes[0], "poisson", HETERO, "(a) Poisson head"),
        (axes[1], "gaussian", HOMO, "(b) Gaussian head, one σ"),
    ):
        model = out[name]
        dist = model.predict_dist(xs)
        if name == "poisson":
            lo, hi = _poisson_interval(dist.rate, level)
        else:
            lo, hi = central_interval(dist, level)
        ax.plot(
            x[show, 0],
            (y + jitter)[show],
            ".",
            color=PALETTE[6],
            ms=2,
            alpha=0.4,
            rasterized=True,
            label="counts (jittered)",
        )
        ax.fill_between(
            xs[:, 0].numpy(),
            lo.numpy(),
            hi.numpy(),
            color=colour,
            alpha=0.22,
            lw=0,
            step="mid" if name == "poisson" else None,
            label=f"{100 * level:g} % interval",
        )
        ax.plot(xs[:, 0].numpy(), dist.mean.numpy(), color=colour, lw=2, label="predicted mean")
        ax.plot(xs[:, 0].numpy(), truth.numpy(), color="black", ls="--", lw=1.2, label="true rate")
        ax.axhline(0, color=ROLE["truth"], lw=0.8)
        ax.set_xlabel("input x")
        ax.set_title(title)
        ax.legend(loc="upper left", fontsize=8)
        test_dist = model.predict_dist(x_test)
        numbers[f"coverage_{name}"] = interval_coverage(test_dist, y_test, [level])[level]
        numbers[f"mean_rel_err_{name}_percent"] = 100 * float(
            ((dist.mean - truth).abs() / truth).max()
        )
        numbers[f"negative_lower_{name}_percent"] = 100 * float((lo < 0).double().mean())
    axes[0].set_ylabel("count y")
    gauss = out["gaussian"].predict_dist(x_test)
    numbers["gaussian_sigma"] = float(gauss.stddev[0])
    numbers["poisson_test_nll"] = float(
        -out["poisson"].predict_dist(x_test).log_prob(y_test).mean()
    )
    # A density is not a probability of a count: integrate the Gaussian over [y - 1/2, y + 1/2].
    mass = gauss.cdf(y_test + 0.5) - gauss.cdf(y_test - 0.5)
    numbers["gaussian_test_nll_discretised"] = float(-torch.log(mass.clamp_min(1e-12)).mean())
    numbers["max_rate"] = float(truth.max())
    numbers["min_rate"] = float(truth.min())
    return fig, numbers


def _poisson_interval(rate: torch.Tensor, level: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Central interval of a Poisson: smallest counts whose CDF reaches (1 -/+ level) / 2."""
    ks = torch.arange(0, 200, dtype=rate.dtype)
    cdf = torch.special.gammaincc(ks[None, :] + 1.0, rate[:, None])  # P(Y <= k)
    lo = ((cdf < (1 - level) / 2).sum(dim=1)).to(rate.dtype)
    hi = ((cdf < (1 + level) / 2).sum(dim=1)).to(rate.dtype)
    return lo, hi


@figure(
    "mixture_density",
    chapter="probabilistic-heads",
    params={"x_probe": 0.5},
    group="trained-models",
)
def mixture_density(ctx: FigureContext, x_probe: float):
    """A multimodal target: a 3-component mixture density head vs a Gaussian head.

    Left: the inverse-sine data with the heteroscedastic Gaussian's mean and +-2 sigma band,
    which averages the branches. Middle: the mixture's predictive density p(y | x) as an
    image. Right: both predictive densities at ``x = x_probe``.
    """
    out = mixture_models(ctx)
    x, y = out["train"]
    x_test, y_test = out["test"]
    mdn, gauss = out["mixture"], out["gaussian"]
    xs = torch.linspace(float(x.min()), float(x.max()), 160)[:, None]
    ys = torch.linspace(-0.1, 1.1, 160)
    g = gauss.predict_dist(xs)
    m = mdn.predict_dist(xs)
    density = m.log_prob(ys[:, None].expand(-1, len(xs))).exp()  # (len(ys), len(xs))

    fig, (ax_g, ax_m, ax_p) = subplots(1, 3, width=12.0, height=3.8)
    show = slice(0, 1500)
    ax_g.plot(x[show, 0], y[show], ".", color=PALETTE[6], ms=2, alpha=0.35, rasterized=True)
    ax_m.plot(x[:400, 0], y[:400], ".", color=PALETTE[4], ms=1.5, alpha=0.5, rasterized=True)
    for ax in (ax_g, ax_m):
        ax.set_xlabel("input x")
        ax.set_ylim(-0.1, 1.1)
    ax_g.fill_between(
        xs[:, 0].numpy(),
        (g.mean - 2 * g.stddev).numpy(),
        (g.mean + 2 * g.stddev).numpy(),
        color=HOMO,
        alpha=0.25,
        lw=0,
        label=r"$\mu(x) \pm 2\sigma(x)$",
    )
    ax_g.plot(xs[:, 0].numpy(), g.mean.numpy(), color=HOMO, lw=2, label=r"Gaussian $\mu(x)$")
    ax_g.set_ylabel("target y")
    ax_g.set_title("(a) Gaussian head: one bump")
    ax_g.legend(loc="upper left", fontsize=8)
    # Each column is p(y | x) for one x; scale columns to their maximum so that the narrow
    # single-branch columns do not wash out the three-branch middle.
    column_scaled = density / density.max(dim=0, keepdim=True).values
    # Drawn as one colour with the density as opacity, so it reads on light and dark pages.
    rgba = np.zeros((*column_scaled.shape, 4))
    rgba[..., :3] = matplotlib.colors.to_rgb(HETERO)
    rgba[..., 3] = column_scaled.numpy() ** 0.8
    ax_m.imshow(
        rgba,
        origin="lower",
        aspect="auto",
        extent=(float(xs[0]), float(xs[-1]), float(ys[0]), float(ys[-1])),
        interpolation="none",  # embedded at its own 160 x 160 resolution; browsers smooth it
    )
    ax_m.axvline(x_probe, color=PALETTE[4], lw=1.2, ls="--")
    ax_m.set_title("(b) mixture head: p(y | x), each column scaled")

    probe = torch.tensor([[x_probe]])
    yy = torch.linspace(-0.3, 1.3, 400)
    p_mdn = mdn.predict_dist(probe).log_prob(yy[:, None]).exp()[:, 0]
    p_g = gauss.predict_dist(probe).log_prob(yy[:, None]).exp()[:, 0]
    near = (x[:, 0] - x_probe).abs() < 0.02
    ax_p.hist(
        y[near].numpy(),
        bins=30,
        range=(-0.1, 1.1),
        density=True,
        color=PALETTE[6],
        alpha=0.4,
        label=f"data with |x − {x_probe:g}| < 0.02",
    )
    ax_p.plot(yy.numpy(), p_mdn.numpy(), color=HETERO, lw=2, label="mixture (3 components)")
    ax_p.plot(yy.numpy(), p_g.numpy(), color=HOMO, lw=1.6, ls="-.", label="Gaussian")
    ax_p.set_xlabel("target y")
    ax_p.set_ylabel("predictive density")
    ax_p.set_title(f"(c) p(y | x = {x_probe:g})")
    ax_p.legend(loc="upper center", fontsize=7.5)
    ax_p.set_ylim(0, float(max(p_mdn.max(), p_g.max())) * 1.45)

    nll_mdn = float(-mdn.predict_dist(x_test).log_prob(y_test).mean())
    nll_g = float(-gauss.predict_dist(x_test).log_prob(y_test).mean())
    weights = mdn.predict_dist(probe).mixture_distribution.probs[0]
    numbers = {
        "n_train": len(y),
        "test_nll_mixture": nll_mdn,
        "test_nll_gaussian": nll_g,
        "x_probe": x_probe,
        "probe_weights_sorted": ", ".join(
            f"{w:.2f}" for w in sorted(weights.tolist(), reverse=True)
        ),
        "probe_gaussian_mean": float(gauss.predict_dist(probe).mean[0]),
        "probe_gaussian_sigma": float(gauss.predict_dist(probe).stddev[0]),
        "density_at_probe_mean_gaussian": float(
            gauss.predict_dist(probe).log_prob(gauss.predict_dist(probe).mean).exp()[0]
        ),
    }
    return fig, numbers


@figure("digits_calibration", chapter="probabilistic-heads", params={"n_bins": 10})
def digits_calibration(ctx: FigureContext, n_bins: int):
    """Reliability diagram and expected calibration error of the digits classifier.

    Left: test accuracy per confidence bin against the bin's mean confidence (a calibrated
    model lies on the diagonal), with the share of predictions per bin. Right: the test
    NLL, the error rate and the ECE over training epochs: the NLL rises again when the model
    becomes over-confident, while the error rate barely moves.
    """
    epochs = ctx.pick(smoke=3, quick=60, full=150)
    pl.seed_everything(ctx.seed, verbose=False)
    data = DigitsDataModule(batch_size=64, seed=ctx.seed)
    data.setup()
    x_test, y_test = (t.cpu() for t in data.tensors("test"))
    model = Classifier(in_features=64, n_classes=10, depth=2, width=64, lr=3e-3, seed=ctx.seed)
    history: list[dict[str, float]] = []

    class TestMetrics(pl.Callback):
        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            probs = pl_module.predict_dist(x_test).probs.cpu()
            history.append(
                {
                    "epoch": trainer.current_epoch + 1,
                    "nll": float(
                        torch.nn.functional.nll_loss(probs.clamp_min(1e-12).log(), y_test)
                    ),
                    "error": float((probs.argmax(1) != y_test).double().mean()),
                    "ece": expected_calibration_error(probs, y_test, n_bins=n_bins),
                }
            )

    fit(ctx, model, data, epochs, callbacks=[TestMetrics()])
    probs = model.predict_dist(x_test).probs
    curve = reliability_curve(probs, y_test, n_bins=n_bins)
    ece = expected_calibration_error(probs, y_test, n_bins=n_bins)

    fig, (ax_r, ax_t) = subplots(1, 2, width=10.5, height=4.0)
    edges = curve["edges"].numpy()
    centres = (edges[:-1] + edges[1:]) / 2
    filled = curve["count"].numpy() > 0
    ax_r.plot([0, 1], [0, 1], color="black", ls="--", lw=1, label="perfect calibration")
    ax_r.bar(
        centres[filled],
        curve["accuracy"].numpy()[filled],
        width=1 / n_bins * 0.9,
        color=HETERO,
        alpha=0.75,
        label="accuracy in bin",
    )
    ax_r.plot(
        curve["confidence"].numpy()[filled],
        curve["accuracy"].numpy()[filled],
        "o",
        color=PALETTE[4],
        ms=4,
        label="(mean confidence, accuracy)",
    )
    share = curve["count"].numpy() / curve["count"].numpy().sum()
    ax_r.bar(
        centres,
        share * 0.25,
        width=1 / n_bins * 0.9,
        bottom=0,
        color=PALETTE[1],
        alpha=0.8,
        label="share of predictions (×0.25)",
    )
    ax_r.set_xlim(0, 1)
    ax_r.set_ylim(0, 1.02)
    ax_r.set_xlabel("confidence (largest class probability)")
    ax_r.set_ylabel("accuracy")
    ax_r.set_title(f"(a) reliability diagram, ECE = {ece:.3f}")
    ax_r.legend(loc="upper left", fontsize=8)

    ep = [h["epoch"] for h in history]
    ax_t.plot(ep, [h["nll"] for h in history], color=PALETTE[3], label="test NLL (nats)")
    ax_t.plot(ep, [h["error"] for h in history], color=PALETTE[2], label="test error rate")
    ax_t.plot(ep, [h["ece"] for h in history], color=PALETTE[4], label="test ECE")
    ax_t.set_yscale("log")
    ax_t.set_xlabel("epoch")
    ax_t.set_title("(b) over training")
    ax_t.legend(loc="upper right", fontsize=8)

    best = min(history, key=lambda h: h["nll"])
    conf = probs.max(1).values
    numbers = {
        "epochs": epochs,
        "n_test": len(y_test),
        "ece": ece,
        "accuracy": float((probs.argmax(1) == y_test).double().mean()),
        "test_nll": history[-1]["nll"],
        "best_nll": best["nll"],
        "best_nll_epoch": best["epoch"],
        "best_nll_ece": best["ece"],
        "mean_confidence": float(conf.mean()),
        "share_above_099_percent": 100 * float((conf > 0.99).double().mean()),
    }
    return fig, numbers


@figure(
    "regression_calibration",
    chapter="probabilistic-heads",
    params={"levels": [0.5, 0.8, 0.9, 0.95], "bins": 10},
    group="trained-models",  # reuses the models of the four figures above
)
def regression_calibration(ctx: FigureContext, levels: list[float], bins: int):
    """PIT histograms and interval coverage of the chapter's regressors on held-out data.

    Top: PIT histograms (uniform = calibrated) of the homoscedastic and heteroscedastic
    Gaussians on the synthetic data, of the heteroscedastic model on diabetes (first split)
    and of the mixture head. Right: observed coverage of the central intervals against their
    nominal level for every model.
    """
    data = heteroscedastic_data(ctx)
    synth = synthetic_models(ctx)
    x_syn, y_syn = (t.cpu() for t in data.tensors("test"))
    dia = diabetes_runs(ctx)[0]
    mix = mixture_models(ctx)
    counts = count_models(ctx)
    cases = {
        "synthetic_homoscedastic": (synth["homoscedastic"].predict_dist(x_syn), y_syn),
        "synthetic_heteroscedastic": (synth["heteroscedastic"].predict_dist(x_syn), y_syn),
        "diabetes_homoscedastic": (dia["homoscedastic"]["dist"], dia["homoscedastic"]["y"]),
        "diabetes_heteroscedastic": (dia["heteroscedastic"]["dist"], dia["heteroscedastic"]["y"]),
        "inverse_sine_gaussian": (mix["gaussian"].predict_dist(mix["test"][0]), mix["test"][1]),
        "inverse_sine_mixture": (mix["mixture"].predict_dist(mix["test"][0]), mix["test"][1]),
        "counts_poisson": (counts["poisson"].predict_dist(counts["test"][0]), counts["test"][1]),
    }
    cases_extra: dict[str, float] = {}
    labels = {
        "synthetic_homoscedastic": "synthetic, one σ",
        "synthetic_heteroscedastic": "synthetic, σ(x)",
        "diabetes_homoscedastic": "diabetes, one σ",
        "diabetes_heteroscedastic": "diabetes, σ(x)",
        "inverse_sine_gaussian": "inverse sine, Gaussian",
        "inverse_sine_mixture": "inverse sine, mixture",
        "counts_poisson": "counts, Poisson",
    }
    # Coverage can look right on average and still be wrong everywhere: split the synthetic
    # test inputs into the quiet left half and the noisy right half.
    left = x_syn[:, 0] < 0
    for name in ("synthetic_homoscedastic", "synthetic_heteroscedastic"):
        dist, y = cases[name]
        for side, mask in (("left", left), ("right", ~left)):
            part = D.Normal(dist.mean[mask], dist.stddev[mask])
            numbers_side = interval_coverage(part, y[mask], [0.9])[0.9]
            cases_extra[f"{name}_cov90_{side}"] = 100 * numbers_side
    fig = _calibration_layout()
    axes = fig.axes
    shown = [
        "synthetic_homoscedastic",
        "synthetic_heteroscedastic",
        "diabetes_heteroscedastic",
        "inverse_sine_mixture",
    ]
    numbers: dict[str, Any] = dict(cases_extra)
    gen = torch.Generator().manual_seed(ctx.seed)
    for name, (dist, y) in cases.items():
        u = pit(dist, y, generator=gen)
        density, ks = pit_histogram(u, bins=bins)
        cov = interval_coverage(dist, y, levels)
        numbers[f"{name}_ks"] = ks
        numbers[f"{name}_n"] = len(y)
        for level, c in cov.items():
            numbers[f"{name}_cov{round(100 * level)}"] = 100 * c
        if name in shown:
            ax = axes[shown.index(name)]
            ax.bar(
                (np.arange(bins) + 0.5) / bins,
                density.numpy(),
                width=0.9 / bins,
                color=HOMO if "homo" in name else HETERO,
                alpha=0.8,
            )
            ax.axhline(1.0, color="black", ls="--", lw=1)
            ax.set_title(f"{labels[name]}\nKS = {ks:.3f}", fontsize=9)
            ax.set_xlabel("PIT value")
            ax.set_ylim(0, max(2.2, float(density.max()) * 1.1))
    axes[0].set_ylabel("density")
    axes[2].set_ylabel("density")
    ax_c = axes[4]
    ax_c.plot([0.4, 1], [0.4, 1], color="black", ls="--", lw=1, label="nominal")
    markers = "osD^v<>"
    for i, name in enumerate(cases):
        ax_c.plot(
            levels,
            [numbers[f"{name}_cov{round(100 * lv)}"] / 100 for lv in levels],
            marker=markers[i],
            ms=4,
            lw=1.2,
            # the simpler baseline of each pair dotted, the better-suited model solid
            ls=":" if name.endswith(("_homoscedastic", "_gaussian")) else "-",
            color=PALETTE[i % len(PALETTE)],
            label=labels[name],
        )
    ax_c.set_xlabel("nominal level of the central interval")
    ax_c.set_ylabel("observed coverage (held-out)")
    ax_c.set_title("interval coverage")
    ax_c.legend(loc="upper left", fontsize=7)
    numbers["levels"] = ", ".join(f"{round(100 * lv)} %" for lv in levels)
    for name in cases:
        numbers[f"{name}_label"] = labels[name]
    return fig, numbers


def _calibration_layout():
    fig, _ = subplots(1, 1, width=11.0, height=5.0)
    fig.clear()
    grid = fig.add_gridspec(2, 3, width_ratios=[1, 1, 1.5])
    for r in range(2):
        for c in range(2):
            fig.add_subplot(grid[r, c])
    fig.add_subplot(grid[:, 2])
    return fig


__all__ = [
    "count_models",
    "diabetes_runs",
    "heteroscedastic_data",
    "mixture_models",
    "synthetic_models",
]
