"""Python API behind the CLI: train, load, evaluate and demo any registered model.

>>> from pyro_zoo.runs import train, evaluate
>>> metrics = train("mixture", smoke=True, out="runs/mixture")
>>> report = evaluate("runs/mixture/checkpoint.pt", num_particles=100)

A run folder holds ``checkpoint.pt``, ``history.json``, ``metrics.json``, ``loss.png`` and the
model's figures. It is locked while a run writes it (a second ``train`` into it is refused), an
existing run is replaced only with ``overwrite`` (which first removes the old run's files), a
folder holding another kind of run (an evaluation, a demo) is refused (:mod:`pyro_zoo.folders`), and
every file is written atomically. A resume takes its settings from the checkpoint: it may change
the learning rate, the clipping and the fast path (one logged line says so); a differing batch
size, data set or hyperparameter is refused, not ignored.

Under ``torchrun`` every rank runs the same call: training is data-parallel and evaluation
sharded (:mod:`pyro_zoo.inference.distributed`), ``cuda`` means each rank's own GPU, and rank 0 alone
holds the lock and writes the run folder.
"""

from __future__ import annotations

import dataclasses
import json
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import pyro.poutine as poutine
import torch

from pyro_zoo.folders import CHECKPOINT, RunFolderError, check_folder, run_folder
from pyro_zoo.inference import distributed
from pyro_zoo.inference.checkpoint import CheckpointError, load_checkpoint, write_atomic
from pyro_zoo.inference.devices import resolve_device
from pyro_zoo.inference.evaluate import check_methods
from pyro_zoo.inference.evaluate import evaluate as evaluate_model
from pyro_zoo.inference.plain import to_json
from pyro_zoo.inference.plots import plot_loss
from pyro_zoo.inference.settings import SettingError
from pyro_zoo.inference.train import (
    CHECKPOINT_SECONDS,
    TrainConfig,
    as_objective,
    evaluate_objective,
    fit_model,
    load_params,
)
from pyro_zoo.models import (
    DataError,
    DataSplit,
    HparamError,
    ModelSpec,
    UnknownModelError,
    get_spec,
    is_file_spec,
    registered_spec,
)
from pyro_zoo.models.spec import TRAIN_SETTINGS

UNITS = "nats per data point"
#: settings a resumed run must share with its checkpoint (lr, clip_norm and fast may change; steps and
#: epochs may grow)
RESUME_FIXED = ("batch_size",)
#: NUTS draws (and as many warm-up steps) behind the posterior comparison of global-latent models
NUTS, NUTS_SMOKE = 1000, 100


def load_split(spec: ModelSpec, split: str, *, data_dir=None, data=None, smoke=False,
               device="cpu") -> DataSplit:
    """The model's data split, on ``device``."""
    return spec.load_data(split, data_dir=data_dir, data=data, smoke=smoke).to(device)


@dataclass(frozen=True)
class TrainRequest:
    """A training run as asked, the one value :func:`train` passes down.

    ``name``: a registered model, a user's ``.py`` file or a package's entry point (see
    :func:`pyro_zoo.models.get_spec`). ``data`` (a model-specific data set name or a CSV file) and
    ``data_dir`` locate the data; ``hparams`` are the hyperparameters given, over the config's
    defaults (or its smoke variant with ``smoke``); ``settings`` the training settings given
    (``steps`` or ``epochs``, ``batch_size``, ``lr``, ``clip_norm``), over the spec's. ``fast``
    trains on the closed form (None: the checkpoint's choice when resuming, else False).
    """

    name: str
    out: str | Path | None = None
    smoke: bool = False
    data: str | None = None
    data_dir: str | Path | None = None
    hparams: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    fast: bool | None = None
    resume: bool = False
    overwrite: bool = False
    device: str = "cpu"
    seed: int = 0
    progress: bool = True
    checkpoint_seconds: float = CHECKPOINT_SECONDS

    @classmethod
    def of(cls, name: str, **keywords) -> TrainRequest:
        """The request of ``train(name, **keywords)``: training settings (``steps=``, ``lr=``...) given
        as keywords of their own go to ``settings``; None means not given."""
        settings = {key: keywords.pop(key) for key in TRAIN_SETTINGS if keywords.get(key) is not None}
        for key in TRAIN_SETTINGS:
            keywords.pop(key, None)
        return cls(name, settings=settings, **{k: v for k, v in keywords.items() if v is not None})


def out_folder(out, default: Path) -> Path:
    """``out`` as a folder path (``default`` when None); an empty path is refused."""
    if out is None:
        return Path(default)
    if not str(out).strip():
        raise DataError("--out is empty; give a folder path, or leave --out out for the default")
    return Path(out)


