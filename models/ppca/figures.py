"""Figures of a PPCA: data beside samples (digits or a scatter), and the mean with the principal
directions of W ("eigen-digits") for square images."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure

from pyro_zoo.models.base import DataSplit
from pyro_zoo.models.plots import DPI, data_vs_samples, square_side, tile
from pyro_zoo.models.ppca.model import PPCA

#: at most this many data points enter the scatter figure
MAX_POINTS = 2000
#: images per panel of the digits figure, in rows of COLUMNS
NUM_IMAGES = 32
COLUMNS = 8
#: principal directions drawn beside mu
NUM_DIRECTIONS = 8


@torch.no_grad()
def figures(model: PPCA, data: DataSplit, out_dir: Path) -> dict[str, Path]:
    """Digits vs samples and eigen-digits for square images, else a data-vs-samples scatter;
    returns ``{caption: path}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    side = square_side(model.data_dim)
    if side is None:
        x = data.x[:MAX_POINTS]
        samples = model.sample(len(x))
        return {"data vs model samples": data_vs_samples(x, samples, out_dir / "ppca_samples.png")}
    return {"digits vs model samples": digits_figure(model, data.x, side, out_dir / "ppca_samples.png"),
            "eigen-digits": eigen_figure(model, side, out_dir / "ppca_eigendigits.png")}


def digits_figure(model: PPCA, x: torch.Tensor, side: int, path: Path) -> Path:
    """Data images beside model means mu + W z and draws mu + W z + sigma eps."""
    panels = [("data", x[:NUM_IMAGES]), ("mu + W z", model.sample(NUM_IMAGES, noise=False)),
              ("mu + W z + sigma eps", model.sample(NUM_IMAGES))]
    figure = Figure(figsize=(12, 3.1))
    for ax, (title, images) in zip(figure.subplots(1, len(panels)), panels, strict=True):
        ax.imshow(tile(images, side, COLUMNS), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(title)
        ax.axis("off")
    figure.suptitle("data beside PPCA samples (dark = 1)")
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    return path


def eigen_figure(model: PPCA, side: int, path: Path) -> Path:
    """mu and the left singular vectors u_i of W (s_i their singular values), as images."""
    directions, singular, _ = torch.linalg.svd(model.W.detach().cpu(), full_matrices=False)
    count = min(model.latent_dim, NUM_DIRECTIONS)
    figure = Figure(figsize=(12, 2.0))
    axes = figure.subplots(1, count + 1)
    axes[0].imshow(model.mu.detach().cpu().reshape(side, side).numpy(), cmap="gray_r")
    axes[0].set_title("mu")
    for i in range(count):
        limit = float(directions[:, i].abs().max())
        image = directions[:, i].reshape(side, side).numpy()
        axes[i + 1].imshow(image, cmap="RdBu", vmin=-limit, vmax=limit)
        axes[i + 1].set_title(f"u{i + 1} (s={float(singular[i]):.2f})", fontsize=8)
    for ax in axes:
        ax.axis("off")
    figure.suptitle("mean mu and principal directions of W (red > 0 > blue)")
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    return path
