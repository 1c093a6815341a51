"""Python API behind the CLI: train, load, evaluate and demo any registered model.

>>> from zoo.runs import train, evaluate
>>> metrics = train("mixture", smoke=True, out="runs/mixture")
>>> report = evaluate("runs/mixture/checkpoint.pt", k=100)

A run folder holds ``checkpoint.pt``, ``history.json``, ``metrics.json``, ``loss.png`` and the
model's figures. It is locked while a run writes it (a second ``train`` into it is refused), an
existing run is replaced only with ``overwrite``, every file is written atomically, and a resume
takes its settings from the checkpoint (a differing setting is refused, not ignored).

Under ``torchrun`` every rank runs the same call: training is data-parallel and evaluation
sharded (:mod:`inference.distributed`), ``cuda`` means each rank's own GPU, and rank 0 alone
holds the lock and writes the run folder.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pyro
import pyro.poutine as poutine
import torch

from inference import distributed
from inference.checkpoint import CheckpointError, load_checkpoint, remove_stale_temporaries, write_atomic
from inference.devices import resolve_device
from inference.plots import plot_loss
from inference.train import CHECKPOINT_SECONDS, as_objective, evaluate_objective, fit_model, load_params
from models import DataError, DataSplit, HparamError, ModelSpec, UnknownModelError, get_spec, is_file_spec

UNITS = "nats per data point"
CHECKPOINT = "checkpoint.pt"
LOCK = ".zoo.lock"
#: settings a resumed run must share with its checkpoint (steps and epochs may grow)
RESUME_FIXED = ("lr", "batch_size", "clip_norm")
#: NUTS draws (and as many warm-up steps) behind the posterior comparison of global-latent models
NUTS, NUTS_SMOKE = 1000, 100


class RunFolderError(FileExistsError):
    """A run folder that is in use, or holds a run that would be overwritten."""


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


@contextmanager
def locked(folder: Path):
    """Hold ``folder``'s run lock (an OS file lock, released even when the process is killed).

    A folder this call made is removed again when the run fails before writing anything in it.
    """
    made = [parent for parent in (folder, *folder.parents) if not parent.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with _lock(folder):
            yield
    except BaseException:
        if made and [p.name for p in folder.iterdir()] == [LOCK]:
            (folder / LOCK).unlink()
            for parent in made:
                parent.rmdir()
        raise


@contextmanager
def _lock(folder: Path):
    with open(folder / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunFolderError(f"{folder} is being written by another zoo run ({holder}); wait for it "
                                 "to finish or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        remove_stale_temporaries(folder)
        yield


def check_new_run(out: Path, overwrite: bool) -> None:
    """Refuse a new run into ``out`` when it holds one and ``overwrite`` is not given."""
    _check_folder(Path(out), resume=False, overwrite=overwrite)


def _check_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to start a run that would overwrite one, or resume one that is not there."""
    checkpoint = out / CHECKPOINT
    if resume and overwrite:
        raise RunFolderError("--resume continues a run and --overwrite replaces it; pass only one")
    if resume and not checkpoint.is_file():
        raise CheckpointError(f"there is no checkpoint to resume at {checkpoint}; drop --resume to start "
                              "a new run")
    existing = [name for name in (CHECKPOINT, "metrics.json", "history.json") if (out / name).exists()]
    if existing and not (resume or overwrite):
        raise RunFolderError(f"{out} already holds a run ({', '.join(existing)}); pass --resume to continue "
                             "it, --overwrite to replace it, or choose another --out")


def _resumed_settings(state: dict, given: dict, hparams: dict, smoke: bool, data, data_dir) -> dict:
    """The checkpoint's settings, with the run length given now; a differing setting is an error."""
    for name, value in (hparams or {}).items():
        trained = state["config"].get(name)
        if _plain(trained) != _plain(value):
            raise CheckpointError(f"the checkpoint was trained with {name}={trained!r}; drop --set {name} "
                                  "to resume it, or start a new run with --overwrite")
    saved = state.get("settings", {})
    asked = {**{k: given.get(k) for k in RESUME_FIXED}, "smoke": smoke or None, "data": data,
             "data_dir": data_dir}
    have = {**{k: saved.get(k) for k in RESUME_FIXED}, "smoke": state.get("smoke") or None,
            "data": state.get("data"), "data_dir": state.get("data_dir")}
    for key, value in asked.items():
        if value is not None and _plain(value) != _plain(have[key]):
            raise CheckpointError(f"the checkpoint was trained with {key} = {have[key]!r}, not {value!r}; "
                                  "drop that option to resume with the checkpoint's, or start a new run "
                                  "with --overwrite")
    settings = {k: v for k, v in saved.items() if k not in ("steps", "epochs")}
    length = {k: given[k] for k in ("steps", "epochs") if given.get(k) is not None}
    return {**settings, **(length or {k: saved[k] for k in ("steps", "epochs") if k in saved})}


def _plain(value):
    return json.loads(json.dumps(value, default=str))


