"""Datasets: every kind loads into standardized train/val/test tensors; bad files are refused
with a message naming the file and the problem."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.processes import ROOT
from trainer.data import clear_cache, load_dataset
from trainer.params import Params, TrainingError
from trainer.sources import DATASETS, FILE_FORMATS


def load(name: str, **params: object):  # type: ignore[no-untyped-def]
    return load_dataset(name, Params(params))


def blobs(n: int = 100, features: int = 3, classes: int = 3, seed: int = 0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    return rng.normal(size=(n, features)) + y[:, None], y


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes (type code 0x08), as MNIST ships them."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def test_the_registries_name_the_documented_kinds() -> None:
    assert set(DATASETS) == {"digits", "mnist1d", "synthetic"}
    assert set(FILE_FORMATS) == {"npz:", "idx:", "csv:"}


def test_digits_are_8x8_images_split_70_20_10() -> None:
    data = load("digits")
    assert data.sample_shape == (1, 8, 8)
    assert data.n_classes == 10
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (1258, 359, 180)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64


def test_digits_are_scikit_learns_digits_read_without_importing_it() -> None:
    """The worker reads the file scikit-learn ships instead of importing scikit-learn (1.5 s in
    a worker's first trial); the arrays must be exactly what scikit-learn's loader gives."""
    from sklearn.datasets import load_digits as sklearn_digits

    from trainer.sources import load_digits

    ours, theirs = load_digits(Params({})), sklearn_digits()
    assert np.array_equal(ours.x_train, theirs.images)
    assert ours.x_train.dtype == theirs.images.dtype
    assert np.array_equal(ours.y_train, theirs.target)
    assert ours.y_train.dtype == theirs.target.dtype


def test_digits_load_in_a_fresh_process_without_importing_scikit_learn() -> None:
    code = (
        "import sys; from trainer.sources import load_digits; from trainer.params import Params;"
        "a = load_digits(Params({})); print(len(a.y_train), 'sklearn' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.split() == ["1797", "False"]


def test_mnist1d_is_generated_once_then_read_from_the_disk_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mnist1d.data

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("get_dataset downloads")

    monkeypatch.setattr(mnist1d.data, "get_dataset", no_download)
    monkeypatch.setenv("HPO_DATA_DIR", str(tmp_path))
    state = np.random.get_state()[1].copy()
    data = load("mnist1d", n_samples=200)
    assert (tmp_path / "mnist1d_200.npz").is_file()
    assert np.array_equal(np.random.get_state()[1], state)  # global generator untouched
    assert data.sample_shape == (40,)
    assert data.n_classes == 10
    assert len(data.y_test) == 40  # the package's own 80/20 split
    assert (len(data.y_train), len(data.y_val)) == (128, 32)
    clear_cache()
    monkeypatch.setattr(mnist1d.data, "make_dataset", no_download)
    again = load("mnist1d", n_samples=200)
    assert torch.equal(again.x_train, data.x_train)


def test_synthetic_is_seeded_and_takes_a_sample_shape() -> None:
    data = load("synthetic", n_samples=300, n_classes=5, shape=[1, 6, 6])
    assert data.sample_shape == (1, 6, 6)
    assert data.n_classes == 5
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 300
    clear_cache()
    assert torch.equal(
        load("synthetic", n_samples=300, n_classes=5, shape=[1, 6, 6]).x_val, data.x_val
    )
    assert not torch.equal(
        load("synthetic", n_samples=300, n_classes=5, shape=[1, 6, 6], data_seed=1).x_val,
        data.x_val,
    )


def test_loaded_datasets_are_cached_in_memory_by_name_and_options() -> None:
    first = load("synthetic", n_samples=120)
    assert load("synthetic", n_samples=120) is first
    assert load("synthetic", n_samples=120, lr=0.3, width=64) is first  # not data options
    assert load("synthetic", n_samples=121) is not first
    assert load("synthetic", n_samples=120, val_fraction=0.3) is not first
    assert load("digits", n_samples=120) is not first


def test_a_cached_dataset_still_counts_its_options_as_read() -> None:
    # Otherwise every trial after the first would warn that n_samples is an unused param.
    load("synthetic", n_samples=130)
    params = Params({"n_samples": 130, "val_fraction": 0.2})
    load_dataset("synthetic", params)
    assert params.unused() == []


def test_standardization_uses_training_statistics_only(tmp_path: Path) -> None:
    # Train feature: 0 or 2 (mean 1, std 1); validation: 101. Leaked statistics would move both.
    x_train = np.array([[0.0], [2.0]] * 10)
    path = tmp_path / "d.npz"
    np.savez(
        path,
        x_train=x_train,
        y_train=np.arange(20) % 2,
        x_val=np.full((4, 1), 101.0),
        y_val=np.zeros(4, dtype=int),
        x_test=np.full((2, 1), -99.0),
        y_test=np.zeros(2, dtype=int),
    )
    data = load(f"npz:{path}")
    assert sorted(set(data.x_train.flatten().tolist())) == [-1.0, 1.0]
    assert data.x_val.flatten().tolist() == [100.0] * 4
    assert data.x_test.flatten().tolist() == [-100.0] * 2


def test_npz_without_val_and_test_splits_them_off_train(tmp_path: Path) -> None:
    x, y = blobs(200)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x, y_train=y)
    data = load(f"npz:{path}", val_fraction=0.25, test_fraction=0.05)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (140, 50, 10)
    assert data.n_classes == 3


def test_npz_3d_arrays_are_images_unless_layout_is_sequence(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.random.rand(50, 2, 9), y_train=np.arange(50) % 2)
    assert load(f"npz:{path}").sample_shape == (1, 2, 9)
    assert load(f"npz:{path}", layout="sequence").sample_shape == (2, 9)


X, Y = np.zeros((10, 2)), np.arange(10) % 2


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"y_train": None}, r"missing array 'y_train'"),
        ({"y_train": Y[:4]}, r"x_train has 10 samples but y_train has 4"),
        ({"x_train": np.zeros(10)}, r"x_train has shape \(10,\)"),
        ({"y_train": np.zeros((10, 2), int)}, r"y_train has shape \(10, 2\)"),
        ({"x_train": np.array([["a", "b"]] * 10)}, r"x_train is not numeric"),
        ({"x_train": np.full((10, 2), np.nan)}, r"x_train contains NaN or infinite values"),
        ({"y_train": Y - 1}, r"y_train has negative label -1"),
        ({"y_train": Y + 0.5}, r"y_train labels must be integers"),
        ({"x_val": X[:3], "y_val": np.array([0, 1, 2])}, r"y_val has label 2, outside the cl"),
        ({"x_test": np.zeros((3, 3)), "y_test": Y[:3]}, r"x_test samples have shape \(3,\)"),
        ({"x_val": X[:2]}, r"x_val and y_val must be given together"),
    ],
)
def test_malformed_npz_files_are_refused_naming_file_and_problem(
    tmp_path: Path, arrays: dict, message: str
) -> None:
    path = tmp_path / "bad.npz"
    given = {"x_train": X, "y_train": Y, **arrays}
    np.savez(path, **{key: value for key, value in given.items() if value is not None})
    with pytest.raises(TrainingError, match=message) as caught:
        load(f"npz:{path}")
    assert str(path) in str(caught.value)


def test_labels_above_the_declared_class_count_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((10, 2)), y_train=np.arange(10) % 5)
    with pytest.raises(TrainingError, match=r"y_train has label 4, outside the classes 0..2"):
        load(f"npz:{path}", n_classes=3)


def test_a_missing_file_or_a_non_npz_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=r"nope.npz: no such file or directory"):
        load(f"npz:{tmp_path / 'nope.npz'}")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(TrainingError, match=r"text.npz: not a readable .npz file"):
        load(f"npz:{tmp_path / 'text.npz'}")


def test_an_unknown_dataset_name_is_refused_with_the_choices() -> None:
    with pytest.raises(TrainingError, match=r"unknown dataset 'cifar'.*digits.*npz:PATH"):
        load("cifar")


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_files_load_with_the_t10k_files_as_test_split(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(0)
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", rng.integers(0, 255, (60, 4, 5)))
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", np.arange(60) % 10)
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", rng.integers(0, 255, (20, 4, 5)))
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", np.arange(20) % 10)
    data = load(f"idx:{tmp_path}")
    assert data.sample_shape == (1, 4, 5)
    assert data.n_classes == 10
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (48, 12, 20)


def test_idx_without_test_files_splits_them_off_train(tmp_path: Path) -> None:
    write_idx(tmp_path / "train-images.idx3-ubyte", np.zeros((50, 3, 3), np.uint8))
    write_idx(tmp_path / "train-labels.idx1-ubyte", np.arange(50) % 2)
    data = load(f"idx:{tmp_path}")
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (35, 10, 5)


def test_bad_idx_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=r"missing train-images-idx3-ubyte"):
        load(f"idx:{tmp_path}")
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((50, 3, 3), np.uint8))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x12\x34\x08\x01" + b"\0" * 54)
    with pytest.raises(TrainingError, match=r"train-labels-idx1-ubyte: not an IDX file"):
        load(f"idx:{tmp_path}")
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(50) % 2)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(
        TrainingError, match=r"header says \(50, 3, 3\) \(450 bytes\) but holds 440"
    ):
        load(f"idx:{tmp_path}")


def test_csv_takes_the_label_column_and_numeric_features(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    rows = [f"{i * 0.5},{i % 3},{i}" for i in range(40)]
    path.write_text("a,kind,b\n" + "\n".join(rows) + "\n")
    data = load(f"csv:{path}", label="kind")
    assert data.sample_shape == (2,)
    assert data.n_classes == 3
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 40


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b\n1,2\n", r"no label column 'label' \(columns: \['a', 'b'\]\)"),
        ("a,label\n1,0\nx,1\n", r"line 3, column 'a': 'x' is not a number"),
        ("a,label\n1,0\n1,cat\n", r"line 3, column 'label': 'cat' is not a number"),
        ("a,label\n1,0\n1,2,3\n", r"line 3 has 3 fields, the header 2"),
        ("a,label\n", r"no data rows below the header"),
        ("a,label\n1,0.5\n2,1\n", r"y_train labels must be integers"),
    ],
)
def test_malformed_csv_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(TrainingError, match=message) as caught:
        load(f"csv:{path}")
    assert str(path) in str(caught.value)


def test_too_few_samples_for_a_validation_split_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "tiny.csv"
    path.write_text("a,label\n1,0\n2,1\n")
    with pytest.raises(TrainingError, match=r"2 training samples are too few"):
        load(f"csv:{path}")
