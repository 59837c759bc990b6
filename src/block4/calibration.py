"""Calibration checks: can the predicted probabilities be taken at their word?

A probabilistic model is *calibrated* when its stated probabilities match observed
frequencies: of all the days a weather model says "70 % rain", it rains on about 70 %. This
module holds the few tools the course uses to check that on held-out data.

Classifiers:

- [`reliability_curve`][block4.calibration.reliability_curve] bins the predicted confidence
  (the largest class probability) and compares each bin's mean confidence with its
  accuracy -- the reliability diagram;
- [`expected_calibration_error`][block4.calibration.expected_calibration_error] (ECE) is the
  count-weighted mean gap between the two, computed by ``torchmetrics``.

Regressors (any ``torch.distributions`` predictive distribution with one value per example):

- [`pit`][block4.calibration.pit] is the probability integral transform
  \\( u_i = F_i(y_i) \\), the predicted CDF at the observed target. For a calibrated model
  the \\( u_i \\) are uniform on \\([0, 1]\\): a U-shaped histogram means too narrow
  (over-confident), a hump means too wide;
- [`interval_coverage`][block4.calibration.interval_coverage] is the fraction of targets
  inside the central ``level`` interval (e.g. 90 %), which should be close to ``level``;
- [`central_interval`][block4.calibration.central_interval] gives those intervals, for
  plotting bands.

Counts (a ``Poisson`` prediction) get the *randomised* PIT, which is uniform for a calibrated
discrete model too. This module does not import Lightning.

Examples:
    >>> import torch
    >>> from torch.distributions import Normal
    >>> y = torch.tensor([0.0, 1.0, -1.0])
    >>> pit(Normal(torch.zeros(3), torch.ones(3)), y)
    tensor([0.5000, 0.8413, 0.1587])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import distributions as D

__all__ = [
    "DEFAULT_LEVELS",
    "central_interval",
    "cdf",
    "expected_calibration_error",
    "interval_coverage",
    "pit",
    "pit_histogram",
    "quantile",
    "reliability_curve",
]

# Seed of the randomised PIT inside interval_coverage; deliberately not 0, the seed data is
# most often drawn with (the same uniforms would then be reused).
_COVERAGE_SEED = 7_919

#: Interval levels of the coverage tables.
DEFAULT_LEVELS: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95)


def _check_levels(levels: Sequence[float]) -> None:
    for level in levels:
        if not (isinstance(level, (int, float)) and 0.0 < float(level) < 1.0):
            raise ValueError(f"interval levels must lie strictly between 0 and 1, got {level!r}")


def _check_targets(dist: D.Distribution, y: torch.Tensor) -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(y).__name__}")
    if dist.event_shape != ():
        raise ValueError(
            f"calibration needs one scalar target per example; the distribution has event shape "
            f"{tuple(dist.event_shape)}"
        )
    expected = tuple(dist.batch_shape)
    if tuple(y.shape) != expected:
        if y.dim() == len(expected) + 1 and y.shape[-1] == 1 and tuple(y.shape[:-1]) == expected:
            y = y.squeeze(-1)
        else:
            raise ValueError(
                f"targets of shape {tuple(y.shape)} do not match the distribution's batch shape "
                f"{expected}; pass one target per example"
            )
    return y


def cdf(dist: D.Distribution, y: torch.Tensor) -> torch.Tensor:
    """The predicted cumulative distribution function ``P(Y <= y)``, one value per example.

    Uses ``dist.cdf`` where PyTorch implements it (``Normal``, ``Laplace``, a
    ``MixtureSameFamily`` of those, ...) and closed forms where it does not: the regularised
    incomplete gamma function for ``Poisson`` and the regularised incomplete beta function
    (SciPy) for ``StudentT``.

    Args:
        dist: a distribution with scalar events and batch shape ``(N,)``.
        y: values of shape ``(N,)`` (or ``(N, 1)``).

    Returns:
        A tensor of shape ``(N,)`` with values in ``[0, 1]``.

    Raises:
        NotImplementedError: for a distribution without a known CDF.
    """
    y = _check_targets(dist, y)
    if isinstance(dist, D.Poisson):
        # P(Y <= k) = Q(k + 1, rate), the regularised upper incomplete gamma function.
        k = torch.floor(y.to(dist.rate.dtype))
        out = torch.special.gammaincc(k.clamp(min=0) + 1.0, dist.rate)
        return torch.where(k < 0, torch.zeros_like(out), out)
    if isinstance(dist, D.StudentT):
        from scipy import stats

        z = ((y - dist.loc) / dist.scale).detach().cpu().double().numpy()
        df = dist.df.detach().cpu().double().numpy()
        return torch.as_tensor(stats.t.cdf(z, df), dtype=dist.loc.dtype, device=dist.loc.device)
    try:
        return dist.cdf(y.to(dist.mean.dtype))
    except NotImplementedError as err:
        raise NotImplementedError(
            f"no CDF known for {type(dist).__name__}; supported: distributions with .cdf "
            f"(Normal, Laplace, a MixtureSameFamily of them, ...), Poisson and StudentT"
        ) from err


def pit(
    dist: D.Distribution, y: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Probability integral transform: the predicted CDF at each observed target.

    For a continuous prediction this is \\( u_i = F_i(y_i) \\). For counts (``Poisson``) it is
    the randomised PIT \\( u_i = F_i(y_i - 1) + v_i\\,(F_i(y_i) - F_i(y_i - 1)) \\) with
    \\( v_i \\sim U(0, 1) \\), which is exactly uniform when the model is right.

    Args:
        dist: predictive distribution, batch shape ``(N,)``.
        y: observed targets, shape ``(N,)``.
        generator: random generator for the randomised PIT of discrete distributions (pass one
            for reproducible histograms).

    Returns:
        ``u`` of shape ``(N,)``; uniform on ``[0, 1]`` for a calibrated model.
    """
    y = _check_targets(dist, y)
    with torch.no_grad():
        if isinstance(dist, D.Poisson):
            upper = cdf(dist, y)
            lower = cdf(dist, y - 1)
            v = torch.rand(upper.shape, generator=generator, dtype=upper.dtype)
            return lower + v.to(upper.device) * (upper - lower)
        return cdf(dist, y)


