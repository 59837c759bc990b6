"""Tests of the datamodules and the IDX reader (block4.data)."""

from __future__ import annotations

import gzip
import math
import struct

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from block4.data import (
    BloodPressureDataModule,
    DiabetesDataModule,
    DigitsDataModule,
    HeteroscedasticDataModule,
    IDXFormatError,
    MNISTDataModule,
    TensorBatches,
    TensorDataModule,
    load_blood_pressure,
    load_mnist_split,
    pass_generator,
    read_idx,
)

# --- in-memory batches ------------------------------------------------------------------------


def test_tensor_batches_cover_every_example_once_per_epoch_and_reshuffle():
    x = torch.arange(100.0).unsqueeze(1)
    batches = TensorBatches(x, torch.arange(100), batch_size=32, shuffle=True, seed=3)
    assert len(batches) == 4
    epoch0 = [yb for _, yb in batches]
    assert [len(b) for b in epoch0] == [32, 32, 32, 4]
    assert sorted(torch.cat(epoch0).tolist()) == list(range(100))
    epoch1 = torch.cat([yb for _, yb in batches])
    assert not torch.equal(torch.cat(epoch0), epoch1)
    # the permutation depends only on (seed, epoch): Lightning's set_epoch replays it
    batches.set_epoch(0)
    torch.testing.assert_close(torch.cat([yb for _, yb in batches]), torch.cat(epoch0))
    expected = torch.randperm(100, generator=pass_generator(3, 0))
    torch.testing.assert_close(torch.cat(epoch0), expected)
    for xb, yb in TensorBatches(x, torch.arange(100), batch_size=32, shuffle=True):
        torch.testing.assert_close(xb.squeeze(1), yb.float())


def test_runs_of_different_seeds_share_no_pass_order():
    # seeding a pass with seed + epoch made seed s's pass e + 1 the pass e of seed s + 1
    def orders(seed: int) -> list[tuple[int, ...]]:
        batches = TensorBatches(torch.zeros(50, 1), torch.arange(50), 50, shuffle=True, seed=seed)
        return [tuple(torch.cat([yb for _, yb in batches]).tolist()) for _ in range(6)]

    runs = [orders(seed) for seed in range(6)]
    passes = [order for run in runs for order in run]
    assert len(set(passes)) == len(passes) == 36
    assert runs[2] == orders(2)  # and each run is reproducible
    # torch's CPU generator keeps only 32 bits of a seed; the pass seeds stay within them
    assert pass_generator(2**32 + 1, 0).initial_seed() < 2**32
    assert pass_generator(1, 0).initial_seed() != pass_generator(2**32 + 1, 0).initial_seed()


