"""Probabilistic output heads: features in, a ``torch.distributions.Distribution`` out.

A head turns the last layer's outputs (the *features*) into the parameters of a probability
distribution over the target. Training then maximises the likelihood of the observed
targets, i.e. minimises the negative log-likelihood

\\[ \\mathrm{NLL} = -\\frac{1}{N} \\sum_{i=1}^N \\log p(y_i \\mid x_i), \\]

which `nll` computes as ``-dist.log_prob(y).mean()`` -- no hand-written loss formulas.

Every head takes ``in_features`` features per example. By default that is exactly the
number of distribution parameters it needs (``head.n_params``: 10 logits for 10 classes, a
mean and a raw scale for a heteroscedastic Gaussian, ...), so the body's last layer produces
them; pass ``in_features=k`` to let the head own a linear layer ``k -> n_params`` instead.

Positive parameters (standard deviations, scales, degrees of freedom) come from
``softplus(raw) + floor``: smooth, always positive, and bounded away from zero so that the
likelihood cannot run off to infinity on a single point.

Because the parameters are valid by construction, the distributions are built with
``validate_args=False`` (no per-step constraint checks). The checks that matter are done
once, with clear messages: the feature width in `Head.forward` and the targets in
`nll` / `check_targets`. Non-finite features (a diverged network) give a NaN
loss, which [`FiniteLossGuard`][block4.callbacks.FiniteLossGuard] reports with its epoch and step.

| head | distribution | `n_params` | targets |
| --- | --- | --- | --- |
| `CategoricalHead(K)` | `Categorical(logits)` | `K` | class indices in [0, K) |
| `GaussianHead()` | `Normal(mu(x), sigma)` | 1 (sigma learned or fixed) | real numbers |
| `GaussianHead(heteroscedastic=True)` | `Normal(mu(x), sigma(x))` | 2 | real numbers |
| `PoissonHead()` | `Poisson(exp(f(x)))` | 1 | counts 0, 1, 2, ... |
| `StudentTHead()` | `StudentT(df, mu(x), s(x))` | 2 | real numbers |
| `MixtureGaussianHead(K)` | mixture of K Normals | 3K | real numbers |

This module does not import Lightning.
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from torch import distributions as D
from torch import nn

__all__ = [
    "HEADS",
    "CategoricalHead",
    "GaussianHead",
    "Head",
    "MixtureGaussianHead",
    "PoissonHead",
    "StudentTHead",
    "check_targets",
    "least_squares",
    "make_head",
    "nll",
    "positive",
]


def positive(raw: torch.Tensor, floor: float) -> torch.Tensor:
    """Map unconstrained ``raw`` values to ``softplus(raw) + floor`` (always > ``floor``)."""
    return F.softplus(raw) + floor


def _inverse_softplus(y: float) -> float:
    # softplus(x) = y  <=>  x = log(exp(y) - 1), written stably for large y.
    return y + math.log(-math.expm1(-y))


class Head(nn.Module):
    """Base class of the heads: checks the feature width, then builds the distribution.

    Subclasses set `n_params` and `param_names` and implement
    `distribution`.

    Attributes:
        n_params: number of distribution parameters per example.
        in_features: width of the features `forward` accepts.
        proj: ``nn.Linear(in_features, n_params)`` if the head owns a projection, else
            ``nn.Identity``.
    """

    param_names: tuple[str, ...] = ()

    def __init__(self, n_params: int, in_features: int | None = None) -> None:
        super().__init__()
        self.n_params = n_params
        if in_features is None:
            self.in_features = n_params
            self.proj: nn.Module = nn.Identity()
        else:
            if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
                raise ValueError(
                    f"in_features must be an integer >= 1 or None, got {in_features!r}"
                )
            self.in_features = in_features
            self.proj = nn.Linear(in_features, n_params)

    def _describe(self) -> str:
        return type(self).__name__

    def check_features(self, features: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``features`` has shape ``(..., in_features)``."""
        if not isinstance(features, torch.Tensor):
            raise TypeError(
                f"{self._describe()} expects a torch.Tensor, got {type(features).__name__}"
            )
        if features.dim() < 1 or features.shape[-1] != self.in_features:
            what = (
                f"the {self.n_params} distribution parameters ({', '.join(self.param_names)})"
                if isinstance(self.proj, nn.Identity)
                else "the input of its linear projection"
            )
            raise ValueError(
                f"{self._describe()} expects features of width {self.in_features} ({what}), "
                f"i.e. shape (batch, {self.in_features}); got shape {tuple(features.shape)}"
            )

    def forward(self, features: torch.Tensor) -> D.Distribution:
        """Return the predictive distribution for each row of ``features``.

        Args:
            features: tensor of shape ``(batch, in_features)``.

        Returns:
            A distribution with ``batch_shape == features.shape[:-1]``.
        """
        self.check_features(features)
        return self.distribution(self.proj(features))

    def distribution(self, params: torch.Tensor) -> D.Distribution:  # pragma: no cover
        """Build the distribution from ``params`` of shape ``(..., n_params)``."""
        raise NotImplementedError


