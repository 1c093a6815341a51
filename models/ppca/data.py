"""PPCA's data: the 8x8 digits, draws from known parameters (data="synthetic"), or a user's CSV file."""

from __future__ import annotations

import torch

from pyro_zoo.models.base import DataError, DataSplit
from pyro_zoo.models.data import csv_split, load_digits
from pyro_zoo.models.ppca.config import PPCAConfig

SYNTHETIC_SEED = 1
SYNTHETIC_SIGMA = 0.1
NUM_SYNTHETIC = (2000, 1000)
NUM_SMOKE = 200


def synthetic_parameters(data_dim: int = 64, latent_dim: int = 10) -> dict[str, torch.Tensor]:
    """The known (W, mu, sigma) behind data="synthetic": W_ij ~ N(0, 0.3^2), mu_i ~ U(0, 1), sigma = 0.1,
    drawn with seed SYNTHETIC_SEED."""
    generator = torch.Generator().manual_seed(SYNTHETIC_SEED)
    w = 0.3 * torch.randn(data_dim, latent_dim, generator=generator)
    mu = torch.rand(data_dim, generator=generator)
    return {"W": w, "mu": mu, "sigma": torch.tensor(SYNTHETIC_SIGMA)}


def hparams_for(data: DataSplit) -> dict:
    """``{"data_dim": D}``, and ``latent_dim = D - 1`` when the default q = 10 does not fit below D."""
    data_dim = int(data.x.shape[1])
    implied = {"data_dim": data_dim}
    if data_dim <= PPCAConfig().latent_dim:
        implied["latent_dim"] = max(1, data_dim - 1)
    return implied


def load_data(split: str, data_dir=None, data: str | None = None, smoke: bool = False) -> DataSplit:
    """data=None or "digits": sklearn's 8x8 digits / 16; "synthetic": draws from
    ``synthetic_parameters()``; "<path>.csv": one data point per row, rows shuffled (seed 0) and
    split 80 % / 20 %. ``smoke`` keeps the first NUM_SMOKE rows."""
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; use 'train' or 'test'")
    y = None
    if data in (None, "digits"):
        digits = load_digits(split)
        x, y, source = digits.x, digits.y, digits.source
    elif data == "synthetic":
        x = _synthetic(split)
        source = "synthetic: PPCA with synthetic_parameters() (models/ppca/data.py)"
    elif str(data).endswith(".csv"):
        x = csv_split(data, split)
        source = str(data)
    else:
        raise DataError(f"unknown data {data!r} for ppca; use 'digits', 'synthetic' or a path ending in .csv")
    if smoke:
        x = x[:NUM_SMOKE]
        y = None if y is None else y[:NUM_SMOKE]
        source = f"{source}, first {x.shape[0]}"
    return DataSplit(x=x, y=y, source=source, info={"split": split, "num_data": x.shape[0]})


def _synthetic(split: str) -> torch.Tensor:
    params = synthetic_parameters()
    generator = torch.Generator().manual_seed(SYNTHETIC_SEED + 1)
    total = sum(NUM_SYNTHETIC)
    z = torch.randn(total, params["W"].shape[1], generator=generator)
    noise = torch.randn(total, params["W"].shape[0], generator=generator)
    x = z @ params["W"].T + params["mu"] + params["sigma"] * noise
    return x[:NUM_SYNTHETIC[0]] if split == "train" else x[NUM_SYNTHETIC[0]:]


__all__ = [
    "NUM_SMOKE", "NUM_SYNTHETIC", "SYNTHETIC_SEED", "SYNTHETIC_SIGMA", "hparams_for", "load_data",
    "synthetic_parameters"
]
