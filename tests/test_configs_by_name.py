"""Packaged configs by name from any folder (`dogo pretrain quickstart`), and `dogo configs`."""

from __future__ import annotations

from dogo.cli import main


def test_packaged_config_by_name_from_anywhere(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    assert main(["configs"]) == 0
    listed = capsys.readouterr().out
    assert "quickstart" in listed and "fmnist-dogo" in listed
    args = [
        "pretrain",
        "quickstart",
        "train.max_steps=1",
        "train.batch_size=16",
        "logging.knn_every=0",
        "logging.tensorboard=false",
        "--out",
        "run",
        "--quiet",
    ]
    assert main(args) == 0
    assert (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    assert main(["pretrain", "no-such-config", "--out", "other"]) == 2
