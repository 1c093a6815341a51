"""SVI training of any Pyro program: ``fit(model, guide, data)``.

``model`` and ``guide`` are plain Pyro callables (functions using ``pyro.param``/``pyro.module``,
``PyroModule`` s, AutoGuides, bound methods of a module) and ``data`` is a tensor or a tuple of
tensors passed positionally to both, e.g. ``model(x, y)`` for a model of p(x | y). The objective
is a Pyro ELBO named by :class:`Objective` (``Trace_ELBO``, ``TraceMeanField_ELBO``,
``TraceEnum_ELBO``, ``RenyiELBO``...); a closed-form ``loss`` of the same objective is an opt-in
fast path that its own tests hold equal to the Pyro one.

Minibatches: with ``batch_size`` < N the tensors are sliced together along dim 0 by one
permutation per epoch, and every site inside the plate named :data:`DATA_PLATE` is scaled by
N / B, so the loss estimates the full-data objective (write that plate without subsampling).

Parameters are created lazily by a first pass of the objective on the first rows, inside a
param-store scope of this run, so two programs trained in one process never see each other's
``pyro.param`` s; the trained values are merged into the global param store at the end and are
in :attr:`TrainResult.param_state`. The optimiser is ``torch.optim.Adam`` over the parameters of
every ``nn.Module`` among model and guide (or behind their bound methods) and every param-store
parameter the program touches.

Losses stay on the device and are read back every ``log_every`` steps (one host sync), where
the NaN guard, the progress bar and checkpoints happen. A checkpoint (module state, param-store
values, optimiser, random state, position in the epoch; see :mod:`pyro_zoo.inference.checkpoint`) is
written every ``checkpoint_seconds``, at the end, and, when training diverges, holding the last
state whose parameters and losses were finite; ``resume`` continues it exactly, wherever it was
interrupted.

Under ``torchrun`` the same code trains data-parallel (see :mod:`pyro_zoo.inference.distributed`): each
rank takes its block of the shared permutation's batch, gradients are averaged over ranks, and
rank 0 alone writes checkpoints.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import RenyiELBO, Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import effectful
from tqdm.auto import tqdm

from pyro_zoo.inference import compiled, distributed
from pyro_zoo.inference.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pyro_zoo.inference.programs import as_tensors
from pyro_zoo.inference.settings import MAX_STEPS, SettingError, positive_number, whole_number
from pyro_zoo.inference.sites import in_data_plate

ELBOS = {
    "Trace_ELBO": Trace_ELBO,
    "TraceMeanField_ELBO": TraceMeanField_ELBO,
    "TraceGraph_ELBO": TraceGraph_ELBO,
    "TraceEnum_ELBO": TraceEnum_ELBO,
    "RenyiELBO": RenyiELBO,
}
#: the ELBOs with ``differentiable_loss`` (no host sync); the others train through ``loss_and_grads``
DIFFERENTIABLE = ("Trace_ELBO", "TraceMeanField_ELBO", "TraceEnum_ELBO")
#: seconds between checkpoints when training runs long (and always one at the end)
CHECKPOINT_SECONDS = 60.0
#: the settings a resume may change (one logged line says so); the others must match the checkpoint
RESUME_CHANGEABLE = ("lr", "clip_norm", "fast")
#: the words of torch's argument validation when a distribution meets NaN or infinite values
INVALID_VALUES = "invalid values"
logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss or the parameters became non-finite; the message names the settings that help."""


@dataclass
class Objective:
    """A Pyro ELBO by name: ``name`` in :data:`ELBOS`, ``num_particles`` and the ELBO's other
    options (e.g. ``alpha=0`` for RenyiELBO, which is then the IWAE bound)."""

    name: str = "Trace_ELBO"
    num_particles: int = 1
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.name not in ELBOS:
            raise ValueError(f"unknown objective {self.name!r}; choose one of {', '.join(ELBOS)}")
        self.num_particles = whole_number("num_particles", self.num_particles)

    @property
    def label(self) -> str:
        """What the training loss is, e.g. "−ELBO (TraceMeanField_ELBO)" or "−IWAE-5 (RenyiELBO)"."""
        if self.name == "RenyiELBO" and self.options.get("alpha", 0.0) == 0:
            return f"−IWAE-{self.num_particles} ({self.name})"
        suffix = f", {self.num_particles} particles" if self.num_particles > 1 else ""
        return f"−ELBO ({self.name}{suffix})"

    def build(self, max_plate_nesting: int = 1):
        """The Pyro ELBO object."""
        options = dict(self.options)
        if self.name == "TraceEnum_ELBO":
            options.setdefault("strict_enumeration_warning", False)
        return ELBOS[self.name](max_plate_nesting=max_plate_nesting, num_particles=self.num_particles,
                                vectorize_particles=self.num_particles > 1, **options)

    def to_dict(self) -> dict:
        return {"name": self.name, "num_particles": self.num_particles, "options": dict(self.options),
                "label": self.label}


