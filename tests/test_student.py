"""Tests of the student network: exact queries, enumeration, sampling, CPD learning by SVI.

Exact answers are checked against a hand enumeration in plain Python over the Koller–Friedman
tables written out again below (not imported from the model), and against the values quoted in
the issue (6 decimals, so to 1e-6).
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import TraceEnum_ELBO

from pyro_zoo.inference.importance import estimate_log_likelihood
from pyro_zoo.inference.train import fit_model
from pyro_zoo.models import DataError, DataSplit, get_spec
from pyro_zoo.models.student import (
    REPORTED_QUERIES,
    SPEC,
    VARIABLES,
    QueryError,
    StudentConfig,
    StudentNetwork,
    answer,
    evidence_log_prob,
    joint_table,
    load_data,
    max_abs_cpd_error,
    parse_query,
    query,
    swap_intelligence,
    true_cpds,
)
from tests.conftest import SEED, agrees_as_lower_bound, log_mean_bias

P_D = [0.6, 0.4]
P_I = [0.7, 0.3]
P_G = {(0, 0): [0.3, 0.4, 0.3], (0, 1): [0.05, 0.25, 0.7], (1, 0): [0.9, 0.08, 0.02], (1, 1): [0.5, 0.3, 0.2]}
P_L = [[0.1, 0.9], [0.4, 0.6], [0.99, 0.01]]
P_S = [[0.95, 0.05], [0.2, 0.8]]
CARD = (2, 2, 3, 2, 2)
CPD_ENTRIES = 2 + 2 + 12 + 4 + 6
SMALL_OPS = "ignore:TraceEnum_ELBO found no sample sites"


pytestmark = pytest.mark.usefixtures("one_thread")


def hand_p(d, i, g, s, letter):
    return P_D[d] * P_I[i] * P_G[(i, d)][g] * P_S[i][s] * P_L[g][letter]


def hand_prob(event: dict) -> float:
    """Σ p(d, i, g, s, l) over the assignments that agree with ``event`` (index -> value)."""
    return sum(
        hand_p(*v) for v in itertools.product(*map(range, CARD))
        if all(v[k] == value for k, value in event.items())
    )


def train(model, x, phases):
    """SVI with a stepwise-decreasing learning rate: one ``fit`` per (lr, steps) phase."""
    for lr, steps in phases:
        fit_model(model, x, objective="TraceEnum_ELBO", steps=steps, lr=lr, progress=False)


# ---------------------------------------------------------------------------- exact

@pytest.mark.parametrize("source", ["table", "model"])
def test_quoted_values(source):
    truth = StudentNetwork(StudentConfig(init="truth"))
    cpds = true_cpds() if source == "table" else truth.learned_cpds(torch.float64)
    assert abs(query({"L": 1}, cpds=cpds).item() - 0.502336) < 1e-6
    assert abs(query("I", {"G": "C"}, cpds)[1].item() - 0.078947) < 1e-6
    assert abs(query("I", {"G": 2, "S": 1}, cpds)[1].item() - 0.578313) < 1e-6
    assert abs(answer("I | G=C, S=1", cpds)["I=1"] - 0.578313) < 1e-6
    x = torch.tensor([[-1, -1, 0, 1, 1]])
    assert abs(evidence_log_prob(joint_table(cpds), x).item() - (-1.794924)) < 1e-6
    if source == "model":
        assert abs(truth.exact_log_prob(x).item() - (-1.794924)) < 1e-6
        assert abs(SPEC.answer(truth, "I | G=C")["I=1"] - 0.078947) < 1e-6


def test_queries_match_hand_enumeration():
    p_ev = hand_prob({2: 2, 3: 1})
    assert query("I", {"G": "C", "S": 1}).tolist() == pytest.approx(
        [hand_prob({1: i, 2: 2, 3: 1}) / p_ev for i in range(2)], abs=1e-12
    )
    table = query(["L", "D"], {"S": 0})
    for letter, d in itertools.product(range(2), range(2)):
        expected = hand_prob({4: letter, 0: d, 3: 0}) / hand_prob({3: 0})
        assert table[letter, d].item() == pytest.approx(expected, abs=1e-12)
    assert query({"G": "A", "S": 1, "L": 1}).item() == pytest.approx(hand_prob({2: 0, 3: 1, 4: 1}), abs=1e-12)
    assert query({"D": 1}, {"D": 0}).item() == 0.0
    grade = answer("grade | intelligence=1, difficulty=0")
    assert grade == pytest.approx({"G=A": 0.9, "G=B": 0.08, "G=C": 0.02}, abs=1e-12)
    assert answer("P(L=1)") == pytest.approx({"L=1": 0.502336}, abs=1e-12)


def test_reported_queries_are_the_events_their_texts_name():
    """The queries the metrics report, as (event, evidence) and as text, give the hand enumeration."""
    grades = {"A": 0, "B": 1, "C": 2}
    for text, (event, evidence) in REPORTED_QUERIES.items():
        given = {VARIABLES.index(k): grades.get(v, v) for k, v in evidence.items()}
        both = {**given, **{VARIABLES.index(k): grades.get(v, v) for k, v in event.items()}}
        expected = hand_prob(both) / hand_prob(given)
        assert query(event, evidence).item() == pytest.approx(expected, abs=1e-12)
        assert list(answer(text).values()) == pytest.approx([expected], abs=1e-12)


@pytest.mark.parametrize("init", ["truth", "uniform", "random"])
def test_joint_sums_to_one(init):
    model = StudentNetwork(StudentConfig(init=init))
    joint = model.joint()
    assert joint.shape == (2, 2, 3, 2, 2)
    assert joint.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert joint_table(true_cpds()).sum().item() == pytest.approx(1.0, abs=1e-12)


def test_exact_log_prob_with_missing_entries():
    generator = torch.Generator().manual_seed(1)
    x = torch.stack([torch.randint(k, (60,), generator=generator) for k in CARD], -1)
    x[torch.rand(x.shape, generator=generator) < 0.4] = -1
    expected = [math.log(hand_prob({k: v for k, v in enumerate(row) if v >= 0})) for row in x.tolist()]
    got = StudentNetwork(StudentConfig(init="truth")).exact_log_prob(x)
    assert got.shape == (60,)
    assert got.dtype == torch.float32
    assert got.tolist() == pytest.approx(expected, abs=1e-5)
    everything_missing = StudentNetwork(StudentConfig(init="truth")).exact_log_prob(torch.full((2, 5), -1))
    assert everything_missing.tolist() == pytest.approx([0, 0], abs=1e-6)


@pytest.mark.parametrize("pattern", ["random", "hidden_I"])
def test_trace_enum_sums_out_missing_entries_exactly(pattern):
    model = StudentNetwork(StudentConfig(init="random"))
    x = load_data("test", data="hidden_I" if pattern == "hidden_I" else None, smoke=True).x[:500].clone()
    if pattern == "random":
        x[torch.rand(x.shape) < 0.3] = -1
    local_model, local_guide = model.local_pair()
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(local_model, local_guide, x)
    exact = model.exact_log_prob(x).double().sum().item()
    assert -loss == pytest.approx(exact, rel=1e-5)


@pytest.mark.statistical
def test_importance_sampling_with_prior_proposal_matches_exact():
    model = StudentNetwork(StudentConfig(init="truth"))
    x = load_data("test", data="hidden_I", smoke=True).x[:200].clone()
    x[::3, 2] = -1
    local_model, local_guide = model.local_pair()
    result = estimate_log_likelihood(local_model, local_guide, x, num_particles=500, iwae_ks=(1,), psis=False)
    summary = result.summary()
    exact = model.exact_log_prob(x).mean().item()
    se = summary["log_px_se"]
    assert agrees_as_lower_bound(summary["log_px"], exact, se, log_mean_bias(se, len(x)), rounding=1e-6)


# ---------------------------------------------------------------------------- sampling

@pytest.mark.statistical
def test_ancestral_sample_frequencies():
    pyro.set_rng_seed(SEED + 3)
    n = 100_000
    x = StudentNetwork(StudentConfig(init="truth")).sample(n)
    assert x.shape == (n, 5) and x.dtype == torch.long
    cells = torch.zeros(CARD, dtype=torch.float64)
    cells.index_put_(tuple(x.T), torch.ones(n, dtype=torch.float64), accumulate=True)
    for v in itertools.product(*map(range, CARD)):
        p = hand_p(*v)
        se = math.sqrt(p * (1 - p) / n)
        assert abs(cells[v].item() / n - p) < 4 * se, v
    for j, k in enumerate(CARD):
        for value in range(k):
            p = hand_prob({j: value})
            assert abs((x[:, j] == value).double().mean().item() - p) < 4 * math.sqrt(p * (1 - p) / n)


# ---------------------------------------------------------------------------- data

def test_load_data_splits():
    train, test = load_data("train"), load_data("test")
    assert train.x.shape == (20_000, 5) and test.x.shape == (5_000, 5)
    assert train.x.dtype == torch.long
    assert torch.equal(train.x, load_data("train").x)
    assert not torch.equal(train.x[:5000], test.x)
    assert load_data("train", smoke=True).x.shape == (2_000, 5)
    hidden = load_data("train", data="hidden_I").x
    assert (hidden[:, 1] == -1).all()
    assert torch.equal(hidden[:, [0, 2, 3, 4]], train.x[:, [0, 2, 3, 4]])
    StudentNetwork(StudentConfig(init="truth")).check_data(hidden)
    with pytest.raises(DataError, match="unknown student data set"):
        load_data("train", data="nope")
    with pytest.raises(DataError, match="unknown split"):
        load_data("valid")


def test_load_csv(tmp_path):
    path = tmp_path / "students.csv"
    rows = [[0, 1, 2, 1, 0], [1, -1, 0, 1, 1], [0, 0, -1, 0, 0], [1, 1, 1, -1, 1], [0, 0, 0, 0, -1]]
    path.write_text("D,I,G,S,L\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    train, test = load_data("train", data=str(path)), load_data("test", data=str(path))
    assert train.x.tolist() == rows[:4] and test.x.tolist() == rows[4:]
    bad = tmp_path / "bad.csv"
    bad.write_text("0,1,3,1,0\n0,1,2,1,0\n")
    with pytest.raises(DataError, match="column G holds 3"):
        load_data("train", data=str(bad))
    bad.write_text("0,1,2,1\n0,1,2,1,0\n")
    with pytest.raises(DataError, match="5 integers"):
        load_data("train", data=str(bad))
    with pytest.raises(DataError, match="not found"):
        load_data("train", data=str(tmp_path / "missing.csv"))


def test_check_data_rejects_bad_values():
    model = StudentNetwork(StudentConfig(init="truth"))
    with pytest.raises(DataError, match="column L holds 2"):
        model.check_data(torch.tensor([[0, 1, 2, 1, 2]]))
    with pytest.raises(DataError, match="column D holds -2"):
        model.check_data(torch.tensor([[-2, 1, 2, 1, 0]]))
    with pytest.raises(DataError, match="integer"):
        model.check_data(torch.zeros(3, 5))
    with pytest.raises(DataError, match="shape"):
        model.check_data(torch.zeros(3, 4, dtype=torch.long))


# ---------------------------------------------------------------------------- queries

def test_parse_query():
    assert parse_query("I | G=C, S=1") == (["I"], {"G": 2, "S": 1})
    assert parse_query("P(G=A, S=1, L=1)") == ({"G": 0, "S": 1, "L": 1}, {})
    assert parse_query(" intelligence,letter|sat=0 ") == (["I", "L"], {"S": 0})
    assert set(answer("I, L | S=1")) == {"I=0,L=0", "I=0,L=1", "I=1,L=0", "I=1,L=1"}
    assert sum(answer("G | D=1").values()) == pytest.approx(1.0)


@pytest.mark.parametrize("text, message", [
    ("", "empty query"),
    ("X | G=C", "unknown variable 'X'"),
    ("I | G=D", "G takes A, B, C"),
    ("I | S=2", "S=2 is out of range"),
    ("I | G", "not name=value"),
    ("I | S=1, S=0", "S appears twice"),
    ("I, L=1", "mixes names"),
    ("I || S=1", "more than one '|'"),
    ("I |", "nothing after"),
    ("I, I", "named twice"),
    ("I,, L", "empty target"),
])
def test_bad_queries_raise_value_error(text, message):
    with pytest.raises(ValueError, match=message):
        answer(text)
    assert issubclass(QueryError, DataError)


# ---------------------------------------------------------------------------- learning

def dirichlet_posterior(x: np.ndarray, prior: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Closed-form posterior mean and sd of every CPD entry from counts (complete data)."""
    parents = {"D": [], "I": [], "G": [1, 0], "S": [1], "L": [2]}
    out = {}
    for j, name in enumerate(VARIABLES):
        counts = np.zeros([CARD[p] for p in parents[name]] + [CARD[j]])
        np.add.at(counts, tuple(x[:, p] for p in parents[name]) + (x[:, j],), 1)
        alpha = counts + prior
        total = alpha.sum(-1, keepdims=True)
        mean = alpha / total
        out[name] = (mean, np.sqrt(mean * (1 - mean) / (total + 1)))
    return out