def test_tensor_batches_unshuffled_and_drop_last():
    b = TensorBatches(torch.zeros(10, 2), torch.arange(10), batch_size=4, drop_last=True)
    assert len(b) == 2 and [yb.tolist() for _, yb in b] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_tensor_batches_shard_across_ranks_like_distributed_sampler():
    x, y = torch.zeros(11, 1), torch.arange(11)
    shards = [TensorBatches(x, y, 4, shuffle=True, seed=1, rank=r, world_size=2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 2  # ceil(11 / 2) = 6 examples -> 2 batches
    seen = [torch.cat([yb for _, yb in s]) for s in shards]
    assert len(seen[0]) == len(seen[1]) == 6
    assert set(torch.cat(seen).tolist()) == set(range(11))  # one example repeated as padding


def test_tensor_batches_bad_arguments():
    with pytest.raises(
        ValueError, match="x has 3 examples but y has 4; they must have the same first dimension"
    ):
        TensorBatches(torch.zeros(3), torch.zeros(4), 2)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        TensorBatches(torch.zeros(3), torch.zeros(3), 0)


# --- digits ---------------------------------------------------------------------------------


def test_digits_split_standardisation_and_fixed_split():
    dm = DigitsDataModule()
    dm.setup("fit")
    (xtr, ytr), (xva, yva), (xte, yte) = (dm.tensors(s) for s in ("train", "val", "test"))
    assert (len(xtr), len(xva), len(xte)) == (1079, 359, 359)
    assert xtr.shape[1] == dm.in_features == 64 and ytr.dtype == torch.long
    assert set(ytr.tolist()) == set(range(10))
    varying = xtr.std(0) > 0
    torch.testing.assert_close(xtr.mean(0), torch.zeros(64), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        xtr.std(0)[varying], torch.ones(int(varying.sum())), atol=1e-4, rtol=0
    )
    other = DigitsDataModule(seed=5)
    other.setup("fit")
    torch.testing.assert_close(other.tensors("test")[0], xte)  # split independent of seed
    assert DigitsDataModule(n_train=100).tensors("train")[0].shape == (100, 64)


def test_digits_dataloader_and_memory_give_the_same_examples():
    mem = DigitsDataModule(batching="memory", batch_size=100)
    dl = DigitsDataModule(batching="dataloader", batch_size=100)
    ys_mem = torch.cat([yb for _, yb in mem.train_dataloader()])
    ys_dl = torch.cat([yb for _, yb in dl.train_dataloader()])
    assert len(mem.train_dataloader()) == len(dl.train_dataloader()) == 11
    assert sorted(ys_mem.tolist()) == sorted(ys_dl.tolist())
    assert len(mem.val_dataloader()) == 1  # evaluation in one batch


def test_datamodule_bad_arguments():
    with pytest.raises(
        ValueError, match="batching 'workers' is not supported; choose one of: memory, dataloader"
    ):
        DigitsDataModule(batching="workers")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        DigitsDataModule(batch_size=0)
    with pytest.raises(
        ValueError, match="val_fraction and test_fraction must be >= 0 and sum to < 1"
    ):
        DigitsDataModule(val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(KeyError, match="split 'dev' does not exist"):
        DigitsDataModule().tensors("dev")


# --- MNIST / IDX ------------------------------------------------------------------------------


def write_idx(path, array: np.ndarray, magic_code: int = 0x08, magic_override: bytes | None = None):
    header = magic_override or bytes([0, 0, magic_code, array.ndim])
    header += b"".join(struct.pack(">i", d) for d in array.shape)
    data = header + array.astype(">u1" if magic_code == 0x08 else array.dtype).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as fh:
        fh.write(data)
    return path


@pytest.fixture
def mnist_dir(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "mnist"
    d.mkdir()
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 40, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 12, dtype=np.uint8),
    }
    for name, arr in arrays.items():
        write_idx(d / name, arr)
    return d, arrays


def test_read_idx_roundtrip_plain_gzip_and_other_dtypes(mnist_dir, tmp_path):
    d, arrays = mnist_dir
    img = read_idx(d / "train-images-idx3-ubyte", expected_magic=2051)
    assert img.dtype == torch.uint8 and img.shape == (40, 28, 28)
    np.testing.assert_array_equal(img.numpy(), arrays["train-images-idx3-ubyte"])
    lbl = read_idx(d / "t10k-labels-idx1-ubyte.gz", expected_magic=2049)
    np.testing.assert_array_equal(lbl.numpy(), arrays["t10k-labels-idx1-ubyte.gz"])
    floats = np.linspace(-1, 1, 6, dtype=">f4").reshape(2, 3)
    write_idx(tmp_path / "f.idx", floats, magic_code=0x0D)
    np.testing.assert_array_equal(read_idx(tmp_path / "f.idx").numpy(), floats.astype(np.float32))


def test_mnist_datamodule(mnist_dir):
    d, arrays = mnist_dir
    dm = MNISTDataModule(d, val_size=10, batch_size=8)
    dm.setup("fit")
    xtr, ytr = dm.tensors("train")
    assert xtr.shape == (30, 784) and dm.tensors("val")[0].shape == (10, 784)
    assert dm.tensors("test")[0].shape == (12, 784)
    np.testing.assert_array_equal(ytr.numpy(), arrays["train-labels-idx1-ubyte"][:30])
    assert abs(float(xtr.mean())) < 1e-4 and abs(float(xtr.std()) - 1) < 1e-3
    # pixel order preserved: standardisation is one affine map of the raw bytes
    raw = torch.tensor(arrays["train-images-idx3-ubyte"][:30].reshape(30, -1), dtype=torch.float32)
    assert np.corrcoef(raw.flatten(), xtr.flatten())[0, 1] > 0.9999
    assert len(dm.train_dataloader()) == 4


def test_mnist_missing_directory(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=r"MNIST directory .*nowhere does not exist; create it and put the four standard IDX files there \(train-images-idx3-ubyte",
    ):
        MNISTDataModule(tmp_path / "nowhere").setup("fit")


def test_mnist_missing_file(mnist_dir):
    d, _ = mnist_dir
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=r"MNIST file t10k-labels-idx1-ubyte \(or t10k-labels-idx1-ubyte.gz\) not found",
    ):
        MNISTDataModule(d).setup("fit")


def test_mnist_truncated_file(mnist_dir):
    d, _ = mnist_dir
    path = d / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(
        IDXFormatError, match=r"truncated: shape \(40, 28, 28\) needs 31360 data bytes, found 31260"
    ):
        MNISTDataModule(d).setup("fit")
    path.write_bytes(b"\x00\x00")
    with pytest.raises(
        IDXFormatError, match="truncated: 2 bytes, too short for the 4-byte magic number"
    ):
        read_idx(path)


def test_mnist_truncated_gzip(mnist_dir):
    d, _ = mnist_dir
    path = d / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(IDXFormatError, match="cannot read the file"):
        load_mnist_split(d, "test")


def test_mnist_wrong_magic_number(mnist_dir):
    d, arrays = mnist_dir
    # labels written where the images belong: magic 2049 instead of 2051
    write_idx(d / "train-images-idx3-ubyte", arrays["train-labels-idx1-ubyte"])
    with pytest.raises(
        IDXFormatError,
        match=r"wrong magic number 2049 \(0x00000801\); expected 2051 \(0x00000803\)",
    ):
        MNISTDataModule(d).setup("fit")
    write_idx(d / "junk", arrays["train-labels-idx1-ubyte"], magic_override=b"\x1f\x8b\x08\x01")
    with pytest.raises(IDXFormatError, match="wrong magic number .* starts with two zero bytes"):
        read_idx(d / "junk")


def test_mnist_count_mismatch(mnist_dir):
    d, arrays = mnist_dir
    write_idx(d / "train-labels-idx1-ubyte", arrays["train-labels-idx1-ubyte"][:39])
    with pytest.raises(
        IDXFormatError,
        match="MNIST train split: 40 images in train-images-idx3-ubyte but 39 labels in train-labels-idx1-ubyte; the counts must match",
    ):
        MNISTDataModule(d).setup("fit")


# --- regression -----------------------------------------------------------------------------


def test_heteroscedastic_data_follow_their_true_mean_and_sigma():
    dm = HeteroscedasticDataModule(n_train=20000, n_val=10, n_test=0, seed=1)
    x, y = dm.tensors("train")
    assert x.shape == (20000, 1) and y.shape == (20000,)
    assert float(x.min()) >= -2 and float(x.max()) <= 2
    assert "test" not in dm.splits
    resid = y - dm.true_mean(x).squeeze(1)
    for lo in (-2.0, -0.5, 1.0):
        inside = (x.squeeze(1) >= lo) & (x.squeeze(1) < lo + 0.5)
        emp = float(resid[inside].std())
        true = float(dm.true_sigma(x[inside]).pow(2).mean().sqrt())
        assert emp == pytest.approx(true, rel=0.06)
    assert float(dm.true_sigma(torch.tensor(-2.0))) == pytest.approx(0.1)
    assert float(dm.true_sigma(torch.tensor(2.0))) == pytest.approx(0.9)
    again = HeteroscedasticDataModule(n_train=20000, n_val=10, n_test=0, seed=1)
    torch.testing.assert_close(again.tensors("train")[1], y)
    with pytest.raises(ValueError, match="n_train must be"):
        HeteroscedasticDataModule(n_train=0)


def test_diabetes_is_bundled_and_standardised():
    dm = DiabetesDataModule()
    dm.setup("fit")
    sizes = [len(dm.tensors(s)[0]) for s in ("train", "val", "test")]
    assert sum(sizes) == 442 and sizes[1] == sizes[2] == 88
    x, y = dm.tensors("train")
    assert x.shape[1] == 10
    assert abs(float(y.mean())) < 1e-5 and abs(float(y.std()) - 1) < 1e-5
    assert 140 < dm.target_mean < 165 and 70 < dm.target_std < 85
    raw = DiabetesDataModule(standardize_target=False).tensors("train")[1]
    torch.testing.assert_close(raw, y * dm.target_std + dm.target_mean)


def test_blood_pressure_data():
    age, sbp = load_blood_pressure(torch.float64)
    assert age.dtype == torch.float64 and len(age) == len(sbp) == 33
    assert (float(age[0]), float(sbp[0])) == (22.0, 131.0)
    # ordinary least squares: residual sd ~ 19.3 mmHg (see _data/README.md)
    design = torch.stack([age, torch.ones_like(age)], 1)
    coef = torch.linalg.lstsq(design, sbp.unsqueeze(1)).solution.squeeze(1)
    resid = sbp - design @ coef
    assert math.sqrt(float((resid**2).sum()) / (33 - 2)) == pytest.approx(19.3, abs=0.1)
    dm = BloodPressureDataModule()
    x, y = dm.tensors("train")
    assert x.shape == (33, 1) and y.dtype == torch.float32
    torch.testing.assert_close(x.squeeze(1) * dm.age_std + dm.age_mean, age.float())
    assert dm.val_dataloader() == [] and len(dm.train_dataloader()) == 1


def test_in_memory_datamodule_on_own_tensors():
    from block4.data import InMemoryDataModule

    x, y = torch.randn(100, 3), torch.randn(100)
    dm = InMemoryDataModule((x, y), val=(x[:10], y[:10]), batch_size=32, seed=4)
    assert dm.in_features == 3 and len(dm.train_dataloader()) == 4
    assert len(dm.val_dataloader()) == 1 and dm.test_dataloader() == []
    seen = torch.cat([yb for _, yb in dm.train_dataloader()])
    assert sorted(seen.tolist()) == sorted(y.tolist())
    with pytest.raises(
        ValueError, match="InMemoryDataModule val split: x has 10 examples but y has 9"
    ):
        InMemoryDataModule((x, y), val=(x[:10], y[:9]))
    y_bad = y.clone()
    y_bad[[3, 7]] = float("nan")
    with pytest.raises(
        ValueError,
        match=r"InMemoryDataModule train split: y has a non-finite value \(nan\) at row 3: "
        r"2 non-finite value\(s\) in 2 of 100 rows",
    ):
        InMemoryDataModule((x, y_bad))


# --- what data may enter: non-finite values, dtypes, numpy ------------------------------------


def test_readme_recipe_with_a_nan_in_x_fails_fast_naming_row_and_column():
    x, y = torch.randn(200, 3), torch.randn(200)
    x[57, 2] = float("nan")
    with pytest.raises(
        ValueError,
        match=r"^x has a non-finite value \(nan\) at row 57, column 2: 1 non-finite value\(s\) "
        r"in 1 of 200 rows; drop or impute these rows before training$",
    ):
        TensorBatches(x, y, batch_size=64, shuffle=True)
    x[57, 2], x[3, 0], x[3, 1] = 0.0, float("inf"), float("-inf")
    with pytest.raises(
        ValueError, match=r"\(inf\) at row 3, column 0: 2 non-finite value\(s\) in 1"
    ):
        TensorBatches(x, y, batch_size=64)
    y[199] = float("nan")
    x[3] = 0.0
    with pytest.raises(ValueError, match=r"^y has a non-finite value \(nan\) at row 199:"):
        TensorBatches(x, y, batch_size=64)
    images = torch.zeros(4, 2, 3)
    images[1, 1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"at row 1, position \(1, 2\) within the example"):
        TensorBatches(images, torch.zeros(4), batch_size=2)


def test_float64_numpy_and_integer_inputs_become_float32_integer_targets_int64():
    x64 = torch.randn(10, 2, dtype=torch.float64)
    b = TensorBatches(x64, np.arange(10, dtype=np.int32), batch_size=5)
    assert b.x.dtype == torch.float32 and b.y.dtype == torch.int64
    torch.testing.assert_close(b.x, x64.float(), rtol=0, atol=0)  # rounded to nearest float32
    b = TensorBatches(np.arange(10).reshape(5, 2), np.linspace(0, 1, 5), batch_size=5)
    assert b.x.dtype == torch.float32 and b.y.dtype == torch.float32
    assert b.x.tolist() == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0], [8.0, 9.0]]
    b = TensorBatches(torch.ones(4, 1, dtype=torch.float16), torch.tensor([True, False] * 2), 2)
    assert b.x.dtype == torch.float32 and b.y.tolist() == [1, 0, 1, 0]
    # asked for: float64 kept for a float64 model; dtype=None converts nothing
    assert TensorBatches(x64, torch.zeros(10), 5, dtype=torch.float64).x.dtype == torch.float64
    ids = torch.arange(10)
    assert TensorBatches(ids, torch.zeros(10), 5, dtype=None).x.dtype == torch.int64


