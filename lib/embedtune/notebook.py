"""Executing notebooks with papermill: one helper for the stage notebooks and the sweep page.

Each notebook's source is a jupytext percent-format script (``notebooks/<stem>.py``); jupytext
reads it into a notebook that papermill executes. The paired ``.ipynb`` beside it is what
JupyterLab users open; a test keeps the two the same.

Example:
    >>> execute("01_pairs", Path("results/smoke/01_pairs.ipynb"), {"params_file": "params/smoke.yaml"})
"""

from __future__ import annotations

import os
from pathlib import Path

from embedtune import paths

KERNEL_NAME = "embedtune"


class NotebookError(RuntimeError):
    """A notebook cell raised; ``failed`` is the executed copy to open."""

    def __init__(self, message: str, *, ename: str = "", evalue: str = "", cell: int | None = None,
                 failed: Path | None = None):
        super().__init__(message)
        self.ename, self.evalue, self.cell, self.failed = ename, evalue, cell, failed


def source_path(stem: str) -> Path:
    """``notebooks/<stem>.py`` (the source), else ``notebooks/<stem>.ipynb``."""
    for suffix in (".py", ".ipynb"):
        path = paths.notebooks_dir() / f"{stem}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(f"no notebook {stem} in {paths.notebooks_dir()} (.py or .ipynb)")


def available(stem: str) -> bool:
    return any((paths.notebooks_dir() / f"{stem}{s}").is_file() for s in (".py", ".ipynb"))


def load(stem: str):
    """The notebook ``stem`` as an nbformat node, read through jupytext."""
    import jupytext

    return jupytext.read(source_path(stem))


def parameters(node) -> set[str]:
    """The names that its cell tagged ``parameters`` assigns."""
    import ast

    names: set[str] = set()
    for cell in node.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            for stmt in ast.parse(cell.source).body:
                targets = stmt.targets if isinstance(stmt, ast.Assign) else \
                    [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
                names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def kernel_name() -> str:
    """The kernel registered by ``make`` for this venv, else the running interpreter's own."""
    from jupyter_client.kernelspec import KernelSpecManager

    return KERNEL_NAME if KERNEL_NAME in KernelSpecManager().find_kernel_specs() else "python3"


def _logging_kernel_manager(log: Path):
    """A kernel manager whose kernel writes its own stdout/stderr (start-up warnings, the traceback
    it prints when interrupted) to ``log`` instead of the terminal; cell outputs are unaffected."""
    from jupyter_client.manager import AsyncKernelManager

    class LoggingKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            self._embedtune_log = open(log, "ab")  # noqa: SIM115 - closed on shutdown
            kw.setdefault("stdout", self._embedtune_log)
            kw.setdefault("stderr", self._embedtune_log)
            return await super().start_kernel(**kw)

        async def shutdown_kernel(self, *args, **kw):
            try:
                return await super().shutdown_kernel(*args, **kw)
            finally:
                self._embedtune_log.close()

    return LoggingKernelManager


def execute(stem: str, out: Path, params: dict, *, required: set[str] = frozenset(),
            progress: bool = False) -> None:
    """Execute notebook ``stem`` with ``params`` into ``out``, atomically.

    While it runs the copy is ``.<name>.running.ipynb`` beside ``out``; on success it replaces
    ``out``; when a cell raises it is kept as ``<name>.failed.ipynb`` and :class:`NotebookError`
    names it; when interrupted it is removed. The working directory is the project root. What the
    kernel process itself prints goes to ``.<name>.kernel.log`` beside ``out``.

    Raises:
        NotebookError: a cell raised, or the parameters cell lacks a name in ``required``.
    """
    import papermill

    node = load(stem)
    missing = set(required) - parameters(node)
    if missing:
        raise NotebookError(f"{source_path(stem)}: its parameters cell lacks {', '.join(sorted(missing))}")
    out = Path(out)
    running = out.with_name(f".{out.stem}.running.ipynb")
    failed = out.with_name(f"{out.stem}.failed.ipynb")
    failed.unlink(missing_ok=True)
    log = out.with_name(f".{out.stem}.kernel.log")
    log.unlink(missing_ok=True)
    try:
        papermill.execute_notebook(node, str(running), parameters=params, kernel_name=kernel_name(),
                                   progress_bar=progress, cwd=str(paths.project_root()),
                                   kernel_manager_class=_logging_kernel_manager(log))
    except papermill.PapermillExecutionError as exc:
        os.replace(running, failed)
        raise NotebookError(f"{stem} failed (cell {exc.exec_count}): {exc.ename}: {exc.evalue}. "
                            f"Executed copy: {failed}", ename=exc.ename, evalue=exc.evalue,
                            cell=exc.exec_count, failed=failed) from exc
    except BaseException:
        running.unlink(missing_ok=True)
        raise
    os.replace(running, out)


def to_html(notebook: Path, target: Path, hide_code: bool = False, title: str | None = None) -> None:
    """Render an executed notebook as HTML (code hidden for reports), atomically."""
    import nbformat
    from nbconvert import HTMLExporter

    from embedtune.io import atomic_path

    exporter = HTMLExporter(exclude_input=hide_code, exclude_input_prompt=hide_code,
                            exclude_output_prompt=hide_code)
    exporter.log.setLevel("ERROR")  # not "Alternative text is missing on N image(s)" per page
    node = nbformat.read(notebook, as_version=4)
    node.metadata.pop("widgets", None)  # stale widget state (progress bars) is not content
    title = title or f"{notebook.parent.name}: {'report' if hide_code else notebook.stem}"
    body, _ = exporter.from_notebook_node(node, resources={"metadata": {"name": title}})
    with atomic_path(target) as tmp:
        tmp.write_text(body)