class CategoricalHead(Head):
    """Class probabilities from logits: ``Categorical(logits=features)``.

    Args:
        n_classes: number of classes ``K`` (>= 2).
        in_features: if given, the head owns a linear layer ``in_features -> K``.

    Examples:
        >>> head = CategoricalHead(3)
        >>> dist = head(torch.zeros(2, 3))
        >>> dist.probs[0]
        tensor([0.3333, 0.3333, 0.3333])
    """

    def __init__(self, n_classes: int, in_features: int | None = None) -> None:
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
        super().__init__(n_classes, in_features)
        self.n_classes = n_classes
        self.param_names = (f"{n_classes} logits",)

    def _describe(self) -> str:
        return f"CategoricalHead({self.n_classes})"

    # --8<-- [start:categorical]
    def distribution(self, params: torch.Tensor) -> D.Categorical:
        return D.Categorical(logits=params, validate_args=False)

    # --8<-- [end:categorical]


class GaussianHead(Head):
    """A Normal distribution over a real-valued target.

    Three flavours:

    - ``GaussianHead()``: homoscedastic, one feature (the mean ``mu(x)``) and one learned
      ``sigma`` shared by all inputs (a scalar parameter, ``softplus + floor``).
    - ``GaussianHead(sigma=20.0)``: the same with ``sigma`` fixed (not trained); with a fixed
      sigma, maximising the likelihood is least squares.
    - ``GaussianHead(heteroscedastic=True)``: two features per example, the mean and a raw
      scale; ``sigma(x) = softplus(raw) + min_sigma``.

    Args:
        heteroscedastic: whether sigma depends on the input.
        sigma: a fixed standard deviation (homoscedastic only); ``None`` learns it.
        min_sigma: the floor added to every softplus-sigma.
        init_sigma: starting value of the learned shared sigma.
        in_features: if given, the head owns a linear layer ``in_features -> n_params``.
    """

    def __init__(
        self,
        heteroscedastic: bool = False,
        sigma: float | None = None,
        min_sigma: float = 1e-3,
        init_sigma: float = 1.0,
        in_features: int | None = None,
    ) -> None:
        if not min_sigma > 0:
            raise ValueError(f"min_sigma must be > 0, got {min_sigma!r}")
        if sigma is not None:
            if heteroscedastic:
                raise ValueError(
                    "a fixed sigma contradicts heteroscedastic=True; pass sigma=None to predict "
                    "sigma(x), or heteroscedastic=False to keep sigma fixed"
                )
            if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
                raise ValueError(f"sigma must be a finite number > 0 or None, got {sigma!r}")
        if not init_sigma > min_sigma:
            raise ValueError(f"init_sigma must be > min_sigma={min_sigma}, got {init_sigma!r}")
        super().__init__(2 if heteroscedastic else 1, in_features)
        self.heteroscedastic = heteroscedastic
        self.min_sigma = min_sigma
        self.fixed_sigma = None if sigma is None else float(sigma)
        self.param_names = ("mean", "raw sigma") if heteroscedastic else ("mean",)
        if not heteroscedastic and sigma is None:
            raw = _inverse_softplus(init_sigma - min_sigma)
            self.raw_sigma = nn.Parameter(torch.tensor(raw))
        else:
            self.register_parameter("raw_sigma", None)

    def _describe(self) -> str:
        if self.heteroscedastic:
            return "GaussianHead(heteroscedastic=True)"
        if self.fixed_sigma is not None:
            return f"GaussianHead(sigma={self.fixed_sigma:g})"
        return "GaussianHead(heteroscedastic=False)"

    @property
    def sigma(self) -> torch.Tensor | None:
        """The shared sigma (fixed or learned) of a homoscedastic head; ``None`` otherwise."""
        if self.heteroscedastic:
            return None
        if self.fixed_sigma is not None:
            return torch.tensor(self.fixed_sigma)
        return positive(self.raw_sigma, self.min_sigma)

    # --8<-- [start:gaussian]
    def distribution(self, params: torch.Tensor) -> D.Normal:
        mu = params[..., 0]
        if self.heteroscedastic:
            scale = positive(params[..., 1], self.min_sigma)
        elif self.fixed_sigma is not None:
            scale = torch.full_like(mu, self.fixed_sigma)
        else:
            scale = positive(self.raw_sigma, self.min_sigma).expand_as(mu)
        return D.Normal(mu, scale, validate_args=False)

    # --8<-- [end:gaussian]