def _check_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to start a run that would replace one unasked, or resume one that is not there."""
    checkpoint = out / CHECKPOINT
    if resume and overwrite:
        raise RunFolderError("--resume continues a run and --overwrite replaces it; pass only one")
    check_folder(out, "train", resume=resume, overwrite=overwrite)
    if resume and not checkpoint.is_file():
        raise CheckpointError(f"there is no checkpoint to resume at {checkpoint}; drop --resume to start "
                              "a new run")


def _resumed(spec: ModelSpec, request: TrainRequest, out: Path) -> TrainRequest:
    """``request`` as the run in ``out`` continues it: its data, smoke mode, hyperparameters and
    settings from the checkpoint, with the run length, ``lr`` and ``clip_norm`` asked now."""
    _check_folder(out, True, request.overwrite)
    path = out / CHECKPOINT
    state = load_checkpoint(path)
    if (state.get("model"), state.get("model_file")) != (spec.name, _model_file(spec)):
        raise CheckpointError(f"{path} holds a {state.get('model')!r} run, not {spec.name!r}")
    settings = _resumed_settings(state, request, path)
    return dataclasses.replace(
        request, settings=settings, smoke=state.get("smoke", False), data=state.get("data"),
        data_dir=state.get("data_dir"), hparams=state.get("explicit_hparams") or {},
        fast=state.get("fast", False) if request.fast is None else request.fast)


def _resumed_settings(state: dict, request: TrainRequest, path) -> dict:
    """The checkpoint's settings with the run length, ``lr`` and ``clip_norm`` asked now; any other
    differing setting is an error."""
    given = request.settings
    for name, value in request.hparams.items():
        trained = state["config"].get(name)
        if to_json(trained) != to_json(value):
            raise CheckpointError(f"the checkpoint was trained with {name}={trained!r}; drop --set {name} "
                                  "to resume it, or start a new run with --overwrite")
    saved = state.get("settings", {})
    try:
        TrainConfig(**saved)
    except (SettingError, TypeError) as err:
        raise CheckpointError(f"{path} is damaged: its training settings are not valid ({err}); retrain it "
                              "or use another checkpoint") from None
    asked = {**{k: given.get(k) for k in RESUME_FIXED}, "smoke": request.smoke or None, "data": request.data,
             "data_dir": request.data_dir}
    have = {**{k: saved.get(k) for k in RESUME_FIXED}, "smoke": state.get("smoke") or None,
            "data": state.get("data"), "data_dir": state.get("data_dir")}
    for key, value in asked.items():
        if value is not None and to_json(value) != to_json(have[key]):
            raise CheckpointError(f"the checkpoint was trained with {key} = {have[key]!r}, not {value!r}; "
                                  "drop that option to resume with the checkpoint's, or start a new run "
                                  "with --overwrite")
    settings = {k: v for k, v in saved.items() if k not in ("steps", "epochs")}
    settings.update({k: given[k] for k in ("lr", "clip_norm") if given.get(k) is not None})
    length = {k: given[k] for k in ("steps", "epochs") if given.get(k) is not None}
    return {**settings, **(length or {k: saved[k] for k in ("steps", "epochs") if k in saved})}


def train(request: TrainRequest | str, **keywords) -> dict:
    """Train the model of ``request`` (a :class:`TrainRequest`, or a model name with the request's
    fields as keywords, e.g. ``train("vae", smoke=True, epochs=2)``) by SVI on its Pyro objective
    (or its closed form with ``fast``); writes checkpoint, history, loss curve, figures and
    metrics.json under ``out`` (default ``runs/NAME``). Everything asked is checked before anything
    is written."""
    request = request if isinstance(request, TrainRequest) else TrainRequest.of(request, **keywords)
    spec = get_spec(request.name)
    device = distributed.local_device(resolve_device(request.device))
    main = distributed.world(device).main
    out = out_folder(request.out, Path("runs") / spec.name)
    if request.resume:
        request = _resumed(spec, request, out)
        settings = request.settings
    else:
        settings = spec.train_settings(request.smoke, **request.settings)
    splits = {split: load_split(spec, split, data_dir=request.data_dir, data=request.data,
                                smoke=request.smoke, device=device) for split in ("train", "test")}
    TrainConfig(**settings).total_steps(len(splits["train"].x))  # bounded and well-typed before anything runs
    config = spec.resolve(smoke=request.smoke, data=splits["train"], overrides=request.hparams)
    spec.check_size(config)
    pyro.set_rng_seed(request.seed)
    model = spec.build(config).to(device)
    for split in splits.values():
        model.check_inputs(split.inputs(model.inputs))
    _check_folder(out, request.resume, request.overwrite)
    with run_folder(out, "train", spec.name, resume=request.resume, overwrite=request.overwrite) if main \
            else nullcontext():
        return _fit(spec, request, model, config, settings, splits, out, device, main)


def _fit(spec: ModelSpec, request: TrainRequest, model, config, settings: dict, splits: dict, out: Path,
         device, main: bool) -> dict:
    """Train ``model`` as ``request`` asks, in the run folder ``out``; returns the run's metrics."""
    objective = as_objective(spec.objective_for(config))
    fast = bool(request.fast)
    meta = {"model": spec.name, "model_file": _model_file(spec), "config": config.to_dict(),
            "explicit_hparams": request.hparams, "smoke": request.smoke, "data": request.data,
            "data_dir": None if request.data_dir is None else str(request.data_dir), "seed": request.seed,
            "settings": settings, "fast": fast}
    result = fit_model(model, splits["train"].inputs(model.inputs), objective=objective, fast=fast,
                       max_plate_nesting=spec.max_plate_nesting, checkpoint=out / CHECKPOINT,
                       resume=request.resume, overwrite=request.overwrite, meta=meta,
                       progress=request.progress, checkpoint_seconds=request.checkpoint_seconds, **settings)
    metrics = _train_metrics(spec, model, objective, result, splits["test"], settings, device, fast)
    metrics["checkpoint"] = str(out / CHECKPOINT)
    if main:
        _write_run(out, spec, model, objective, result, splits["test"], metrics)
    return metrics


