"""Python API behind the CLI: train, load, evaluate and demo any registered model.

>>> from zoo.runs import train, evaluate
>>> metrics = train("mixture", smoke=True, out="runs/mixture")
>>> report = evaluate("runs/mixture/checkpoint.pt", k=100)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyro

from inference.checkpoint import load_checkpoint
from inference.devices import resolve_device
from inference.plots import plot_loss
from inference.train import fit, neg_elbo
from models import DataError, DataSplit, ModelSpec, get_spec

UNITS = "nats per data point"


def load_split(spec: ModelSpec, split: str, *, data_dir=None, data=None, smoke=False,
               device="cpu") -> DataSplit:
    """The model's data split, on ``device``."""
    return spec.load_data(split, data_dir=data_dir, data=data, smoke=smoke).to(device)


def _settings(spec: ModelSpec, smoke: bool, **given) -> dict:
    settings = spec.train_settings(smoke, **given)
    if given.get("epochs") is not None:
        settings.pop("steps", None)
    if given.get("steps") is not None:
        settings.pop("epochs", None)
    return settings


def _checkpoint_path(out: Path, resume: bool, overwrite: bool) -> Path:
    path = out / "checkpoint.pt"
    if path.exists() and not (resume or overwrite):
        raise FileExistsError(
            f"{path} already exists; pass --resume to continue it, --overwrite to start again, "
            "or choose another --out"
        )
    return path


def train(name: str, *, out=None, smoke=False, device="cpu", seed=0, data_dir=None, data=None,
          hparams=None, epochs=None, steps=None, batch_size=None, lr=None, clip_norm=None,
          resume=False, overwrite=False, progress=True) -> dict:
    """Train model ``name`` by SVI; writes checkpoint, history, loss curve, figures, metrics.json."""
    spec = get_spec(name)
    device = resolve_device(device)
    train_set = load_split(spec, "train", data_dir=data_dir, data=data, smoke=smoke, device=device)
    test_set = load_split(spec, "test", data_dir=data_dir, data=data, smoke=smoke, device=device)
    implied = spec.hparams_for(train_set) if spec.hparams_for else {}
    hparams = {**spec.hparams, **(spec.smoke_hparams if smoke else {}), **implied, **(hparams or {})}
    pyro.set_rng_seed(seed)
    model = spec.build(**hparams).to(device)
    model.check_data(train_set.x)
    model.check_data(test_set.x)
    out = Path(out or Path("runs") / name)
    checkpoint = _checkpoint_path(out, resume, overwrite)
    settings = _settings(spec, smoke, epochs=epochs, steps=steps, batch_size=batch_size, lr=lr,
                         clip_norm=clip_norm)
    meta = {"model": name, "hparams": hparams, "smoke": smoke, "data": data, "data_dir": data_dir,
            "seed": seed, "settings": settings}
    result = fit(model, train_set.x, elbo=spec.elbo, max_plate_nesting=spec.max_plate_nesting,
                 checkpoint=checkpoint, resume=resume, meta=meta, progress=progress, **settings)
    metrics = {
        "model": name,
        "units": UNITS,
        "device": str(device),
        "steps": result.step,
        "train_seconds": round(result.seconds, 3),
        "seconds_per_step": result.seconds / max(1, len(result.losses)),
        "train_neg_elbo": result.final_loss,
        "test_neg_elbo": neg_elbo(model, test_set.x, spec.elbo, spec.max_plate_nesting),
        "settings": settings,
        "checkpoint": str(checkpoint),
        **model.metrics(test_set),
    }
    (out / "history.json").write_text(json.dumps({"loss": result.losses}))
    figures = {"loss curve": plot_loss(result.losses, out / "loss.png", f"{name}: SVI loss")}
    figures.update(model.figures(test_set, out))
    metrics["figures"] = {title: str(path) for title, path in figures.items()}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    return metrics


def load(checkpoint, device="cpu"):
    """(spec, model, state) from a checkpoint written by :func:`train`."""
    device = resolve_device(device)
    state = load_checkpoint(checkpoint)
    spec = get_spec(state["model"])
    model = spec.build(**state["hparams"])
    model.load_state_dict(state["model_state"])
    return spec, model.to(device).eval(), state


def evaluate(checkpoint, *, name=None, k=1000, split="test", limit=None, data_dir=None, data=None,
             device="cpu", out=None, progress=True, seed=0, methods=("is",)) -> dict:
    """Evaluation report of a trained model with the estimators ``methods`` (see inference.evaluate)."""
    from inference.evaluate import check_methods
    from inference.evaluate import evaluate as evaluate_model

    check_methods(methods)
    spec, model, state = load(checkpoint, device)
    if name is not None and name != spec.name:
        raise DataError(f"{checkpoint} holds a {spec.name!r} model, not {name!r}; use `zoo eval {spec.name}`")
    smoke = state.get("smoke", False)
    data_split = load_split(spec, split, data_dir=data_dir or state.get("data_dir"),
                            data=data or state.get("data"), smoke=smoke, device=model.device)
    if limit:
        data_split = DataSplit(data_split.x[:limit], None if data_split.y is None else data_split.y[:limit],
                               data_split.source, data_split.info)
    model.check_data(data_split.x)
    out = Path(out or Path(checkpoint).parent / "eval")
    out.mkdir(parents=True, exist_ok=True)
    pyro.set_rng_seed(seed)
    start = time.perf_counter()
    report = evaluate_model(model, data_split, num_particles=k, max_plate_nesting=spec.max_plate_nesting,
                            out_dir=out, progress=progress, methods=methods)
    report.update(model=spec.name, checkpoint=str(checkpoint), split=split,
                  wall_seconds=time.perf_counter() - start)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return report
