"""Class 5, arguments typed at the door (issue 25): every number, device and inline YAML value of every command.

:data:`BAD_ARGUMENTS` holds, per command, values the config schema's own code refuses (ranges,
devices that do not exist here, YAML that does not parse, values argparse cannot read). Each is
one line, ``dogo CMD: error: ...`` naming the argument and the value, exit status 2, before any
work: nothing is created or changed. A new command joins by adding its arguments here.
"""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml

from guarded import digits_config, run_cli
from test_bad_inputs import assert_nothing_lost, assert_one_line_error, snapshot

NO_CUDA = "cuda:7"  # a device this machine does not have (none here, or fewer than eight)

# `dogo evaluate`'s protocol settings (key=value): the protocol's own settings model (dogo.evaluate.parse_settings)
# refuses them at the door, once --protocol is known, whatever RUN_DIR is (also tried on a trained run, below).
PROTOCOL_SETTINGS: list[tuple[list[str], str]] = [
    (["RUN", "--protocol", "knn", "k=0"], "argument key=value: bad knn settings: k: Input should be greater"),
    (["RUN", "k=abc"], "k: Input should be a valid integer, unable to parse string as an integer (got 'abc')"),
    (["RUN", "--protocol", "linear", "epochs=-1"], "epochs: Input should be greater than or equal to 1 (got -1)"),
    (["RUN", "--protocol", "fewshot", "fractions=[0.01,"], "key=value: 'fractions=[0.01,': '[0.01,' is not valid"),
    (["RUN", "--protocol", "fewshot", "fractions=[]"], "give at least one label budget"),
    (["RUN", "--protocol", "knn", "kk=3"], "unknown key 'kk' (did you mean 'k'?); known keys: "),
    (["RUN", "--protocol", "transfer"], "dataset: required, and not given"),
    (["RUN", "k", "--protocol", "knn"], "argument key=value: 'k': expected key=value"),
    (["NO-RUN", "--protocol", "knn", "k=0"], "k: Input should be greater"),  # refused before RUN_DIR is looked at
]

# (argv after the command, what the line must name). RUN is a run directory (a path is enough: the
# value is refused before the run is read), NO-RUN a path where nothing is, CFG a valid config file.
BAD_ARGUMENTS: dict[str, list[tuple[list[str], str]]] = {
    "pretrain": [
        (["CFG", "train.epochs=0", "--out", "OUT"], "train.epochs: "),
        (["CFG", "train.device=mps", "--out", "OUT"], "train.device: unknown device"),
        (["CFG", f"train.device={NO_CUDA}", "--out", "OUT"], NO_CUDA),
        (["CFG", "logging.mlflow={tracking_uri: x", "--out", "OUT"], "is not valid YAML"),
        (["CFG", "train.batch_size=[2, 4", "--out", "OUT"], "is not valid YAML"),
    ],
    "evaluate": [
        (["RUN", "--protocol", "knn", "--at", "-1"], "argument --at: '-1': Input should be greater"),
        (["RUN", "--protocol", "knn", "--at", "ten"], "argument --at: 'ten'"),
        (["RUN", "--protocol", "kn"], "argument --protocol: invalid choice: 'kn'"),
        *PROTOCOL_SETTINGS,
    ],
    "export": [
        (["RUN", "--format", "safetensors", "--out", "OUT", "--at", "-3"], "argument --at: '-3'"),
        (["RUN", "--format", "tflite", "--out", "OUT"], "invalid choice: 'tflite'"),
    ],
    "embed": [
        (["RUN", "--data", "digits", "--out", "OUT.npy", "--batch-size", "0"], "--batch-size: '0'"),
        (["RUN", "--data", "digits", "--out", "OUT.npy", "--batch-size", "1e9"], "--batch-size: '1e9'"),
        (["RUN", "--data", "digits", "--out", "OUT.npy", "--device", "mps"], "--device: 'mps': unknown device"),
        (["RUN", "--data", "digits", "--out", "OUT.npy", "--device", NO_CUDA], f"--device: '{NO_CUDA}'"),
    ],
    "prepare": [
        (["digits", "--image-size", "4"], "--image-size: '4': Input should be greater than or equal to 8"),
        (["digits", "--image-size", "100000"], "--image-size: '100000'"),
        (["digits", "--option", "limit=[1"], "--option: 'limit=[1': '[1' is not valid YAML"),
        (["digits", "--option", "limit"], "--option: 'limit': expected key=value"),
    ],
    "bench": [
        (["CFG", "--steps", "0"], "need steps >= 1"),
        (["CFG", "--steps", "-1"], "--steps: '-1'"),
        (["CFG", "--warmup", "-1"], "--warmup: '-1'"),
        (["CFG", "--ceiling-steps", "x"], "--ceiling-steps: 'x'"),
        (["CFG", "train.epochs=0"], "train.epochs: "),
        (["CFG", "train.batch_size=[2, 4"], "is not valid YAML"),
        # the device as pretrain checks it (dogo.training.step.step_settings), before any data is read: the
        # refusal is the only line, no "loading data" progress line before it
        (["CFG", f"train.device={NO_CUDA}"], NO_CUDA),
        (["CFG", "train.device=mps"], "train.device: unknown device"),
    ],
    "study": [(["STUDY", "--jobs", "0"], "--jobs: '0'"), (["STUDY", "--jobs", "100000"], "--jobs: '100000'")],
    "quickstart": [(["train.epochs=-1", "--out", "OUT"], "train.epochs: ")],
    "report": [([], "the following arguments are required: RUN_DIR")],
    "clean": [(["RUN", "--cache", "--checkpoints", "--everything"], "unrecognized arguments: --everything")],
}
CASES = [(command, i) for command, cases in BAD_ARGUMENTS.items() for i in range(len(cases))]


