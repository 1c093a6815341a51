"""Pieces the image models share: the MLP builder and the Bernoulli pixel likelihood.

``mlp`` builds the encoders and decoders of the VAE family; :class:`BernoulliPixels` is the
likelihood of binarised images, ``prod_d Bernoulli(x_d | sigmoid(l_d))``; :func:`binarized`
gives the fixed binary version of grey images that evaluation uses.
"""

from __future__ import annotations

import logging

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import constraints

from models import data as image_data

ACTIVATIONS = {"softplus": nn.Softplus, "relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}
#: the floor added to Gaussian guide scales, softplus(.) + MIN_SCALE
MIN_SCALE = 1e-4


def mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """Linear layers between consecutive ``sizes``, ``activation`` after each (last included)."""
    layers = []
    for size_in, size_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(size_in, size_out), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers)


def bernoulli_log_prob(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """sum_d [x_d l_d - softplus(l_d)] = sum_d log Bernoulli(x_d | sigmoid(l_d)), shape (...,)."""
    return (value * logits - F.softplus(logits)).sum(-1)


_fused_log_prob = None


def _fused_bernoulli_log_prob(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """:func:`bernoulli_log_prob` as one compiled kernel (one read of the logits, no temporaries);
    falls back to eager PyTorch where ``torch.compile`` cannot build (e.g. no C++ compiler)."""
    global _fused_log_prob
    if _fused_log_prob is None:
        if not torch.cuda.is_available():  # a CUDA build of torch on a CPU machine logs this at compile
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        _fused_log_prob = torch.compile(bernoulli_log_prob, dynamic=True)
    try:
        return _fused_log_prob(logits, value)
    except Exception:  # torch raises backend-specific types when it cannot compile
        _fused_log_prob = bernoulli_log_prob
        return bernoulli_log_prob(logits, value)


class BernoulliPixels(dist.TorchDistribution):
    """Independent Bernoulli pixels with logits ``l``: batch shape ``l.shape[:-1]``, event (D,).

    The density of ``Bernoulli(logits=l).to_event(1)``. Without autograd (importance sampling,
    evaluation) the log-density runs as one fused compiled kernel, which avoids the image-sized
    temporaries per particle of torch's ``binary_cross_entropy_with_logits``
    (benchmarks/RESULTS.md, the importance-sampling section).
    """

    arg_constraints = {"logits": constraints.real}
    support = constraints.independent(constraints.boolean, 1)

    def __init__(self, logits: torch.Tensor, validate_args=None):
        self.logits = logits
        super().__init__(logits.shape[:-1], logits.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return BernoulliPixels(self.logits.expand(torch.Size(batch_shape) + self.event_shape))

    def sample(self, sample_shape=()):
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            return torch.bernoulli(torch.sigmoid(self.logits).expand(shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        if torch.is_grad_enabled():
            return bernoulli_log_prob(self.logits, value)
        return _fused_bernoulli_log_prob(self.logits, value)


def binarized(x: torch.Tensor) -> torch.Tensor:
    """``x`` when it is already binary, else its fixed binarisation (:func:`models.data.binarize`)."""
    return x if bool(((x == 0) | (x == 1)).all()) else image_data.binarize(x.cpu()).to(x.device)


__all__ = ["ACTIVATIONS", "BernoulliPixels", "MIN_SCALE", "bernoulli_log_prob", "binarized", "mlp"]
