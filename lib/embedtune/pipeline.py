"""The stages of an experiment, each declared once: notebook, module, params sections, upstream
stages and products. The runner, the cache keys, the run-folder layout, sweeps and the report
all read this table; nothing else lists the stages.

Example:
    >>> [s.name for s in STAGES][:3]
    ['decide', 'pairs', 'negatives']
    >>> stage("train").upstream
    ('negatives',)
"""

from __future__ import annotations

from dataclasses import dataclass

# Params sections every stage reads (the dataset, the base model, how retrieval is done).
BASE_SECTIONS = ("experiment", "seed", "data", "gold", "model", "retrieval")


@dataclass(frozen=True)
class Stage:
    name: str
    notebook: str  # stem of notebooks/<notebook>.py (jupytext percent format) and its .ipynb
    sections: tuple[str, ...]  # params sections it reads besides BASE_SECTIONS
    upstream: tuple[str, ...]  # stages whose products it reads
    products: tuple[str, ...]  # what it leaves in the run folder (besides its executed notebook)
    manifest_sections: tuple[str, ...] = ()  # manifest.json sections it writes
    # Fields of those sections it never reads (dotted), left out of its key; a section that only
    # counts when a switch is on is written "section?switch" (e.g. "train?decide.pilot").
    unread: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        """The library module whose ``run(ctx)`` the notebook calls."""
        return f"embedtune.stages.{self.name}"


# In execution order (DESIGN.md): every upstream stage comes before the stages that read it.
STAGES: tuple[Stage, ...] = (
    # The pilot trains with the experiment's recipe, but its own epochs, on in-batch losses only,
    # one process, no Matryoshka, and no keep-base test.
    Stage("decide", "00_decide", ("decide", "pairs", "clicks", "train?decide.pilot"), (), ("decision.json",),
          unread=("train.epochs", "train.matryoshka_dims", "train.evals_per_epoch", "train.devices",
                  "train.keep_base_p", "train.keep_base_margin", "train.guard_folds", "train.triplet_margin",
                  "train.dev_docs")),
    Stage("pairs", "01_pairs", ("pairs", "synthetic", "crop", "clicks"), (), ("pairs",)),
    Stage("negatives", "02_negatives", ("negatives",), ("pairs",), ("negatives",)),
    Stage("train", "03_train", ("train",), ("negatives",), ("model", "dev_per_query.csv"), ("train",)),
    Stage("evaluate", "04_evaluate", ("evaluate", "ood"), ("train",),
          ("metrics.json", "per_query.csv", "runs"), ("dataset", "model", "environment", "evaluate")),
    Stage("report", "05_report", ("report",), ("decide", "evaluate"),
          ("report.html", "report.json", "figures")),
    Stage("monitor", "06_monitor", ("monitor",), ("evaluate",), ("monitor.json", "scenario.json"),
          ("monitor",)),
)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
_BY_NAME = {s.name: s for s in STAGES}


class UnknownStageError(ValueError):
    """A stage name that is not in :data:`STAGES`."""


def stage(name: str) -> Stage:
    """The declaration of stage ``name``."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownStageError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}") from None


def read_sections(declared: Stage, cfg) -> list[str]:
    """The params sections ``declared`` reads under ``cfg``: its own, less those whose switch is
    off (``"train?decide.pilot"`` counts only while ``decide.pilot`` is true)."""
    out = []
    for entry in declared.sections:
        section, _, switch = entry.partition("?")
        if switch:
            head, _, field_name = switch.partition(".")
            if not getattr(getattr(cfg, head), field_name):
                continue
        out.append(section)
    return out


def downstream(name: str) -> list[str]:
    """Every stage that reads ``name``'s products, directly or through another stage."""
    out: list[str] = []
    for s in STAGES:
        if any(u == name or u in out for u in s.upstream):
            out.append(s.name)
    return out
