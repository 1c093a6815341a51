"""The command line's argument helpers: argparse types that name the fix, ``--set`` parsing, and
the echo of a user's text cut to one line (used by :mod:`pyro_zoo.cli` and :mod:`pyro_zoo.commands`)."""

from __future__ import annotations

import argparse
import ast
import math

from pyro_zoo.models import DataError

MAX_SEED = 2**32 - 1
ECHO_CHARS = 80


class UsageError(Exception):
    """A flag argparse rejects; reported like every other user error, on one line."""


def echo(text: str) -> str:
    """``text`` as repr, cut to about ECHO_CHARS characters so an error message stays one line."""
    text = str(text)
    return repr(text) if len(text) <= ECHO_CHARS else f"{text[:ECHO_CHARS]!r}... ({len(text)} characters)"


def _number(kind, text: str, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {echo(text)}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be {what}, got {echo(text)}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _number(int, text, "a whole number of at least 1")


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _number(float, text, "a finite number greater than 0")


def seed_int(text: str) -> int:
    """argparse type: a seed in 0 .. 2**32 - 1 (numpy's range)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to {MAX_SEED}, got {echo(text)}")
    return value


def parse_hparams(pairs: list[str]) -> dict:
    """``["z_dim=2", "hidden=(200,200)"]`` -> ``{"z_dim": 2, "hidden": (200, 200)}``."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise DataError(f"--set takes key=value, got {echo(pair)}; write e.g. --set z_dim=2")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            out[key] = value
    return out


__all__ = ["ECHO_CHARS", "MAX_SEED", "UsageError", "echo", "parse_hparams", "positive_float", "positive_int",
           "seed_int"]