def test_inputs_that_cannot_be_converted_get_one_sentence_saying_what_to_pass():
    y = torch.zeros(3)
    cases = [
        (torch.tensor([1, 2, 2**24 + 1]), ValueError, r"x holds integers up to 16777217, which "
         r"torch.float32 cannot represent exactly \(limit 2\*\*24 = 16777216\); convert them "
         r"yourself \(x.to\(torch.float32\)\) if rounding is acceptable"),
        (torch.tensor([1.0, 1e39, 0.0], dtype=torch.float64), ValueError,
         r"x holds values up to 1e\+39, beyond the range of torch.float32 .*pass "
         r"dtype=torch.float64 and train a float64 model"),
        ([[1.0], [2.0], [3.0]], TypeError, r"x must be a torch.Tensor or a numpy array, got "
         r"list; pass torch.tensor\(x, dtype=torch.float32\)"),
        (np.array(["a", "b", "c"]), TypeError, r"x is a numpy array of <U1; pass numbers"),
        (torch.ones(3, dtype=torch.complex64), TypeError, "x is complex"),
        (torch.tensor(1.0), ValueError, "x is a single number; pass one row per example"),
    ]  # fmt: skip
    for x, error, message in cases:
        with pytest.raises(error, match=message):
            TensorBatches(x, y, batch_size=2)
    with pytest.raises(ValueError, match="dtype must be a floating dtype"):
        TensorBatches(torch.zeros(3), y, 2, dtype=torch.int64)