def pit_histogram(u: torch.Tensor, bins: int = 10) -> tuple[torch.Tensor, float]:
    """Histogram of PIT values as densities, and the largest deviation from uniform.

    Args:
        u: PIT values in ``[0, 1]``.
        bins: number of equal-width bins.

    Returns:
        ``(density, ks)``: ``density`` has ``bins`` entries that average 1 (1 everywhere for a
        perfectly calibrated model); ``ks`` is the Kolmogorov-Smirnov distance
        \\( \\max_t |\\hat F_u(t) - t| \\) between the empirical CDF of ``u`` and the uniform one.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    u = u.detach().double().reshape(-1).cpu()
    if u.numel() == 0:
        raise ValueError("no PIT values given")
    counts = torch.histc(u, bins=bins, min=0.0, max=1.0)
    density = counts / counts.sum() * bins
    s = torch.sort(u).values
    n = s.numel()
    i = torch.arange(1, n + 1, dtype=torch.float64)
    ks = torch.maximum(i / n - s, s - (i - 1) / n).max()
    return density, float(ks)


def interval_coverage(
    dist: D.Distribution,
    y: torch.Tensor,
    levels: Sequence[float] = DEFAULT_LEVELS,
    generator: torch.Generator | None = None,
) -> dict[float, float]:
    """Fraction of targets inside the central ``level`` prediction interval, per level.

    The central interval of level ``L`` runs from the ``(1 - L) / 2`` to the ``(1 + L) / 2``
    quantile, so a target is inside exactly when its PIT value lies between those two numbers;
    that is how it is computed here (no quantile search needed). For a calibrated model the
    coverage is close to ``L``.

    Args:
        dist: predictive distribution, batch shape ``(N,)``.
        y: observed targets, shape ``(N,)``.
        levels: interval levels strictly between 0 and 1.
        generator: random generator of the randomised PIT for counts; by default a generator
            with a fixed seed of its own, so that the result is reproducible.

    Returns:
        ``{level: coverage}`` with coverages in ``[0, 1]``.
    """
    _check_levels(levels)
    if generator is None:
        generator = torch.Generator().manual_seed(_COVERAGE_SEED)
    u = pit(dist, y, generator=generator)
    out = {}
    for level in levels:
        lo, hi = (1.0 - level) / 2.0, (1.0 + level) / 2.0
        out[float(level)] = float(((u >= lo) & (u <= hi)).double().mean())
    return out


def quantile(
    dist: D.Distribution, q: float, *, lower: float | None = None, upper: float | None = None
) -> torch.Tensor:
    """The ``q``-quantile of every distribution in the batch.

    Uses ``dist.icdf`` where PyTorch has it (``Normal``, ...); otherwise bisection on
    [`cdf`][block4.calibration.cdf] (60 halvings, between ``mean -/+ 20 stddev`` unless ``lower``/``upper`` are
    given), which serves mixtures and Student-t predictions.

    Args:
        dist: predictive distribution, batch shape ``(N,)``.
        q: probability strictly between 0 and 1.
        lower: optional lower bracket of the search.
        upper: optional upper bracket of the search.

    Returns:
        Quantiles of shape ``(N,)``.
    """
    _check_levels([q])
    with torch.no_grad():
        try:
            return dist.icdf(torch.full(dist.batch_shape, q, dtype=dist.mean.dtype))
        except (NotImplementedError, AttributeError):
            pass
        if lower is None or upper is None:
            centre = dist.mean if not isinstance(dist, D.StudentT) else dist.loc
            spread = dist.stddev if not isinstance(dist, D.StudentT) else dist.scale
            spread = torch.nan_to_num(spread, nan=1.0, posinf=1.0)
            lo = centre - 20 * spread - 1.0 if lower is None else torch.full_like(centre, lower)
            hi = centre + 20 * spread + 1.0 if upper is None else torch.full_like(centre, upper)
        else:
            shape = dist.batch_shape
            lo, hi = torch.full(shape, float(lower)), torch.full(shape, float(upper))
        for _ in range(60):
            mid = (lo + hi) / 2
            below = cdf(dist, mid) < q
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        return (lo + hi) / 2


def central_interval(dist: D.Distribution, level: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The central ``level`` prediction interval: the ``(1 -/+ level) / 2`` quantiles.

    Args:
        dist: predictive distribution, batch shape ``(N,)``.
        level: e.g. ``0.9`` for the 90 % interval.

    Returns:
        ``(low, high)``, each of shape ``(N,)``.
    """
    _check_levels([level])
    return quantile(dist, (1.0 - level) / 2.0), quantile(dist, (1.0 + level) / 2.0)


