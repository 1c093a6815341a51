"""The HMM (models/hmm): forward algorithm vs Pyro's DiscreteHMM, forward-backward and Viterbi vs
brute-force enumeration of every state path, importance sampling with the states summed by
enumeration, the data sets and bad input."""

from __future__ import annotations

import itertools

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceEnum_ELBO

from pyro_zoo.inference.importance import estimate_log_likelihood, log_weights
from pyro_zoo.inference.sbc import sbc
from pyro_zoo.inference.train import fit_model
from pyro_zoo.models import DataError
from pyro_zoo.models.hmm import HMM, SPEC, HMMConfig, forward, load_data, posterior_marginals, viterbi
from pyro_zoo.models.hmm.model import check_sequence_memory


def random_factors(num_seq, length, k, generator, symbols=None):
    """Random log pi, log A and emission log-likelihoods (N, T, K) in float64, with the emission
    distribution (Normal or Categorical, batch (K,)) and data x (N, T)."""
    log_pi = torch.rand(k, generator=generator, dtype=torch.float64).add(0.1).log().log_softmax(-1)
    log_a = torch.rand(k, k, generator=generator, dtype=torch.float64).add(0.1).log().log_softmax(-1)
    if symbols is None:
        emission = dist.Normal(torch.randn(k, generator=generator, dtype=torch.float64),
                               torch.rand(k, generator=generator, dtype=torch.float64) + 0.3)
        x = torch.randn(num_seq, length, generator=generator, dtype=torch.float64)
    else:
        emission = dist.Categorical(torch.rand(k, symbols, generator=generator, dtype=torch.float64) + 0.1)
        x = torch.randint(symbols, (num_seq, length), generator=generator)
    return log_pi, log_a, emission.log_prob(x.unsqueeze(-1)), emission, x


def discrete_hmm(log_pi, log_a, emission, length):
    """Pyro's DiscreteHMM of the same chain: its initial state is one step before the first
    observation, so the first transition's rows are all log pi."""
    transitions = log_a.expand(length, *log_a.shape).clone()
    transitions[0] = log_pi
    return dist.DiscreteHMM(torch.zeros_like(log_pi), transitions, emission)


def brute_force(log_pi, log_a, log_e):
    """log p(x, z) for every path z of one sequence (log_e (T, K)): (paths (K^T, T), log joints)."""
    length, k = log_e.shape
    paths = torch.tensor(list(itertools.product(range(k), repeat=length)))
    steps = torch.arange(length)
    log_joint = log_pi[paths[:, 0]] + log_e[steps, paths].sum(-1)
    log_joint = log_joint + log_a[paths[:, :-1], paths[:, 1:]].sum(-1)
    return paths, log_joint


@pytest.mark.parametrize("symbols", [None, 5], ids=["gaussian", "categorical"])
def test_forward_matches_pyro_discrete_hmm(symbols):
    generator = torch.Generator().manual_seed(1)
    log_pi, log_a, log_e, emission, x = random_factors(6, 40, 3, generator, symbols)
    ours = forward(log_pi, log_a, log_e)[:, -1].logsumexp(-1)
    pyros = discrete_hmm(log_pi, log_a, emission, x.shape[1]).log_prob(x)
    torch.testing.assert_close(ours, pyros, rtol=0, atol=1e-5)


def test_marginals_and_viterbi_match_brute_force():
    generator = torch.Generator().manual_seed(2)
    log_pi, log_a, log_e, _, _ = random_factors(3, 5, 3, generator)
    marginals, paths_found = posterior_marginals(log_pi, log_a, log_e), viterbi(log_pi, log_a, log_e)
    for n in range(3):
        paths, log_joint = brute_force(log_pi, log_a, log_e[n])
        torch.testing.assert_close(forward(log_pi, log_a, log_e)[n, -1].logsumexp(-1), log_joint.logsumexp(0))
        weights = (log_joint - log_joint.logsumexp(0)).exp()
        exact = torch.stack([weights @ (paths == k).double() for k in range(3)], -1)  # (T, K)
        torch.testing.assert_close(marginals[n], exact, rtol=0, atol=1e-10)
        assert torch.equal(paths_found[n], paths[log_joint.argmax()])


