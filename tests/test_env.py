"""The project's own environment variables are named once, in src/env.py, and read through its
get(): a second spelling elsewhere would let a sweep's launcher and its workers disagree."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from src import env
from tests.conftest import ROOT

LITERAL = re.compile(r"""["']IMGCLS_""")


def test_imgcls_names_only_in_src_env():
    files = [*(ROOT / "src").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py"),
             *(ROOT / "hydra_plugins").rglob("*.py"), ROOT / "train.py"]
    found = [f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
             for path in files if path != ROOT / "src" / "env.py"
             for i, line in enumerate(path.read_text().splitlines(), 1) if LITERAL.search(line)]
    assert not found, "name IMGCLS_* variables in src/env.py and import the constant:\n" + "\n".join(found)


def test_every_name_is_readable_and_a_typo_is_refused(monkeypatch):
    names = set(re.findall(r'"(IMGCLS_\w+)"', (ROOT / "src" / "env.py").read_text()))
    assert names == env.NAMES
    monkeypatch.setenv(env.ENV_PER_GPU, "3")
    assert env.get(env.ENV_PER_GPU) == "3"
    monkeypatch.delenv(env.FAKE_GPUS, raising=False)
    assert env.get(env.FAKE_GPUS) is None and env.get(env.FAKE_GPUS, "0") == "0"
    with pytest.raises(KeyError, match="IMGCLS_SWEEP_JOB_PER_GPU"):
        env.get("IMGCLS_SWEEP_JOB_PER_GPU")


def test_env_module_sits_at_the_bottom_of_the_import_graph():
    code = ("import sys, src.env; heavy = [m for m in sys.modules if m.split('.')[0] in "
            "('lightning', 'hydra', 'torch', 'omegaconf') or (m.startswith('src.') and m != 'src.env')]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
