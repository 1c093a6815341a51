"""`zoo list | train | eval | query | demo` — see README.md for the contract.

Every command validates its inputs (model name, device, data, checkpoint) before it writes
anything; user errors print one sentence on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

from inference.checkpoint import CheckpointError
from inference.devices import DeviceError
from inference.train import TrainingDiverged
from models import DataError, UnknownModelError

USER_ERRORS = (CheckpointError, DataError, DeviceError, TrainingDiverged, UnknownModelError, FileExistsError)


def parse_hparams(pairs: list[str]) -> dict:
    """``["z_dim=2", "hidden=(200,200)"]`` -> ``{"z_dim": 2, "hidden": (200, 200)}``."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise DataError(f"--set takes key=value, got {pair!r}; write e.g. --set z_dim=2")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list the registered models")
    p.add_argument("--json", action="store_true")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    common.add_argument("--data-dir", default=None, help="folder holding data sets (e.g. ../shared/data)")
    common.add_argument("--data", default=None, help="model-specific data set name or a CSV file")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    common.add_argument("--no-progress", action="store_true", help="hide progress bars")

    p = sub.add_parser("train", parents=[common], help="train a model by SVI")
    p.add_argument("name")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=float)
    length.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--clip-norm", type=float)
    p.add_argument("--out", default=None, help="run folder (default: runs/NAME)")
    p.add_argument("--smoke", action="store_true", help="tiny model, data and run")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="hyperparameters")

    p = sub.add_parser("eval", parents=[common], help="evaluate a trained model")
    p.add_argument("name")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--k", type=int, default=1000, help="importance samples per data point")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N data points only")
    p.add_argument("--method", nargs="+", default=["is"], metavar="METHOD",
                   help="estimators beyond the report's base (is): ais, bdmc, sbc; several allowed")
    p.add_argument("--out", default=None, help="report folder (default: next to the checkpoint)")

    p = sub.add_parser("query", help="exact posterior query, e.g. zoo query student 'I | G=C,S=1'")
    p.add_argument("name")
    p.add_argument("text")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("demo", help="every model, small, on embedded data; writes a report")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="report")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from zoo import commands

    try:
        result = getattr(commands, f"cmd_{args.command}")(args)
    except USER_ERRORS as err:
        print(f"zoo: error: {err}", file=sys.stderr)
        return 2
    if getattr(args, "json", False):
        print(json.dumps(result, default=_jsonable))
    return 0


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")
