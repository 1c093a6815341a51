"""One table on one scale: test log p(x) of the course's model families, in nats per image.

Two data sets, each on its own protocol:

* ``digits``: Tomczak's *Deep Generative Modeling* protocol (data set ``digits17``: scikit-learn's
  8x8 digits in their order, 1,000 training, 350 validation and 447 test images, grey levels 0..16,
  a 17-way categorical per pixel). Every model is trained by Adam (lr 1e-3, batch 64) with early
  stopping on the validation images (:func:`pyro_zoo.inference.selection.fit_with_early_stopping`: rounds of
  ``--round`` epochs, stop after ``--patience`` rounds without a better validation loss, at most
  ``--max-epochs``), then scored on the test images.
* ``mnist``: binarised MNIST under the IWAE protocol (Burda et al. 2016): dynamic binarisation of
  the 60,000 training images, the 10,000 test images binarised once (seed 0), Bernoulli pixels;
  a fixed budget of ``--mnist-epochs`` epochs (no validation split), batch 100.

What each family reports: the ARM its exact log p(x) (the chain rule); the flow on grey levels
the dequantisation bound E_u[log p(x + u)] (its ELBO) and the importance-weighted bound with K
uniform offsets (its IS), both lower bounds of log P(x); the VAE and the two-layer HVAE their
ELBO, IWAE_k and importance-sampled log p(x) with K particles from the guide
(:func:`pyro_zoo.inference.importance.estimate_log_likelihood`), and AIS
(:func:`pyro_zoo.inference.ais.ais`). Each number
comes with the standard error of the estimator (Monte Carlo noise given the test images; 0 for an
exact value) and the standard error over test images, and each estimator with its wall time. The
latent models train on the closed form of their Pyro objective (``fast``: the same objective,
and the correct minibatch scaling of the IWAE bound); the ARM and the flow on their Pyro program.

    python -m benchmarks.digits_table --part digits --json digits.json --figure digits_ladder.png
    python -m benchmarks.digits_table --part mnist --data-dir ../shared/data --json mnist.json
    python -m benchmarks.digits_table --figure-from digits.json mnist.json --figure one_scale.png
    python -m benchmarks.digits_table --smoke                      # seconds: tiny models, few steps
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch
from matplotlib.figure import Figure

from benchmarks.common import Report, image_root, parser, run_main
from pyro_zoo.inference.ais import ais
from pyro_zoo.inference.importance import estimate_log_likelihood
from pyro_zoo.inference.selection import fit_with_early_stopping
from pyro_zoo.inference.train import fit_model
from pyro_zoo.models import DataSplit, get_spec

NAME = "digits_table"


@dataclass(frozen=True)
class Entry:
    """A row group of the table: a label, the registered model, hyperparameters over its defaults,
    and whether AIS is run (models with continuous latents)."""

    label: str
    model: str
    overrides: dict = field(default_factory=dict)
    ais: bool = False


DIGITS = (Entry("ARM (MADE)", "arm"), Entry("flow (RealNVP)", "flow"), Entry("VAE", "vae", ais=True),
          Entry("HVAE", "hvae", ais=True), Entry("VAE, IWAE k=5", "vae", {"train_samples": 5}, ais=True),
          Entry("HVAE, IWAE k=5", "hvae", {"train_samples": 5}, ais=True))
MNIST = (Entry("ARM (MADE)", "arm"), Entry("VAE", "vae", ais=True), Entry("HVAE", "hvae", ais=True))
#: the ladder's IWAE_k rungs shown beside the ELBO and IS
IWAE_K = 1000
DIGITS_TITLE = "8x8 digits, Tomczak's protocol ({n} test images, grey levels 0..16, categorical pixels)"
MNIST_TITLE = "binarised MNIST, IWAE protocol ({n} test images, Bernoulli pixels)"
COLOURS = {"ELBO": "C0", "IWAE": "C1", "IS": "C2", "AIS": "C3", "exact": "k"}


def splits(data: str, data_dir, smoke: bool, test_images: int | None = None) -> dict[str, DataSplit]:
    """train (/ validation) / test of ``data`` as the ARM's loader gives them (the VAE family's and
    the flow's loaders give the same images); smoke: 200 / 100 / 50 images; ``test_images``: the
    first that many test images."""
    spec = get_spec("arm")
    names = ("train", "validation", "test") if data == "digits17" else ("train", "test")
    out = {name: spec.load_data(name, data_dir=data_dir, data=data) for name in names}
    sizes = {"train": 200, "validation": 100, "test": 50} if smoke else {"test": test_images}
    return {name: split.head(sizes[name]) if sizes.get(name) else split for name, split in out.items()}


def build(entry: Entry, train: DataSplit, seed: int):
    """(spec, model, config) of ``entry`` (the defaults, also in smoke mode, with the dimensions and
    likelihood ``train`` implies)."""
    spec = get_spec(entry.model)
    config = spec.resolve(data=train, overrides=entry.overrides)
    pyro.set_rng_seed(seed)
    return spec, spec.build(config), config


def train_digits(entry: Entry, data: dict[str, DataSplit], args) -> tuple:
    """The model of ``entry`` trained with early stopping on Tomczak's validation images."""
    spec, model, config = build(entry, data["train"], args.seed)
    selection = fit_with_early_stopping(
        model, data["train"].x, data["validation"].x, objective=spec.objective_for(config),
        epochs_per_round=args.round, max_epochs=args.max_epochs, patience=args.patience,
        max_plate_nesting=spec.max_plate_nesting, fast=model.capabilities.closed_form_loss,
        batch_size=64, lr=1e-3, seed=args.seed)
    return model, {"epochs": selection.epochs, "best_epoch": selection.best_epoch,
                   "seconds": selection.seconds, "validation_loss": selection.best_score,
                   "config": config.to_dict()}


