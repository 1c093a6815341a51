"""The neural autoregressive model of the zoo: its spec (see :mod:`pyro_zoo.models.arm.model` for the
maths)."""

from __future__ import annotations

from pyro_zoo.models import data as image_data
from pyro_zoo.models.arm.config import ARMConfig
from pyro_zoo.models.arm.figures import figures
from pyro_zoo.models.arm.model import ARM
from pyro_zoo.models.base import DataSplit
from pyro_zoo.models.nn import implied_pixels
from pyro_zoo.models.spec import ModelSpec


def load_data(split: str, data_dir=None, data=None, smoke: bool = False) -> DataSplit:
    """Tomczak's digits protocol (grey levels 0..16) by default; MNIST with a ``data_dir`` (grey
    training images, test images binarised once); ``split`` also "validation" for digits17."""
    return image_data.load_data(split, data_dir=data_dir, data=data, smoke=smoke, binarize_test=True,
                                default="digits17")


def hparams_for(data: DataSplit) -> dict:
    """What the data imply: ``data_dim`` and the likelihood (categorical over grey levels, or Bernoulli)."""
    return {"data_dim": int(data.x.shape[1]), **implied_pixels(data)}


SPEC = ModelSpec(
    name="arm",
    description="Neural autoregressive model: p(x) = prod_d p(x_d | x_<d) by a masked MLP (MADE); "
                "exact log p(x)",
    config=ARMConfig,
    build=ARM,
    load_data=load_data,
    train={"epochs": 50, "batch_size": 64, "lr": 1e-3},
    smoke_train={"epochs": 5, "batch_size": 64, "lr": 3e-3},
    objective="Trace_ELBO",
    hparams_for=hparams_for,
    figures=figures,
)

__all__ = ["ARM", "ARMConfig", "SPEC", "figures", "hparams_for", "load_data"]