class _LoadsNaN(TensorDataModule):
    def load(self):
        x = torch.randn(20, 4)
        x[5, 3] = float("nan")
        return {"train": (torch.randn(20, 4), torch.zeros(20)), "val": (x, torch.zeros(20))}


class _LoadsJunk(TensorDataModule):
    def load(self):
        return {"training": (torch.zeros(2, 1), torch.zeros(2))}


def test_every_datamodule_checks_what_its_load_returns():
    with pytest.raises(
        ValueError,
        match=r"^_LoadsNaN val split: x has a non-finite value \(nan\) at row 5, column 3",
    ):
        _LoadsNaN().setup("fit")
    with pytest.raises(
        ValueError, match=r"_LoadsJunk.load\(\) must return a dict with keys among train, val, "
        r"test mapping to \(x, y\) pairs; got \['training'\]"
    ):  # fmt: skip
        _LoadsJunk().setup("fit")
    # the bundled ones pass, already in float32 / int64
    for dm in (DigitsDataModule(n_train=64), HeteroscedasticDataModule(n_train=50)):
        x, y = dm.tensors("train")
        assert x.dtype == torch.float32 and y.dtype in (torch.int64, torch.float32)


def test_float64_numpy_data_train_a_model_through_a_datamodule_and_tensor_batches():
    from block4.data import InMemoryDataModule
    from block4.modules import ProbabilisticRegressor

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2))  # float64, numpy
    y = x @ np.array([1.0, -2.0]) + 0.1 * rng.normal(size=64)
    trainer = pl.Trainer(
        max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=False,
    )  # fmt: skip
    model = ProbabilisticRegressor(in_features=2, depth=1, width=8)
    trainer.fit(model, InMemoryDataModule((x, y), val=(x[:16], y[:16]), batch_size=16))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    model = ProbabilisticRegressor(in_features=2, depth=1, width=8)
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=False, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(model, TensorBatches(x, y, batch_size=16))
    assert trainer.global_step == 4


