"""LightningDataModules for the course: digits, MNIST (IDX files), synthetic and real regression.

All data sets here are small enough to live in memory as tensors. By default the
datamodules therefore do **not** use a worker-based ``DataLoader``: `TensorBatches`
slices shuffled mini-batches straight out of tensors that sit on the training device (the
GPU when training there), with a seeded ``torch.Generator`` so that the batch order is
reproducible. Lightning accepts any iterable of batches as a "dataloader". Pass
``batching="dataloader"`` to get a plain ``torch.utils.data.DataLoader`` instead (the
benchmark in ``benchmarks/lightning_overhead.py`` compares the two).

Under distributed training (``strategy="ddp"``) every process draws the *same* seeded
permutation and keeps every ``world_size``-th index starting at its rank, padded by wrapping
around so all ranks run the same number of steps -- what Lightning's ``DistributedSampler``
does for a ``DataLoader``.

Data sets:

- `InMemoryDataModule`: your own ``(x, y)`` tensors.
- `DigitsDataModule`: scikit-learn's bundled 8x8 handwritten digits (offline).
- `MNISTDataModule`: MNIST from the four standard IDX files (read by `read_idx`).
- `HeteroscedasticDataModule`: synthetic 1-D regression with a known mean and a known,
  input-dependent noise level.
- `DiabetesDataModule`: scikit-learn's bundled diabetes regression data (real data).
- `load_blood_pressure` and `BloodPressureDataModule`: age and systolic blood
  pressure of 33 women, shipped inside this package.
"""

from __future__ import annotations

import csv
import gzip
import math
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

__all__ = [
    "BloodPressureDataModule",
    "DiabetesDataModule",
    "DigitsDataModule",
    "HeteroscedasticDataModule",
    "IDXFormatError",
    "InMemoryDataModule",
    "MNISTDataModule",
    "TensorBatches",
    "TensorDataModule",
    "load_blood_pressure",
    "read_idx",
]

Batching = Literal["memory", "dataloader"]


