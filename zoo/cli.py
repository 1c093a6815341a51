"""`zoo list | train | eval | judge | query | demo` — see README.md for the contract.

Every command validates its inputs (model name, device, data, checkpoint) before it writes
anything; user errors print one sentence on stderr and exit with status 2 (under ``torchrun``:
rank 0 prints it, every rank exits with 2). Library messages name settings in backquotes
(```lr```); :func:`flagged` turns those into this command line's flags (``--lr``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys

from pyro_zoo import commands
from pyro_zoo.arguments import MAX_SEED, UsageError, positive_float, positive_int, seed_int
from pyro_zoo.inference import distributed
from pyro_zoo.inference.checkpoint import CheckpointError
from pyro_zoo.inference.devices import DeviceError
from pyro_zoo.inference.evaluate import AIS_SETTINGS
from pyro_zoo.inference.importance import EstimateTooLarge
from pyro_zoo.inference.plain import to_json
from pyro_zoo.inference.settings import SettingError
from pyro_zoo.inference.train import TrainingDiverged
from pyro_zoo.models import DataError, UnknownModelError

USER_ERRORS = (CheckpointError, DataError, DeviceError, EstimateTooLarge, SettingError, TrainingDiverged,
               UnknownModelError, FileExistsError)
#: the flag of each setting a library message names in backquotes
FLAGS = {"steps": "--steps", "epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr",
         "clip_norm": "--clip-norm", "checkpoint_seconds": "--checkpoint-every",
         "num_particles": "--num-particles", "fast": "--fast", "seed": "--seed", "resume=True": "--resume",
         "overwrite=True": "--overwrite", "device": "--device", "data": "--data", "data_dir": "--data-dir",
         "methods": "--method", "checkpoint": "--checkpoint"}


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``zoo: error: <message>; see `zoo train --help```."""

    def error(self, message):
        raise UsageError(f"{message}; see `{self.prog} --help`")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="zoo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list the registered models")
    p.add_argument("--json", action="store_true")

    common = common_arguments()
    add_train(sub, common)
    add_eval(sub, common)
    add_judge(sub)

    p = sub.add_parser("query", help="exact posterior query, e.g. zoo query student 'I | G=C,S=1'")
    p.add_argument("name")
    p.add_argument("text")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("demo", help="every model, small, on embedded data; writes a report")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="report")
    p.add_argument("--overwrite", action="store_true", help="replace the runs of an earlier demo in --out")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--workers", type=positive_int, default=None,
                   help="models trained at once, each in its own process (default: one per CPU core)")
    p.add_argument("--no-progress", action="store_true")
    return parser


def common_arguments() -> argparse.ArgumentParser:
    """The flags train and eval share: device, data, seed, output."""
    common = Parser(add_help=False)
    common.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    common.add_argument("--data-dir", default=None, help="folder holding data sets (e.g. ../shared/data)")
    common.add_argument("--data", default=None, help="model-specific data set name or a CSV file")
    common.add_argument("--seed", type=seed_int, default=0, help=f"0 .. {MAX_SEED}")
    common.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    common.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return common


def add_train(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("train", parents=[common], help="train a model by SVI")
    p.add_argument("name")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=positive_float, help="> 0, may be fractional")
    length.add_argument("--steps", type=positive_int, help=">= 1")
    p.add_argument("--batch-size", type=positive_int, help=">= 1")
    p.add_argument("--lr", type=positive_float, help="learning rate, > 0")
    p.add_argument("--clip-norm", type=positive_float, help="gradient-norm clip, > 0")
    p.add_argument("--out", default=None, help="run folder (default: runs/NAME)")
    p.add_argument("--smoke", action="store_true", help="tiny model, data and run")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out (removing its files)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="hyperparameters")
    p.add_argument("--fast", action=argparse.BooleanOptionalAction, default=None,
                   help="train on the model's closed-form objective instead of its Pyro program (with "
                        "--resume: switch it on or off; default: as the checkpoint was trained)")
    p.add_argument("--checkpoint-every", type=positive_float, default=60.0, metavar="SECONDS",
                   help="seconds between checkpoints, > 0 (one is always written at the end; default 60)")


