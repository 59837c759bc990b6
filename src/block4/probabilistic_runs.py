"""Training runs of the probabilistic chapters: many small regressors, trained as one stack.

Every comparison in the chapters "Maximum likelihood" and "Probabilistic heads" is repeated
over several seeds (or data splits). Runs of one shape train together as the members of one
[`ProbabilisticRegressor`][block4.modules.ProbabilisticRegressor] (``members=E``): member
``k`` has its own initial weights, its own data set (`MemberData`) or its own batch order,
and the gradient of its own run. Each ``*_runs`` function here trains such stacks with a
Lightning ``Trainer`` and returns plain data (nested dicts of tensors and numbers: the
parameters of the predicted distributions on a grid and on held-out points), which the
figure functions draw and summarise. Several figures use the same runs; called through
``ctx.compute`` the pipeline computes them once.

The one-sigma ("homoscedastic") Gaussian models are trained with sigma fixed at 1 and then
given their maximum-likelihood sigma, the root mean squared training residual: the best mean
of a Gaussian with one shared sigma does not depend on sigma (chapter "Maximum likelihood"),
and a stack cannot hold a head parameter per member.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import distributions as D

from block4.data import (
    DiabetesDataModule,
    HeteroscedasticDataModule,
    count_rate,
    make_counts,
    make_inverse_sine,
    pass_generator,
)
from block4.modules import ProbabilisticRegressor
from block4.training import RunContext, trainer

__all__ = [
    "BestMemberState",
    "MemberData",
    "count_runs",
    "diabetes_runs",
    "fit_members",
    "gaussian_members",
    "ml_sigma",
    "mixture_runs",
    "synthetic_runs",
]

Tensor = torch.Tensor


class MemberData:
    """Mini-batches of one data set per member: member ``k`` trains on ``(x[k], y[k])``.

    Yields ``x`` of shape ``[E, B, F]`` and ``y`` of shape ``[E, B]``; member ``k``'s rows
    are the batch a single run on its own data with seed ``seed + k`` would see (a new
    permutation every pass over the data, from `block4.data.pass_generator` ``(seed + k,
    pass)``). Lightning takes it as a training "dataloader"; one Lightning epoch is ``passes``
    passes over the data.

    Args:
        x: ``[E, n, F]`` inputs, one data set per member (all of ``n`` examples).
        y: ``[E, n]`` targets.
        batch_size: examples per batch (the last batch of a pass may be smaller).
        seed: base seed of the batch orders.
        passes: passes over the data per Lightning epoch. Small data sets train in few
            steps per pass, and Lightning's per-epoch bookkeeping (metrics of every member)
            then costs more than the steps: several passes per epoch amortise it.

    Raises:
        ValueError: when ``x`` is not ``[E, n, F]``, ``y`` not ``[E, n]`` of the same
            ``E`` and ``n``, or ``batch_size < 1``.
    """

    def __init__(
        self, x: Tensor, y: Tensor, batch_size: int, seed: int = 0, passes: int = 1
    ) -> None:
        if x.dim() != 3 or y.shape != x.shape[:2]:
            raise ValueError(
                f"x must be [members, n, features] and y [members, n], got {tuple(x.shape)} "
                f"and {tuple(y.shape)}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
            raise ValueError(f"passes must be an integer >= 1, got {passes!r}")
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.passes = passes
        self.members = x.shape[0]
        self.epoch = 0
        self.sampler = self  # Lightning calls sampler.set_epoch(epoch)
        self.batch_sampler = None

    def batches_per_pass(self) -> int:
        """Mini-batches in one pass over the data."""
        return math.ceil(self.x.shape[1] / self.batch_size)

    def __len__(self) -> int:
        return self.passes * self.batches_per_pass()

    def set_epoch(self, epoch: int) -> None:
        """Use the permutations of Lightning epoch ``epoch`` next."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n, bs = self.x.shape[1], self.batch_size
        rows = torch.arange(self.members)[:, None]
        for p in range(self.epoch * self.passes, (self.epoch + 1) * self.passes):
            orders = torch.stack(
                [
                    torch.randperm(n, generator=pass_generator(self.seed + k, p))
                    for k in range(self.members)
                ]
            )
            for i in range(self.batches_per_pass()):
                j = orders[:, i * bs : (i + 1) * bs]
                yield self.x[rows, j], self.y[rows, j]
        self.epoch += 1


