"""Checkpoints and report files, written atomically; checkpoints read without running code.

A checkpoint is a dict of tensors and plain values (numbers, strings, lists, dicts): the
``meta`` a run stores (model name, hyperparameters, settings), ``modules`` (the state dicts of
the ``nn.Module`` s behind model and guide), ``params`` (Pyro param-store values, unconstrained),
``optimizer_state``, ``step``, ``losses``, ``rng`` (torch CPU and CUDA states) and ``order``
(the epoch's permutation when it stopped mid-epoch). It is read with
``torch.load(weights_only=True)``: a file carrying a pickled object of any other type is
refused, never executed.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from pathlib import Path

import torch

#: what every checkpoint holds (see the module docstring)
REQUIRED_KEYS = ("modules", "params", "optimizer_state", "step", "losses", "rng")
TMP_SUFFIX = ".tmp"


class CheckpointError(RuntimeError):
    pass


def write_atomic(path: str | Path, data: bytes | memoryview | str) -> Path:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace`` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a report should read like any file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (see :func:`write_atomic`)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(path, buffer.getbuffer())


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files a killed writer left in ``folder``; call it holding the run's lock."""
    stale = sorted(Path(folder).glob(f".*{TMP_SUFFIX}"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, with a one-sentence error if unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; train first with `zoo train`")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols; we refuse them anyway
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated, foreign or unsafe files
        raise CheckpointError(
            f"checkpoint {path} is corrupt, or not a zoo checkpoint, or holds objects other than tensors "
            f"and plain values ({type(err).__name__}); nothing in it was run: retrain or point "
            "--checkpoint at a file written by `zoo train`") from None
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(f"{path} is not a zoo checkpoint (it lacks {', '.join(missing)}); point "
                              "--checkpoint at a file written by `zoo train`")
    return state
