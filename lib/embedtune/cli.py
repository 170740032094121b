"""Command line: ``embedtune run PARAMS.yaml [--stages ...] [--set key=value ...]``."""

from __future__ import annotations

import argparse
import logging
import sys

from embedtune.config import ConfigError, parse_override
from embedtune.data import DataError
from embedtune.models import ModelError


def _parser() -> argparse.ArgumentParser:
    from embedtune.runner import STAGES

    parser = argparse.ArgumentParser(prog="embedtune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute the stage notebooks of one experiment with papermill")
    run.add_argument("params", help="the experiment's params YAML, e.g. params/scifact.yaml")
    run.add_argument("--stages", help=f"comma-separated subset of: {','.join(STAGES)} "
                                      "(default: every stage that has a notebook)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a params key, e.g. --set model.batch_size=32 (repeatable)")
    run.add_argument("--run-dir", help="output folder (default: results/<experiment>)")
    run.add_argument("--no-progress", action="store_true", help="hide papermill's progress bar")
    run.add_argument("--force", action="store_true",
                     help="re-run every stage, even those whose params, data and notebook are unchanged")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from embedtune.runner import StageError, run_experiment

    try:
        if args.command == "run":
            overrides = dict(parse_override(o) for o in args.overrides)
            stages = [s.strip() for s in args.stages.split(",")] if args.stages else None
            folder = run_experiment(args.params, stages=stages, overrides=overrides,
                                    run_dir=args.run_dir, progress=not args.no_progress,
                                    force=args.force)
            print(f"done: {folder}")
    except (ConfigError, DataError, ModelError, StageError) as exc:
        print(f"embedtune: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
