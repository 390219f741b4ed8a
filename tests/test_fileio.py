"""Files dogo writes follow the umask, as ``open()`` would make them (not mkstemp's 0600); every output's
umask is tested by the outputs family (tests/test_guards_outputs.py), a run's ``config.yaml`` here."""

from __future__ import annotations

import os
import stat
import sys

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")


@pytest.fixture
def umask():
    """Set the process umask for one test, then put the old one back."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_runs_config_yaml_follows_the_umask(tmp_path, umask):
    from dogo.config import build_config
    from dogo.runs.layout import RunDir
    from dogo.runs.rundir import prepare_run_dir
    from dogo.runs.runlock import release

    umask(0o027)
    config = build_config(
        {
            "dataset": {"name": "digits", "image_size": 8},
            "train": {
                "epochs": 1,
                "batch_size": 16,
                "models": [{"name": "s", "backbone": "resnet18", "width": 0.0625}],
            },
        }
    )
    run = prepare_run_dir(config, tmp_path / "run")
    try:
        assert mode(RunDir(run).config) == 0o640
    finally:
        release(run)
