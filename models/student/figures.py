"""Figures of a student network: the DAG annotated with its CPDs, and learned vs true CPD entries."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch

from pyro_zoo.models.base import DataSplit
from pyro_zoo.models.plots import DPI
from pyro_zoo.models.student.model import (
    CARDINALITY,
    GRADES,
    PARENTS,
    VARIABLES,
    StudentNetwork,
    configurations,
    label,
    max_abs_cpd_error,
    true_cpds,
)

#: where each node sits on the DAG figure
POSITIONS = {"D": (0.0, 2.0), "I": (3.0, 2.0), "G": (1.0, 1.0), "S": (4.0, 1.0), "L": (1.0, 0.0)}


def figures(model: StudentNetwork, data: DataSplit, out_dir: Path) -> dict[str, Path]:
    """The DAG annotated with the learned CPDs, and learned vs true CPD probabilities; returns
    ``{caption: path}`` (``data`` is not drawn: the figures show the network itself)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    learned = {k: v.cpu() for k, v in model.learned_cpds().items()}
    paths = {
        "student network DAG with learned CPDs": out_dir / "student_dag.png",
        "student CPDs: learned vs true": out_dir / "student_cpds.png",
    }
    draw_dag(learned).savefig(paths["student network DAG with learned CPDs"], dpi=DPI)
    truth = true_cpds(dtype=torch.float32)
    draw_cpd_bars(learned, truth).savefig(paths["student CPDs: learned vs true"], dpi=DPI)
    return paths


def _cpd_text(name: str, table: torch.Tensor) -> str:
    """The CPD of ``name`` as a monospace table: one row per parent configuration."""
    values = GRADES if name == "G" else ("0", "1")
    header = f"P({name}" + (f" | {','.join(PARENTS[name])})" if PARENTS[name] else ")")
    rows = table.reshape(-1, CARDINALITY[name]).tolist()
    configs = configurations(PARENTS[name])
    lines = [header + "  " + " ".join(f"{v:>5}" for v in values)]
    for config, row in zip(configs, rows, strict=True):
        given = ",".join(label(p, c) for p, c in zip(PARENTS[name], config, strict=True)) or "-"
        lines.append(f"{given:>9} " + " ".join(f"{p:5.3f}" for p in row))
    return "\n".join(lines)


def draw_dag(cpds: dict[str, torch.Tensor]) -> Figure:
    """The DAG, each node beside its CPD table ``cpds[name]`` (the shape of
    :func:`~pyro_zoo.models.student.model.cpd_shape`)."""
    fig = Figure(figsize=(11, 6))
    ax = fig.add_subplot()
    radius = 0.28
    for child in VARIABLES:
        for parent in PARENTS[child]:
            (x0, y0), (x1, y1) = POSITIONS[parent], POSITIONS[child]
            length = math.hypot(x1 - x0, y1 - y0)
            ux, uy = (x1 - x0) / length, (y1 - y0) / length
            ax.add_patch(FancyArrowPatch(
                (x0 + radius * ux, y0 + radius * uy), (x1 - radius * ux, y1 - radius * uy),
                arrowstyle="-|>", mutation_scale=18, color="black", lw=1.5,
            ))
    for name, (x, y) in POSITIONS.items():
        ax.add_patch(Circle((x, y), radius, facecolor="#dbe9f6", edgecolor="black", lw=1.5))
        ax.text(x, y, name, ha="center", va="center", fontsize=16, fontweight="bold")
        ax.text(x + radius + 0.08, y - 0.05, _cpd_text(name, cpds[name]), ha="left", va="center",
                family="monospace", fontsize=7.5)
    ax.set_xlim(-0.5, 6.2)
    ax.set_ylim(-0.6, 2.6)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("Student network D → G ← I → S, G → L (learned CPD posterior means)")
    fig.tight_layout()
    return fig


def draw_cpd_bars(learned: dict[str, torch.Tensor], truth: dict[str, torch.Tensor]) -> Figure:
    """Every CPD entry of ``learned`` beside the same entry of ``truth``, as bars."""
    labels, ours, theirs = [], [], []
    for name in VARIABLES:
        for config in configurations(PARENTS[name]):
            given = ",".join(label(p, c) for p, c in zip(PARENTS[name], config, strict=True))
            for value in range(CARDINALITY[name]):
                labels.append(f"{label(name, value)}" + (f"|{given}" if given else ""))
                index = (*config, value)
                ours.append(learned[name][index].item())
                theirs.append(truth[name][index].item())
    fig = Figure(figsize=(13, 4.5))
    ax = fig.add_subplot()
    positions = torch.arange(len(labels)).tolist()
    width = 0.4
    ax.bar([p - width / 2 for p in positions], ours, width, label="learned (posterior mean)")
    ax.bar([p + width / 2 for p in positions], theirs, width, label="true (Koller-Friedman)")
    ax.set_xticks(positions, labels, rotation=70, fontsize=8)
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title(f"CPD entries, learned vs true (max |error| = {max_abs_cpd_error(learned, truth):.4f})")
    fig.tight_layout()
    return fig


__all__ = ["POSITIONS", "draw_cpd_bars", "draw_dag", "figures"]