def train_mnist(entry: Entry, data: dict[str, DataSplit], args) -> tuple:
    """The model of ``entry`` trained for ``--mnist-epochs`` epochs on dynamically binarised MNIST."""
    spec, model, config = build(entry, data["train"], args.seed)
    result = fit_model(model, data["train"].x, objective=spec.objective_for(config), epochs=args.mnist_epochs,
                       batch_size=100, lr=1e-3, seed=args.seed, fast=model.capabilities.closed_form_loss,
                       max_plate_nesting=spec.max_plate_nesting, progress=args.progress)
    return model, {"epochs": args.mnist_epochs, "seconds": result.seconds, "train_loss": result.final_loss,
                   "config": config.to_dict()}


def rung(values: torch.Tensor, se: torch.Tensor, seconds: float) -> dict:
    """A rung of the ladder from per-image values and their estimator SEs (N,): the mean, its Monte
    Carlo SE sqrt(sum SE_n^2) / N, its SE over test images std / sqrt(N), the wall time."""
    values, n = values.double().cpu(), len(values)
    return {"value": values.mean().item(), "se": (se.double().square().sum().sqrt() / n).item(),
            "se_images": (values.std() / math.sqrt(n)).item() if n > 1 else float("nan"),
            "seconds": seconds, "values": values}


def score(model, entry: Entry, x: torch.Tensor, args) -> dict[str, dict]:
    """The rungs of ``model`` on test images ``x``: its exact log p(x) where it has one, else the
    ELBO, IWAE_k and IS with K = ``--num-particles`` particles from the guide, and AIS where ``entry.ais``."""
    model.eval()
    start = time.perf_counter()
    if model.capabilities.exact_log_prob:
        with torch.no_grad():
            values = model.exact_log_prob(x)
        return {"exact": rung(values, torch.zeros_like(values), time.perf_counter() - start)}
    result = estimate_log_likelihood(model.model, model.guide, x, args.num_particles, iwae_ks=(1, IWAE_K),
                                     psis=False, seed=args.seed)
    seconds = time.perf_counter() - start
    rungs = {"ELBO": rung(result.iwae[1], result.iwae_se[1], seconds)}
    if IWAE_K < args.num_particles:
        rungs[f"IWAE_{IWAE_K}"] = rung(result.iwae[IWAE_K], result.iwae_se[IWAE_K], seconds)
    rungs[f"IS, K = {args.num_particles}"] = rung(result.log_px, result.log_px_se, seconds)
    if entry.ais:
        annealed = ais(model.model, model.guide, x, num_chains=args.ais_chains, num_steps=args.ais_steps)
        rungs[f"AIS, {args.ais_chains} x {args.ais_steps}"] = rung(annealed.log_px, annealed.log_px_se,
                                                                   annealed.seconds)
    return rungs


def run_part(entries: tuple[Entry, ...], data: dict[str, DataSplit], train, args) -> list[dict]:
    """Train and score every entry on ``data``; one dict per model: label, training, rungs."""
    rows = []
    for entry in entries:
        model, trained = train(entry, data, args)
        rows.append({"label": entry.label, "model": entry.model, "trained": trained,
                     "rungs": score(model, entry, data["test"].x, args)})
        print(f"{entry.label}: {best(rows[-1])[0]} {best(rows[-1])[1]['value']:.3f} nats per image "
              f"({trained['seconds']:.0f} s training)", flush=True)
    return rows


