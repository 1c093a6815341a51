"""A plain Pyro program -- a model function and a guide -- as a zoo model, and its spec.

Write the model the way Pyro's tutorials do, put the data points in ``pyro.plate(DATA_PLATE, N)``,
pick a guide (an AutoGuide class such as ``AutoNormal``, or a guide function with
``pyro.param`` s), and describe it in a :class:`~pyro_zoo.models.ModelSpec` with :func:`program_spec`::

    def model(x):
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        with pyro.plate(DATA_PLATE, x.shape[0]):
            pyro.sample("obs", dist.Normal(loc, 1.0), obs=x)

    SPEC = program_spec("my_model", model, autoguide=AutoNormal, load_data=load_data)

``zoo train path/to/file.py`` then trains it, ``zoo eval path/to/file.py --checkpoint ...``
evaluates it. Its parameters live in the Pyro param store (an AutoGuide's are also those of its
module); a checkpoint holds both, and :func:`pyro_zoo.runs.load` puts them back.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import torch

from pyro_zoo.models.base import Capabilities, DataSplit, ZooModel
from pyro_zoo.models.config import MAX_DIM, Config, hparam
from pyro_zoo.models.spec import ModelSpec

#: the most dimensions one data point of a plain program may have
MAX_EVENT_DIMS = 8


@dataclasses.dataclass(frozen=True)
class ProgramConfig(Config):
    """The setting every plain program has: the shape of one data point, read from the data."""

    event_shape: tuple[int, ...] = hparam((), low=1, high=MAX_DIM, max_len=MAX_EVENT_DIMS,
                                          help="shape of one data point (set from the data)")


class PyroProgram(ZooModel):
    """``model`` and a guide (``guide`` function, or ``autoguide(model)`` built here) as a zoo model.

    ``inputs`` names the :class:`DataSplit` fields the program takes (``("x",)``, ``("x", "y")``);
    ``config.event_shape`` is the shape of one row of the first input. With ``takes_config`` the
    program (and a guide function) receive the config as the keyword argument ``config``. By
    default it declares no sampler and no importance sampling (the latents of such programs are
    usually global); pass ``capabilities`` to say otherwise, and ``sample(n)`` to give it a sampler.
    """

    def __init__(self, config: ProgramConfig, model: Callable, guide: Callable | None = None, *,
                 autoguide: Callable | None = None, inputs=("x",), takes_config: bool = False,
                 capabilities: Capabilities | None = None,
                 sample: Callable[[int], torch.Tensor] | None = None):
        super().__init__()
        if (guide is None) == (autoguide is None):
            raise ValueError("give either a guide function (guide=) or an AutoGuide class (autoguide=)")
        self.config = config
        if takes_config:
            model = functools.partial(model, config=config)
            guide = None if guide is None else functools.partial(guide, config=config)
        self.program = model
        self.guide_program = autoguide(model) if autoguide is not None else guide
        self.inputs = tuple(inputs)
        self.event_shape = tuple(config.event_shape)
        self.capabilities = capabilities or Capabilities(samples=sample is not None,
                                                         importance_sampling=False)
        self.sampler = sample

    def model(self, *inputs):
        return self.program(*inputs)

    def guide(self, *inputs):
        return self.guide_program(*inputs)

    def preprocess(self, *inputs):
        return inputs

    def sample(self, n: int) -> torch.Tensor:
        if self.sampler is None:
            raise NotImplementedError("this program was given no sampler (program_spec(..., sample=...))")
        return self.sampler(n)


def program_spec(name: str, model: Callable, *, load_data: Callable[..., DataSplit],
                 guide: Callable | None = None, autoguide: Callable | None = None,
                 config: type[Config] | None = None, description: str = "", inputs=("x",),
                 objective: str | dict = "Trace_ELBO", train: dict | None = None,
                 smoke_train: dict | None = None, capabilities: Capabilities | None = None,
                 sample: Callable[[int], torch.Tensor] | None = None,
                 max_plate_nesting: int = 1) -> ModelSpec:
    """The :class:`~pyro_zoo.models.ModelSpec` of a plain Pyro program (see the module docstring).

    ``load_data(split, data_dir=None, data=None, smoke=False)`` returns a :class:`DataSplit`;
    ``train`` the training settings (default 2000 steps, full batch, lr 0.01), ``smoke_train``
    those of ``--smoke`` (default 200 steps). ``config``: the program's own settings, a frozen
    dataclass subclassing :class:`~pyro_zoo.models.config.Config` (``--set`` then checks and sets them);
    model and guide function then take it as the keyword argument ``config``.
    """
    config_class = ProgramConfig if config is None else _with_event_shape(config)

    def build(resolved: ProgramConfig) -> PyroProgram:
        return PyroProgram(resolved, model, guide, autoguide=autoguide, inputs=inputs,
                           takes_config=config is not None, capabilities=capabilities, sample=sample)

    def hparams_for(data: DataSplit) -> dict:
        return {"event_shape": tuple(data.x.shape[1:])}

    return ModelSpec(
        name=name,
        description=description or (model.__doc__ or name).strip().splitlines()[0],
        config=config_class,
        build=build,
        load_data=load_data,
        train=train or {"steps": 2000, "lr": 0.01},
        smoke_train=smoke_train or {"steps": 200},
        objective=objective,
        max_plate_nesting=max_plate_nesting,
        hparams_for=hparams_for,
    )


def _with_event_shape(config: type[Config]) -> type[Config]:
    """``config`` with the :class:`ProgramConfig` field ``event_shape`` added."""
    if "event_shape" in config.names():
        return config
    return dataclasses.make_dataclass(config.__name__, [], bases=(config, ProgramConfig), frozen=True)


__all__ = ["MAX_EVENT_DIMS", "ProgramConfig", "PyroProgram", "program_spec"]
