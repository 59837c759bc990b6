"""Mini-batches from tensors in memory and the datamodule base classes.

`TensorBatches` slices shuffled mini-batches straight out of tensors that sit on the
training device, with a seeded ``torch.Generator`` so that the batch order is reproducible;
`TensorDataModule` is the base of every datamodule of the course (tensors split into train /
val / test, moved to the training device once, sharded under DDP); `InMemoryDataModule`
wraps your own tensors.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from typing import Literal

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from block4.data.checks import check_examples

__all__ = ["Batching", "InMemoryDataModule", "TensorBatches", "TensorDataModule", "pass_generator"]

Batching = Literal["memory", "dataloader"]


def pass_generator(seed: int, epoch: int) -> torch.Generator:
    """The ``torch.Generator`` that shuffles pass ``epoch`` of a run with data seed ``seed``.

    Its seed is a 32-bit hash of ``(seed, epoch)`` (torch's CPU generator uses only the low 32
    bits of a seed). Seeding with ``seed + epoch`` instead would give neighbouring seeds the
    same orders one pass apart (pass ``e + 1`` of seed ``s`` = pass ``e`` of seed ``s + 1``):
    runs of different seeds would not be independent replicates.
    """
    digest = hashlib.blake2b(f"{int(seed)},{int(epoch)}".encode(), digest_size=4).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little"))


class TensorBatches:
    """An iterable of ``(x, y)`` mini-batches sliced from in-memory tensors.

    Each pass (epoch) draws a new permutation from `pass_generator` ``(seed, epoch)``, so the
    order is reproducible, independent of the global RNG, and unrelated between seeds.

    The tensors are checked where they enter (`block4.data.checks`): NaN or infinite values
    are refused with the row and column of the first; float64, integer and numpy inputs are
    converted to ``dtype`` (float32, the dtype of block4's models) when that is exact or
    rounds below float32's precision, and refused with what to pass otherwise. Integer
    targets (class indices, counts) stay integers (``int64``).

    Args:
        x: inputs (tensor or numpy array), first dimension = examples.
        y: targets (tensor or numpy array), same first dimension.
        batch_size: examples per batch (the last batch may be smaller unless ``drop_last``).
        shuffle: draw a new permutation every pass; otherwise keep the order.
        seed: base seed of the permutation.
        drop_last: drop the last incomplete batch.
        rank: this process's rank under distributed training.
        world_size: number of processes; each keeps every ``world_size``-th example.
        dtype: floating dtype of the inputs and of floating targets: ``torch.float64`` for a
            float64 model (``model.double()``), ``None`` to convert nothing (e.g. integer
            token ids for an embedding).

    Raises:
        TypeError: ``x`` or ``y`` is not a tensor or numpy array of real numbers.
        ValueError: NaN/inf values, values ``dtype`` cannot hold, ``x`` and ``y`` of
            different lengths, or a bad ``batch_size``, ``rank`` or ``world_size``.

    Examples:
        >>> batches = TensorBatches(torch.arange(10.0), torch.arange(10), batch_size=4)
        >>> [len(xb) for xb, _ in batches]
        [4, 4, 2]
    """

    def __init__(
        self,
        x: torch.Tensor | np.ndarray,
        y: torch.Tensor | np.ndarray,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        dtype: torch.dtype | None = torch.float32,
    ) -> None:
        x, y = check_examples(x, y, dtype=dtype)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if not 0 <= rank < world_size:
            raise ValueError(
                f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
            )
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        # examples this rank sees per pass (padded by wrapping around, like DistributedSampler)
        self.n_local = math.ceil(len(x) / world_size) if world_size > 1 else len(x)
        # Lightning calls ``dataloader.sampler.set_epoch(epoch)`` at the start of every epoch;
        # pointing ``sampler`` at ourselves ties the permutation to the trainer's epoch.
        self.sampler = self
        self.batch_sampler = None

    def __len__(self) -> int:
        if self.drop_last:
            return self.n_local // self.batch_size
        return math.ceil(self.n_local / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Use the permutation of pass ``epoch`` next (called automatically after each pass)."""
        self.epoch = epoch

    def _indices(self) -> torch.Tensor | None:
        n = len(self.x)
        if not self.shuffle and self.world_size == 1:
            return None
        if self.shuffle:
            idx = torch.randperm(n, generator=pass_generator(self.seed, self.epoch))
        else:
            idx = torch.arange(n)
        if self.world_size > 1:
            total = self.n_local * self.world_size
            if total > n:
                idx = torch.cat([idx, idx[: total - n]])
            idx = idx[self.rank :: self.world_size]
        return idx.to(self.x.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self._indices()
        self.epoch += 1
        n_batches, bs = len(self), self.batch_size
        if idx is None:  # plain slices (views), no gather
            for i in range(n_batches):
                yield self.x[i * bs : (i + 1) * bs], self.y[i * bs : (i + 1) * bs]
            return
        for i in range(n_batches):
            j = idx[i * bs : (i + 1) * bs]
            yield self.x[j], self.y[j]


class TensorDataModule(pl.LightningDataModule):
    """Base class: a data set held as tensors, split into train / val / test.

    Subclasses implement `load`, returning a dict with keys ``"train"``, ``"val"``,
    ``"test"`` mapping to ``(x, y)`` tensor pairs (``"val"``/``"test"`` may be missing).
    ``setup`` checks every split where it enters, as `TensorBatches` does (NaN/inf refused
    with its row and column, inputs converted to `dtype`, integer targets kept).

    Args:
        batch_size: training batch size (validation and test use ``eval_batch_size``).
        seed: seed of the training batch order (and of any random split or synthetic data).
        batching: ``"memory"`` (default; `TensorBatches` on the training device) or
            ``"dataloader"`` (a standard ``DataLoader`` over a ``TensorDataset``).
        eval_batch_size: batch size for validation/test/predict; ``None`` = one batch of
            up to 4096 examples.
        num_workers: worker processes of the ``DataLoader`` (``batching="dataloader"`` only).

    Attributes:
        dtype: floating dtype the inputs are converted to (float32; ``None``: no conversion).
    """

    dtype: torch.dtype | None = torch.float32

    def __init__(
        self,
        batch_size: int = 64,
        seed: int = 0,
        batching: Batching = "memory",
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if batching not in ("memory", "dataloader"):
            raise ValueError(
                f"batching {batching!r} is not supported; choose one of: memory, dataloader"
            )
        self.batch_size = batch_size
        self.seed = seed
        self.batching = batching
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._device = torch.device("cpu")
        self._train_batches: TensorBatches | None = None

    # --- to implement ---------------------------------------------------------------------
    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:  # pragma: no cover
        """Return ``{"train": (x, y), "val": (x, y), "test": (x, y)}`` on the CPU."""
        raise NotImplementedError

    # --- Lightning hooks ------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Load the tensors once; with ``batching="memory"`` move them to the training device."""
        if not self.splits:
            self.splits = self._checked(self.load())
        device = torch.device("cpu")
        if self.batching == "memory" and self.trainer is not None:
            device = self.trainer.strategy.root_device
        if device != self._device:
            self.splits = {k: (x.to(device), y.to(device)) for k, (x, y) in self.splits.items()}
            self._device = device

    def _checked(
        self, loaded: dict[str, tuple[torch.Tensor, torch.Tensor] | None]
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        name = type(self).__name__
        if not isinstance(loaded, dict) or not set(loaded) <= {"train", "val", "test"}:
            got = sorted(loaded) if isinstance(loaded, dict) else type(loaded).__name__
            raise ValueError(
                f"{name}.load() must return a dict with keys among train, val, test mapping "
                f"to (x, y) pairs; got {got}"
            )
        splits = {}
        for split, pair in loaded.items():
            if pair is None:
                continue
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise ValueError(f"{name}.load(): the {split} split must be an (x, y) pair")
            splits[split] = check_examples(*pair, dtype=self.dtype, where=f"{name} {split} split: ")
        return splits

    def _rank_world(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _batches(self, split: str, train: bool) -> TensorBatches | DataLoader | list:
        if not self.splits:
            self.setup()
        if split not in self.splits:
            return []
        x, y = self.splits[split]
        bs = self.batch_size if train else (self.eval_batch_size or min(len(x), 4096))
        if self.batching == "dataloader":
            gen = torch.Generator().manual_seed(self.seed) if train else None
            return DataLoader(
                TensorDataset(x, y),
                batch_size=bs,
                shuffle=train,
                generator=gen,
                num_workers=self.num_workers,
            )
        rank, world = self._rank_world()
        batches = TensorBatches(
            x, y, bs, shuffle=train, seed=self.seed, rank=rank, world_size=world, dtype=self.dtype
        )
        if train:
            if self.trainer is not None:  # resume mid-run with the right permutation
                batches.set_epoch(self.trainer.current_epoch)
            self._train_batches = batches
        return batches

    def train_dataloader(self) -> TensorBatches | DataLoader:
        """Shuffled training batches (a new seeded permutation every epoch)."""
        return self._batches("train", train=True)

    def val_dataloader(self) -> TensorBatches | DataLoader | list:
        """Validation batches in a fixed order (an empty list when there is no validation split)."""
        return self._batches("val", train=False)

    def test_dataloader(self) -> TensorBatches | DataLoader | list:
        """Test batches in a fixed order (an empty list when there is no test split)."""
        return self._batches("test", train=False)

    def predict_dataloader(self) -> TensorBatches | DataLoader | list:
        """The test split in a fixed order."""
        return self._batches("test", train=False)

    # --- conveniences ---------------------------------------------------------------------
    def tensors(self, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
        """The full ``(x, y)`` tensors of ``split`` (``"train"``, ``"val"`` or ``"test"``)."""
        if not self.splits:
            self.setup()
        if split not in self.splits:
            raise KeyError(f"split {split!r} does not exist; available: {', '.join(self.splits)}")
        return self.splits[split]

    @property
    def in_features(self) -> int:
        """Number of input features per example."""
        return int(self.tensors("train")[0].shape[-1])


class InMemoryDataModule(TensorDataModule):
    """A datamodule over your own tensors: ``InMemoryDataModule((x, y), val=(x_val, y_val))``.

    It adds to plain `TensorBatches` what a datamodule gives: the tensors move to the
    training device once, and under DDP each process gets its own share of every epoch.

    Args:
        train: ``(x, y)`` training tensors or numpy arrays (first dimension = examples).
        val: optional ``(x, y)`` validation data.
        test: optional ``(x, y)`` test data.
        batch_size: training batch size.
        seed: seed of the training batch order.
        batching: ``"memory"`` or ``"dataloader"``.
        eval_batch_size: batch size of validation/test.
        dtype: floating dtype of the inputs (see `TensorBatches`; ``None``: no conversion).

    Raises:
        TypeError: a split is not a pair of tensors or numpy arrays of real numbers.
        ValueError: a split's ``x`` and ``y`` differ in length, or hold NaN/inf values (the
            error names the split, row and column), or values ``dtype`` cannot hold.

    Examples:
        >>> dm = InMemoryDataModule((torch.randn(100, 3), torch.randn(100)), batch_size=32)
        >>> dm.in_features, len(dm.train_dataloader())
        (3, 4)
    """

    def __init__(
        self,
        train: tuple[torch.Tensor | np.ndarray, torch.Tensor | np.ndarray],
        val: tuple[torch.Tensor | np.ndarray, torch.Tensor | np.ndarray] | None = None,
        test: tuple[torch.Tensor | np.ndarray, torch.Tensor | np.ndarray] | None = None,
        batch_size: int = 64,
        seed: int = 0,
        batching: Batching = "memory",
        eval_batch_size: int | None = None,
        dtype: torch.dtype | None = torch.float32,
    ) -> None:
        super().__init__(batch_size, seed, batching, eval_batch_size)
        self.dtype = dtype
        given = {"train": train, "val": val, "test": test}
        self._given = self._checked({k: v for k, v in given.items() if v is not None})

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return dict(self._given)


def _split_indices(n: int, fractions: tuple[float, float], seed: int) -> tuple[np.ndarray, ...]:
    """A fixed random split of ``range(n)`` into train / val / test index arrays."""
    val_f, test_f = fractions
    if not (0 <= val_f < 1 and 0 <= test_f < 1 and val_f + test_f < 1):
        raise ValueError(
            f"val_fraction and test_fraction must be >= 0 and sum to < 1, got {val_f}, {test_f}"
        )
    perm = np.random.default_rng(seed).permutation(n)
    n_val, n_test = round(val_f * n), round(test_f * n)
    return perm[n_val + n_test :], perm[:n_val], perm[n_val : n_val + n_test]


def _standardise(train: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Standardise with the training mean and std (constant columns get std 1)."""
    mean = train.mean(0)
    std = train.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return tuple((t - mean) / std for t in (train, *others))
