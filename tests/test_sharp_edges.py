"""A newcomer's sharp edges (issue 26): the schema decision names its key, help lists the objectives,
`evaluate` defaults to kNN, `-v` only where it does something, `dogo configs` keeps sentences whole."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dogo.cli import VERBOSE_COMMANDS, _parser, main
from dogo.config import load_config
from dogo.core.errors import ConfigError
from dogo.objectives import OBJECTIVES

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_typo_in_a_dogo_config_is_named_with_dogos_key_not_read_as_the_reference(tmp_path):
    data = yaml.safe_load(yaml.safe_dump(QUICKSTART))
    data["train"]["batchsize"] = data["train"].pop("batch_size")
    with pytest.raises(ConfigError, match=r"unknown key 'train.batchsize' \(did you mean 'train.batch_size'\?\)"):
        load_config(write(tmp_path, data))


def test_a_reference_file_says_which_key_made_it_one_and_dogos_name_for_it(tmp_path):
    path = write(tmp_path, {"train": {"batchsize": 64, "epochs": 1, "modles": []}})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "unknown key train.modles (did you mean 'models'?)" in message
    assert "read as the reference's schema because of train.batchsize" in message
    assert "dogo's own schema calls it train.batch_size" in message


def test_help_and_readme_list_every_objective_of_the_registry(capsys):
    for argv in (["--help"], ["pretrain", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        text = " ".join(capsys.readouterr().out.split())
        assert ", ".join(OBJECTIVES.names()) in text, argv
    intro = (ROOT / "README.md").read_text().split("## ", 1)[0]
    assert "SimCLR or SimSiam" not in intro
    for name in OBJECTIVES.names():
        assert name in intro, name


def test_verbose_only_on_the_commands_that_train():
    commands = next(a for a in _parser()._actions if a.dest == "command").choices
    for name, command in commands.items():
        options = {o for a in command._actions for o in a.option_strings}
        assert "--quiet" in options, name
        assert ("--verbose" in options) == (name in VERBOSE_COMMANDS), name
    assert set(VERBOSE_COMMANDS) == {"pretrain", "quickstart"}


def test_evaluate_defaults_to_knn():
    args = _parser().parse_args(["evaluate", "runs/x"])
    assert args.protocol == "knn"


def test_configs_lists_whole_sentences(capsys):
    from dogo.cli.quickstart import first_sentence, packaged_configs

    assert (
        first_sentence("# MoCo v2 (Chen et al. 2020) on x: a, b\n# (c). More.\nname: x\n")
        == "MoCo v2 (Chen et al. 2020) on x: a, b (c)."
    )
    assert (
        first_sentence("# Stage 1: a teacher on\n# Fashion-MNIST.\n#   dogo pretrain x\nname: x")
        == "Stage 1: a teacher on Fashion-MNIST."
    )
    for name, summary in packaged_configs().items():
        assert summary.endswith("."), (name, summary)
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    assert "(projector and predictor 4096 -> 256)" in " ".join(out.split())
