"""Image data shared by the image models: MNIST (torchvision) and scikit-learn's 8x8 digits.

Both come back as a :class:`pyro_zoo.models.DataSplit` whose ``x`` is a float32 tensor of shape
``(N, D)`` with grey levels in [0, 1] (one row per image, pixels in row-major order) and whose
``y`` is the int64 digit label of shape ``(N,)``:

* ``"mnist"``: LeCun et al. (1998), 60000 train / 10000 test images of 28x28, so D = 784,
  read once from the four raw IDX files under ``<data_dir>/MNIST/raw/`` (torchvision layout),
  scaled by 1/255. The files are downloaded only when absent. Each present file's IDX header
  (magic number 2051 for images, 2049 for labels, then the counts) and size are checked first,
  so a truncated, swapped or foreign file is named with the fix (delete it, download again).
* ``"digits"``: the UCI 8x8 digits shipped with scikit-learn (Alpaydin & Kaynak, 1998), 1797
  images of 8x8 with 17 grey levels, so D = 64, scaled by 1/16. Embedded and offline; a fixed
  split (a seed-0 permutation, last fifth as test) gives 1438 train / 359 test images.
* ``"digits17"``: the same images under the protocol of Tomczak's *Deep Generative Modeling*
  (2022): ``load_digits()`` in its own order, rows 0-999 "train", 1000-1349 "validation" (early
  stopping), 1350-1796 "test" (447 images); ``x`` holds the grey levels themselves, the whole
  numbers 0..16 (17 levels, ``info["levels"]``), for discrete likelihoods (a 17-way categorical
  per pixel, a dequantised flow). It is never binarised, and the only data set with a
  "validation" split.

Every split's ``info["levels"]`` gives the grey levels of the data set's pixels (17 for the
digits, 256 for MNIST), whatever scale ``x`` is on. Which data set :func:`load_data` reads:
``data`` when named; otherwise ``"mnist"`` when a ``data_dir`` is given and the model's default
(the embedded ``"digits"`` unless it names another) when none is (so every command runs offline
by default). ``data="mnist"`` without ``data_dir`` reads ``$ZOO_DATA_DIR`` or ``./data``. Models
read their input dimension from the data (e.g. ``hparams_for`` in :mod:`pyro_zoo.models.vae`).

:func:`binarize` draws x_b ~ Bernoulli(x) with a fixed generator: the fixed binarised test sets
of binary-likelihood models are made with it once, while their training minibatches are
binarised afresh at every step (dynamic binarisation).

User CSV files (:func:`read_csv`) are parsed by numpy's streaming reader straight from the file,
so memory grows with the parsed array only; files over ``MAX_CSV_MB`` megabytes are refused
with their size in the message (subsample them, or load them in Python). Values must fit
float32 (|x| <= 3.4e38), the dtype the models train in.
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits as sklearn_digits

from pyro_zoo.models.base import DataError, DataSplit

DATA_SETS = ("digits", "digits17", "mnist")
SPLITS = ("train", "test")
#: grey levels of the pixels of each data set
LEVELS = {"digits": 17, "digits17": 17, "mnist": 256}
#: Tomczak's digits protocol: rows of ``sklearn.datasets.load_digits()`` in its order
DIGITS17_ROWS = {"train": slice(0, 1000), "validation": slice(1000, 1350), "test": slice(1350, None)}
MNIST_SMOKE_SIZES = {"train": 2000, "test": 500}
DIGITS_TEST_FRACTION = 0.2
MAX_CSV_MB = 100
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: raw IDX file -> (magic number, shape of one item): 2051 = uint8 28x28 images, 2049 = uint8 labels
MNIST_FILES = {
    "train-images-idx3-ubyte": (2051, (28, 28)),
    "train-labels-idx1-ubyte": (2049, ()),
    "t10k-images-idx3-ubyte": (2051, (28, 28)),
    "t10k-labels-idx1-ubyte": (2049, ()),
}
IDX_KINDS = {2051: "images", 2049: "labels"}


def default_data_dir() -> Path:
    """Where MNIST is looked for (and downloaded to) when no ``data_dir`` is given."""
    return Path(os.environ.get("ZOO_DATA_DIR", "data"))


def _check_split(split: str, splits: tuple[str, ...] = SPLITS) -> None:
    if split not in splits:
        names = " or ".join(repr(name) for name in splits)
        extra = "" if "validation" in splits else " (only data set digits17 has a 'validation' split)"
        raise DataError(f"unknown split {split!r}; use {names}{extra}")


def _missing_mnist(data_dir: Path) -> DataError:
    return DataError(
        f"MNIST not found under {data_dir} and it could not be downloaded; pass `data_dir` "
        "pointing at a folder with MNIST/raw/ (e.g. ../shared/data) or connect to the network"
    )


def load_mnist(split: str, data_dir: str | Path, download: bool = True) -> DataSplit:
    """MNIST ``split`` from ``<data_dir>/MNIST/raw``: ``x`` (N, 784) in [0, 1], ``y`` (N,).

    The IDX files are read once into uint8 tensors (no per-item transform, no DataLoader).
    When they are absent a download is tried if ``download``; failing that, :class:`DataError`,
    and the empty folders the attempt made are removed again.
    """
    _check_split(split)
    from torchvision.datasets import MNIST  # heavy, and needed only for MNIST: imported when asked

    root = Path(data_dir).expanduser()
    train = split == "train"
    raw = root / "MNIST" / "raw"
    check_mnist_files(raw)
    try:
        dataset = MNIST(root=root, train=train, download=False)
    except RuntimeError:
        if not download:
            raise _missing_mnist(root) from None
        new = [folder for folder in (raw, raw.parent, root) if not folder.exists()]
        try:
            dataset = MNIST(root=root, train=train, download=True)
        except (RuntimeError, OSError) as err:
            _remove_empty(new)
            raise _missing_mnist(root) from err
    x = dataset.data.reshape(len(dataset.data), -1).to(torch.float32) / 255.0
    return DataSplit(
        x=x,
        y=dataset.targets.to(torch.int64),
        source=f"MNIST {split} ({len(x)} images of 28x28) from {root / 'MNIST' / 'raw'}",
        info={"data": "mnist", "image_shape": (28, 28), "split": split, "levels": LEVELS["mnist"]},
    )


def _remove_empty(folders: list[Path]) -> None:
    """rmdir each of ``folders`` (innermost first) that exists and is empty."""
    for folder in folders:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def check_mnist_files(raw: Path) -> None:
    """Raise :class:`DataError` naming the first IDX file under ``raw`` that is present but
    damaged: a wrong magic number or item shape in its header, a size other than
    4 * (number of header fields) + count * product(item shape) bytes, or a count that differs
    from its split's other file. Absent files are left to download."""
    counts = {}
    for name, (magic, item) in MNIST_FILES.items():
        path = raw / name
        if not path.is_file():
            continue
        problem, counts[name] = _idx_problem(path, magic, item)
        split = name.split("-")[0]
        other = {n: c for n, c in counts.items() if n.startswith(split) and n != name}
        if not problem and other and set(other.values()) != {counts[name]}:
            problem = f"{counts[name]} items, but {next(iter(other))} has {next(iter(other.values()))}"
        if problem:
            raise DataError(f"MNIST file {path} is damaged ({problem}); delete it and run again to "
                            "download it, or copy an intact file from another machine")


