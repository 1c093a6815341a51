"""Probabilistic PCA: the linear-Gaussian latent factor model, with exact marginal and posterior.

Generative story (Tipping & Bishop 1999; the course slides' Gaussian model, sampled through its
eigen-decomposition x = mu + E Lambda^{1/2} z, is the sigma -> 0, q = D special case):

    z ~ N(0, I_q),                          q = latent_dim
    x | z ~ N(W z + mu, sigma^2 I_D),       D = data_dim, W: (D, q), mu: (D,), sigma > 0

Exact marginal: x ~ N(mu, W W^T + sigma^2 I_D) (``exact_log_prob``).
Exact posterior: z | x ~ N(M^{-1} W^T (x - mu), sigma^2 M^{-1}), M = W^T W + sigma^2 I_q
(``exact_posterior``).
Maximum likelihood (``closed_form_ml``, ``PPCA.fit_closed_form``): with the sample covariance
S = (1/N) sum_n (x_n - xbar)(x_n - xbar)^T = U Lambda U^T (eigenvalues descending),

    mu_ML = xbar,   sigma^2_ML = mean(lambda_{q+1}, ..., lambda_D),
    W_ML = U_q (Lambda_q - sigma^2_ML I)^{1/2}   (up to a rotation R on the right).

Guides: "amortized" q(z | x) = N(f_phi(x), L L^T) with f_phi linear (``guide_hidden=0``) or a tanh
MLP and a learned constant Cholesky factor L -- the linear one contains the exact posterior, so
the ELBO is tight at the optimum; "exact" q(z | x) = p(z | x) computed from the current (W, mu,
sigma), so p(x, z) / q(z | x) = p(x) for every z and importance sampling is exact.

Default data: scikit-learn's 8x8 digits scaled to [0, 1] (D = 64; the zoo's fixed split of
``models.data.load_digits``, 1438 train / 359 test images). data="synthetic" draws from
``synthetic_parameters()`` (fixed seed); data="<path>.csv" reads a user file.

Shapes: x is (N, D); inside an outer particles plate z is (k, N, q); ``exact_log_prob`` returns
(N,); ``exact_posterior`` a MultivariateNormal with batch shape (N,) and event shape (q,).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import constraints, kl_divergence, transform_to

from models import MAX_DIM, MAX_UNITS, Hparam, ModelSpec, check_hparams
from models.base import Capabilities, DataError, DataSplit, ZooModel
from models.data import csv_split, load_digits

SPLIT_SEED = 0
SYNTHETIC_SEED = 1
SYNTHETIC_SIGMA = 0.1
NUM_SYNTHETIC = (2000, 1000)
NUM_SMOKE = 200
SPEC_HPARAMS = {"data_dim": 64, "latent_dim": 10, "guide": "amortized", "guide_hidden": 0}


class PPCA(ZooModel):
    """z ~ N(0, I_q), x | z ~ N(W z + mu, sigma^2 I_D); see the module docstring."""

    capabilities = Capabilities(exact_log_prob=True, exact_posterior=True)

    def __init__(
        self, data_dim: int = 64, latent_dim: int = 10, guide: str = "amortized", guide_hidden: int = 0
    ):
        super().__init__()
        if guide not in ("amortized", "exact"):
            raise DataError(f"unknown guide {guide!r}; choose 'amortized' or 'exact'")
        self.data_dim = data_dim
        self.latent_dim = latent_dim
        self.guide_kind = guide
        self.event_shape = (data_dim,)
        self.W = nn.Parameter(0.1 * torch.randn(data_dim, latent_dim))
        self.mu = nn.Parameter(torch.zeros(data_dim))
        self.raw_sigma = nn.Parameter(torch.zeros(()))
        if guide == "amortized":
            if guide_hidden:
                self.encoder = nn.Sequential(
                    nn.Linear(data_dim, guide_hidden), nn.Tanh(), nn.Linear(guide_hidden, latent_dim)
                )
            else:
                self.encoder = nn.Linear(data_dim, latent_dim)
            self.raw_scale_tril = nn.Parameter(torch.zeros(latent_dim, latent_dim))

    @property
    def sigma(self) -> torch.Tensor:
        return transform_to(constraints.positive)(self.raw_sigma)

    @property
    def scale_tril(self) -> torch.Tensor:
        """The amortized guide's constant Cholesky factor L, (q, q)."""
        return transform_to(constraints.lower_cholesky)(self.raw_scale_tril)

    def marginal(self) -> dist.LowRankMultivariateNormal:
        """p(x) = N(mu, W W^T + sigma^2 I), event shape (D,)."""
        cov_diag = self.sigma.pow(2).expand(self.data_dim)
        return dist.LowRankMultivariateNormal(self.mu, self.W, cov_diag)

    def exact_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log N(x; mu, W W^T + sigma^2 I), shape (N,)."""
        return self.marginal().log_prob(x)

    def exact_posterior(self, x: torch.Tensor) -> dist.MultivariateNormal:
        """p(z | x) = N(M^{-1} W^T (x - mu), sigma^2 M^{-1}), M = W^T W + sigma^2 I.

        Batch shape (N,), event shape (q,).
        """
        variance = self.sigma.pow(2)
        m = self.W.T @ self.W + variance * torch.eye(self.latent_dim, dtype=x.dtype, device=x.device)
        chol_m = torch.linalg.cholesky(m)
        loc = torch.cholesky_solve(self.W.T @ (x - self.mu).T, chol_m).T
        cov = variance * torch.cholesky_inverse(chol_m)
        return dist.MultivariateNormal(loc, scale_tril=torch.linalg.cholesky(cov))

    def model(self, x: torch.Tensor, num_data: int | None = None):
        prior = dist.Normal(x.new_zeros(self.latent_dim), x.new_ones(self.latent_dim)).to_event(1)
        with self.data_plate(x, num_data):
            z = pyro.sample("z", prior)
            pyro.sample("x", dist.Normal(z @ self.W.T + self.mu, self.sigma).to_event(1), obs=x)

    def guide(self, x: torch.Tensor, num_data: int | None = None):
        with self.data_plate(x, num_data):
            pyro.sample("z", self.posterior(x))

    def posterior(self, x: torch.Tensor) -> dist.MultivariateNormal:
        """The guide's q(z | x): batch (N,), event (q,)."""
        if self.guide_kind == "exact":
            return self.exact_posterior(x)
        return dist.MultivariateNormal(self.encoder(x), scale_tril=self.scale_tril)

    def sample(self, n: int, noise: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws x = mu + W z (+ sigma eps), shape (n, D)."""
        device = self.device
        with torch.no_grad():
            z = torch.randn(n, self.latent_dim, generator=generator, device=device)
            x = z @ self.W.T + self.mu
            if noise:
                x = x + self.sigma * torch.randn(n, self.data_dim, generator=generator, device=device)
            return x

    @torch.no_grad()
    def fit_closed_form(self, x: torch.Tensor) -> PPCA:
        """Set (W, mu, sigma) to the Tipping-Bishop ML solution for ``x`` and, for a linear amortized
        guide, the guide to the exact posterior of that solution. Returns ``self``."""
        self.check_data(x)
        solution = closed_form_ml(x, self.latent_dim)
        self.W.copy_(solution["W"])
        self.mu.copy_(solution["mu"])
        self.raw_sigma.copy_(0.5 * solution["sigma2"].log())
        if self.guide_kind == "amortized" and isinstance(self.encoder, nn.Linear):
            posterior = self.exact_posterior(x[:1])
            # loc = M^{-1} W^T (x - mu) = G x - G mu with G = M^{-1} W^T
            eye = torch.eye(self.latent_dim, dtype=x.dtype, device=x.device)
            gain = torch.linalg.solve(self.W.T @ self.W + self.sigma.pow(2) * eye, self.W.T)
            self.encoder.weight.copy_(gain)
            self.encoder.bias.copy_(-gain @ self.mu)
            self.raw_scale_tril.copy_(transform_to(constraints.lower_cholesky).inv(posterior.scale_tril[0]))
        return self

    def metrics(self, data: DataSplit) -> dict:
        x = data.x.to(self.device)
        with torch.no_grad():
            # the guide against the exact posterior: KL(q(z | x) || p(z | x)) = log p(x) - ELBO(x)
            kl = kl_divergence(self.posterior(x), self.exact_posterior(x))
            return {"exact_log_prob_nats": float(self.exact_log_prob(x).mean()), "sigma": float(self.sigma),
                    "posterior_kl_nats": float(kl.mean())}

    def figures(self, data: DataSplit, out_dir: Path) -> dict[str, Path]:
        from matplotlib.figure import Figure

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        side = math.isqrt(self.data_dim)
        paths = {}
        if side * side != self.data_dim:
            paths["data vs model samples"] = out_dir / "ppca_samples.png"
            fig = _scatter(Figure(figsize=(8, 4)), data.x[:2000].cpu(), self.sample(2000).cpu())
            fig.savefig(paths["data vs model samples"], dpi=110)
            return paths
        paths["digits vs model samples"] = out_dir / "ppca_samples.png"
        panels = [
            ("data", data.x[:32].cpu()),
            ("mu + W z", self.sample(32, noise=False).cpu()),
            ("mu + W z + sigma eps", self.sample(32).cpu()),
        ]
        fig = Figure(figsize=(12, 3.1))
        for ax, (title, images) in zip(fig.subplots(1, 3), panels, strict=True):
            ax.imshow(_tile(images, side, columns=8), cmap="gray_r", vmin=0, vmax=1)
            ax.set_title(title)
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(paths["digits vs model samples"], dpi=110)
        paths["eigen-digits"] = out_dir / "ppca_eigendigits.png"
        fig = self._eigen_figure(Figure(figsize=(12, 2.0)), side)
        fig.savefig(paths["eigen-digits"], dpi=110)
        return paths

    def _eigen_figure(self, fig, side: int):
        with torch.no_grad():
            directions, singular, _ = torch.linalg.svd(self.W.cpu(), full_matrices=False)
        count = min(self.latent_dim, 8)
        axes = fig.subplots(1, count + 1)
        axes[0].imshow(self.mu.detach().cpu().reshape(side, side).numpy(), cmap="gray_r")
        axes[0].set_title("mu")
        for i in range(count):
            limit = float(directions[:, i].abs().max())
            image = directions[:, i].reshape(side, side).numpy()
            axes[i + 1].imshow(image, cmap="RdBu", vmin=-limit, vmax=limit)
            axes[i + 1].set_title(f"u{i + 1} (s={float(singular[i]):.2f})", fontsize=8)
        for ax in axes:
            ax.axis("off")
        fig.tight_layout()
        return fig


def _tile(images: torch.Tensor, side: int, columns: int) -> np.ndarray:
    rows = math.ceil(images.shape[0] / columns)
    canvas = np.zeros((rows * (side + 1), columns * (side + 1)))
    for i, image in enumerate(images.clamp(0, 1).numpy()):
        r, c = divmod(i, columns)
        top, left = r * (side + 1), c * (side + 1)
        canvas[top:top + side, left:left + side] = image.reshape(side, side)
    return canvas


def _scatter(fig, data: torch.Tensor, samples: torch.Tensor):
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    for ax, values, title in zip(axes, (data, samples), ("data", "model samples"), strict=True):
        values = values.numpy()
        ax.scatter(values[:, 0], values[:, min(1, values.shape[1] - 1)], s=3, alpha=0.4)
        ax.set_title(title)
    fig.tight_layout()
    return fig


def closed_form_ml(x: torch.Tensor, latent_dim: int) -> dict[str, torch.Tensor]:
    """Tipping & Bishop's ML estimate from the eigen-decomposition of the sample covariance (1/N).

    Returns {"mu": (D,), "W": (D, q), "sigma2": (), "eigenvalues": (D,) descending}, in x's dtype.
    """
    num_data, data_dim = x.shape
    if not 0 < latent_dim < data_dim:
        raise ValueError(f"latent_dim must be in [1, {data_dim - 1}] for {data_dim}-dimensional data")
    values = x.double()
    mu = values.mean(0)
    centred = values - mu
    eigenvalues, eigenvectors = torch.linalg.eigh(centred.T @ centred / num_data)
    eigenvalues, eigenvectors = eigenvalues.flip(0).clamp(min=0), eigenvectors.flip(1)
    sigma2 = eigenvalues[latent_dim:].mean()
    # W = U_q (Lambda_q - sigma^2 I)^{1/2}
    w = eigenvectors[:, :latent_dim] * (eigenvalues[:latent_dim] - sigma2).clamp(min=0).sqrt()
    return {"mu": mu.to(x.dtype), "W": w.to(x.dtype), "sigma2": sigma2.to(x.dtype),
            "eigenvalues": eigenvalues.to(x.dtype)}


def synthetic_parameters(data_dim: int = 64, latent_dim: int = 10) -> dict[str, torch.Tensor]:
    """The known (W, mu, sigma) behind data="synthetic": W_ij ~ N(0, 0.3^2), mu_i ~ U(0, 1), sigma = 0.1,
    drawn with seed SYNTHETIC_SEED."""
    generator = torch.Generator().manual_seed(SYNTHETIC_SEED)
    w = 0.3 * torch.randn(data_dim, latent_dim, generator=generator)
    mu = torch.rand(data_dim, generator=generator)
    return {"W": w, "mu": mu, "sigma": torch.tensor(SYNTHETIC_SIGMA)}


def build(**hparams) -> PPCA:
    """A :class:`PPCA` from ``hparams`` checked against ``SPEC.rules`` (:class:`DataError` if bad)."""
    return PPCA(**check_hparams(SPEC, hparams))


def hparams_for(data: DataSplit) -> dict:
    """``{"data_dim": D}``, and ``latent_dim = D - 1`` when the default q = 10 does not fit below D."""
    data_dim = int(data.x.shape[1])
    implied = {"data_dim": data_dim}
    if data_dim <= SPEC_HPARAMS["latent_dim"]:
        implied["latent_dim"] = max(1, data_dim - 1)
    return implied


def load_data(split: str, data_dir=None, data: str | None = None, smoke: bool = False) -> DataSplit:
    """data=None or "digits": sklearn's 8x8 digits / 16; "synthetic": draws from
    ``synthetic_parameters()``; "<path>.csv": one data point per row, rows shuffled (seed 0) and
    split 80 % / 20 %. ``smoke`` keeps the first NUM_SMOKE rows."""
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; use 'train' or 'test'")
    y = None
    if data in (None, "digits"):
        digits = load_digits(split)
        x, y, source = digits.x, digits.y, digits.source
    elif data == "synthetic":
        x = _synthetic(split)
        source = "synthetic: PPCA with synthetic_parameters() (models/ppca.py)"
    elif str(data).endswith(".csv"):
        x = csv_split(data, split)
        source = str(data)
    else:
        raise DataError(f"unknown data {data!r} for ppca; use 'digits', 'synthetic' or a path ending in .csv")
    if smoke:
        x = x[:NUM_SMOKE]
        y = None if y is None else y[:NUM_SMOKE]
        source = f"{source}, first {x.shape[0]}"
    return DataSplit(x=x, y=y, source=source, info={"split": split, "num_data": x.shape[0]})


def _synthetic(split: str) -> torch.Tensor:
    params = synthetic_parameters()
    generator = torch.Generator().manual_seed(SYNTHETIC_SEED + 1)
    total = sum(NUM_SYNTHETIC)
    z = torch.randn(total, params["W"].shape[1], generator=generator)
    noise = torch.randn(total, params["W"].shape[0], generator=generator)
    x = z @ params["W"].T + params["mu"] + params["sigma"] * noise
    return x[:NUM_SYNTHETIC[0]] if split == "train" else x[NUM_SYNTHETIC[0]:]


SPEC = ModelSpec(
    name="ppca",
    description="Probabilistic PCA (linear-Gaussian factor model), exact log p(x), posterior and ML fit",
    build=build,
    load_data=load_data,
    hparams=SPEC_HPARAMS,
    train={"steps": 3000, "batch_size": None, "lr": 1e-2},
    smoke_hparams={},
    smoke_train={"steps": 1000},
    objective={"name": "Trace_ELBO"},
    hparams_for=hparams_for,
    rules={
        "data_dim": Hparam(int, 1, MAX_DIM),
        "latent_dim": Hparam(int, 1, "data_dim"),
        "guide": Hparam(str, choices=("amortized", "exact")),
        "guide_hidden": Hparam(int, 0, MAX_UNITS),
    },
)
