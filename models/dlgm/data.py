"""The DLGM's data: draws from :func:`pyro_zoo.models.dlgm.model.true_model`, or a user's CSV file."""

from __future__ import annotations

import torch

from pyro_zoo.models.base import DataError, DataSplit
from pyro_zoo.models.data import csv_split
from pyro_zoo.models.dlgm.model import true_model

DATA_SEED = 0
NUM_TRAIN = 2000
NUM_TEST = 2000
NUM_SMOKE = 256


def load_data(split: str, data_dir=None, data: str | None = None, smoke: bool = False) -> DataSplit:
    """Draws from ``true_model()`` (data=None or "synthetic") or rows of a CSV file (data="<path>.csv").

    A CSV holds one data point per row, D numeric columns, optional header; its rows are shuffled
    with seed 0 and split 80 % train / 20 % test.
    """
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; use 'train' or 'test'")
    if data in (None, "synthetic"):
        generator = torch.Generator().manual_seed(DATA_SEED)
        x = true_model().sample(NUM_TRAIN + NUM_TEST, generator=generator)
        x = x[:NUM_TRAIN] if split == "train" else x[NUM_TRAIN:]
        source = "synthetic: seed decoder with TRUE_A, TRUE_B, TRUE_C, TRUE_D (models/dlgm/model.py)"
    elif str(data).endswith(".csv"):
        x = csv_split(data, split)
        source = str(data)
    else:
        raise DataError(f"unknown data {data!r} for dlgm; use 'synthetic' or a path ending in .csv")
    if smoke:
        x = x[:NUM_SMOKE]
        source = f"{source}, first {x.shape[0]}"
    return DataSplit(x=x, source=source, info={"split": split, "num_data": x.shape[0]})


def hparams_for(data: DataSplit) -> dict:
    """``{"data_dim": D}`` read from the data."""
    return {"data_dim": int(data.x.shape[1])}


__all__ = ["DATA_SEED", "NUM_SMOKE", "NUM_TEST", "NUM_TRAIN", "hparams_for", "load_data"]
