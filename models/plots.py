"""Figures the models share: grids of images, data beside model samples, a 2-D latent scatter.

Every function draws on a ``matplotlib.figure.Figure`` (no global pyplot state) and saves PNGs at
dpi 100 with labelled axes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

DPI = 100


def tile(images: torch.Tensor, side: int, columns: int) -> np.ndarray:
    """Images (n, side * side) with values in [0, 1] as one canvas, ``columns`` per row, 1-pixel gaps."""
    images = images.detach().reshape(-1, side, side).clamp(0, 1).cpu().numpy()
    rows = math.ceil(len(images) / columns)
    canvas = np.zeros((rows * (side + 1) - 1, columns * (side + 1) - 1))
    for index, image in enumerate(images):
        top, left = (index // columns) * (side + 1), (index % columns) * (side + 1)
        canvas[top:top + side, left:left + side] = image
    return canvas


def image_grid(images: torch.Tensor, side: int, columns: int, path: Path, title: str) -> Path:
    """A grid of grey images (dark = 1) saved at ``path`` under ``title``; returns ``path``."""
    rows = math.ceil(len(images) / columns)
    figure = Figure(figsize=(columns * 0.9, rows * 0.9 + 0.4))
    axes = figure.add_subplot()
    axes.imshow(tile(images, side, columns), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    axes.set_title(title, fontsize=8)
    axes.axis("off")
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def data_vs_samples(data: torch.Tensor, samples: torch.Tensor, path: Path) -> Path:
    """Data beside model samples: a scatter of the first two coordinates, or histograms in 1-D."""
    figure = Figure(figsize=(9, 4.2))
    axes = figure.subplots(1, 2, sharex=True, sharey=True)
    panels = (("data", data.detach().cpu().numpy()), ("model samples", samples.detach().cpu().numpy()))
    for ax, (title, values) in zip(axes, panels, strict=True):
        values = values.reshape(len(values), -1)
        if values.shape[1] >= 2:
            ax.scatter(values[:, 0], values[:, 1], s=3, alpha=0.4)
            ax.set_ylabel("x2")
        else:
            ax.hist(values[:, 0], bins=60, density=True)
            ax.set_ylabel("density")
        ax.set_xlabel("x1")
        ax.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    return path


def latent_scatter(means: torch.Tensor, labels: torch.Tensor | None, path: Path) -> Path:
    """Posterior means of a 2-D latent code, coloured by label where there are labels."""
    figure = Figure(figsize=(5, 4.5))
    axes = figure.add_subplot()
    colours = None if labels is None else labels.cpu().numpy()
    points = axes.scatter(*means.detach().cpu().T.numpy(), c=colours, cmap="tab10", s=4)
    if labels is not None:
        figure.colorbar(points, ax=axes, label="digit")
    axes.set_xlabel("E_q[z_1 | x]")
    axes.set_ylabel("E_q[z_2 | x]")
    axes.set_title("posterior means of the test images")
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def square_side(data_dim: int) -> int | None:
    """The side of a square image of ``data_dim`` pixels, or None when there is none."""
    side = math.isqrt(data_dim)
    return side if side * side == data_dim else None


__all__ = ["DPI", "data_vs_samples", "image_grid", "latent_scatter", "square_side", "tile"]
