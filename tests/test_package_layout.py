"""How the package is laid out, checked on its source: the installed commands resolve, training code
never imports the analysis, log filtering has one home, and the compile state is the SpeedUp
callback's. All from the files (AST), no training run."""
from __future__ import annotations

import ast
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"


def _entry_points() -> dict[str, str]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_entry_points_resolve_to_callables():
    scripts = _entry_points()
    assert {"imgcls-report", "imgcls-per-class", "imgcls-landscape", "imgcls-activations"} <= set(scripts)
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        fn = getattr(importlib.import_module(module), attr)
        assert callable(fn), name


def test_installed_command_exits_with_mains_status(tmp_path):
    """setuptools' console script is ``sys.exit(main())``: a user error ends with main's 2."""
    exe = Path(sys.executable).parent / "imgcls-report"
    if not exe.exists() and not (exe := Path(shutil.which("imgcls-report") or "")).is_file():
        pytest.skip("entry points not installed: pip install -e .")
    env = {**os.environ, "MPLBACKEND": "Agg"}
    p = subprocess.run([str(exe), str(tmp_path / "no_such_sweep")], capture_output=True, text=True, env=env,
                       timeout=300)
    assert p.returncode == 2 and "error:" in p.stderr


# ------------------------------------------------------------------ imports
def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(f): f for f in SRC.rglob("*.py")}


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The src modules a file imports anywhere (also inside functions), with their packages."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from src.x import y`: y may be a module of its own
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            found |= {m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if m in known}
    return found


def test_training_layers_never_import_the_analysis():
    """src/lit, src/models and src/datamodules reach no src.analysis module, directly or through
    any other module of the package (what a run draws lives in src/run_figures.py)."""
    known = _modules()
    graph = {name: _imports(path, known) for name, path in known.items()}

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for n in graph.get(todo.pop(), ()):
                if n not in seen:
                    seen.add(n)
                    todo.append(n)
        return seen

    lower = [m for m in known if m.split(".")[1:2] in (["lit"], ["models"], ["datamodules"])]
    assert len(lower) > 30
    for mod in lower:
        bad = sorted(n for n in reach(mod) if n == "src.analysis" or n.startswith("src.analysis."))
        assert not bad, f"{mod} imports {bad}"
    # and the old alias modules (src.report, src.per_class, ...) are gone for good
    assert not {"src.report", "src.landscape", "src.per_class", "src.plot_activations",
                "src.sweep_callbacks"} & set(known)


# ------------------------------------------------------------------ log filtering
FILTER_CALLS = {"addFilter", "filterwarnings", "setLevel", "set_verbosity"}


def test_log_filtering_lives_in_one_module():
    """Global filters on what runs print are all in src/log_filters.py (scoped silencing inside
    ``warnings.catch_warnings()`` stays with its call and is not counted)."""
    files = [*SRC.rglob("*.py"), ROOT / "train.py", *(ROOT / "hydra_plugins").rglob("*.py")]
    places = {}
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in FILTER_CALLS:
                places.setdefault(str(f.relative_to(ROOT)), []).append(node.func.attr)
            if isinstance(node, ast.ClassDef) and any(ast.unparse(b) == "logging.Filter" for b in node.bases):
                places.setdefault(str(f.relative_to(ROOT)), []).append(node.name)
    assert set(places) == {"src/log_filters.py"}, places


# ------------------------------------------------------------------ compile state
def test_the_compile_state_is_the_callbacks_own():
    """No callback of src/lit sets attributes on the LightningModule, and the module keeps no
    compile state of its own (it asks SpeedUp through the trainer)."""
    for f in (SRC / "lit").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for t in targets:
                assert not ast.unparse(t).startswith("pl_module."), f"{f.name}: {ast.unparse(t)}"
    import torch

    from src.lit.classifier import ClassifierModule

    module = ClassifierModule(torch.nn.Flatten(), optimizer=None, num_classes=2)
    for name in ("compile_info", "warmup_calls", "graphs_at_start", "compiled", "compile_report"):
        assert not hasattr(module, name), name


def test_every_target_in_conf_names_the_module_that_defines_it():
    """One hop from conf/ to the code: a `_target_` of ours never goes through a package's
    re-export (`src.models.ResNet18`), but names the file that defines it."""
    import importlib
    import re
    from pathlib import Path

    conf = Path(__file__).resolve().parent.parent / "conf"
    targets = {m.group(1) for f in conf.rglob("*.yaml")
               for m in re.finditer(r"_target_:\s*(src\.[\w.]+)", f.read_text())}
    assert len(targets) >= 40
    wrong = []
    for target in sorted(targets):
        module, _, name = target.rpartition(".")
        obj = getattr(importlib.import_module(module), name)
        if getattr(obj, "__module__", module) != module:
            wrong.append(f"{target} (defined in {obj.__module__})")
    assert wrong == []
