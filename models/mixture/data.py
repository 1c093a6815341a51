"""Data of the Gaussian mixture: the seed's cat weights, a 2-D synthetic set, or a user's CSV file.

``load_data(data=...)``: ``"cats"`` (default) the seed's cat weights in kg, 1-D, K = 2
(:data:`CATS`); ``"synthetic2d"`` 2-D, K = 3 (:data:`SYNTHETIC2D`); or a path to a numeric CSV
file (header optional), split 80/20 into train/test by a fixed permutation. The synthetic sets
are draws of the mixture itself (z_n ~ Categorical(w), x_n ~ N(mu_z, Sigma_z)), with their true
component as the label ``y``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pyro_zoo.models.base import DataError, DataSplit
from pyro_zoo.models.data import csv_split

#: Cat weights in kg (seed 000): z = 0 female N(4.0, 0.5^2), z = 1 male N(5.5, 0.7^2), P(male) = 0.45.
CATS = {
    "weights": np.array([0.55, 0.45]),
    "locs": np.array([[4.0], [5.5]]),
    "covariances": np.array([[[0.5**2]], [[0.7**2]]]),
}

#: Three correlated 2-D Gaussians, well separated (Mahalanobis distances between means > 4).
SYNTHETIC2D = {
    "weights": np.array([0.5, 0.3, 0.2]),
    "locs": np.array([[-3.0, 0.0], [3.0, 1.0], [0.0, 5.0]]),
    "covariances": np.array([
        [[1.0, 0.5], [0.5, 1.0]],
        [[0.8, -0.3], [-0.3, 0.5]],
        [[0.6, 0.0], [0.0, 1.5]],
    ]),
}

DATASETS = {"cats": CATS, "synthetic2d": SYNTHETIC2D}

#: Data points per split (train and test are disjoint draws from one seeded stream).
SIZES = {"full": 2000, "smoke": 200}
DATA_SEED = 20240


def true_parameters(name: str) -> dict[str, np.ndarray]:
    """Generating parameters of a synthetic data set: weights (K,), locs (K, D), covariances (K, D, D)."""
    if name not in DATASETS:
        raise DataError(f"no true parameters for {name!r}; choose one of {', '.join(DATASETS)}")
    return {key: value.copy() for key, value in DATASETS[name].items()}


def load_data(split: str = "train", data_dir=None, data: str | None = None, smoke: bool = False) -> DataSplit:
    """``split`` "train"/"test" of ``data``: "cats" (default), "synthetic2d", or a CSV path.

    Synthetic sets: 2000 points per split (200 with ``smoke``), labels ``y`` = true component.
    A CSV path is tried as given, then relative to ``data_dir``.
    """
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    data = data or "cats"
    if data in DATASETS:
        return _synthetic(data, split, smoke)
    path = Path(data)
    if not path.is_file() and data_dir is not None and (Path(data_dir) / path).is_file():
        path = Path(data_dir) / path
    if path.suffix.lower() != ".csv" and not path.is_file():
        raise DataError(
            f"unknown data set {data!r}; choose one of {', '.join(DATASETS)} or give a path to a .csv file"
        )
    return _csv(path, split, smoke)


def hparams_for(data: DataSplit) -> dict:
    """The hyperparameters the data imply: ``dim``, and ``num_components`` for a synthetic set."""
    return {key: data.info[key] for key in ("num_components", "dim") if key in data.info}


def _draw(params: dict, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    z = rng.choice(len(params["weights"]), size=n, p=params["weights"])
    chol = np.linalg.cholesky(params["covariances"])
    noise = rng.standard_normal((n, params["locs"].shape[1]))
    x = params["locs"][z] + np.einsum("nij,nj->ni", chol[z], noise)
    return x, z


def _synthetic(name: str, split: str, smoke: bool) -> DataSplit:
    size = SIZES["smoke" if smoke else "full"]
    x, z = _draw(DATASETS[name], 2 * SIZES["full"], np.random.default_rng(DATA_SEED))
    offset = 0 if split == "train" else SIZES["full"]
    part = slice(offset, offset + size)
    k, d = DATASETS[name]["locs"].shape
    return DataSplit(
        torch.as_tensor(x[part], dtype=torch.float32),
        torch.as_tensor(z[part], dtype=torch.long),
        source=f"synthetic {name} (pyro_zoo.models.mixture.{name.upper()}, seed {DATA_SEED})",
        info={"num_components": k, "dim": d},
    )


def _csv(path: Path, split: str, smoke: bool) -> DataSplit:
    x = csv_split(path, split, seed=DATA_SEED)
    if smoke:
        x = x[: SIZES["smoke"]]
    return DataSplit(x, source=f"CSV file {path}", info={"dim": x.shape[1]})


__all__ = [
    "CATS", "DATASETS", "DATA_SEED", "SIZES", "SYNTHETIC2D", "hparams_for", "load_data", "true_parameters"
]
