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
    """Modules a file imports from the package, as dotted names relative to jointtask, in every
    form: `from .x import y`, `from .. import x`, `from jointtask.x import y`, `from jointtask
    import x`, `import jointtask.x`."""
    rel = path.relative_to(PKG).with_suffix("").parts
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(rel[: len(rel) - node.level])
            if node.module:
                out.append(".".join(base + [node.module]))
            else:  # from .. import x: x is a module or a name of the package above
                out += [".".join(base + [a.name]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == "jointtask":
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jointtask."):
            out.append(node.module.removeprefix("jointtask."))
        elif isinstance(node, ast.Import):
            out += [a.name.removeprefix("jointtask.") for a in node.names if a.name.startswith("jointtask.")]
    return [m for m in out if m]


def test_the_import_scanner_sees_every_form(tmp_path):
    f = PKG / "train" / "_probe_imports.py"
    f.write_text("from .. import __version__\nfrom jointtask import cli\nimport jointtask.sweep.runner\n")
    try:
        assert _imports(f) == ["__version__", "cli", "sweep.runner"]
    finally:
        f.unlink()


def test_each_layer_imports_only_from_its_left():
    wrong = []
    for path in PKG.rglob("*.py"):
        own = _layer(".".join(path.relative_to(PKG).with_suffix("").parts))
        if own is None:
            continue
        for m in _imports(path):
            other = _layer(m)
            if other is None:
                head = m.split(".")[0]
                assert head in SHARED or head == "__version__", (
                    f"{path.name} imports {m}, a module on top of the layers"
                )
            elif LAYERS.index(other) > LAYERS.index(own):
                wrong.append(f"{path.relative_to(PKG)} imports {m}")
    assert not wrong, wrong
    assert len(list(PKG.rglob("*.py"))) > 30  # the walk saw the package
