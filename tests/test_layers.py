"""The package's layers import only from their left (tasks -> model -> train -> sweep -> analysis
-> report); the modules on top (cli, reproduce, adaptive, bench) may import any layer."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "jointtask"
LAYERS = ["tasks", "model", "train", "sweep", "analysis", "report"]
SHARED = {"errors", "fileio", "schema", "__init__"}  # utilities every layer may use


def _layer(module: str) -> str | None:
    head = module.split(".")[0]
    head = "model" if head == "model_config" else head  # the model's torch-free half
    return head if head in LAYERS else None


def _imports(path: Path) -> list[str]:
    """Modules a file imports from the package, as dotted names relative to jointtask."""
    rel = path.relative_to(PKG).with_suffix("").parts
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(rel[: len(rel) - node.level])
            out.append(".".join(base + ([node.module] if node.module else [])))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jointtask."):
            out.append(node.module.removeprefix("jointtask."))
    return [m for m in out if m]


def test_each_layer_imports_only_from_its_left():
    wrong = []
    for path in PKG.rglob("*.py"):
        own = _layer(".".join(path.relative_to(PKG).with_suffix("").parts))
        if own is None:
            continue
        for m in _imports(path):
            other = _layer(m)
            if other is None:
                assert m.split(".")[0] in SHARED, f"{path.name} imports {m}, a module on top of the layers"
            elif LAYERS.index(other) > LAYERS.index(own):
                wrong.append(f"{path.relative_to(PKG)} imports {m}")
    assert not wrong, wrong
    assert len(list(PKG.rglob("*.py"))) > 30  # the walk saw the package
