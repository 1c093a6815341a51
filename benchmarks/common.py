"""Shared machinery of the benchmarks: arguments, devices, interleaved timing, machine facts.

Timing rule (every benchmark): zoo and peer run in one process on the same data with the same
``torch.set_num_threads`` (and the same BLAS/OpenMP limit for NumPy and scikit-learn), after
warm-up calls of both, in ``repeats`` interleaved rounds A B A B ... (so background load hits
both alike), each call bracketed by a CUDA synchronisation on a GPU; the figure reported is the
median over rounds of seconds per unit (step, epoch, data point, fit or query).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from pyro_zoo.models import DataError

REPO = Path(__file__).resolve().parents[1]
#: ../shared/data relative to the repository: real MNIST in torchvision's layout (MNIST/raw/).
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"


def portable(text: str) -> str:
    """``text`` with this machine's paths replaced by ones that hold on any checkout: the
    repository as ``.``, its sibling ``shared`` as ``../shared``, other absolute paths as ``<path>``."""
    for folder, name in ((REPO.parent / "shared", "../shared"), (REPO, ".")):
        text = text.replace(str(folder), name)
    return re.sub(r"(?<![\w.])/[^\s`'\"]+", "<path>", text)


class BenchmarkError(RuntimeError):
    """A benchmark cannot run as asked (no GPU, no data); the message names the fix."""


@dataclass
class Row:
    """One comparison: median seconds per ``unit`` of zoo and peer, and the target on zoo / peer.

    ``max_ratio`` is the target on ratio = zoo_s / peer_s (1.05: at most 5% slower; 1/3: at
    least 3x faster). ``accuracy_met`` is None where no accuracy target applies.
    """

    benchmark: str
    peer: str
    unit: str
    zoo_s: float | None
    peer_s: float | None
    target: str
    max_ratio: float
    accuracy: str = ""
    accuracy_met: bool | None = None
    note: str = ""
    zoo_runs: list[float] = field(default_factory=list)
    peer_runs: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if self.zoo_s is None or not self.peer_s:
            return None
        return self.zoo_s / self.peer_s

    @property
    def speed_met(self) -> bool | None:
        return None if self.ratio is None else self.ratio <= self.max_ratio

    @property
    def met(self) -> bool | None:
        """Speed and accuracy targets both met; None when the peer did not run."""
        if self.speed_met is None:
            return None
        return self.speed_met and self.accuracy_met is not False

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "speed_met": self.speed_met, "met": self.met}


@dataclass
class Report:
    """What one benchmark script measured: its rows, settings and free-text notes."""

    name: str
    command: str
    rows: list[Row]
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"name": self.name, "command": self.command, "rows": [r.to_dict() for r in self.rows],
                "settings": self.settings, "notes": self.notes, "seconds": self.seconds}


# --------------------------------------------------------------------------- arguments

def parser(description: str, repeats: int) -> argparse.ArgumentParser:
    """The options every benchmark takes; ``repeats`` is the script's default number of rounds."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds; no pgmpy or MNIST needed")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1,
                   help="torch/BLAS threads for zoo and peer alike (default 1: see RESULTS.md)")
    p.add_argument("--repeats", type=int, default=repeats, help="interleaved timing rounds (median)")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR),
                   help="folder with MNIST/raw/ (default: ../shared/data next to the repository)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    return p