@pytest.mark.filterwarnings(SMALL_OPS)
@pytest.mark.statistical
def test_learning_cpds_from_complete_data():
    x = load_data("train").x
    spec = get_spec("student")
    model = spec.make()  # uniform rows, strength 1000
    start = time.perf_counter()
    # `zoo train student --fast`: the opt-in closed form, the Pyro ELBO's exact expectation
    fit_model(model, x, objective=spec.objective_for(spec.config()), fast=True, progress=False,
              **spec.train_settings())
    seconds = time.perf_counter() - start
    learned = model.learned_cpds(torch.float64)
    exact = dirichlet_posterior(x.numpy(), model.prior_concentration)
    truth = true_cpds()
    errors, z_svi = [], []
    for name in VARIABLES:
        mean, sd = exact[name]
        svi = learned[name].numpy()
        errors.append(np.abs(svi - truth[name].numpy()).max())
        z_svi.append((np.abs(svi - mean) / sd).max())
        # the exact posterior itself is within 4 posterior sd of the truth
        assert (np.abs(mean - truth[name].numpy()) < 4 * sd).all(), name
    worst = worst_concentration_error(model, x)
    print(f"complete data: max |SVI - truth| = {max(errors):.4f}, max |SVI - exact|/sd = {max(z_svi):.2f}, "
          f"worst concentration error {worst:.4f}, {seconds:.1f} s")
    assert max(errors) < 0.02
    # SVI's mean lies inside the exact posterior's central ~95% interval (mean ± 2 sd)
    assert max(z_svi) < 2.0
    # and the guide is the exact posterior Dirichlet(α0 + counts), strengths included
    assert worst < 0.05


