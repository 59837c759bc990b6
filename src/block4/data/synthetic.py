"""Synthetic data with a known truth: heteroscedastic regression, counts, a multimodal target,
and a regression with a gap in its inputs."""

from __future__ import annotations

import math

import torch

from block4.data.batches import Batching, TensorDataModule

__all__ = [
    "GAP_TRAIN_RANGES",
    "HeteroscedasticDataModule",
    "count_rate",
    "gap_mean",
    "gap_sigma",
    "make_counts",
    "make_gap_data",
    "make_inverse_sine",
]


class HeteroscedasticDataModule(TensorDataModule):
    """Synthetic 1-D regression whose noise level depends on the input.

    \\( x \\sim \\mathrm{Uniform}(-2, 2) \\) and
    \\( y = \\mu(x) + \\sigma(x)\\,\\varepsilon \\), \\( \\varepsilon \\sim N(0, 1) \\), with

    \\[ \\mu(x) = \\sin(1.5x) + 0.3x, \\qquad \\sigma(x) = 0.1 + 0.1\\,(x + 2)^{1.5}, \\]

    so the noise grows from 0.1 at the left edge to 0.9 at the right. `true_mean`
    and `true_sigma` give the truth, to compare a fitted heteroscedastic head with.

    Args:
        n_train: training examples.
        n_val: validation examples.
        n_test: test examples.
        batch_size: training batch size.
        seed: seed of the data draw and of the batch order.
        batching: ``"memory"`` or ``"dataloader"``.
        eval_batch_size: batch size of validation/test.
    """

    x_low, x_high = -2.0, 2.0

    def __init__(
        self,
        n_train: int = 1000,
        n_val: int = 500,
        n_test: int = 500,
        batch_size: int = 64,
        seed: int = 0,
        batching: Batching = "memory",
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__(batch_size, seed, batching, eval_batch_size)
        for name, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
            if isinstance(n, bool) or not isinstance(n, int) or n < (1 if name == "n_train" else 0):
                raise ValueError(f"{name} must be a non-negative integer (n_train >= 1), got {n!r}")
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test

    @staticmethod
    def true_mean(x: torch.Tensor) -> torch.Tensor:
        """The true conditional mean \\( \\mu(x) = \\sin(1.5x) + 0.3x \\)."""
        return torch.sin(1.5 * x) + 0.3 * x

    @staticmethod
    def true_sigma(x: torch.Tensor) -> torch.Tensor:
        """The true conditional standard deviation \\( \\sigma(x) = 0.1 + 0.1(x+2)^{1.5} \\)."""
        return 0.1 + 0.1 * (x + 2.0).clamp_min(0) ** 1.5

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed)
        out = {}
        for split, n in (("train", self.n_train), ("val", self.n_val), ("test", self.n_test)):
            if n == 0:
                continue
            x = torch.rand(n, 1, generator=gen) * (self.x_high - self.x_low) + self.x_low
            eps = torch.randn(n, 1, generator=gen)
            y = self.true_mean(x) + self.true_sigma(x) * eps
            out[split] = (x, y.squeeze(1))
        return out


def count_rate(x: torch.Tensor) -> torch.Tensor:
    """True event rate of the synthetic count data: ``exp(0.3 + 0.9 sin(1.2 x) + 0.25 x)``."""
    return torch.exp(0.3 + 0.9 * torch.sin(1.2 * x) + 0.25 * x)


def make_counts(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` counts ``y ~ Poisson(count_rate(x))`` with ``x ~ Uniform(0, 5)``; x has shape (n, 1)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=gen) * 5.0
    y = torch.poisson(count_rate(x[:, 0]), generator=gen)
    return x, y


def make_inverse_sine(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A multimodal target: invert ``x = y + 0.3 sin(2 pi y) + noise``.

    ``y ~ Uniform(0, 1)``, noise ``~ Uniform(-0.1, 0.1)``; the task is to predict ``y`` from
    ``x``. For ``x`` between about 0.35 and 0.65 three values of ``y`` fit the same ``x``, so
    ``p(y | x)`` has up to three modes (Bishop, 1994).
    """
    gen = torch.Generator().manual_seed(seed)
    y = torch.rand(n, generator=gen)
    noise = (torch.rand(n, generator=gen) - 0.5) * 0.2
    x = y + 0.3 * torch.sin(2 * math.pi * y) + noise
    return x[:, None], y


#: Where `make_gap_data` draws its training inputs by default: two intervals with a gap
#: between them; the inputs beyond +-3 are never seen either.
GAP_TRAIN_RANGES: tuple[tuple[float, float], ...] = ((-3.0, -1.0), (1.0, 3.0))


def gap_mean(x: torch.Tensor) -> torch.Tensor:
    """True mean of the gap data, ``0.3 x + cos(2 x)``: a bump in the gap that no straight
    line through the two sides reaches."""
    return 0.3 * x + torch.cos(2.0 * x)


def gap_sigma(x: torch.Tensor) -> torch.Tensor:
    """True noise level of the gap data, ``0.1 + 0.05 |x|``."""
    return 0.1 + 0.05 * x.abs()


def make_gap_data(
    n: int, seed: int, ranges: tuple[tuple[float, float], ...] = GAP_TRAIN_RANGES
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` pairs ``y = gap_mean(x) + gap_sigma(x) * eps`` with ``x`` uniform on ``ranges``.

    The default ranges leave a gap ``(-1, 1)`` inside the inputs and nothing beyond ``+-3``:
    the data of the deep-ensemble example, where a model should become unsure away from its
    training data. Pass other ranges to draw test points there (e.g. ``((-1.0, 1.0),)``).
    ``x`` has shape ``(n, 1)``.

    Raises:
        ValueError: for ``n < 1``, no ranges, or a range whose low end is not below its high.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if not ranges or any(len(r) != 2 or not r[0] < r[1] for r in ranges):
        raise ValueError(
            f"ranges must be non-empty (low, high) pairs with low < high, got {ranges!r}"
        )
    gen = torch.Generator().manual_seed(seed)
    lows = torch.tensor([float(r[0]) for r in ranges])
    widths = torch.tensor([float(r[1] - r[0]) for r in ranges])
    # each point picks an interval with probability proportional to its width
    which = torch.multinomial(widths, n, replacement=True, generator=gen)
    x = lows[which] + torch.rand(n, generator=gen) * widths[which]
    y = gap_mean(x) + gap_sigma(x) * torch.randn(n, generator=gen)
    return x[:, None], y
