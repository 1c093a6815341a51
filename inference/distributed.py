r"""Training and evaluation on several processes: ``torchrun ... -m pyro_zoo train|eval``.

One code path for one process and for many: without a launcher (no ``WORLD_SIZE`` > 1 in the
environment) every function here is the identity and no process group exists; under ``torchrun``
(or ``srun torchrun``) the first call of :func:`world` joins the process group the launcher
describes, gloo on a CPU and NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``).

Training (:class:`Replicas`, used by :func:`pyro_zoo.inference.train.fit`). Every rank holds the whole
data set and the same parameters. The epoch's permutation comes from the global torch RNG, which
every rank starts from rank 0's state (broadcast once, after a resume too) and consumes alike
(only by ``torch.randperm``), so every rank draws the same permutation with no communication;
rank r of W takes the r-th contiguous block of the global batch of B rows
(:meth:`Replicas.shard`, B/W rows each) and scales the sites of the data plate by
N / (B/W) = N W / B. Each rank's loss is then

    L_r = (N W / B) sum_{i in block r} l_i + g        (g: terms outside the data plate),

and the mean over ranks, (N / B) sum_{i in batch} l_i + g, is the single-process loss at batch B
over the same rows; the same holds for its gradient, which is what is averaged:

* the parameters of the ``nn.Module`` s behind model and guide (a zoo model, a ``PyroModule``,
  an AutoGuide, the owner of bound methods) are averaged by ``DistributedDataParallel`` around a
  module whose forward is the differentiable loss (:class:`_Objective`, the idea of Pyro's
  ``ELBO.__call__(model, guide)`` -> ``ELBOModule``, which registers only model and guide
  themselves as sub-modules and so misses bound methods' owners and closed-form losses);
* parameters DDP does not see -- ``pyro.param`` s in Pyro's param store outside any module,
  module parameters the first step did not reach, and every parameter when the ELBO computes its
  own gradients (``TraceGraph_ELBO``, ``RenyiELBO``: ``loss_and_grads`` runs backward inside
  the forward, which DDP's hooks do not allow) -- are averaged by one ``all_reduce`` over a flat
  buffer of their gradients after backward (a missing gradient counts as zero).

Rank 0's parameters are broadcast once before the first step, so replicas start, and stay, equal
(same averaged gradient, same clipping, same Adam step). The latents' and preprocessing's noise
comes from a stream of the rank's own, seeded per step by (noise seed, step, rank, purpose)
(:meth:`Replicas.stream`), so ranks draw independent noise while the shared global stream keeps
serving permutations; a resume (same world size) is exact, because the global RNG and the noise
seed are in the checkpoint. Losses are averaged over ranks at each log point, and the NaN guard's
verdict on the parameters is an all-reduced flag, so every rank stops at the same step with the
same message. Rank 0 alone writes checkpoints and reports.

Evaluation (:func:`map_chunks`): data points are cut into chunks planned from the whole data
set (the same on every rank count), ranks take contiguous runs of chunks, each chunk draws from
its own generator seeded by (seed, first data index), and the per-chunk results are gathered in
order on every rank. Per-data-point estimates are therefore identical whatever the number of
ranks. Importance sampling uses it; an annealed importance sampler (AIS) plugs in the same way:
``map_chunks(lambda lo, hi: ais_chunk(data[lo:hi]), N, chunk, seed=seed)``.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from pyro_zoo.inference.settings import SettingError


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of one job (rank 0 of 1 without a launcher)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this rank writes checkpoints, reports and progress bars (rank 0)."""
        return self.rank == 0


def launched() -> bool:
    """Whether a launcher (torchrun, srun torchrun) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_device(device: str | torch.device) -> torch.device:
    """``device``, with a bare ``cuda`` made this rank's GPU (``cuda:LOCAL_RANK``) under a launcher."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def _launched_rank() -> int:
    """This process's rank as the launcher set it (0 without a launcher); no process group needed."""
    return int(os.environ.get("RANK", "0")) if launched() else 0


def quiet_unless_main() -> None:
    """Send this process's stdout to the null device unless it is rank 0 (or alone): a
    command-line run under ``torchrun`` prints its result once. Errors (stderr) stay on."""
    if _launched_rank() != 0:
        sys.stdout = open(os.devnull, "w")  # held for the life of the process


