"""Figures of a trained state space model: the data with the smoothed state and its band."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure

from pyro_zoo.models.base import DataSplit
from pyro_zoo.models.lgssm.model import LGSSM
from pyro_zoo.models.plots import DPI


@torch.no_grad()
def figures(model: LGSSM, data: DataSplit, out_dir: Path) -> dict[str, Path]:
    """The first sequence of ``data`` (first observed coordinate) with the smoothed mean of C x_t
    and its ±2 sd band (RTS smoother); returns ``{caption: path}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    y = data.x[:1].to(model.device)
    means, covs = model.exact_posterior(y)
    c = model.matrices()["C"][0]
    signal = (means[0] @ c).cpu()
    sd = torch.einsum("i,tij,j->t", c, covs, c).sqrt().cpu()
    steps = torch.arange(y.shape[1])
    figure = Figure(figsize=(9, 4))
    ax = figure.add_subplot()
    ax.plot(steps, y[0, :, 0].cpu(), ".", color="0.4", label="y_t (first coordinate)")
    ax.plot(steps, signal, color="C0", label="E[C x_t | y] (RTS smoother)")
    ax.fill_between(steps, signal - 2 * sd, signal + 2 * sd, color="C0", alpha=0.2,
                    label="±2 sd of C x_t | y")
    ax.set_xlabel("step t")
    ax.set_ylabel("observation (data units)")
    ax.set_title(f"{data.source}: first sequence and the exact posterior of the signal")
    ax.legend(fontsize=8)
    figure.tight_layout()
    target = out_dir / "lgssm_smoother.png"
    figure.savefig(target, dpi=DPI)
    return {"smoothed signal: RTS smoother mean ± 2 sd": target}
