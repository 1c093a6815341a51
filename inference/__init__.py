"""Inference for any Pyro program of the zoo's contract: SVI training (:mod:`pyro_zoo.inference.train`),
the estimator ladder (importance sampling, AIS and BDMC, SBC), PSIS and latent-usage diagnostics,
ArviZ conversion, the evaluation report (:mod:`pyro_zoo.inference.evaluate`) and data-parallel
helpers for ``torchrun``. Installed as ``pyro_zoo.inference``."""
