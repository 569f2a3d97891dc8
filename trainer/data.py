"""Datasets: checks, train/validation/test splits, standardization and an in-memory cache.

`load_dataset(name, params, device)` returns a `Dataset` whose splits are tensors on the device
(float32 x, int64 y). Names are the built-ins of `trainer.sources.DATASETS`, a plugin's
`hpo.datasets` entry point, or a file format prefix of `trainer.sources.FILE_FORMATS` followed by
a path (`npz:data.npz`, `idx:~/mnist`, `csv:table.csv`). Reading the arrays is `trainer.sources`'
job; this module turns whatever a source gave into the same checked, split, standardized tensors.

Samples are channel-first: (F,) feature vectors, (C, H, W) images, or (C, L) sequences. A 3-D
array (N, A, B) from a file is read as one-channel images (N, H, W) unless param `layout` is
"sequence", which reads it as (N, C, L).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer import plugins
from trainer.params import Params, TrainingError
from trainer.sources import DATASETS, FILE_FORMATS, Arrays, FileLoader, Loader, Splits

CACHE_SIZE = 4


@dataclass(frozen=True)
class Dataset:
    """Standardized splits on one device. The test split may be empty (test_fraction 0)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    # The training split's per-feature statistics every split was standardized with (on the
    # CPU; None when param `standardize` is false): a kept model applies them to raw inputs.
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


# ---------------------------------------------------------------- checks, splits, standardization


def _checked(arrays: Arrays, params: Params) -> tuple[Splits, int]:
    """Channel-first float32 x and int64 y per given split, and the class count.

    Raises TrainingError naming the source and the problem: non-numeric or non-finite data,
    mismatched lengths or sample shapes, labels that are not integers in [0, n_classes).
    """
    layout = params.get_choice("layout", "image", ("image", "sequence"))
    splits: Splits = {}
    for split, (x, y) in arrays.splits().items():
        splits[split] = (
            _features(arrays.source, split, x, layout),
            _labels(arrays.source, split, y),
        )
        if len(splits[split][0]) != len(splits[split][1]):
            raise TrainingError(
                f"{arrays.source}: x_{split} has {len(x)} samples but y_{split} has {len(y)}"
            )
        if splits[split][0].shape[1:] != splits["train"][0].shape[1:]:
            raise TrainingError(
                f"{arrays.source}: x_{split} samples have shape {x.shape[1:]}, "
                f"x_train samples {arrays.x_train.shape[1:]}"
            )
    if len(splits["train"][0]) == 0:
        raise TrainingError(f"{arrays.source}: x_train is empty")
    return splits, _class_count(arrays.source, splits, params)


def _features(source: str, split: str, x: np.ndarray, layout: str) -> np.ndarray:
    if x.dtype.kind not in "biuf":
        raise TrainingError(f"{source}: x_{split} is not numeric (dtype {x.dtype})")
    if not 2 <= x.ndim <= 4:
        raise TrainingError(
            f"{source}: x_{split} has shape {x.shape}; expected (N, F), (N, H, W), (N, C, L) "
            f"or (N, C, H, W)"
        )
    # float32 throughout: a float64 copy of MNIST would take 376 MB per copy.
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise TrainingError(f"{source}: x_{split} contains NaN or infinite values")
    if x.ndim == 3 and layout == "image":
        x = x[:, None]  # (N, H, W) images get their one channel
    return x


def _labels(source: str, split: str, y: np.ndarray) -> np.ndarray:
    if y.ndim != 1:
        raise TrainingError(f"{source}: y_{split} has shape {y.shape}; expected (N,) labels")
    if y.dtype.kind not in "biuf" or (y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0)):
        raise TrainingError(f"{source}: y_{split} labels must be integers 0..K-1")
    if len(y) and y.min() < 0:
        raise TrainingError(f"{source}: y_{split} has negative label {int(y.min())}")
    return y.astype(np.int64)


