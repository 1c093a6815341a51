"""Figures of a trained VAE: samples, reconstructions, a latent interpolation, a 2-D latent map."""

from __future__ import annotations

from pathlib import Path

import torch

from pyro_zoo.models.base import DataSplit
from pyro_zoo.models.nn import binarized
from pyro_zoo.models.plots import image_grid, latent_scatter, square_side
from pyro_zoo.models.vae.model import VAE

#: at most this many test images enter a figure
MAX_IMAGES = 2000


@torch.no_grad()
def figures(model: VAE, data: DataSplit, out_dir: Path) -> dict[str, Path]:
    """Samples, reconstructions and a latent interpolation (for square images), and the posterior
    means of the test images when ``z_dim`` is 2; returns ``{caption: path}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    x = data.x[:MAX_IMAGES].to(model.device)
    x = x if model.pixels.categorical else binarized(x)
    side = square_side(model.data_dim)
    paths = image_figures(model, x, side, out_dir) if side and len(x) >= 2 else {}
    if model.z_dim == 2:
        labels = None if data.y is None else data.y[:MAX_IMAGES]
        paths["latent space"] = latent_scatter(model.encode(x), labels, out_dir / "vae_latent.png")
    return paths


def image_figures(model: VAE, x: torch.Tensor, side: int, out_dir: Path) -> dict[str, Path]:
    probs = model.decode(torch.randn(64, model.z_dim, device=model.device))
    pairs = torch.cat([model.pixels.scaled(x[:10]), model.reconstruct(x[:10])])
    ends = model.encode(x[:2])
    t = torch.linspace(0, 1, 10, device=model.device)[:, None]
    segment = (1 - t) * ends[0] + t * ends[1]
    return {
        "samples": image_grid(probs, side, 8, out_dir / "vae_samples.png",
                              "pixel means E[x | z] (Bernoulli: sigmoid(f(z))), z ~ N(0, I)"),
        "reconstructions": image_grid(pairs, side, 10, out_dir / "vae_reconstructions.png",
                                      "top: test images; bottom: reconstructions from E_q[z | x]"),
        "latent interpolation": image_grid(model.decode(segment), side, 10, out_dir / "vae_interp.png",
                                           "decoded (1 - t) mu(x_a) + t mu(x_b), t = 0 ... 1"),
    }
