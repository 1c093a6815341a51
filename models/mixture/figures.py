"""Figure of a fitted Gaussian mixture: fitted densities over a histogram (1-D), or the points
coloured by responsibility with the means and 2-sigma ellipses (first two coordinates otherwise)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse

from pyro_zoo.models.base import DataSplit
from pyro_zoo.models.mixture.model import MixtureModel
from pyro_zoo.models.plots import DPI


@torch.no_grad()
def figures(model: MixtureModel, data: DataSplit, out_dir: Path) -> dict[str, Path]:
    """One figure of the fit on ``data``; returns ``{caption: path}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    x = data.x.to(model.device)
    figure = Figure(figsize=(6, 4.5))
    axes = figure.add_subplot()
    if model.dim == 1:
        title = "Mixture: histogram and fitted component densities"
        densities(axes, model, x)
    else:
        title = "Mixture: responsibilities, means and 2-sigma ellipses"
        responsibilities(axes, model, x)
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    path = out_dir / "mixture_fit.png"
    figure.savefig(path, dpi=DPI)
    return {title: path}


def densities(axes: Axes, model: MixtureModel, x: torch.Tensor) -> None:
    """Histogram of ``x`` (N, 1), each w_k N(x; mu_k, sigma_k^2) and their sum."""
    values = x[:, 0].cpu().numpy()
    axes.hist(values, bins=50, density=True, color="0.8", label="data")
    grid = torch.linspace(float(values.min()), float(values.max()), 400, device=x.device)
    # w_k N(x; mu_k, sigma_k^2) on the grid, shape (400, K)
    parts = model.joint_log_prob(grid[:, None]).exp().cpu().numpy()
    grid = grid.cpu().numpy()
    weights = model.weights.tolist()
    for k in range(model.num_components):
        axes.plot(grid, parts[:, k], label=f"component {k} (w = {weights[k]:.2f})")
    axes.plot(grid, parts.sum(1), "k--", label="mixture")
    axes.set_xlabel("x")
    axes.set_ylabel("density")
    axes.legend(fontsize=8)


def responsibilities(axes: Axes, model: MixtureModel, x: torch.Tensor) -> None:
    """Points coloured by p(z | x) (a blend of the component colours), means and 2-sigma ellipses."""
    palette = colormaps["tab10"](np.arange(model.num_components) % 10)[:, :3]
    colours = np.clip(model.posterior(x).cpu().numpy() @ palette, 0, 1)
    points = x[:, :2].cpu().numpy()
    axes.scatter(points[:, 0], points[:, 1], c=colours, s=6, alpha=0.6, linewidths=0)
    locs = model.locs[:, :2].cpu().numpy()
    covs = model.covariances[:, :2, :2].cpu().numpy()
    for k in range(model.num_components):
        eigvals, eigvecs = np.linalg.eigh(covs[k])
        angle = math.degrees(math.atan2(eigvecs[1, 1], eigvecs[0, 1]))
        width, height = 4 * np.sqrt(np.maximum(eigvals[::-1], 0))
        axes.add_patch(Ellipse(locs[k], width, height, angle=angle, fill=False,
                               color=palette[k], linewidth=2))
    axes.scatter(locs[:, 0], locs[:, 1], c=palette, marker="x", s=80, linewidths=3)
    axes.set_xlabel("x[0]")
    axes.set_ylabel("x[1]")


__all__ = ["densities", "figures", "responsibilities"]
