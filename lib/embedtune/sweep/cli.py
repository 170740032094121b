"""``embedtune sweep``: the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from embedtune.config import parse_override
from embedtune.sweep.execute import render_comparison, run_sweep
from embedtune.sweep.grid import parse_grid
from embedtune.sweep.plan import plan_sweep


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``embedtune sweep`` to the CLI's subparsers (``embedtune.cli``)."""
    sweep = subparsers.add_parser(
        "sweep", help="run a grid of parameter points through the stage notebooks and compare them",
        description="Run every point of a grid through the stage notebooks (shared stages run once), "
                    "then render one comparison page: results/<experiment>/<sweep>/compare.html.")
    sweep.add_argument("params", help="the experiment's params YAML (its sweep: section, if any, is the grid)")
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                       help="a swept key and its values, e.g. --grid train.loss=mnrl,triplet or "
                            "--grid 'negatives.sources=[],[bm25],[bm25,dense]': each value is YAML, and a "
                            "comma inside brackets or quotes does not split (repeatable: every combination)")
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="a params key fixed for every point (repeatable)")
    sweep.add_argument("--name", help="the sweep's folder under results/<experiment>/ (default: the varied keys)")
    sweep.add_argument("--baseline", help="the point the others are tested against (its folder name; "
                                          "default: the first point)")
    sweep.add_argument("--x", help="the key on the plots' x axis (default: the first varied key)")
    sweep.add_argument("--stages", help="comma-separated stages each point runs (default: every stage "
                                        "that has a notebook)")
    sweep.add_argument("--system", help="the system compared across points (default: finetuned)")
    sweep.add_argument("--out", help="the sweep folder (default: results/<experiment>/<name>)")
    sweep.add_argument("--workers", type=int, default=1, help="points run at once, one process each (default 1)")
    sweep.add_argument("--executor", choices=["local", "ray"], default="local",
                       help="local processes, or Ray tasks (pip install -e '.[ray]')")
    sweep.add_argument("--address", help="with --executor ray: the cluster (ray://head:10001, or auto); "
                                         "default: a local Ray instance of --workers CPUs")
    sweep.add_argument("--no-report", action="store_true", help="skip the comparison page")
    sweep.add_argument("--report-only", action="store_true",
                       help="only render the comparison page of a sweep that ran")
    sweep.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return sweep


def run_cli(args: argparse.Namespace) -> int:
    """``embedtune sweep``: 0 when every point (and the page) finished, 1 when some failed.
    A bad sweep (nothing ran) raises a ConfigError, which the CLI reports with exit code 2."""
    grid = dict(parse_grid(g) for g in args.grid)
    overrides = dict(parse_override(o) for o in args.overrides)
    stages = [s.strip() for s in args.stages.split(",")] if args.stages else None
    if args.report_only:
        folder = Path(args.out) if args.out else plan_sweep(
            args.params, grid, name=args.name, overrides=overrides, stages=stages).folder
        rendered = render_comparison(folder)
        print(f"comparison: {rendered.get('html') or rendered}")
        return 0 if rendered["status"] == "ok" else 1
    result = run_sweep(args.params, grid, name=args.name, baseline=args.baseline, x=args.x,
                       stages=stages, overrides=overrides, system=args.system, out_dir=args.out,
                       workers=args.workers, report=not args.no_report, executor=args.executor,
                       address=args.address,
                       progress=not args.no_progress)
    for point in result.points:
        where = f" ({point['failed_stage']})" if point.get("failed_stage") else ""
        print(f"{point['status']:>11}  {point['name']}{where}"
              + (f": {point['error']}" if point.get("error") else ""))
    if result.report:
        print(f"comparison: {result.report.get('html') or result.report.get('error')}")
    print(f"sweep: {result.folder / 'sweep.json'}")
    return 1 if result.failed or result.report.get("status") == "failed" else 0
