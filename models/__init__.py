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

Hyperparameters are declared, not discovered: ``ModelSpec.rules`` maps each name to an
:class:`Hparam` (type, inclusive bounds, choices) and :func:`check_hparams` is the one
function that checks them, for each model's ``build`` and for the CLI before anything runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch

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


#: caps on single sizes: layer widths and latent sizes, data dimensions, and the number of layers
#: a tuple of widths may list
MAX_UNITS = 10_000
MAX_DIM = 100_000
MAX_LAYERS = 16
#: the most numbers (parameters and buffers) one model may hold: 400 MB in float32, about 1.6 GB
#: with its gradient and Adam's two moments (see :func:`check_size`)
MAX_PARAMETERS = 100_000_000
#: the bound that stands for the number of training points (resolved only where data are known)
NUM_DATA = "the number of training points"
KINDS = {int: "a whole number", float: "a finite number", str: "a name",
         tuple: f"a whole number or a tuple of at most {MAX_LAYERS} of them"}


@dataclass(frozen=True)
class Hparam:
    """The rule of one hyperparameter: ``kind`` is int, float, str, or tuple (an int or a tuple of
    ints, e.g. hidden sizes, each checked against the bounds). ``low`` and ``high`` are inclusive
    bounds: a number, the name of another hyperparameter (e.g. ``latent_dim <= data_dim``), or
    :data:`NUM_DATA`; ``choices`` lists the allowed values of a str."""

    kind: type = int
    low: float | str | None = None
    high: float | str | None = None
    choices: tuple = ()

    def describe(self, context: dict | None = None) -> str:
        """E.g. "a whole number >= 1 and <= the number of training points (200)"."""
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        parts = []
        for sign, bound in ((">=", self.low), ("<=", self.high)):
            value = _limit(bound, context or {})
            if isinstance(bound, str):
                parts.append(f"{sign} {bound}" + ("" if value is None else f" ({value})"))
            elif bound is not None:
                parts.append(f"{sign} {bound:g}")
        return " ".join([KINDS[self.kind], " and ".join(parts)]).strip()


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
    ``rules`` declares each hyperparameter's :class:`Hparam` (see :func:`check_hparams`).
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
    rules: dict[str, Hparam] = field(default_factory=dict)
    #: hyperparameters of the reference model that ``zoo query NAME`` answers for without a checkpoint
    query_hparams: dict = field(default_factory=dict)

    def hparam_names(self) -> list[str]:
        """Every valid hyperparameter name: the rules, the defaults and ``build``'s named arguments."""
        named = [p.name for p in inspect.signature(self.build).parameters.values()
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        return sorted({*self.rules, *self.hparams, *named})

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


def check_hparams(spec: ModelSpec, hparams: dict, num_data: int | None = None) -> dict:
    """``hparams`` checked against ``spec``'s names and rules; raises :class:`DataError` naming the fix.

    Bounds naming another hyperparameter are checked when it is in ``hparams``; :data:`NUM_DATA`
    bounds when ``num_data`` is given. Returns ``hparams`` with integral floats given for ints
    made ints, ints given for floats made floats and lists given for tuples made tuples.
    """
    names = spec.hparam_names()
    unknown = [name for name in hparams if name not in names]
    if unknown:
        raise DataError(f"unknown hyperparameter {_echo(unknown[0])} for {spec.name}; "
                        f"valid names are {', '.join(names)}")
    context = {**hparams, NUM_DATA: num_data}
    checked = {}
    for name, value in hparams.items():
        rule = spec.rules.get(name)
        checked[name] = value if rule is None else _checked(rule, value, context)
        if rule is not None and checked[name] is None:
            raise DataError(f"{spec.name} hyperparameter {name} must be {rule.describe(context)}, got "
                            f"{_echo(value)}; pass e.g. --set {name}={spec.hparams.get(name, '...')}")
    return checked


def check_size(spec: ModelSpec, hparams: dict) -> None:
    """Refuse, with :class:`DataError`, hyperparameters whose model would hold more than
    :data:`MAX_PARAMETERS` numbers. The model is built on the ``meta`` device (shapes only,
    nothing allocated); a model whose construction needs real values (a user's program) is not
    sized here."""
    try:
        with pyro.validation_enabled(False), torch.device("meta"):
            model = spec.build(**hparams)
    except (RuntimeError, NotImplementedError):  # values read on the meta device: only a user's program
        return
    size = sum(t.numel() for t in (*model.parameters(), *model.buffers()))
    if size > MAX_PARAMETERS:
        raise DataError(f"{spec.name} with {_echo(hparams, 80)} would hold {size:,} parameters "
                        f"({4 * size / 1e9:.3g} GB in float32), over the {MAX_PARAMETERS:,} the zoo "
                        "builds; choose smaller layers or fewer data columns")


def _checked(rule: Hparam, value, context: dict):
    """``value`` as ``rule.kind`` when it obeys the rule, else None."""
    value = _of_kind(rule.kind, value)
    if value is None or (rule.choices and value not in rule.choices):
        return None
    for number in value if isinstance(value, tuple) else (value,):
        low, high = (_limit(bound, context) for bound in (rule.low, rule.high))
        if (low is not None and number < low) or (high is not None and number > high):
            return None
    return value


def _limit(bound, context: dict):
    value = context.get(bound) if isinstance(bound, str) else bound
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _of_kind(kind: type, value):
    """``value`` as ``kind``, or None where it is not one."""
    if isinstance(value, bool):
        return None
    if kind is tuple:
        items = list(value) if isinstance(value, list | tuple) else [value]
        ints = [_of_kind(int, item) for item in items[:MAX_LAYERS + 1]]
        return None if None in ints or len(ints) > MAX_LAYERS else tuple(ints)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind is float and isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    return value if isinstance(value, kind) else None


def _echo(value, chars: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= chars else f"{text[:chars]}..."


class UnknownModelError(KeyError):
    def __str__(self):
        return self.args[0]


def get_spec(name: str, *, files: bool = True) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``: a registered name, a path to a ``.py`` file defining
    ``SPEC``, or an installed package's entry point (see the module docstring).

    ``files=False`` resolves registered names and entry points only and never imports a file:
    how a name read from a checkpoint is resolved (a checkpoint never chooses code to run).
    """
    name = str(name)
    if name in REGISTRY:
        return importlib.import_module(REGISTRY[name]).SPEC
    if files and name.endswith(".py"):
        return _file_spec(Path(name))
    points = entry_points()
    if name in points:
        point = points[name]
        source = f"package {point.dist.name}" if point.dist is not None else "package"
        return dataclasses.replace(_checked_spec(point.load(), point.value), source=source)
    if files and _is_file(name):
        raise UnknownModelError(f"{_echo(name)} is not a .py file; give the path of a .py file that defines "
                                "SPEC, or a model name (see `zoo list`)")
    raise UnknownModelError(
        f"unknown model {_echo(name)}; choose one of {', '.join(sorted([*REGISTRY, *points]))} "
        "(see `zoo list`)" + (" or give the path of a .py file that defines SPEC" if files else "")
    )


def _is_file(name: str) -> bool:
    try:
        return Path(name).is_file()
    except OSError:  # e.g. a name too long for a path
        return False


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
    "Hparam",
    "MAX_DIM",
    "MAX_LAYERS",
    "MAX_PARAMETERS",
    "MAX_UNITS",
    "ModelSpec",
    "NUM_DATA",
    "UnknownModelError",
    "ZooModel",
    "all_specs",
    "check_hparams",
    "check_size",
    "entry_points",
    "get_spec",
    "is_file_spec",
]
