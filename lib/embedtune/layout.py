"""Where everything lives in a run folder (``results/<experiment>/``): one object, no path literals
elsewhere.

Example:
    >>> layout = RunLayout(Path("results/scifact"))
    >>> layout.metrics, layout.marker("train")
    (PosixPath('results/scifact/metrics.json'), PosixPath('results/scifact/.stages/train.json'))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from embedtune import paths
from embedtune.pipeline import stage as _declared


@dataclass(frozen=True)
class RunLayout:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    # ---- the folder's own bookkeeping ------------------------------------------------------
    @property
    def params(self) -> Path:
        """The resolved params of the last stage that finished (``embedtune.config`` format)."""
        return self.root / "params.yaml"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def lock(self) -> Path:
        """Held by the one process writing this folder (``embedtune.runfolder.FolderLock``)."""
        return self.root / ".lock"

    @property
    def lock_holder(self) -> Path:
        """Who holds :attr:`lock`: pid, host, command, since when."""
        return self.root / ".lock.holder.json"

    @property
    def stages_dir(self) -> Path:
        return self.root / ".stages"

    def marker(self, stage: str) -> Path:
        """Written when ``stage`` finishes: its cache key, upstream keys and params."""
        return self.stages_dir / f"{stage}.json"

    def executed(self, stage: str) -> Path:
        """The executed copy of the stage notebook."""
        return self.root / f"{_declared(stage).notebook}.ipynb"

    def html(self, stage: str) -> Path:
        return self.root / f"{_declared(stage).notebook}.html"

    def failed(self, stage: str) -> Path:
        """The executed copy of a notebook that failed."""
        return self.root / f"{_declared(stage).notebook}.failed.ipynb"

    def running(self, stage: str) -> Path:
        """Papermill writes here while the notebook runs; it is moved into place when it ends."""
        return self.root / f".{_declared(stage).notebook}.running.ipynb"

    def products(self, stage: str) -> list[Path]:
        """What ``stage`` leaves in the folder (see ``embedtune.pipeline``)."""
        return [self.root / name for name in _declared(stage).products]

    def has_products(self, stage: str) -> bool:
        return any(p.exists() for p in self.products(stage))

    # ---- 00_decide -------------------------------------------------------------------------
    @property
    def decision(self) -> Path:
        return self.root / "decision.json"

    # ---- 01_pairs --------------------------------------------------------------------------
    @property
    def pairs_dir(self) -> Path:
        return self.root / "pairs"

    @property
    def pairs_train(self) -> Path:
        return self.pairs_dir / "train.jsonl"

    @property
    def dev_qrels(self) -> Path:
        return self.pairs_dir / "dev_qrels.json"

    @property
    def pairs_stats(self) -> Path:
        return self.pairs_dir / "stats.json"

    @property
    def click_validation(self) -> Path:
        return self.pairs_dir / "click_validation.json"

    # ---- 02_negatives ----------------------------------------------------------------------
    @property
    def negatives_dir(self) -> Path:
        return self.root / "negatives"

    @property
    def negatives_train(self) -> Path:
        return self.negatives_dir / "train.jsonl"

    @property
    def negatives_stats(self) -> Path:
        return self.negatives_dir / "stats.json"

    # ---- 03_train --------------------------------------------------------------------------
    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def version(self) -> Path:
        return self.model_dir / "version.json"

    @property
    def training_log(self) -> Path:
        return self.model_dir / "training_log.json"

    @property
    def dev_per_query(self) -> Path:
        return self.root / "dev_per_query.csv"

    # ---- 04_evaluate -----------------------------------------------------------------------
    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def per_query(self) -> Path:
        return self.root / "per_query.csv"

    def run_file(self, system: str) -> Path:
        """A system's TREC run file."""
        return self.root / "runs" / f"{system}.trec"

    # ---- 05_report -------------------------------------------------------------------------
    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    def figure(self, name: str) -> Path:
        return self.root / "figures" / f"{name}.png"

    # ---- 06_monitor ------------------------------------------------------------------------
    @property
    def monitor_json(self) -> Path:
        return self.root / "monitor.json"

    @property
    def scenario_json(self) -> Path:
        return self.root / "scenario.json"

    @property
    def scenario_dir(self) -> Path:
        """The maintenance scenario's own registry, indexes and re-trained model."""
        return self.root / "scenario"


def resolve_run_dir(cfg, run_dir: str | Path | None = None) -> Path:
    if run_dir:
        return Path(run_dir)
    root = paths.resolve(cfg.results_dir) if cfg.results_dir else paths.results_dir()
    return root / cfg.experiment


def compare_with_folder(cfg, name: str) -> Path:
    """Another run named in ``report.compare_with``: an experiment name (a folder beside this
    experiment's in the results folder) or a path (project-relative)."""
    if "/" in name or name.startswith((".", "~")):
        return paths.resolve(name)
    return resolve_run_dir(cfg).parent / name
