"""Exact queries on the student network: the zoo's ``StudentNetwork.query`` vs pgmpy.

Peer: pgmpy's ``VariableElimination`` on a ``DiscreteBayesianNetwork`` built from the very CPDs
the zoo model answers with (its posterior means, float64), so both compute the same exact
numbers. Queries: every single-variable posterior p(V | E) with E ranging over all assignments of
0, 1 or 2 other variables, plus joint posteriors of every pair of variables given 0 or 1
observed variable. Target: identical to 1e-9 (max absolute difference over all entries), zoo
seconds per query <= pgmpy's.

    python -m benchmarks.student [--smoke] [--device cpu|cuda] [--repeats R]

pgmpy is installed by ``make bench``; without it (the test environment) the peer is reported
as unavailable and only the zoo is timed.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import torch

from benchmarks.common import Report, Row, interleaved, median, parser, run_main
from pyro_zoo.models.student import CARDINALITY, PARENTS, VARIABLES, StudentConfig, StudentNetwork

NAME = "student"
TOLERANCE = 1e-9


def queries(smoke: bool) -> list[tuple[list[str], dict[str, int]]]:
    """(targets, evidence) pairs; see the module docstring (smoke: the first 12)."""
    out = []
    for target in VARIABLES:
        others = [v for v in VARIABLES if v != target]
        for size in (0, 1, 2):
            for names in itertools.combinations(others, size):
                for values in itertools.product(*[range(CARDINALITY[n]) for n in names]):
                    out.append(([target], dict(zip(names, values, strict=True))))
    for pair in itertools.combinations(VARIABLES, 2):
        others = [v for v in VARIABLES if v not in pair]
        out.append((list(pair), {}))
        for name in others:
            out.extend((list(pair), {name: value}) for value in range(CARDINALITY[name]))
    return out[:12] if smoke else out


def pgmpy_network(cpds: dict[str, torch.Tensor]):
    """pgmpy's network with the zoo's CPD tables, or None when pgmpy is not installed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgmpy.factors.discrete import TabularCPD
            from pgmpy.models import DiscreteBayesianNetwork
    except ImportError:
        return None
    network = DiscreteBayesianNetwork([(p, v) for v in VARIABLES for p in PARENTS[v]])
    tables = []
    for name in VARIABLES:
        table = cpds[name].double().cpu().numpy()
        parents = list(PARENTS[name])
        # pgmpy: rows = values of the variable, columns = parent configurations, last parent fastest
        values = table.reshape(-1, CARDINALITY[name]).T
        tables.append(TabularCPD(name, CARDINALITY[name], values, evidence=parents or None,
                                 evidence_card=[CARDINALITY[p] for p in parents] or None))
    network.add_cpds(*tables)
    network.check_model()
    return network


def pgmpy_answer(engine, targets: list[str], evidence: dict[str, int]) -> np.ndarray:
    """p(targets | evidence) from pgmpy, axes in the order of ``targets``."""
    factor = engine.query(targets, evidence=evidence or None, joint=True, show_progress=False)
    return np.transpose(factor.values, [factor.variables.index(t) for t in targets])


def benchmark(args, device: torch.device) -> Report:
    model = StudentNetwork(StudentConfig(init="truth")).to(device)
    cpds = model.learned_cpds(torch.float64)
    asked = queries(args.smoke)
    network = pgmpy_network(cpds)
    notes = [f"{len(asked)} queries: p(V | E) for every V and every assignment E of 0-2 other "
             "variables, and p(V1, V2 | E) for every pair with 0-1 observed variable"]

    def zoo():
        return [model.query(targets[0] if len(targets) == 1 else targets, evidence)
                for targets, evidence in asked]

    if network is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgmpy.inference import VariableElimination
        engine = VariableElimination(network)

        def peer():
            return [pgmpy_answer(engine, targets, evidence) for targets, evidence in asked]
    else:
        peer = None
        notes.append("pgmpy is not installed: peer unavailable (`make bench` installs it)")

    zoo_times, peer_times = interleaved(zoo, peer, device=device, repeats=args.repeats,
                                        warmup=1, units=len(asked))
    accuracy, accuracy_met = "pgmpy unavailable", None
    if peer is not None:
        error = max(float(np.abs(ours.cpu().numpy() - theirs).max())
                    for ours, theirs in zip(zoo(), peer(), strict=True))
        accuracy = f"max abs diff {error:.1e} (target ≤ {TOLERANCE:g})"
        accuracy_met = error <= TOLERANCE
    row = Row(
        benchmark="student network exact queries",
        peer="pgmpy VariableElimination",
        unit="s per query",
        zoo_s=median(zoo_times),
        peer_s=median(peer_times),
        target="≤ 1",
        max_ratio=1.0,
        accuracy=accuracy,
        accuracy_met=accuracy_met,
        note="zoo: StudentNetwork.query (float64); pgmpy built from the same CPDs",
        zoo_runs=zoo_times,
        peer_runs=peer_times,
    )
    return Report(NAME, "", [row], settings={"queries": len(asked)}, notes=notes)


def main(argv: list[str] | None = None) -> Report:
    args = parser("Student network exact queries: zoo vs pgmpy", repeats=7).parse_args(argv)
    if args.smoke:
        args.repeats = min(args.repeats, 3)
    return run_main(NAME, benchmark, args, argv)


if __name__ == "__main__":
    main()
