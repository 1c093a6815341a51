"""Checks of the CLI's inputs that must pass before any command writes a file.

:func:`writable_folder` for every ``--out``; :func:`train_hparams` for ``--set`` and
:func:`resumable` for ``--set`` with ``--resume``. All raise
:class:`models.DataError` with one sentence naming the fix, which ``zoo.cli.main`` prints.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from inference.checkpoint import load_checkpoint
from models import DataError, ModelSpec, check_hparams
from zoo import runs


def writable_folder(path, flag: str = "--out") -> Path:
    """``path`` when it is a folder, or can be made one, that this user may write into.

    Creates nothing: the nearest existing ancestor is probed with a temporary file that is
    removed at once (``os.access`` alone says yes to root on a read-only folder and to
    everyone on a read-only file system).
    """
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


def train_hparams(spec: ModelSpec, given: dict, *, smoke: bool, data_dir=None, data=None) -> dict:
    """The ``--set`` hyperparameters checked against ``spec.rules``; where a rule is bounded by the
    number of training points the training split is read (on the CPU) to resolve it."""
    hparams = check_hparams(spec, given)
    if spec.needs_data(hparams):
        train = runs.load_split(spec, "train", data_dir=data_dir, data=data, smoke=smoke)
        implied = spec.hparams_for(train) if spec.hparams_for else {}
        check_hparams(spec, {**implied, **hparams}, num_data=len(train.x))
    return hparams


def resumable(out, hparams: dict, resume: bool) -> None:
    """With ``resume``, every ``--set`` value must equal the one the run's checkpoint was trained
    with: a different shape would fail in ``load_state_dict``, a different choice silently mix."""
    path = Path(out) / "checkpoint.pt"
    if not (resume and path.is_file()):
        return
    saved = load_checkpoint(path).get("hparams", {})
    for name, value in hparams.items():
        if name in saved and saved[name] != value:
            raise DataError(f"--resume continues {path}, trained with {name}={saved[name]!r}; drop "
                            f"--set {name}, or pass --overwrite (or another --out) to start again")