def _class_count(source: str, splits: Splits, params: Params) -> int:
    """Param `n_classes` when given, else the largest training label + 1 (at least 2); every
    label of every split must lie below it."""
    inferred = max(int(splits["train"][1].max()) + 1, 2)
    n_classes = params.get_int("n_classes", inferred, low=2)
    for split, (_, y) in splits.items():
        if len(y) and int(y.max()) >= n_classes:
            raise TrainingError(
                f"{source}: y_{split} has label {int(y.max())}, outside the classes "
                f"0..{n_classes - 1} (the training labels, or param 'n_classes')"
            )
    return n_classes


def _split(splits: Splits, params: Params) -> Splits:
    """Splits off the validation and test sets the source does not give, from the training set,
    with a permutation seeded by `data_seed` (default 0) so every trial gets the same split."""
    val_fraction = params.get_float("val_fraction", 0.2, low=0.0, below=1.0)
    test_fraction = params.get_float("test_fraction", 0.1, low=0.0, below=1.0)
    if val_fraction + test_fraction >= 1.0:
        raise TrainingError("params 'val_fraction' + 'test_fraction' must be < 1")
    x, y = splits["train"]
    order = np.random.default_rng(params.get_int("data_seed", 0, low=0)).permutation(len(y))
    cut = 0
    for split, fraction in (("val", val_fraction), ("test", test_fraction)):
        if split not in splits:
            size = round(fraction * len(y))
            splits[split] = (x[order[cut : cut + size]], y[order[cut : cut + size]])
            cut += size
    if len(splits["val"][1]) == 0 or cut >= len(y):
        raise TrainingError(
            f"{len(y)} training samples are too few to split off a validation set "
            f"(val_fraction {val_fraction}, test_fraction {test_fraction})"
        )
    splits["train"] = (x[order[cut:]], y[order[cut:]])
    return splits


Stats = tuple[np.ndarray, np.ndarray] | None


def _standardized(splits: Splits, params: Params) -> tuple[Splits, Stats]:
    """Per-feature mean and std of the training split only, applied to every split; constant
    features (std 0, e.g. image borders) are only centered. Returns the splits and the
    (mean, std) used, None when param `standardize` is false."""
    if not params.get_bool("standardize", True):
        return splits, None
    x_train = splits["train"][0]
    mean, std = x_train.mean(axis=0, dtype=np.float64), x_train.std(axis=0, dtype=np.float64)
    mean, std = mean.astype(np.float32), np.where(std > 1e-6, std, 1.0).astype(np.float32)
    return {split: ((x - mean) / std, y) for split, (x, y) in splits.items()}, (mean, std)


# ---------------------------------------------------------------- loading and the cache


@dataclass(frozen=True)
class _Entry:
    """A cached dataset and the params its loading read, with the values they had (None for
    a param that was absent): any params agreeing on those would load the same dataset."""

    where: tuple  # name, device and the file's (size, modification time)
    reads: tuple[tuple[str, str | None], ...]
    dataset: Dataset

    def serves(self, where: tuple, params: Params) -> bool:
        return where == self.where and all(_value(params, k) == v for k, v in self.reads)


_cache: list[_Entry] = []  # the most recently used last


def load_dataset(name: str, params: Params, device: str | torch.device = "cpu") -> Dataset:
    """The dataset `name` with its options from `params`, standardized, on `device`.

    Loaded datasets stay cached in this process (the last CACHE_SIZE ones), so a worker does not
    reload per trial. A cached one serves when the name, the device, the file's size and time,
    and the value of every param its loading read (a plugin's own options included) agree.
    Raises TrainingError for an unknown name, a missing or malformed file, or a bad option.
    """
    path, loader = _resolve(name)
    where = (name, str(torch.device(device)), _stamp(path))
    for i, entry in enumerate(_cache):
        if entry.serves(where, params):
            _cache.append(_cache.pop(i))
            params.used.update(k for k, _ in entry.reads)
            return entry.dataset
    reading = Params(params.values)  # records exactly what loading reads
    arrays = loader(reading)
    splits, n_classes = _checked(arrays, reading)
    standardized, stats = _standardized(_split(splits, reading), reading)
    dataset = _on_device(standardized, n_classes, device, stats)
    params.used.update(reading.used)
    reads = tuple((k, _value(params, k)) for k in sorted(reading.used))
    _cache.append(_Entry(where, reads, dataset))
    del _cache[:-CACHE_SIZE]
    return dataset


