"""Model-agnostic SVI training.

The optimiser is a plain ``torch.optim.Adam`` over the model's ``parameters()`` and the loss is
Pyro's ``differentiable_loss`` (Trace_ELBO, or TraceEnum_ELBO for enumerated discrete latents),
so a checkpoint is just the module's and the optimiser's ``state_dict``. A model that computes
its ELBO in closed form (``ZooModel.elbo_loss``, tested against Pyro's) trains on that instead
unless ``closed_form=False``: the same objective without Pyro's per-step tracing. Pyro's
argument validation runs on the first step, where model errors show, and is off after it; a
non-finite loss is still caught at every log point. Data stay as one tensor
on the device; minibatches are index slices of a per-epoch permutation. Losses are collected on
the device and read back only every ``log_every`` steps (one host sync), where the NaN guard,
the progress bar and checkpoints happen.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from tqdm.auto import tqdm

from inference.checkpoint import load_checkpoint, save_checkpoint

ELBOS = {"Trace_ELBO": Trace_ELBO, "TraceEnum_ELBO": TraceEnum_ELBO}


class TrainingDiverged(RuntimeError):
    pass


@dataclass
class TrainResult:
    """Per-step losses (negative ELBO in nats per data point), steps done, wall time."""

    losses: list[float] = field(default_factory=list)
    step: int = 0
    seconds: float = 0.0
    checkpoint: Path | None = None

    @property
    def final_loss(self) -> float:
        tail = self.losses[-max(1, len(self.losses) // 20):]
        return float(sum(tail) / len(tail)) if tail else float("nan")


def make_elbo(name: str = "Trace_ELBO", max_plate_nesting: int = 1, num_particles: int = 1):
    """The Pyro ELBO called ``name`` ("Trace_ELBO" or "TraceEnum_ELBO")."""
    if name not in ELBOS:
        raise ValueError(f"unknown ELBO {name!r}; choose one of {', '.join(ELBOS)}")
    options = {"strict_enumeration_warning": False} if name == "TraceEnum_ELBO" else {}
    return ELBOS[name](
        max_plate_nesting=max_plate_nesting,
        num_particles=num_particles,
        vectorize_particles=num_particles > 1,
        **options,
    )


def _total_steps(num_data: int, batch_size: int, steps: int | None, epochs: float | None) -> int:
    if (steps is None) == (epochs is None):
        raise ValueError("give exactly one of steps or epochs")
    if steps is not None:
        return int(steps)
    return int(math.ceil(epochs * math.ceil(num_data / batch_size)))


def fit(
    model,
    x: torch.Tensor,
    *,
    elbo: str = "Trace_ELBO",
    max_plate_nesting: int = 1,
    steps: int | None = None,
    epochs: float | None = None,
    batch_size: int | None = None,
    lr: float = 1e-3,
    clip_norm: float | None = None,
    num_particles: int = 1,
    seed: int | None = None,
    tol: float | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    meta: dict | None = None,
    log_every: int | None = None,
    progress: bool = True,
    closed_form: bool = True,
    lr_decay: Callable[[int], float] | None = None,
    compile: bool = False,
) -> TrainResult:
    """Train ``model`` (a :class:`models.ZooModel`) on ``x`` by SVI; see the module docstring.

    ``x`` must already be on the model's device. With ``checkpoint`` a checkpoint is written
    at every log point and at the end; ``resume`` continues from it. A non-finite loss stops
    training with :class:`TrainingDiverged`, leaving the last good checkpoint in place. With
    ``tol``, training stops early once the mean loss of a log window changes by less than
    ``tol`` nats per data point from the previous window (scikit-learn's convergence rule).

    ``closed_form=False`` trains on Pyro's ELBO even where the model has ``elbo_loss``.
    ``lr_decay(step)`` multiplies ``lr`` at each step (``torch.optim.lr_scheduler.LambdaLR``).
    ``compile`` runs the closed-form loss, forward and backward, through ``torch.compile``: it
    pays where a step is launch-bound (a GPU at small batches), not on a CPU, where the VAE step
    is arithmetic-bound (benchmarks/RESULTS.md).
    """
    model.check_data(x)
    if seed is not None:
        pyro.set_rng_seed(seed)
    num_data = x.shape[0]
    batch_size = min(batch_size or num_data, num_data)
    batches_per_epoch = math.ceil(num_data / batch_size)
    total = _total_steps(num_data, batch_size, steps, epochs)
    if log_every is None:
        log_every = min(batches_per_epoch, 100) if batch_size < num_data else 25
    loss_fn = training_loss(model, elbo, max_plate_nesting, num_particles, closed_form, compile)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=_fusable(model))
    result = TrainResult(checkpoint=Path(checkpoint) if checkpoint else None)
    if resume:
        result.step, result.losses = _restore(checkpoint, model, optimizer)
    scheduler = _scheduler(optimizer, lr, lr_decay, result.step)
    state_meta = {**(meta or {}), "elbo": elbo, "lr": lr, "batch_size": batch_size}

    def save():
        if checkpoint:
            save_checkpoint(checkpoint, {
                **state_meta,
                "model_state": model.state_dict(),
                "optimizer_state": optimizer.state_dict(),
                "step": result.step,
                "losses": result.losses,
                "rng_state": torch.get_rng_state(),
            })

    validate, first_step = pyro.distributions.is_validation_enabled(), result.step
    pending: list[torch.Tensor] = []
    previous = math.inf
    order = None
    start = time.perf_counter()
    bar = tqdm(total=total, initial=result.step, disable=not progress, unit="step", dynamic_ncols=True)
    model.train()
    while result.step < total:
        position = result.step % batches_per_epoch
        if batch_size < num_data:
            if order is None or position == 0:
                order = torch.randperm(num_data, device=x.device)
            batch = x[order[position * batch_size:(position + 1) * batch_size]]
            kwargs = {"num_data": num_data}
        else:
            batch, kwargs = x, {}
        with pyro.validation_enabled(validate and result.step == first_step):
            loss = _loss(loss_fn, model, model.preprocess(batch), kwargs, result.step, checkpoint)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        optimizer.step()
        if scheduler:
            scheduler.step()
        pending.append(loss.detach() / num_data)
        result.step += 1
        if len(pending) == log_every or result.step == total:
            values = torch.stack(pending).tolist()
            pending.clear()
            _guard(values, result, checkpoint)
            result.losses.extend(values)
            bar.update(len(values))
            window = sum(values) / len(values)
            bar.set_postfix(loss=f"{window:.4f}")
            save()
            if tol is not None and abs(previous - window) < tol:
                break
            previous = window
    bar.close()
    model.eval()
    result.seconds = time.perf_counter() - start
    return result


def _fusable(model) -> bool:
    """Adam's fused kernel needs every parameter floating point on a CPU or CUDA device."""
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in model.parameters())


