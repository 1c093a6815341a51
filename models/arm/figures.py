"""Figures of a trained ARM: ancestral samples and the learned conditionals of test images."""

from __future__ import annotations

from pathlib import Path

import torch

from pyro_zoo.models.arm.model import ARM
from pyro_zoo.models.base import DataSplit
from pyro_zoo.models.nn import binarized
from pyro_zoo.models.plots import image_grid, square_side

#: test images shown with their conditionals
SHOWN = 8


@torch.no_grad()
def figures(model: ARM, data: DataSplit, out_dir: Path) -> dict[str, Path]:
    """Samples and conditionals for square images; returns ``{caption: path}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    side = square_side(model.data_dim)
    if not side:
        return {}
    x = data.x[:SHOWN].to(model.device)
    x = x if model.pixels.categorical else binarized(x)
    means, surprise = model.conditionals(x)
    rows = torch.cat([model.pixels.scaled(x), means, surprise / surprise.max().clamp(min=1e-12)])
    return {
        "samples": image_grid(model.pixels.scaled(model.sample(64)), side, 8, out_dir / "arm_samples.png",
                              "ancestral samples: x_d ~ p(x_d | x_<d), d = 1..D in row-major order"),
        "learned conditionals": image_grid(rows, side, len(x), out_dir / "arm_conditionals.png",
                                           "top: test images; middle: E[x_d | x_<d]; bottom: "
                                           "-log p(x_d | x_<d) (darkest = largest)"),
    }