def test_blood_pressure_defaults_to_the_models_dtype():
    from block4.modules import ProbabilisticRegressor

    age, sbp = load_blood_pressure()
    assert age.dtype == sbp.dtype == torch.float32
    model = ProbabilisticRegressor(in_features=1, depth=0)
    dist = model.predict_dist(age[:, None])  # no "mat1 and mat2 must have the same dtype"
    assert dist.mean.shape == (33,)
    exact, _ = load_blood_pressure(torch.float64)
    torch.testing.assert_close(age, exact.float(), rtol=0, atol=0)  # integers: exact
    with pytest.raises(ValueError, match="dtype must be a floating dtype .* got torch.int64"):
        load_blood_pressure(torch.int64)


def test_the_bundled_tables_are_read_as_scikit_learn_reads_them_without_importing_it() -> None:
    import subprocess
    import sys

    import numpy as np
    from sklearn.datasets import load_diabetes, load_digits

    from block4.data.bundled import sklearn_table

    digits, table = load_digits(), sklearn_table("digits.csv.gz", delimiter=",")
    assert np.array_equal(table[:, :-1], digits.data)
    assert np.array_equal(table[:, -1].astype(int), digits.target)
    raw = load_diabetes(scaled=False)
    assert np.array_equal(sklearn_table("diabetes_data_raw.csv.gz"), raw.data)
    assert np.array_equal(sklearn_table("diabetes_target.csv.gz"), raw.target)
    with pytest.raises(FileNotFoundError, match=r"no_such\.csv\.gz was not found"):
        sklearn_table("no_such.csv.gz")
    code = (
        "import sys; from block4.data import DigitsDataModule, DiabetesDataModule; "
        "DigitsDataModule().setup(); DiabetesDataModule().setup(); "
        "print('sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