def best(row: dict) -> tuple[str, dict]:
    """The rung closest to log p(x): exact where there is one, else the highest of IS and AIS (the
    ELBO and IWAE_k are below IS by Jensen on the same particles)."""
    candidates = {name: r for name, r in row["rungs"].items() if not name.startswith(("ELBO", "IWAE"))}
    return max(candidates.items(), key=lambda item: item[1]["value"])


def checks(rows: list[dict]) -> list[dict]:
    """The order theory gives, per latent model: ELBO <= IWAE_k <= IS (means of the same particles:
    Jensen), and AIS within 3 combined standard errors of IS or above it."""
    out = []
    for row in rows:
        rungs = row["rungs"]
        ladder = [r["value"] for name, r in rungs.items() if name.startswith(("ELBO", "IWAE", "IS"))]
        if len(ladder) > 1:
            out.append({"model": row["label"], "check": "ELBO <= IWAE_k <= IS",
                        "passed": all(a <= b + 1e-9 for a, b in zip(ladder, ladder[1:], strict=False)),
                        "values": ladder})
        is_rung = next((r for name, r in rungs.items() if name.startswith("IS")), None)
        ais_rung = next((r for name, r in rungs.items() if name.startswith("AIS")), None)
        if is_rung and ais_rung:
            tolerance = 3 * math.hypot(is_rung["se"], ais_rung["se"])
            out.append({"model": row["label"], "check": "AIS >= IS - 3 SE", "passed":
                        ais_rung["value"] >= is_rung["value"] - tolerance,
                        "values": [is_rung["value"], ais_rung["value"], tolerance]})
    return out


def ranking(rows: list[dict]) -> list[dict]:
    """Models by their best estimate, each with its margin over the next one: the mean of the
    per-image differences and its standard error over the (paired) test images."""
    ordered = sorted(rows, key=lambda row: best(row)[1]["value"], reverse=True)
    out = []
    for row, after in zip(ordered, [*ordered[1:], None], strict=True):
        name, top = best(row)
        entry = {"model": row["label"], "estimator": name, "value": top["value"]}
        if after is not None:
            diff = top["values"] - best(after)[1]["values"]
            entry.update(next=after["label"], margin=diff.mean().item(),
                         margin_se=(diff.std() / math.sqrt(len(diff))).item())
        out.append(entry)
    return out


def markdown(rows: list[dict], title: str) -> str:
    """The table of one data set: a line per model and estimator."""
    lines = [f"**{title}**", "",
             "| model | estimator | test log p(x) | MC SE | SE over images | time | training |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        trained = row["trained"]
        epochs = (f"{trained['epochs']} epochs (best {trained['best_epoch']})" if "best_epoch" in trained
                  else f"{trained['epochs']} epochs")
        for index, (name, r) in enumerate(row["rungs"].items()):
            training = f"{epochs}, {trained['seconds']:.0f} s" if index == 0 else ""
            label = row["label"] if index == 0 else ""
            lines.append(f"| {label} | {name} | {r['value']:.2f} | {r['se']:.3f} | {r['se_images']:.2f} | "
                         f"{r['seconds']:.1f} s | {training} |")
    return "\n".join(lines)


def kind(rung_name: str) -> str:
    """"ELBO", "IWAE", "IS", "AIS" or "exact" from a rung's name such as "IS, K = 5000"."""
    return rung_name.split(",")[0].split("_")[0]


def figure(parts: dict[str, list[dict]], path: Path) -> Path:
    """One panel per data set: every model's rungs as dots with 2 Monte Carlo SE bars; the best
    estimate of each model filled, the bounds below it hollow."""
    panels = [(title, rows) for title, rows in parts.items() if rows]
    fig = Figure(figsize=(8, 0.8 + sum(0.45 * len(rows) + 0.7 for _, rows in panels)))
    axes = fig.subplots(len(panels), 1, squeeze=False, height_ratios=[len(rows) + 1 for _, rows in panels])
    for ax, (title, rows) in zip(axes[:, 0], panels, strict=True):
        for y, row in enumerate(rows):
            for name, r in row["rungs"].items():
                colour = COLOURS[kind(name)]
                ax.errorbar(r["value"], y, xerr=2 * r["se"], fmt="o", color=colour, label=kind(name),
                            mfc=colour if name == best(row)[0] else "white")
        labels = {label: handle for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)}
        ax.legend(labels.values(), labels.keys(), fontsize=7, loc="best")
        ax.set_yticks(range(len(rows)), [row["label"] for row in rows])
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.invert_yaxis()
        ax.set_xlabel("test log p(x), nats per image (higher is better)")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def parts_from(paths: list[str]) -> dict[str, list[dict]]:
    """The parts (title: rows) saved by earlier runs' ``--json`` files, in the order given."""
    parts = {}
    for path in paths:
        saved = json.loads(Path(path).read_text())["settings"]
        parts.update({title: part["rows"] for title, part in saved.items()
                      if isinstance(part, dict) and "rows" in part})
    return parts


