"""Figures of a trained CVAE: a grid of samples, one row per class."""

from __future__ import annotations

from pathlib import Path

import torch

from pyro_zoo.models.base import DataSplit
from pyro_zoo.models.cvae.model import CVAE
from pyro_zoo.models.plots import image_grid, square_side

#: samples drawn per class
PER_CLASS = 8


@torch.no_grad()
def figures(model: CVAE, data: DataSplit, out_dir: Path) -> dict[str, Path]:
    """Samples per class: a C x PER_CLASS grid of pixel probabilities sigmoid(f([z, e(y)])), row c
    with y = c, z ~ N(0, I) (for square images only; ``data`` is not used); returns ``{caption: path}``."""
    side = square_side(model.data_dim)
    if side is None:
        return {}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    y = torch.arange(model.num_classes, device=model.device).repeat_interleave(PER_CLASS)
    probs = model.decode(torch.randn(len(y), model.z_dim, device=model.device), y)
    return {"samples per class": image_grid(
        probs, side, PER_CLASS, out_dir / "cvae_samples_per_class.png",
        f"row c: sigmoid(f([z, e(c)])), z ~ N(0, I), c = 0..{model.num_classes - 1}")}