def _check_probs(probs: torch.Tensor, targets: torch.Tensor) -> None:
    if probs.dim() != 2:
        raise ValueError(f"probs must have shape (N, n_classes), got {tuple(probs.shape)}")
    if targets.shape != probs.shape[:1]:
        raise ValueError(
            f"targets must have shape ({probs.shape[0]},) to match probs, got {tuple(targets.shape)}"
        )
    if targets.is_floating_point():
        raise TypeError(f"targets must be integer class indices, got dtype {targets.dtype}")
    k = probs.shape[1]
    if bool(((targets < 0) | (targets >= k)).any()):
        raise ValueError(f"class index out of range: targets must lie in [0, {k - 1}]")


def reliability_curve(
    probs: torch.Tensor, targets: torch.Tensor, n_bins: int = 10
) -> dict[str, torch.Tensor]:
    """Data of a reliability diagram: confidence vs accuracy in equal-width bins.

    The confidence of a prediction is its largest class probability; a prediction is correct
    when that class is the target. Bins are ``[0, 1/n_bins), [1/n_bins, 2/n_bins), ...`` as in
    ``torchmetrics``; a confidence of exactly 1 falls into the last bin.

    Args:
        probs: predicted class probabilities, shape ``(N, n_classes)``.
        targets: class indices, shape ``(N,)``.
        n_bins: number of confidence bins.

    Returns:
        A dict of tensors of length ``n_bins``: ``edges`` (``n_bins + 1`` bin edges),
        ``confidence`` (mean confidence per bin, NaN where empty), ``accuracy`` (fraction
        correct per bin, NaN where empty) and ``count`` (predictions per bin).
    """
    _check_probs(probs, targets)
    probs = probs.detach().double().cpu()
    targets = targets.detach().cpu()
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == targets).double()
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)
    index = torch.bucketize(confidence, edges[1:-1], right=True)
    count = torch.bincount(index, minlength=n_bins).double()
    conf_sum = torch.bincount(index, weights=confidence, minlength=n_bins)
    acc_sum = torch.bincount(index, weights=correct, minlength=n_bins)
    nan = torch.full_like(count, float("nan"))
    return {
        "edges": edges,
        "confidence": torch.where(count > 0, conf_sum / count.clamp(min=1), nan),
        "accuracy": torch.where(count > 0, acc_sum / count.clamp(min=1), nan),
        "count": count,
    }


def expected_calibration_error(
    probs: torch.Tensor, targets: torch.Tensor, n_bins: int = 10
) -> float:
    """Expected calibration error (L1, equal-width bins) of a classifier, via ``torchmetrics``.

    \\[ \\mathrm{ECE} = \\sum_b \\frac{n_b}{N}\\,\\bigl|\\mathrm{acc}_b - \\mathrm{conf}_b\\bigr| \\]

    Args:
        probs: predicted class probabilities, shape ``(N, n_classes)``.
        targets: class indices, shape ``(N,)``.
        n_bins: number of confidence bins.

    Returns:
        The ECE, between 0 (calibrated) and 1.
    """
    from torchmetrics.functional.classification import multiclass_calibration_error

    _check_probs(probs, targets)
    value = multiclass_calibration_error(
        probs.detach().float(),
        targets.detach().long(),
        num_classes=probs.shape[1],
        n_bins=n_bins,
        norm="l1",
    )
    return float(value)
