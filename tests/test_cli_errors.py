"""Every bad flag a clear error: exit status 2, one line on stderr, nothing written.

Each case is the argv of ``pyro_zoo.cli.main``, run in-process with the working directory in a
fresh ``tmp_path`` (so default run folders would land there too). ``{out}`` is a run folder
under it and the other ``{...}`` names are bad inputs the ``paths`` fixture writes first. Every
error, argparse's included, is one line starting ``zoo: error:`` (``pyro_zoo.cli.Parser`` reports
argparse's errors that way instead of printing a usage block), and no file may appear under
``tmp_path`` that was not there before the command ran. Cases that would reach training pass
``--no-progress`` so a progress bar cannot pass for an error line.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_zoo.cli import main
from pyro_zoo.inference.checkpoint import save_checkpoint
from pyro_zoo.inference.devices import DeviceError, resolve_device
from pyro_zoo.models import DataError, get_spec
from pyro_zoo.models.data import MAX_CSV_MB, check_mnist_files, csv_split, read_csv
from pyro_zoo.models.mixture import MixtureConfig, MixtureModel
from pyro_zoo.models.student import QueryError, answer, joint_table, true_cpds
from pyro_zoo.validate import writable_folder

ROOT = os.geteuid() == 0
NEEDS_SYS = pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs /sys (read-only even for root)")
TRAIN = ["train", "mixture", "--smoke", "--out", "{out}", "--no-progress"]
EVAL = ["eval", "mixture", "--checkpoint", "{missing}", "--out", "{out}", "--no-progress"]
VAE = ["train", "vae", "--smoke", "--out", "{out}", "--no-progress"]
MNIST = ["train", "vae", "--smoke", "--data", "mnist", "--out", "{out}", "--no-progress", "--data-dir"]


def csv_train(model: str, path: str) -> list[str]:
    return ["train", model, "--smoke", "--data", path, "--out", "{out}", "--no-progress"]


CASES = {
    "k 0": [*EVAL, "--num-particles", "0"],
    "k -5": [*EVAL, "--num-particles", "-5"],
    "lr -1": [*TRAIN, "--lr", "-1"],
    "lr nan": [*TRAIN, "--lr", "nan"],
    "lr inf": [*TRAIN, "--lr", "inf"],
    "epochs 0": [*TRAIN, "--epochs", "0"],
    "epochs -2": [*TRAIN, "--epochs", "-2"],
    "epochs nan": [*TRAIN, "--epochs", "nan"],
    "steps 0": [*TRAIN, "--steps", "0"],
    "steps -1": [*TRAIN, "--steps", "-1"],
    "steps and epochs": [*TRAIN, "--steps", "3", "--epochs", "1"],
    "batch-size -3": [*TRAIN, "--batch-size", "-3"],
    "batch-size 0": [*TRAIN, "--batch-size", "0"],
    "clip-norm -1": [*TRAIN, "--clip-norm", "-1"],
    "clip-norm 0": [*TRAIN, "--clip-norm", "0"],
    "limit 0": [*EVAL, "--limit", "0"],
    "limit -1": [*EVAL, "--limit", "-1"],
    "seed -1": [*TRAIN, "--seed", "-1"],
    "seed 2**36": [*TRAIN, "--seed", "99999999999"],
    "device tpu": [*TRAIN, "--device", "tpu"],
    "device tpu (eval)": [*EVAL, "--device", "tpu"],
    "device tpu (demo)": ["demo", "--device", "tpu", "--out", "{out}", "--no-progress"],
    "unknown command": ["fly"],
    "unknown model": ["train", "x" * 10_000, "--out", "{out}"],
    "set unknown name": [*VAE, "--set", "unknown_param=1"],
    "set without =": [*VAE, "--set", "z_dim"],
    "set z_dim=-3": [*VAE, "--set", "z_dim=-3"],
    "set z_dim=abc": [*VAE, "--set", "z_dim=abc"],
    "set z_dim=0": [*VAE, "--set", "z_dim=0"],
    "set z_dim=2.5": [*VAE, "--set", "z_dim=2.5"],
    "set z_dim=True": [*VAE, "--set", "z_dim=True"],
    "set hidden=(64,-1)": [*VAE, "--set", "hidden=(64,-1)"],
    "set activation=bogus": [*VAE, "--set", "activation=bogus"],
    "set train_samples=0": [*VAE, "--set", "train_samples=0"],
    "set num_components=0": [*TRAIN, "--set", "num_components=0"],
    "set num_components=10**9": [*TRAIN, "--set", "num_components=1000000000"],
    "set covariance=bogus": [*TRAIN, "--set", "covariance=bogus"],
    "set latent_dim over data_dim": ["train", "ppca", "--smoke", "--out", "{out}", "--no-progress",
                                     "--set", "latent_dim=65"],
    "set latent_dim=3 (dlgm)": ["train", "dlgm", "--smoke", "--out", "{out}", "--no-progress",
                                "--set", "latent_dim=3"],
    "resume with another --set": ["train", "mixture", "--smoke", "--out", "{resumed}", "--resume",
                                  "--set", "num_components=3", "--no-progress"],
    "set prior_concentration=-1": ["train", "student", "--smoke", "--out", "{out}", "--no-progress",
                                   "--set", "prior_concentration=-1"],
    "binary CSV (mixture)": csv_train("mixture", "{binary}"),
    "binary CSV (student)": csv_train("student", "{binary}"),
    "latin-1 CSV (ppca)": csv_train("ppca", "{latin1}"),
    # one training row: one component at most (the config's bound), and too few rows for a full covariance
    "two-row CSV (mixture)": [*csv_train("mixture", "{two_rows}"), "--set", "num_components=1"],
    "wide CSV (mixture)": csv_train("mixture", "{wide}"),
    "1e300 CSV (dlgm)": csv_train("dlgm", "{huge_float}"),
    "huge integers (student)": csv_train("student", "{huge_int}"),
    "fractional codes (student)": csv_train("student", "{fraction}"),
    "oversized CSV (dlgm)": csv_train("dlgm", "{oversized}"),
    "truncated MNIST": [*MNIST, "{mnist_truncated}"],
    "swapped MNIST": [*MNIST, "{mnist_swapped}"],
    "garbage MNIST": [*MNIST, "{mnist_garbage}"],
    "out is a file": ["train", "mixture", "--smoke", "--out", "{a_file}"],
    "out under a file": ["train", "mixture", "--smoke", "--out", "{a_file}/run"],
    "out under /sys": pytest.param(["train", "mixture", "--smoke", "--out", "/sys/zoo-run"], marks=NEEDS_SYS),
    "out read-only": pytest.param(["train", "mixture", "--smoke", "--out", "{read_only}/run"],
                                  marks=pytest.mark.skipif(ROOT, reason="root writes into 0o500 folders")),
    "eval out is a file": ["eval", "mixture", "--checkpoint", "{nan_student}", "--out", "{a_file}"],
    "demo out is a file": ["demo", "--out", "{a_file}", "--no-progress"],
    "demo out under /sys": pytest.param(["demo", "--out", "/sys/zoo-demo", "--no-progress"], marks=NEEDS_SYS),
    "eval wrong model": ["eval", "vae", "--checkpoint", "{nan_student}", "--out", "{out}", "--no-progress"],
    "steps 10**23": [*TRAIN, "--steps", "99999999999999999999999"],
    "epochs 1e300": [*TRAIN, "--epochs", "1e300"],
    "checkpoint-every nan": [*TRAIN, "--checkpoint-every", "nan"],
    "checkpoint-every -1": [*TRAIN, "--checkpoint-every", "-1"],
    "checkpoint-every 0": [*TRAIN, "--checkpoint-every", "0"],
    "checkpoint-every inf": [*TRAIN, "--checkpoint-every", "inf"],
    "out empty": ["train", "mixture", "--smoke", "--out", "", "--no-progress"],
    "eval out empty": ["eval", "mixture", "--checkpoint", "{missing}", "--out", "", "--no-progress"],
    "demo out empty": ["demo", "--out", "", "--no-progress"],
    "train a file that is not .py": ["train", "{a_file}", "--out", "{out}", "--no-progress"],
    "set 17 layers": [*VAE, "--set", "hidden=" + str((8,) * 17)],
    "set 12 layers of 10000": [*VAE, "--set", "hidden=" + str((10_000,) * 12)],
    "100,000-column CSV (mixture)": csv_train("mixture", "{columns}"),
    "query 100 KB": ["query", "student", "I | " + "G=C," * 25_000],
    "query huge value": ["query", "student", "I | S=" + "9" * 5000],
    "query non-finite student": ["query", "student", "I | G=C", "--checkpoint", "{nan_student}"],
    "query a model without queries": ["query", "vae", "I"],
    "query another model's checkpoint": ["query", "vae", "I", "--checkpoint", "{nan_student}"],
}


@pytest.fixture
def paths(tmp_path) -> dict[str, str]:
    """Bad inputs under ``tmp_path``, by the names the cases use."""
    files = tmp_path / "inputs"
    files.mkdir()
    rng = np.random.default_rng(0)
    written = {
        "binary": rng.bytes(3000),
        "latin1": "x,\xe9t\xe9\n1,2\n3,4\n".encode("latin-1"),
        "two_rows": b"1\n2\n",
        "wide": "\n".join(",".join(map(str, row)) for row in rng.normal(size=(10, 50))).encode(),
        "huge_float": b"1e300,1\n2,3\n4,5\n6,7\n",
        "huge_int": b"D,I,G,S,L\n0,0,0,0,0\n1,1,1,1,1\n99999999999999999999999,0,0,0,0\n",
        "fraction": b"0,0,0,0,0\n1,0.5,1,1,1\n0,0,0,0,0\n",
        "columns": wide_csv(),
    }
    out = {name: str(_write(files / f"{name}.csv", data)) for name, data in written.items()}
    with (files / "oversized.csv").open("wb") as handle:
        handle.truncate(int((MAX_CSV_MB + 1) * 1e6))  # sparse: no disk used
    out["oversized"] = str(files / "oversized.csv")
    images = _idx(2051, (60000, 28, 28))
    out["mnist_truncated"] = _mnist(files / "truncated", "train-images-idx3-ubyte", images + bytes(1000))
    out["mnist_swapped"] = _mnist(files / "swapped", "train-labels-idx1-ubyte", images)
    out["mnist_garbage"] = _mnist(files / "garbage", "t10k-images-idx3-ubyte", rng.bytes(5000))
    out["a_file"] = str(_write(files / "a_file", b"not a folder"))
    read_only = files / "read_only"
    read_only.mkdir(mode=0o500)
    out["read_only"] = str(read_only)
    out["nan_student"] = str(_nan_student(files / "student.pt"))
    save_checkpoint(files / "resumed" / "checkpoint.pt",
                    checkpoint_state("mixture", get_spec("mixture").config().to_dict(), {}))
    out["resumed"] = str(files / "resumed")
    out["missing"] = str(files / "missing.pt")
    out["out"] = str(tmp_path / "run")
    return out


@functools.cache
def wide_csv(rows: int = 4, columns: int = 100_000) -> bytes:
    """A CSV of small integers, ``columns`` wide: a full-covariance mixture of it would need 80 GB."""
    values = np.random.default_rng(1).integers(0, 9, (rows, columns))
    return "\n".join(",".join(map(str, row)) for row in values).encode()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _idx(magic: int, shape: tuple) -> bytes:
    return b"".join(n.to_bytes(4, "big") for n in (magic, *shape))


def _mnist(root: Path, name: str, data: bytes) -> str:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / name).write_bytes(data)
    return str(root)


def _nan_student(path: Path) -> Path:
    spec = get_spec("student")
    state = {name: torch.full_like(value, math.nan) for name, value in spec.make().state_dict().items()}
    save_checkpoint(path, checkpoint_state("student", spec.config.smoke().to_dict(), state, smoke=True))
    return path


def checkpoint_state(model: str, config: dict, module_state: dict, **meta) -> dict:
    """A checkpoint as ``zoo train`` writes one (see pyro_zoo.inference.checkpoint), with the given
    module state."""
    return {"model": model, "config": config, **meta, "modules": {"model": module_state}, "params": {},
            "optimizer_state": {}, "step": 0, "losses": [], "rng": {"torch": torch.get_rng_state()}}


def snapshot(root: Path) -> set[Path]:
    return {path for path in root.rglob("*")}


@pytest.mark.parametrize("argv", list(CASES.values()), ids=list(CASES))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, paths, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code = main([arg.format(**paths) for arg in argv])
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("zoo: error: ") and len(lines[0]) > 20, err
    assert len(lines[0]) < 400, lines[0]
    assert snapshot(tmp_path) == before
    assert not Path("/sys/zoo-run").exists()


def test_every_case_fails_for_its_own_reason(paths, tmp_path, capsys, monkeypatch):
    """Spot checks that the message names the fix (not just any error)."""
    monkeypatch.chdir(tmp_path)
    expected = {
        "k 0": "--num-particles", "clip-norm -1": "--clip-norm", "seed 2**36": "4294967295",
        "device tpu": "cpu, cuda",
        "set unknown name": "activation, data_dim, hidden, levels, likelihood, train_samples, z_dim",
        "set num_components=10**9": "training points (200)", "set covariance=bogus": "full, diag",
        "binary CSV (mixture)": "UTF-8", "two-row CSV (mixture)": "covariance=diag",
        "wide CSV (mixture)": "more rows than columns", "1e300 CSV (dlgm)": "overflow float32",
        "huge integers (student)": "column D holds 1e+23", "oversized CSV (dlgm)": f"{MAX_CSV_MB} MB",
        "truncated MNIST": "train-images-idx3-ubyte is damaged", "swapped MNIST": "it holds images",
        "garbage MNIST": "t10k-images-idx3-ubyte is damaged", "out is a file": "existing file",
        "query 100 KB": "(100004 characters)", "query non-finite student": "NaN or infinite",
        "resume with another --set": "num_components=2",
        "steps 10**23": "from 1 to 10000000", "epochs 1e300": "the 10000000 steps one run may take",
        "checkpoint-every nan": "--checkpoint-every", "out empty": "--out is empty",
        "eval out empty": "--out is empty", "demo out empty": "--out is empty",
        "train a file that is not .py": "not a .py file", "set 17 layers": "at most 16",
        "set 12 layers of 10000": "over the 100,000,000", "100,000-column CSV (mixture)": "80 GB",
    }
    for case, fragment in expected.items():
        assert main([arg.format(**paths) for arg in CASES[case]]) == 2
        err = capsys.readouterr().err
        assert fragment in err, (case, err)


def test_query_naming_every_variable_is_the_joint(capsys):
    assert main(["query", "student", "D, I, G, S, L", "--json"]) == 0
    out = capsys.readouterr().out
    assert len(answer("D, I, G, S, L")) == 48
    assert math.isclose(sum(answer("D, I, G, S, L").values()), 1.0, rel_tol=1e-12)
    assert answer("D, I, G, S, L")["D=1,I=0,G=C,S=0,L=0"] == pytest.approx(
        float(joint_table(true_cpds())[1, 0, 2, 0, 0]), rel=1e-12)
    assert out.strip()


# ---------------------------------------------------------------------------- library level

def test_read_csv_names_binary_and_foreign_encodings(tmp_path):
    for data in (bytes(range(256)), "a,\xe9\n1,2\n".encode("latin-1"), b"1,2\n\x003,4\n"):
        path = _write(tmp_path / "bad.csv", data)
        with pytest.raises(DataError, match="not UTF-8 text"):
            read_csv(path)


def test_read_csv_keeps_blank_lines_header_and_bom(tmp_path):
    path = _write(tmp_path / "ok.csv", b"\xef\xbb\xbf\n\na,b\n\n1,2\n\n3,4\n")
    np.testing.assert_array_equal(read_csv(path), [[1, 2], [3, 4]])
    path = _write(tmp_path / "ok.csv", b"\xef\xbb\xbf1,2\n3,4\n")
    np.testing.assert_array_equal(read_csv(path), [[1, 2], [3, 4]])


def test_float32_overflow_is_named(tmp_path):
    path = _write(tmp_path / "big.csv", b"1e300\n2\n3\n")
    assert read_csv(path).max() == 1e300
    with pytest.raises(DataError, match="overflow float32.*rescale"):
        csv_split(path, "train")


def test_mnist_header_checks(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    check_mnist_files(raw)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(_idx(2049, (10,)) + bytes(10))
    check_mnist_files(raw)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(_idx(2049, (10,)) + bytes(9))
    with pytest.raises(DataError, match="17 bytes, expected 18"):
        check_mnist_files(raw)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(_idx(2049, (10,)) + bytes(10))
    (raw / "t10k-images-idx3-ubyte").write_bytes(_idx(2051, (12, 28, 28)) + bytes(12 * 784))
    with pytest.raises(DataError, match="10 items, but t10k-images-idx3-ubyte has 12"):
        check_mnist_files(raw)
    (raw / "t10k-images-idx3-ubyte").write_bytes(_idx(2051, (10, 8, 8)) + bytes(640))
    with pytest.raises(DataError, match=r"items of shape \(8, 8\), expected \(28, 28\)"):
        check_mnist_files(raw)


def test_failed_download_leaves_no_folders(tmp_path, monkeypatch, capsys):
    def offline(self):
        Path(self.raw_folder).mkdir(parents=True)
        raise OSError("no network")

    monkeypatch.setattr("torchvision.datasets.MNIST.download", offline)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "vae", "--smoke", "--data", "mnist", "--out", "run", "--no-progress"]) == 2
    assert "could not be downloaded" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_real_mnist_passes_the_header_checks():
    raw = Path(__file__).resolve().parents[2] / "shared" / "data" / "MNIST" / "raw"
    if not raw.is_dir():
        pytest.skip(f"no MNIST at {raw}")
    check_mnist_files(raw)


def test_configs_name_and_coerce_hyperparameters():
    """Every model's config is checked by tests/test_contract.py; here the messages the CLI shows."""
    vae = get_spec("vae").config.from_dict({"z_dim": 2.0, "hidden": [8, 4], "train_samples": 3})
    assert (vae.z_dim, vae.hidden, vae.train_samples) == (2, (8, 4), 3)
    with pytest.raises(DataError, match="valid names are activation, data_dim, hidden"):
        get_spec("vae").config.from_dict({"zdim": 2})
    mixture = MixtureConfig(num_components=10**9)
    assert mixture.num_components == 10**9
    with pytest.raises(DataError, match=r"training points \(5\)"):
        MixtureConfig(num_components=6).check_num_data(5)
    with pytest.raises(DataError, match="latent_dim"):
        get_spec("ppca").config.from_dict({"data_dim": 3, "latent_dim": 4})


def test_unknown_device():
    with pytest.raises(DeviceError, match="cpu, cuda"):
        resolve_device("tpu")
    with pytest.raises(DeviceError, match="not supported"):
        resolve_device("meta")


def test_mixture_posterior_of_one_point():
    model = MixtureModel(MixtureConfig(num_components=2, dim=1))
    model.set_parameters([0.5, 0.5], [[0.0], [1.0]], [[[1.0]], [[1.0]]])
    posterior = model.posterior(torch.tensor([[0.0]]))
    assert posterior.shape == (1, 2)
    assert posterior[0, 0] == pytest.approx(1 / (1 + math.exp(-0.5)))


def test_non_finite_cpds_refuse_queries():
    cpds = {name: table.clone() for name, table in true_cpds().items()}
    cpds["G"][0, 0, 0] = math.nan
    with pytest.raises(QueryError, match="not finite"):
        answer("I | G=C", cpds)


def test_writable_folder(tmp_path):
    assert writable_folder(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert not (tmp_path / "new").exists()
    _write(tmp_path / "file", b"")
    with pytest.raises(DataError, match="existing file"):
        writable_folder(tmp_path / "file")