@pytest.mark.statistical
def test_pyro_sampled_elbo_leaves_the_strength_behind():
    """Why the student has its closed-form fast path: the same steps on Pyro's one-sample
    estimate (the default) get the means but not the strengths (the gradient's noise along log Σα)."""
    x = load_data("train").x
    spec = get_spec("student")
    model = spec.make()
    with pyro.validation_enabled(False):
        fit_model(model, x, objective=spec.objective_for(spec.config()), progress=False, steps=300, lr=0.1)
    assert max_abs_cpd_error(model.learned_cpds(torch.float64), true_cpds()) < 0.05
    assert worst_concentration_error(model, x) > 0.1


def worst_concentration_error(model, x) -> float:
    """max over CPD entries of |α_guide - α_exact| / α_exact, α_exact = α0 + counts by hand (numpy)."""
    exact = dirichlet_posterior(x.numpy(), model.prior_concentration)
    worst = 0.0
    for name in VARIABLES:
        mean, sd = exact[name]
        # mean = α / Σα and sd^2 = mean (1 - mean) / (Σα + 1) give Σα, hence α
        strength = mean * (1 - mean) / sd**2 - 1
        alpha = mean * strength
        guide = model.concentration(name).detach().double().numpy()
        worst = max(worst, float((np.abs(guide - alpha) / alpha).max()))
    return worst


