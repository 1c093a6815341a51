"""Device selection with a clear error when CUDA is asked for and absent."""

from __future__ import annotations

import torch


class DeviceError(RuntimeError):
    pass


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` or "auto" picks CUDA when present, else CPU; "cuda" without a GPU is an error."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("CUDA was requested but no GPU is available; use --device cpu")
    return device
