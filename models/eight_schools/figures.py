"""Figures of a fitted eight-schools guide: its draws of (log tau, theta_1) over the exact funnel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyro
import torch
from matplotlib.figure import Figure

from pyro_zoo.models.base import DataSplit
from pyro_zoo.models.eight_schools.model import EightSchools, quadrature
from pyro_zoo.models.plots import DPI

DRAWS = 2000


@torch.no_grad()
def figures(model: EightSchools, data: DataSplit, out_dir: Path) -> dict[str, Path]:
    """Guide draws of (log tau, theta_1) beside the exact posterior mean and ±2 sd of log tau
    (quadrature); returns ``{caption: path}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    x = data.x.to(model.device)
    with pyro.plate("draws", DRAWS, dim=-2):
        draws = model.guide(x)
    tau = draws["tau"].reshape(-1).cpu().numpy()
    local = draws[model.local_name].reshape(DRAWS, -1)[:, 0].cpu().numpy()
    exact = quadrature(x, model.config)
    figure = Figure(figsize=(6, 4.5))
    ax = figure.add_subplot()
    ax.scatter(np.log(tau), local, s=3, alpha=0.3, label="guide draws")
    ax.axvline(np.log(exact["tau"][0]), color="k", lw=0.8, label="log of the exact E[tau | y]")
    ax.set_xlabel("log tau")
    ax.set_ylabel(f"{model.local_name}_1")
    ax.set_title(f"{model.config.guide} guide, {model.config.parameterisation} parameterisation")
    ax.legend(fontsize=8)
    figure.tight_layout()
    target = out_dir / "eight_schools_funnel.png"
    figure.savefig(target, dpi=DPI)
    return {"guide draws in the (log tau, theta_1) plane": target}
