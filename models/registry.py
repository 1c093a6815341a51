"""Where models come from: the zoo's registry, installed packages, and a user's own file.

``REGISTRY`` is the only list of the zoo's own models: a name maps to the package (a folder under
``models/``) that defines ``SPEC``. Adding a model is one new folder plus one line here; the
contract test in ``tests/test_contract.py`` then checks it with no further edits.

:func:`get_spec` resolves a model from three sources (``ModelSpec.source``):

* ``"zoo"`` -- a name in ``REGISTRY``;
* ``"package <dist>"`` -- an installed package's entry point in the group ``pyro_zoo.models``
  (``[project.entry-points."pyro_zoo.models"] my_model = "my_package.my_model"``), naming a
  module that defines ``SPEC``;
* a path -- a user's own file ending in ``.py`` that defines ``SPEC``, imported from that path:
  it is the user's code, run because the user named it.

:func:`registered_spec` resolves the first two only: it is what a name read from a file (a
checkpoint's) goes through, so that a file never chooses code to run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path

from pyro_zoo.models.base import DataError
from pyro_zoo.models.spec import ModelSpec

#: the entry-point group through which installed packages add models
ENTRY_POINT_GROUP = "pyro_zoo.models"

REGISTRY: dict[str, str] = {
    "arm": "pyro_zoo.models.arm",
    "bayes_regression": "pyro_zoo.models.bayes_regression",
    "cvae": "pyro_zoo.models.cvae",
    "dlgm": "pyro_zoo.models.dlgm",
    "eight_schools": "pyro_zoo.models.eight_schools",
    "flow": "pyro_zoo.models.flow",
    "hmm": "pyro_zoo.models.hmm",
    "hvae": "pyro_zoo.models.hvae",
    "lgssm": "pyro_zoo.models.lgssm",
    "mixture": "pyro_zoo.models.mixture",
    "ppca": "pyro_zoo.models.ppca",
    "student": "pyro_zoo.models.student",
    "vae": "pyro_zoo.models.vae",
}


class UnknownModelError(DataError):
    """A model name or file that resolves to no spec."""


def get_spec(name: str | Path) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``: a registered name, an installed package's entry point,
    or the path of a ``.py`` file defining ``SPEC`` (see the module docstring)."""
    name = str(name)
    if name in REGISTRY or name in entry_points():
        return registered_spec(name)
    if name.endswith(".py"):
        return _file_spec(Path(name))
    if _is_file(name):
        raise UnknownModelError(f"{_echo(name)} is not a .py file; give the path of a .py file that defines "
                                "SPEC, or a model name (see `zoo list`)")
    raise UnknownModelError(f"unknown model {_echo(name)}; choose one of {', '.join(known_names())} "
                            "(see `zoo list`) or give the path of a .py file that defines SPEC")


def registered_spec(name: str) -> ModelSpec:
    """The spec of a registered name or an installed entry point; never imports a file by path."""
    if name in REGISTRY:
        return importlib.import_module(REGISTRY[name]).SPEC
    points = entry_points()
    if name in points:
        point = points[name]
        source = f"package {point.dist.name}" if point.dist is not None else "package"
        return dataclasses.replace(_checked_spec(point.load(), point.value), source=source)
    raise UnknownModelError(f"unknown model {_echo(name)}; the zoo has {', '.join(known_names())}")


def known_names() -> list[str]:
    return sorted({*REGISTRY, *entry_points()})


def is_file_spec(spec: ModelSpec) -> bool:
    """Whether ``spec`` came from a user's file (its ``source`` is then the file's path)."""
    return spec.source.endswith(".py")


def entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """The models installed packages add through the ``pyro_zoo.models`` entry-point group."""
    return {point.name: point for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def all_specs() -> list[ModelSpec]:
    """The zoo's models, then those of installed packages."""
    return [registered_spec(name) for name in sorted(REGISTRY)] + [
        registered_spec(name) for name in sorted(entry_points()) if name not in REGISTRY
    ]


def _is_file(name: str) -> bool:
    try:
        return Path(name).is_file()
    except OSError:  # e.g. a name too long for a path
        return False


_FILE_MODULES: dict[Path, object] = {}


def _file_spec(path: Path) -> ModelSpec:
    path = path.expanduser().resolve()
    if not path.is_file():
        raise UnknownModelError(f"there is no model file {path}; give the path of a .py file that "
                                "defines SPEC")
    module = _FILE_MODULES.get(path)
    if module is None:
        module = _FILE_MODULES[path] = _import_file(path)
    return dataclasses.replace(_checked_spec(module, str(path)), source=str(path))


def _import_file(path: Path):
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
    return module


def _checked_spec(module, where: str) -> ModelSpec:
    spec = getattr(module, "SPEC", None)
    if not isinstance(spec, ModelSpec):
        raise UnknownModelError(f"{where} defines no SPEC = ModelSpec(...) (or "
                                "pyro_zoo.models.program.program_spec(...)); add one")
    return spec


def _echo(value, chars: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= chars else f"{text[:chars]}..."


__all__ = [
    "ENTRY_POINT_GROUP", "REGISTRY", "UnknownModelError", "all_specs", "entry_points", "get_spec",
    "is_file_spec", "known_names", "registered_spec"
]
