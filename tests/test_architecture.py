"""The import layers of docs/ARCHITECTURE.md: every import between the project's top-level packages points down.

Layers, bottom to top (a package may import only packages of strictly lower layers, plus itself):

    0  utils, configs
    1  data, modeling
    2  evaluation, visualization
    3  engine
    4  train_iterative_model (the application)
    5  tools
    6  benchmarks (they time the tools, e.g. ONNX export)

Every ``import`` / ``from … import`` statement of every ``.py`` file is parsed (lazy imports inside functions
included), so a cycle between packages is impossible: it would need an upward or sideways arrow.
"""
import ast
import os
from typing import Dict, List, Tuple

import pytest

from tests import ROOT

LAYERS: Dict[str, int] = {
    "utils": 0, "configs": 0,
    "data": 1, "modeling": 1,
    "evaluation": 2, "visualization": 2,
    "engine": 3,
    "train_iterative_model": 4,
    "tools": 5, "benchmarks": 6,
}


def _package_of(path: str) -> str:
    relative = os.path.relpath(path, ROOT)
    first = relative.split(os.sep)[0]
    return first[:-3] if first.endswith(".py") else first


def _project_imports(path: str) -> List[Tuple[int, str]]:
    """(line, top-level project package) of every absolute import in ``path``."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, name.split(".")[0]) for name in names if name.split(".")[0] in LAYERS]
    return found


def _project_files() -> List[str]:
    files = []
    for package in LAYERS:
        top = os.path.join(ROOT, package)
        if os.path.isfile(top + ".py"):
            files.append(top + ".py")
        for directory, _, names in os.walk(top):
            files += [os.path.join(directory, name) for name in names if name.endswith(".py")]
    return sorted(files)


def layer_violations(files: List[str]) -> List[str]:
    violations = []
    for path in files:
        source = _package_of(path)
        for line, target in _project_imports(path):
            if target != source and LAYERS[target] >= LAYERS[source]:
                violations.append(f"{os.path.relpath(path, ROOT)}:{line}: {source} (layer {LAYERS[source]}) "
                                  f"imports {target} (layer {LAYERS[target]})")
    return violations


def test_every_project_package_is_in_a_layer():
    packages = {name[:-3] if name.endswith(".py") else name for name in os.listdir(ROOT)
                if name.endswith(".py") or (not name.startswith(".") and os.path.isdir(os.path.join(ROOT, name))
                                            and any(f.endswith(".py") for f in os.listdir(os.path.join(ROOT, name))))}
    assert packages - {"tests"} == set(LAYERS), "a new top-level package needs a layer in LAYERS"


def test_imports_only_point_down():
    files = _project_files()
    assert len(files) > 80  # the walk found the project
    assert layer_violations(files) == []


@pytest.mark.parametrize("source, statement", [
    ("utils/comm.py", "from engine.trainer import Trainer"),  # upward
    ("data/build.py", "import modeling"),  # sideways within a layer
    ("evaluation/report.py", "def f():\n    from engine import hooks"),  # lazy, still upward
])
def test_the_check_catches_upward_sideways_and_lazy_imports(tmp_path, monkeypatch, statement, source):
    fake = tmp_path / "file.py"
    fake.write_text(statement + "\n")
    monkeypatch.setattr(f"{__name__}._package_of", lambda path: source.split("/")[0])
    assert len(layer_violations([str(fake)])) == 1