class TensorBatches:
    """An iterable of ``(x, y)`` mini-batches sliced from in-memory tensors.

    Each pass (epoch) draws a new permutation from a ``torch.Generator`` seeded with
    ``seed + epoch``, so the order is reproducible and independent of the global RNG.

    Args:
        x: inputs, first dimension = examples.
        y: targets, same first dimension.
        batch_size: examples per batch (the last batch may be smaller unless ``drop_last``).
        shuffle: draw a new permutation every pass; otherwise keep the order.
        seed: base seed of the permutation.
        drop_last: drop the last incomplete batch.
        rank: this process's rank under distributed training.
        world_size: number of processes; each keeps every ``world_size``-th example.

    Examples:
        >>> batches = TensorBatches(torch.arange(10.0), torch.arange(10), batch_size=4)
        >>> [len(xb) for xb, _ in batches]
        [4, 4, 2]
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
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
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            idx = torch.randperm(n, generator=gen)
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

    Args:
        batch_size: training batch size (validation and test use ``eval_batch_size``).
        seed: seed of the training batch order (and of any random split or synthetic data).
        batching: ``"memory"`` (default; `TensorBatches` on the training device) or
            ``"dataloader"`` (a standard ``DataLoader`` over a ``TensorDataset``).
        eval_batch_size: batch size for validation/test/predict; ``None`` = one batch of
            up to 4096 examples.
        num_workers: worker processes of the ``DataLoader`` (``batching="dataloader"`` only).
    """

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
            self.splits = {k: v for k, v in self.load().items() if v is not None}
        device = torch.device("cpu")
        if self.batching == "memory" and self.trainer is not None:
            device = self.trainer.strategy.root_device
        if device != self._device:
            self.splits = {k: (x.to(device), y.to(device)) for k, (x, y) in self.splits.items()}
            self._device = device

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
            x, y, bs, shuffle=train, seed=self.seed, rank=rank, world_size=world
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

    It adds to plain :class:`TensorBatches` what a datamodule gives: the tensors move to the
    training device once, and under DDP each process gets its own share of every epoch.

    Args:
        train: ``(x, y)`` training tensors (first dimension = examples).
        val: optional ``(x, y)`` validation tensors.
        test: optional ``(x, y)`` test tensors.
        batch_size: training batch size.
        seed: seed of the training batch order.
        batching: ``"memory"`` or ``"dataloader"``.
        eval_batch_size: batch size of validation/test.

    Raises:
        ValueError: if a split's ``x`` and ``y`` differ in length, or hold NaN/inf values.

    Examples:
        >>> dm = InMemoryDataModule((torch.randn(100, 3), torch.randn(100)), batch_size=32)
        >>> dm.in_features, len(dm.train_dataloader())
        (3, 4)
    """

    def __init__(
        self,
        train: tuple[torch.Tensor, torch.Tensor],
        val: tuple[torch.Tensor, torch.Tensor] | None = None,
        test: tuple[torch.Tensor, torch.Tensor] | None = None,
        batch_size: int = 64,
        seed: int = 0,
        batching: Batching = "memory",
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__(batch_size, seed, batching, eval_batch_size)
        self._given: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name, pair in (("train", train), ("val", val), ("test", test)):
            if pair is None:
                continue
            x, y = pair
            if len(x) != len(y):
                raise ValueError(
                    f"{name} split: x has {len(x)} examples but y has {len(y)}; they must match"
                )
            for what, t in (("x", x), ("y", y)):
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    bad = (~torch.isfinite(t)).reshape(len(t), -1).any(1).nonzero().flatten()
                    raise ValueError(
                        f"{name} split: {what} has NaN or infinite values in {len(bad)} rows "
                        f"(e.g. rows {bad[:5].tolist()}); drop or impute them first"
                    )
            self._given[name] = (x, y)

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


class DigitsDataModule(TensorDataModule):
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes; offline).

    Inputs are the 64 pixel intensities (0..16), standardised per pixel with the training
    mean and standard deviation. The split into train / val / test is fixed by
    ``split_seed`` (by default 60 % / 20 % / 20 %: 1079 / 359 / 359 images).

    Source: the UCI "Optical Recognition of Handwritten Digits" data (Alpaydin and Kaynak,
    1998), as shipped with scikit-learn (``sklearn.datasets.load_digits``).

    Args:
        batch_size: training batch size.
        seed: seed of the training batch order.
        val_fraction: fraction of images in the validation split.
        test_fraction: fraction of images in the test split.
        split_seed: seed of the fixed split.
        n_train: keep only the first ``n_train`` training images (for quick runs).
        batching: ``"memory"`` or ``"dataloader"`` (see `TensorDataModule`).
        eval_batch_size: batch size of validation/test.
        num_workers: ``DataLoader`` workers (``batching="dataloader"`` only).
    """

    n_classes = 10

    def __init__(
        self,
        batch_size: int = 64,
        seed: int = 0,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        n_train: int | None = None,
        batching: Batching = "memory",
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, seed, batching, eval_batch_size, num_workers)
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.split_seed = split_seed
        self.n_train = n_train
        _split_indices(10, (val_fraction, test_fraction), 0)  # validate early

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.tensor(digits.data, dtype=torch.float32)
        y = torch.tensor(digits.target, dtype=torch.long)
        tr, va, te = _split_indices(
            len(x), (self.val_fraction, self.test_fraction), self.split_seed
        )
        if self.n_train is not None:
            tr = tr[: self.n_train]
        x_tr, x_va, x_te = _standardise(x[tr], x[va], x[te])
        return {"train": (x_tr, y[tr]), "val": (x_va, y[va]), "test": (x_te, y[te])}


# --- MNIST ------------------------------------------------------------------------------------


class IDXFormatError(ValueError):
    """An IDX file is malformed (wrong magic number, truncated, inconsistent)."""


