"""The normalizing flow of the zoo: its spec (see :mod:`pyro_zoo.models.flow.model` for the maths)."""

from __future__ import annotations

from pyro_zoo.models import data as image_data
from pyro_zoo.models.base import DataSplit
from pyro_zoo.models.flow.config import FLOW_LIKELIHOODS, FlowConfig
from pyro_zoo.models.flow.figures import figures
from pyro_zoo.models.flow.model import PADDING, Flow
from pyro_zoo.models.spec import ModelSpec


def load_data(split: str, data_dir=None, data=None, smoke: bool = False) -> DataSplit:
    """Whole grey levels: Tomczak's digits protocol by default (``split`` also "validation"); MNIST
    with a ``data_dir`` and the digits' random split as their levels x * (L - 1), e.g. 0..255."""
    images = image_data.load_data(split, data_dir=data_dir, data=data, smoke=smoke, default="digits17")
    if images.info["data"] != "digits17":
        images.x = (images.x * (images.info["levels"] - 1)).round()
        images.source += f", as whole grey levels 0..{images.info['levels'] - 1}"
    return images


def hparams_for(data: DataSplit) -> dict:
    """What the data imply: ``data_dim`` and, for grey-level images, ``levels``."""
    levels = data.info.get("levels")
    return {"data_dim": int(data.x.shape[1]), **({"levels": int(levels)} if levels else {})}


SPEC = ModelSpec(
    name="flow",
    description="Normalizing flow (RealNVP affine couplings); grey levels uniformly dequantised, log P(x) "
                "bounded below",
    config=FlowConfig,
    build=Flow,
    load_data=load_data,
    train={"epochs": 100, "batch_size": 64, "lr": 1e-3},
    smoke_train={"epochs": 5, "batch_size": 64, "lr": 1e-3},
    objective="Trace_ELBO",
    hparams_for=hparams_for,
    figures=figures,
)

__all__ = ["FLOW_LIKELIHOODS", "Flow", "FlowConfig", "PADDING", "SPEC", "figures", "hparams_for", "load_data"]
