"""The zoo's models and their registry.

``REGISTRY`` is the only list of models: a name maps to the module that defines ``SPEC``.
Adding a model is one new file under ``models/`` plus one line here; the contract test in
``tests/test_contract.py`` then checks it with no further edits.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from models.base import DataError, DataSplit, ZooModel

REGISTRY: dict[str, str] = {
    "dlgm": "models.dlgm",
    "mixture": "models.mixture",
    "ppca": "models.ppca",
    "student": "models.student",
    "vae": "models.vae",
}


@dataclass(frozen=True)
class ModelSpec:
    """Everything that differs between models, so shared code never branches on a name.

    ``build(**hparams)`` returns a :class:`ZooModel`; ``load_data(split, data_dir=None,
    data=None, smoke=False)`` returns a :class:`DataSplit` (``split`` is "train" or "test",
    ``data`` a model-specific data-set name or a CSV path). ``train`` holds the default
    training settings (``steps`` or ``epochs``, ``batch_size`` (None: full batch), ``lr``);
    the ``smoke_*`` dicts override hyperparameters and training settings for tiny runs;
    ``hparams_for`` reads the hyperparameters a data set implies (explicit ones still win).
    """

    name: str
    description: str
    build: Callable[..., ZooModel]
    load_data: Callable[..., DataSplit]
    hparams: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    smoke_hparams: dict = field(default_factory=dict)
    smoke_train: dict = field(default_factory=dict)
    elbo: str = "Trace_ELBO"  # or "TraceEnum_ELBO" when the model enumerates discrete latents
    max_plate_nesting: int = 1
    #: hyperparameters a data set implies (e.g. its dimension): ``hparams_for(DataSplit) -> dict``
    hparams_for: Callable[[DataSplit], dict] | None = None
    #: hyperparameters of the reference model that ``zoo query NAME`` answers for without a checkpoint
    query_hparams: dict = field(default_factory=dict)

    def make(self, smoke: bool = False, **overrides) -> ZooModel:
        hparams = {**self.hparams, **(self.smoke_hparams if smoke else {}), **overrides}
        return self.build(**hparams)

    def train_settings(self, smoke: bool = False, **overrides) -> dict:
        given = {k: v for k, v in overrides.items() if v is not None}
        return {**self.train, **(self.smoke_train if smoke else {}), **given}


class UnknownModelError(KeyError):
    def __str__(self):
        return self.args[0]


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered under ``name``."""
    if name not in REGISTRY:
        raise UnknownModelError(
            f"unknown model {name!r}; choose one of {', '.join(sorted(REGISTRY))} (see `zoo list`)"
        )
    return importlib.import_module(REGISTRY[name]).SPEC


def all_specs() -> list[ModelSpec]:
    return [get_spec(name) for name in sorted(REGISTRY)]


__all__ = [
    "REGISTRY",
    "DataError",
    "DataSplit",
    "ModelSpec",
    "UnknownModelError",
    "ZooModel",
    "all_specs",
    "get_spec",
]
