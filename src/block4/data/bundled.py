"""Data sets that work offline: scikit-learn's digits and diabetes, 33 blood pressures, and
the Mauna Loa CO2 record.

The digits and diabetes data ship with scikit-learn (no download); the blood-pressure
measurements and the weekly CO2 concentrations ship inside this package
(``block4/_data/blood_pressure.csv``, ``block4/_data/co2_mauna_loa.csv``).
"""

from __future__ import annotations

import csv
import datetime
import gzip
import importlib.util
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from block4.data.batches import Batching, TensorDataModule, _split_indices, _standardise
from block4.data.checks import check_examples

__all__ = [
    "BloodPressureDataModule",
    "DiabetesDataModule",
    "DigitsDataModule",
    "load_blood_pressure",
    "load_co2",
]


def sklearn_table(name: str, **loadtxt: Any) -> np.ndarray:
    """A table scikit-learn ships in ``sklearn/datasets/data`` (``digits.csv.gz``, ...), read
    the way ``sklearn.datasets`` reads it (``np.loadtxt`` of the gzip text), without importing
    scikit-learn, which costs every process that loads data about 0.3 s.

    Raises:
        FileNotFoundError: scikit-learn is not installed or does not ship ``name``.
    """
    spec = importlib.util.find_spec("sklearn")  # finds the package without running it
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / "datasets" / "data" / name
        if path.is_file():
            with gzip.open(path, mode="rt", encoding="utf-8") as text:
                return np.loadtxt(text, **loadtxt)
    raise FileNotFoundError(
        f"scikit-learn's data file {name} was not found (looked in "
        f"{', '.join(folders) or 'no installed scikit-learn'}); install scikit-learn>=1.4"
    )


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
        table = sklearn_table("digits.csv.gz", delimiter=",")  # 64 pixels, then the digit
        x = torch.tensor(table[:, :-1], dtype=torch.float32)
        y = torch.tensor(table[:, -1].astype(int), dtype=torch.long)
        tr, va, te = _split_indices(
            len(x), (self.val_fraction, self.test_fraction), self.split_seed
        )
        if self.n_train is not None:
            tr = tr[: self.n_train]
        x_tr, x_va, x_te = _standardise(x[tr], x[va], x[te])
        return {"train": (x_tr, y[tr]), "val": (x_va, y[va]), "test": (x_te, y[te])}


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
        x = torch.tensor(sklearn_table("diabetes_data_raw.csv.gz"), dtype=torch.float32)
        y = torch.tensor(sklearn_table("diabetes_target.csv.gz"), dtype=torch.float32)
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


def load_blood_pressure(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Age (years) and systolic blood pressure (mmHg) of 33 American women.

    The data set of the blood-pressure example in the maximum-likelihood chapter (the
    first row is a 22-year-old woman with sbp 131). It is the data used in the
    tensorchiefs deep-learning course and in *Probabilistic Deep Learning with Python, Keras
    and TensorFlow Probability* (O. Dürr, B. Sick, E. Murina, Manning 2020), chapters 3-4;
    a copy ships inside this package (``block4/_data/blood_pressure.csv``). Ordinary least
    squares gives a residual standard deviation of about 19.3 mmHg. The age 9 in row 17 is
    as published (the pattern of the list suggests 29); it is kept as is.

    Args:
        dtype: floating dtype of the returned tensors: float32 by default, the dtype of
            block4's models, so ``model(age[:, None])`` just works; ``torch.float64`` for
            exact likelihood arithmetic (the maximum-likelihood chapter computes in float64
            so that values such as 0.01209 are exact to the digits shown).

    Returns:
        ``(age, sbp)``, two 1-D tensors of length 33.

    Raises:
        ValueError: for a ``dtype`` that is not floating point.
    """
    _check_float_dtype(dtype)
    text = resources.files("block4").joinpath("_data/blood_pressure.csv").read_text("utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    age = torch.tensor([float(r["age"]) for r in rows], dtype=dtype)
    sbp = torch.tensor([float(r["sbp"]) for r in rows], dtype=dtype)
    return check_examples(age, sbp, dtype=None, where="blood_pressure.csv: ")


def _check_float_dtype(dtype: object) -> None:
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(
            f"dtype must be a floating dtype such as torch.float32 or torch.float64, got {dtype!r}"
        )


def _decimal_year(yyyymmdd: str) -> float:
    """``"19580329"`` -> 1958.24: the year plus the elapsed share of it at the day's middle."""
    day = datetime.date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8]))
    start = datetime.date(day.year, 1, 1)
    length = (datetime.date(day.year + 1, 1, 1) - start).days
    return day.year + ((day - start).days + 0.5) / length


def load_co2(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Weekly mean atmospheric CO2 concentration at Mauna Loa, Hawaii, 1958-2001.

    2,225 weekly means (ppmv, parts per million by volume) from 29 March 1958 to
    29 December 2001; the 59 weeks without a valid measurement are left out, so the
    times are not equally spaced. The record rises from about 313 to 372 ppm, with a
    seasonal cycle of about +-3 ppm on top. It is the data of the course's p(y | x)
    forecast example, where x is time and y the concentration.

    Source: C.D. Keeling and T.P. Whorf (2004), *Atmospheric CO2 concentrations derived
    from flask air samples at sites in the SIO network*, in Trends: A Compendium of Data on
    Global Change, Carbon Dioxide Information Analysis Center, Oak Ridge National
    Laboratory. Public domain; the copy shipped inside this package
    (``block4/_data/co2_mauna_loa.csv``) is the one distributed with statsmodels 0.15.0.

    Args:
        dtype: floating dtype of the returned tensors; float64 (the default) keeps the
            weekly resolution of the dates exactly (float32 rounds them to about an hour).

    Returns:
        ``(year, ppm)``: two 1-D tensors of equal length; ``year`` is the decimal year of
        each week (``1958.24`` for 29 March 1958), increasing.

    Raises:
        ValueError: for a ``dtype`` that is not floating point.
    """
    _check_float_dtype(dtype)
    text = resources.files("block4").joinpath("_data/co2_mauna_loa.csv").read_text("utf-8")
    rows = [r for r in csv.DictReader(text.splitlines()) if r["co2"].strip()]
    year = torch.tensor([_decimal_year(r["date"]) for r in rows], dtype=dtype)
    ppm = torch.tensor([float(r["co2"]) for r in rows], dtype=dtype)
    return check_examples(year, ppm, dtype=None, where="co2_mauna_loa.csv: ")


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
        age, _ = load_blood_pressure(torch.float64)  # the statistics in float64, as before
        self.age_mean = float(age.mean()) if standardize_age else 0.0
        self.age_std = float(age.std()) if standardize_age else 1.0

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        age, sbp = load_blood_pressure(torch.float32)
        x = ((age - self.age_mean) / self.age_std).unsqueeze(1)
        return {"train": (x, sbp)}
