"""Figures shared by all models (model-specific ones live in each model's ``figures``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def plot_loss(losses: list[float], path: Path, title: str = "SVI loss") -> Path:
    """Per-step −ELBO (nats per data point) with a moving average."""
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, lw=0.5, alpha=0.4, label="per step")
    window = max(1, len(losses) // 50)
    if window > 1:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, lw=1.5, label=f"moving average ({window})")
    ax.set(xlabel="step", ylabel="−ELBO (nats / data point)", title=title)
    finite = np.asarray(losses)[np.isfinite(losses)]
    if finite.size > 10:
        ax.set_ylim(np.percentile(finite, 1), np.percentile(finite, 99.5))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)
