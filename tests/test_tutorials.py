"""Every notebook in tutorials/ runs end to end in smoke mode, and defines that mode.

The notebooks are found by globbing ``tutorials/*.ipynb``, so a new notebook is covered with no
edit here. Each is executed with nbclient on ipykernel's ``python3`` kernel (jupyter_client starts
it with this interpreter), working directory ``tutorials/``, environment ``SMOKE_TEST=1``; a
notebook reads the switch near its top and shrinks steps, data and particles so that the whole
smoke run of all notebooks takes seconds per notebook. Outputs are discarded: the committed
notebooks keep those of a full run.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
#: the switch every notebook defines in one of its first code cells
SMOKE_SWITCH = re.compile(
    r"""^SMOKE_TEST\s*=\s*os\.environ\.get\(\s*["']SMOKE_TEST["']\s*\)\s*==\s*["']1["']""", re.MULTILINE
)
SWITCH_WITHIN = 3
FULL_RUN = re.compile(r"Full run: \d+ min on 2 CPU cores \(measured\)")
#: the first line of a cell that checks a claim of the notebook's prose with ``assert``
CHECK_LINE = re.compile(r"^# check: \S")
CELL_TIMEOUT = 600
MAX_TOTAL_BYTES = 5 * 2**20

by_name = pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def test_tutorials_exist():
    assert NOTEBOOKS, f"no notebooks found in {TUTORIALS}"


@by_name
def test_notebook_defines_smoke_switch(path):
    code = [cell.source for cell in _read(path).cells if cell.cell_type == "code"]
    assert any(SMOKE_SWITCH.search(source) for source in code[:SWITCH_WITHIN]), (
        f"{path.name} lacks the smoke switch: put `SMOKE_TEST = os.environ.get(\"SMOKE_TEST\") == \"1\"` "
        f"in one of its first {SWITCH_WITHIN} code cells and use it to shrink the run"
    )


@by_name
def test_notebook_states_its_full_run_time(path):
    first = _read(path).cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), (
        f"{path.name} must open with a markdown cell holding its title"
    )
    assert FULL_RUN.search(first.source), (
        f"{path.name}: state the measured full-run time in the first cell, as "
        "'Full run: N min on 2 CPU cores (measured)'"
    )


@by_name
def test_notebook_checks_its_claims(path):
    """A notebook proves what its prose states about numbers: at least one code cell opens with
    ``# check: <the claim>`` and asserts it (tolerances from standard errors), so the smoke run in
    :func:`test_notebook_runs_in_smoke_mode` fails the day a claim stops being true."""
    checks = [cell.source for cell in _read(path).cells
              if cell.cell_type == "code" and CHECK_LINE.match(cell.source)]
    assert checks, (
        f"{path.name} has no check cell: add a code cell whose first line is `# check: <the claim>` and "
        "that asserts the claim with a tolerance from its standard error"
    )
    unasserted = [source.splitlines()[0] for source in checks if "assert" not in source]
    assert not unasserted, f"{path.name}: check cells without an assert: {unasserted}"


def test_notebooks_are_small():
    total = sum(path.stat().st_size for path in NOTEBOOKS)
    assert total < MAX_TOTAL_BYTES, f"tutorials/*.ipynb hold {total / 2**20:.1f} MiB; save figures smaller"


@by_name
def test_notebook_runs_in_smoke_mode(path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("SMOKE_TEST", "1")
    notebook = _read(path)
    client = NotebookClient(notebook, kernel_name="python3", timeout=CELL_TIMEOUT, record_timing=False,
                            resources={"metadata": {"path": str(TUTORIALS)}})
    client.execute()
    errors = [output for cell in notebook.cells if cell.cell_type == "code"
              for output in cell.get("outputs", []) if output.get("output_type") == "error"]
    assert not errors, f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
