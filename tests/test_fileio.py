"""Files dogo writes follow the umask, as ``open()`` would make them (not mkstemp's 0600)."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from dogo.core.fileio import atomic_path

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


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_path_follows_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    target = tmp_path / "out" / "result.json"
    with atomic_path(target) as tmp:
        assert mode(tmp) == expected
        tmp.write_text("{}")
    assert target.read_text() == "{}" and mode(target) == expected
    assert [p.name for p in target.parent.iterdir()] == ["result.json"]


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "config.yaml"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("stopped")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


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
