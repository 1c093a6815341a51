"""Early stopping on a validation split, around :func:`pyro_zoo.inference.train.fit_model`.

Training runs in rounds of ``epochs_per_round`` epochs, each round resuming the same checkpoint
(parameters, optimiser state, random state and position carry on exactly as in one long run).
After each round the model is scored on the validation data -- by default the loss of its own
objective there, in nats per data point (``pyro_zoo.inference.train.evaluate_objective``: -log p(x) for a
model without latents, -ELBO or -IWAE_k for a latent variable model) -- and the state with the
lowest score so far is kept. Training stops after ``patience`` rounds without a lower score, or
at ``max_epochs``; the model is then left in its best state (module weights and the param-store
values a program created), as in Tomczak's protocol (early stopping on the validation images).
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch

from pyro_zoo.inference.train import evaluate_objective, fit_model, load_params

#: the name the best state is restored under in error messages
BEST = "the best validation state"


@dataclass
class Selection:
    """The outcome: best epoch and its validation score, every round's (epoch, score), wall time."""

    best_epoch: int
    best_score: float
    history: list[tuple[int, float]] = field(default_factory=list)
    epochs: int = 0
    seconds: float = 0.0


def fit_with_early_stopping(zoo_model, train, validation, *, objective, epochs_per_round: int = 5,
                            max_epochs: int = 1000, patience: int = 4, max_plate_nesting: int = 1,
                            score: Callable[[object], float] | None = None,
                            checkpoint: str | Path | None = None, **settings) -> Selection:
    """Train ``zoo_model`` on ``train`` (its inputs) by rounds and keep the state that scores best
    on ``validation``; see the module docstring. ``score(model)`` replaces the default validation
    loss (lower is better); ``checkpoint`` is where the rounds resume from (a temporary file when
    None); ``settings`` go to :func:`fit_model` (``batch_size``, ``lr``, ``fast``...)."""
    start = time.perf_counter()
    score = score or (lambda model: evaluate_objective(model.model, model.guide, validation, objective,
                                                       max_plate_nesting))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(checkpoint) if checkpoint else Path(folder) / "rounds.pt"
        result = Selection(best_epoch=0, best_score=float("inf"))
        best, epoch = None, 0
        while epoch < max_epochs and epoch - result.best_epoch < patience * epochs_per_round:
            epoch = min(max_epochs, epoch + epochs_per_round)
            fit_model(zoo_model, train, objective=objective, epochs=epoch, checkpoint=path,
                      resume=bool(result.history), max_plate_nesting=max_plate_nesting, progress=False,
                      **settings)
            value = score(zoo_model)
            result.history.append((epoch, value))
            if value < result.best_score:
                result.best_epoch, result.best_score, best = epoch, value, _snapshot(zoo_model)
    if best is None:
        raise ValueError(f"no finite validation score in {epoch} epochs ({result.history[-1][1]}); lower the "
                         "learning rate")
    _restore(zoo_model, best)
    result.epochs, result.seconds = epoch, time.perf_counter() - start
    return result


def _snapshot(zoo_model) -> dict:
    params = pyro.get_param_store().get_state()["params"]
    return {"module": copy.deepcopy(zoo_model.state_dict()),
            "params": {name: value.detach().clone() for name, value in params.items()}}


def _restore(zoo_model, snapshot: dict) -> None:
    zoo_model.load_state_dict(snapshot["module"])
    with torch.no_grad():
        load_params(snapshot["params"], BEST)


__all__ = ["Selection", "fit_with_early_stopping"]