def as_objective(objective) -> Objective:
    """An :class:`Objective` from itself, an ELBO name, or a dict of its fields (a spec's)."""
    if isinstance(objective, Objective):
        return objective
    if isinstance(objective, str):
        return Objective(objective)
    if isinstance(objective, dict):
        return Objective(**{k: v for k, v in objective.items() if k != "label"})
    raise TypeError(f"objective must be an Objective or an ELBO name, got {type(objective).__name__}")


@dataclass
class TrainConfig:
    """How long and how to step: exactly one of ``steps``/``epochs``; ``batch_size`` None means
    full batch; ``lr_decay(step)`` multiplies ``lr``; ``tol`` stops once a log window's mean loss
    moves by less than ``tol`` nats per data point (scikit-learn's rule)."""

    steps: int | None = None
    epochs: float | None = None
    batch_size: int | None = None
    lr: float = 1e-3
    clip_norm: float | None = None
    lr_decay: Callable[[int], float] | None = None
    seed: int | None = None
    tol: float | None = None
    log_every: int | None = None

    def __post_init__(self):
        """Each setting checked (:class:`~pyro_zoo.inference.settings.SettingError` naming it) and made
        plain."""
        if self.steps is not None:
            self.steps = whole_number("steps", self.steps, 1, MAX_STEPS)
        if self.epochs is not None:
            self.epochs = positive_number("epochs", self.epochs)
        for name in ("batch_size", "log_every"):
            if getattr(self, name) is not None:
                setattr(self, name, whole_number(name, getattr(self, name)))
        self.lr = positive_number("lr", self.lr)
        for name in ("clip_norm", "tol"):
            if getattr(self, name) is not None:
                setattr(self, name, positive_number(name, getattr(self, name)))
        if self.seed is not None:
            self.seed = whole_number("seed", self.seed, 0, 2**32 - 1)

    def total_steps(self, num_data: int) -> int:
        """The run's length in steps: ``steps``, or ``epochs`` of ceil(N / B) steps, at most
        :data:`~pyro_zoo.inference.settings.MAX_STEPS`."""
        if (self.steps is None) == (self.epochs is None):
            raise SettingError("steps", "give exactly one of `steps` or `epochs`")
        if self.steps is not None:
            return self.steps
        per_epoch = math.ceil(num_data / self.batch(num_data))
        if self.epochs * per_epoch > MAX_STEPS:
            raise SettingError("epochs", f"`epochs` = {self.epochs:g} of {per_epoch} steps each is more than "
                                         f"the {MAX_STEPS} steps one run may take; ask for fewer")
        return math.ceil(self.epochs * per_epoch)

    def batch(self, num_data: int) -> int:
        return min(self.batch_size or num_data, num_data)


