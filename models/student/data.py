"""Data of the student network: ancestral samples of the textbook network, or a user's CSV file.

``x`` is a LongTensor of shape (N, 5), columns D, I, G, S, L, with -1 for a missing entry.
Samples come from the true network (Koller & Friedman's tables,
:data:`pyro_zoo.models.student.model.TRUE_CPDS`) with a fixed seed per split: 20,000 train and
5,000 test rows (2,000 each with ``smoke``); ``data="hidden_I"`` hides column I in every row. A CSV
file's first 80% rows are "train".
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from pyro_zoo.models.base import DataError, DataSplit
from pyro_zoo.models.data import read_csv
from pyro_zoo.models.student.model import CARDINALITY, VARIABLES, ancestral_sample, true_cpds

SIZES = {"train": 20_000, "test": 5_000}
SMOKE_SIZE = 2_000
SEEDS = {"train": 20_091, "test": 20_092}


def load_data(split: str, data_dir=None, data: str | None = None, smoke: bool = False) -> DataSplit:
    """Ancestral samples of the true network (fixed seed per split) or a user CSV.

    ``data``: None or "complete" (all entries observed), "hidden_I" (column I set to -1 in every
    row), or a path to a CSV of 5 integer columns D, I, G, S, L (-1 = missing, optional header);
    a CSV's first 80% rows are "train", the rest "test". Sizes: 20,000 train / 5,000 test, or
    2,000 each with ``smoke``. ``data_dir`` is unused (the data are simulated). Returns
    :class:`DataSplit` with ``x`` a LongTensor of shape (N, 5).
    """
    if split not in SIZES:
        raise DataError(f"unknown split {split!r}; use 'train' or 'test'")
    if data is not None and str(data).lower().endswith(".csv"):
        return _load_csv(Path(data), split, smoke)
    if data not in (None, "complete", "hidden_I"):
        raise DataError(f"unknown student data set {data!r}; use 'complete', 'hidden_I' or a .csv path")
    n = SMOKE_SIZE if smoke else SIZES[split]
    generator = torch.Generator().manual_seed(SEEDS[split])
    x = ancestral_sample(true_cpds(), n, generator)
    hidden = []
    if data == "hidden_I":
        x[:, VARIABLES.index("I")] = -1
        hidden = ["I"]
    return DataSplit(
        x=x,
        source=f"{n} ancestral samples of the Koller-Friedman student network (seed {SEEDS[split]})",
        info={"columns": list(VARIABLES), "hidden": hidden, "data": data or "complete", "split": split},
    )


def _load_csv(path: Path, split: str, smoke: bool) -> DataSplit:
    if not path.is_file():
        raise DataError(f"CSV file {path} not found; pass an existing path as `data`")
    values = read_csv(path, hint="every row must be 5 integers D,I,G,S,L (-1 for missing)")
    if values.shape[1] != len(VARIABLES):
        raise DataError(f"{path} has {values.shape[1]} columns; every row must be 5 integers D,I,G,S,L "
                        "(-1 for missing)")
    if len(values) < 2:
        raise DataError(f"{path} has fewer than 2 data rows; give at least 2 rows of D,I,G,S,L")
    x = torch.as_tensor(_codes(values, path), dtype=torch.long)
    cut = max(1, math.floor(0.8 * len(x)))
    x = x[:cut] if split == "train" else x[cut:]
    if smoke:
        x = x[:SMOKE_SIZE]
    return DataSplit(x=x, source=f"{path} ({split}: {len(x)} rows)",
                     info={"columns": list(VARIABLES), "data": str(path), "split": split})


def _codes(values: np.ndarray, path: Path) -> np.ndarray:
    """``values`` (N, 5) as int64 after checking each entry is -1 or a value of its column."""
    high = np.array([CARDINALITY[name] - 1 for name in VARIABLES])
    bad = (values != np.round(values)) | (values < -1) | (values > high)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        name = VARIABLES[col]
        raise DataError(
            f"column {name} holds {values[row, col]:.6g} in row {row + 1} of {path}, but {name} takes "
            f"values 0..{CARDINALITY[name] - 1} (or -1 for missing); recode the data"
        )
    return values.astype(np.int64)


__all__ = ["SEEDS", "SIZES", "SMOKE_SIZE", "load_data"]
