"""Deep latent Gaussian model (DLGM) with a 1- or 2-dimensional latent and exact log p(x).

Generative story (course slides, "Modelos gaussianos profundos": an infinite mixture of
Gaussians; Rezende, Mohamed & Wierstra 2014; Kingma & Welling 2014):

    z ~ N(0, I_d),                          d = latent_dim in {1, 2}
    x | z ~ N(mu_theta(z), Sigma_theta(z)),   x in R^D, D = data_dim (2 in the slides)

The "seed" decoder is the slides' example, theta = (A, B, c, d):

    mu_theta(z)    = sigmoid(A z + c)                A: (D, d), c: (D,)
    Sigma_theta(z) = diag(exp(sigmoid(B z + d)))     B: (D, d), d: (D,)

so every coordinate of x has conditional mean in (0, 1) and conditional variance in (1, e);
p(x) is a continuous mixture of such Gaussians. The "mlp" decoder replaces both networks by one
tanh MLP z -> (loc, log_scale), each of shape (D,), with one hidden layer of ``decoder_hidden`` units.

Guide (amortised, mean field): q_phi(z | x) = N(m_phi(x), diag(s_phi(x)^2)), with
(m_phi, log(exp(s_phi) - 1)) = MLP(x) (one tanh hidden layer of ``guide_hidden`` units).

Exact references (the latent is at most 2-dimensional):

* log p(x) = log integral N(z; 0, I) p(x | z) dz by the trapezoid rule on a uniform grid over
  [-z_max, z_max]^d (1601 nodes for d = 1, 201^2 for d = 2, z_max = 8). The integrand is smooth
  and its tails are dominated by the prior, so the rule converges geometrically in the grid size;
  refining the grid changes log p(x) by < 1e-5 nats (tests/test_dlgm.py).
* ELBO(x) = E_q[log p(x, z) - log q(z | x)] by the same trapezoid rule in q's own coordinates
  z = m + s * xi, xi ~ N(0, I) (401 nodes for d = 1, 81^2 for d = 2, on [-8, 8]^d), and
  KL(q(z | x) || p(z | x)) = log p(x) - ELBO(x).

Default data (:mod:`pyro_zoo.models.dlgm.data`): 4000 draws (2000 train, 2000 test; seed 0) from the seed
decoder with d = 1 and the fixed parameters TRUE_A, TRUE_B, TRUE_C, TRUE_D below; ``true_model()``
builds that model.

Shapes: x is (N, D); inside an outer particles plate z is (k, N, d); ``exact_log_prob``,
``elbo_quadrature`` and ``posterior_kl`` return (N,).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyro_zoo.models.base import Capabilities, DataSplit, ZooModel
from pyro_zoo.models.dlgm.config import DLGMConfig
from pyro_zoo.models.nn import MIN_SCALE

#: true decoder of the default data (D = 2, d = 1): mu(z) = sigmoid(TRUE_A z + TRUE_C) moves
#: from (0, 1) to (1, 0) as z goes from -inf to +inf ...
TRUE_A = ((4.0,), (-4.0,))
#: ... and Sigma(z) = diag(exp(sigmoid(TRUE_B z + TRUE_D))) grows from about I to about e I.
TRUE_B = ((3.0,), (3.0,))
TRUE_C = (0.5, -0.5)
TRUE_D = (-1.0, 1.0)

#: quadrature nodes per latent axis for log p(x), and for the ELBO, by latent_dim
GRID_SIZE = {1: 1601, 2: 201}
ELBO_GRID_SIZE = {1: 401, 2: 81}
Z_MAX = 8.0


class DLGM(ZooModel):
    """z ~ N(0, I_d), x | z ~ N(mu(z), Sigma(z)); see the module docstring."""

    #: log p(x) by quadrature over z (the config keeps latent_dim at 1 or 2)
    capabilities = Capabilities(exact_log_prob=True)

    def __init__(self, config: DLGMConfig | None = None):
        super().__init__()
        config = DLGMConfig() if config is None else config
        self.config = config
        data_dim, latent_dim = config.data_dim, config.latent_dim
        guide_hidden, decoder_hidden = config.guide_hidden, config.decoder_hidden
        self.data_dim, self.latent_dim, self.decoder = data_dim, latent_dim, config.decoder
        self.event_shape = (data_dim,)
        if self.decoder == "seed":
            self.A = nn.Parameter(0.5 * torch.randn(data_dim, latent_dim))
            self.B = nn.Parameter(0.5 * torch.randn(data_dim, latent_dim))
            self.c = nn.Parameter(torch.zeros(data_dim))
            self.d = nn.Parameter(torch.zeros(data_dim))
        else:
            self.net = nn.Sequential(
                nn.Linear(latent_dim, decoder_hidden), nn.Tanh(), nn.Linear(decoder_hidden, 2 * data_dim)
            )
        self.encoder = nn.Sequential(
            nn.Linear(data_dim, guide_hidden), nn.Tanh(), nn.Linear(guide_hidden, 2 * latent_dim)
        )

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loc, scale) of p(x | z), each (..., D), for z of shape (..., d)."""
        if self.decoder == "seed":
            loc = torch.sigmoid(z @ self.A.T + self.c)
            # scale = Sigma^{1/2} = exp(sigmoid(B z + d) / 2)
            scale = torch.exp(0.5 * torch.sigmoid(z @ self.B.T + self.d))
            return loc, scale
        loc, log_scale = self.net(z).chunk(2, dim=-1)
        return loc, log_scale.exp()

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(m, s) of q(z | x) = N(m, diag(s^2)), each (..., d), for x of shape (..., D)."""
        loc, raw_scale = self.encoder(x).chunk(2, dim=-1)
        return loc, F.softplus(raw_scale) + MIN_SCALE

    def prior(self, like: torch.Tensor) -> dist.Distribution:
        return dist.Normal(like.new_zeros(self.latent_dim), like.new_ones(self.latent_dim)).to_event(1)

    def model(self, x: torch.Tensor, num_data: int | None = None):
        with self.data_plate(x, num_data):
            z = pyro.sample("z", self.prior(x))
            loc, scale = self.decode(z)
            pyro.sample("x", dist.Normal(loc, scale).to_event(1), obs=x)

    def guide(self, x: torch.Tensor, num_data: int | None = None):
        with self.data_plate(x, num_data):
            loc, scale = self.encode(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x, z) = log N(z; 0, I) + log N(x; mu(z), Sigma(z)); x (..., D), z (..., d) -> (...)."""
        loc, scale = self.decode(z)
        return self.prior(z).log_prob(z) + dist.Normal(loc, scale).log_prob(x).sum(-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n ancestral draws of x, shape (n, D)."""
        device = self.device
        with torch.no_grad():
            z = torch.randn(n, self.latent_dim, generator=generator, device=device)
            loc, scale = self.decode(z)
            return loc + scale * torch.randn(n, self.data_dim, generator=generator, device=device)

    def _grid(self, like: torch.Tensor, grid_size: int | None, z_max: float):
        """Nodes z (G, d) and log weights (G,) of the trapezoid rule for integral N(z; 0, I) f(z) dz."""
        size = grid_size or GRID_SIZE[self.latent_dim]
        axis = torch.linspace(-z_max, z_max, size, dtype=like.dtype, device=like.device)
        z = axis[:, None] if self.latent_dim == 1 else torch.cartesian_prod(axis, axis)
        # the end nodes carry weight h/2, but N(+-z_max; 0, 1) is negligible there
        log_h = math.log(2 * z_max / (size - 1))
        return z, self.latent_dim * log_h + self.prior(z).log_prob(z)

    @torch.no_grad()
    def exact_log_prob(
        self, x: torch.Tensor, grid_size: int | None = None, z_max: float = Z_MAX
    ) -> torch.Tensor:
        """log p(x) = log integral N(z; 0, I) p(x | z) dz by the trapezoid rule, shape (N,).

        Computed in float64; ``grid_size`` nodes per latent axis on [-z_max, z_max].
        """
        z, log_w = self._grid(x, grid_size, z_max)
        loc, scale = (t.double() for t in self.decode(z))
        precision = scale.pow(-2)
        # log N(x; mu_g, diag(s_g^2)) = x . (mu_g a_g) - 1/2 x^2 . a_g - 1/2 mu_g^2 . a_g - sum log s_g
        #                               - D/2 log 2 pi, with a_g = 1 / s_g^2: two matrix products.
        offset = log_w.double() - scale.log().sum(-1) - 0.5 * (loc.pow(2) * precision).sum(-1)
        offset = offset - 0.5 * self.data_dim * math.log(2 * math.pi)
        rows = max(1, 2**23 // z.shape[0])
        parts = []
        for chunk in x.double().split(rows):
            log_lik = chunk @ (loc * precision).T - 0.5 * chunk.pow(2) @ precision.T
            parts.append(torch.logsumexp(log_lik + offset, dim=-1))
        return torch.cat(parts).to(x.dtype)

    @torch.no_grad()
    def elbo_quadrature(self, x: torch.Tensor, grid_size: int | None = None) -> torch.Tensor:
        """ELBO(x) = E_q[log p(x, z) - log q(z | x)] by the trapezoid rule in q's coordinates, shape (N,).

        z = m + s * xi with ``grid_size`` nodes xi per axis on [-Z_MAX, Z_MAX] weighted by N(xi; 0, I).
        """
        xi, log_w = self._grid(x, grid_size or ELBO_GRID_SIZE[self.latent_dim], Z_MAX)
        weights = log_w.exp()
        rows = max(1, 2**20 // xi.shape[0])
        parts = []
        for chunk in x.split(rows):
            m, s = self.encode(chunk)
            z = m[:, None, :] + s[:, None, :] * xi
            # log q(z | x) = log N(xi; 0, I) - sum log s
            log_q = self.prior(xi).log_prob(xi) - s.log().sum(-1, keepdim=True)
            parts.append((weights * (self.log_joint(chunk[:, None, :], z) - log_q)).sum(-1))
        return torch.cat(parts)

    def posterior_kl(self, x: torch.Tensor) -> torch.Tensor:
        """KL(q(z | x) || p(z | x)) = log p(x) - ELBO(x), both by quadrature, shape (N,)."""
        return self.exact_log_prob(x) - self.elbo_quadrature(x)

    @torch.no_grad()
    def posterior_density(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """p(z | x) = p(x, z) / p(x) for x (N, D) at nodes z (G, d), shape (N, G)."""
        return (self.log_joint(x[:, None, :], z) - self.exact_log_prob(x)[:, None]).exp()

    def metrics(self, data: DataSplit) -> dict:
        """Exact log p(x), the ELBO and KL(q(z | x) || p(z | x)) by quadrature, means over ``data``."""
        x = data.x.to(self.device)
        return {
            "exact_log_prob_nats": float(self.exact_log_prob(x).mean()),
            "elbo_quadrature_nats": float(self.elbo_quadrature(x).mean()),
            "posterior_kl_nats": float(self.posterior_kl(x).mean()),
        }


def true_model() -> DLGM:
    """The seed-decoder DLGM (D = 2, d = 1) with the fixed parameters TRUE_A, TRUE_B, TRUE_C, TRUE_D."""
    model = DLGM(DLGMConfig(data_dim=2, latent_dim=1, decoder="seed"))
    with torch.no_grad():
        model.A.copy_(torch.tensor(TRUE_A))
        model.B.copy_(torch.tensor(TRUE_B))
        model.c.copy_(torch.tensor(TRUE_C))
        model.d.copy_(torch.tensor(TRUE_D))
    return model.eval()


__all__ = [
    "DLGM", "ELBO_GRID_SIZE", "GRID_SIZE", "TRUE_A", "TRUE_B", "TRUE_C", "TRUE_D", "Z_MAX", "true_model"
]
