"""Figures of a trained two-layer VAE: samples and reconstructions."""

from __future__ import annotations

from pathlib import Path

import torch

from pyro_zoo.models.base import DataSplit
from pyro_zoo.models.hvae.model import HVAE
from pyro_zoo.models.nn import binarized
from pyro_zoo.models.plots import image_grid, square_side


@torch.no_grad()
def figures(model: HVAE, data: DataSplit, out_dir: Path) -> dict[str, Path]:
    """Pixel means of ancestral samples and reconstructions of test images (square images only)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    side = square_side(model.data_dim)
    if not side:
        return {}
    x = data.x[:10].to(model.device)
    x = x if model.pixels.categorical else binarized(x)
    pairs = torch.cat([model.pixels.scaled(x), model.reconstruct(x)])
    return {
        "samples": image_grid(model.decode(model.sample_latents(64)), side, 8, out_dir / "hvae_samples.png",
                              "pixel means E[x | z1], z1 ~ p(z1 | z2), z2 ~ N(0, I)"),
        "reconstructions": image_grid(pairs, side, len(x), out_dir / "hvae_reconstructions.png",
                                      "top: test images; bottom: pixel means decoded from E_q[z1 | x]"),
    }