def resolve_device(name: str) -> torch.device:
    """``torch.device(name)``; CUDA without a GPU is a :class:`BenchmarkError`."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchmarkError(
            "--device cuda was asked for but torch sees no CUDA GPU here; run with --device cpu "
            "or on a machine with a GPU"
        )
    return device


@contextlib.contextmanager
def threads(count: int | None):
    """Same thread count for torch and for the BLAS/OpenMP pools of NumPy and scikit-learn.

    threadpoolctl limits only the libraries already loaded, so scikit-learn's and SciPy's are
    imported first.
    """
    import scipy.linalg  # noqa: F401
    import sklearn.cluster  # noqa: F401
    import sklearn.mixture  # noqa: F401
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    count = count or before
    torch.set_num_threads(count)
    try:
        with threadpool_limits(limits=count):
            yield count
    finally:
        torch.set_num_threads(before)


def run_main(name: str, body: Callable[[argparse.Namespace, torch.device], Report],
             args: argparse.Namespace, argv: list[str] | None) -> Report:
    """Run ``body`` under the thread limit (one repeat in smoke mode), print its table, write ``--json``.

    A :class:`BenchmarkError` or :class:`pyro_zoo.models.DataError` becomes ``SystemExit("error: ...")``
    (message on stderr, exit status 1).
    """
    start = time.perf_counter()
    if args.smoke and hasattr(args, "repeats"):
        args.repeats = 1
    try:
        device = resolve_device(args.device)
        with threads(args.threads) as count:
            args.threads = count
            report = body(args, device)
    except (BenchmarkError, DataError) as err:
        # SystemExit with a message: printed on stderr, exit status 1
        raise SystemExit(f"error: {err}") from None
    report.seconds = time.perf_counter() - start
    given = sys.argv[1:] if argv is None else argv  # run as a script, argparse read sys.argv
    report.command = portable("python -m benchmarks." + name + "".join(f" {a}" for a in given))
    report.notes = [portable(note) for note in report.notes]
    report.settings.update(threads=args.threads, device=str(device), smoke=args.smoke,
                           repeats=args.repeats, seed=args.seed)
    if report.rows:
        print(format_table(report.rows))
    for note in report.notes:
        print(f"- {note}")
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2, default=str))
    return report


# --------------------------------------------------------------------------- timing

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Clocked:
    """What a timed function returns when it measured itself (e.g. a trainer's loop clock)."""

    seconds: float


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of ``fn()``, bracketed by CUDA synchronisation on a GPU, or the seconds of
    the :class:`Clocked` it returns."""
    synchronize(device)
    start = time.perf_counter()
    value = fn()
    synchronize(device)
    elapsed = time.perf_counter() - start
    return value.seconds if isinstance(value, Clocked) else elapsed


def interleaved(zoo: Callable[[], object], peer: Callable[[], object] | None, *, device: torch.device,
                repeats: int, warmup: int = 1, units: float = 1.0) -> tuple[list[float], list[float]]:
    """Seconds per unit of ``zoo()`` and ``peer()`` over ``repeats`` rounds run A B A B ...

    ``warmup`` untimed calls of each come first; each call does ``units`` units of work.
    ``peer=None`` times the zoo alone.
    """
    for _ in range(warmup):
        zoo()
        if peer is not None:
            peer()
    zoo_times, peer_times = [], []
    for _ in range(repeats):
        zoo_times.append(timed(zoo, device) / units)
        if peer is not None:
            peer_times.append(timed(peer, device) / units)
    return zoo_times, peer_times


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# --------------------------------------------------------------------------- reporting

def seconds_text(value: float | None) -> str:
    if value is None:
        return "n/a"
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value / 1e-9:.3g} ns"


def yes_no(flag: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "n/a"}[flag]


TABLE_HEADER = ("| benchmark | peer | unit | zoo | peer | zoo/peer | peer/zoo | target (zoo/peer) | "
                "speed met | accuracy | accuracy met | met |")


def format_table(rows: list[Row]) -> str:
    """A Markdown table of ``rows``."""
    lines = [TABLE_HEADER, "|" + "---|" * TABLE_HEADER.count(" | ") + "---|"]
    for r in rows:
        ratio = "n/a" if r.ratio is None else f"{r.ratio:.3g}"
        speedup = "n/a" if r.ratio is None else f"{1 / r.ratio:.3g}×"
        lines.append(
            f"| {r.benchmark} | {r.peer} | {r.unit} | {seconds_text(r.zoo_s)} | {seconds_text(r.peer_s)} | "
            f"{ratio} | {speedup} | {r.target} | {yes_no(r.speed_met)} | {r.accuracy or '-'} | "
            f"{yes_no(r.accuracy_met)} | {yes_no(r.met)} |"
        )
    return "\n".join(lines)


def machine() -> dict:
    """CPU model and cores (lscpu), load average, library versions, date."""
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        info["cpu"] = fields.get("Model name", info["cpu"]).strip()
        info["cores"] = int(fields.get("CPU(s)", info["cores"]))
    import pyro
    import sklearn

    info.update(
        python=platform.python_version(),
        torch=torch.__version__,
        pyro=pyro.__version__,
        sklearn=sklearn.__version__,
        pgmpy=pgmpy_version(),
        cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        load_average=[round(x, 2) for x in os.getloadavg()],
    )
    return info


def pgmpy_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("pgmpy")
    except Exception:  # noqa: BLE001 - any failure means "not installed"
        return None


# --------------------------------------------------------------------------- image data

def mnist_present(data_dir: str | Path) -> bool:
    raw = Path(data_dir) / "MNIST" / "raw"
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")
    return all((raw / name).is_file() for name in names)


def write_idx(folder: Path, images: np.ndarray, labels: np.ndarray, prefix: str) -> None:
    """``images`` (N, 28, 28) uint8 and ``labels`` (N,) as the two IDX files of torchvision MNIST."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(images)
    header = np.array([2051, n, 28, 28], dtype=">i4").tobytes()
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.astype(np.uint8).tobytes())
    header = np.array([2049, n], dtype=">i4").tobytes()
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(header + labels.astype(np.uint8).tobytes())


def digits_as_mnist(root: Path) -> Path:
    """scikit-learn's 8x8 digits blown up 3x and padded to 28x28, as MNIST IDX files under ``root``.

    The stand-in for MNIST in smoke runs where ``--data-dir`` has none: both the zoo's loader
    and torchvision's ``MNIST`` dataset read these files unchanged. 1438 train / 359 test.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = np.clip(digits.images * 16, 0, 255).astype(np.uint8)
    big = np.kron(grey, np.ones((1, 3, 3), dtype=np.uint8))
    images = np.pad(big, ((0, 0), (2, 2), (2, 2)))
    order = np.random.RandomState(0).permutation(len(images))
    cut = int(round(0.8 * len(order)))
    raw = root / "MNIST" / "raw"
    write_idx(raw, images[order[:cut]], digits.target[order[:cut]], "train")
    write_idx(raw, images[order[cut:]], digits.target[order[cut:]], "t10k")
    return root


@contextlib.contextmanager
def image_root(args: argparse.Namespace):
    """(root, description): ``--data-dir`` when it holds MNIST; in smoke mode otherwise a
    temporary folder of :func:`digits_as_mnist`; in full mode a missing MNIST is an error."""
    if mnist_present(args.data_dir):
        yield Path(args.data_dir), f"MNIST from {args.data_dir}"
        return
    if not args.smoke:
        raise BenchmarkError(
            f"no MNIST under {args.data_dir}/MNIST/raw; pass --data-dir pointing at a folder with "
            "MNIST/raw/ (e.g. ../shared/data) or use --smoke"
        )
    with tempfile.TemporaryDirectory() as folder:
        yield digits_as_mnist(Path(folder)), "scikit-learn digits as 28x28 (no MNIST found)"


def finite(value) -> bool:
    return value is not None and math.isfinite(value)