def _idx_problem(path: Path, magic: int, item: tuple) -> tuple[str, int]:
    """(why ``path`` is not an IDX file of uint8 items of shape ``item`` with ``magic``, or "";
    the item count its header gives)."""
    header_size = 4 * (2 + len(item))
    with path.open("rb") as handle:
        header = handle.read(header_size)
    size = path.stat().st_size
    if len(header) < header_size:
        return f"{size} bytes, shorter than its {header_size}-byte header", 0
    fields = [int.from_bytes(header[i:i + 4], "big") for i in range(0, header_size, 4)]
    if fields[0] != magic:
        holds = f": it holds {IDX_KINDS[fields[0]]}" if fields[0] in IDX_KINDS else ""
        return f"magic number {fields[0]}, expected {magic} for {IDX_KINDS[magic]}{holds}", 0
    if tuple(fields[2:]) != item:
        return f"items of shape {tuple(fields[2:])}, expected {item}", 0
    expected = header_size + fields[1] * int(np.prod(item))
    if size != expected:
        return f"{size} bytes, expected {expected}: truncated or padded", fields[1]
    return "", fields[1]


def load_digits(split: str) -> DataSplit:
    """scikit-learn's 8x8 digits, ``split`` of a fixed 80/20 split: ``x`` (N, 64) in [0, 1]."""
    _check_split(split)
    bunch = sklearn_digits()
    order = np.random.RandomState(0).permutation(len(bunch.target))
    num_test = int(round(DIGITS_TEST_FRACTION * len(order)))
    rows = order[:-num_test] if split == "train" else order[-num_test:]
    x = torch.as_tensor(bunch.data[rows] / 16.0, dtype=torch.float32)
    return DataSplit(
        x=x,
        y=torch.as_tensor(bunch.target[rows], dtype=torch.int64),
        source=f"scikit-learn 8x8 digits {split} ({len(x)} images of 8x8)",
        info={"data": "digits", "image_shape": (8, 8), "split": split, "levels": LEVELS["digits"]},
    )


