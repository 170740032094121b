"""The notebooks' source is jupytext percent-format .py; the committed .ipynb must match it."""

import json

import jupytext
import pytest

from embedtune import notebook, paths
from embedtune.pipeline import STAGES
from embedtune.runner import NOTEBOOK_PARAMETERS

SOURCES = sorted(paths.notebooks_dir().glob("*.py"))


def _cells(node):
    return [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in node.cells]


def test_every_stage_and_page_has_a_source():
    stems = {p.stem for p in SOURCES}
    assert {s.notebook for s in STAGES} | {"sweep_compare", "label"} <= stems


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_committed_ipynb_matches_its_source(source):
    paired = source.with_suffix(".ipynb")
    assert paired.is_file(), f"{paired} missing: run `jupytext --sync {source}`"
    committed = json.loads(paired.read_text())
    assert all(not c.get("outputs") and not c.get("execution_count")
               for c in committed["cells"] if c["cell_type"] == "code"), f"{paired} has outputs"
    assert _cells(jupytext.read(source)) == _cells(jupytext.read(paired)), \
        f"{paired} differs from {source}: run `jupytext --sync notebooks/*.py`"


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_stage_notebooks_declare_the_runner_parameters_and_call_their_stage(stage):
    node = notebook.load(stage.notebook)
    assert NOTEBOOK_PARAMETERS <= notebook.parameters(node)
    code = "\n".join(c.source for c in node.cells if c.cell_type == "code")
    assert f"from embedtune.stages import {stage.name}" in code and f"{stage.name}.run(ctx)" in code
    assert "def " not in code and "class " not in code  # notebooks are thin drivers
