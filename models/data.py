"""Image data shared by the image models: MNIST (torchvision) and scikit-learn's 8x8 digits.

Both come back as a :class:`models.DataSplit` whose ``x`` is a float32 tensor of shape
``(N, D)`` with grey levels in [0, 1] (one row per image, pixels in row-major order) and whose
``y`` is the int64 digit label of shape ``(N,)``:

* ``"mnist"``: LeCun et al. (1998), 60000 train / 10000 test images of 28x28, so D = 784,
  read once from the four raw IDX files under ``<data_dir>/MNIST/raw/`` (torchvision layout),
  scaled by 1/255. The files are downloaded only when absent.
* ``"digits"``: the UCI 8x8 digits shipped with scikit-learn (Alpaydin & Kaynak, 1998), 1797
  images of 8x8 with 17 grey levels, so D = 64, scaled by 1/16. Embedded and offline; a fixed
  split (a seed-0 permutation, last fifth as test) gives 1438 train / 359 test images.

Which data set :func:`load_data` reads: ``data`` when named; otherwise ``"mnist"`` when a
``data_dir`` is given and the embedded ``"digits"`` when none is (so every command runs offline
by default). ``data="mnist"`` without ``data_dir`` reads ``$ZOO_DATA_DIR`` or ``./data``. Models
read their input dimension from the data (e.g. ``hparams_for`` in :mod:`models.vae`).

:func:`binarize` draws x_b ~ Bernoulli(x) with a fixed generator: the fixed binarised test sets
of binary-likelihood models are made with it once, while their training minibatches are
binarised afresh at every step (dynamic binarisation).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from models.base import DataError, DataSplit

DATA_SETS = ("digits", "mnist")
MNIST_SMOKE_SIZES = {"train": 2000, "test": 500}
DIGITS_TEST_FRACTION = 0.2


def default_data_dir() -> Path:
    """Where MNIST is looked for (and downloaded to) when no ``data_dir`` is given."""
    return Path(os.environ.get("ZOO_DATA_DIR", "data"))


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; use 'train' or 'test'")


def _missing_mnist(data_dir: Path) -> DataError:
    return DataError(
        f"MNIST not found under {data_dir} and it could not be downloaded; pass --data-dir "
        "pointing at a folder with MNIST/raw/ (e.g. ../shared/data) or connect to the network"
    )


def load_mnist(split: str, data_dir: str | Path, download: bool = True) -> DataSplit:
    """MNIST ``split`` from ``<data_dir>/MNIST/raw``: ``x`` (N, 784) in [0, 1], ``y`` (N,).

    The IDX files are read once into uint8 tensors (no per-item transform, no DataLoader).
    When they are absent a download is tried if ``download``; failing that, :class:`DataError`.
    """
    _check_split(split)
    from torchvision.datasets import MNIST

    root = Path(data_dir).expanduser()
    train = split == "train"
    try:
        dataset = MNIST(root=root, train=train, download=False)
    except RuntimeError:
        if not download:
            raise _missing_mnist(root) from None
        try:
            dataset = MNIST(root=root, train=train, download=True)
        except (RuntimeError, OSError) as err:
            raise _missing_mnist(root) from err
    x = dataset.data.reshape(len(dataset.data), -1).to(torch.float32) / 255.0
    return DataSplit(
        x=x,
        y=dataset.targets.to(torch.int64),
        source=f"MNIST {split} ({len(x)} images of 28x28) from {root / 'MNIST' / 'raw'}",
        info={"data": "mnist", "image_shape": (28, 28), "split": split},
    )


def load_digits(split: str) -> DataSplit:
    """scikit-learn's 8x8 digits, ``split`` of a fixed 80/20 split: ``x`` (N, 64) in [0, 1]."""
    _check_split(split)
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    order = np.random.RandomState(0).permutation(len(bunch.target))
    num_test = int(round(DIGITS_TEST_FRACTION * len(order)))
    rows = order[:-num_test] if split == "train" else order[-num_test:]
    x = torch.as_tensor(bunch.data[rows] / 16.0, dtype=torch.float32)
    return DataSplit(
        x=x,
        y=torch.as_tensor(bunch.target[rows], dtype=torch.int64),
        source=f"scikit-learn 8x8 digits {split} ({len(x)} images of 8x8)",
        info={"data": "digits", "image_shape": (8, 8), "split": split},
    )


