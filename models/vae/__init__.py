"""The VAE of the zoo: its spec (see :mod:`pyro_zoo.models.vae.model` for the maths)."""

from __future__ import annotations

from pyro_zoo.models import data as image_data
from pyro_zoo.models.base import DataSplit
from pyro_zoo.models.nn import implied_pixels
from pyro_zoo.models.spec import ModelSpec
from pyro_zoo.models.vae.config import VAEConfig
from pyro_zoo.models.vae.figures import figures
from pyro_zoo.models.vae.model import VAE, objective


def load_data(split: str, data_dir=None, data=None, smoke: bool = False) -> DataSplit:
    """Grey train images, fixed-binarised test images; MNIST with a ``data_dir``, else the digits;
    ``data="digits17"``: Tomczak's protocol, whole grey levels (also a "validation" split)."""
    return image_data.load_data(split, data_dir=data_dir, data=data, smoke=smoke, binarize_test=True)


def hparams_for(data: DataSplit) -> dict:
    """The hyperparameters the data imply: ``data_dim`` and the likelihood (categorical over whole
    grey levels, Bernoulli for images on the [0, 1] scale)."""
    return {"data_dim": int(data.x.shape[1]), **implied_pixels(data)}


SPEC = ModelSpec(
    name="vae",
    description="Variational autoencoder: z ~ N(0, I), x | z ~ Bernoulli or Categorical(MLP(z)), amortised "
                "Gaussian guide",
    config=VAEConfig,
    build=VAE,
    load_data=load_data,
    train={"epochs": 10, "batch_size": 128, "lr": 2e-3},
    smoke_train={"epochs": 200, "batch_size": 256, "lr": 1e-2},
    objective=objective,
    hparams_for=hparams_for,
    figures=figures,
)

__all__ = ["SPEC", "VAE", "VAEConfig", "hparams_for", "load_data"]
