"""Checkpoints and report files, written atomically; checkpoints read without running code.

A checkpoint is a dict of tensors and plain values (numbers, strings, lists, dicts): the
``meta`` a run stores (model name, hyperparameters, settings), ``modules`` (the state dicts of
the ``nn.Module`` s behind model and guide), ``params`` (Pyro param-store values, unconstrained),
``optimizer_state``, ``step``, ``losses``, ``rng`` (torch CPU and CUDA states) and ``order``
(the epoch's permutation when it stopped mid-epoch). It is read with
``torch.load(weights_only=True)``: a file carrying a pickled object of any other type is
refused, never executed. Every field is then checked (:func:`check_state`) before anything uses
it: types, ranges, the random state's shape, and finite numbers throughout.
"""

from __future__ import annotations

import io
import math
import numbers
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from pyro_zoo.inference.settings import MAX_STEPS

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
            "`checkpoint` at a file written by `zoo train`") from None
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(f"{path} is not a zoo checkpoint (it lacks {', '.join(missing)}); point "
                              "`checkpoint` at a file written by `zoo train`")
    check_state(state, path)
    return state


def check_state(state: dict, path) -> None:
    """Raise :class:`CheckpointError` naming the first field of ``state`` of the wrong type, out of
    range, or holding a non-finite number (see :data:`FIELDS`)."""
    for key, valid, wanted in FIELDS:
        if key in state and not valid(state[key]):
            raise CheckpointError(f"{path} is damaged: its field {key!r} is not {wanted}; retrain it or use "
                                  "another checkpoint")
    for key in ("modules", "params", "optimizer_state"):
        if not _all_finite(state[key]):
            raise CheckpointError(f"{path} holds NaN or infinite values in {key!r}; retrain it, or resume "
                                  "from a checkpoint written before the run diverged")
    if len(state["losses"]) != state["step"]:
        raise CheckpointError(f"{path} is damaged: it is at step {state['step']} but holds "
                              f"{len(state['losses'])} losses; retrain it or use another checkpoint")


def _finite_number(value, low: float = 0.0) -> bool:
    """A real number (not a bool), finite and > ``low``."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            and value > low)


def _count(value, low: int = 0, high: int | None = None) -> bool:
    """An int (not a bool) in ``low .. high``."""
    return (isinstance(value, int) and not isinstance(value, bool) and value >= low
            and (high is None or value <= high))


def _tensors(value):
    """Every tensor inside nested dicts and lists."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)


def _all_finite(value) -> bool:
    return all(torch.isfinite(t).all() for t in _tensors(value) if t.is_floating_point())


def _dict_of(valid: Callable) -> Callable:
    return lambda value: isinstance(value, dict) and all(
        isinstance(k, str) and valid(v) for k, v in value.items())


def _is_tensor(value) -> bool:
    return isinstance(value, torch.Tensor)


def _optimizer(value) -> bool:
    """``torch.optim`` state: empty, or {"state": {...}, "param_groups": [{"lr": > 0, ...}, ...]}."""
    if not isinstance(value, dict):
        return False
    if not value:
        return True
    groups = value.get("param_groups")
    return (isinstance(value.get("state"), dict) and isinstance(groups, list)
            and all(isinstance(g, dict) and _finite_number(g.get("lr")) for g in groups))


def _generator_state(value, numel: int | None = None) -> bool:
    return (_is_tensor(value) and value.dtype == torch.uint8 and value.dim() == 1
            and (numel is None or value.numel() == numel))


def _rng(value) -> bool:
    """{"torch": the CPU generator's uint8 state, "cuda": [one uint8 state per device] (optional)}."""
    cuda = value.get("cuda", []) if isinstance(value, dict) else None
    return (isinstance(value, dict) and _generator_state(value.get("torch"), CPU_RNG_BYTES)
            and isinstance(cuda, list | tuple) and all(_generator_state(t) for t in cuda))


def _order(value) -> bool:
    """None, or the epoch's permutation: a 1-D int64 tensor holding 0 .. N-1 once each."""
    return value is None or (_is_tensor(value) and value.dtype == torch.int64 and value.dim() == 1
                             and torch.equal(value.sort().values, torch.arange(len(value))))


def _optional(valid: Callable) -> Callable:
    return lambda value: value is None or valid(value)


#: torch's CPU generator state is a uint8 tensor of this many bytes
CPU_RNG_BYTES = torch.get_rng_state().numel()

#: (key, check, what it must be): every field a checkpoint may hold; a run's ``meta`` keys are optional
FIELDS: tuple[tuple[str, Callable, str], ...] = (
    ("modules", _dict_of(_dict_of(_is_tensor)), "a dict of module state dicts"),
    ("params", _dict_of(_is_tensor), "a dict of tensors"),
    ("optimizer_state", _optimizer, "an optimizer state with learning rates > 0"),
    ("step", lambda v: _count(v, 0, MAX_STEPS), f"a whole number from 0 to {MAX_STEPS}"),
    ("losses", lambda v: isinstance(v, list) and all(_finite_number(x, -math.inf) for x in v),
     "a list of finite numbers"),
    ("rng", _rng, "a random state (a dict with torch's uint8 generator state)"),
    ("order", _order, "None or a permutation of the data points"),
    ("model", lambda v: isinstance(v, str), "a model name"),
    ("model_file", _optional(lambda v: isinstance(v, str)), "None or a file path"),
    ("config", lambda v: isinstance(v, dict), "a dict of hyperparameters"),
    ("explicit_hparams", lambda v: isinstance(v, dict), "a dict of hyperparameters"),
    ("settings", lambda v: isinstance(v, dict), "a dict of training settings"),
    ("objective", lambda v: isinstance(v, dict), "a dict describing the objective"),
    ("smoke", lambda v: isinstance(v, bool), "True or False"),
    ("fast", lambda v: isinstance(v, bool), "True or False"),
    ("data", _optional(lambda v: isinstance(v, str)), "None or a data-set name"),
    ("data_dir", _optional(lambda v: isinstance(v, str)), "None or a folder"),
    ("seed", lambda v: _count(v, 0), "a whole number >= 0"),
    ("lr", _finite_number, "a finite number > 0"),
    ("clip_norm", _optional(_finite_number), "None or a finite number > 0"),
    ("batch_size", lambda v: _count(v, 1), "a whole number >= 1"),
    ("noise_seed", lambda v: _count(v, 0), "a whole number >= 0"),
    ("world_size", lambda v: _count(v, 1), "a whole number >= 1"),
)
