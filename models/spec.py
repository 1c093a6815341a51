"""What differs between models, in one frozen record, so shared code never branches on a name.

A model folder's ``__init__.py`` assembles its :class:`ModelSpec` from the folder's pieces: the
config class (``config.py``), the model class (``model.py``), the data loader, the figures
(``figures.py``) and, for the student network, the query language (``queries.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch
from torch.overrides import TorchFunctionMode

from pyro_zoo.models.base import DataError, DataSplit, ZooModel
from pyro_zoo.models.config import Config

#: the most numbers (parameters and buffers) one model may hold: 400 MB in float32, about 1.6 GB
#: with its gradient and Adam's two moments (see :meth:`ModelSpec.check_size`)
MAX_PARAMETERS = 100_000_000

#: the training settings a spec may give (the keyword names of ``pyro_zoo.inference.train.TrainConfig``)
TRAIN_SETTINGS = ("steps", "epochs", "batch_size", "lr", "clip_norm")


#: tensors of at least this many elements are made on the meta device by :class:`LargeTensorsOnMeta`
LARGE_TENSOR = 1 << 16
FACTORIES = (torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.eye)


class LargeTensorsOnMeta(TorchFunctionMode):
    """Within it, a call of a tensor factory (``torch.empty``, ``zeros``, ``ones``, ``full``,
    ``rand``, ``randn``, ``eye``) for at least :data:`LARGE_TENSOR` elements makes a meta tensor:
    how :meth:`ModelSpec.check_size` builds a model without allocating its weights."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and _elements(func, args) >= LARGE_TENSOR:
            kwargs = {**kwargs, "device": "meta"}
        return func(*args, **kwargs)


def _elements(factory, args: tuple) -> int:
    if factory is torch.eye:
        return args[0] * (args[1] if len(args) > 1 else args[0])
    shape = args[0] if args and isinstance(args[0], tuple | list | torch.Size) else args
    return math.prod(shape) if all(isinstance(n, int) for n in shape) else 0


@dataclass(frozen=True)
class ModelSpec:
    """A model of the zoo, of a user's file or of an installed package.

    ``config`` is the model's :class:`~pyro_zoo.models.config.Config` class and ``build(config)`` returns
    the :class:`~pyro_zoo.models.base.ZooModel`. ``load_data(split, data_dir=None, data=None,
    smoke=False)`` returns a :class:`DataSplit` (``split`` "train" or "test", ``data`` a
    model-specific data-set name or a CSV path). ``train`` holds the default training settings
    (``steps`` or ``epochs``, ``batch_size`` (None: full batch), ``lr``) and ``smoke_train`` their
    overrides for tiny runs. ``objective`` names the Pyro ELBO the model trains with: its name,
    ``{"name": ..., "num_particles": ..., "options": {...}}``, or a function of the config
    returning either. ``hparams_for(data)`` gives the hyperparameters a data set implies (its
    dimension, say; explicit ones still win). ``figures(model, data, out_dir)`` writes the
    model's figures and returns ``{caption: path}``; ``answer(model, text)`` answers an exact
    query (``zoo query``), with ``query_config`` the model it answers for without a checkpoint.
    ``source`` says where the spec comes from: "zoo", a user file's path, or "package <dist>".
    """

    name: str
    description: str
    config: type[Config]
    build: Callable[[Config], ZooModel]
    load_data: Callable[..., DataSplit]
    train: dict = field(default_factory=dict)
    smoke_train: dict = field(default_factory=dict)
    objective: str | dict | Callable[[Config], str | dict] = "Trace_ELBO"
    max_plate_nesting: int = 1
    hparams_for: Callable[[DataSplit], dict] | None = None
    figures: Callable[[ZooModel, DataSplit, Path], dict[str, Path]] | None = None
    answer: Callable[[ZooModel, str], dict[str, float]] | None = None
    query_config: Config | None = None
    source: str = "zoo"

    def resolve(self, *, smoke: bool = False, data: DataSplit | None = None, overrides: dict | None = None
                ) -> Config:
        """The config of a run: the defaults (or the smoke variant), then what ``data`` implies, then
        ``overrides``; checked once here, against the number of data points too when ``data`` is given."""
        base = self.config.smoke() if smoke else self.config()
        implied = self.hparams_for(data) if data is not None and self.hparams_for else {}
        config = self.config.from_dict({**implied, **(overrides or {})}, base=base)
        if data is not None:
            config.check_num_data(len(data.x))
        return config

    def make(self, config: Config | None = None, *, smoke: bool = False, **overrides) -> ZooModel:
        """The model of ``config`` (default: the defaults, or the smoke variant) with ``overrides``."""
        config = config or (self.config.smoke() if smoke else self.config())
        return self.build(config.replace(**overrides) if overrides else config)

    def check_size(self, config: Config) -> None:
        """Refuse, with :class:`DataError`, a ``config`` whose model would hold more than
        :data:`MAX_PARAMETERS` numbers. The model is built with its large tensors on the ``meta``
        device (shapes only, nothing allocated) and its small ones real, so that a constructor may
        read small values (Pyro's MADE and DenseNN do); a model whose construction computes on
        its large tensors (a user's program, say) is not sized here."""
        try:
            with pyro.validation_enabled(False), LargeTensorsOnMeta():
                model = self.build(config)
        except (RuntimeError, NotImplementedError):  # values read on the meta device
            return
        size = sum(t.numel() for t in (*model.parameters(), *model.buffers()))
        if size > MAX_PARAMETERS:
            raise DataError(f"{self.name} with {config.to_dict()} would hold {size:,} parameters "
                            f"({4 * size / 1e9:.3g} GB in float32), over the {MAX_PARAMETERS:,} the zoo "
                            "builds; choose smaller layers or fewer data columns")

    def objective_for(self, config: Config) -> dict:
        """The objective (see the class docstring) of a model built from ``config``."""
        objective = self.objective(config) if callable(self.objective) else self.objective
        if isinstance(objective, str):
            objective = {"name": objective}
        return {"num_particles": 1, "options": {}, **objective}

    def train_settings(self, smoke: bool = False, **given) -> dict:
        """The default training settings, the smoke ones on top with ``smoke``, the given ones (not
        None) on top of both; a layer that sets ``steps`` drops an earlier ``epochs`` and the other
        way round."""
        settings: dict = {}
        for layer in (self.train, self.smoke_train if smoke else {}, given):
            layer = {k: v for k, v in layer.items() if v is not None}
            if "steps" in layer or "epochs" in layer:
                settings = {k: v for k, v in settings.items() if k not in ("steps", "epochs")}
            settings.update(layer)
        return settings

__all__ = ["LARGE_TENSOR", "MAX_PARAMETERS", "TRAIN_SETTINGS", "LargeTensorsOnMeta", "ModelSpec"]