class PoissonHead(Head):
    """Counts: ``Poisson(rate = exp(f))`` from one feature ``f`` (the log-rate).

    Args:
        in_features: if given, the head owns a linear layer ``in_features -> 1``.
    """

    param_names = ("log rate",)

    def __init__(self, in_features: int | None = None) -> None:
        super().__init__(1, in_features)

    # --8<-- [start:poisson]
    def distribution(self, params: torch.Tensor) -> D.Poisson:
        return D.Poisson(rate=torch.exp(params[..., 0]), validate_args=False)

    # --8<-- [end:poisson]


class StudentTHead(Head):
    """A Student-t over a real target: heavy tails for data with outliers.

    Two features per example, the location and a raw scale
    (``scale(x) = softplus(raw) + min_scale``). The degrees of freedom ``df`` are either fixed
    or one learned scalar shared by all inputs (``softplus(raw) + min_df``).

    Args:
        df: fixed degrees of freedom (> 0), or ``None`` to learn them.
        min_scale: floor of the scale.
        min_df: floor of the learned degrees of freedom.
        init_df: starting value of the learned degrees of freedom.
        in_features: if given, the head owns a linear layer ``in_features -> 2``.
    """

    param_names = ("location", "raw scale")

    def __init__(
        self,
        df: float | None = None,
        min_scale: float = 1e-3,
        min_df: float = 0.5,
        init_df: float = 5.0,
        in_features: int | None = None,
    ) -> None:
        if df is not None and not (isinstance(df, (int, float)) and math.isfinite(df) and df > 0):
            raise ValueError(f"df must be a finite number > 0 or None, got {df!r}")
        if not min_scale > 0:
            raise ValueError(f"min_scale must be > 0, got {min_scale!r}")
        if not (min_df > 0 and init_df > min_df):
            raise ValueError(f"need 0 < min_df < init_df, got min_df={min_df}, init_df={init_df}")
        super().__init__(2, in_features)
        self.min_scale = min_scale
        self.min_df = min_df
        self.fixed_df = None if df is None else float(df)
        if df is None:
            self.raw_df = nn.Parameter(torch.tensor(_inverse_softplus(init_df - min_df)))
        else:
            self.register_parameter("raw_df", None)

    @property
    def df(self) -> torch.Tensor:
        """The degrees of freedom (fixed or learned)."""
        if self.fixed_df is not None:
            return torch.tensor(self.fixed_df)
        return positive(self.raw_df, self.min_df)

    # --8<-- [start:student_t]
    def distribution(self, params: torch.Tensor) -> D.StudentT:
        loc = params[..., 0]
        scale = positive(params[..., 1], self.min_scale)
        if self.fixed_df is not None:
            df = torch.full_like(loc, self.fixed_df)
        else:
            df = positive(self.raw_df, self.min_df).expand_as(loc)
        return D.StudentT(df, loc, scale, validate_args=False)

    # --8<-- [end:student_t]