@pytest.mark.parametrize(("command", "index"), CASES, ids=[f"{c}-{i}" for c, i in CASES])
def test_a_bad_argument_is_one_line_before_any_work(command, index, tmp_path, capsys, monkeypatch):
    if NO_CUDA in str(BAD_ARGUMENTS[command][index]) and torch.cuda.device_count() > 7:
        pytest.skip("this machine has eight CUDA devices")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(digits_config()))
    (tmp_path / "run").mkdir()
    (tmp_path / "s.yaml").write_text("name: s\nbase: c.yaml\narms: [{name: a}]\n")
    names = {"CFG": "c.yaml", "RUN": "run", "NO-RUN": "no-run", "OUT": "out", "OUT.npy": "out.npy", "STUDY": "s.yaml"}
    args, expect = BAD_ARGUMENTS[command][index]
    argv = [command, *(str(tmp_path / names[a]) if a in names else a for a in args)]
    before = snapshot(tmp_path)
    code, out, err = run_cli(argv, capsys)
    line = assert_one_line_error(code, err, expect, command)
    assert out == "" and "usage:" not in err
    assert_nothing_lost(before, snapshot(tmp_path))
    assert f"see `dogo {command} --help`" in line or "error: " in line


@pytest.mark.parametrize("index", range(len(PROTOCOL_SETTINGS)))
def test_a_bad_protocol_setting_of_a_trained_run_is_refused_before_the_run_is_read(index, world, tmp_path, capsys):
    """The same line for a trained run as for an empty folder or none: its config and checkpoint are never read."""
    import dogo.evaluate.runner

    run = tmp_path / "run"
    shutil.copytree(world.run, run)
    args, expect = PROTOCOL_SETTINGS[index]
    before = snapshot(tmp_path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dogo.evaluate.runner, "load_trained_peers", lambda *a, **k: pytest.fail("the run was read"))
        code, out, err = run_cli(["evaluate", *(str(run) if a in ("RUN", "NO-RUN") else a for a in args)], capsys)
    assert_one_line_error(code, err, expect, "evaluate")
    assert out == ""
    assert_nothing_lost(before, snapshot(tmp_path))


def test_every_command_is_in_the_catalogue():
    from dogo.cli import _parser

    commands = set(_parser()._subparsers._group_actions[0].choices)
    assert commands - set(BAD_ARGUMENTS) <= {"configs", "datasets"}, commands - set(BAD_ARGUMENTS)


def test_the_schema_decides_what_the_command_line_accepts():
    """--image-size is dataset.image_size: whatever the schema accepts, the flag accepts, and nothing else."""
    import argparse

    from dogo.config.run import DatasetConfig
    from dogo.guards.arguments import schema_field

    check = schema_field(DatasetConfig, "image_size")
    field = DatasetConfig.model_fields["image_size"]
    low = next(m.ge for m in field.metadata if hasattr(m, "ge"))
    high = next(m.le for m in field.metadata if hasattr(m, "le"))
    assert check(str(low)) == low and check(str(high)) == high
    for bad in (str(low - 1), str(high + 1), "eight", "8.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            check(bad)
