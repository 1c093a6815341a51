"""Figures of a DLGM: data beside model samples, and p(z | x) beside q(z | x) for a 1-d latent."""

from __future__ import annotations

from pathlib import Path

import pyro.distributions as dist
import torch
from matplotlib.figure import Figure

from pyro_zoo.models.base import DataSplit
from pyro_zoo.models.dlgm.model import DLGM
from pyro_zoo.models.plots import DPI, data_vs_samples

#: at most this many data points enter a figure
MAX_POINTS = 2000
#: data points whose posteriors are drawn, spread along x_1 - x_D
NUM_PICKS = 4


@torch.no_grad()
def figures(model: DLGM, data: DataSplit, out_dir: Path) -> dict[str, Path]:
    """Data vs ancestral samples; for latent_dim 1 also the exact posterior (quadrature) against the
    guide for a few data points; returns ``{caption: path}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    x = data.x[:MAX_POINTS].to(model.device)
    paths = {"data vs model samples": data_vs_samples(x, model.sample(len(x)), out_dir / "dlgm_samples.png")}
    if model.latent_dim == 1:
        paths["posterior vs guide"] = posterior_figure(model, x, out_dir / "dlgm_posterior.png")
    return paths


def posterior_figure(model: DLGM, x: torch.Tensor, path: Path) -> Path:
    """p(z | x) by quadrature and q(z | x) on z in [-4, 4] for NUM_PICKS points of ``x`` (d = 1)."""
    order = torch.argsort(x[:, 0] - x[:, -1])
    picks = x[order[torch.linspace(0, len(x) - 1, NUM_PICKS).round().long()]]
    z = torch.linspace(-4, 4, 401, device=x.device)[:, None]
    exact = model.posterior_density(picks, z).cpu().numpy()
    guide = dist.Normal(*model.encode(picks)).log_prob(z[:, None, :]).squeeze(-1).exp().T.cpu().numpy()
    grid = z[:, 0].cpu().numpy()
    figure = Figure(figsize=(10, 3))
    axes = figure.subplots(1, NUM_PICKS, sharey=True)
    for i, ax in enumerate(axes):
        ax.plot(grid, exact[i], label="p(z|x) (quadrature)")
        ax.plot(grid, guide[i], "--", label="q(z|x) (guide)")
        ax.set_title("x = (" + ", ".join(f"{v:.2f}" for v in picks[i].tolist()) + ")", fontsize=9)
        ax.set_xlabel("z")
    axes[0].set_ylabel("density")
    axes[0].legend(fontsize=8)
    figure.suptitle("exact posterior p(z | x) against the guide q(z | x)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    return path