def train(name: str, *, out=None, smoke=False, device="cpu", seed=0, data_dir=None, data=None,
          hparams=None, epochs=None, steps=None, batch_size=None, lr=None, clip_norm=None,
          resume=False, overwrite=False, fast=False, progress=True,
          checkpoint_seconds: float = CHECKPOINT_SECONDS) -> dict:
    """Train model ``name`` (a registered name, a user's ``.py`` file or a package's entry point;
    see :func:`models.get_spec`) by SVI on its Pyro objective (``fast``: its closed form); writes
    checkpoint, history, loss curve, figures and metrics.json under ``out``."""
    spec = get_spec(name)
    device = distributed.local_device(resolve_device(device))
    main = distributed.world(device).main
    out = Path(out or Path("runs") / spec.name)
    given = {"epochs": epochs, "steps": steps, "batch_size": batch_size, "lr": lr, "clip_norm": clip_norm}
    state = None
    if resume:
        _check_folder(out, resume, overwrite)
        state = load_checkpoint(out / CHECKPOINT)
        if (state.get("model"), state.get("model_file")) != (spec.name, _model_file(spec)):
            raise CheckpointError(f"{out / CHECKPOINT} holds a {state.get('model')!r} run, not {name!r}")
        settings = _resumed_settings(state, given, hparams, smoke, data, data_dir)
        smoke, data, data_dir = state.get("smoke", False), state.get("data"), state.get("data_dir")
        hparams, fast = state.get("explicit_hparams") or {}, state.get("fast", False)
    else:
        settings = _settings(spec, smoke, **given)
    train_set = load_split(spec, "train", data_dir=data_dir, data=data, smoke=smoke, device=device)
    test_set = load_split(spec, "test", data_dir=data_dir, data=data, smoke=smoke, device=device)
    config = spec.resolve(smoke=smoke, data=train_set, overrides=hparams)
    pyro.set_rng_seed(seed)
    model = spec.build(config).to(device)
    train_inputs, test_inputs = train_set.inputs(model.inputs), test_set.inputs(model.inputs)
    model.check_inputs(train_inputs)
    model.check_inputs(test_inputs)
    objective = as_objective(spec.objective_for(config))
    meta = {"model": spec.name, "model_file": _model_file(spec), "config": config.to_dict(),
            "explicit_hparams": hparams or {}, "smoke": smoke,
            "data": data, "data_dir": None if data_dir is None else str(data_dir), "seed": seed,
            "settings": settings, "fast": fast}
    _check_folder(out, resume, overwrite)
    with locked(out) if main else nullcontext():
        if main:
            _check_folder(out, resume, overwrite)
        result = fit_model(model, train_inputs, objective=objective, fast=fast,
                           max_plate_nesting=spec.max_plate_nesting, checkpoint=out / CHECKPOINT,
                           resume=resume, meta=meta, progress=progress,
                           checkpoint_seconds=checkpoint_seconds, **settings)
        metrics = _train_metrics(spec, model, objective, result, test_set, settings, device, fast)
        metrics["checkpoint"] = str(out / CHECKPOINT)
        if not main:
            return metrics
        write_atomic(out / "history.json", json.dumps({"objective": objective.label, "loss": result.losses}))
        figures = {"loss curve": plot_loss(result.losses, out / "loss.png", f"{name}: {objective.label}")}
        if spec.figures:
            figures.update(spec.figures(model, test_set, out))
        metrics["figures"] = {title: str(path) for title, path in figures.items()}
        write_atomic(out / "metrics.json", json.dumps(metrics, indent=2, default=str))
    return metrics


def _train_metrics(spec, model, objective, result, test_set, settings, device, fast) -> dict:
    test_inputs = test_set.inputs(model.inputs)
    nesting = spec.max_plate_nesting
    test_loss = evaluate_objective(model.model, model.guide, test_inputs, objective, nesting)
    # the objective is an ELBO itself unless it is the IWAE bound (RenyiELBO), which the ELBO is not
    test_neg_elbo = test_loss if objective.name != "RenyiELBO" else evaluate_objective(
        model.model, model.guide, test_inputs, "Trace_ELBO", nesting)
    return {
        "model": spec.name,
        "units": UNITS,
        "device": str(device),
        "objective": objective.label + (" in closed form (fast path)" if fast else ""),
        "steps": result.step,
        "train_seconds": round(result.seconds, 3),
        "seconds_per_step": result.seconds / max(1, len(result.losses)),
        "train_loss": result.final_loss,
        "test_loss": test_loss,
        "test_neg_elbo": test_neg_elbo,
        "settings": settings,
        **model.metrics(test_set),
    }


def _model_file(spec: ModelSpec) -> str | None:
    return spec.source if is_file_spec(spec) else None


