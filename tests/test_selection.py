"""Tests of early stopping (inference/selection.py): rounds resume as one run, the kept state is
the one that scored best on the validation data, and training stops ``patience`` rounds after it."""

from __future__ import annotations

import pytest
import torch

from pyro_zoo.inference.selection import fit_with_early_stopping
from pyro_zoo.inference.train import evaluate_objective, fit_model
from pyro_zoo.models.arm import SPEC, load_data

SETTINGS = {"batch_size": 25, "lr": 1e-2, "seed": 0}
ROUNDS = {"objective": "Trace_ELBO", "epochs_per_round": 2, **SETTINGS}


def small_arm(train):
    torch.manual_seed(0)
    return SPEC.build(SPEC.resolve(smoke=True, data=train))


def test_rounds_are_one_run():
    """Two rounds of 2 epochs reach the parameters of one 4-epoch run, to the bit (the rounds resume
    the checkpoint: optimiser state, random state and position included)."""
    train, validation = load_data("train").head(100), load_data("validation").head(50)
    rounds = small_arm(train)
    scores = iter([2.0, 1.0])  # the second round scores best, so its state is the one kept
    selection = fit_with_early_stopping(rounds, train.x, validation.x, max_epochs=4, patience=10,
                                        score=lambda model: next(scores), **ROUNDS)
    assert selection.history == [(2, 2.0), (4, 1.0)]
    assert selection.best_epoch == 4 and selection.epochs == 4
    once = small_arm(train)
    fit_model(once, train.x, epochs=4, progress=False, **SETTINGS)
    for a, b in zip(once.state_dict().values(), rounds.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_keeps_the_best_validation_state_and_stops_after_patience(one_thread):
    """An ARM on 100 training images overfits: its exact validation NLL falls, then rises. The model
    comes back in the state of the lowest one (scored again: the same number), and training ran
    exactly ``patience`` rounds past it."""
    train, validation = load_data("train").head(100), load_data("validation")
    arm = small_arm(train)
    selection = fit_with_early_stopping(arm, train.x, validation.x, max_epochs=200, patience=3, **ROUNDS)
    scores = [value for _, value in selection.history]
    assert selection.best_score == min(scores) < scores[0] and scores[-1] > selection.best_score
    assert selection.epochs == selection.best_epoch + 3 * 2
    again = evaluate_objective(arm.model, arm.guide, validation.x, "Trace_ELBO")
    assert again == pytest.approx(selection.best_score, rel=1e-6)
    with torch.no_grad():
        exact = -arm.exact_log_prob(validation.x).mean().item()
    assert exact == pytest.approx(selection.best_score, rel=1e-5)
