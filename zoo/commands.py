"""One function per `zoo` sub-command; each returns the JSON-serialisable result."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pyro_zoo import runs
from pyro_zoo.arguments import echo, parse_hparams
from pyro_zoo.demo import run_demo
from pyro_zoo.inference.devices import resolve_device
from pyro_zoo.inference.judge import GUIDES, OBJECTIVES, judge
from pyro_zoo.inference.plain import to_json
from pyro_zoo.models import DataError, all_specs, get_spec
from pyro_zoo.validate import writable_folder


def cmd_list(args) -> list[dict]:
    rows = [{"name": s.name, "description": s.description, "objective": s.objective_for(s.config())["name"],
             "source": s.source} for s in all_specs()]
    if not args.json:
        width = max(len(row["name"]) for row in rows)
        for row in rows:
            print(f"{row['name']:<{width}}  {row['description']} [{row['source']}]")
    return rows


def cmd_train(args) -> dict:
    spec = get_spec(args.name)
    resolve_device(args.device)
    writable_folder(Path("runs") / spec.name if args.out is None else args.out)
    hparams = parse_hparams(args.set)
    settings = {"epochs": args.epochs, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                "clip_norm": args.clip_norm}
    metrics = runs.train(runs.TrainRequest(
        args.name, out=args.out, smoke=args.smoke, data=args.data, data_dir=args.data_dir, hparams=hparams,
        settings={key: value for key, value in settings.items() if value is not None}, fast=args.fast,
        resume=args.resume, overwrite=args.overwrite, device=args.device, seed=args.seed,
        progress=not args.no_progress, checkpoint_seconds=args.checkpoint_every,
    ))
    _say(args, f"{args.name}: trained on {metrics['objective']}; test loss {metrics['test_loss']:.4f} "
               f"{metrics['units']} after {metrics['steps']} steps ({metrics['train_seconds']:.1f} s); "
               f"checkpoint {metrics['checkpoint']}")
    return metrics


def cmd_eval(args) -> dict:
    get_spec(args.name)
    resolve_device(args.device)
    writable_folder(Path(args.checkpoint).parent / "eval" if args.out is None else args.out)
    report = runs.evaluate(
        args.checkpoint, name=args.name, num_particles=args.num_particles, split=args.split, limit=args.limit,
        ais_settings={"num_chains": args.ais_chains, "num_steps": args.ais_steps},
        data_dir=args.data_dir, data=args.data, device=args.device, out=args.out, overwrite=args.overwrite,
        progress=not args.no_progress, seed=args.seed, methods=args.method,
    )
    if not args.json:
        print(json.dumps(report, indent=2, default=str))
    return report


def cmd_judge(args) -> dict:
    for name in args.models or ():
        get_spec(name)
    writable_folder(args.out)
    summary = judge(args.models, args.guides or GUIDES, args.objectives or OBJECTIVES, out=args.out,
                    smoke=args.smoke, small_models=args.small_models,
                    references=args.references, budget=args.budget, seed=args.seed,
                    progress=not args.no_progress, command=judge_command(args))
    if summary.get("rank"):  # under torchrun a rank other than 0 ran its share of the cells; rank 0 reports
        return to_json(summary)
    if not args.json:
        print((Path(args.out) / "leaderboard.md").read_text())
    _say(args, f"judge: {len(summary['cells'])} cells, {len(summary['skipped'])} skipped, "
               f"{summary['seconds']:.0f} s; leaderboard {Path(args.out) / 'leaderboard.md'}")
    return to_json(summary)


def judge_command(args) -> str:
    """The `zoo judge` command line of ``args``, flags that change the result only."""
    words = ["zoo", "judge"]
    for flag in ("models", "guides", "objectives"):
        if getattr(args, flag):
            words += [f"--{flag}", *getattr(args, flag)]
    words += [flag for flag, on in (("--smoke", args.smoke), ("--small-models", args.small_models),
                                    ("--references", args.references)) if on]
    words += [f"--budget {args.budget:g}"] if args.budget else []
    words += [f"--seed {args.seed}"] if args.seed else []
    return " ".join(words + ["--out", str(args.out)])


def cmd_query(args) -> dict:
    spec = get_spec(args.name)
    if args.checkpoint:
        saved, model, _ = runs.load(args.checkpoint)
        if saved.name != spec.name:
            raise DataError(f"{args.checkpoint} holds a {saved.name!r} model, not {spec.name!r}; "
                            f"point --checkpoint at a {spec.name} run")
    else:
        model = spec.make(spec.query_config)
    if spec.answer is None:
        raise DataError(f"model {echo(args.name)} has no exact queries; try `zoo query student ...`")
    try:
        answer = spec.answer(model, args.text)
    except ValueError as err:
        raise DataError(str(err)) from None
    if not args.json:
        for event, probability in answer.items():
            print(f"P({event} | evidence) = {probability:.6f}")
    return answer


def cmd_demo(args) -> dict:
    resolve_device(args.device)
    writable_folder(args.out)
    return run_demo(args.out, device=args.device, seed=args.seed, progress=not args.no_progress,
                    overwrite=args.overwrite, workers=args.workers)


def _say(args, text: str) -> None:
    print(text, file=sys.stderr if args.json else sys.stdout)