def plain(rows: list[dict]) -> list[dict]:
    """``rows`` without the per-image tensors, for JSON."""
    def without_values(rung: dict) -> dict:
        return {key: value for key, value in rung.items() if key != "values"}

    return [{**row, "rungs": {name: without_values(r) for name, r in row["rungs"].items()}} for row in rows]


def benchmark(args, device: torch.device) -> Report:
    if args.smoke:
        args.num_particles, args.ais_chains, args.ais_steps = min(args.num_particles, 50), 4, 10
        args.max_epochs, args.round, args.patience, args.mnist_epochs = 2, 1, 1, 1
    parts, settings = {}, {}
    if args.part in ("digits", "all"):
        data = splits("digits17", None, args.smoke)
        parts[DIGITS_TITLE.format(n=len(data["test"].x))] = run_part(DIGITS, data, train_digits, args)
    if args.part in ("mnist", "all"):
        with image_root(args) as (root, source):
            data = splits("mnist", root, args.smoke, args.mnist_test)
        settings["mnist_source"] = source
        parts[MNIST_TITLE.format(n=len(data["test"].x))] = run_part(MNIST, data, train_mnist, args)
    tables = [markdown(rows, title) for title, rows in parts.items()]
    settings.update({title: {"rows": plain(rows), "checks": checks(rows), "ranking": ranking(rows)}
                     for title, rows in parts.items()})
    settings["estimators"] = {"num_particles": args.num_particles, "iwae_k": IWAE_K,
                              "ais_chains": args.ais_chains, "ais_steps": args.ais_steps}
    settings["markdown"] = "\n\n".join(tables)
    if args.figure:
        figure(parts, Path(args.figure))
    return Report(NAME, "", [], settings=settings, notes=[])


def main(argv: list[str] | None = None) -> Report | None:
    p = parser("test log p(x) of ARM, flow, VAE and HVAE on one scale (digits, binarised MNIST)", repeats=1)
    p.add_argument("--part", choices=("digits", "mnist", "all"), default="digits")
    p.add_argument("--num-particles", type=int, default=5000,
                   help="importance samples per test image (default 5000)")
    p.add_argument("--ais-chains", type=int, default=16)
    p.add_argument("--ais-steps", type=int, default=100, help="AIS intermediate distributions")
    p.add_argument("--round", type=int, default=5, help="epochs between validation checks (digits)")
    p.add_argument("--patience", type=int, default=4, help="rounds without improvement before stopping")
    p.add_argument("--max-epochs", type=int, default=500, help="digits: at most this many epochs")
    p.add_argument("--mnist-epochs", type=int, default=10, help="MNIST: epochs per model")
    p.add_argument("--mnist-test", type=int, default=None, help="MNIST: first N test images")
    p.add_argument("--figure", default=None, metavar="PATH", help="write the ladder figure (PNG)")
    p.add_argument("--figure-from", nargs="+", default=None, metavar="JSON",
                   help="only draw --figure, one panel per part, from the --json files of earlier runs")
    p.add_argument("--progress", action="store_true", help="progress bars (MNIST training)")
    args = p.parse_args(argv)
    if args.figure_from:
        if not args.figure:
            p.error("--figure-from needs --figure PATH")
        figure(parts_from(args.figure_from), Path(args.figure))
        return None
    report = run_main(NAME, benchmark, args, argv)
    print(report.settings["markdown"])
    for title, part in report.settings.items():
        for check in part.get("checks", []) if isinstance(part, dict) else []:
            print(f"- {title}: {check['model']}: {check['check']}: {'holds' if check['passed'] else 'FAILS'}")
    return report


if __name__ == "__main__":
    main()