def clear_cache() -> None:
    """Drops every cached dataset (and with it their device memory)."""
    _cache.clear()


def _resolve(name: str) -> tuple[Path | None, Loader]:
    """(the file, or None for a built-in; the loader taking only params)."""
    if name in DATASETS:
        return None, DATASETS[name]
    plugin = plugins.discover().datasets.get(name)
    if plugin is not None:
        return None, partial(_load_plugin, name, plugin)
    for prefix, file_loader in FILE_FORMATS.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            path = Path(name[len(prefix) :]).expanduser()
            return path, partial(_load_file, file_loader, path)
    raise TrainingError(
        f"unknown dataset {name!r}; choose one of {sorted(DATASETS)} or a file as "
        f"{', '.join(p + 'PATH' for p in FILE_FORMATS)}"
    )


def _load_plugin(name: str, load: Callable[..., Any], params: Params) -> Arrays:
    """A dataset from an `hpo.datasets` entry point: a mapping of numpy arrays like an npz."""
    arrays = load(_Options(params))
    if not isinstance(arrays, Mapping) or "x_train" not in arrays or "y_train" not in arrays:
        raise TrainingError(
            f"plugin dataset {name!r} must return a mapping with x_train and "
            "y_train arrays (and optionally x_val, y_val, x_test, y_test)"
        )

    def optional(key: str) -> np.ndarray | None:
        return None if arrays.get(key) is None else np.asarray(arrays[key])

    return Arrays(
        f"plugin dataset {name!r}",
        np.asarray(arrays["x_train"]),
        np.asarray(arrays["y_train"]),
        optional("x_val"),
        optional("y_val"),
        optional("x_test"),
        optional("y_test"),
    )


class _Options(Mapping[str, Any]):
    """A plugin dataset's read-only view of the params. It records each key the plugin looks
    up (present or not), so the cache keys that dataset on exactly the options it used;
    iterating over the keys counts as reading them all."""

    def __init__(self, params: Params) -> None:
        self._params = params

    def __getitem__(self, key: str) -> Any:
        self._params.used.add(key)
        return self._params.values[key]

    def __iter__(self) -> Iterator[str]:
        self._params.used.update(self._params.values)
        return iter(self._params.values)

    def __len__(self) -> int:
        return len(self._params.values)


def _load_file(file_loader: FileLoader, path: Path, params: Params) -> Arrays:
    if not path.exists():
        raise TrainingError(f"{path}: no such file or directory")
    return file_loader(path, params)


def _stamp(path: Path | None) -> tuple[int, int] | None:
    if path is None or not path.exists():
        return None
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _value(params: Params, key: str) -> str | None:
    """A param's value as comparable text; None when absent."""
    if key not in params.values:
        return None
    return json.dumps(params.values[key], sort_keys=True, default=str)


def _on_device(
    splits: Splits, n_classes: int, device: str | torch.device, stats: Stats = None
) -> Dataset:
    def tensors(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = splits[split]
        x_tensor = torch.from_numpy(x).to(device=device, dtype=torch.float32)
        return x_tensor, torch.from_numpy(y).to(device=device, dtype=torch.int64)

    mean = std = None
    if stats is not None:
        mean, std = torch.from_numpy(stats[0]), torch.from_numpy(stats[1])
    return Dataset(
        *tensors("train"), *tensors("val"), *tensors("test"), n_classes, mean=mean, std=std
    )


def cached_bytes(device_type: str) -> int:
    """Bytes the dataset cache holds on devices of `device_type` ("cpu", "cuda")."""
    total = 0
    for dataset in (entry.dataset for entry in _cache):
        for value in vars(dataset).values():
            if isinstance(value, torch.Tensor) and value.device.type == device_type:
                total += value.nbytes
    return total
