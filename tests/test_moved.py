"""The packages by stage: old module names still import (one release, with a DeprecationWarning), the
public API and the new names import without one, and the package imports as one piece."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def run(code: str) -> str:
    """``code`` in a fresh interpreter (old names would otherwise stay bound in this one)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_every_old_module_name_is_the_moved_module_and_warns_once_naming_its_new_place():
    out = json.loads(
        run("""
import importlib, json, sys, warnings
from dogo._moved import MOVED
rows = {}
for old, new in MOVED.items():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        alias = importlib.import_module("dogo." + old)
        again = importlib.import_module("dogo." + old)
    module = importlib.import_module("dogo." + new)
    rows[old] = [alias is module is again, module.__spec__.name, module.__name__,
                 [(w.category.__name__, str(w.message), w.filename) for w in caught]]
print(json.dumps(rows))
""")
    )
    from dogo._moved import MOVED

    assert set(out) == set(MOVED)
    for old, (same, spec_name, name, caught) in out.items():
        new = "dogo." + MOVED[old]
        assert same and spec_name == name == new, old
        assert [(c, m) for c, m, _ in caught] == [
            ("DeprecationWarning", f"dogo.{old} has moved to {new}; the old name works until the next release")
        ]
        assert caught[0][2] == "<string>"  # attributed to the importing line, not to importlib


def test_old_names_in_from_imports_and_patching_through_them():
    out = run("""
import warnings
warnings.simplefilter("error", DeprecationWarning)
try:
    from dogo import dist
except DeprecationWarning as w:
    print(w)
warnings.simplefilter("ignore", DeprecationWarning)
from dogo import dist, train
from dogo.checkpoint import load_checkpoint
import dogo.core.dist, dogo.runs.checkpoint, dogo.train, dogo.training.trainer
assert dist is dogo.core.dist and load_checkpoint is dogo.runs.checkpoint.load_checkpoint
dogo.train.marker = 1  # one module, two names
assert train is dogo.training.trainer and dogo.training.trainer.marker == 1
print("ok")
""")
    assert out.splitlines() == [
        "dogo.dist has moved to dogo.core.dist; the old name works until the next release",
        "ok",
    ]


def test_the_public_api_and_every_module_import_without_old_names():
    """Nothing in dogo imports an old name, and every public name resolves (``import dogo`` stays light)."""
    out = run("""
import importlib, pkgutil, sys, warnings
warnings.simplefilter("error", DeprecationWarning)
import dogo
assert "torch" not in sys.modules
names = [name for name in dogo.__all__ if name != "__version__"]
for name in names:
    assert getattr(dogo, name) is not None, name
for info in pkgutil.walk_packages(dogo.__path__, "dogo."):
    if info.name != "dogo.__main__":
        importlib.import_module(info.name)
assert callable(dogo.evaluate) and callable(dogo.embed) and dogo.evaluate.knn.run
print(len(names))
""")
    assert int(out) >= 16
