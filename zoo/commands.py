"""One function per `zoo` sub-command; each returns the JSON-serialisable result."""

from __future__ import annotations

import json
import sys

from models import DataError, all_specs, get_spec
from zoo import runs
from zoo.cli import parse_hparams


def cmd_list(args) -> list[dict]:
    rows = [{"name": s.name, "description": s.description, "objective": s.objective_for(s.hparams)["name"],
             "source": s.source} for s in all_specs()]
    if not args.json:
        width = max(len(row["name"]) for row in rows)
        for row in rows:
            print(f"{row['name']:<{width}}  {row['description']} [{row['source']}]")
    return rows


def cmd_train(args) -> dict:
    metrics = runs.train(
        args.name, out=args.out, smoke=args.smoke, device=args.device, seed=args.seed,
        data_dir=args.data_dir, data=args.data, hparams=parse_hparams(args.set),
        epochs=args.epochs, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        clip_norm=args.clip_norm, resume=args.resume, overwrite=args.overwrite, fast=args.fast,
        progress=not args.no_progress, checkpoint_seconds=args.checkpoint_every,
    )
    _say(args, f"{args.name}: trained on {metrics['objective']}; test loss {metrics['test_loss']:.4f} "
               f"{metrics['units']} after {metrics['steps']} steps ({metrics['train_seconds']:.1f} s); "
               f"checkpoint {metrics['checkpoint']}")
    return metrics


def cmd_eval(args) -> dict:
    report = runs.evaluate(
        args.checkpoint, name=args.name, k=args.k, split=args.split, limit=args.limit,
        data_dir=args.data_dir, data=args.data, device=args.device, out=args.out,
        progress=not args.no_progress, seed=args.seed,
    )
    if not args.json:
        print(json.dumps(report, indent=2, default=str))
    return report


def cmd_query(args) -> dict:
    if args.checkpoint:
        _, model, _ = runs.load(args.checkpoint)
    else:
        model = get_spec(args.name).make()
    if not model.capabilities.queries:
        raise DataError(f"model {args.name!r} has no exact queries; try `zoo query student ...`")
    try:
        answer = model.answer(args.text)
    except ValueError as err:
        raise DataError(str(err)) from None
    if not args.json:
        for event, probability in answer.items():
            print(f"P({event} | evidence) = {probability:.6f}")
    return answer


def cmd_demo(args) -> dict:
    from zoo.demo import run_demo

    return run_demo(args.out, device=args.device, seed=args.seed, progress=not args.no_progress,
                    overwrite=args.overwrite)


def _say(args, text: str) -> None:
    print(text, file=sys.stderr if args.json else sys.stdout)
