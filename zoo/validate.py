"""Checks of the CLI's inputs that must pass before any command writes a file.

:func:`writable_folder` for every ``--out``. Hyperparameters are checked once, by the model's
config (:meth:`pyro_zoo.models.spec.ModelSpec.resolve`, bounds that depend on the data included),
resume settings by :func:`pyro_zoo.runs.train`. All raise one sentence naming the fix, which
``pyro_zoo.cli.main`` prints.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pyro_zoo.models import DataError


def writable_folder(path, flag: str = "--out") -> Path:
    """``path`` when it is a folder, or can be made one, that this user may write into.

    Creates nothing: the nearest existing ancestor is probed with a temporary file that is
    removed at once (``os.access`` alone says yes to root on a read-only folder and to
    everyone on a read-only file system).
    """
    if not str(path).strip():
        raise DataError(f"{flag} is empty; give a folder path, or leave {flag} out for the default")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"{flag} {path} is an existing file, not a folder; choose a folder path for {flag}")
    ancestor = next(parent for parent in (path, *path.parents) if parent.exists())
    if not ancestor.is_dir():
        raise DataError(f"{flag} {path} lies under {ancestor}, which is a file; "
                        f"choose a folder path for {flag}")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as err:
        raise DataError(f"{flag} {path} cannot be written here: {ancestor} refuses new files "
                        f"({err.strerror}); choose a writable folder for {flag}") from None
    return path