def load(checkpoint, device="cpu", name=None):
    """(spec, model, state) from a checkpoint written by :func:`train`, checked before any copy.

    A checkpoint of a user's file records the file's path; that file is imported only when the
    caller names it too (``name``, e.g. ``zoo eval my_model.py --checkpoint ...``): a checkpoint
    alone never makes the zoo run code.
    """
    device = resolve_device(device)
    state = load_checkpoint(checkpoint)
    model_name, saved_config = state.get("model"), state.get("config")
    if not isinstance(model_name, str) or not isinstance(saved_config, dict):
        raise CheckpointError(f"{checkpoint} names no zoo model; point --checkpoint at a file written by "
                              "`zoo train`")
    spec = _checkpoint_spec(checkpoint, state, name)
    try:
        model = spec.build(spec.config.from_dict(saved_config))
    except (HparamError, TypeError, ValueError) as err:
        raise CheckpointError(f"{checkpoint} holds a {model_name!r} model this zoo cannot build ({err}); "
                              "retrain it with `zoo train`") from None
    if state["params"]:
        _create_params(spec, model, state)
    saved = state["modules"].get("model")
    try:
        model.load_state_dict(saved if saved is not None else {})
        load_params(state["params"], checkpoint)
    except (RuntimeError, TypeError, ValueError) as err:
        first = str(err).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{checkpoint} does not fit a {model_name!r} model with its hyperparameters "
                              f"({first}); retrain it with `zoo train`") from None
    return spec, model.to(device).eval(), state


def _checkpoint_spec(checkpoint, state: dict, name) -> ModelSpec:
    """The spec a checkpoint was trained from; a user's file only when ``name`` names it too."""
    model_name, model_file = state.get("model"), state.get("model_file")
    if model_file is not None:
        asked = None if name is None else Path(str(name)).expanduser().resolve()
        if not isinstance(model_file, str) or asked != Path(model_file):
            raise CheckpointError(f"{checkpoint} was trained from the file {model_file}; name that file to "
                                  f"load it (`zoo eval {model_file} --checkpoint {checkpoint}`)")
        try:
            return get_spec(model_file)
        except UnknownModelError as err:
            raise CheckpointError(f"{checkpoint} was trained from {model_file}, which is gone "
                                  f"({err})") from None
    try:
        return get_spec(model_name)
    except UnknownModelError as err:
        raise CheckpointError(f"{checkpoint} holds a {model_name!r} model this zoo cannot build ({err}); "
                              "retrain it with `zoo train`") from None


def _create_params(spec: ModelSpec, model, state: dict) -> None:
    """Run guide and model once on two training rows, so that parameters a program creates
    lazily (``pyro.param``, an AutoGuide's) exist, fresh, before the checkpoint's are copied in."""
    store = pyro.get_param_store()
    for param in state["params"]:
        if param in store:
            del store[param]
    data = load_split(spec, "train", data_dir=state.get("data_dir"), data=state.get("data"),
                      smoke=state.get("smoke", False)).head(2)
    inputs = data.inputs(model.inputs)
    with torch.no_grad():
        poutine.trace(model.guide).get_trace(*inputs)
        poutine.trace(model.model).get_trace(*inputs)


def evaluate(checkpoint, *, name=None, k=1000, split="test", limit=None, data_dir=None, data=None,
             device="cpu", out=None, progress=True, seed=0, methods=("is",)) -> dict:
    """Evaluation report of a trained model with the estimators ``methods`` (see inference.evaluate)."""
    from inference.evaluate import check_methods
    from inference.evaluate import evaluate as evaluate_model

    check_methods(methods)
    device = distributed.local_device(resolve_device(device))
    main = distributed.world(device).main
    spec, model, state = load(checkpoint, device, name=name)
    if name is not None and get_spec(name).name != spec.name:
        raise DataError(f"{checkpoint} holds a {spec.name!r} model, not {name!r}; use `zoo eval {spec.name}`")
    smoke = state.get("smoke", False)
    data_split = load_split(spec, split, data_dir=data_dir or state.get("data_dir"),
                            data=data or state.get("data"), smoke=smoke, device=model.device)
    if limit:
        data_split = data_split.head(limit)
    model.check_inputs(data_split.inputs(model.inputs))
    out = Path(out or Path(checkpoint).parent / "eval")
    pyro.set_rng_seed(seed)
    start = time.perf_counter()
    with locked(out) if main else nullcontext():
        posterior_data = None
        if not model.capabilities.importance_sampling:  # the guide approximates p(globals | training data)
            posterior_data = load_split(spec, "train", data_dir=data_dir or state.get("data_dir"),
                                        data=data or state.get("data"), smoke=smoke, device=model.device)
        report = evaluate_model(model, data_split, num_particles=k, max_plate_nesting=spec.max_plate_nesting,
                                figures=spec.figures,
                                out_dir=out if main else None, progress=progress, seed=seed, methods=methods,
                                nuts_samples=NUTS_SMOKE if smoke else NUTS, posterior_data=posterior_data)
        if not main:  # the other ranks sampled their share of the data points; rank 0 reports
            return report
        report.update(model=spec.name, checkpoint=str(checkpoint), split=split,
                      objective=state.get("objective", {}).get("label"),
                      wall_seconds=time.perf_counter() - start)
        write_atomic(out / "report.json", json.dumps(report, indent=2, default=str))
    return report
