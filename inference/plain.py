"""Plain values for JSON, in one place: what a report, a command's ``--json`` line and a
checkpoint's comparisons hold."""

from __future__ import annotations

import math
from pathlib import Path


def to_json(value):
    """``value`` with tensors, numpy values and tuples made plain (lists, numbers), paths as text
    and non-finite floats as ``None``."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # a tensor or a numpy value
        return to_json(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


__all__ = ["to_json"]
