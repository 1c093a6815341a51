"""Data of the state space model: sequences from known parameters, or the Nile river flows.

* ``"synthetic"`` (default): N sequences of T steps from a damped rotation in d = 2 observed in
  D = 1 (:data:`TRUE`), the true states in ``info["states"]``;
* ``"nile"``: the annual flow of the Nile at Aswan, 1871-1970 (10^8 m^3; statsmodels' ``nile``
  data set, shipped inside the statsmodels package: no download), the classic local-level series
  (Durbin & Koopman, 2012), standardised with the training half's mean and sd; train = 1871-1920,
  test = 1921-1970, each one sequence (50, 1). Fit it with ``state_dim`` 1 (:func:`hparams_for`).
"""

from __future__ import annotations

import numpy as np
import statsmodels.api as sm
import torch

from pyro_zoo.models.base import DataError, DataSplit

TRUE = {"A": [[0.9, 0.2], [-0.2, 0.9]], "C": [[1.0, 0.5]], "m0": [0.0, 0.0], "s0": [1.0, 1.0],
        "q": [0.3, 0.3], "r": [0.5]}
#: (sequences, steps) per split
SIZES = {"full": (50, 100), "smoke": (16, 20)}
DATA_SEED = {"train": 3030, "test": 3031}
DATASETS = ("synthetic", "nile")


def load_data(split: str, data_dir=None, data=None, smoke: bool = False) -> DataSplit:
    """The ``split`` ("train" or "test") of ``data`` (module docstring); ``data_dir`` is unused."""
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    data = data or "synthetic"
    if data == "nile":
        return nile(split)
    if data == "synthetic":
        return simulated(split, *SIZES["smoke" if smoke else "full"])
    raise DataError(f"unknown state-space data {data!r}; choose one of {', '.join(DATASETS)}")


def simulated(split: str, num_sequences: int, length: int) -> DataSplit:
    """y (N, T, 1) and the true states (N, T, 2) from :data:`TRUE` (a fixed seed per split)."""
    rng = np.random.default_rng(DATA_SEED[split])
    a, c = np.asarray(TRUE["A"]), np.asarray(TRUE["C"])
    x = np.asarray(TRUE["m0"]) + np.asarray(TRUE["s0"]) * rng.standard_normal((num_sequences, 2))
    states, ys = [], []
    for t in range(length):
        if t:
            x = x @ a.T + np.asarray(TRUE["q"]) * rng.standard_normal(x.shape)
        states.append(x)
        ys.append(x @ c.T + np.asarray(TRUE["r"]) * rng.standard_normal((num_sequences, 1)))
    return DataSplit(x=torch.as_tensor(np.stack(ys, 1), dtype=torch.float32),
                     source=f"synthetic state space {split} ({num_sequences} sequences x {length} steps)",
                     info={"data": "synthetic", "split": split,
                           "states": torch.as_tensor(np.stack(states, 1), dtype=torch.float32)})


def nile(split: str) -> DataSplit:
    """The Nile flows, standardised, one sequence of 50 years per split (module docstring)."""
    volume = sm.datasets.nile.load_pandas().data["volume"].to_numpy()
    half = len(volume) // 2
    mean, sd = volume[:half].mean(), volume[:half].std()
    rows = volume[:half] if split == "train" else volume[half:]
    y = torch.as_tensor((rows - mean) / sd, dtype=torch.float32).reshape(1, -1, 1)
    return DataSplit(x=y, source=f"Nile flows at Aswan {split} ({half} years, statsmodels nile)",
                     info={"data": "nile", "split": split, "mean": float(mean), "sd": float(sd)})


def hparams_for(data: DataSplit) -> dict:
    """Sequence length and observed dimension from the data; the Nile's local level has d = 1."""
    implied = {"length": int(data.x.shape[1]), "obs_dim": int(data.x.shape[2])}
    return {**implied, "state_dim": 1} if data.info.get("data") == "nile" else implied


__all__ = ["DATASETS", "TRUE", "hparams_for", "load_data", "nile", "simulated"]