@pytest.mark.parametrize("emission", ["gaussian", "categorical"])
def test_model_exact_log_prob_is_pyros_at_the_point_estimate(emission):
    data = load_data("train", data="synthetic" if emission == "gaussian" else "synthetic-categorical",
                     smoke=True)
    model = SPEC.build(SPEC.resolve(smoke=True, data=data)).double()
    x = data.x if emission == "categorical" else data.x.double()
    params = model.point_estimate()
    emission_dist = model.emission_dist(params, torch.arange(model.num_states))
    reference = discrete_hmm(params["initial"].log(), params["transition"].log(), emission_dist, x.shape[1])
    torch.testing.assert_close(model.exact_log_prob(x), reference.log_prob(x), rtol=0, atol=1e-5)


def test_summed_importance_weights_are_the_exact_value_and_pyros_enumerated_elbo():
    """With the states enumerated, every importance weight is log p(x | theta) exactly (no
    variance), and TraceEnum_ELBO of the local program with an empty guide is -sum of it."""
    data = load_data("test", smoke=True)
    model = SPEC.build(SPEC.resolve(smoke=True, data=data)).double()
    x = data.x.double()
    local_model, local_guide = model.local_pair()
    exact = model.exact_log_prob(x)
    log_w = log_weights(local_model, local_guide, x, 3)
    torch.testing.assert_close(log_w, exact.expand(3, -1), rtol=0, atol=1e-8)
    result = estimate_log_likelihood(local_model, local_guide, x, 50, psis=False)
    assert result.log_px_se.max() < 1e-6
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(local_model, lambda x: None, x)
    assert loss == pytest.approx(-exact.sum().item(), abs=1e-6)


def test_training_recovers_the_states_of_the_synthetic_data(one_thread):
    """SVI with the states enumerated recovers the two regimes: Viterbi at the guide's median
    labels over 90% of the test steps as the true states do (classifying each step alone with the
    true parameters errs on Phi(-1 / 0.6) = 4.8% of steps; Viterbi, using the chain, does better)."""
    train, test = load_data("train", smoke=True), load_data("test", smoke=True)
    model = SPEC.build(SPEC.resolve(smoke=True, data=train))
    fit_model(model, train.x[:8], objective="TraceEnum_ELBO", steps=100, lr=0.05, progress=False)
    accuracy = model.metrics(test)["viterbi_accuracy"]["value"]
    assert accuracy > 0.9


def test_gdp_growth_ships_with_statsmodels():
    train, test = load_data("train", data="gdp"), load_data("test", data="gdp")
    assert train.x.shape == test.x.shape == (1, 101)
    assert abs(train.x.mean()) < 1e-5 and abs(train.x.std(unbiased=False) - 1) < 1e-4
    assert SPEC.resolve(data=train).length == 101


def test_bad_sequences_are_refused(tmp_path):
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("1,2,3\n4,5\n6,7,8\n")
    with pytest.raises(DataError, match="unequal lengths .2 to 3 steps"):
        load_data("train", data=str(ragged))
    model = HMM(HMMConfig(length=3))
    with pytest.raises(DataError, match="NaN"):
        model.check_data(torch.tensor([[0.0, float("nan"), 1.0]]))
    with pytest.raises(DataError, match=r"T = 1000000000 steps .* need about [\d.]+ GiB"):
        check_sequence_memory(1, 10**9, 2)
    categorical = HMM(HMMConfig(length=3, emission="categorical", num_symbols=3))
    with pytest.raises(DataError, match="symbols 0..2"):
        categorical.check_data(torch.tensor([[0, 1, 3]]))


def test_sbc_ranks_every_global_latent(one_thread):
    """SBC runs on the HMM's global latents (states enumerated in each refit): one rank per scalar
    of initial, transition, loc_base, loc_gaps and scales, each in 0..L."""
    template = torch.zeros(3, 6)

    def short_fit(model, x):
        fit_model(model, x, objective="TraceEnum_ELBO", steps=10, lr=0.05, progress=False)

    result = sbc(lambda: HMM(HMMConfig(length=6)), template, num_replications=2, num_draws=9, bins=2,
                 fit_guide=short_fit)
    assert set(result.ranks) == {"initial[0]", "initial[1]", "transition[0, 0]", "transition[0, 1]",
                                 "transition[1, 0]", "transition[1, 1]", "loc_base", "loc_gaps[0]",
                                 "scales[0]", "scales[1]"}
    assert all(len(r) == 2 and r.min() >= 0 and r.max() <= 9 for r in result.ranks.values())
    pyro.clear_param_store()
