"""The zoo's models: one folder each, a shared contract, and the registry.

A model is a folder ``models/<name>/``: ``config.py`` (one frozen dataclass of hyperparameters,
:mod:`pyro_zoo.models.config`), ``model.py`` (the maths, the Pyro ``model``/``guide`` and any closed
form, on the contract of :mod:`pyro_zoo.models.base`), ``figures.py`` where it draws some, and an
``__init__.py`` that assembles its :class:`~pyro_zoo.models.spec.ModelSpec`. ``REGISTRY`` in
:mod:`pyro_zoo.models.registry` is the only list of the zoo's models; :func:`get_spec` also resolves an
installed package's entry point and a user's own file.

Shared pieces: :mod:`pyro_zoo.models.nn` (MLP builder, Bernoulli pixels), :mod:`pyro_zoo.models.plots` (image
grids and scatter figures), :mod:`pyro_zoo.models.data` (MNIST, the 8x8 digits, CSV files),
:mod:`pyro_zoo.models.program` (a plain Pyro program as a model).
"""

from pyro_zoo.models.base import DATA_PLATE, Capabilities, DataError, DataSplit, ZooModel
from pyro_zoo.models.config import MAX_DIM, MAX_LAYERS, MAX_UNITS, NUM_DATA, Config, HparamError, hparam
from pyro_zoo.models.registry import (
    ENTRY_POINT_GROUP,
    REGISTRY,
    UnknownModelError,
    all_specs,
    entry_points,
    get_spec,
    is_file_spec,
    registered_spec,
)
from pyro_zoo.models.spec import MAX_PARAMETERS, ModelSpec

__all__ = [
    "Capabilities", "Config", "DATA_PLATE", "DataError", "DataSplit", "ENTRY_POINT_GROUP", "HparamError",
    "MAX_DIM", "MAX_LAYERS", "MAX_PARAMETERS", "MAX_UNITS", "ModelSpec", "NUM_DATA", "REGISTRY",
    "UnknownModelError", "ZooModel", "all_specs", "entry_points", "get_spec", "hparam", "is_file_spec",
    "registered_spec"
]
