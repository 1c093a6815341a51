"""What a caller may ask of the trainer and the estimators, checked before anything runs.

Counts (steps, particles, chains, rows per batch) are whole numbers in a stated range; rates,
norms and lengths are finite numbers > 0. A value out of range raises :class:`SettingError`,
whose message names the keyword in backquotes (```lr` must be ...``) and whose ``setting`` is
that keyword, so a command line can name its own flag instead (``pyro_zoo.cli`` maps them).
"""

from __future__ import annotations

import math
import numbers

#: the most SVI steps one run may take: every step's loss is kept (in memory, in each checkpoint and
#: in history.json), about 32 bytes a step as Python floats, so 10**7 steps keep about 320 MB
MAX_STEPS = 10_000_000


class SettingError(ValueError):
    """A setting of the wrong type or out of its range; ``setting`` is the keyword's name."""

    def __init__(self, setting: str, message: str):
        super().__init__(message)
        self.setting = setting


def whole_number(setting: str, value, low: int = 1, high: int | None = None) -> int:
    """``value`` as an int when it is a whole number in ``low .. high``; else :class:`SettingError`.

    An integral float (``1e4``) counts as whole; a bool does not.
    """
    integral = isinstance(value, numbers.Integral) or (
        isinstance(value, float) and math.isfinite(value) and value.is_integer())
    if isinstance(value, bool) or not integral or value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise SettingError(setting, f"`{setting}` must be a whole number {span}, got {_echo(value)}")
    return int(value)


def positive_number(setting: str, value, *, allow_zero: bool = False, allow_inf: bool = False) -> float:
    """``value`` as a float when it is a number > 0 (>= 0 with ``allow_zero``), finite unless
    ``allow_inf``; else :class:`SettingError`."""
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not number or math.isnan(value) or (math.isinf(value) and not allow_inf) or value < 0 or (
            value == 0 and not allow_zero):
        kind = ("a number" if allow_inf else "a finite number") + (" >= 0" if allow_zero else " > 0")
        raise SettingError(setting, f"`{setting}` must be {kind}, got {_echo(value)}")
    return float(value)


def _echo(value, chars: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= chars else f"{text[:chars]}..."


__all__ = ["MAX_STEPS", "SettingError", "positive_number", "whole_number"]
