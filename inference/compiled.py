"""The Pyro objective traced once and replayed: ``fit(..., compile=True)`` without Pyro's per-step cost.

An eager step of a Pyro ELBO runs model and guide through Pyro's effect handlers, builds two
traces, scales and sums every site's log-density: about a millisecond of Python per step for a
VAE, whatever the batch size. For a program of static structure the tensor operations are the
same at every step, so :class:`CompiledLoss` records them once per batch signature (shapes,
dtypes, devices, the data plate's scale) with ``torch.jit.trace``, the tracer Pyro's own
``JitTrace*_ELBO`` are written for (their code takes the traced path where it would read a value
back to the host), and replays the recorded graph at the following steps: the same operations in
the same order, so the same random numbers, loss and gradients as the eager objective.

Why not Pyro's ``JitTrace_ELBO``/``JitTraceMeanField_ELBO``/``JitTraceEnum_ELBO`` as they are
(pyro-ppl 1.9.2): ``pyro.ops.jit.trace`` passes only param-store parameters into the traced
graph, so a program whose parameters belong to an ``nn.Module`` (every zoo model) fails with
"Cannot insert a Tensor that requires grad as a constant"; it keys the graph on the number of
arguments alone, so the Python numbers a graph holds are frozen at their first values (the zoo's
N / B scale of the data plate: the last, smaller batch of an epoch would be scaled as a full
one); ``JitTraceMeanField_ELBO`` looks for its cached graph under the wrong attribute and traces
again at every call; and ``JitTrace_ELBO.differentiable_loss`` adds the gradient of the loss's
value to the surrogate's (twice the reparametrised gradient). Here the graph's
inputs are every leaf tensor the loss differentiates into (found from its autograd graph, so
modules, ``pyro.param`` s, ``PyroModule`` s and AutoGuides alike), and the key holds the shapes.
The traced bodies are those of Pyro's JIT ELBOs, built on the same ELBO internals.

Static structure is checked, not assumed: the first step of each signature runs eagerly and
records the program's sample sites (name, distribution, shapes, observed, scale); every
``check_every``-th step runs eagerly again and compares; a program that reads a tensor's value in
Python while traced (a data-dependent branch) is refused at tracing. Any of these, a signature
beyond ``MAX_TRACES``, or a graph the tracer cannot record, falls back to the eager objective for
the rest of the run with one logged sentence. What no check can see: a Python number that
changes between checks (a KL-annealing factor computed from the step count) is frozen at its
traced value until the next check notices the site's new scale.
"""

from __future__ import annotations

import logging
import numbers
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyro
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

logger = logging.getLogger(__name__)

#: a replayed objective is checked against an eager run of the program every this many calls
CHECK_EVERY = 100
#: TorchScript's profiling and optimising executor (measured against the plain interpreter in
#: benchmarks/RESULTS.md)
OPTIMIZE = False
#: batch signatures traced at most; a program that keeps changing shape falls back to eager
MAX_TRACES = 8


#: how the tracer's warnings begin where a program reads a tensor's value into Python
READ_BACK = "Converting a tensor to a"


class DataDependent(RuntimeError):
    """A program whose Python reads tensor values while traced."""


@dataclass
class _Graph:
    replay: Callable
    leaves: list[torch.Tensor]
    sites: list[tuple]


class CompiledLoss:
    """``loss(batch, scale)``: the differentiable loss of ``elbo`` on ``model``/``guide`` for the
    tuple of tensors ``batch``, with the data plate scaled by ``scale`` through ``scaled(scale)`` (a
    context manager); traced once per signature and replayed, see the module docstring."""

    def __init__(self, elbo, model, guide, scaled: Callable, check_every: int | None = None):
        self.elbo, self.model, self.guide, self.scaled = elbo, model, guide, scaled
        if not compilable(elbo):
            raise ValueError(f"{type(elbo).__name__} has no traced form; compile covers "
                             f"{', '.join(t.__name__ for t in _BODIES)}")
        self.check_every = check_every or CHECK_EVERY
        self.body = _BODIES[type(elbo)]
        self.graphs: dict[tuple, _Graph] = {}
        self.calls = 0
        self.fallback: str | None = None

    def __call__(self, batch, scale) -> torch.Tensor:
        if self.fallback is not None:
            return self.eager(batch, scale)
        key = _signature(batch, scale)
        graph = self.graphs.get(key)
        self.calls += 1
        if graph is None or self.calls % self.check_every == 0:
            return self.checked(batch, scale, key)
        with torch.jit.optimized_execution(OPTIMIZE):
            return graph.replay(*graph.leaves, *batch)

    def eager(self, batch, scale) -> torch.Tensor:
        with self.scaled(scale):
            return self.elbo.differentiable_loss(self.model, self.guide, *batch)

    def checked(self, batch, scale, key) -> torch.Tensor:
        """An eager step that records the program's sites: traced where the signature is new,
        compared with the traced sites otherwise."""
        with _Sites() as sites:
            value = self.eager(batch, scale)
        graph = self.graphs.get(key)
        if graph is not None:
            if sites.found != graph.sites:
                change = _first_change(graph.sites, sites.found)
                self.fall_back(f"the program's sample sites changed between steps ({change})")
            return value
        if len(self.graphs) == MAX_TRACES:
            self.fall_back(f"the batch signature changed more than {MAX_TRACES} times")
            return value
        leaves = _leaves(value)
        try:
            replay = self.trace(batch, scale, leaves)
        except DataDependent as err:
            self.fall_back(_first_line(err))
            return value
        except RuntimeError as err:  # the tracer's own error type
            self.fall_back(f"torch.jit.trace cannot record it ({_first_line(err)})")
            return value
        self.graphs[key] = _Graph(replay, leaves, sites.found)
        return value

    def trace(self, batch, scale, leaves):
        count = len(leaves)

        def loss(*inputs):
            with self.scaled(scale):
                return self.body(self.elbo, _strict(self.model), _strict(self.guide), inputs[count:])

        cuda = sorted({t.device for t in batch if t.device.type == "cuda"}, key=str)
        with (torch.random.fork_rng(devices=cuda), pyro.validation_enabled(False),
              warnings.catch_warnings()):
            # the ELBO's own host reads (its undifferentiated loss, NaN checks) are discarded here
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", r".*torch\.jit\.trace.* is deprecated", FutureWarning)
            return torch.jit.trace(loss, (*leaves, *batch), check_trace=False)

    def fall_back(self, reason: str) -> None:
        self.fallback = reason
        self.graphs.clear()
        logger.warning("compile: %s; training continues with the uncompiled Pyro objective", reason)


