"""The installed package cannot collide with its users' code.

Run from a folder that holds its own ``models/`` package, ``inference.py`` and ``zoo.py`` (most
machine-learning projects have a ``models/``), the ``zoo`` command, ``python -m pyro_zoo`` and the
README's Python example work: the installed import names live under ``pyro_zoo`` (setup.py).
Each of the user's files raises if it is imported, so a collision cannot pass unseen.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pyro_zoo.models import REGISTRY

README = Path(__file__).resolve().parent.parent / "README.md"
USER_FILES = {
    "models/__init__.py": "raise ImportError('the user\\'s own models/ package was imported')\n",
    "inference.py": "raise ImportError('the user\\'s own inference.py was imported')\n",
    "zoo.py": "raise ImportError('the user\\'s own zoo.py was imported')\n",
}


@pytest.fixture
def user_folder(tmp_path) -> Path:
    for name, text in USER_FILES.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def run_in(folder: Path, *command: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)


def readme_example() -> str:
    """The README's Python example of training a plain Pyro program with ``fit``."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    return next(block for block in blocks if "from pyro_zoo.inference.train import fit\n" in block)


@pytest.mark.parametrize("command", [["zoo", "list"], ["python", "-m", "pyro_zoo", "list"]],
                         ids=["zoo", "python -m"])
def test_the_command_line_runs_beside_a_users_models_package(user_folder, command):
    # the zoo command and the interpreter of this environment
    program = Path(sys.executable).with_name("zoo") if command[0] == "zoo" else sys.executable
    done = run_in(user_folder, str(program), *command[1:])
    assert done.returncode == 0, done.stderr
    assert all(name in done.stdout for name in REGISTRY)


def test_the_readme_example_runs_beside_a_users_inference_py(user_folder):
    (user_folder / "example.py").write_text(readme_example())
    done = run_in(user_folder, sys.executable, "example.py")
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip().splitlines()[-1]) < 0  # a mean log p(x) of continuous data
    assert (user_folder / "run.pt").is_file()
