"""Packaging: the installed import names live under one namespace, ``pyro_zoo``.

The repository keeps ``models/``, ``inference/`` and ``zoo/`` at its top; setuptools' package-dir
mapping installs them as ``pyro_zoo.models``, ``pyro_zoo.inference`` and ``pyro_zoo`` (the
command line), so that a user's own ``models/`` or ``inference.py`` cannot shadow them. Every
package below ``models/`` and ``inference/`` is found here, so a new model folder needs no line
in this file. Everything else (name, dependencies, the ``zoo`` command) is in pyproject.toml.
"""

from setuptools import find_packages, setup

FOLDERS = {"pyro_zoo": "zoo", "pyro_zoo.models": "models", "pyro_zoo.inference": "inference"}
SUBPACKAGES = find_packages(include=["models", "models.*", "inference", "inference.*"])

setup(packages=["pyro_zoo", *(f"pyro_zoo.{name}" for name in SUBPACKAGES)], package_dir=FOLDERS)
