"""Figures of a trained flow: samples, and the map from base draws to data."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure

from pyro_zoo.models.base import DataSplit
from pyro_zoo.models.flow.model import Flow
from pyro_zoo.models.plots import DPI, data_vs_samples, image_grid, square_side

#: base draws shown with their images under the flow
SHOWN = 10


@torch.no_grad()
def figures(model: Flow, data: DataSplit, out_dir: Path) -> dict[str, Path]:
    """Samples and the base-to-data map: image grids for square images, scatters for 2-D data."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    side = square_side(model.data_dim)
    if model.discrete and side:
        return image_figures(model, side, out_dir)
    if model.data_dim == 2:
        samples = data_vs_samples(data.x[:2000], model.sample(2000), out_dir / "flow_samples.png")
        return {"data and samples": samples, "base to data map": grid_figure(model, out_dir / "flow_map.png")}
    return {}


def image_figures(model: Flow, side: int, out_dir: Path) -> dict[str, Path]:
    top = model.config.levels - 1
    z = torch.randn(SHOWN, model.data_dim, device=model.device)
    y = z
    for transform in model.transforms():
        y = transform(y)
    normal = torch.distributions.Normal(0.0, 1.0)
    rows = torch.cat([normal.cdf(z), y / (top + 1), y.floor().clamp(0, top) / top])
    return {
        "samples": image_grid(model.sample(64) / top, side, 8, out_dir / "flow_samples.png",
                              "samples floor(g(z)), z ~ N(0, I)"),
        "base to data map": image_grid(rows, side, SHOWN, out_dir / "flow_map.png",
                                       "top: base draws z (shown as Phi(z)); middle: y = g(z) / L; "
                                       "bottom: floor(y), the image"),
    }


def grid_figure(model: Flow, path: Path, lines: int = 21) -> Path:
    """Lines of a grid over [-3, 3]^2 in the base space and their images under g."""
    figure = Figure(figsize=(9, 4.2))
    base_axes, data_axes = figure.subplots(1, 2)
    ticks = torch.linspace(-3, 3, lines, device=model.device)
    fine = torch.linspace(-3, 3, 200, device=model.device)
    for tick in ticks:
        for points in (torch.stack([fine, tick.expand(200)], 1), torch.stack([tick.expand(200), fine], 1)):
            mapped = points
            for transform in model.transforms():
                mapped = transform(mapped)
            base_axes.plot(*points.cpu().T, lw=0.5, color="C0")
            data_axes.plot(*mapped.cpu().T, lw=0.5, color="C0")
    for axes, title in ((base_axes, "base space: z"), (data_axes, "data space: y = g(z)")):
        axes.set_xlabel("coordinate 1")
        axes.set_ylabel("coordinate 2")
        axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    return path
