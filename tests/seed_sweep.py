"""Rerun every statistical test and every notebook check under other seeds; print how often each passed.

    python -m tests.seed_sweep                  # seeds 1..20 (`make test-seeds`), about 2 hours on 2 cores
    python -m tests.seed_sweep --seeds 3 7 -k ais --notebooks 07

A check that holds for one stream of random numbers is not a check: under ``ZOO_TEST_SEED=s`` every
random stream of the tests and notebooks starts elsewhere (``tests/conftest.py``). For each seed
this runs ``pytest -m "statistical and not slow"`` (one process, a JUnit XML report) and executes
every notebook in smoke mode with errors allowed, so that every ``# check:`` cell runs and is
scored on its own (a notebook's other cells are scored together as "(runs)"). Each seed's
results are written to ``OUT/seed-S.json`` as they come (a rerun skips seeds already there), and
the table "check, passes out of N" is printed at the end, worst first, with the failing seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent
TUTORIALS = REPO / "tutorials"
CHECK_PREFIX = "# check:"
CELL_TIMEOUT = 600


def run_tests(seed: int, out: Path, keyword: str | None) -> dict[str, str | None]:
    """``{test id: None if passed else the first line of its failure}`` of the statistical tests."""
    report = out / f"pytest-seed-{seed}.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
               "-m", "statistical and not slow"] + (["-k", keyword] if keyword else [])
    subprocess.run(command, cwd=REPO, env=_environment(seed), stdout=subprocess.DEVNULL, check=False)
    results = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        if case.find("skipped") is not None:
            continue
        name = f"{case.get('classname').removeprefix('tests.')}::{case.get('name')}"
        problem = next((case.find(tag) for tag in ("failure", "error") if case.find(tag) is not None), None)
        message = None if problem is None else (problem.get("message") or "failed").splitlines()[0]
        results[name] = None if message is None else message[:200]
    return results


def run_notebook(path: Path, seed: int) -> dict[str, str | None]:
    """``{check: None if passed else its error}`` per ``# check:`` cell, and ``(runs)`` for the others."""
    notebook = nbformat.read(path, as_version=4)
    # the kernel inherits this process's environment
    saved = dict(os.environ)
    os.environ.update({"SMOKE_TEST": "1", "ZOO_TEST_SEED": str(seed)})
    try:
        NotebookClient(notebook, kernel_name="python3", timeout=CELL_TIMEOUT, allow_errors=True,
                       record_timing=False, resources={"metadata": {"path": str(TUTORIALS)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    results = {f"{path.stem} (runs)": None}
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        problem = f"{errors[0]['ename']}: {errors[0]['evalue']}"[:200] if errors else None
        if cell.source.startswith(CHECK_PREFIX):
            claim = cell.source.splitlines()[0][len(CHECK_PREFIX):].strip().replace("|", "/")
            results[f"{path.stem}: {claim[:100]}"] = problem
        elif problem and results[f"{path.stem} (runs)"] is None:
            results[f"{path.stem} (runs)"] = problem
    return results


def _environment(seed: int) -> dict[str, str]:
    return {**os.environ, "ZOO_TEST_SEED": str(seed), "MPLCONFIGDIR": tempfile.mkdtemp(prefix="sweep_mpl_"),
            "XDG_CACHE_HOME": tempfile.mkdtemp(prefix="sweep_cache_")}


def table(out: Path) -> str:
    """The table "check, passes out of N" over every ``seed-*.json`` in ``out``, worst first."""
    runs = {int(p.stem.split("-")[1]): json.loads(p.read_text()) for p in out.glob("seed-*.json")}
    checks = sorted({name for results in runs.values() for name in results})
    rows = []
    for name in checks:
        seen = {seed: results[name] for seed, results in runs.items() if name in results}
        failed = sorted(seed for seed, problem in seen.items() if problem is not None)
        rows.append((len(seen) - len(failed), len(seen), name, failed))
    rows.sort(key=lambda row: (row[0] / row[1], row[2]))
    lines = ["| check | passes | failing seeds |", "| --- | --- | --- |"]
    lines += [f"| {name} | {passed}/{total} | {', '.join(map(str, failed))} |"
              for passed, total, name, failed in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(1, 21)))
    parser.add_argument("--out", type=Path, default=REPO / "seed-sweep")
    parser.add_argument("-k", dest="keyword", help="only the statistical tests pytest -k selects")
    parser.add_argument("--notebooks", nargs="*", default=None,
                        help="only notebooks named with these prefixes (default: all; the flag alone: none)")
    parser.add_argument("--no-tests", action="store_true", help="notebooks only")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    notebooks = sorted(TUTORIALS.glob("*.ipynb"))
    if args.notebooks is not None:
        notebooks = [p for p in notebooks if any(p.name.startswith(prefix) for prefix in args.notebooks)]
    for seed in args.seeds:
        path = args.out / f"seed-{seed}.json"
        if path.exists():
            continue
        results = {} if args.no_tests else run_tests(seed, args.out, args.keyword)
        for notebook in notebooks:
            results.update(run_notebook(notebook, seed))
        path.write_text(json.dumps(results, indent=1) + "\n")
        failed = [name for name, problem in results.items() if problem is not None]
        print(f"seed {seed}: {len(results) - len(failed)}/{len(results)} passed"
              + "".join(f"\n  FAILED {name}: {results[name]}" for name in failed), flush=True)
    print(table(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
