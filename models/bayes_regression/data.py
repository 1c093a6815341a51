"""Data of the Bayesian linear regression: scikit-learn's diabetes data (Efron et al., 2004).

442 patients, 10 features (age, sex, BMI, blood pressure and six blood serum measurements) and a
disease-progression score one year later; a fixed 80/20 split, features and response
standardised with the training split's mean and sd (so the model needs no intercept).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_diabetes

from pyro_zoo.models.base import DataError, DataSplit

TEST_FRACTION = 0.2


def load_data(split: str, data_dir=None, data=None, smoke: bool = False) -> DataSplit:
    """scikit-learn's diabetes data (442 x 10), a fixed 80/20 split, standardised with the train
    split's statistics: ``x`` (N, 10) float32, ``y`` (N,) float32. ``data_dir``, ``data`` and
    ``smoke`` change nothing (the data set is small and embedded)."""
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    if data not in (None, "diabetes"):
        raise DataError(f"bayes_regression reads scikit-learn's diabetes data only, not {data!r}; "
                        "drop `data`")
    features, target = load_diabetes(return_X_y=True)
    order = np.random.RandomState(0).permutation(len(target))
    num_test = int(round(TEST_FRACTION * len(order)))
    train_rows, test_rows = order[:-num_test], order[-num_test:]
    mean, sd = features[train_rows].mean(0), features[train_rows].std(0)
    y_mean, y_sd = target[train_rows].mean(), target[train_rows].std()
    rows = train_rows if split == "train" else test_rows
    return DataSplit(
        x=torch.as_tensor((features[rows] - mean) / sd, dtype=torch.float32),
        y=torch.as_tensor((target[rows] - y_mean) / y_sd, dtype=torch.float32),
        source=f"scikit-learn diabetes {split} ({len(rows)} patients, 10 standardised features)",
        info={"data": "diabetes", "split": split},
    )


def hparams_for(data: DataSplit) -> dict:
    """The hyperparameters the data imply: ``{"data_dim": D}``."""
    return {"data_dim": int(data.x.shape[1])}


__all__ = ["TEST_FRACTION", "hparams_for", "load_data"]
