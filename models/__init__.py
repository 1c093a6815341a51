"""The zoo's models and their registry.

``REGISTRY`` is the only list of the zoo's own models: a name maps to the module that defines
``SPEC``. Adding a model is one new file under ``models/`` plus one line here; the contract test
in ``tests/test_contract.py`` then checks it with no further edits.

:func:`get_spec` is the one place that resolves a model, from three sources (``ModelSpec.source``):

* ``"zoo"`` -- a name in ``REGISTRY``;
* a path -- a user's own file ending in ``.py`` that defines ``SPEC`` (imported from that path:
  it is the user's code, run because the user named it);
* ``"package <dist>"`` -- an installed package's entry point in the group ``pyro_zoo.models``
  (``[project.entry-points."pyro_zoo.models"] my_model = "my_package.my_model"``), naming a
  module that defines ``SPEC``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from models.base import DATA_PLATE, Capabilities, DataError, DataSplit, ZooModel

#: the entry-point group through which installed packages add models
ENTRY_POINT_GROUP = "pyro_zoo.models"

REGISTRY: dict[str, str] = {
    "bayes_regression": "models.bayes_regression",
    "cvae": "models.cvae",
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
    ``objective`` names the Pyro ELBO the model trains with: its name, or ``{"name": ...,
    "num_particles": ..., "options": {...}}``, or a function of the hyperparameters returning that, e.g.
    ``{"name": "TraceMeanField_ELBO"}`` where the KL is analytic, ``TraceEnum_ELBO`` where
    discrete latents are summed out, ``RenyiELBO`` with ``alpha=0`` for the IWAE bound.
    ``source`` says where the spec comes from: "zoo", a user file's path, or "package <dist name>"
    (set by :func:`get_spec`).
    """

    name: str
    description: str
    build: Callable[..., ZooModel]
    load_data: Callable[..., DataSplit]
    hparams: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    smoke_hparams: dict = field(default_factory=dict)
    smoke_train: dict = field(default_factory=dict)
    objective: str | dict | Callable[[dict], dict] = "Trace_ELBO"
    max_plate_nesting: int = 1
    #: hyperparameters a data set implies (e.g. its dimension): ``hparams_for(DataSplit) -> dict``
    hparams_for: Callable[[DataSplit], dict] | None = None
    source: str = "zoo"

    def make(self, smoke: bool = False, **overrides) -> ZooModel:
        hparams = {**self.hparams, **(self.smoke_hparams if smoke else {}), **overrides}
        return self.build(**hparams)

    def objective_for(self, hparams: dict) -> dict:
        """The objective (see the class docstring) for a model built with ``hparams``."""
        objective = self.objective(hparams) if callable(self.objective) else self.objective
        if isinstance(objective, str):
            objective = {"name": objective}
        return {"num_particles": 1, "options": {}, **objective}

    def train_settings(self, smoke: bool = False, **overrides) -> dict:
        given = {k: v for k, v in overrides.items() if v is not None}
        return {**self.train, **(self.smoke_train if smoke else {}), **given}


class UnknownModelError(KeyError):
    def __str__(self):
        return self.args[0]


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``: a registered name, a path to a ``.py`` file defining
    ``SPEC``, or an installed package's entry point (see the module docstring)."""
    name = str(name)
    if name in REGISTRY:
        return importlib.import_module(REGISTRY[name]).SPEC
    if name.endswith(".py") or Path(name).is_file():
        return _file_spec(Path(name))
    points = entry_points()
    if name in points:
        point = points[name]
        source = f"package {point.dist.name}" if point.dist is not None else "package"
        return dataclasses.replace(_checked_spec(point.load(), point.value), source=source)
    raise UnknownModelError(
        f"unknown model {name!r}; choose one of {', '.join(sorted([*REGISTRY, *points]))} (see `zoo list`) "
        "or give the path of a .py file that defines SPEC"
    )


def is_file_spec(spec: ModelSpec) -> bool:
    """Whether ``spec`` came from a user's file (its ``source`` is then the file's path)."""
    return spec.source.endswith(".py")


def entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """The models installed packages add through the ``pyro_zoo.models`` entry-point group."""
    return {point.name: point for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


_FILE_MODULES: dict[Path, object] = {}


def _file_spec(path: Path) -> ModelSpec:
    path = path.expanduser().resolve()
    if not path.is_file():
        raise UnknownModelError(f"there is no model file {path}; give the path of a .py file that "
                                "defines SPEC")
    module = _FILE_MODULES.get(path)
    if module is None:
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
        module_name = f"zoo_user_{path.stem}_{digest}"
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module  # dataclasses and pickling look a module up by name
        try:
            loader_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
        _FILE_MODULES[path] = module
    return dataclasses.replace(_checked_spec(module, str(path)), source=str(path))


def _checked_spec(module, where: str) -> ModelSpec:
    spec = getattr(module, "SPEC", None)
    if not isinstance(spec, ModelSpec):
        raise UnknownModelError(f"{where} defines no SPEC = ModelSpec(...) (or "
                                "models.program.program_spec(...)); add one")
    return spec


def all_specs() -> list[ModelSpec]:
    """The zoo's models, then those of installed packages."""
    return [get_spec(name) for name in sorted(REGISTRY)] + [
        get_spec(name) for name in sorted(entry_points()) if name not in REGISTRY
    ]


__all__ = [
    "DATA_PLATE",
    "ENTRY_POINT_GROUP",
    "REGISTRY",
    "Capabilities",
    "DataError",
    "DataSplit",
    "ModelSpec",
    "UnknownModelError",
    "ZooModel",
    "all_specs",
    "entry_points",
    "get_spec",
    "is_file_spec",
]