def load_digits17(split: str) -> DataSplit:
    """Tomczak's digits protocol (module docstring): ``x`` (N, 64) of whole grey levels 0..16."""
    _check_split(split, tuple(DIGITS17_ROWS))
    bunch = sklearn_digits()
    rows = DIGITS17_ROWS[split]
    x = torch.as_tensor(bunch.data[rows], dtype=torch.float32)
    return DataSplit(
        x=x,
        y=torch.as_tensor(bunch.target[rows], dtype=torch.int64),
        source=f"scikit-learn 8x8 digits, Tomczak's {split} rows ({len(x)} images, grey levels 0..16)",
        info={"data": "digits17", "image_shape": (8, 8), "split": split, "levels": LEVELS["digits17"]},
    )


def read_csv(path: str | Path, hint: str = "keep only numeric columns of equal length") -> np.ndarray:
    """Rows of a numeric comma-separated UTF-8 file, shape (N, D), float64; one header line is optional.

    Raises :class:`DataError` naming the fix for a missing, empty, binary, non-UTF-8, ragged,
    non-numeric, non-finite or over-``MAX_CSV_MB`` file; ``hint`` ends the message of a
    non-numeric or ragged row.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CSV file {str(path)!r} does not exist; check the path given as data")
    check_csv_size(path)
    lines = _first_lines(path, 2)
    if not lines:
        raise DataError(f"CSV file {str(path)!r} is empty; give a file with one numeric row per point")
    header = not _is_numeric_row(lines[0])
    if header and len(lines) == 1:
        raise DataError(f"CSV file {str(path)!r} has a header but no data rows; add numeric rows")
    try:
        values = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64,
                            skiprows=_header_lines(path) if header else 0, encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise _not_text(path) from None
    except ValueError as error:
        raise DataError(
            f"CSV file {str(path)!r} has a non-numeric or ragged row ({_numpy_reason(error)}); {hint}"
        ) from None
    if not np.isfinite(values).all():
        raise DataError(f"CSV file {str(path)!r} contains NaN or infinite values; remove or impute them")
    return values


def _numpy_reason(error: ValueError) -> str:
    """numpy's reason without its advice on ``usecols``, cut to one short clause."""
    return str(error).split(";")[0].strip()[:100]


def check_csv_size(path: Path) -> None:
    """Raise :class:`DataError` for a file over ``MAX_CSV_MB`` megabytes (10**6 bytes)."""
    megabytes = path.stat().st_size / 1e6
    if megabytes > MAX_CSV_MB:
        raise DataError(f"CSV file {str(path)!r} is {megabytes:.0f} MB, over the {MAX_CSV_MB} MB the zoo "
                        "reads; subsample its rows (e.g. `shuf -n 100000`) or load it in Python")


def _not_text(path: Path) -> DataError:
    return DataError(f"CSV file {str(path)!r} is not UTF-8 text (binary or another encoding); "
                     "save it as UTF-8 comma-separated text")