@pytest.mark.statistical
def test_natural_gradient_svi_reaches_the_exact_posterior():
    x = load_data("train").x
    model = StudentNetwork()  # uniform rows, strength 1000: far from Dirichlet(α0 + counts)
    start = worst_concentration_error(model, x)
    model.natural_gradient_svi(x, steps=50)
    full = worst_concentration_error(model, x)
    # minibatches of 4000 rows: noisy counts, averaged by ρ_t = 1 / (t + 1)
    minibatch = StudentNetwork()
    minibatch.natural_gradient_svi(x, steps=300, forgetting=1.0, batch_size=4000)
    noisy = worst_concentration_error(minibatch, x)
    print(f"worst relative concentration error: start {start:.2f}, full batch {full:.2e}, "
          f"minibatch {noisy:.4f}")
    assert start > 1
    assert full < 0.05 and noisy < 0.05
    assert minibatch.posterior_comparison(x)["max_rel_error_concentration"] == pytest.approx(noisy, rel=1e-3)


def test_conjugate_update_and_exact_posterior():
    x = load_data("test", smoke=True).x
    model = StudentNetwork().conjugate_update(x)
    assert worst_concentration_error(model, x) < 1e-5
    train = {"split": "train"}
    comparison = model.metrics(DataSplit(x, info=train))["guide_vs_exact_posterior"]
    assert comparison["max_rel_error_concentration"] < 1e-5
    # only on the data the guide was fit to: test data have other counts
    assert "guide_vs_exact_posterior" not in model.metrics(DataSplit(x))
    hidden = load_data("test", data="hidden_I", smoke=True).x
    with pytest.raises(DataError, match="complete data"):
        model.exact_posterior(hidden)
    assert "guide_vs_exact_posterior" not in model.metrics(DataSplit(hidden, info=train))


