"""Score inference methods against the truth, across every model that declares one (``zoo judge``).

A *cell* is (model, guide, objective). Each cell builds a fresh model from its spec, trains the
guide (and the model's point-estimated parameters) with a fixed recipe (the spec's training
settings, or the smoke ones, always full batch on the first ``points`` data points: an AutoGuide's
parameters are per data point, so it is fitted and scored on the same rows and cannot score new
data), and scores it against the model's declared ground truth, read from its
:class:`~pyro_zoo.models.base.Capabilities` and from one trace of its program (which latents are global,
local or enumerated); no model is named here.

Ground truth, by what the model declares:

* ``exact_log_prob`` and no global latents: exact log p(x) per data point, computed for the cell's
  own trained parameters (a point-estimated model changes with its guide);
* global latents with ``exact_global_posterior``: exact posterior means and sds of every site it
  returns, plus the exact log evidence where ``exact_evidence``;
* anything else (no latents at all, or global latents without an exact posterior) is listed with
  the reason and not judged.

Per cell: the ELBO's gap to the exact log p(x) in nats per data point (with its SE over guide
draws); the importance-sampling (IS) error of log p(x) in nats and in SEs and the PSIS k̂ summary;
for global latents the posterior-mean error in posterior sds and the ratio of sds (guide /
exact); wall time and gradient evaluations (steps x particles). IS is per data point where the
guide factorises over data points (its sites all sit in the data plate), else over the whole data
set as one point (``is_scope``). A cell that diverges is reported as ``diverged``; a guide or
objective that does not apply is ``not applicable`` with the reason. Each cell is written to its own
file under ``out/cells/``, so an interrupted judge resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from matplotlib.figure import Figure
from pyro.distributions.torch_distribution import MaskedDistribution
from pyro.infer import ELBO
from pyro.infer.autoguide import (
    AutoDelta,
    AutoDiagonalNormal,
    AutoIAFNormal,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from pyro.poutine.util import site_is_subsample
from tqdm.auto import tqdm

from pyro_zoo.inference.arviz_io import arviz, from_nuts
from pyro_zoo.inference.importance import estimate_evidence, estimate_log_likelihood
from pyro_zoo.inference.plain import to_json
from pyro_zoo.inference.sites import in_data_plate, is_latent
from pyro_zoo.inference.train import Objective, TrainConfig, TrainingDiverged, fit
from pyro_zoo.models.base import DataError
from pyro_zoo.models.registry import REGISTRY, get_spec

#: the AutoGuides a judge can put on any model with non-enumerated latents
AUTOGUIDES = {"AutoNormal": AutoNormal, "AutoDiagonalNormal": AutoDiagonalNormal,
              "AutoLowRankMultivariateNormal": AutoLowRankMultivariateNormal,
              "AutoMultivariateNormal": AutoMultivariateNormal, "AutoIAFNormal": AutoIAFNormal,
              "AutoDelta": AutoDelta}
#: the model's own guide
OWN = "own"
GUIDES = (OWN, *AUTOGUIDES)
#: "elbo": the spec's objective; "iwae": RenyiELBO(alpha=0) with IWAE_PARTICLES particles
OBJECTIVES = ("elbo", "iwae")
IWAE_PARTICLES = 8
#: the metrics the leaderboards rank by (lower is better)
SCORES = ("elbo_gap", "is_error", "width_error")


class NotApplicable(Exception):
    """A guide or objective that does not fit a model; the message says why."""


@dataclass(frozen=True)
class Recipe:
    """How every cell is trained and scored: ``points`` data points (full batch), the spec's training
    settings (smoke ones with ``smoke``) with at most ``max_steps`` steps, ``particles`` IS
    particles, ``draws`` guide draws for posterior moments, and the seed. ``small_models``: each
    model and its data in their smoke sizes (the config's ``smoke()`` variant) with the full
    training and scoring otherwise."""

    smoke: bool = False
    points: int = 50
    particles: int = 1000
    draws: int = 2000
    max_steps: int = 1000
    seed: int = 0
    small_models: bool = False

    @classmethod
    def make(cls, smoke: bool, seed: int = 0, small_models: bool = False) -> Recipe:
        if smoke:
            return cls(True, 32, 200, 500, 1000, seed, True)
        return cls(seed=seed, small_models=small_models)

    def train_settings(self, spec) -> dict:
        """The spec's training settings, full batch, steps capped at ``max_steps``."""
        settings = {k: v for k, v in spec.train_settings(self.smoke).items() if k != "batch_size"}
        if "steps" in settings:
            settings["steps"] = min(settings["steps"], self.max_steps)
        return settings


class UserObjective(Objective):
    """A user's Pyro ELBO (from ``file.py:name``, a function () -> ELBO) trained through ``fit``."""

    def __init__(self, label: str, factory):
        self.name, self.num_particles, self.options, self.factory = label, 1, {}, factory
        self._label = label

    @property
    def label(self) -> str:
        return f"−{self._label} (user objective)"

    def build(self, max_plate_nesting: int = 1):
        elbo = self.factory()
        if not isinstance(elbo, ELBO):
            raise DataError(f"the objective factory {self._label} returned {type(elbo).__name__}, not a Pyro "
                            "ELBO; return e.g. pyro.infer.Trace_ELBO()")
        return elbo


def load_factory(text: str):
    """(label, function) from ``path.py:name``: the user's file, run because the user named it."""
    path, sep, name = text.rpartition(":")
    if not sep or not path.endswith(".py") or not name.isidentifier():
        raise DataError(f"{text!r} is neither a known name nor file.py:function; write e.g. "
                        "my_guides.py:make")
    if not Path(path).is_file():
        raise DataError(f"no file {path!r}; give the path of a .py file defining {name}")
    module_spec = importlib.util.spec_from_file_location(f"judge_user_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    factory = getattr(module, name, None)
    if not callable(factory):
        raise DataError(f"{path} defines no function {name!r}; define it or name another")
    return name, factory


def latent_sites(model, inputs: tuple) -> dict[str, list[str]]:
    """The model's latent sites by kind: "global" (outside the data plate), "local", "enumerated"."""
    with torch.no_grad(), poutine.block():
        trace = poutine.trace(model.model).get_trace(*inputs)
    kinds: dict[str, list[str]] = {"global": [], "local": [], "enumerated": []}
    for name, site in trace.nodes.items():
        if not is_latent(site):
            continue
        if site["infer"].get("enumerate"):
            kinds["enumerated"].append(name)
        else:
            kinds["local" if in_data_plate(site) else "global"].append(name)
    return kinds


def truth_of(model, kinds: dict) -> tuple[str | None, str]:
    """(kind of ground truth or None, why) from the model's declared capabilities and its latents."""
    caps = model.capabilities
    if not any(kinds.values()):
        return None, "no latent variables: nothing to infer"
    if kinds["global"] and caps.exact_global_posterior:
        return "posterior", "exact posterior of the global latents" + (" and exact evidence"
                                                                        if caps.exact_evidence else "")
    if kinds["global"]:
        return "reference", "posterior of the global latents from long NUTS runs (R-hat and ESS reported)"
    if caps.exact_log_prob:
        return "log_px", "exact log p(x) at the cell's trained parameters"
    return None, "no exact log p(x) declared"


@dataclass
class Problem:
    """One model set up for judging: its spec, config, data (the first ``points`` rows) and latents."""

    spec: object
    config: object
    data: object
    kinds: dict
    truth: str | None
    why: str
    reference: dict | None = None

    @classmethod
    def make(cls, name: str, recipe: Recipe) -> Problem:
        spec = get_spec(name)
        full = spec.load_data("train", smoke=recipe.small_models)
        data = full.head(min(recipe.points, len(full.x)))
        config = spec.resolve(smoke=recipe.small_models, data=data)
        model = spec.build(config)
        inputs = data.inputs(model.inputs)
        kinds = latent_sites(model, inputs)
        truth, why = truth_of(model, kinds)
        return cls(spec, config, data, kinds, truth, why)

    def build(self):
        model = self.spec.build(self.config)
        return model, self.data.inputs(model.inputs)


def make_guide(name: str, model, kinds: dict, user_guides: dict):
    """The guide called ``name`` for ``model``: its own, an AutoGuide, or a user's factory(model)."""
    if name == OWN:
        return model.guide
    if not (kinds["global"] or kinds["local"]):
        raise NotApplicable("every latent of the model is enumerated: an AutoGuide has nothing to fit")
    program = model.model
    if kinds["enumerated"]:
        program = poutine.block(model.model, hide=kinds["enumerated"])
    factory = AUTOGUIDES.get(name) or user_guides[name]
    return factory(program)


def make_objective(name: str, problem: Problem, user_objectives: dict) -> Objective:
    if name in user_objectives:
        return UserObjective(name, user_objectives[name])
    if name == "elbo":
        return Objective(**{k: v for k, v in problem.spec.objective_for(problem.config).items()})
    if problem.kinds["enumerated"]:
        raise NotApplicable("RenyiELBO (IWAE) does not sum enumerated latents")
    return Objective("RenyiELBO", IWAE_PARTICLES, {"alpha": 0.0})


def iwae_loss(program, guide, particles: int, max_plate_nesting: int):
    """``loss(*batch, num_data)``: -IWAE-k of the whole batch as one point, RenyiELBO(alpha=0)'s value,
    differentiable. ``fit`` trains RenyiELBO through its ``loss_and_grads``, which back-propagates
    only when the trace holds ``pyro.param`` sites, so a model's ``nn.Parameter`` s would not move;
    this reparameterised form trains them all."""
    def loss(*batch, num_data=None):
        with pyro.plate("particles", particles, dim=-(max_plate_nesting + 1)):
            guide_trace = poutine.trace(guide).get_trace(*batch)
            model_trace = poutine.trace(poutine.replay(program, trace=guide_trace)).get_trace(*batch)
        log_w = 0.0
        for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
            for site in trace.nodes.values():
                if site["type"] == "sample" and not site_is_subsample(site):
                    log_prob = site["fn"].log_prob(site["value"]) * site["scale"]
                    log_prob = log_prob.reshape((1,) * (max_plate_nesting + 1 - log_prob.dim())
                                                + log_prob.shape)
                    log_w = log_w + sign * log_prob.sum(tuple(range(1, log_prob.dim()))).expand(particles)
        bound = torch.logsumexp(log_w, 0) - math.log(particles)
        return -bound * (1.0 if num_data is None else num_data / len(batch[0]))

    return loss


def train_cell(problem: Problem, guide_name: str, objective_name: str, recipe: Recipe, user: dict,
               progress: bool = False):
    """(model, guide, objective, fit result) of one cell, trained with the recipe."""
    pyro.clear_param_store()
    pyro.set_rng_seed(recipe.seed)
    objective = make_objective(objective_name, problem, user["objectives"])
    model, inputs = problem.build()
    guide = make_guide(guide_name, model, problem.kinds, user["guides"])
    config = TrainConfig(**recipe.train_settings(problem.spec), seed=recipe.seed)
    nesting = problem.spec.max_plate_nesting
    loss = None
    if objective.name == "RenyiELBO" and not isinstance(objective, UserObjective):
        loss = iwae_loss(model.model, guide, objective.num_particles, nesting)
    model.train()
    try:
        result = fit(model.model, guide, inputs, config, objective=objective, max_plate_nesting=nesting,
                     loss=loss, preprocess=model.preprocess, progress=progress)
    finally:
        model.eval()
    return model, guide, objective, result


def is_estimates(model, guide, inputs: tuple, recipe: Recipe, max_plate_nesting: int) -> dict:
    """ELBO and IS of log p(x) in nats per data point with SEs, and the k̂ summary: per data point
    where the guide factorises over the data plate, else over the whole data set (divided by N)."""
    n = len(inputs[0])
    try:
        result = estimate_log_likelihood(model.model, guide, inputs, recipe.particles, iwae_ks=(1,),
                                         max_plate_nesting=max_plate_nesting, seed=recipe.seed)
        scope, per = "per data point", 1
    except ValueError:  # a guide site outside the data plate: log q does not factorise per data point
        try:
            result = estimate_evidence(model.model, guide, inputs, recipe.particles, iwae_ks=(1,),
                                       max_plate_nesting=max_plate_nesting)
        except ValueError as err:  # e.g. global latents beside enumerated local ones
            return {"is_scope": f"none: {err}", "elbo": None, "elbo_se": None, "is_log_px": None,
                    "is_log_px_se": None}
        scope, per = "whole data set", n
    summary = result.summary()
    out = {"is_scope": scope, "elbo": summary["iwae"][1] / per, "elbo_se": summary["iwae_se"][1] / per,
           "is_log_px": summary["log_px"] / per, "is_log_px_se": summary["log_px_se"] / per,
           "khat": summary.get("khat", {})}
    return {**out, "khat_warned": khat_warned(out)}


@torch.no_grad()
def guide_moments(guide, inputs: tuple, sites, draws: int, max_plate_nesting: int) -> dict:
    """{site: (mean, sd)} of the guide's draws, each flattened to one vector."""
    with pyro.plate("draws", draws, dim=-(max_plate_nesting + 1)):
        trace = poutine.trace(guide).get_trace(*inputs)
    out = {}
    for site in sites:
        value = trace.nodes[site]["value"].reshape(draws, -1).double()
        out[site] = (value.mean(0), value.std(0))
    return out


@dataclass
class Moments:
    """Posterior mean and variance of one site (what ``posterior_scores`` reads of a reference)."""

    mean: torch.Tensor
    variance: torch.Tensor


def posterior_scores(exact: dict, guide, inputs: tuple, recipe: Recipe, max_plate_nesting: int) -> dict:
    """Mean error in exact posterior sds and sd ratio (guide / exact), over every element of every
    site of ``exact`` ({site: object with ``mean`` and ``variance``}, an exact posterior or a NUTS
    reference); ``width_error`` = mean |log sd ratio| (inf for a point mass)."""
    drawn = guide_moments(guide, inputs, exact, recipe.draws, max_plate_nesting)
    errors, ratios = [], []
    for site, posterior in exact.items():
        mean = posterior.mean.reshape(-1).double()
        sd = posterior.variance.reshape(-1).double().sqrt()
        errors.append((drawn[site][0] - mean).abs() / sd)
        ratios.append(drawn[site][1] / sd)
    errors, ratios = torch.cat(errors), torch.cat(ratios)
    return {"mean_error_sd": errors.mean().item(), "mean_error_sd_max": errors.max().item(),
            "mean_error_sd_se": (ratios.square().mean() / recipe.draws).sqrt().item(),
            "sd_ratio_geomean": ratios.log().mean().exp().item(), "sd_ratio_min": ratios.min().item(),
            "sd_ratio_max": ratios.max().item(), "width_error": ratios.log().abs().mean().item(),
            "elements": errors.numel()}


#: NUTS settings of the reference posterior: (chains, warmup, draws) for smoke and full recipes
NUTS_SETTINGS = {True: (2, 100, 100), False: (4, 300, 500)}


def code_record() -> dict:
    """What produced a reference: the functions' qualified names and hashes of their source files."""
    files = sorted({inspect.getsourcefile(fn) for fn in (from_nuts, reference_posterior)})
    return {"functions": [f"{fn.__module__}.{fn.__qualname__}" for fn in (from_nuts, reference_posterior)],
            "sources_sha256": {Path(f).name: hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files}}


def reference_key(problem: Problem, settings: dict) -> str:
    """A hash of the model's config, its data and the NUTS settings."""
    digest = hashlib.sha256(json.dumps([problem.spec.name, problem.config.to_dict(), settings],
                                       sort_keys=True, default=str).encode())
    for tensor in problem.data.inputs(problem.spec.build(problem.config).inputs):
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def reference_posterior(problem: Problem, recipe: Recipe, folder: Path) -> dict:
    """Posterior means and sds of the global latents from ``chains`` NUTS chains (one after another,
    one thread), with R-hat and ESS; cached in ``folder`` under :func:`reference_key`, with the
    settings and :func:`code_record`."""
    chains, warmup, draws = NUTS_SETTINGS[recipe.smoke]
    settings = {"chains": chains, "warmup": warmup, "draws": draws, "seed": recipe.seed}
    path = Path(folder) / f"{problem.spec.name}-{reference_key(problem, settings)}.json"
    if path.is_file():
        return json.loads(path.read_text())
    model, inputs = problem.build()
    start = time.perf_counter()
    runs = [from_nuts(model.model, inputs, draws, warmup, max_plate_nesting=problem.spec.max_plate_nesting,
                      seed=recipe.seed + chain, log_likelihood=False) for chain in range(chains)]
    posterior = arviz().concat(*runs, dim="chain").posterior
    table = arviz().summary(posterior, var_names=problem.kinds["global"], kind="diagnostics")
    moments = {site: {"mean": posterior[site].values.reshape(chains * draws, -1).mean(0).tolist(),
                      "sd": posterior[site].values.reshape(chains * draws, -1).std(0, ddof=1).tolist()}
               for site in problem.kinds["global"]}
    reference = {"moments": moments, "r_hat_max": float(table["r_hat"].max()),
                 "ess_bulk_min": float(table["ess_bulk"].min()), "seconds": time.perf_counter() - start,
                 "settings": settings, "code": code_record()}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(reference, indent=1))
    return reference


def exact_log_px(model, inputs: tuple, global_latents: bool) -> float | None:
    """The exact log p(x) per data point (mean over the data) the model declares, else None; with
    global latents only the evidence counts (``exact_log_prob`` is then at a point estimate)."""
    caps = model.capabilities
    with torch.no_grad():
        if caps.exact_evidence:
            return float(model.exact_log_evidence(*inputs)) / len(inputs[0])
        if caps.exact_log_prob and len(inputs) == 1 and not global_latents:
            return model.exact_log_prob(*inputs).mean().item()
    return None


def point_mass(guide, inputs: tuple) -> bool:
    """Whether every site the guide draws is a point mass (``Delta``): then it has no ELBO (its
    entropy is minus infinity) and gives no importance weights."""
    with torch.no_grad(), poutine.block():
        trace = poutine.trace(guide).get_trace(*inputs)
    fns = [site["fn"] for site in trace.nodes.values()
           if site["type"] == "sample" and not site_is_subsample(site)]
    return bool(fns) and all(isinstance(unwrapped(fn), dist.Delta) for fn in fns)


def unwrapped(fn):
    """A distribution without its ``Independent`` and mask wrappers."""
    while isinstance(fn, (dist.Independent, MaskedDistribution)):
        fn = fn.base_dist
    return fn


def score_cell(problem: Problem, model, guide, recipe: Recipe) -> dict:
    """Every number of a trained cell against the truth (see the module docstring)."""
    inputs = problem.data.inputs(model.inputs)
    nesting = problem.spec.max_plate_nesting
    exact = exact_log_px(model, inputs, bool(problem.kinds["global"]))
    if point_mass(guide, inputs):
        out = {"is_scope": "none: a point mass has no ELBO and no importance weights", "elbo": -math.inf,
               "elbo_se": 0.0, "is_log_px": math.nan, "is_log_px_se": math.nan}
        if exact is not None:
            out.update(exact_log_px=exact, elbo_gap=math.inf, elbo_gap_se=0.0)
    else:
        out = is_estimates(model, guide, inputs, recipe, nesting)
    if exact is not None and out["elbo"] is not None and math.isfinite(out["elbo"]):
        out["exact_log_px"] = exact
        out["elbo_gap"] = exact - out["elbo"]
        out["elbo_gap_se"] = out["elbo_se"]
        out["is_error"] = out["is_log_px"] - exact
        out["is_error_in_se"] = out["is_error"] / out["is_log_px_se"] if out["is_log_px_se"] > 0 else 0.0
    if problem.truth == "posterior":
        out.update(posterior_scores(model.exact_global_posterior(*inputs), guide, inputs, recipe, nesting))
    if problem.truth == "reference":
        moments = {site: Moments(torch.tensor(m["mean"]), torch.tensor(m["sd"]) ** 2)
                   for site, m in problem.reference["moments"].items()}
        out.update(posterior_scores(moments, guide, inputs, recipe, nesting))
    return out


def run_cell(problem: Problem, guide_name: str, objective_name: str, recipe: Recipe, user: dict,
             progress: bool = False) -> dict:
    """The record of one cell: status "ok", "diverged" or "not applicable", with its numbers."""
    record = {"model": problem.spec.name, "guide": guide_name, "objective": objective_name,
              "truth": problem.truth, "recipe": asdict(recipe), "num_data": len(problem.data.x)}
    start = time.perf_counter()
    try:
        model, guide, objective, result = train_cell(problem, guide_name, objective_name, recipe, user,
                                                     progress)
    except NotApplicable as why:
        return {**record, "status": "not applicable", "reason": str(why)}
    except TrainingDiverged as err:
        return {**record, "status": "diverged", "reason": " ".join(str(err).split()),
                "seconds": time.perf_counter() - start}
    record.update(status="ok", objective_label=objective.label, train_seconds=result.seconds,
                  steps=result.step, gradient_evaluations=result.step * objective.num_particles,
                  final_loss=result.final_loss)
    record.update(score_cell(problem, model, guide, recipe))
    if not_finite(record):
        record.update(status="diverged", reason="the trained guide's ELBO or IS estimate is not finite")
    record["seconds"] = time.perf_counter() - start
    return record


def not_finite(record: dict) -> bool:
    """Whether a trained cell diverged: its ELBO is NaN or its IS estimate infinite (a point mass's
    ELBO is minus infinity by definition; None where it was not estimated)."""
    elbo, is_log_px = record.get("elbo"), record.get("is_log_px")
    return (elbo is not None and math.isnan(elbo)) or (is_log_px is not None and math.isinf(is_log_px))


def cell_path(out: Path, model: str, guide: str, objective: str) -> Path:
    return out / "cells" / f"{model}__{safe(guide)}__{safe(objective)}.json"


def safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def finished(path: Path, recipe: Recipe) -> dict | None:
    """The stored record at ``path`` if it was made with this recipe, else None (also for a file
    that does not parse, e.g. one cut short by a full disk before files were written atomically)."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return record if record.get("recipe") == asdict(recipe) else None


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it: a killed judge leaves
    either the whole cell or none."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)


def parse_methods(guides, objectives) -> tuple[list[str], list[str], dict]:
    """(guide names, objective names, {"guides": {...}, "objectives": {...}} of user factories):
    each entry a known name or ``file.py:function``."""
    user: dict = {"guides": {}, "objectives": {}}
    names = {"guides": [], "objectives": []}
    for kind, given, known in (("guides", guides, GUIDES), ("objectives", objectives, OBJECTIVES)):
        for text in given:
            if text in known:
                names[kind].append(text)
                continue
            if ":" not in text:
                raise DataError(f"unknown {kind[:-1]} {text!r}; choose from {', '.join(known)} or give "
                                "file.py:function")
            label, factory = load_factory(text)
            user[kind][label] = factory
            names[kind].append(label)
    return names["guides"], names["objectives"], user


def load_problems(models, recipe: Recipe, references: bool, folder: Path) -> tuple[dict, dict]:
    """({name: Problem} of the models to judge, {name: truth, why, latents} of every model); with
    ``references``, NUTS references (cached in ``folder``) for global latents without an exact
    posterior."""
    problems, judged = {}, {}
    for name in models:
        try:
            problem = Problem.make(name, recipe)
        except DataError as err:
            judged[name] = {"truth": None, "why": f"its data could not be loaded ({err})", "latents": {}}
            continue
        if problem.truth == "reference" and not references:
            problem.truth = None
            problem.why = ("global latents without an exact posterior: pass references=True (--references) "
                           "to build a NUTS reference, minutes per model")
        judged[name] = {"truth": problem.truth, "why": problem.why, "latents": problem.kinds}
        if problem.truth == "reference":
            problem.reference = reference_posterior(problem, recipe, folder)
            judged[name]["reference"] = {key: problem.reference[key]
                                         for key in ("r_hat_max", "ess_bulk_min", "seconds", "settings")}
        if problem.truth:
            problems[name] = problem
    return problems, judged


#: seconds rank 0 waits for the other ranks' cells under torchrun before it writes the leaderboard
RANK_WAIT_SECONDS = 3600.0


def launch_share() -> tuple[int, int]:
    """(rank, number of ranks) as torchrun sets them; (0, 1) without a launcher."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ.get("RANK", "0")), size) if size > 1 else (0, 1)


@contextlib.contextmanager
def one_process():
    """Hide torchrun's world from ``fit`` and the estimators while one rank runs a cell on its
    own (they would otherwise join a process group and train data-parallel across the ranks)."""
    saved = os.environ.get("WORLD_SIZE")
    os.environ["WORLD_SIZE"] = "1"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["WORLD_SIZE"]
        else:
            os.environ["WORLD_SIZE"] = saved


def gather_cells(out: Path, cells: list, recipe: Recipe, wait: float) -> tuple[dict, list[dict]]:
    """({cell: record} of other ranks' ``cells``, read from their files as they appear, and the
    skipped entries of those still missing after ``wait`` seconds); rank 0 under torchrun."""
    deadline, found = time.perf_counter() + wait, {}
    for cell in cells:
        record = finished(cell_path(out, *cell), recipe)
        while record is None and time.perf_counter() < deadline:
            time.sleep(1.0)
            record = finished(cell_path(out, *cell), recipe)
        if record is not None:
            found[cell] = record
    missing = [{"model": m, "guide": g, "objective": o, "status": "skipped",
                "reason": f"another rank did not finish it within {wait:g} s"} for m, g, o in cells
               if (m, g, o) not in found]
    return found, missing


def judge(models=None, guides=GUIDES, objectives=OBJECTIVES, *, out="judge", smoke=False,
          small_models: bool = False, references: bool = False, budget: float | None = None, seed: int = 0,
          progress: bool = True, command: str = "") -> dict:
    """Run every (model, guide, objective) cell not already in ``out/cells`` and write the
    leaderboard (``leaderboard.md``), every number (``judge.json``, strict JSON: a non-finite number
    such as a point mass's infinite gap is ``null``; the cell files keep ``Infinity``) and
    ``heatmap.png``; cells not started within ``budget`` seconds are listed as skipped. ``command``
    (the command line, for the record) and the wall time of this call and of its cells (resumed
    ones included) go into the summary, which is returned with its non-finite numbers. Under
    ``torchrun`` rank r of W runs cells r, r + W, ... (each on its own, see :func:`one_process`)
    and rank 0 gathers every cell's file and writes the outputs; the other ranks return their own
    cells."""
    start = time.perf_counter()
    recipe = Recipe.make(smoke, seed, small_models)
    guide_names, objective_names, user = parse_methods(guides, objectives)
    out = Path(out)
    problems, judged = load_problems(models or sorted(REGISTRY), recipe, references, out / "references")
    (out / "cells").mkdir(parents=True, exist_ok=True)
    plan = [(m, g, o) for m in problems for g in guide_names for o in objective_names]
    rank, ranks = launch_share()
    own, skipped = {}, []
    for model_name, guide, objective in tqdm(plan[rank::ranks], desc="judge", disable=not progress):
        path = cell_path(out, model_name, guide, objective)
        record = finished(path, recipe)
        if record is None and budget is not None and time.perf_counter() - start > budget:
            skipped.append({"model": model_name, "guide": guide, "objective": objective,
                            "status": "skipped", "reason": f"the budget of {budget:g} s was spent"})
            continue
        if record is None:
            with one_process():
                record = run_cell(problems[model_name], guide, objective, recipe, user)
            write_atomically(path, json.dumps(record, indent=1))  # Infinity kept: a point mass's gap is +inf
        own[(model_name, guide, objective)] = record
    if rank != 0:
        return {"rank": rank, "cells": list(own.values()), "skipped": skipped}
    others = [cell for index, cell in enumerate(plan) if index % ranks != rank]
    wait = RANK_WAIT_SECONDS if budget is None else max(0.0, budget - (time.perf_counter() - start)) + 60
    found, missing = gather_cells(out, others, recipe, wait)
    records = [own.get(cell) or found[cell] for cell in plan if cell in own or cell in found]
    skipped += missing
    summary = {"command": command, "recipe": asdict(recipe), "models": judged, "cells": records,
               "skipped": skipped, "seconds": time.perf_counter() - start,
               "cell_seconds": sum(record.get("seconds", 0.0) for record in records)}
    (out / "leaderboard.md").write_text(leaderboard_markdown(summary))
    figure = heatmap(summary, out / "heatmap.png")
    summary["figure"] = figure and str(figure)
    (out / "judge.json").write_text(json.dumps(to_json(summary), indent=1))
    return summary


def method(record: dict) -> str:
    return f"{record['guide']} / {record['objective']}"


def board(records: list[dict], score: str) -> tuple[list[str], list[str], dict]:
    """(rows, columns, {(row, column): record}) of the models with a truth for ``score``."""
    truths = {"elbo_gap": ("log_px",), "is_error": ("log_px",),
              "width_error": ("posterior", "reference")}[score]
    rows = list(dict.fromkeys(r["model"] for r in records if score in r or r["truth"] in truths))
    chosen = [r for r in records if r["model"] in rows]
    columns = list(dict.fromkeys(method(r) for r in chosen))
    return rows, columns, {(r["model"], method(r)): r for r in chosen}


def entry(record: dict | None, score: str, best: float) -> str:
    if record is None:
        return ""
    if record["status"] != "ok":
        return "diverged" if record["status"] == "diverged" else "n/a"
    if score not in record:
        return "-"
    value = record[score]
    text = f"{value:.3g}"
    if score == "elbo_gap":
        text += f" ± {record['elbo_gap_se']:.2g}"
    if score == "is_error":
        warned = ", k̂ warned" if khat_warned(record) else ""
        text = f"{value:+.3g} ({record['is_error_in_se']:+.1f} SE{warned})"
    if score == "width_error":
        text += f" (sd×{record['sd_ratio_geomean']:.2f}, mean err {record['mean_error_sd']:.2f} sd)"
    return f"**{text}**" if abs(value) == best else text


def khat_warned(record: dict) -> bool:
    """Whether the PSIS k̂ summary warned; over the whole data set (one point, where the summary's
    binomial rule cannot fire) whether that one k̂ exceeds the threshold."""
    khat = record.get("khat", {})
    if record.get("is_scope") == "whole data set":
        return khat.get("max", -math.inf) > khat.get("threshold", math.inf)
    return "warning" in khat


def table(records: list[dict], score: str) -> list[str]:
    rows, columns, cells = board(records, score)
    if not rows:
        return []
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in rows:
        values = [cells[(row, c)][score] for c in columns if (row, c) in cells
                  and cells[(row, c)]["status"] == "ok" and score in cells[(row, c)]]
        best = min((abs(value) for value in values), default=None)
        texts = [entry(cells.get((row, c)), score, best) for c in columns]
        lines.append(f"| {row} | " + " | ".join(texts) + " |")
    return lines


#: the heading of each table of the leaderboard
HEADINGS = {
    "elbo_gap": "**ELBO gap to the exact log p(x)**, nats per data point (± SE over guide draws; lower is "
                "better):",
    "is_error": "**Importance sampling of log p(x)** with the trained guide as proposal: error in nats per "
                "data point and in its SE, and whether the PSIS k̂ summary warned (per data point where the "
                "guide factorises over the data plate, else over the whole data set; smallest |error| in "
                "bold):",
    "width_error": "**Posterior of the global latents**: mean |log(sd guide / sd exact)| (geometric-mean sd "
                   "ratio, mean error of the posterior mean in exact posterior sds; lower is better):",
}


def reference_note(name: str, reference: dict) -> str:
    settings = reference["settings"]
    return (f"- {name}: reference from NUTS, {settings['chains']} chains x {settings['draws']} draws "
            f"({settings['warmup']} warmup), R-hat max {reference['r_hat_max']:.3f}, bulk ESS min "
            f"{reference['ess_bulk_min']:.0f}")


def leaderboard_markdown(summary: dict) -> str:
    """The recipe, a table per score that has cells (models x methods, best per row in bold), then
    the cells' notes, the NUTS references and the models not judged."""
    records, recipe = summary["cells"], summary["recipe"]
    lines = [f"Recipe: {'models and data in their smoke sizes, ' if recipe['small_models'] else ''}"
             f"first {recipe['points']} training points (full batch), the spec's "
             f"{'smoke ' if recipe['smoke'] else ''}training settings with at most {recipe['max_steps']} "
             f"steps, {recipe['particles']} IS particles, "
             f"{recipe['draws']} guide draws, seed {recipe['seed']}. Fitted and scored on the same points "
             "(a non-amortised guide cannot score new data)."]
    for score, heading in HEADINGS.items():
        rows = table(records, score)
        lines += ["", heading, "", *rows] if rows else []
    lines += [""]
    notes = [f"- {r['model']} {method(r)}: {r['status']}: {r['reason']}"
             for r in records if r["status"] != "ok"]
    notes += [f"- {r['model']} {method(r)}: skipped: {r['reason']}" for r in summary["skipped"]]
    notes += [reference_note(name, info["reference"]) for name, info in summary["models"].items()
              if info.get("reference")]
    notes += [f"- {name}: not judged: {info['why']}" for name, info in summary["models"].items()
              if not info["truth"]]
    return "\n".join(lines + notes) + "\n"


def heatmap(summary: dict, path: Path) -> Path | None:
    """One row per (model, score), one column per method; colour: log10 of |score| (lower is
    better); grey where the cell did not run or does not apply. None (no file) without cells."""
    records = summary["cells"]
    columns = list(dict.fromkeys(method(r) for r in records)) or ["-"]
    rows, values = [], []
    for score in SCORES:
        names, _, cells = board(records, score)
        for name in names:
            rows.append(f"{name}: {score}")
            values.append([abs(cells[(name, c)].get(score, np.nan)) if (name, c) in cells else np.nan
                           for c in columns])
    if not rows:
        return None
    grid = np.log10(np.clip(np.asarray(values, dtype=float).reshape(len(rows), len(columns)), 1e-4, 1e4))
    fig = Figure(figsize=(2.5 + 0.9 * len(columns), 2.5 + 0.45 * max(len(rows), 1)), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_facecolor("0.85")
    fig.colorbar(image, ax=ax, label="log10 score (lower is better)")
    fig.savefig(path, dpi=110)
    return Path(path)
