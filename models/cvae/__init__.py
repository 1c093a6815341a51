"""The conditional VAE of the zoo: its spec (see :mod:`pyro_zoo.models.cvae.model` for the maths)."""

from __future__ import annotations

from pyro_zoo.models import data as image_data
from pyro_zoo.models.base import DataError, DataSplit
from pyro_zoo.models.cvae.config import CVAEConfig
from pyro_zoo.models.cvae.figures import figures
from pyro_zoo.models.cvae.model import CVAE
from pyro_zoo.models.spec import ModelSpec


def load_data(split: str, data_dir=None, data=None, smoke: bool = False) -> DataSplit:
    """(x, y): grey train images, fixed-binarised test images, and their digit labels; MNIST with a
    ``data_dir``, else the embedded 8x8 digits (as for the VAE)."""
    split_data = image_data.load_data(split, data_dir=data_dir, data=data, smoke=smoke, binarize_test=True)
    if split_data.y is None:
        raise DataError("the CVAE needs digit labels; use the digits or MNIST data sets")
    return split_data


def hparams_for(data: DataSplit) -> dict:
    """``{"data_dim": D}`` from the data."""
    return {"data_dim": int(data.x.shape[1])}


SPEC = ModelSpec(
    name="cvae",
    description="Conditional VAE: z ~ N(0, I), x | y, z ~ Bernoulli(MLP([z, onehot(y)])); "
                "scored by log p(x | y)",
    config=CVAEConfig,
    build=CVAE,
    load_data=load_data,
    train={"epochs": 10, "batch_size": 128, "lr": 1e-3},
    smoke_train={"epochs": 200, "batch_size": 256, "lr": 1e-2},
    objective="TraceMeanField_ELBO",
    hparams_for=hparams_for,
    figures=figures,
)

__all__ = ["CVAE", "CVAEConfig", "SPEC", "hparams_for", "load_data"]
