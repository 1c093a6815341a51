r"""Gaussian mixture with K components in D dimensions, assignments summed out by enumeration.

Generative story (seed 000, "Ejemplo 2: mezcla de gaussianas"; Bishop 2006, section 9.2)::

    z_n ~ Categorical(w)                      w in the (K-1)-simplex
    x_n | z_n = k ~ N(mu_k, Sigma_k)          x_n in R^D,  n = 1..N

    p(x_n) = sum_k w_k N(x_n; mu_k, Sigma_k)
    log p(x_n) = logsumexp_k [log w_k + log N(x_n; mu_k, Sigma_k)]

``Sigma_k`` is full (``covariance="full"``, Sigma_k = L_k L_k^T with L_k lower triangular) or
diagonal (``covariance="diag"``, Sigma_k = diag(s_k^2)). All mixture parameters are point
estimates (``nn.Parameter``s); the site ``"assignment"`` is enumerated in parallel and the
guide is empty, so ``TraceEnum_ELBO`` equals the exact marginal log-likelihood and SVI is
gradient ascent on log p(x) (the seed's second training route besides EM). ``elbo_loss`` computes
that same -log p(x) directly (``-exact_log_prob``), which is what :func:`pyro_zoo.inference.train.fit`
trains on, without the enumeration machinery.

Parameters (``weight_logits`` (K,), ``unit_locs`` (K, D), and ``unit_scale_tril`` (K, D, D)
or ``unit_log_scales`` (K, D)) live in standardised coordinates u = (x - shift) / scale, where
the buffers ``shift`` and ``scale`` (D,) are the mean and standard deviation of the data seen by
:meth:`MixtureModel.initialise`; one Adam learning rate then suits data in any units::

    w = softmax(weight_logits)     mu_k = shift + scale * unit_locs_k
    L_k = diag(scale) [tril(R_k, -1) + diag(exp(diag R_k) + s_min)]   (full, R_k = unit_scale_tril_k)
    L_k = diag(scale * (exp(unit_log_scales_k) + s_min))              (diag)

The floor ``s_min`` = :data:`MIN_SCALE` (1e-3 standard deviations of the data) bounds the
density, so a component cannot collapse onto repeated points and send log p(x) to infinity
(the role of scikit-learn's ``reg_covar``).

Shapes: ``x`` (N, D); ``weights`` (K,); ``locs`` (K, D); ``scale_tril`` and ``covariances``
(K, D, D); ``posterior(x)`` (N, K); ``exact_log_prob(x)`` (N,); ``sample(n)`` (n, D). The
likelihood site uses :class:`GaussianComponents`, which scores all K components with one
matrix product (no loop over components).

Initialisation: the first call of ``model(x)`` (or ``elbo_loss(x)``) on an uninitialised module
runs ``initialise(x)`` under ``torch.no_grad()`` on the standardised batch, as chosen by the
``init`` hyperparameter. ``"em"`` (default), the seed's first training route: scikit-learn's
``GaussianMixture`` (one k-means start, then EM to its tolerance) on at most 20,000 random rows,
whose weights, means and covariances SVI then refines on all the data. ``"kmeans"``:
scikit-learn ``KMeans`` (k-means++ seeding, 3 restarts, same rows), then weights, means and
covariances of the hard clusters (covariances shrunk towards the identity in standardised
units, so tiny clusters stay positive definite), leaving the whole likelihood climb to SVI. The boolean buffer
``initialised`` is saved in checkpoints, so a resumed run is not re-initialised, and
:meth:`MixtureModel.set_parameters` also marks the module initialised. When the first batch is
a minibatch the estimates come from that minibatch (a random subsample) and SVI refines them.

Data sets: :mod:`pyro_zoo.models.mixture.data` (the seed's cat weights, a 2-D synthetic set, or a CSV file).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution
from pyro.ops.indexing import Vindex
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from torch import nn
from torch.distributions import constraints

from pyro_zoo.models.base import Capabilities, DataError, DataSplit, ZooModel
from pyro_zoo.models.mixture.config import MixtureConfig

#: Floor on every Cholesky diagonal entry, in standard deviations of the data.
MIN_SCALE = 1e-3
#: Rows k-means sees at initialisation (a random subset of larger batches).
KMEANS_POINTS = 20_000


class GaussianComponents(TorchDistribution):
    r"""x | z ~ N(mu_z, Sigma_z) for a tensor ``index`` of component labels z in {0..K-1}.

    ``locs`` (K, D) with ``scale_tril`` (K, D, D) or diagonal ``scales`` (K, D); batch shape
    ``index.shape``, event shape (D,). ``log_prob`` scores all K components at once and then
    picks z, so an enumerated z of shape (K, 1) costs one (N, D) x (D, K D) matrix product::

        log N(x; mu_k, L_k L_k^T) = -1/2 ||(x - c) P_k - (mu_k - c) P_k||^2 - sum_d log L_k,dd
                                    - D/2 log(2 pi),        P_k = L_k^{-T}

    (scikit-learn's form; ``center`` c, e.g. the data mean, only improves float32 rounding).
    """

    arg_constraints = {}
    support = constraints.real_vector

    def __init__(self, locs, index, scale_tril=None, scales=None, center=None, validate_args=None):
        if (scale_tril is None) == (scales is None):
            raise ValueError("give exactly one of scale_tril or scales")
        self.locs, self.index, self.scale_tril, self.scales = locs, index, scale_tril, scales
        self.center = locs.new_zeros(locs.shape[-1]) if center is None else center
        super().__init__(index.shape, locs.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return GaussianComponents(self.locs, self.index.expand(batch_shape), self.scale_tril,
                                  self.scales, self.center, validate_args=False)

    def component_log_probs(self, value: torch.Tensor) -> torch.Tensor:
        """log N(value; mu_k, Sigma_k) for every k: shape ``value.shape[:-1] + (K,)``."""
        k, d = self.locs.shape
        locs = self.locs - self.center
        if self.scales is not None:
            precision = self.scales.reciprocal().diag_embed()
            log_det = self.scales.log().sum(-1)
        else:
            eye = torch.eye(d, dtype=locs.dtype, device=locs.device)
            precision = torch.linalg.solve_triangular(self.scale_tril, eye, upper=False).mT
            log_det = self.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        # [x - c, 1] @ [[P_1 .. P_K], [-(mu_1 - c) P_1 .. -(mu_K - c) P_K]]: residuals (..., K, D)
        shifted = (locs.unsqueeze(-2) @ precision).reshape(1, k * d)
        stacked = torch.cat([precision.transpose(0, 1).reshape(d, k * d), -shifted])
        centred = value - self.center
        augmented = torch.cat([centred, torch.ones_like(centred[..., :1])], -1)
        residual = (augmented @ stacked).unflatten(-1, (k, d))
        return -0.5 * (residual * residual).sum(-1) - log_det - 0.5 * d * math.log(2 * math.pi)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return Vindex(self.component_log_probs(value))[..., self.index]

    @torch.no_grad()
    def sample(self, sample_shape=()) -> torch.Tensor:
        index = self.index.expand(torch.Size(sample_shape) + self.batch_shape)
        noise = torch.randn(index.shape + self.event_shape, dtype=self.locs.dtype, device=self.locs.device)
        if self.scales is not None:
            return self.locs[index] + self.scales[index] * noise
        return self.locs[index] + (self.scale_tril[index] @ noise.unsqueeze(-1)).squeeze(-1)


class MixtureModel(ZooModel):
    """Gaussian mixture; see the module docstring for the maths, shapes and initialisation."""

    capabilities = Capabilities(exact_log_prob=True, closed_form_loss=True)

    def __init__(self, config: MixtureConfig | None = None):
        super().__init__()
        config = MixtureConfig() if config is None else config
        self.config = config
        self.num_components, self.dim = config.num_components, config.dim
        self.covariance, self.init = config.covariance, config.init
        self.event_shape = (self.dim,)
        k, d = self.num_components, self.dim
        self.weight_logits = nn.Parameter(torch.zeros(k))
        self.unit_locs = nn.Parameter(torch.zeros(k, d))
        if self.covariance == "full":
            self.unit_scale_tril = nn.Parameter(torch.zeros(k, d, d))
        else:
            self.unit_log_scales = nn.Parameter(torch.zeros(k, d))
        self.register_buffer("shift", torch.zeros(d))
        self.register_buffer("scale", torch.ones(d))
        self.register_buffer("initialised", torch.tensor(False))
        self._ready = False

    # --- parameters in data units -------------------------------------------------------
    @property
    def weights(self) -> torch.Tensor:
        return self.weight_logits.softmax(-1)

    @property
    def locs(self) -> torch.Tensor:
        return self.shift + self.scale * self.unit_locs

    @property
    def scales(self) -> torch.Tensor:
        """Per-dimension standard deviations (K, D) of a diagonal model."""
        return self.scale * (self.unit_log_scales.exp() + MIN_SCALE)

    @property
    def scale_tril(self) -> torch.Tensor:
        if self.covariance == "diag":
            return self.scales.diag_embed()
        # L_k = diag(scale) L_unit_k
        raw = self.unit_scale_tril
        unit = raw.tril(-1) + (raw.diagonal(dim1=-2, dim2=-1).exp() + MIN_SCALE).diag_embed()
        return self.scale[:, None] * unit

    @property
    def covariances(self) -> torch.Tensor:
        tril = self.scale_tril
        return tril @ tril.transpose(-1, -2)

    def components(self, index: torch.Tensor) -> GaussianComponents:
        """N(mu_z, Sigma_z) for the component labels ``index``; batch shape ``index.shape``."""
        if self.covariance == "diag":
            return GaussianComponents(self.locs, index, scales=self.scales, center=self.shift)
        return GaussianComponents(self.locs, index, scale_tril=self.scale_tril, center=self.shift)

    # --- Pyro programs ----------------------------------------------------------------------
    def model(self, x: torch.Tensor, num_data: int | None = None):
        """p(x, z); initialises the parameters from ``x`` on first use (see the module docstring)."""
        self._initialise_once(x)
        self._mixture(x, num_data)

    def _initialise_once(self, x: torch.Tensor) -> None:
        if not self._ready:
            self._ready = bool(self.initialised)
            if not self._ready:
                self.initialise(x)

    def _mixture(self, x: torch.Tensor, num_data: int | None = None):
        with self.data_plate(x, num_data):
            z = pyro.sample(
                "assignment",
                dist.Categorical(logits=self.weight_logits),
                infer={"enumerate": "parallel"},
            )
            pyro.sample("x", self.components(z), obs=x)

    def guide(self, x: torch.Tensor, num_data: int | None = None):
        pass

    def elbo_loss(self, x: torch.Tensor, num_data: int | None = None) -> torch.Tensor:
        """-sum_n log p(x_n) scaled by ``num_data / len(x)``: TraceEnum_ELBO's value for this model
        (the guide is empty), computed directly; initialises on first use like ``model``."""
        self._initialise_once(x)
        return -self.exact_log_prob(x).sum() * self.batch_scale(x, num_data)

    # --- exact queries ----------------------------------------------------------------------
    def joint_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(x_n; mu_k, Sigma_k), shape (N, K)."""
        everyone = torch.arange(self.num_components, device=x.device)
        return self.weight_logits.log_softmax(-1) + self.components(everyone).component_log_probs(x)

    def exact_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x_n) = logsumexp_k [log w_k + log N(x_n; mu_k, Sigma_k)], shape (N,)."""
        return self.joint_log_prob(x).logsumexp(-1)

    @torch.no_grad()
    def posterior(self, x: torch.Tensor) -> torch.Tensor:
        """Responsibilities p(z_n = k | x_n) = softmax_k(log w_k + log N(x_n; mu_k, Sigma_k)), shape (N, K).

        Bayes' rule on :meth:`joint_log_prob`, the quantity Pyro's ``TraceEnum_ELBO.compute_marginals``
        returns for ``model``, written out because pyro 1.9's version fails with a KeyError on a
        single data point (a one-row test split of a two-row CSV).
        """
        return self.joint_log_prob(x).softmax(-1)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """Ancestral draws: z ~ Categorical(w), x ~ N(mu_z, Sigma_z); shape (n, D)."""
        z = dist.Categorical(logits=self.weight_logits).sample((n,))
        return self.components(z).sample()

    # --- initialisation and parameter setting ---------------------------------------------
    @torch.no_grad()
    def initialise(self, x: torch.Tensor) -> None:
        """Weights, means, covariances from standardised ``x`` (N, D) by EM or k-means (``init``)."""
        x = x.detach()
        self.shift.copy_(x.mean(0))
        std = x.std(0) if x.shape[0] > 1 else torch.ones_like(self.scale)
        self.scale.copy_(torch.where(std > 0, std, torch.ones_like(std)))
        units = (x - self.shift) / self.scale
        n, d = units.shape
        if self.covariance == "full" and n <= d:
            raise DataError(
                f"the mixture is initialised from {n} training row(s) of {d} column(s), too few for a full "
                f"{d}x{d} covariance; give more rows than columns (or a larger `batch_size`), drop "
                "columns, or use `covariance=diag`"
            )
        try:
            if self.init == "em" and n > self.num_components:
                weights, locs, covs = _em_parameters(units, self.num_components, self.covariance)
            else:
                labels = _kmeans_labels(units, self.num_components)
                weights, locs, covs = _hard_assignment_moments(units, labels, self.num_components)
            self._set_unit_parameters(weights, locs, covs)
        except (torch.linalg.LinAlgError, np.linalg.LinAlgError) as err:
            raise DataError(
                f"the mixture's initial covariances are not positive definite ({str(err)[:80]}); "
                "drop constant or duplicated columns, standardise them, or use `covariance=diag`"
            ) from None

    @torch.no_grad()
    def set_parameters(self, weights, locs, covariances) -> None:
        """Set w (K,), mu (K, D) and Sigma (K, D, D) (or (K, D) variances when diagonal) in data units.

        Marks the module as initialised, so training starts from these values.
        """
        like = self.unit_locs
        weights, locs, covs = (torch.as_tensor(v, dtype=like.dtype, device=like.device)
                               for v in (weights, locs, covariances))
        if covs.dim() == 2:
            covs = covs.diag_embed()
        # Sigma_unit = diag(1/scale) Sigma diag(1/scale)
        units = covs / (self.scale[:, None] * self.scale)
        self._set_unit_parameters(weights, (locs - self.shift) / self.scale, units)

    def _set_unit_parameters(self, weights, locs, covs) -> None:
        self.weight_logits.copy_(weights.log() - weights.log().mean())
        self.unit_locs.copy_(locs)
        if self.covariance == "full":
            tril = torch.linalg.cholesky(covs)
            log_diagonal = _log_above_floor(tril.diagonal(dim1=-2, dim2=-1))
            self.unit_scale_tril.copy_(tril.tril(-1) + log_diagonal.diag_embed())
        else:
            self.unit_log_scales.copy_(_log_above_floor(covs.diagonal(dim1=-2, dim2=-1).sqrt()))
        self.initialised.fill_(True)
        self._ready = True

    def _load_from_state_dict(self, *args, **kwargs):
        self._ready = False
        super()._load_from_state_dict(*args, **kwargs)

    # --- reports ------------------------------------------------------------------------------
    @torch.no_grad()
    def metrics(self, data: DataSplit) -> dict:
        x = data.x.to(self.device)
        result = {
            "log_lik_per_point": float(self.exact_log_prob(x).mean()),
            "log_lik_unit": "nats per data point",
            "weights": self.weights.tolist(),
            "locs": self.locs.tolist(),
        }
        if data.y is not None and int(data.y.max()) < self.num_components:
            result["assignment_accuracy"] = _matched_accuracy(self.posterior(x), data.y.to(x.device))
        return result


def _log_above_floor(scales: torch.Tensor) -> torch.Tensor:
    """Inverse of s = exp(r) + MIN_SCALE (scales at or below the floor map to a tiny excess)."""
    return (scales - MIN_SCALE).clamp(min=1e-12).log()


def _em_parameters(units: torch.Tensor, k: int, covariance: str):
    """Weights (K,), means (K, D), covariances (K, D, D) fitted by scikit-learn's GaussianMixture.

    Seeded from torch's global RNG, on at most ``KMEANS_POINTS`` random rows, with its
    covariance regulariser at the model's floor (``MIN_SCALE ** 2`` in standardised units).
    """
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    points = units.detach().cpu().double().numpy()
    if len(points) > KMEANS_POINTS:
        points = points[torch.randperm(len(points))[:KMEANS_POINTS].numpy()]
    gm = GaussianMixture(k, covariance_type=covariance, reg_covar=MIN_SCALE**2, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(points)
    covs = gm.covariances_ if covariance == "full" else np.stack([np.diag(v) for v in gm.covariances_])
    like = {"dtype": units.dtype, "device": units.device}
    return (torch.as_tensor(v, **like) for v in (gm.weights_, gm.means_, covs))


def _kmeans_labels(units: torch.Tensor, k: int) -> torch.Tensor:
    """Hard k-means labels (N,) of the rows of ``units``; seeded from torch's global RNG.

    k-means (3 k-means++ restarts) runs on at most ``KMEANS_POINTS`` random rows, then every
    row takes the label of its nearest centre.
    """
    n = units.shape[0]
    if n <= k:
        return torch.arange(n, device=units.device) % k
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    rows = torch.randperm(n)[:KMEANS_POINTS].numpy() if n > KMEANS_POINTS else slice(None)
    points = units.detach().cpu().double().numpy()
    with warnings.catch_warnings():
        # duplicate points may leave fewer distinct clusters; the moments below cope with that
        warnings.simplefilter("ignore", ConvergenceWarning)
        kmeans = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(points[rows])
    return torch.as_tensor(kmeans.predict(points), device=units.device, dtype=torch.long)


def _hard_assignment_moments(units: torch.Tensor, labels: torch.Tensor, k: int):
    """Weights (K,), means (K, D), covariances (K, D, D) of hard clusters in standardised units.

    w_k = (n_k + 1) / (N + K); Sigma_k = (S_k + I) / (n_k + 1) with S_k the scatter matrix about
    the cluster mean, i.e. the cluster covariance shrunk towards the identity so that it is
    positive definite for any n_k (an empty cluster gets the data mean and the identity).
    """
    n, d = units.shape
    onehot = nn.functional.one_hot(labels, k).to(units.dtype)  # (N, K)
    counts = onehot.sum(0)
    means = (onehot.T @ units) / counts.clamp(min=1)[:, None]
    means = torch.where(counts[:, None] > 0, means, units.mean(0))
    diff = units[:, None, :] - means  # (N, K, D)
    scatter = torch.einsum("nk,nkd,nke->kde", onehot, diff, diff)
    eye = torch.eye(d, dtype=units.dtype, device=units.device)
    covs = (scatter + eye) / (counts[:, None, None] + 1)
    weights = (counts + 1) / (n + k)
    return weights, means, covs


def _matched_accuracy(responsibilities: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy of argmax assignments under the best matching of components to labels."""
    k = responsibilities.shape[1]
    predicted = responsibilities.argmax(1)
    confusion = torch.zeros(k, k, device=labels.device)
    confusion.index_put_((predicted, labels.long()), torch.ones_like(labels, dtype=confusion.dtype),
                         accumulate=True)
    rows, cols = linear_sum_assignment(-confusion.cpu().numpy())
    return float(confusion[rows, cols].sum() / labels.numel())


__all__ = ["GaussianComponents", "KMEANS_POINTS", "MIN_SCALE", "MixtureModel"]
