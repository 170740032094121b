"""The library's layering, checked on its source: no import cycles (lazy imports inside functions
count too), no library module importing a stage module, no module importing another's private
names."""

import ast
from pathlib import Path

from embedtune.keys import imported_modules, package_root

ROOT = package_root()


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        # a package's __init__ running first is not a dependency worth a cycle
        deps = {m for m in imported_modules(path, ROOT) if m in modules and not name.startswith(m + ".")}
        graph[name] = deps - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
    graph = _graph()
    assert len(graph) > 30  # the parser found the library
    assert "embedtune.data" in graph["embedtune.context"]
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_no_library_module_imports_a_stage_module():
    offenders = {name: sorted(m for m in deps if m.startswith("embedtune.stages"))
                 for name, deps in _graph().items() if not name.startswith("embedtune.stages")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_stage_module_imports_another_stage_module():
    # stages talk through the run folder (embedtune.context / embedtune.layout), not each other
    offenders = {name: sorted(m for m in deps if m.startswith("embedtune.stages.") and m != name)
                 for name, deps in _graph().items() if name.startswith("embedtune.stages.")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_private_names_are_imported_across_modules():
    offenders = []
    for name, path in _modules().items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("embedtune"):
                offenders += [f"{name}: from {node.module} import {a.name}" for a in node.names
                              if a.name.startswith("_")]
            # module._private attribute access on an imported embedtune module
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                    and isinstance(node.value, ast.Name) and node.value.id in _imported_module_names(tree):
                offenders.append(f"{name}: {node.value.id}.{node.attr}")
    assert offenders == []


def _imported_module_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("embedtune"):
            names |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.startswith("embedtune")}
    return names