@dataclass
class TrainResult:
    """Per-step losses (the objective in nats per data point), steps done, wall time."""

    losses: list[float] = field(default_factory=list)
    step: int = 0
    seconds: float = 0.0
    checkpoint: Path | None = None
    objective: str = ""
    param_state: dict = field(default_factory=lambda: {"params": {}, "constraints": {}})

    @property
    def final_loss(self) -> float:
        tail = self.losses[-max(1, len(self.losses) // 20):]
        return float(sum(tail) / len(tail)) if tail else float("nan")


class _DataScale(Messenger):
    """Scale every site inside the plate named :data:`DATA_PLATE` by ``scale`` (= N / B)."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def _process_message(self, msg):
        if in_data_plate(msg):
            msg["scale"] = self.scale * msg["scale"]


def fit(model, guide, data, config: TrainConfig | None = None, *, objective="Trace_ELBO",
        max_plate_nesting: int = 1, loss: Callable | None = None, preprocess: Callable | None = None,
        checkpoint: str | Path | None = None, resume: bool = False, overwrite: bool = False,
        meta: dict | None = None, checkpoint_seconds: float = CHECKPOINT_SECONDS, progress: bool = True,
        compile: bool = False, **settings) -> TrainResult:
    """Train ``guide`` (and ``model``'s parameters) on ``data`` by SVI; see the module docstring.

    ``config`` or its fields as keywords (``steps=``, ``lr=``...) set the schedule. ``loss``:
    an optional ``loss(*batch, num_data=N)`` computing the same objective in closed form (the
    fast path); ``compile`` runs that through ``torch.compile``, and the Pyro objective of a program
    of static structure through a trace recorded once per batch shape and replayed
    (:mod:`pyro_zoo.inference.compiled`: same loss and gradients, no per-step Pyro cost).
    ``preprocess(*batch)`` maps each minibatch before model and guide see it (e.g. dynamic
    binarisation). With ``checkpoint``, ``meta`` (plain JSON-like values) is stored beside the
    state; an existing file there is refused unless ``resume`` (continue it; ``lr``, ``clip_norm``
    and ``loss`` may change, with one logged line) or ``overwrite`` (replace it).
    ``checkpoint_seconds``: seconds between checkpoints (0: at every log point; inf: only at the
    end and on divergence).
    """
    config = config or TrainConfig(**settings)
    objective = as_objective(objective)
    tensors = as_tensors(data)
    num_data = tensors[0].shape[0]
    total = config.total_steps(num_data)
    checkpoint_seconds = positive_number("checkpoint_seconds", checkpoint_seconds, allow_zero=True,
                                         allow_inf=True)
    _check_checkpoint_path(checkpoint, resume, overwrite)
    if config.seed is not None:
        pyro.set_rng_seed(config.seed)
    result = TrainResult(checkpoint=Path(checkpoint) if checkpoint else None, objective=objective.label)
    step_fn = _step_function(model, guide, objective, max_plate_nesting, loss, compile)
    replicas = distributed.Replicas(distributed.world(tensors[0].device))
    with pyro.get_param_store().scope(result.param_state):
        run = _Run(model, guide, tensors, config, step_fn, preprocess, result, total, replicas)
        run.prepare(resume, {**(meta or {}), "fast": loss is not None}, objective, checkpoint_seconds)
        run.loop(progress)
    pyro.get_param_store().set_state(_merged(pyro.get_param_store().get_state(), result.param_state))
    return result


def _check_checkpoint_path(checkpoint, resume: bool, overwrite: bool) -> None:
    """Refuse to resume without a checkpoint, or to start a run over an existing file unasked."""
    if resume and overwrite:
        raise SettingError("overwrite", "`resume=True` continues the checkpoint and `overwrite=True` "
                                        "replaces it; pass only one")
    if resume and not checkpoint:
        raise SettingError("checkpoint", "`resume=True` needs the `checkpoint` path to continue")
    if checkpoint and not (resume or overwrite) and Path(checkpoint).exists():
        raise CheckpointError(f"{checkpoint} already exists; continue that run with `resume=True`, "
                              "replace it with `overwrite=True`, or choose another `checkpoint` path")


class _Run:
    """The state of one training run: parameters, optimiser, position, checkpoints."""

    def __init__(self, model, guide, tensors, config, step_fn, preprocess, result, total, replicas):
        self.model, self.guide, self.tensors = model, guide, tensors
        self.config, self.step_fn, self.preprocess = config, step_fn, _as_batch_map(preprocess)
        self.result, self.total = result, total
        self.num_data = tensors[0].shape[0]
        self.batch_size = config.batch(self.num_data)
        self.batches_per_epoch = math.ceil(self.num_data / self.batch_size)
        self.replicas = replicas  # the identity with one process; rank 0 alone writes checkpoints
        self.writes = replicas.world.main
        replicas.check(self.num_data, self.batch_size)
        self.order: torch.Tensor | None = None
        self.good: dict | None = None

    def prepare(self, resume, meta, objective, checkpoint_seconds):
        """Create the parameters (one pass on the first rows), the optimiser, and restore."""
        first = tuple(t[:self.batch_size] for t in self.tensors)
        try:
            with torch.no_grad(), poutine.trace(param_only=True) as captured, _nan_is_guarded():
                self.step_fn(self.preprocess(*first), self.num_data / len(first[0]), backward=False)
        except ValueError as err:  # a distribution rejecting NaN data or NaN arguments under validation
            if INVALID_VALUES not in str(err):
                raise
            raise TrainingDiverged(_before_training(err)) from err
        self.modules = _modules(self.model, self.guide)
        self.params = _parameters(self.modules, captured.trace)
        if not self.params:
            raise ValueError("the model and guide have no parameters to train")
        self.optimizer = torch.optim.Adam(self.params, lr=self.config.lr, fused=_fusable(self.params))
        self.meta = {**meta, "objective": objective.to_dict(), "lr": self.config.lr,
                     "clip_norm": self.config.clip_norm, "batch_size": self.batch_size,
                     **self.replicas.meta()}
        self.checkpoint_seconds = checkpoint_seconds
        if resume:
            self.restore()
        self.step_fn = self.replicas.synchronise(self.step_fn, self.modules, self.params,
                                                 functools.partial(self.preprocess, *first),
                                                 self.num_data / len(first[0]))
        self.scheduler = _scheduler(self.optimizer, self.config.lr, self.config.lr_decay, self.result.step)
        self.last_save = time.monotonic()

    def restore(self):
        path = self.result.checkpoint
        state = load_checkpoint(path)
        self.check_resumable(state, path)
        _load_modules(self.modules, state["modules"], path)
        load_params(state["params"], path)
        try:
            self.optimizer.load_state_dict(state["optimizer_state"])
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"{path} does not fit this program's parameters ({err}); "
                                  "start a new run instead of resuming") from None
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr  # the rate asked now (check_resumable logged a change)
        _set_rng(state["rng"])
        self.replicas.restore(state)
        self.result.step, self.result.losses = state["step"], list(state["losses"])
        order = state.get("order")
        self.order = None if order is None else order.to(self.tensors[0].device)

    def check_resumable(self, state: dict, path):
        """Refuse a resume that changes the batch size or asks for fewer steps than were done; log
        one line naming the settings that change (:data:`RESUME_CHANGEABLE`)."""
        saved = state.get("batch_size", self.batch_size)
        if saved != self.batch_size:
            raise SettingError("batch_size", f"{path} was trained with `batch_size` = {saved}, not "
                                             f"{self.batch_size}; resume it with the same batch size")
        if state["step"] > self.total:
            length = "steps" if self.config.steps is not None else "epochs"
            raise SettingError(length, f"{path} is at step {state['step']}, beyond the {self.total} steps "
                                       f"asked for; ask for more `{length}` to continue it")
        changed = [name for name in RESUME_CHANGEABLE if name in state and state[name] != self.meta[name]]
        if changed and self.writes:
            now = ", ".join(f"`{name}` = {self.meta[name]}" for name in changed)
            before = ", ".join(str(state[name]) for name in changed)
            logger.warning("resuming %s with %s (the checkpoint had %s)", path, now, before)

    def loop(self, progress: bool):
        config, result = self.config, self.result
        log_every = config.log_every or (min(self.batches_per_epoch, 100) if self.batches_per_epoch > 1
                                         else 25)
        validate, first_step = pyro.distributions.is_validation_enabled(), result.step
        start = time.perf_counter()
        bar = tqdm(total=self.total, initial=result.step, disable=not (progress and self.writes), unit="step",
                   dynamic_ncols=True)
        try:
            with _nan_is_guarded():
                self._steps(bar, log_every, validate, first_step)
        finally:
            bar.close()
        result.seconds = time.perf_counter() - start

    def _steps(self, bar, log_every, validate, first_step):
        config, result = self.config, self.result
        pending: list[torch.Tensor] = []
        previous = math.inf
        while result.step < self.total:
            batch, scale = self.next_batch()
            with (pyro.validation_enabled(validate and result.step == first_step),
                  self.replicas.stream(result.step, "step")):
                value = self.step(batch, scale)
            pending.append(value.detach() / self.num_data)
            result.step += 1
            if len(pending) == log_every or result.step == self.total:
                values = self.replicas.mean_losses(torch.stack(pending))
                pending.clear()
                self.guard(values)
                result.losses.extend(values)
                bar.update(len(values))
                window = sum(values) / len(values)
                bar.set_postfix(loss=f"{window:.4f}")
                self.good = self.snapshot() if result.checkpoint and self.writes else None
                settled = config.tol is not None and abs(previous - window) < config.tol
                done = result.step == self.total or settled
                if done or time.monotonic() - self.last_save >= self.checkpoint_seconds:
                    self.save(self.good)
                if done:
                    break
                previous = window

    def next_batch(self):
        """This rank's rows of the step's batch, preprocessed, and the data plate's scale."""
        if self.batch_size == self.num_data and self.replicas.size == 1:
            return self.preprocess(*self.tensors), 1.0
        if self.batch_size == self.num_data:
            rows = torch.arange(self.num_data, device=self.tensors[0].device)
        else:
            position = self.result.step % self.batches_per_epoch
            if self.order is None or position == 0:
                self.order = torch.randperm(self.num_data, device=self.tensors[0].device)
            rows = self.order[position * self.batch_size:(position + 1) * self.batch_size]
        mine = self.replicas.shard(rows)
        with self.replicas.stream(self.result.step, "preprocess"):
            batch = self.preprocess(*(t[mine] for t in self.tensors))
        return batch, self.replicas.scale(self.num_data, len(rows))

    def step(self, batch, scale) -> torch.Tensor:
        try:
            value = self.step_fn(batch, scale)
        except ValueError as err:  # a distribution rejecting NaN data or NaN arguments under validation
            if INVALID_VALUES not in str(err) and _finite(self.params):
                raise
            if self.result.step == 0:
                raise TrainingDiverged(_before_training(err)) from err
            self.diverged(f"the program gave non-finite values at step {self.result.step + 1}", err)
        if self.config.clip_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.clip_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler:
            self.scheduler.step()
        return value

    def guard(self, values: list[float]):
        for offset, value in enumerate(values):
            if not math.isfinite(value):
                step = self.result.step - len(values) + offset + 1
                if step == 1:
                    raise TrainingDiverged(_before_training(f"the loss is {value}"))
                self.diverged(f"the loss became {value} at step {step}")
        if not self.replicas.all_true(_finite(self.params)):  # one verdict for every rank
            self.diverged(f"parameters became non-finite by step {self.result.step}")

    def diverged(self, what: str, cause=None):
        """Write the last finite state (if any) and stop with a message naming the fix."""
        kept = ""
        if self.result.checkpoint and self.writes:
            if self.good is not None:
                self.save(self.good)
            if self.result.checkpoint.is_file():
                saved = load_checkpoint(self.result.checkpoint)["step"]
                kept = (f"; the last good checkpoint (step {saved}) is kept at {self.result.checkpoint}: "
                        "continue it with `resume=True` and either change")
            else:
                kept = "; no checkpoint was written before it diverged"
        raise TrainingDiverged(f"{what}; lower the learning rate (`lr`) or clip gradients "
                               f"(`clip_norm`){kept}") from cause

    def snapshot(self) -> dict:
        """Everything a resume needs, copied (so later steps cannot change it)."""
        return _clone({
            **self.meta,
            "modules": {key: module.state_dict() for key, module in self.modules.items()},
            "params": dict(sorted(pyro.get_param_store().get_state()["params"].items())),
            "optimizer_state": self.optimizer.state_dict(),
            "step": self.result.step,
            "losses": list(self.result.losses),
            "rng": _get_rng(),
            "order": None if self.order is None or self.result.step % self.batches_per_epoch == 0
            else self.order.cpu(),
        })

    def save(self, state: dict | None):
        if state is not None and self.result.checkpoint and self.writes:
            save_checkpoint(self.result.checkpoint, state)
            self.last_save = time.monotonic()


@contextlib.contextmanager
def _nan_is_guarded():
    """Silence Pyro's "Encountered NaN" warnings: a NaN loss is caught by the guard, whose message
    names the fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Encountered NaN", category=UserWarning)
        yield


def _before_training(cause) -> str:
    """The divergence message when the very first pass is not finite: no step has run, so the
    data or the program, not the learning rate, is at fault."""
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    # Pyro's message may name the site on a line of its own ("Error while computing log_prob at site 'x':")
    said = " ".join(lines[:2] if lines[0].endswith(":") else lines[:1]).rstrip(":")
    return (f"the program is not finite before any training step ({said}); check the data for NaN or "
            "infinite values and the program's log-densities")


def _step_function(model, guide, objective: Objective, max_plate_nesting: int, loss, compile: bool):
    """``step(batch, scale, backward=True) -> loss tensor``, gradients accumulated by backward;
    ``step.loss(batch, scale)`` is the differentiable loss where the objective has one (what
    DistributedDataParallel wraps), else None."""
    if loss is not None:
        closed_form = torch.compile(loss) if compile else loss

        def closed_loss(batch, scale):
            return closed_form(*batch, num_data=round(scale * len(batch[0])))

        def closed_step(batch, scale, backward=True):
            value = closed_loss(batch, scale)
            if backward:
                value.backward()
            return value

        closed_step.loss = closed_loss
        return closed_step
    elbo = objective.build(max_plate_nesting)
    pyro_loss = _pyro_loss(elbo, model, guide, compile)
    marked_guide = _with_parameters_mark(guide)

    def pyro_step(batch, scale, backward=True):
        if objective.name in DIFFERENTIABLE and backward:
            value = pyro_loss(batch, scale)
            value.backward()
            return value
        with _DataScale(scale):
            if not backward:
                return torch.as_tensor(elbo.loss(model, guide, *batch))
            return torch.as_tensor(elbo.loss_and_grads(model, marked_guide, *batch))

    pyro_step.loss = pyro_loss if objective.name in DIFFERENTIABLE else None
    return pyro_step


#: a ``param`` site with no parameter behind it. Pyro's ``loss_and_grads`` (RenyiELBO, TraceGraph_ELBO)
#: backpropagates its surrogate only when a trace holds a ``param`` site, and the zoo's parameters live
#: in ``nn.Module``s, outside Pyro's param store: without this mark the IWAE bound trained nothing.
_parameters_present = effectful(lambda: torch.zeros(()), type="param")


def _with_parameters_mark(guide):
    """``guide`` recording the ``param`` site :data:`_parameters_present` before it runs."""
    def marked(*args, **kwargs):
        _parameters_present(name="zoo.parameters")
        return guide(*args, **kwargs)

    return marked


def _pyro_loss(elbo, model, guide, compile: bool):
    """``loss(batch, scale)``, the ELBO's differentiable loss with the data plate scaled; with
    ``compile``, traced once per batch signature and replayed (:mod:`pyro_zoo.inference.compiled`)."""
    if compile and compiled.compilable(elbo):
        return compiled.CompiledLoss(elbo, model, guide, scaled=_DataScale)
    if compile:
        logger.warning("compile: %s has no traced form (compile covers %s); training continues with "
                       "the uncompiled Pyro objective", type(elbo).__name__, ", ".join(DIFFERENTIABLE))

    def pyro_loss(batch, scale):
        with _DataScale(scale):
            return elbo.differentiable_loss(model, guide, *batch)

    return pyro_loss


def _as_batch_map(preprocess):
    """``preprocess`` as a map from a tuple of tensors to a tuple of tensors."""
    if preprocess is None:
        return lambda *batch: batch

    def mapped(*batch):
        out = preprocess(*batch)
        return out if isinstance(out, tuple) else (out,)

    return mapped


def _modules(model, guide) -> dict[str, torch.nn.Module]:
    """The ``nn.Module`` s behind model and guide (themselves or their bound methods' owner)."""
    found: dict[str, torch.nn.Module] = {}
    for key, program in (("model", model), ("guide", guide)):
        owner = program if isinstance(program, torch.nn.Module) else getattr(program, "__self__", None)
        if isinstance(owner, torch.nn.Module) and all(owner is not m for m in found.values()):
            found[key] = owner
    return found


def _parameters(modules: dict, param_trace) -> list[torch.Tensor]:
    """Module parameters, then the param-store leaves the program touched, each once, in a fixed order."""
    params, seen = [], set()
    store = pyro.get_param_store()
    touched = sorted(name for name, site in param_trace.nodes.items() if site["type"] == "param")
    leaves = [p for m in modules.values() for p in m.parameters()]
    leaves += [store.get_state()["params"][name] for name in touched if name in store]
    for leaf in leaves:
        if leaf.requires_grad and id(leaf) not in seen:
            seen.add(id(leaf))
            params.append(leaf)
    return params


def _load_modules(modules: dict, saved: dict, path):
    if set(saved) != set(modules):
        raise CheckpointError(f"{path} holds modules {sorted(saved)} but this program has {sorted(modules)}; "
                              "resume the program that wrote it")
    for key, module in modules.items():
        try:
            module.load_state_dict(saved[key])
        except RuntimeError as err:
            first = str(err).strip().splitlines()[-1].strip()
            raise CheckpointError(f"{path} does not fit this {key} ({first}); check the hyperparameters "
                                  "or start a new run") from None


def load_params(saved: dict, path) -> None:
    """Copy a checkpoint's (unconstrained) param-store values into the store's parameters of the
    same names and shapes; :class:`CheckpointError` naming ``path`` otherwise."""
    current = pyro.get_param_store().get_state()["params"]
    for name, value in saved.items():
        if name not in current or current[name].shape != value.shape:
            have = tuple(current[name].shape) if name in current else "none"
            raise CheckpointError(f"{path} holds parameter {name!r} of shape {tuple(value.shape)}, this "
                                  f"program has {have}; resume the program that wrote it")
        with torch.no_grad():
            current[name].copy_(value)


def _merged(old: dict, new: dict) -> dict:
    return {"params": {**old["params"], **new["params"]},
            "constraints": {**old["constraints"], **new["constraints"]}}


def _finite(params) -> bool:
    return bool(torch.stack([torch.isfinite(p).all() for p in params]).all())


def _clone(value):
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clone(v) for v in value]
    return value


def _get_rng() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng(state: dict):
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fusable(params) -> bool:
    """Adam's fused kernel needs every parameter floating point on a CPU or CUDA device."""
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def _scheduler(optimizer, lr: float, lr_decay, start: int):
    """LambdaLR with ``lr * lr_decay(step)``, counting from ``start`` (a resumed run's step)."""
    if lr_decay is None:
        return None
    for group in optimizer.param_groups:
        group["lr"] = lr  # a restored optimizer carries the decayed rate; LambdaLR scales from lr
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_decay(start + step))


def fit_model(zoo_model, data, config: TrainConfig | None = None, *, objective="Trace_ELBO",
              fast: bool = False, **options) -> TrainResult:
    """:func:`fit` for a zoo model (a module with ``model``/``guide``/``preprocess``) on ``data``,
    its declared inputs (a tensor, or a tuple such as ``(x, y)``): its Pyro program by default;
    ``fast=True`` trains on its closed-form ``elbo_loss`` instead."""
    zoo_model.check_inputs(as_tensors(data))
    if fast and not zoo_model.capabilities.closed_form_loss:
        raise ValueError(f"{type(zoo_model).__name__} has no closed-form loss; train without fast")
    loss = zoo_model.elbo_loss if fast else None
    zoo_model.train()
    try:
        return fit(zoo_model.model, zoo_model.guide, data, config, objective=objective, loss=loss,
                   preprocess=zoo_model.preprocess, **options)
    finally:
        zoo_model.eval()


@torch.no_grad()
def evaluate_objective(model, guide, data, objective="Trace_ELBO", max_plate_nesting: int = 1,
                       chunk: int = 10_000) -> float:
    """The objective's loss of ``model``/``guide`` on ``data`` in nats per data point (chunked)."""
    tensors = as_tensors(data)
    elbo = as_objective(objective).build(max_plate_nesting)
    num_data = tensors[0].shape[0]
    total = 0.0
    for lo in range(0, num_data, chunk):
        total += elbo.loss(model, guide, *(t[lo:lo + chunk] for t in tensors))
    return total / num_data
