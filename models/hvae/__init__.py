"""The two-stochastic-layer VAE of the zoo: its spec (see :mod:`pyro_zoo.models.hvae.model` for the maths)."""

from __future__ import annotations

from pyro_zoo.models import data as image_data
from pyro_zoo.models.base import DataSplit
from pyro_zoo.models.hvae.config import HVAEConfig
from pyro_zoo.models.hvae.figures import figures
from pyro_zoo.models.hvae.model import HVAE, GaussianMLP, objective
from pyro_zoo.models.nn import implied_pixels
from pyro_zoo.models.spec import ModelSpec


def load_data(split: str, data_dir=None, data=None, smoke: bool = False) -> DataSplit:
    """Tomczak's digits protocol (grey levels 0..16, also a "validation" split) by default; MNIST with
    a ``data_dir`` (grey training images, test images binarised once)."""
    return image_data.load_data(split, data_dir=data_dir, data=data, smoke=smoke, binarize_test=True,
                                default="digits17")


def hparams_for(data: DataSplit) -> dict:
    """What the data imply: ``data_dim`` and the likelihood (categorical over grey levels, or Bernoulli)."""
    return {"data_dim": int(data.x.shape[1]), **implied_pixels(data)}


SPEC = ModelSpec(
    name="hvae",
    description="VAE with two stochastic layers x <- z1 <- z2 (Burda et al. 2016), bottom-up Gaussian guide",
    config=HVAEConfig,
    build=HVAE,
    load_data=load_data,
    train={"epochs": 10, "batch_size": 100, "lr": 1e-3},
    smoke_train={"epochs": 10, "batch_size": 64, "lr": 3e-3},
    objective=objective,
    hparams_for=hparams_for,
    figures=figures,
)

__all__ = ["GaussianMLP", "HVAE", "HVAEConfig", "SPEC", "figures", "hparams_for", "load_data", "objective"]
