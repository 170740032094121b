"""Command line.

``embedtune run PARAMS.yaml [--stages ...] [--set key=value ...]``: run an experiment's stages.
``embedtune models list | show V | promote V | rollback | register MODEL_DIR``: the model registry.
``embedtune reembed PARAMS.yaml [--version V] [--full]``: bring a version's corpus index up to date.
``embedtune sweep PARAMS.yaml --grid key=v1,v2 [...]``: every grid point, then one comparison page.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from embedtune.config import ConfigError, parse_override
from embedtune.data import DataError
from embedtune.models import ModelError


def _parser() -> argparse.ArgumentParser:
    from embedtune.pipeline import STAGE_NAMES

    parser = argparse.ArgumentParser(prog="embedtune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute the stage notebooks of one experiment with papermill")
    run.add_argument("params", help="the experiment's params YAML, e.g. params/scifact.yaml")
    run.add_argument("--stages", help=f"comma-separated subset of: {','.join(STAGE_NAMES)} "
                                      "(default: every stage that has a notebook)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a params key, e.g. --set model.batch_size=32 (repeatable)")
    run.add_argument("--run-dir", help="output folder (default: results/<experiment>)")
    run.add_argument("--no-progress", action="store_true", help="hide papermill's progress bar")
    run.add_argument("--force", action="store_true",
                     help="re-run every stage, even those whose params, inputs and code are unchanged")
    run.add_argument("--wait", action="store_true",
                     help="when another run writes the same folder, wait for it instead of stopping")

    models = sub.add_parser("models", help="the model registry: versions, production pointer, rollback")
    models.add_argument("--registry", help="registry folder (default: $EMBEDTUNE_REGISTRY, else models/)")
    actions = models.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every version; * marks production")
    show = actions.add_parser("show", help="a version's manifest (default: production)")
    show.add_argument("version", nargs="?")
    promote = actions.add_parser("promote", help="put a version in production (atomically)")
    promote.add_argument("version")
    actions.add_parser("rollback", help="return production to the version before the current one")
    register = actions.add_parser("register", help="add a saved model (a run's model/ folder) as a version")
    register.add_argument("model_dir")

    reembed = sub.add_parser("reembed", help="build or update a version's index of the experiment's "
                                             "corpus, encoding only added or changed documents")
    reembed.add_argument("params", help="the experiment's params YAML (its dataset is the corpus)")
    reembed.add_argument("--version", help="registry version (default: production)")
    reembed.add_argument("--full", action="store_true", help="re-encode every document")
    reembed.add_argument("--registry", help="registry folder (default: monitor.registry in params)")
    reembed.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="override a params key (repeatable)")

    from embedtune import benchmarks
    from embedtune.sweep.cli import add_parser

    from embedtune import search

    add_parser(sub)
    benchmarks.add_parser(sub)
    search.add_parser(sub)
    calibrate = sub.add_parser("calibrate", help="predicted (dev, pilot) against realised (test) gains of every "
                                                 "experiment and study point: results/calibration/")
    calibrate.add_argument("--pilot", nargs="*", default=[], metavar="EXPERIMENT",
                           help="first run 00_decide (pilot on) for these experiments, with the params file and "
                                "overrides of results/<EXPERIMENT>/manifest.json, else params/<EXPERIMENT>.yaml")
    return parser


def _models(args) -> None:
    import json

    from embedtune.registry import Registry, RegistryError, registry_dir

    registry = Registry(registry_dir(args.registry))
    if args.action == "list":
        table = registry.table()
        print(f"registry: {registry.root}")
        print(table.to_string() if not table.empty else "no versions yet")
    elif args.action == "show":
        version = args.version or registry.production()
        if version is None:
            raise RegistryError("no version given and none in production")
        manifest = registry.manifest(version)
        manifest["production"] = version == registry.production()
        manifest.pop("files", None)
        print(json.dumps(manifest, indent=2))
    elif args.action == "promote":
        before = registry.production()
        registry.promote(args.version)
        print(f"production: {before} -> {args.version}")
    elif args.action == "rollback":
        before = registry.production()
        print(f"production: {before} -> {registry.rollback()['production']}")
    elif args.action == "register":
        manifest = registry.register(args.model_dir)
        print(f"{args.model_dir} is version {manifest['version']} ({manifest['fingerprint'][7:19]})")


def _reembed(args) -> None:
    from embedtune.config import load_config
    from embedtune.context import load_experiment_data
    from embedtune.index_store import CorpusIndex
    from embedtune.registry import Registry, RegistryError, registry_dir

    from embedtune.context import resolve_params_file

    cfg = load_config(resolve_params_file(args.params), dict(parse_override(o) for o in args.overrides))
    registry = Registry(registry_dir(args.registry or cfg.monitor.registry))
    version = args.version or registry.production()
    if version is None:
        raise RegistryError(f"no --version given and no version in production at {registry.root}")
    ds, _ = load_experiment_data(cfg.data, cfg.seed)
    model = registry.load(version, cfg.model.device)
    index = CorpusIndex(registry.index_dir(version, cfg.experiment))
    report = index.update(model, ds.corpus, version=version, cfg=cfg.model, full=args.full)
    print(f"{version} index of {ds.name} ({len(ds.corpus)} docs) at {index.folder}: "
          f"encoded {report.encoded} (added {report.added}, changed {report.changed}), "
          f"removed {report.removed}, kept {report.kept} in {report.seconds:.1f}s")


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a job scheduler, a container stopping), taken as Ctrl-C: the running
    stage is marked interrupted, a sweep's unfinished points too, and locks and kernels are let go.
    Python's default for SIGTERM exits at once and skips all of that."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done; 1 a sweep with failed points; 2 bad input or a failed stage (one line on
    stderr says what and where); 130 interrupted (Ctrl-C), 143 terminated (SIGTERM), either with
    nothing half-written."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        return _dispatch(args)
    except KeyboardInterrupt as exc:
        # the notebook's abandoned asyncio task may see its kernel die (Ctrl-C reached it too) and
        # asyncio logs "Task exception was never retrieved ... DeadKernelError" at exit: noise now
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        terminated = isinstance(exc, Terminated)
        print(f"embedtune: {'terminated' if terminated else 'interrupted'}; the stage that was running "
              "recorded nothing and will run again next time (finished stages are kept)", file=sys.stderr)
        return 143 if terminated else 130
    except USER_ERRORS() as exc:
        print(f"embedtune: error: {redact_text(str(exc))}", file=sys.stderr)
        return 2
    finally:
        if in_main_thread:  # main() called from Python gives the caller's handler back
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def USER_ERRORS() -> tuple[type[Exception], ...]:  # noqa: N802 - a constant, computed lazily
    """The errors that mean bad input or a failed stage (a message, not a traceback)."""
    from embedtune.index_store import VersionMismatchError
    from embedtune.registry import RegistryError
    from embedtune.runfolder import FolderBusyError, StaleUpstreamError
    from embedtune.runner import StageError

    return (ConfigError, DataError, ModelError, StageError, RegistryError, VersionMismatchError,
            FolderBusyError, StaleUpstreamError)


def redact_text(text: str) -> str:
    """Secrets in the URLs of a message, redacted."""
    import re

    from embedtune.config import redact_url

    return re.sub(r"[a-z][a-z0-9+.-]*://\S+", lambda m: redact_url(m.group(0)), text)


def _dispatch(args) -> int:
    if args.command == "sweep":
        from embedtune.sweep.cli import run_cli

        return run_cli(args)
    if args.command == "bench":
        from embedtune import benchmarks

        return benchmarks.run_cli(args)
    if args.command == "search":
        from embedtune import search

        return search.run_cli(args)
    if args.command == "calibrate":
        from embedtune.calibration import refresh

        print(f"calibration: {refresh(pilots=args.pilot)}")
        return 0
    from embedtune.runner import run_experiment

    if args.command == "run":
        overrides = dict(parse_override(o) for o in args.overrides)
        stages = [s.strip() for s in args.stages.split(",")] if args.stages else None
        folder = run_experiment(args.params, stages=stages, overrides=overrides,
                                run_dir=args.run_dir, progress=not args.no_progress,
                                force=args.force, wait=args.wait)
        print(f"done: {folder}")
    elif args.command == "models":
        _models(args)
    elif args.command == "reembed":
        _reembed(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
