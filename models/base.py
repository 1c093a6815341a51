"""The contract every zoo model follows.

A zoo model is a ``torch.nn.Module`` that owns all of its parameters (generative and
variational) as ``nn.Parameter``s, and exposes plain Pyro programs:

* ``model(x, num_data=None)`` -- the generative model p(x, z). Every data point lives in one
  ``pyro.plate(DATA_PLATE, ...)`` at ``dim=-1`` (use :meth:`ZooModel.data_plate`); latent
  variables that are not per data point ("global" latents) sit outside it.
* ``guide(x, num_data=None)`` -- the variational family q(z | x), with the same sample sites as
  the model's latent sites (sites the model enumerates are absent from the guide).
* ``sample(n)`` -- ``n`` ancestral draws of x, a tensor of shape ``(n, *event_shape)``.

What else a model can do is declared in its :class:`Capabilities` (``model.capabilities``), never
discovered with ``hasattr``: ``exact_log_prob(x)`` (shape ``(N,)``, log p(x) per data point),
``exact_posterior(x)``, ``answer(query)`` (exact queries), ``elbo_loss(x, num_data)`` (the
training objective in closed form, an opt-in fast path) and ``kl_per_dim(x)`` /
``active_units(x)``. Always present: ``local_pair()`` (a model/guide pair with only
per-data-point latents, used by the importance-sampling estimators), ``figures(data, out_dir)``
and ``metrics(data)``.

A zoo model owns its parameters as ``nn.Parameter`` s; ``inference.train.fit`` trains any Pyro
program (``pyro.param``, ``PyroModule``, AutoGuides) as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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


class DataError(ValueError):
    """Data that a model cannot take (wrong shape, dtype, NaN, missing files)."""


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


class ZooModel(nn.Module):
    """Base class of the zoo's models; see the module docstring for the contract."""

    #: shape of one data point, e.g. ``(784,)``; set by each model's ``__init__``.
    event_shape: tuple = ()
    #: dtype the data must have (float for densities, long for discrete variables).
    data_dtype: torch.dtype = torch.float32
    #: what this model offers; see :class:`Capabilities`
    capabilities: Capabilities = Capabilities()

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

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Applied to every training minibatch (e.g. dynamic binarisation); identity by default."""
        return x

    def local_pair(self):
        """(model, guide) whose latents are all per data point; used for log p(x) estimates."""
        return self.model, self.guide

    def exact_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) per data point, shape ``(N,)``; where ``capabilities.exact_log_prob``."""
        raise NotImplementedError(f"{type(self).__name__} has no exact log p(x)")

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

    def figures(self, data: DataSplit, out_dir: Path) -> dict[str, Path]:
        """Model-specific figures written under ``out_dir``; returns {title: path}."""
        return {}

    def metrics(self, data: DataSplit) -> dict:
        """Model-specific metrics (JSON-serialisable) on ``data``."""
        return {}

    def check_data(self, x: torch.Tensor) -> None:
        """Raise :class:`DataError` with a one-sentence fix if ``x`` does not fit this model."""
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
