"""Device selection with a clear error when a device is unknown, or CUDA is asked for and absent."""

from __future__ import annotations

import torch

DEVICE_HELP = "use `device` cpu, cuda (or cuda:N) or auto"


class DeviceError(RuntimeError):
    pass


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` or "auto" picks CUDA when present, else CPU; "cuda" without a GPU is an error."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"unknown device {str(device)[:40]!r}; {DEVICE_HELP}") from None
    if device.type not in ("cpu", "cuda"):
        raise DeviceError(f"device {str(device)!r} is not supported; {DEVICE_HELP}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("CUDA was requested but no GPU is available; use `device` cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"there is no GPU {device.index} (this machine has {torch.cuda.device_count()}); "
                          "use `device` cuda:0")
    return device