def training_loss(model, elbo: str = "Trace_ELBO", max_plate_nesting: int = 1, num_particles: int = 1,
                  closed_form: bool = True, compile: bool = False):
    """What :func:`fit` minimises, as ``loss(batch, num_data=None)``: the model's closed-form
    ``elbo_loss`` where it has one (and ``closed_form``), else Pyro's ``differentiable_loss``."""
    if closed_form and num_particles == 1 and model.has_elbo_loss:
        return torch.compile(model.elbo_loss) if compile else model.elbo_loss
    if compile:
        raise ValueError(f"compile needs a closed-form elbo_loss, which {type(model).__name__} lacks "
                         "(or closed_form=False / num_particles > 1 was asked for)")
    pyro_loss = make_elbo(elbo, max_plate_nesting, num_particles).differentiable_loss
    return lambda batch, **kwargs: pyro_loss(model.model, model.guide, batch, **kwargs)


def _scheduler(optimizer, lr: float, lr_decay, start: int):
    """LambdaLR with ``lr * lr_decay(step)``, counting from ``start`` (a resumed run's step)."""
    if lr_decay is None:
        return None
    for group in optimizer.param_groups:
        group["lr"] = lr  # a restored optimizer carries the decayed rate; LambdaLR scales from lr
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_decay(start + step))


def _loss(loss_fn, model, batch, kwargs, step, checkpoint) -> torch.Tensor:
    """The loss; after the first step, a distribution rejecting its (NaN) arguments under
    validation means training diverged, and becomes :class:`TrainingDiverged`."""
    try:
        return loss_fn(batch, **kwargs)
    except ValueError as err:
        finite = all(torch.isfinite(p).all() for p in model.parameters())
        if step == 0 or (finite and "invalid values" not in str(err)):
            raise
        kept = f"; the last good checkpoint is kept at {checkpoint}" if checkpoint else ""
        raise TrainingDiverged(
            f"parameters became non-finite before step {step + 1}; lower the learning rate (--lr) "
            f"or clip gradients (--clip-norm){kept}"
        ) from err


def _guard(values: list[float], result: TrainResult, checkpoint) -> None:
    for offset, value in enumerate(values):
        if not math.isfinite(value):
            kept = f"; the last good checkpoint is kept at {checkpoint}" if checkpoint else ""
            raise TrainingDiverged(
                f"loss became {value} at step {result.step - len(values) + offset + 1}; "
                f"lower the learning rate (--lr) or clip gradients (--clip-norm){kept}"
            )


def _restore(checkpoint, model, optimizer) -> tuple[int, list[float]]:
    if not checkpoint:
        raise ValueError("resume needs a checkpoint path")
    state = load_checkpoint(checkpoint)
    model.load_state_dict(state["model_state"])
    optimizer.load_state_dict(state["optimizer_state"])
    torch.set_rng_state(state["rng_state"])
    return state["step"], list(state["losses"])


@torch.no_grad()
def neg_elbo(model, x: torch.Tensor, elbo: str = "Trace_ELBO", max_plate_nesting: int = 1,
             chunk: int = 10_000) -> float:
    """Single-sample −ELBO of ``model`` on ``x`` in nats per data point (the training objective)."""
    loss_fn = make_elbo(elbo, max_plate_nesting).loss
    return sum(loss_fn(model.model, model.guide, x[i:i + chunk]) for i in range(0, len(x), chunk)) / len(x)