class MixtureGaussianHead(Head):
    """A mixture of ``K`` Normals: multimodal predictive distributions.

    ``3K`` features per example, read as ``[K mixture logits | K means | K raw scales]``;
    ``sigma_k(x) = softplus(raw_k) + min_sigma``. Returns
    ``MixtureSameFamily(Categorical(logits), Normal(means, sigmas))``.

    Args:
        n_components: number of mixture components ``K`` (>= 1).
        min_sigma: floor of each component's standard deviation.
        in_features: if given, the head owns a linear layer ``in_features -> 3K``.
    """

    def __init__(
        self, n_components: int, min_sigma: float = 1e-3, in_features: int | None = None
    ) -> None:
        if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
            raise ValueError(f"n_components must be an integer >= 1, got {n_components!r}")
        if not min_sigma > 0:
            raise ValueError(f"min_sigma must be > 0, got {min_sigma!r}")
        super().__init__(3 * n_components, in_features)
        self.n_components = n_components
        self.min_sigma = min_sigma
        k = n_components
        self.param_names = (f"{k} logits", f"{k} means", f"{k} raw sigmas")

    def _describe(self) -> str:
        return f"MixtureGaussianHead({self.n_components})"

    # --8<-- [start:mixture]
    def distribution(self, params: torch.Tensor) -> D.MixtureSameFamily:
        logits, mu, raw = params.split(self.n_components, dim=-1)
        components = D.Normal(mu, positive(raw, self.min_sigma), validate_args=False)
        mixing = D.Categorical(logits=logits, validate_args=False)
        return D.MixtureSameFamily(mixing, components, validate_args=False)

    # --8<-- [end:mixture]


def _describe_values(bad: torch.Tensor, y: torch.Tensor) -> str:
    idx = bad.reshape(-1).nonzero()[:3].reshape(-1).tolist()
    values = y.reshape(-1)[idx].tolist()
    return f"{int(bad.sum())} of {y.numel()} values, e.g. {values} at flat positions {idx}"


def check_targets(dist: D.Distribution, y: torch.Tensor) -> torch.Tensor:
    """Validate targets ``y`` against ``dist`` and return them in the shape it expects.

    A trailing dimension of size 1 (targets of shape ``(N, 1)`` for a distribution of batch
    shape ``(N,)``) is squeezed; any other shape mismatch is an error, because
    ``log_prob`` would silently broadcast ``(N, 1)`` against ``(N,)`` to ``(N, N)``.

    Raises:
        TypeError: if ``y`` is not a tensor, or class targets are not integers.
        ValueError: for a shape mismatch, NaN/inf targets, class indices out of range, or
            negative / non-integer counts for a Poisson distribution.
    """
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(y).__name__}")
    expected = tuple(dist.batch_shape + dist.event_shape)
    if tuple(y.shape) != expected:
        if y.dim() == len(expected) + 1 and y.shape[-1] == 1 and tuple(y.shape[:-1]) == expected:
            y = y.squeeze(-1)
        else:
            raise ValueError(
                f"targets of shape {tuple(y.shape)} do not match the predicted distribution's "
                f"shape {expected}; pass one target per example, shape {expected}"
            )
    name = type(dist).__name__
    if isinstance(dist, D.Categorical):
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise TypeError(
                f"class targets must be an integer tensor (e.g. torch.long) of class indices, "
                f"got dtype {y.dtype}"
            )
        k = dist.logits.shape[-1]
        bad = (y < 0) | (y >= k)
        if bool(bad.any()):
            raise ValueError(
                f"class index out of range: targets must lie in [0, {k - 1}] for {k} classes; "
                f"got {_describe_values(bad, y)}"
            )
        return y
    if y.is_floating_point():
        bad = ~torch.isfinite(y)
        if bool(bad.any()):
            raise ValueError(
                f"targets contain NaN or infinite values ({_describe_values(bad, y)}); "
                f"{name} targets must be finite numbers -- drop or impute these rows"
            )
    if isinstance(dist, D.Poisson):
        bad = y < 0
        if bool(bad.any()):
            raise ValueError(
                f"Poisson targets must be counts 0, 1, 2, ...; got negative values "
                f"({_describe_values(bad, y)})"
            )
        if y.is_floating_point():
            bad = y != torch.round(y)
            if bool(bad.any()):
                raise ValueError(
                    f"Poisson targets must be counts 0, 1, 2, ...; got non-integer values "
                    f"({_describe_values(bad, y)})"
                )
        else:
            y = y.to(dist.rate.dtype)
    elif not y.is_floating_point() and dist.event_shape == ():
        param = (
            dist.mean
            if not isinstance(dist, D.MixtureSameFamily)
            else dist.mixture_distribution.logits
        )
        y = y.to(param.dtype)
    return y