def _write_run(out: Path, spec: ModelSpec, model, objective, result, test_set, metrics: dict) -> None:
    """history.json, the loss curve, the model's figures and metrics.json (which lists them)."""
    write_atomic(out / "history.json", json.dumps({"objective": objective.label, "loss": result.losses}))
    figures = {"loss curve": plot_loss(result.losses, out / "loss.png", f"{spec.name}: {objective.label}")}
    if spec.figures:
        figures.update(spec.figures(model, test_set, out))
    metrics["figures"] = {title: str(path) for title, path in figures.items()}
    write_atomic(out / "metrics.json", json.dumps(metrics, indent=2, default=str))


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

    A checkpoint's model name is looked up among registered names and installed entry points
    only; a checkpoint of a user's file records the file's path, and that file is imported only
    when the caller names it too (``name``, e.g. ``zoo eval my_model.py --checkpoint ...``): a
    checkpoint alone never makes the zoo run code. The hyperparameters are checked, and the
    model's size bounded (:meth:`pyro_zoo.models.ModelSpec.check_size`), before anything is built.
    """
    device = resolve_device(device)
    state = load_checkpoint(checkpoint)
    model_name, saved_config = state.get("model"), state.get("config")
    if not isinstance(model_name, str) or not isinstance(saved_config, dict):
        raise CheckpointError(f"{checkpoint} names no zoo model; point --checkpoint at a file written by "
                              "`zoo train`")
    spec = _checkpoint_spec(checkpoint, state, name)
    try:
        config = spec.config.from_dict(saved_config)
        spec.check_size(config)
        model = spec.build(config)
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
    """The spec a checkpoint was trained from: a registered name or an entry point, never a file
    the checkpoint names; a user's file only when ``name`` names the same file."""
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
        return registered_spec(model_name)
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


def evaluate(checkpoint, *, name=None, num_particles=1000, split="test", limit=None, data_dir=None, data=None,
             device="cpu", out=None, overwrite=False, progress=True, seed=0, methods=("is",),
             ais_settings=None) -> dict:
    """Evaluation report of a trained model with the estimators ``methods`` (see pyro_zoo.inference.evaluate;
    ``num_particles`` importance samples per data point, ``ais_settings`` over its AIS_SETTINGS),
    written to ``out`` (default: ``eval`` beside the checkpoint); a folder holding a report is
    replaced only with ``overwrite``, a folder holding another kind of run never."""
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
    out = out_folder(out, Path(checkpoint).parent / "eval")
    check_folder(out, "eval", overwrite=overwrite)
    pyro.set_rng_seed(seed)
    start = time.perf_counter()
    with run_folder(out, "eval", spec.name, overwrite=overwrite) if main else nullcontext():
        posterior_data = None
        if not model.capabilities.importance_sampling:  # the guide approximates p(globals | training data)
            posterior_data = load_split(spec, "train", data_dir=data_dir or state.get("data_dir"),
                                        data=data or state.get("data"), smoke=smoke, device=model.device)
        report = evaluate_model(model, data_split, num_particles=num_particles,
                                max_plate_nesting=spec.max_plate_nesting, figures=spec.figures,
                                ais_settings=ais_settings,
                                out_dir=out if main else None, progress=progress, seed=seed, methods=methods,
                                nuts_samples=NUTS_SMOKE if smoke else NUTS, posterior_data=posterior_data)
        if not main:  # the other ranks sampled their share of the data points; rank 0 reports
            return report
        report.update(model=spec.name, checkpoint=str(checkpoint), split=split,
                      objective=state.get("objective", {}).get("label"),
                      wall_seconds=time.perf_counter() - start)
        write_atomic(out / "report.json", json.dumps(report, indent=2, default=str))
    return report
