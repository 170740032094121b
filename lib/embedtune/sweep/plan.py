"""A sweep resolved and validated before anything runs: its points, baseline and folder."""

from __future__ import annotations

import copy
import dataclasses
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from embedtune.config import ConfigError, build, load_config, read_raw, set_dotted
from embedtune.layout import resolve_run_dir
from embedtune.pipeline import STAGES
from embedtune.runner import select_stages
from embedtune.sweep.grid import expand, numbers, point_name, short_keys

# names a sweep folder may not take: they are a stage's outputs in the experiment folder
RESERVED = {name for s in STAGES for name in s.products} | {".stages"}


@dataclass(frozen=True)
class SweepSection:
    """The ``sweep:`` section of a params file (see the module docstring)."""

    name: str | None = None  # folder under results/<experiment>/; None: named after the varied keys
    grid: Any = None  # mapping: dotted key -> list of values (every combination is a point)
    points: tuple[Any, ...] = ()  # extra points: mappings of dotted keys
    baseline: Any = None  # a point name or a mapping of dotted keys; None: the first point
    x: str | None = None  # the key on the plots' x axis; None: the first grid key
    stages: tuple[str, ...] | None = None  # None: every stage that has a notebook
    system: str = "finetuned"  # the system compared across points


@dataclass(frozen=True)
class Point:
    name: str  # its folder name in the sweep folder
    overrides: dict[str, Any]  # what this point sets on top of base.yaml
    values: dict[str, Any]  # every varied key's resolved value (set here, or the base's)


@dataclass
class SweepPlan:
    """Everything a sweep will do, checked before anything runs."""

    name: str
    folder: Path
    params_file: Path  # what the user named
    base: dict  # that file without its sweep section, with the fixed overrides applied
    fixed: dict[str, Any]  # the fixed overrides (``--set``)
    grid: dict[str, list]
    points: list[Point]
    varied: list[str]  # keys whose value differs between points, in grid order
    baseline: str
    x: str | None
    stages: list[str]
    system: str
    experiment_cfg: Any  # the base ExperimentConfig (report and evaluate settings for the page)

    def point_folder(self, point: Point) -> Path:
        return self.folder / point.name


def read_params(params_file: str | Path) -> tuple[dict, SweepSection | None]:
    """The params file's mapping without its ``sweep:`` section, and that section (validated)."""
    raw = read_raw(params_file)
    section = raw.pop("sweep", None)
    if section is None:
        return raw, None
    spec = build(SweepSection, section, prefix="sweep.")
    if spec.grid is not None and not (isinstance(spec.grid, dict) and all(
            isinstance(v, list) and v for v in spec.grid.values())):
        raise ConfigError("sweep.grid: expected a mapping of dotted keys to non-empty lists of values, "
                          "e.g. {train.loss: [mnrl, triplet]}")
    if not all(isinstance(p, dict) and p for p in spec.points):
        raise ConfigError("sweep.points: expected a list of mappings of dotted keys, e.g. "
                          "[{train.loss: mnrl, train.epochs: 5}]")
    return raw, spec


def plan_sweep(params_file: str | Path, grid: Mapping[str, list] | None = None, *,
               points: Iterable[Mapping[str, Any]] = (), name: str | None = None,
               baseline: str | Mapping[str, Any] | None = None, x: str | None = None,
               stages: Iterable[str] | None = None, overrides: Mapping[str, Any] | None = None,
               system: str | None = None, out_dir: str | Path | None = None) -> SweepPlan:
    """Resolve a sweep and validate every point's config, before anything runs.

    Arguments given here win over the params file's ``sweep:`` section; ``grid`` keys are added
    to (or replace) the section's grid keys. ``overrides`` are fixed for every point.

    Raises:
        ConfigError: no grid, a bad grid value or key (with the point that has it), a baseline
            that names no point, an unknown stage.
    """
    raw, spec = read_params(params_file)
    spec = spec or SweepSection()
    base = copy.deepcopy(raw)
    fixed = {k: numbers(v) for k, v in (overrides or {}).items()}
    full_grid = {k: numbers(list(v)) for k, v in (spec.grid or {}).items()}
    for key, values in (grid or {}).items():
        full_grid.pop(key, None)  # a command-line key moves to the end: it varies fastest
        full_grid[key] = numbers(list(values))
    extra = [numbers(dict(p)) for p in (points or spec.points)]
    combos = expand(full_grid, extra)
    if not combos:
        raise ConfigError(f"{params_file}: nothing to sweep; give --grid key=v1,v2 or a sweep.grid section")
    keys = list(dict.fromkeys(k for combo in combos for k in combo))
    # validate against the strict config loader, exactly as each point's run will load it
    resolved = []
    with tempfile.TemporaryDirectory() as tmp:
        base_file = Path(tmp) / "base.yaml"
        base_file.write_text(yaml.safe_dump(base, sort_keys=False))
        cfg = load_config(base_file, fixed)
        for combo in combos:
            try:
                resolved.append(load_config(base_file, {**fixed, **combo}).to_dict())
            except ConfigError as exc:
                raise ConfigError(f"sweep point {combo}: {exc}") from exc
    for key, value in fixed.items():
        set_dotted(base, key, value)
    # varied: the swept keys whose resolved value differs between points
    varied = [k for k in keys if len({json.dumps(_dotted(r, k), sort_keys=True) for r in resolved}) > 1]
    named = [Point(point_name(c, [k for k in varied if k in c]), c, {k: _dotted(r, k) for k in varied})
             for c, r in zip(combos, resolved)]
    names = [p.name for p in named]
    for i, p in enumerate(named):  # two points that slug alike keep apart
        if names.count(p.name) > 1:
            named[i] = dataclasses.replace(p, name=f"{p.name}-{i + 1}")
    sweep_name = name or spec.name or "-".join(short_keys(varied).values()) or "sweep"
    if sweep_name in RESERVED or "/" in sweep_name or sweep_name.startswith("."):
        raise ConfigError(f"sweep name {sweep_name!r} would clash with a run folder's own files; "
                          "choose another (--name)")
    folder = Path(out_dir) if out_dir else resolve_run_dir(cfg) / sweep_name
    baseline_name = _resolve_baseline(baseline if baseline is not None else spec.baseline, named)
    x_key = x or spec.x or (varied[0] if varied else None)
    if x_key is not None and x_key not in keys:
        raise ConfigError(f"sweep x {x_key!r} is not a swept key; swept: {', '.join(keys)}")
    selected = select_stages(list(stages) if stages is not None else spec.stages)
    return SweepPlan(name=sweep_name, folder=folder, params_file=Path(params_file), base=base,
                     fixed=fixed, grid=full_grid, points=named, varied=varied, baseline=baseline_name, x=x_key,
                     stages=selected, system=system or spec.system, experiment_cfg=cfg)


def _resolve_baseline(baseline: str | Mapping[str, Any] | None, points: list[Point]) -> str:
    if baseline is None:
        return points[0].name
    if isinstance(baseline, str):
        if baseline in {p.name for p in points}:
            return baseline
        raise ConfigError(f"sweep baseline {baseline!r} names no point; points: "
                          f"{', '.join(p.name for p in points)}")
    wanted = numbers(dict(baseline))
    matches = [p for p in points
               if all((p.values[k] if k in p.values else p.overrides.get(k)) == v for k, v in wanted.items())]
    if len(matches) != 1:
        raise ConfigError(f"sweep baseline {dict(baseline)} matches {len(matches)} points, not one")
    return matches[0].name


def _dotted(plain: Mapping[str, Any], key: str) -> Any:
    node: Any = plain
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node
