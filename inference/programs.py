"""What every estimator and the trainer take as data: a tensor or a tuple of tensors.

``data`` is passed positionally to a Pyro program, ``model(*data)``; minibatches and chunks slice
every tensor together along dim 0 (the data points), e.g. ``(x, y)`` for a model of p(x | y).
"""

from __future__ import annotations

import torch


def as_tensors(data) -> tuple[torch.Tensor, ...]:
    """``data`` as a tuple of tensors of equal length along dim 0."""
    tensors = tuple(data) if isinstance(data, (tuple, list)) else (data,)
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise ValueError("data must be a tensor or a tuple of tensors")
    sizes = {t.shape[0] if t.dim() else None for t in tensors}
    if len(sizes) != 1 or None in sizes:
        shapes = [tuple(t.shape) for t in tensors]
        raise ValueError(f"data tensors must share their first dimension, got {shapes}")
    if tensors[0].shape[0] == 0:
        raise ValueError("data is empty; pass at least one data point")
    return tensors