@pytest.mark.filterwarnings(SMALL_OPS)
@pytest.mark.statistical
def test_natural_gradient_svi_with_intelligence_hidden():
    x = load_data("train", data="hidden_I", smoke=True).x
    held_out = load_data("test", data="hidden_I", smoke=True).x
    model = StudentNetwork(StudentConfig(init="random"))
    completed = model._completed(x)
    assert (completed >= 0).all() and torch.equal(completed[:, 2:], x[:, 2:])
    before = model.exact_log_prob(held_out).mean().item()
    model.natural_gradient_svi(x, steps=40)
    after = model.exact_log_prob(held_out).double()
    truth = evidence_log_prob(joint_table(true_cpds()), held_out)
    se = (after - truth).std().item() / math.sqrt(len(after))
    print(f"I hidden, natural-gradient SVI: held-out log p {before:.4f} -> {after.mean().item():.4f} "
          f"(true network {truth.mean().item():.4f} ± {se:.4f})")
    # an EM-like climb: most of the way from the random start towards the true network
    assert truth.mean().item() - after.mean().item() < 0.25 * (truth.mean().item() - before)


@pytest.mark.statistical
def test_learning_with_intelligence_hidden():
    x = load_data("train", data="hidden_I").x
    held_out = load_data("test", data="hidden_I").x
    model = StudentNetwork(StudentConfig(init="uniform", init_concentration=5000.0))
    start = time.perf_counter()
    train(model, x, [(0.05, 150), (0.01, 100), (0.002, 100)])
    seconds = time.perf_counter() - start
    truth = true_cpds()
    diff = model.exact_log_prob(held_out).double() - evidence_log_prob(joint_table(truth), held_out)
    se = diff.std().item() / math.sqrt(len(diff))
    # E[diff] = -KL(p_true || p_learned) ≈ -k / (2 N_train) for k = 15 free parameters (Wilks)
    expected_kl = 15 / (2 * len(x))
    learned = model.learned_cpds(torch.float64)
    error = min(
        max((learned[n] - truth[n]).abs().max().item() for n in VARIABLES),
        max((swap_intelligence(learned)[n] - truth[n]).abs().max().item() for n in VARIABLES),
    )
    print(f"I hidden: held-out Δ log p = {diff.mean().item():.5f} ± {se:.5f} nats, "
          f"max CPD error up to I swap = {error:.4f}, {seconds:.1f} s")
    assert -(4 * se + expected_kl) < diff.mean().item() < 4 * se


def test_spec_smoke_training_step():
    spec = get_spec("student")
    model = spec.make(smoke=True)
    x = spec.load_data("train", data="hidden_I", smoke=True).x
    settings = spec.train_settings(smoke=True)
    result = fit_model(model, x, objective="TraceEnum_ELBO", steps=2, lr=settings["lr"], progress=False)
    assert len(result.losses) == 2 and all(math.isfinite(v) for v in result.losses)


def test_init_options():
    with pytest.raises(DataError, match="init must be one of truth, uniform, random"):
        StudentNetwork(StudentConfig(init="ones"))
    assert get_spec("student").make().learned_cpds()["D"].tolist() == [0.5, 0.5]
    model = StudentNetwork(StudentConfig(init="uniform"))
    assert all(torch.allclose(t, torch.full_like(t, 1 / t.shape[-1])) for t in model.learned_cpds().values())


# ---------------------------------------------------------------------------- report

def test_metrics_and_figures(tmp_path):
    model = StudentNetwork(StudentConfig(init="truth"))
    data = load_data("test", smoke=True)
    metrics = model.metrics(data)
    assert metrics["max_abs_cpd_error"] < 1e-6
    assert metrics["queries"]["I=1 | G=C, S=1"]["learned"] == pytest.approx(0.578313, abs=1e-6)
    assert metrics["exact_log_lik_nats"] == pytest.approx(metrics["true_network_log_lik_nats"], abs=1e-5)
    paths = SPEC.figures(model, data, tmp_path)
    assert len(paths) == 2
    for path in paths.values():
        assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