def _first_lines(path: Path, count: int) -> list[str]:
    """The first ``count`` non-blank lines of ``path``, decoded as UTF-8 (a BOM is dropped)."""
    lines = []
    with path.open("rb") as handle:
        for raw in handle:
            if b"\0" in raw:
                raise _not_text(path)
            try:
                line = raw.decode("utf-8-sig" if not lines else "utf-8")
            except UnicodeDecodeError:
                raise _not_text(path) from None
            if line.strip():
                lines.append(line.strip())
            if len(lines) == count:
                break
    return lines


def _header_lines(path: Path) -> int:
    """Lines up to and including the first non-blank one (the header)."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            if raw.removeprefix(codecs.BOM_UTF8).strip():
                return number
    return 0


def _is_numeric_row(line: str) -> bool:
    try:
        [float(field) for field in line.split(",")]
    except ValueError:
        return False
    return True


def csv_split(path: str | Path, split: str, seed: int = 0, train_fraction: float = 0.8) -> torch.Tensor:
    """``split`` of a user CSV (:func:`read_csv`): a seeded permutation, the first
    ``train_fraction`` of rows as "train", the rest as "test", rows kept in file order; float32."""
    _check_split(split)
    values = read_csv(path)
    if len(values) < 2:
        raise DataError(f"CSV file {str(path)!r} has fewer than 2 rows; a train/test split needs at least 2")
    largest = float(np.abs(values).max())
    if largest > FLOAT32_MAX:
        raise DataError(f"CSV file {str(path)!r} holds values up to {largest:.3g}, which overflow float32 "
                        f"(max {FLOAT32_MAX:.3g}); rescale the columns (e.g. standardise them)")
    order = np.random.default_rng(seed).permutation(len(values))
    cut = min(len(values) - 1, max(1, int(round(train_fraction * len(values)))))
    rows = order[:cut] if split == "train" else order[cut:]
    return torch.as_tensor(values[np.sort(rows)], dtype=torch.float32)


def binarize(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """x_b ~ Bernoulli(x) elementwise, drawn with a generator seeded by ``seed``; same shape."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    return torch.bernoulli(x, generator=generator)


def data_name(data: str | None = None, data_dir: str | Path | None = None, default: str = "digits") -> str:
    """The data set to read: ``data`` if named, else MNIST given a ``data_dir``, else ``default``."""
    if data is None:
        return default if data_dir is None else "mnist"
    name = str(data).lower()
    if name not in DATA_SETS:
        raise DataError(f"unknown image data set {data!r}; choose one of {', '.join(DATA_SETS)}")
    return name


def load_data(
    split: str,
    data_dir: str | Path | None = None,
    data: str | None = None,
    smoke: bool = False,
    binarize_test: bool = False,
    default: str = "digits",
) -> DataSplit:
    """Grey images of ``split`` (see the module docstring for which data set is chosen, ``default``
    when neither ``data`` nor ``data_dir`` is given).

    ``smoke`` keeps the first 2000 train / 500 test MNIST images (the digits are small already).
    ``binarize_test`` replaces the test images of the data sets on the [0, 1] scale by one fixed
    draw of :func:`binarize` (seed 0); "digits17" holds grey levels, which are never binarised.
    """
    name = data_name(data, data_dir, default)
    if name == "digits17":
        return load_digits17(split)
    if name == "digits":
        split_data = load_digits(split)
    else:
        split_data = load_mnist(split, default_data_dir() if data_dir is None else data_dir)
        if smoke:
            size = MNIST_SMOKE_SIZES[split]
            split_data = DataSplit(split_data.x[:size], split_data.y[:size],
                                   f"{split_data.source}, first {size}", split_data.info)
    if binarize_test and split == "test":
        split_data.x = binarize(split_data.x)
        split_data.source += ", binarised once (Bernoulli draw, seed 0)"
        split_data.info["binarised"] = "fixed, seed 0"
    return split_data


__all__ = [
    "binarize",
    "check_csv_size",
    "check_mnist_files",
    "csv_split",
    "data_name",
    "default_data_dir",
    "load_data",
    "load_digits",
    "load_digits17",
    "load_mnist",
    "read_csv",
]