def add_eval(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("eval", parents=[common], help="evaluate a trained model")
    p.add_argument("name")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--num-particles", type=positive_int, default=1000,
                   help="importance samples per data point, for IS and IWAE_k (default 1000)")
    p.add_argument("--ais-chains", type=positive_int, default=AIS_SETTINGS["num_chains"],
                   help=f"AIS chains per data point (--method ais; default {AIS_SETTINGS['num_chains']})")
    p.add_argument("--ais-steps", type=positive_int, default=AIS_SETTINGS["num_steps"],
                   help=f"AIS annealing steps (--method ais, bdmc; default {AIS_SETTINGS['num_steps']})")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--limit", type=positive_int, default=None, help="evaluate the first N data points only")
    p.add_argument("--method", nargs="+", default=["is"], metavar="METHOD",
                   help="estimators beyond the report's base (is): ais, bdmc, sbc; several allowed")
    p.add_argument("--out", default=None, help="report folder (default: eval/ next to the checkpoint)")
    p.add_argument("--overwrite", action="store_true", help="replace the report in --out (removes its files)")


def add_judge(sub) -> None:
    """The `zoo judge` sub-command and its flags."""
    p = sub.add_parser("judge", help="score guides and objectives against every model's known answer")
    p.add_argument("--models", nargs="+", default=None, metavar="NAME",
                   help="default: every registered model")
    p.add_argument("--guides", nargs="+", default=None, metavar="GUIDE",
                   help="own, AutoNormal, AutoDiagonalNormal, AutoLowRankMultivariateNormal, "
                        "AutoMultivariateNormal, AutoIAFNormal, AutoDelta, or file.py:function "
                        "(model) -> guide")
    p.add_argument("--objectives", nargs="+", default=None, metavar="OBJECTIVE",
                   help="elbo (the model's own), iwae (RenyiELBO alpha=0), or file.py:function () -> "
                        "Pyro ELBO")
    p.add_argument("--budget", type=positive_float, default=None, metavar="SECONDS",
                   help="start no cell after this many seconds (the rest are listed as skipped)")
    p.add_argument("--out", default="judge",
                   help="folder of the cells, leaderboard and figure (default: judge)")
    p.add_argument("--smoke", action="store_true", help="tiny recipe, seconds per cell")
    p.add_argument("--small-models", action="store_true",
                   help="models and data in their smoke sizes, trained and scored in full")
    p.add_argument("--references", action="store_true",
                   help="judge models with global latents and no exact posterior against cached NUTS runs")
    p.add_argument("--seed", type=seed_int, default=0, help=f"0 .. {MAX_SEED}")
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def main(argv: list[str] | None = None) -> int:
    distributed.quiet_unless_main()  # under torchrun, rank 0 alone prints the result
    logger = logging.getLogger("pyro_zoo.inference")
    if LOG_HANDLER not in logger.handlers:
        logger.addHandler(LOG_HANDLER)
    try:
        args = build_parser().parse_args(argv)
        result = getattr(commands, f"cmd_{args.command}")(args)
        if getattr(args, "json", False):
            print(json.dumps(to_json(result)))
        sys.stdout.flush()  # here, not at exit, so that a reader gone early is caught below
    except (UsageError, *USER_ERRORS) as err:
        distributed.report_error(f"zoo: error: {one_line(err)}")
        return 2
    except BrokenPipeError:  # the reader stopped early (`zoo list | head -3`): no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what is left goes nowhere
        return 1
    return 0


def one_line(err: BaseException) -> str:
    """The error's message with newlines folded, so stderr holds exactly one line, and its
    settings named by their flags."""
    return flagged(" ".join(str(err).split()))


def flagged(text: str) -> str:
    """``text`` with each setting in backquotes (```lr```) written as its flag (``--lr``), and each
    hyperparameter assignment (```covariance=diag```) as ``--set covariance=diag``."""
    return re.sub(r"`([^`]+)`", lambda found: _flag(found[1]) or found[0], text)


def _flag(setting: str) -> str | None:
    if setting in FLAGS:
        return FLAGS[setting]
    return f"--set {setting}" if re.fullmatch(r"\w+=\S+", setting) else None


class _LogLine(logging.Handler):
    """The library's log lines (e.g. a resume that changes the learning rate) on stderr, as
    ``zoo: ...`` with flags for settings."""

    def emit(self, record):
        print(f"zoo: {flagged(record.getMessage())}", file=sys.stderr)


LOG_HANDLER = _LogLine(logging.INFO)
