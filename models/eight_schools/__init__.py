"""The eight schools of the zoo: its spec (see :mod:`pyro_zoo.models.eight_schools.model` for the maths).

Data: Rubin's (1981) coaching effects y_j and standard errors sigma_j of eight schools
(:data:`RUBIN`), the same rows in both splits (the posterior is over these schools), or a CSV
file with the two columns (y_j, sigma_j) and one school per row.
"""

from __future__ import annotations

import torch

from pyro_zoo.models.base import DataError, DataSplit
from pyro_zoo.models.data import read_csv
from pyro_zoo.models.eight_schools.config import EightSchoolsConfig
from pyro_zoo.models.eight_schools.figures import figures
from pyro_zoo.models.eight_schools.model import EightSchools, KnownScaleNormal, quadrature
from pyro_zoo.models.spec import ModelSpec

#: (y_j, sigma_j): estimated coaching effects on SAT-V scores and their standard errors
RUBIN = ((28.0, 15.0), (8.0, 10.0), (-3.0, 16.0), (7.0, 11.0), (-1.0, 9.0), (1.0, 11.0), (18.0, 10.0),
         (12.0, 18.0))


def load_data(split: str, data_dir=None, data=None, smoke: bool = False) -> DataSplit:
    """The eight schools (x (8, 2): effect, standard error), or a CSV of such rows; ``split``,
    ``data_dir`` and ``smoke`` change nothing."""
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    if data in (None, "rubin"):
        return DataSplit(x=torch.tensor(RUBIN), source="eight schools (Rubin 1981): effect, standard error",
                         info={"data": "rubin"})
    rows = read_csv(data, hint="give two numeric columns: effect y_j and standard error sigma_j")
    if rows.shape[1] != 2:
        raise DataError(f"{data!r} has {rows.shape[1]} columns; give two: effect y_j and standard error "
                        "sigma_j")
    return DataSplit(x=torch.as_tensor(rows, dtype=torch.float32), source=f"{data} (effect, standard error)",
                     info={"data": str(data)})


def hparams_for(data: DataSplit) -> dict:
    return {"num_schools": int(data.x.shape[0])}


SPEC = ModelSpec(
    name="eight_schools",
    description="Eight schools: hierarchical normal model (centred or non-centred), AutoGuide vs NUTS vs "
                "the exact evidence and posterior by quadrature over tau",
    config=EightSchoolsConfig,
    build=EightSchools,
    load_data=load_data,
    train={"steps": 5000, "lr": 0.01},
    smoke_train={"steps": 1000, "lr": 0.02},
    objective={"name": "Trace_ELBO", "num_particles": 16},
    hparams_for=hparams_for,
    figures=figures,
)

__all__ = ["EightSchools", "EightSchoolsConfig", "KnownScaleNormal", "RUBIN", "SPEC", "hparams_for",
           "load_data", "quadrature"]
