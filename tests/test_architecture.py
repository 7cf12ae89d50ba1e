"""docs/architecture.md kept true: every import goes down the layers, never up, and no backend
imports another. Imports inside functions count too (they are read from the source)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module name prefix -> layer; the longest matching prefix wins; higher imports lower
LAYERS = {
    "studio.ui": 4, "studio.cli": 4, "studio.api": 4, "studio.__main__": 4, "launch": 4,
    "studio.serve": 4,
    "studio.service": 3,
    "studio.runs": 2, "studio.data": 2, "studio.inference": 2, "studio.evaluate": 2,
    "studio.export": 2, "studio.plan.plan": 2, "studio.plan.batches": 2,
    "studio.plan.compiling": 2,
    "backends": 1,
    "studio.config": 0, "studio.plan": 0, "studio.models": 0, "studio.errors": 0,
    "studio.markdown": 0, "studio.texts": 0, "studio.service.access": 0,
}
NAMES = {4: "surfaces", 3: "service", 2: "engine", 1: "backends", 0: "foundation"}


def layer(module: str) -> int:
    prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len,
                 default=None)
    assert prefix is not None, f"{module} is in no layer: add it to LAYERS and the doc"
    return LAYERS[prefix]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path) -> set[str]:
    """The project modules a file imports (`from studio import x` counts as studio.x)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = ROOT / Path(*node.module.split("."), alias.name)
                is_module = sub.with_suffix(".py").is_file() or sub.is_dir()
                out.add(f"{node.module}.{alias.name}" if is_module else node.module)
    return {m for m in out if m.split(".")[0] in ("studio", "backends")}


def sources() -> list[Path]:
    files = [p for d in ("studio", "backends") for p in (ROOT / d).rglob("*.py")]
    return files + [ROOT / "launch.py"]


def test_every_import_goes_down_the_layers():
    """surfaces -> service -> engine -> backends -> foundation; never the reverse."""
    wrong = []
    for path in sources():
        here = module_name(path)
        if here == "studio":      # the package's lazy facade re-exports the public API by name
            continue
        for target in project_imports(path):
            if target != "studio" and layer(target) > layer(here):
                wrong.append(f"{here} ({NAMES[layer(here)]}) imports {target} "
                             f"({NAMES[layer(target)]})")
    assert not wrong, "\n".join(wrong)


def test_no_backend_imports_another():
    """What two backends share lives in backends/torch/ (the TRL recipe, compiled layers...),
    not in a backend, and that machinery imports no backend either."""
    for path in (ROOT / "backends").rglob("*.py"):
        here = module_name(path)
        others = {t for t in project_imports(path) if t.startswith("backends.") and t != here
                  and not t.startswith("backends.torch")}
        assert not others, f"{here} imports {others}"


def test_only_the_ui_imports_gradio():
    """The engine, backends, CLI and API run without gradio (on the GPU machine, in scripts)."""
    for path in sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                    for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                     if isinstance(n, ast.ImportFrom) and n.module}
        if "gradio" in imported:
            assert module_name(path).startswith("studio.ui."), module_name(path)


def test_only_the_run_store_spells_a_run_files_name():
    """studio/runs/store.py is the one module that knows a run folder's layout (RunFiles):
    elsewhere in the studio a run file's name is never written out, and a status is read by
    attribute (store.Status), not by key. Backends write checkpoints/ and adapter/ under the
    run_dir they are given, as their protocol says, so they are not read here."""
    names = {"status.json", "metrics.jsonl", "plan.yaml", "log.txt", "samples.jsonl", ".job",
             "STOP"}
    joined = names | {"config.yaml", "adapter", "checkpoints", "eval", "exports"}
    wrong = []
    for path in (ROOT / "studio").rglob("*.py"):
        if path == ROOT / "studio" / "runs" / "store.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            spelled = isinstance(node, ast.Constant) and node.value in names
            spelled |= isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and \
                isinstance(node.right, ast.Constant) and node.right.value in joined
            keyed = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr == "get" and isinstance(node.func.value, ast.Name) and \
                node.func.value.id == "status"
            if spelled or keyed:
                wrong.append(f"{module_name(path)}:{node.lineno}: {ast.unparse(node)}")
    assert not wrong, "\n".join(wrong)