def nll(dist: D.Distribution, y: torch.Tensor, validate: bool = True) -> torch.Tensor:
    """Mean negative log-likelihood of targets ``y`` under ``dist``: ``-dist.log_prob(y).mean()``.

    Args:
        dist: the predictive distribution (e.g. the output of a head).
        y: one target per example; see `check_targets`.
        validate: run `check_targets` first (clear errors instead of silent broadcasting
            or a cryptic support error). Costs a few microseconds per call.

    Returns:
        A scalar tensor (differentiable with respect to the distribution's parameters).

    Examples:
        >>> dist = GaussianHead(sigma=20.0)(torch.tensor([[111.0]]))
        >>> round(float(torch.exp(-nll(dist, torch.tensor([131.0])))), 5)  # f(131; 111, 20)
        0.0121
    """
    if validate:
        y = check_targets(dist, y)
    return -dist.log_prob(y).mean()


#: Head names accepted by `make_head`.
HEADS: dict[str, type[Head]] = {
    "categorical": CategoricalHead,
    "gaussian": GaussianHead,
    "poisson": PoissonHead,
    "student_t": StudentTHead,
    "mixture": MixtureGaussianHead,
}


def make_head(name: str, **options: object) -> Head:
    """Build a head from its name and keyword options (used by LightningCLI and checkpoints).

    Args:
        name: one of ``categorical, gaussian, poisson, student_t, mixture``.
        **options: keyword arguments of that head's class (e.g. ``heteroscedastic=True``,
            ``n_components=3``, ``df=4.0``).

    Raises:
        ValueError: for an unknown name, or an option the head does not take.

    Examples:
        >>> make_head("mixture", n_components=2).n_params
        6
    """
    if name not in HEADS:
        raise ValueError(f"head {name!r} is not supported; choose one of: {', '.join(HEADS)}")
    cls = HEADS[name]
    allowed = [p for p in inspect.signature(cls).parameters if p != "self"]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"option(s) {', '.join(unknown)} not accepted by {cls.__name__}; "
            f"allowed: {', '.join(allowed) or 'none'}"
        )
    return cls(**options)  # type: ignore[arg-type]


def least_squares(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """The line ``y ~ a + b x`` of least squares in closed form: ``(intercept a, slope b)``.

    With a fixed sigma, ``GaussianHead(sigma=...)`` on a linear body has its maximum
    likelihood exactly here. The normal equations \\( (X^\\top X)\\,(a, b) = X^\\top y \\) are
    solved by Cramer's rule from sums that `math.fsum` rounds exactly, so the answer is the
    same bit for bit on every run (LAPACK's ``gelsy``, the default of
    ``torch.linalg.lstsq`` on the CPU, can differ in the last bits between two calls).

    Raises:
        ValueError: ``x`` and ``y`` are not 1-D of one length, or ``x`` has fewer than two
            distinct values (no line is determined).
    """
    if x.ndim != 1 or y.shape != x.shape:
        raise ValueError(
            f"least_squares: x and y must be 1-D tensors of one length, got shapes "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    xs, ys = x.double().tolist(), y.double().tolist()
    n, sx, sy = len(xs), math.fsum(xs), math.fsum(ys)
    sxx = math.fsum(v * v for v in xs)
    sxy = math.fsum(u * v for u, v in zip(xs, ys, strict=True))
    det = n * sxx - sx * sx
    if not det > 0:
        raise ValueError(
            f"least_squares: x needs at least two distinct values to determine a line, got {n} "
            f"value(s) with {len(set(xs))} distinct"
        )
    return (sxx * sy - sx * sxy) / det, (n * sxy - sx * sy) / det
