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

Every name below is importable from ``block4.data``; the modules of the package:

- ``block4.data.batches``: `TensorBatches`, the base class `TensorDataModule` and
  `InMemoryDataModule` (your own ``(x, y)`` tensors).
- ``block4.data.bundled``: `DigitsDataModule` (scikit-learn's 8x8 handwritten digits),
  `DiabetesDataModule` (scikit-learn's diabetes regression data), `load_blood_pressure`
  and `BloodPressureDataModule` (age and systolic blood pressure of 33 women, shipped
  inside this package), `load_co2` (weekly Mauna Loa CO2, 1958-2001, shipped too). All
  offline.
- ``block4.data.synthetic``: `HeteroscedasticDataModule` (1-D regression with a known
  mean and a known, input-dependent noise level) and the generators `make_counts`
  (Poisson counts with the rate `count_rate`), `make_inverse_sine` (a multimodal target)
  and `make_gap_data` (1-D regression with a gap in the inputs, truth `gap_mean`,
  `gap_sigma`).
- ``block4.data.mnist``: `MNISTDataModule`, MNIST from the four standard IDX files (read
  by `read_idx`).
- ``block4.data.checks``: `check_examples` and `check_tensor`, the checks every entry point
  above applies: NaN/inf refused with the row and column of the first; float64, integer and
  numpy inputs converted to float32 where that is exact or rounds below float32's
  precision, refused with what to pass otherwise; integer targets kept as ``int64``.
"""

from block4.data.batches import (
    Batching,
    InMemoryDataModule,
    TensorBatches,
    TensorDataModule,
    pass_generator,
)
from block4.data.bundled import (
    BloodPressureDataModule,
    DiabetesDataModule,
    DigitsDataModule,
    load_blood_pressure,
    load_co2,
)
from block4.data.checks import check_examples, check_tensor
from block4.data.members import MemberBatches
from block4.data.mnist import (
    MNIST_FILES,
    MNIST_IMAGES_MAGIC,
    MNIST_LABELS_MAGIC,
    IDXFormatError,
    MNISTDataModule,
    load_mnist_split,
    read_idx,
)
from block4.data.synthetic import (
    GAP_TRAIN_RANGES,
    HeteroscedasticDataModule,
    count_rate,
    gap_mean,
    gap_sigma,
    make_counts,
    make_gap_data,
    make_inverse_sine,
)

__all__ = [
    "GAP_TRAIN_RANGES",
    "MemberBatches",
    "MNIST_FILES",
    "MNIST_IMAGES_MAGIC",
    "MNIST_LABELS_MAGIC",
    "Batching",
    "BloodPressureDataModule",
    "DiabetesDataModule",
    "DigitsDataModule",
    "HeteroscedasticDataModule",
    "IDXFormatError",
    "InMemoryDataModule",
    "MNISTDataModule",
    "TensorBatches",
    "TensorDataModule",
    "check_examples",
    "check_tensor",
    "count_rate",
    "gap_mean",
    "gap_sigma",
    "load_blood_pressure",
    "load_co2",
    "load_mnist_split",
    "make_counts",
    "make_gap_data",
    "make_inverse_sine",
    "pass_generator",
    "read_idx",
]
