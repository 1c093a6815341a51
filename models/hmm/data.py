"""Data of the HMM: sequences drawn from known parameters, US GDP growth, or a user's CSV file.

* ``"synthetic"`` (default): N sequences of T steps from a two-state Gaussian HMM with the
  parameters :data:`TRUE_GAUSSIAN` (the true states ride along in ``info["states"]``);
* ``"synthetic-categorical"``: the same chain with 4-symbol categorical emissions
  (:data:`TRUE_CATEGORICAL`);
* ``"gdp"``: quarterly growth of US real GDP, 1959Q2-2009Q3 (100 x log-differences of
  ``realgdp`` in statsmodels' ``macrodata``, shipped inside the statsmodels package: no download),
  standardised with the training half's mean and sd; train = the first 101 quarters, test = the
  last 101, each one sequence (Hamilton's 1989 two-regime recession/expansion model);
* a path to a CSV file: one sequence per row, all of one length, split 80/20 by rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import statsmodels.api as sm
import torch

from pyro_zoo.models.base import DataError, DataSplit

TRUE_GAUSSIAN = {"initial": [0.5, 0.5], "transition": [[0.9, 0.1], [0.2, 0.8]],
                 "locs": [-1.0, 1.0], "scales": [0.6, 0.6]}
TRUE_CATEGORICAL = {"initial": [0.5, 0.5], "transition": [[0.9, 0.1], [0.2, 0.8]],
                    "emission": [[0.6, 0.3, 0.05, 0.05], [0.05, 0.05, 0.3, 0.6]]}
#: (sequences, steps) per split
SIZES = {"full": (50, 100), "smoke": (16, 30)}
DATA_SEED = {"train": 2020, "test": 2021}
DATASETS = ("synthetic", "synthetic-categorical", "gdp")


def load_data(split: str, data_dir=None, data=None, smoke: bool = False) -> DataSplit:
    """The ``split`` ("train" or "test") of ``data`` (module docstring); ``data_dir`` is unused."""
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    data = data or "synthetic"
    if data == "gdp":
        return gdp_growth(split)
    if data in ("synthetic", "synthetic-categorical"):
        return simulated(split, data, *SIZES["smoke" if smoke else "full"])
    if str(data).endswith(".csv") or Path(str(data)).is_file():
        return sequences_csv(Path(data), split)
    raise DataError(f"unknown HMM data {data!r}; choose one of {', '.join(DATASETS)} or give a CSV path")


def simulated(split: str, data: str, num_sequences: int, length: int) -> DataSplit:
    """Sequences and their true states from the known parameters (a fixed seed per split)."""
    truth = TRUE_GAUSSIAN if data == "synthetic" else TRUE_CATEGORICAL
    rng = np.random.default_rng(DATA_SEED[split])
    transition = np.asarray(truth["transition"])
    states = np.empty((num_sequences, length), dtype=np.int64)
    states[:, 0] = rng.choice(2, size=num_sequences, p=truth["initial"])
    for t in range(1, length):
        states[:, t] = (rng.random(num_sequences) > transition[states[:, t - 1], 0]).astype(np.int64)
    if data == "synthetic":
        locs, scales = np.asarray(truth["locs"]), np.asarray(truth["scales"])
        x = torch.as_tensor(rng.normal(locs[states], scales[states]), dtype=torch.float32)
    else:
        cumulative = np.asarray(truth["emission"]).cumsum(-1)[states]
        x = torch.as_tensor((rng.random(states.shape)[..., None] > cumulative).sum(-1), dtype=torch.long)
    return DataSplit(x=x, source=f"{data} HMM {split} ({num_sequences} sequences x {length} steps)",
                     info={"data": data, "split": split, "states": torch.as_tensor(states)})


def gdp_growth(split: str) -> DataSplit:
    """US real GDP growth per quarter, standardised, one sequence per split (module docstring)."""
    gdp = sm.datasets.macrodata.load_pandas().data["realgdp"].to_numpy()
    growth = 100 * np.diff(np.log(gdp))
    half = len(growth) // 2
    mean, sd = growth[:half].mean(), growth[:half].std()
    rows = growth[:half] if split == "train" else growth[-half:]
    x = torch.as_tensor((rows - mean) / sd, dtype=torch.float32).unsqueeze(0)
    return DataSplit(x=x, source=f"US real GDP growth {split} ({half} quarters, statsmodels macrodata)",
                     info={"data": "gdp", "split": split, "mean": float(mean), "sd": float(sd)})


def sequences_csv(path: Path, split: str, train_fraction: float = 0.8) -> DataSplit:
    """One sequence per row of a numeric CSV file; rows of unequal length are refused."""
    if not path.is_file():
        raise DataError(f"CSV file {str(path)!r} does not exist; check the path given as data")
    rows = [line.strip().split(",") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    lengths = {len(row) for row in rows}
    if len(lengths) > 1:
        raise DataError(f"the sequences in {str(path)!r} have unequal lengths ({min(lengths)} to "
                        f"{max(lengths)} steps); cut them to one common length (or split them into files "
                        "of equal-length sequences)")
    try:
        values = np.asarray(rows, dtype=np.float64)
    except ValueError:
        raise DataError(f"CSV file {str(path)!r} has a non-numeric field; keep numeric sequences "
                        "only") from None
    if len(values) < 2:
        raise DataError(f"CSV file {str(path)!r} has fewer than 2 sequences; a train/test split needs 2")
    order = np.random.default_rng(0).permutation(len(values))
    cut = min(len(values) - 1, max(1, int(round(train_fraction * len(values)))))
    chosen = np.sort(order[:cut] if split == "train" else order[cut:])
    return DataSplit(x=torch.as_tensor(values[chosen], dtype=torch.float32),
                     source=f"{path.name} {split} ({len(chosen)} sequences x {values.shape[1]} steps)",
                     info={"data": str(path), "split": split})


def hparams_for(data: DataSplit) -> dict:
    """The hyperparameters the data imply: sequence length, emission kind and (categorical) symbols."""
    if data.x.dtype.is_floating_point:
        return {"length": int(data.x.shape[1]), "emission": "gaussian"}
    return {"length": int(data.x.shape[1]), "emission": "categorical",
            "num_symbols": max(2, int(data.x.max()) + 1)}


__all__ = [
    "DATASETS", "TRUE_CATEGORICAL", "TRUE_GAUSSIAN", "gdp_growth", "hparams_for", "load_data",
    "sequences_csv", "simulated"
]
