"""A user error under ``torchrun``: one line, printed by rank 0 only, exit status 2 from every
rank, no traceback from any rank, and torchrun's own failure summary naming the error.

torchrun itself always ends a job whose ranks exit non-zero with its ``ChildFailedError`` report
(its own traceback and a table of failed ranks); the ranks cannot change that. What they control
is tested here: each rank writes its one line into the error file torchrun gives it, so that the
table reads ``traceback : zoo: error: ...`` instead of a pointer to the documentation. torchrun's
``--monitor-interval`` is raised to 3 s so that it polls after both ranks have exited on their own
(by default it stops the slower rank with SIGTERM as soon as the first one fails).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

from pyro_zoo.inference import distributed
from tests.test_distributed import REPO, WORLD, free_port, loopback_env

PROBES = {  # the three user errors of issue 17, each met by every rank
    "a batch of 1 row for 2 ranks": ["train", "ppca", "--smoke", "--steps", "5", "--batch-size", "1"],
    "an existing run": ["train", "ppca", "--smoke", "--steps", "5"],
    "a bad --set": ["train", "ppca", "--smoke", "--steps", "5", "--set", "bogus=1"],
}

RANK_SCRIPT = """
    import contextlib, io, json, os, sys
    from pathlib import Path
    from pyro_zoo.cli import main

    out = Path(sys.argv[1])
    found = {}
    for name, argv in json.loads(sys.argv[2]).items():
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main([*argv, "--out", str(out / ("existing" if name == "an existing run" else "new")),
                         "--no-progress"])
        found[name] = {"code": code, "stderr": err.getvalue()}
    (out / f"rank{os.environ['RANK']}.json").write_text(json.dumps(found))
"""


def launch(*args: str, module: bool = False) -> subprocess.CompletedProcess:
    """torchrun with two CPU ranks on this machine, polling its ranks every 3 s."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("torchrun")), "--nnodes", "1", "--nproc_per_node",
               str(WORLD), "--master_addr", "127.0.0.1", "--master_port", str(port),
               "--monitor-interval", "3", *(["-m"] if module else []), *args]
    env = {**os.environ, **loopback_env(port), "PYTHONPATH": str(REPO)}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)


def test_every_rank_exits_2_and_rank_0_alone_prints_the_line(tmp_path):
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "metrics.json").write_text("{}")
    script = tmp_path / "probes.py"
    script.write_text(textwrap.dedent(RANK_SCRIPT))
    done = launch(str(script), str(tmp_path), json.dumps(PROBES))
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(WORLD)]
    for name in PROBES:
        assert [found[name]["code"] for found in ranks] == [2, 2], name
        lines = ranks[0][name]["stderr"].splitlines()
        assert len(lines) == 1 and lines[0].startswith("zoo: error: "), (name, lines)
        assert ranks[1][name]["stderr"] == "", name
    assert "--batch-size of at least 2" in ranks[0]["a batch of 1 row for 2 ranks"]["stderr"]
    assert not (tmp_path / "new").exists()


def test_torchrun_shows_the_line_once_and_no_rank_traceback(tmp_path):
    out = tmp_path / "run"
    done = launch("zoo", "train", "ppca", "--smoke", "--set", "bogus=1", "--out", str(out), "--no-progress",
                  module=True)
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if line.startswith("zoo: error: ")]
    assert len(ours) == 1 and "unknown hyperparameter 'bogus'" in ours[0], done.stderr
    assert "[rank" not in done.stderr  # no rank printed a traceback
    assert done.stderr.count("Traceback (most recent call last)") == 1  # torchrun's own ChildFailedError
    assert done.stderr.count("exitcode  : 2") == WORLD, done.stderr
    assert done.stderr.count(f"traceback : {ours[0]}") == WORLD, done.stderr
    assert not out.exists()


def test_report_error_prints_on_rank_0_and_records_the_line_for_torchrun(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in range(2):
        error_file = tmp_path / f"error{rank}.json"
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
        distributed.report_error("zoo: error: a sentence")
        assert capsys.readouterr().err == ("zoo: error: a sentence\n" if rank == 0 else "")
        failure = ProcessFailure(local_rank=rank, pid=1, exitcode=2, error_file=str(error_file))
        summary = ChildFailedError("zoo", {rank: failure}).format_msg()  # what torchrun prints
        assert "traceback : zoo: error: a sentence\n" in summary


def test_report_error_alone_prints_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(tmp_path / "error.json"))
    distributed.report_error("zoo: error: a sentence")
    assert capsys.readouterr().err == "zoo: error: a sentence\n"
    assert not (tmp_path / "error.json").exists()
