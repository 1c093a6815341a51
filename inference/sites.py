"""What a site of a Pyro trace is, defined once: inside the data plate or not, latent or not.

A zoo program puts every per-data-point site inside ``pyro.plate(DATA_PLATE, ...)`` (see
:mod:`pyro_zoo.models.base`); a latent outside it is global (shared by all data points: weights, CPDs,
a scale), one inside it is local (one per data point: a VAE's z).
"""

from __future__ import annotations

from pyro.poutine.util import site_is_subsample

from pyro_zoo.models.base import DATA_PLATE


def in_data_plate(site: dict) -> bool:
    """Whether the trace site (or Pyro message) ``site`` sits inside the plate named DATA_PLATE."""
    return any(frame.name == DATA_PLATE for frame in site["cond_indep_stack"])


def is_latent(site: dict) -> bool:
    """A sample site the program draws: not observed, not conditioned away, not a plate's
    subsample, not an AutoGuide's auxiliary joint latent."""
    return (site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
            and not site["infer"].get("was_observed") and not site["infer"].get("is_auxiliary"))


def is_global_latent(site: dict) -> bool:
    """A latent outside the data plate."""
    return is_latent(site) and not in_data_plate(site)


def is_local_latent(site: dict) -> bool:
    """A latent inside the data plate."""
    return is_latent(site) and in_data_plate(site)


__all__ = ["DATA_PLATE", "in_data_plate", "is_global_latent", "is_latent", "is_local_latent"]
