"""The contract every zoo model follows.

A zoo model is a ``torch.nn.Module`` that owns all of its parameters (generative and
variational) as ``nn.Parameter``s, and exposes plain Pyro programs:

* ``model(*inputs)`` -- the generative model p(x, z), or p(x, z | y) for ``inputs`` ``("x", "y")``
  (declared in :attr:`ZooModel.inputs`; ``("x",)`` by default). Every data point lives in one
  ``pyro.plate(DATA_PLATE, ...)`` at ``dim=-1`` (use :meth:`ZooModel.data_plate`); latent
  variables that are not per data point ("global" latents) sit outside it.
* ``guide(*inputs)`` -- the variational family q(z | x), with the same sample sites as
  the model's latent sites (sites the model enumerates are absent from the guide).

What else a model can do is declared in its :class:`Capabilities` (``model.capabilities``), never
discovered with ``hasattr``: ``sample(n)`` (``n`` ancestral draws of x, shape
``(n, *event_shape)``; on by default), ``exact_log_prob(x)`` (shape ``(N,)``, log p(x) per data
point), ``exact_posterior(x)``, ``answer(query)`` (exact queries), ``elbo_loss(x, num_data)`` (the
training objective in closed form, an opt-in fast path), ``kl_per_dim(x)`` /
``active_units(x)``, ``exact_global_posterior(*inputs)``, and whether log p(x) per data point is
estimated by importance sampling (on by default; off for models whose latents are global). Always
present: ``local_pair()`` (a model/guide pair with only per-data-point latents, used by the
importance-sampling estimators) and ``metrics(data)``. Figures are drawn by the spec's ``figures``
(a model folder's ``figures.py``), not by the model.

A zoo model owns its parameters as ``nn.Parameter`` s, except a plain Pyro program wrapped by
:class:`pyro_zoo.models.program.PyroProgram`, whose ``pyro.param`` s and AutoGuide parameters live in the Pyro
param store (a checkpoint holds both); ``pyro_zoo.inference.train.fit`` trains any Pyro program.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pyro
import torch
from torch import nn

#: the name of the plate over data points, in every model and in ``inference`` (minibatch scaling,
#: per-data-point log-likelihoods)
DATA_PLATE = "data"


@dataclass(frozen=True)
class Capabilities:
    """What a model offers beyond ``model``/``guide``/``sample``, declared by the model."""

    #: ``exact_log_prob(x)``: exact log p(x) per data point
    exact_log_prob: bool = False
    #: ``exact_posterior(x)``: the exact posterior of the local latents
    exact_posterior: bool = False
    #: ``answer(text)``: exact probability queries (``zoo query``)
    queries: bool = False
    #: ``elbo_loss(x, num_data)``: the training objective in closed form (opt-in fast path)
    closed_form_loss: bool = False
    #: ``kl_per_dim(x)`` and ``active_units(x)`` of its latent code
    latent_usage: bool = False
    #: ``sample(n)``: ancestral draws of the data (a plain program may have no sampler)
    samples: bool = True
    #: log p(x) per data point by importance sampling over ``local_pair()``; False where the latents
    #: are global (shared by all data points): the report then compares posteriors instead
    importance_sampling: bool = True
    #: ``exact_global_posterior(*inputs)``: {site: exact posterior distribution} of the global latents
    exact_global_posterior: bool = False
    #: ``exact_log_evidence(*inputs)``: log p(data) of the whole data set, global latents integrated out
    #: (for models whose latents are global; the report then scores IS and AIS of the evidence)
    exact_evidence: bool = False
    #: data points are sequences (N, T, ...) and the model scores any prefix x[:, :t] of them: the
    #: eval report then gives each estimator's error against the exact value as T grows
    sequences: bool = False


class DataError(ValueError):
    """Data that a model cannot take (wrong shape, dtype, NaN, missing files)."""


def check_fits_memory(need: int, what: str, fix: str) -> None:
    """Raise :class:`DataError` when ``need`` bytes exceed a quarter of the available memory; the
    sentence reads "{what} need about X GiB ..., more than the Y GiB at hand; {fix}"."""
    have = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    if need > have:
        raise DataError(f"{what} need about {need / 2**30:.1f} GiB, more than the {have / 2**30:.1f} GiB at "
                        f"hand; {fix}")


@dataclass
class DataSplit:
    """One split of a data set: ``x`` of shape ``(N, *event_shape)``, optional labels ``y`` (N,)."""

    x: torch.Tensor
    y: torch.Tensor | None = None
    source: str = ""
    info: dict = field(default_factory=dict)

    def to(self, device) -> DataSplit:
        y = None if self.y is None else self.y.to(device)
        return DataSplit(self.x.to(device), y, self.source, self.info)

    def inputs(self, names: tuple[str, ...] = ("x",)) -> tuple[torch.Tensor, ...]:
        """The tensors a model takes, in order: ``names`` is the model's declared
        :attr:`ZooModel.inputs`, e.g. ``("x", "y")`` for p(x | y) gives ``(x, y)``."""
        missing = [name for name in names if getattr(self, name, None) is None]
        if missing:
            raise DataError(f"this model takes {', '.join(names)} but the data split has no "
                            f"{', '.join(missing)}; load a data set that provides them")
        return tuple(getattr(self, name) for name in names)

    def head(self, n: int) -> DataSplit:
        """The first ``n`` data points."""
        y = None if self.y is None else self.y[:n]
        return DataSplit(self.x[:n], y, self.source, self.info)


class ZooModel(nn.Module):
    """Base class of the zoo's models; see the module docstring for the contract."""

    #: shape of one data point, e.g. ``(784,)``; set by each model's ``__init__``.
    event_shape: tuple = ()
    #: dtype the data must have (float for densities, long for discrete variables).
    data_dtype: torch.dtype = torch.float32
    #: what this model offers; see :class:`Capabilities`
    capabilities: Capabilities = Capabilities()
    #: the :class:`DataSplit` fields ``model``/``guide`` take, in order: ``("x",)``, or e.g.
    #: ``("x", "y")`` for a model of p(x | y) (declared, so shared code passes ``data.inputs(names)``)
    inputs: tuple[str, ...] = ("x",)

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    def data_plate(self, x: torch.Tensor, num_data: int | None = None):
        """The plate over data points (dim -1), scaled to ``num_data`` for minibatches."""
        if num_data is None or num_data == x.shape[0]:
            return pyro.plate(DATA_PLATE, x.shape[0], dim=-1)
        subsample = torch.arange(x.shape[0], device=x.device)
        return pyro.plate(DATA_PLATE, num_data, subsample=subsample, dim=-1)

    def model(self, x: torch.Tensor, num_data: int | None = None):
        raise NotImplementedError

    def guide(self, x: torch.Tensor, num_data: int | None = None):
        raise NotImplementedError

    def sample(self, n: int) -> torch.Tensor:
        raise NotImplementedError

    def preprocess(self, *inputs: torch.Tensor):
        """Applied to every training minibatch of :attr:`inputs` (e.g. dynamic binarisation);
        identity by default. Returns a tensor for one input, a tuple for several."""
        return inputs[0] if len(inputs) == 1 else inputs

    def local_pair(self):
        """(model, guide) whose latents are all per data point; used for log p(x) estimates."""
        return self.model, self.guide

    def exact_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) per data point, shape ``(N,)``; where ``capabilities.exact_log_prob``."""
        raise NotImplementedError(f"{type(self).__name__} has no exact log p(x)")

    def exact_log_evidence(self, *inputs: torch.Tensor) -> float:
        """log p(data) of the whole data set; where ``capabilities.exact_evidence``."""
        raise NotImplementedError(f"{type(self).__name__} has no exact evidence")

    def exact_global_posterior(self, *inputs: torch.Tensor) -> dict:
        """{site name: exact posterior distribution of that global latent}; where
        ``capabilities.exact_global_posterior``."""
        raise NotImplementedError(f"{type(self).__name__} has no exact posterior of global latents")

    def elbo_loss(self, x: torch.Tensor, num_data: int | None = None) -> torch.Tensor:
        """-ELBO of ``model``/``guide`` on the batch ``x``, summed and scaled by ``num_data / len(x)``.

        Where ``capabilities.closed_form_loss``: the spec's Pyro objective computed in plain
        torch, used only when asked (``fit_model(..., fast=True)``, ``zoo train --fast``). Its
        expectation must equal the Pyro objective on the same program; ``tests/test_contract.py``
        checks that for every model that declares it.
        """
        raise NotImplementedError(f"{type(self).__name__} has no closed-form ELBO")

    @staticmethod
    def batch_scale(x: torch.Tensor, num_data: int | None) -> float:
        """num_data / len(x): the factor that makes a minibatch sum estimate the full-data sum."""
        return 1.0 if num_data is None else num_data / x.shape[0]

    def metrics(self, data: DataSplit) -> dict:
        """Model-specific metrics (JSON-serialisable) on ``data``."""
        return {}

    def check_inputs(self, inputs: tuple) -> None:
        """:meth:`check_data` on the declared :attr:`inputs`: the tensor itself for one input (so a
        model's own ``check_data(x)`` sees a tensor), the tuple for several."""
        self.check_data(inputs[0] if len(inputs) == 1 else tuple(inputs))

    def check_data(self, x) -> None:
        """Raise :class:`DataError` with a one-sentence fix if ``x`` does not fit this model.

        ``x`` is the first input, or the tuple of all :attr:`inputs` (then the first is checked
        as here and the others must have as many rows)."""
        if isinstance(x, tuple):
            if len(x) != len(self.inputs):
                raise DataError(f"this model takes {len(self.inputs)} tensors ({', '.join(self.inputs)}), "
                                f"got {len(x)}")
            rows = {t.shape[0] for t in x if isinstance(t, torch.Tensor) and t.dim()}
            if len(rows) > 1:
                raise DataError(f"the inputs {', '.join(self.inputs)} have different numbers of rows "
                                f"{sorted(rows)}; pass one row per data point in each")
            x = x[0]
        if not isinstance(x, torch.Tensor):
            raise DataError(f"data must be a torch.Tensor, got {type(x).__name__}")
        if tuple(x.shape[1:]) != tuple(self.event_shape):
            raise DataError(
                f"data has shape {tuple(x.shape)} but this model takes (N, "
                f"{', '.join(map(str, self.event_shape))}); reshape the data or build the "
                "model with matching dimensions"
            )
        if x.shape[0] == 0:
            raise DataError("data is empty; pass at least one data point")
        if self.data_dtype.is_floating_point != x.dtype.is_floating_point:
            kind = "floating-point" if self.data_dtype.is_floating_point else "integer"
            raise DataError(f"data has dtype {x.dtype} but this model takes {kind} data; convert it")
        if x.dtype.is_floating_point and not torch.isfinite(x).all():
            raise DataError("data contains NaN or infinite values; remove or impute them first")