def _check_members(members: object) -> None:
    """The runs here stack at least two members (a single network has no member dimension)."""
    if isinstance(members, bool) or not isinstance(members, int) or members < 2:
        raise ValueError(f"the runs need at least 2 members (seeds, splits), got {members!r}")


def gaussian_members(
    members: int, seed: int, *, heteroscedastic: bool, in_features: int = 1, **options: Any
) -> ProbabilisticRegressor:
    """``members`` Gaussian regressors as one stack: sigma(x) from the network, or (for the
    one-sigma model) sigma fixed at 1 during training, see `ml_sigma`.

    ``options`` are further `ProbabilisticRegressor` arguments (body, optimiser, lr).
    """
    _check_members(members)
    head_options = None if heteroscedastic else {"sigma": 1.0}
    return ProbabilisticRegressor(
        in_features=in_features,
        head="gaussian",
        heteroscedastic=heteroscedastic,
        head_options=head_options,
        members=members,
        seed=seed,
        **options,
    )


def fit_members(
    ctx: RunContext,
    model: ProbabilisticRegressor,
    batches: Any,
    epochs: int,
    callbacks: Sequence[pl.Callback] = (),
) -> ProbabilisticRegressor:
    """Train a stacked ``model`` on ``batches`` (no validation loop); CPU, evaluation mode.

    Members that diverge are frozen by the module itself (``model.member_active``).
    """
    run = trainer(
        ctx,
        max_epochs=epochs,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=list(callbacks),
    )
    run.fit(model, train_dataloaders=batches)
    return model.cpu().eval()


def ml_sigma(model: ProbabilisticRegressor, x: Tensor, y: Tensor) -> Tensor:
    """``[E]`` maximum-likelihood shared sigma of each member: the root mean squared residual
    of its predicted means on its training data ``x`` (``[E, n, F]`` or shared ``[n, F]``)."""
    mean = model.member_dists(x).mean
    return (mean - y).pow(2).mean(-1).sqrt()


def _normal(model: ProbabilisticRegressor, x: Tensor, sigma: Tensor | None) -> dict[str, Tensor]:
    """``{"mean", "sigma"}`` ``[E, m]`` of each member at ``x`` (``sigma``: a fixed ``[E]``)."""
    dist = model.member_dists(x)
    scale = dist.stddev if sigma is None else sigma[:, None].expand_as(dist.mean)
    return {"mean": dist.mean.clone(), "sigma": scale.clone()}


def _member_summary(model: ProbabilisticRegressor) -> dict[str, Any]:
    return {
        "diverged": [k for k, ok in enumerate(model.member_active.tolist()) if not ok],
        "members": model.members,
    }


class BestMemberState(pl.Callback):
    """Early stopping in hindsight, per member: keep each member's weights of its best
    validation NLL (every epoch is trained).

    After every training epoch the NLL of each member on its own validation data is
    computed (``x_val`` ``[E, m, F]``, ``y_val`` ``[E, m]``); a member that improved has its
    slice of the stacked weights copied. `restore` puts the best weights back. For a
    one-sigma model (``train`` given) the sigma of each epoch is `ml_sigma` on the training
    data.
    """

    def __init__(
        self, x_val: Tensor, y_val: Tensor, train: tuple[Tensor, Tensor] | None = None
    ) -> None:
        self.x_val, self.y_val, self.train = x_val, y_val, train
        self.best: Tensor | None = None
        self.best_epoch: Tensor | None = None
        self.state: dict[str, Tensor] = {}

    def val_nll(self, module: ProbabilisticRegressor) -> Tensor:
        dist = module.member_dists(self.x_val)
        if self.train is not None:
            sigma = ml_sigma(module, *self.train)
            dist = D.Normal(dist.mean, sigma[:, None].expand_as(dist.mean))
        return -dist.log_prob(self.y_val.to(dist.mean.device)).mean(-1).cpu()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        nll = self.val_nll(pl_module)
        if self.best is None:
            self.best = torch.full_like(nll, math.inf)
            self.best_epoch = torch.zeros(len(nll), dtype=torch.long)
            self.state = {k: v.detach().clone() for k, v in pl_module.body.state_dict().items()}
        better = nll < self.best
        self.best = torch.where(better, nll, self.best)
        self.best_epoch[better] = trainer.current_epoch + 1
        if bool(better.any()):
            for name, value in pl_module.body.state_dict().items():
                self.state[name][better] = value.detach()[better].to(self.state[name].device)

    def restore(self, module: ProbabilisticRegressor) -> None:
        """Load each member's best weights into ``module``."""
        if self.state:
            module.body.load_state_dict(self.state)


