"""Shared test set-up: fixed seed, empty param store and validation on for every test.

Set ``ZOO_TEST_DEVICE=cuda`` to rerun the whole suite on a GPU, and ``ZOO_TEST_SEED=s`` to rerun
it under other random draws: every random stream of a test is ``SEED + n`` (``n`` < 1000 names the
stream inside the test), ``SEED = 1000 s``, so seed 0 is the default run and every other seed
gives every stream fresh draws. Tests whose assertions depend on random draws are marked
``statistical``; ``make test-seeds`` (``python -m tests.seed_sweep``) reruns them, and every
notebook check, under 20 other seeds and prints how often each passed.
"""

from __future__ import annotations

import os

import matplotlib
import pyro
import pytest
import torch

matplotlib.use("Agg")

TEST_DEVICE = torch.device(os.environ.get("ZOO_TEST_DEVICE", "cpu"))
#: the base of every random stream in the tests: ``SEED + n`` is a test's n-th stream
SEED = 1000 * int(os.environ.get("ZOO_TEST_SEED", "0"))

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def agrees_as_lower_bound(estimate, exact, se, bias=0.0, sigmas: float = 4.0, rounding: float = 0.0):
    """Whether a stochastic lower bound (IS, IWAE, AIS: E[estimate] <= exact) agrees with the exact
    value: not above it by more than ``sigmas`` standard errors, nor below it by more than ``sigmas``
    standard errors plus ``bias``, its known or measured bias; ``rounding`` widens both sides (float
    rounding where the SE is 0). Floats or tensors (elementwise)."""
    return (estimate <= exact + sigmas * se + rounding) & (estimate >= exact - bias - sigmas * se - rounding)


def log_mean_bias(se, num_data: int = 1):
    """The bias of log p̂, the log of a mean of unbiased weights, by the delta method:
    E[log p̂] = log p - SE^2 / 2 (SE of log p̂); for a mean over ``num_data`` points whose SE is ``se``
    (sqrt(sum_n SE_n^2) / N) the bias is mean_n SE_n^2 / 2 = N se^2 / 2. Valid where the weights have
    finite variance (k̂ < 0.5)."""
    return num_data * se**2 / 2


@pytest.fixture(autouse=True)
def _pyro_state():
    pyro.set_rng_seed(SEED)
    pyro.clear_param_store()
    with pyro.validation_enabled(True):
        yield


@pytest.fixture
def one_thread():
    """One intra-op thread: SVI on small tensors is dominated by per-op overhead, and on a busy
    2-core machine a second thread mostly waits at barriers (measured 5-25x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def device() -> torch.device:
    return TEST_DEVICE