def _trace_elbo(elbo, model, guide, batch):
    """JitTrace_ELBO's body: the loss's value with the surrogate's gradient (JitTrace_ELBO's own
    differentiable_loss adds the gradient of the value too, twice the reparametrised gradient)."""
    value = surrogate = 0.0
    for model_trace, guide_trace in elbo._get_traces(model, guide, batch, {}):
        value = value + guide_trace.log_prob_sum() - model_trace.log_prob_sum()
        surrogate = surrogate + elbo._differentiable_loss_particle(model_trace, guide_trace)[1]
    value, surrogate = value / elbo.num_particles, surrogate / elbo.num_particles
    return value.detach() + (surrogate - surrogate.detach())


def _mean_field_elbo(elbo, model, guide, batch):
    """JitTraceMeanField_ELBO's body (value and gradient are those of its surrogate)."""
    loss = 0.0
    for model_trace, guide_trace in elbo._get_traces(model, guide, batch, {}):
        loss = loss + elbo._differentiable_loss_particle(model_trace, guide_trace)[1] / elbo.num_particles
    return loss


def _enum_elbo(elbo, model, guide, batch):
    """TraceEnum_ELBO's differentiable loss reads nothing back but its NaN warning."""
    return elbo.differentiable_loss(model, guide, *batch)


_BODIES = {Trace_ELBO: _trace_elbo, TraceMeanField_ELBO: _mean_field_elbo, TraceEnum_ELBO: _enum_elbo}


def compilable(elbo) -> bool:
    """Whether :class:`CompiledLoss` has a traced form of this ELBO."""
    return type(elbo) in _BODIES


def _strict(program):
    """``program``, refusing (:class:`DataDependent`) to be traced where its own code reads a
    tensor into Python: a data-dependent branch or number, which a replay would freeze. Reads
    inside torch and Pyro are their shape checks (the tracer reports those alike), left to them."""

    def run(*args, **kwargs):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", torch.jit.TracerWarning)
            result = program(*args, **kwargs)
        reads = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)
                 and str(w.message).startswith(READ_BACK) and not _in_libraries(w.filename)]
        if reads:
            where = f"{Path(*Path(reads[0].filename).parts[-2:])}:{reads[0].lineno}"  # folder/file.py
            raise DataDependent(f"the program reads a tensor's value into Python at {where}, "
                                "a value a replay would freeze")
        return result

    return run


def _in_libraries(filename: str) -> bool:
    return any(Path(filename).is_relative_to(Path(package.__file__).parent) for package in (torch, pyro))


def _signature(batch, scale) -> tuple:
    return (tuple((t.shape, t.dtype, t.device) for t in batch), scale, torch.is_grad_enabled())


def _leaves(value: torch.Tensor) -> list[torch.Tensor]:
    """The leaf tensors ``value`` differentiates into, in a fixed (breadth-first) order."""
    leaves, seen, queue = [], set(), deque([value.grad_fn])
    while queue:
        node = queue.popleft()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ == "AccumulateGrad":  # the node that accumulates into a leaf's .grad
            leaves.append(node.variable)
        queue.extend(child for child, _ in node.next_functions)
    return leaves


class _Sites(Messenger):
    """Records (name, distribution, batch and event shape, observed, scale) of every sample site."""

    def __init__(self):
        super().__init__()
        self.found: list[tuple] = []

    def _postprocess_message(self, msg):
        if msg["type"] == "sample" and not site_is_subsample(msg):
            fn, scale = msg["fn"], msg["scale"]
            self.found.append((msg["name"], type(fn).__name__, tuple(fn.batch_shape), tuple(fn.event_shape),
                               msg["is_observed"], scale if isinstance(scale, numbers.Number) else "tensor"))


def _first_change(before: list[tuple], after: list[tuple]) -> str:
    for old, new in zip(before, after, strict=False):
        if old != new:
            return f"site {old[0]!r} was {old[1:]}, now {new[0]!r} {new[1:]}"
    extra, word = (after, "a new") if len(after) > len(before) else (before, "no more")
    return f"{word} site {extra[min(len(before), len(after))][0]!r}"


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