def report_error(line: str) -> None:
    """A user error's one line: printed on stderr by rank 0 (or alone), so ``torchrun`` shows it
    once, and written by every rank to the error file torchrun gives it (``TORCHELASTIC_ERROR_FILE``),
    so torchrun's failure summary names it for each rank (an error only one rank meets included)."""
    if _launched_rank() == 0:
        print(line, file=sys.stderr)
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE") if launched() else None
    if error_file:  # the layout of torch.distributed.elastic's ErrorHandler.record_exception, our line as its
        extra = {"py_callstack": line, "timestamp": str(int(time.time()))}  # "traceback"
        with open(error_file, "w") as handle:
            json.dump({"message": {"message": line, "extraInfo": extra}}, handle)


def world(device: str | torch.device | None = None) -> World:
    """This process's :class:`World`; under a launcher the first call joins the process group
    (NCCL when ``device`` is CUDA, else gloo, rendezvous from the launcher's environment)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if not launched():
        return World()
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; run without torchrun")
    device = local_device(device or "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    atexit.register(_leave)
    return world()


def _leave():
    if dist.is_initialized():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    """Where a collective's tensors must live: this rank's GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_true(flag: bool) -> bool:
    """``flag`` and-ed over ranks (one all_reduce; ``flag`` itself with one process)."""
    if not world().size > 1:
        return bool(flag)
    value = torch.tensor(int(bool(flag)), device=_comm_device())
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def mean(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` averaged over ranks (itself with one process)."""
    size = world().size
    if size == 1:
        return tensor
    value = tensor.detach().to(_comm_device(), copy=True)
    dist.all_reduce(value)
    return (value / size).to(tensor.device)


def broadcast(value):
    """Rank 0's ``value`` (any picklable object) on every rank."""
    if world().size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def derive_seed(*parts) -> int:
    """A 63-bit seed from ``parts`` (e.g. (seed, data index)): stable across processes and runs."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device | None = None):
    """Run the block on a torch RNG stream seeded by ``seed`` (CPU and ``device``), restoring the
    global streams afterwards; ``seed=None`` runs it on the global streams."""
    if seed is None:
        yield
        return
    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


# --------------------------------------------------------------------------- evaluation

def map_chunks(fn: Callable[[int, int], object], num_data: int, chunk: int, *, seed: int | None = None,
               device: torch.device | None = None, progress: bool = False) -> list:
    """``[fn(lo, hi) for each chunk [lo, hi) of size chunk]`` in order, on every rank.

    Ranks take contiguous runs of chunks and the results are gathered (``all_gather_object``:
    return CPU tensors). With ``seed``, chunk [lo, hi) runs on a stream seeded by
    ``derive_seed(seed, lo)``, so its result does not depend on which rank ran it; with several
    ranks and no ``seed``, rank 0 draws one from the global stream.
    """
    here = world(device)
    starts = list(range(0, num_data, chunk))
    if here.size > 1 and seed is None:
        seed = broadcast(int(torch.randint(2**62, ())))
    mine = [part.tolist() for part in torch.tensor_split(torch.tensor(starts), here.size)][here.rank]
    results = []
    for lo in tqdm(mine, disable=not (progress and here.main), unit="chunk"):
        with seeded(None if seed is None else derive_seed(seed, lo), device):
            results.append(fn(lo, min(lo + chunk, num_data)))
    if here.size == 1:
        return results
    gathered: list = [None] * here.size
    dist.all_gather_object(gathered, results)
    return [result for part in gathered for result in part]


# --------------------------------------------------------------------------- training

class _Objective(torch.nn.Module):
    """The modules behind model and guide, with the differentiable loss as ``forward`` (what
    DDP wraps: its backward hooks average these modules' gradients)."""

    def __init__(self, modules: dict[str, torch.nn.Module], loss: Callable):
        super().__init__()
        self.parts = torch.nn.ModuleDict(modules)
        self.loss = loss

    def forward(self, batch, scale):
        return self.loss(batch, scale)


class Replicas:
    """What one training run does differently on several ranks; the identity on one.

    ``noise_seed`` seeds the ranks' own noise streams (see the module docstring): rank 0's
    initial torch seed unless a checkpoint restores one.
    """

    def __init__(self, here: World | None = None):
        self.world = here or world()
        self.noise_seed = broadcast(torch.initial_seed()) if self.world.size > 1 else None
        self.ddp = None
        self.averaged: list[torch.Tensor] = []

    @property
    def size(self) -> int:
        return self.world.size

    def check(self, num_data: int, batch_size: int) -> None:
        """Refuse batches with fewer rows than ranks (a rank would get none)."""
        if self.size == 1:
            return
        last = num_data - (-(-num_data // batch_size) - 1) * batch_size
        if min(batch_size, last) < self.size:
            rows, size = min(batch_size, last), self.size
            raise SettingError("batch_size", f"a minibatch of {rows} rows cannot be split over {size} ranks; "
                                             f"choose a `batch_size` of at least {size} whose last batch of "
                                             f"the epoch ({num_data} rows) keeps at least {size} rows")

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous block of the global batch ``rows``."""
        return rows if self.size == 1 else torch.tensor_split(rows, self.size)[self.world.rank]

    def scale(self, num_data: int, global_rows: int) -> float:
        """The data plate's scale N / (B/W), so the mean of the ranks' losses is the batch-B one."""
        return num_data * self.size / global_rows

    def stream(self, step: int, purpose: str):
        """This rank's noise for ``purpose`` at ``step`` (a no-op with one process)."""
        if self.size == 1:
            return contextlib.nullcontext()
        return seeded(derive_seed(self.noise_seed, step, self.world.rank, purpose), _param_device())

    def meta(self) -> dict:
        return {} if self.size == 1 else {"noise_seed": self.noise_seed, "world_size": self.size}

    def restore(self, state: dict) -> None:
        if self.size > 1 and state.get("noise_seed") is not None:
            self.noise_seed = state["noise_seed"]

    def mean_losses(self, losses: torch.Tensor) -> list[float]:
        """The log window's losses averaged over ranks, read back to the host (one sync)."""
        return mean(losses).tolist()

    def all_true(self, flag: bool) -> bool:
        return all_true(flag) if self.size > 1 else flag

    def synchronise(self, step_fn, modules: dict, params: list[torch.Tensor], probe_batch: Callable, scale):
        """``step_fn`` whose backward leaves the gradient averaged over ranks (see the module
        docstring); ``probe_batch()`` and ``scale`` serve one pass finding which module
        parameters the loss reaches (on a stream of its own: the global RNG is untouched)."""
        if self.size == 1:
            return step_fn
        with torch.no_grad():
            for p in params:
                dist.broadcast(p.data, src=0)
        _share_global_rng()
        loss = getattr(step_fn, "loss", None)
        covered: set[int] = set()
        if loss is not None and modules:
            objective = _Objective(modules, loss)
            reached = _reached(loss, [p for _, p in objective.named_parameters()], probe_batch, scale)
            wanted = {id(p) for p in params}
            ignore = [name for name, p in objective.named_parameters()
                      if id(p) not in wanted or id(p) not in reached]
            if len(ignore) < len(list(objective.parameters())):
                objective._ddp_params_and_buffers_to_ignore = ignore
                device = _param_device()
                self.ddp = torch.nn.parallel.DistributedDataParallel(
                    objective, device_ids=[device] if device.type == "cuda" else None)
                covered = {id(p) for name, p in objective.named_parameters() if name not in set(ignore)}
        self.averaged = [p for p in params if id(p) not in covered]
        ddp, averaged, size = self.ddp, self.averaged, self.size

        def step(batch, scale, backward=True):
            if not backward:
                return step_fn(batch, scale, backward=False)
            if ddp is not None:
                value = ddp(batch, scale)
                value.backward()
            else:
                value = step_fn(batch, scale)
            _average_gradients(averaged, size)
            return value

        return step


def _share_global_rng() -> None:
    """Give every rank rank 0's global RNG state (CPU and its own GPU's), so the permutations
    agree even if the ranks were seeded or used differently, or resumed from rank 0's
    checkpoint (whose CUDA states are rank 0's devices')."""
    device = _param_device()
    states = broadcast((torch.get_rng_state(),
                        torch.cuda.get_rng_state(device) if device.type == "cuda" else None))
    torch.set_rng_state(states[0])
    if states[1] is not None:
        torch.cuda.set_rng_state(states[1], device)


def _reached(loss, params: list[torch.Tensor], probe_batch: Callable, scale) -> set[int]:
    """ids of ``params`` that the loss's gradient reaches (one pass on its own RNG stream)."""
    trainable = [p for p in params if p.requires_grad]
    with seeded(derive_seed("probe"), _param_device()), torch.enable_grad():
        grads = torch.autograd.grad(loss(probe_batch(), scale), trainable, allow_unused=True)
    return {id(p) for p, g in zip(trainable, grads, strict=True) if g is not None}


def _average_gradients(params: list[torch.Tensor], size: int) -> None:
    """Average the gradients of ``params`` over ranks with one all_reduce (None counts as zero)."""
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= size
    for p, g in zip(params, flat.split([p.numel() for p in params]), strict=True):
        p.grad = g.view_as(p)


def _param_device() -> torch.device:
    return _comm_device() if dist.is_initialized() else torch.device("cpu")