def read_csv(path: str | Path) -> np.ndarray:
    """Rows of a numeric comma-separated file, shape (N, D), float64; one header line is optional."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CSV file {str(path)!r} does not exist; check the path given as data")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise DataError(f"CSV file {str(path)!r} is empty; give a file with one numeric row per point")
    skip = 0 if _is_numeric_row(lines[0]) else 1
    if len(lines) == skip:
        raise DataError(f"CSV file {str(path)!r} has a header but no data rows; add numeric rows")
    try:
        values = np.loadtxt(lines[skip:], delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError as error:
        raise DataError(
            f"CSV file {str(path)!r} has a non-numeric or ragged row ({error}); "
            "keep only numeric columns of equal length"
        ) from None
    if not np.isfinite(values).all():
        raise DataError(f"CSV file {str(path)!r} contains NaN or infinite values; remove or impute them")
    return values


def _is_numeric_row(line: str) -> bool:
    try:
        [float(field) for field in line.split(",")]
    except ValueError:
        return False
    return True


def csv_split(path: str | Path, split: str, seed: int = 0, train_fraction: float = 0.8) -> torch.Tensor:
    """``split`` of a user CSV (:func:`read_csv`): a seeded permutation, the first
    ``train_fraction`` of rows as "train", the rest as "test", rows kept in file order; float32."""
    _check_split(split)
    values = read_csv(path)
    if len(values) < 2:
        raise DataError(f"CSV file {str(path)!r} has fewer than 2 rows; a train/test split needs at least 2")
    order = np.random.default_rng(seed).permutation(len(values))
    cut = min(len(values) - 1, max(1, int(round(train_fraction * len(values)))))
    rows = order[:cut] if split == "train" else order[cut:]
    return torch.as_tensor(values[np.sort(rows)], dtype=torch.float32)


def binarize(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """x_b ~ Bernoulli(x) elementwise, drawn with a generator seeded by ``seed``; same shape."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    return torch.bernoulli(x, generator=generator)


def data_name(data: str | None = None, data_dir: str | Path | None = None) -> str:
    """The data set to read: ``data`` if named, else MNIST given a ``data_dir``, else the digits."""
    if data is None:
        return "digits" if data_dir is None else "mnist"
    name = str(data).lower()
    if name not in DATA_SETS:
        raise DataError(f"unknown image data set {data!r}; choose one of {', '.join(DATA_SETS)}")
    return name


def load_data(
    split: str,
    data_dir: str | Path | None = None,
    data: str | None = None,
    smoke: bool = False,
    binarize_test: bool = False,
) -> DataSplit:
    """Grey images of ``split`` (see the module docstring for which data set is chosen).

    ``smoke`` keeps the first 2000 train / 500 test MNIST images (the digits are small already).
    ``binarize_test`` replaces the test images by one fixed draw of :func:`binarize` (seed 0).
    """
    name = data_name(data, data_dir)
    if name == "digits":
        split_data = load_digits(split)
    else:
        split_data = load_mnist(split, default_data_dir() if data_dir is None else data_dir)
        if smoke:
            size = MNIST_SMOKE_SIZES[split]
            split_data = DataSplit(split_data.x[:size], split_data.y[:size],
                                   f"{split_data.source}, first {size}", split_data.info)
    if binarize_test and split == "test":
        split_data.x = binarize(split_data.x)
        split_data.source += ", binarised once (Bernoulli draw, seed 0)"
        split_data.info["binarised"] = "fixed, seed 0"
    return split_data


__all__ = [
    "binarize",
    "csv_split",
    "data_name",
    "default_data_dir",
    "load_data",
    "load_digits",
    "load_mnist",
    "read_csv",
]
