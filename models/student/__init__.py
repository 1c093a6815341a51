"""The student Bayesian network of the zoo: its spec (see :mod:`pyro_zoo.models.student.model` for the maths,
:mod:`pyro_zoo.models.student.queries` for the text queries of ``zoo query student``)."""

from __future__ import annotations

from pyro_zoo.models.spec import ModelSpec
from pyro_zoo.models.student.config import StudentConfig
from pyro_zoo.models.student.data import load_data
from pyro_zoo.models.student.figures import draw_cpd_bars, draw_dag, figures
from pyro_zoo.models.student.model import (
    CARDINALITY,
    GRADES,
    PARENTS,
    REPORTED_QUERIES,
    TRUE_CPDS,
    VARIABLES,
    QueryError,
    StudentNetwork,
    ancestral_sample,
    cpd_counts,
    cpd_shape,
    evidence_log_prob,
    joint_table,
    max_abs_cpd_error,
    query,
    swap_intelligence,
    true_cpds,
)
from pyro_zoo.models.student.queries import answer, answer_network, parse_query

SPEC = ModelSpec(
    name="student",
    description="Koller-Friedman student Bayesian network D->G<-I->S, G->L; Dirichlet CPDs by SVI, "
    "exact queries by enumeration",
    config=StudentConfig,
    build=StudentNetwork,
    load_data=load_data,
    train={"steps": 1000, "lr": 0.1, "batch_size": None},
    smoke_train={"steps": 300},
    objective={"name": "TraceEnum_ELBO"},
    figures=figures,
    answer=answer_network,
    query_config=StudentConfig(init="truth"),
)

__all__ = [
    "CARDINALITY", "GRADES", "PARENTS", "QueryError", "REPORTED_QUERIES", "SPEC", "StudentConfig",
    "StudentNetwork", "TRUE_CPDS", "VARIABLES", "ancestral_sample", "answer", "cpd_counts", "cpd_shape",
    "draw_cpd_bars", "draw_dag", "evidence_log_prob", "joint_table", "load_data", "max_abs_cpd_error",
    "parse_query", "query", "swap_intelligence", "true_cpds",
]