# --------------------------------------------------------------------------------------------
# The runs shared by the figures of the chapter "Probabilistic heads"
# --------------------------------------------------------------------------------------------


def _data_entries(
    x: Tensor, y: Tensor, x_test: Tensor, y_test: Tensor, n: int, shown: int
) -> dict[str, Any]:
    """The data part of a runs result: the first ``shown`` training points of the first seed
    (what a scatter plot shows), the training-set size ``n`` and every seed's test points."""
    return {
        "x_train": x[0, :shown, 0],
        "y_train": y[0, :shown],
        "n_train": n,
        "x_test": x_test[..., 0],
        "y_test": y_test,
    }


def synthetic_runs(ctx: RunContext, n_seeds: int, grid: int = 400) -> dict[str, Any]:
    """One-sigma and sigma(x) Gaussian MLPs on `HeteroscedasticDataModule`, one data draw
    and one initialisation per seed (``ctx.seed + k``), trained as two stacks.

    Returns the grid, the truth on it, the first seed's training data, every seed's test
    data and, for ``"homoscedastic"`` and ``"heteroscedastic"``, ``[E, ...]`` means and
    sigmas on the grid (``"grid"``) and on the test points (``"test"``).
    """
    n = ctx.pick(smoke=400, quick=1500, full=1500)
    steps = ctx.pick(smoke=20, quick=100, full=400)  # full-batch Adam steps
    seeds = [ctx.seed + k for k in range(n_seeds)]
    sets = []
    for s in seeds:
        dm = HeteroscedasticDataModule(n_train=n, n_val=0, n_test=2000, seed=s)
        dm.setup()
        sets.append((dm.tensors("train"), dm.tensors("test")))
    x = torch.stack([tr[0] for tr, _ in sets]).cpu()
    y = torch.stack([tr[1] for tr, _ in sets]).cpu()
    x_test = torch.stack([te[0] for _, te in sets]).cpu()
    y_test = torch.stack([te[1] for _, te in sets]).cpu()
    xs = torch.linspace(HeteroscedasticDataModule.x_low, HeteroscedasticDataModule.x_high, grid)
    out: dict[str, Any] = {
        "seeds": seeds,
        "grid": xs,
        "true_mean": HeteroscedasticDataModule.true_mean(xs),
        "true_sigma": HeteroscedasticDataModule.true_sigma(xs),
        **_data_entries(x, y, x_test, y_test, n, shown=1500),
    }
    for name, het in (("homoscedastic", False), ("heteroscedastic", True)):
        model = gaussian_members(
            len(seeds), ctx.seed, heteroscedastic=het, depth=2, width=32, activation="tanh", lr=2e-2
        )
        fit_members(ctx, model, MemberData(x, y, n, seed=ctx.seed, passes=20), steps // 20)
        sigma = None if het else ml_sigma(model, x, y)
        out[name] = {
            "grid": _normal(model, xs[:, None], sigma),
            "test": _normal(model, x_test, sigma),
            **_member_summary(model),
        }
    return out


def diabetes_runs(ctx: RunContext, n_splits: int) -> dict[str, Any]:
    """One-sigma vs sigma(x) Gaussian MLPs on the diabetes data, one random split per member.

    Split ``k`` (seed ``ctx.seed + k``) draws its own train/val/test patients; both models
    see the same split, keep the weights of their best validation NLL (per member), and are
    scored on the split's test patients. Targets are standardised per split; ``target_std``
    converts back to progression units.
    """
    epochs = ctx.pick(smoke=1, quick=3, full=24)  # of 5 passes (25 steps) each
    splits = [ctx.seed + k for k in range(n_splits)]
    parts: dict[str, list[tuple[Tensor, Tensor]]] = {"train": [], "val": [], "test": []}
    target_std = []
    for s in splits:
        dm = DiabetesDataModule(batch_size=64, seed=s, split_seed=s)
        dm.setup()
        for stage in parts:
            parts[stage].append(tuple(t.cpu() for t in dm.tensors(stage)))  # type: ignore[arg-type]
        target_std.append(dm.target_std)
    data = {
        stage: (torch.stack([p[0] for p in rows]), torch.stack([p[1] for p in rows]))
        for stage, rows in parts.items()
    }
    out: dict[str, Any] = {
        "splits": splits,
        "target_std": torch.tensor(target_std),
        "y_test": data["test"][1],
    }
    for name, het in (("homoscedastic", False), ("heteroscedastic", True)):
        model = gaussian_members(
            len(splits), ctx.seed, heteroscedastic=het, in_features=10, depth=1, width=16,
            optimizer="adamw", lr=3e-3, weight_decay=1e-2,
        )  # fmt: skip
        best = BestMemberState(*data["val"], train=None if het else data["train"])
        batches = MemberData(*data["train"], 64, seed=ctx.seed, passes=5)
        fit_members(ctx, model, batches, epochs, [best])
        best.restore(model)
        sigma = None if het else ml_sigma(model, *data["train"])
        out[name] = {
            "test": _normal(model, data["test"][0], sigma),
            "best_epoch": best.best_epoch,
            **_member_summary(model),
        }
    return out


def _one_feature_data(
    ctx: RunContext, sample: Any, n: int, seeds: list[int]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``[E, n, 1]`` training and ``[E, 2000]`` test data, one draw per seed; the test data
    come from the seed ``10_000 + s``, which no training set uses."""
    train = [sample(n, s) for s in seeds]
    test = [sample(2000, 10_000 + s) for s in seeds]
    return (
        torch.stack([t[0] for t in train]),
        torch.stack([t[1] for t in train]),
        torch.stack([t[0] for t in test]),
        torch.stack([t[1] for t in test]),
    )


def count_runs(ctx: RunContext, n_seeds: int, grid: int = 300) -> dict[str, Any]:
    """A Poisson head and a one-sigma Gaussian head on the synthetic counts, per seed.

    Returns the grid on ``[0, 5]`` with the true rate, training/test data and, per model,
    ``[E, ...]`` parameters on the grid and the test points (Poisson: ``"rate"``).
    """
    n = ctx.pick(smoke=400, quick=1000, full=2000)
    epochs = ctx.pick(smoke=1, quick=2, full=10)  # of 10 passes (40 steps) each
    _check_members(n_seeds)
    seeds = [ctx.seed + k for k in range(n_seeds)]
    x, y, x_test, y_test = _one_feature_data(ctx, make_counts, n, seeds)
    xs = torch.linspace(0.0, 5.0, grid)
    out: dict[str, Any] = {
        "seeds": seeds,
        "grid": xs,
        "true_rate": count_rate(xs),
        **_data_entries(x, y, x_test, y_test, n, shown=1200),
    }
    body = {"depth": 2, "width": 32, "activation": "tanh", "lr": 1e-2}
    poisson = ProbabilisticRegressor(
        in_features=1, head="poisson", members=len(seeds), seed=ctx.seed, **body
    )
    fit_members(ctx, poisson, MemberData(x, y, n // 4, seed=ctx.seed, passes=10), epochs)
    out["poisson"] = {
        "grid": {"rate": poisson.member_dists(xs[:, None]).rate.clone()},
        "test": {"rate": poisson.member_dists(x_test).rate.clone()},
        **_member_summary(poisson),
    }
    gauss = gaussian_members(len(seeds), ctx.seed, heteroscedastic=False, **body)
    fit_members(ctx, gauss, MemberData(x, y, n // 4, seed=ctx.seed, passes=10), epochs)
    sigma = ml_sigma(gauss, x, y)
    out["gaussian"] = {
        "grid": _normal(gauss, xs[:, None], sigma),
        "test": _normal(gauss, x_test, sigma),
        **_member_summary(gauss),
    }
    return out


def _mixture_params(model: ProbabilisticRegressor, x: Tensor) -> dict[str, Tensor]:
    dist = model.member_dists(x)
    comp = dist.component_distribution
    return {
        "logits": dist.mixture_distribution.logits.clone(),
        "loc": comp.loc.clone(),
        "scale": comp.scale.clone(),
    }


def mixture_runs(ctx: RunContext, n_seeds: int, x_probe: float, grid: int = 160) -> dict[str, Any]:
    """A 3-component mixture density head and a sigma(x) Gaussian head on the inverse-sine
    data, per seed; parameters on a grid, at ``x_probe`` and on the test points."""
    n = ctx.pick(smoke=400, quick=1000, full=2000)
    epochs = ctx.pick(smoke=1, quick=2, full=15)  # of 10 passes (40 steps) each
    _check_members(n_seeds)
    seeds = [ctx.seed + k for k in range(n_seeds)]
    x, y, x_test, y_test = _one_feature_data(ctx, make_inverse_sine, n, seeds)
    xs = torch.linspace(float(x[0].min()), float(x[0].max()), grid)
    probe = torch.tensor([[x_probe]])
    out: dict[str, Any] = {
        "seeds": seeds,
        "grid": xs,
        **_data_entries(x, y, x_test, y_test, n, shown=1500),
    }
    body = {"depth": 2, "width": 48, "activation": "tanh"}
    # The mixture with Adam at 1e-2 (the Gaussian's rate) let 2 or 3 of 5 seeds collapse to
    # one wide middle component (which seeds depended on the CPU's rounding); at 3e-3 each
    # of 15 seeds found all three branches. At 3e-3 the Gaussian is not done in 15 epochs.
    mdn = ProbabilisticRegressor(
        in_features=1, head="mixture", head_options={"n_components": 3}, members=len(seeds),
        seed=ctx.seed, lr=3e-3, **body,
    )  # fmt: skip
    fit_members(ctx, mdn, MemberData(x, y, n // 4, seed=ctx.seed, passes=10), epochs)
    out["mixture"] = {
        "grid": _mixture_params(mdn, xs[:, None]),
        "probe": _mixture_params(mdn, probe),
        "test": _mixture_params(mdn, x_test),
        **_member_summary(mdn),
    }
    gauss = gaussian_members(len(seeds), ctx.seed, heteroscedastic=True, lr=1e-2, **body)
    fit_members(ctx, gauss, MemberData(x, y, n // 4, seed=ctx.seed, passes=10), epochs)
    out["gaussian"] = {
        "grid": _normal(gauss, xs[:, None], None),
        "probe": _normal(gauss, probe, None),
        "test": _normal(gauss, x_test, None),
        **_member_summary(gauss),
    }
    return out


def mixture_dist(params: dict[str, Tensor]) -> D.MixtureSameFamily:
    """The Gaussian mixture of ``{"logits", "loc", "scale"}`` (as `mixture_runs` returns)."""
    return D.MixtureSameFamily(
        D.Categorical(logits=params["logits"]),
        D.Normal(params["loc"], params["scale"]),
        validate_args=False,
    )


def normal_dist(params: dict[str, Tensor]) -> D.Normal:
    """The normal of ``{"mean", "sigma"}``."""
    return D.Normal(params["mean"], params["sigma"], validate_args=False)
