"""Figures of a trained HMM: one sequence with its Viterbi path and the posterior state marginals."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure

from pyro_zoo.models.base import DataSplit
from pyro_zoo.models.hmm.model import HMM
from pyro_zoo.models.plots import DPI


@torch.no_grad()
def figures(model: HMM, data: DataSplit, out_dir: Path) -> dict[str, Path]:
    """The first sequence of ``data``: observations coloured by Viterbi state, and p(z_t = k | x)
    by forward-backward; returns ``{caption: path}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    x = data.x[:1].to(model.device)
    marginals = model.exact_posterior(x)[0].cpu()
    path = model.most_likely_states(x)[0].cpu()
    steps = torch.arange(x.shape[1])
    figure = Figure(figsize=(9, 5))
    top, bottom = figure.subplots(2, 1, sharex=True)
    top.plot(steps, x[0].cpu(), color="0.7", lw=0.8)
    for k in range(model.num_states):
        chosen = path == k
        top.scatter(steps[chosen], x[0].cpu()[chosen], s=8, color=f"C{k}", label=f"Viterbi state {k}")
    top.set_ylabel("x_t")
    top.set_title(f"{data.source}: first sequence, states by Viterbi at the guide's median")
    top.legend(fontsize=8)
    for k in range(model.num_states):
        bottom.plot(steps, marginals[:, k], color=f"C{k}", label=f"p(z_t = {k} | x)")
    bottom.set_xlabel("step t")
    bottom.set_ylabel("posterior probability")
    bottom.set_ylim(-0.02, 1.02)
    bottom.legend(fontsize=8)
    figure.tight_layout()
    target = out_dir / "hmm_states.png"
    figure.savefig(target, dpi=DPI)
    return {"states: Viterbi path and forward-backward marginals": target}
