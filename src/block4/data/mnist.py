"""MNIST from the four standard IDX files: the IDX reader and `MNISTDataModule`.

No torchvision and no download: put ``train-images-idx3-ubyte`` and the three other files
(optionally gzip-compressed) in a directory and point `MNISTDataModule` at it.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from block4.data.batches import Batching, TensorDataModule

__all__ = [
    "MNIST_FILES",
    "MNIST_IMAGES_MAGIC",
    "MNIST_LABELS_MAGIC",
    "IDXFormatError",
    "MNISTDataModule",
    "load_mnist_split",
    "read_idx",
]


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