#: IDX type codes -> (numpy big-endian dtype, description).
_IDX_DTYPES = {
    0x08: (">u1", "unsigned byte"),
    0x09: (">i1", "signed byte"),
    0x0B: (">i2", "short"),
    0x0C: (">i4", "int"),
    0x0D: (">f4", "float"),
    0x0E: (">f8", "double"),
}

#: Magic numbers of the MNIST files: 0x00000803 (images, 3-D ubyte), 0x00000801 (labels).
MNIST_IMAGES_MAGIC = 2051
MNIST_LABELS_MAGIC = 2049


def read_idx(path: str | Path, expected_magic: int | None = None) -> torch.Tensor:
    """Read an IDX file (the format of MNIST), plain or gzip-compressed.

    The format: a 4-byte magic number ``0x00 0x00 <type code> <ndim>``, then ``ndim``
    big-endian ``int32`` sizes, then the data in C order.

    Args:
        path: the file (``.gz`` files are decompressed).
        expected_magic: if given, the magic number the file must carry (2051 for MNIST
            images, 2049 for MNIST labels).

    Returns:
        A tensor of the stored shape (``uint8`` for MNIST).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        IDXFormatError: wrong magic number, unknown type code, or truncated / overlong data.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:  # e.g. a truncated gzip stream
        raise IDXFormatError(f"{path}: cannot read the file ({exc})") from exc
    if len(raw) < 4:
        raise IDXFormatError(
            f"{path}: truncated: {len(raw)} bytes, too short for the 4-byte magic number"
        )
    magic = int.from_bytes(raw[:4], "big")
    zero, code, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if expected_magic is not None and magic != expected_magic:
        raise IDXFormatError(
            f"{path}: wrong magic number {magic} (0x{magic:08x}); expected {expected_magic} "
            f"(0x{expected_magic:08x}) -- is this the right file, and is it decompressed?"
        )
    if zero != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise IDXFormatError(
            f"{path}: wrong magic number {magic} (0x{magic:08x}); an IDX file starts with two "
            f"zero bytes, a type code in {{{', '.join(hex(c) for c in _IDX_DTYPES)}}} and ndim >= 1"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXFormatError(
            f"{path}: truncated: the header needs {header} bytes, file has {len(raw)}"
        )
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_DTYPES[code][0])
    expected = int(np.prod(dims)) * dtype.itemsize
    found = len(raw) - header
    if found < expected:
        raise IDXFormatError(
            f"{path}: truncated: shape {tuple(dims)} needs {expected} data bytes, found {found}"
        )
    if found > expected:
        raise IDXFormatError(
            f"{path}: {found - expected} unexpected bytes after the data of shape {tuple(dims)}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return torch.from_numpy(data.astype(dtype.newbyteorder("="), copy=True))


#: The four MNIST files, by split and kind (each may also end in ``.gz``).
MNIST_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def _find_mnist_file(data_dir: Path, name: str) -> Path:
    for candidate in (
        name,
        name + ".gz",
        name.replace("-idx", ".idx"),
        name.replace("-idx", ".idx") + ".gz",
    ):
        if (data_dir / candidate).is_file():
            return data_dir / candidate
    raise FileNotFoundError(
        f"MNIST file {name} (or {name}.gz) not found in {data_dir}; the directory must hold "
        f"the four standard IDX files: {', '.join(MNIST_FILES.values())}"
    )


def load_mnist_split(
    data_dir: str | Path, split: str = "train"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one MNIST split: ``(images uint8 [N, 28, 28], labels int64 [N])``.

    Raises:
        FileNotFoundError: missing directory or file.
        IDXFormatError: malformed files, or image and label counts that differ.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"MNIST directory {data_dir} does not exist; create it and put the four standard "
            f"IDX files there ({', '.join(MNIST_FILES.values())}, optionally .gz)"
        )
    img_path = _find_mnist_file(data_dir, MNIST_FILES[(split, "images")])
    lbl_path = _find_mnist_file(data_dir, MNIST_FILES[(split, "labels")])
    images = read_idx(img_path, expected_magic=MNIST_IMAGES_MAGIC)
    labels = read_idx(lbl_path, expected_magic=MNIST_LABELS_MAGIC)
    if images.dim() != 3:
        raise IDXFormatError(
            f"{img_path}: expected images of shape (N, rows, cols), got {tuple(images.shape)}"
        )
    if labels.dim() != 1:
        raise IDXFormatError(
            f"{lbl_path}: expected labels of shape (N,), got {tuple(labels.shape)}"
        )
    if len(images) != len(labels):
        raise IDXFormatError(
            f"MNIST {split} split: {len(images)} images in {img_path.name} but {len(labels)} "
            f"labels in {lbl_path.name}; the counts must match"
        )
    return images, labels.long()


class MNISTDataModule(TensorDataModule):
    """MNIST from the four standard IDX files in ``data_dir`` (no torchvision, no download).

    Images are flattened to 784 features, scaled to [0, 1] and standardised with the
    training mean and standard deviation (scalars). The last ``val_size`` training images
    form the validation split; the 10 000 ``t10k`` images are the test split.

    Source: Y. LeCun, C. Cortes, C. J. C. Burges, "The MNIST database of handwritten digits".

    Args:
        data_dir: directory holding ``train-images-idx3-ubyte`` etc. (optionally ``.gz``).
        batch_size: training batch size.
        seed: seed of the training batch order.
        val_size: number of training images held out for validation.
        n_train: keep only the first ``n_train`` training images (for quick runs).
        batching: ``"memory"`` or ``"dataloader"``.
        eval_batch_size: batch size of validation/test.
        num_workers: ``DataLoader`` workers (``batching="dataloader"`` only).

    Raises:
        FileNotFoundError: (on ``setup``) when the directory or a file is missing.
        IDXFormatError: (on ``setup``) for truncated files, wrong magic numbers or mismatched
            image/label counts.
    """

    n_classes = 10

    def __init__(
        self,
        data_dir: str | Path,
        batch_size: int = 128,
        seed: int = 0,
        val_size: int = 5000,
        n_train: int | None = None,
        batching: Batching = "memory",
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, seed, batching, eval_batch_size, num_workers)
        self.data_dir = Path(data_dir)
        self.val_size = val_size
        self.n_train = n_train

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        x_all, y_all = load_mnist_split(self.data_dir, "train")
        x_test, y_test = load_mnist_split(self.data_dir, "test")
        if not 0 <= self.val_size < len(x_all):
            raise ValueError(f"val_size must be in [0, {len(x_all)}), got {self.val_size}")
        n_fit = len(x_all) - self.val_size
        x_all = x_all.reshape(len(x_all), -1).float() / 255.0
        x_test = x_test.reshape(len(x_test), -1).float() / 255.0
        mean, std = x_all[:n_fit].mean(), x_all[:n_fit].std().clamp_min(1e-8)
        x_all, x_test = (x_all - mean) / std, (x_test - mean) / std
        x_tr, y_tr = x_all[:n_fit], y_all[:n_fit]
        if self.n_train is not None:
            x_tr, y_tr = x_tr[: self.n_train], y_tr[: self.n_train]
        out = {"train": (x_tr, y_tr), "test": (x_test, y_test)}
        if self.val_size:
            out["val"] = (x_all[n_fit:], y_all[n_fit:])
        return out


# --- regression -------------------------------------------------------------------------------


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


class DiabetesDataModule(TensorDataModule):
    """Real regression data: disease progression of 442 diabetes patients (10 features).

    The ten baseline variables (age, sex, body-mass index, average blood pressure and six
    blood serum measurements) are standardised with the training statistics; the target is a
    quantitative measure of disease progression one year after baseline (25..346), optionally
    standardised (``standardize_target=True``; then `target_mean` and
    `target_std` convert predictions back to the original units).

    Source: B. Efron, T. Hastie, I. Johnstone, R. Tibshirani, "Least Angle Regression",
    *Annals of Statistics* 32(2), 2004; shipped with scikit-learn as
    ``sklearn.datasets.load_diabetes`` (no download).

    Args:
        batch_size: training batch size.
        seed: seed of the training batch order.
        val_fraction: fraction of patients in the validation split.
        test_fraction: fraction of patients in the test split.
        split_seed: seed of the fixed split.
        standardize_target: standardise the target with the training mean and std.
        batching: ``"memory"`` or ``"dataloader"``.
        eval_batch_size: batch size of validation/test.
    """

    def __init__(
        self,
        batch_size: int = 32,
        seed: int = 0,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        standardize_target: bool = True,
        batching: Batching = "memory",
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__(batch_size, seed, batching, eval_batch_size)
        _split_indices(10, (val_fraction, test_fraction), 0)
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.split_seed = split_seed
        self.standardize_target = standardize_target
        self.target_mean = 0.0
        self.target_std = 1.0

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        from sklearn.datasets import load_diabetes

        data = load_diabetes(scaled=False)
        x = torch.tensor(data.data, dtype=torch.float32)
        y = torch.tensor(data.target, dtype=torch.float32)
        tr, va, te = _split_indices(
            len(x), (self.val_fraction, self.test_fraction), self.split_seed
        )
        x_tr, x_va, x_te = _standardise(x[tr], x[va], x[te])
        y_tr, y_va, y_te = y[tr], y[va], y[te]
        if self.standardize_target:
            self.target_mean, self.target_std = float(y_tr.mean()), float(y_tr.std())
            y_tr, y_va, y_te = (
                (t - self.target_mean) / self.target_std for t in (y_tr, y_va, y_te)
            )
        return {"train": (x_tr, y_tr), "val": (x_va, y_va), "test": (x_te, y_te)}


def load_blood_pressure(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Age (years) and systolic blood pressure (mmHg) of 33 American women.

    The data set of the blood-pressure example in the maximum-likelihood chapter (the
    first row is a 22-year-old woman with sbp 131). It is the data used in the
    tensorchiefs deep-learning course and in *Probabilistic Deep Learning with Python, Keras
    and TensorFlow Probability* (O. Dürr, B. Sick, E. Murina, Manning 2020), chapters 3-4;
    a copy ships inside this package (``block4/_data/blood_pressure.csv``). Ordinary least
    squares gives a residual standard deviation of about 19.3 mmHg. The age 9 in row 17 is
    as published (the pattern of the list suggests 29); it is kept as is.

    Args:
        dtype: floating dtype of the returned tensors (float64 by default, so that
            likelihood values such as 0.01209 are exact to the digits shown).

    Returns:
        ``(age, sbp)``, two 1-D tensors of length 33.
    """
    text = resources.files("block4").joinpath("_data/blood_pressure.csv").read_text("utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    age = torch.tensor([float(r["age"]) for r in rows], dtype=dtype)
    sbp = torch.tensor([float(r["sbp"]) for r in rows], dtype=dtype)
    return age, sbp


class BloodPressureDataModule(TensorDataModule):
    """The 33 blood-pressure measurements (see `load_blood_pressure`) for Lightning.

    All 33 women form the training split (there is no held-out data: the point of the
    example is the likelihood of the data at hand). Input: age, optionally standardised
    (``x = (age - age_mean) / age_std``, with `age_mean` and `age_std`);
    target: sbp in mmHg.

    Args:
        batch_size: training batch size (default: all 33 in one batch).
        seed: seed of the batch order.
        standardize_age: standardise the input.
        batching: ``"memory"`` or ``"dataloader"``.
    """

    def __init__(
        self,
        batch_size: int = 33,
        seed: int = 0,
        standardize_age: bool = True,
        batching: Batching = "memory",
    ) -> None:
        super().__init__(batch_size, seed, batching)
        self.standardize_age = standardize_age
        age, _ = load_blood_pressure()
        self.age_mean = float(age.mean()) if standardize_age else 0.0
        self.age_std = float(age.std()) if standardize_age else 1.0

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        age, sbp = load_blood_pressure(torch.float32)
        x = ((age - self.age_mean) / self.age_std).unsqueeze(1)
        return {"train": (x, sbp)}
