"""The typed config: YAML loading, dotted overrides, validation errors, the reference's schemas."""

import re
from pathlib import Path

import pytest
import yaml

from dogo.config import build_config, load_config, parse_override
from dogo.core.errors import ConfigError

FIXTURES = Path(__file__).parent / "fixtures" / "reference"
CONFIGS = Path(__file__).parent.parent / "configs"


def write(tmp_path, data, name="c.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_and_name_from_file(tmp_path):
    config = load_config(write(tmp_path, {"train": {"epochs": 2}}, "mine.yaml"))
    assert config.name == "mine"
    assert config.train.epochs == 2
    assert config.train.models[0].optimizer.name == "adam"
    assert config.train.models[0].optimizer.lr == 3e-4
    assert config.distill.temperature == 0.1 and config.distill.reduction == "official"


def test_dotted_overrides_reach_list_items(tmp_path):
    path = write(tmp_path, {"train": {"models": [{"backbone": "resnet18"}, {"backbone": "resnet18"}]}})
    config = load_config(
        path,
        [
            "train.epochs=3",
            "train.models.1.backbone=resnet50",
            "train.models.0.optimizer.lr=1e-3",
            "dataset.options={limit: 100}",
        ],
    )
    assert config.train.epochs == 3
    assert config.train.models[1].backbone == "resnet50"
    assert config.train.models[0].optimizer.lr == pytest.approx(1e-3)
    assert config.dataset.options == {"limit": 100}


@pytest.mark.parametrize(
    "data, overrides, needle",
    [
        ({"trian": {}}, [], "unknown key 'trian' (did you mean 'train'?)"),
        ({"train": {"epoch": 3}}, [], "unknown key 'train.epoch' (did you mean 'train.epochs'?)"),
        ({"train": {"models": [{"lr": 0.1}]}}, [], "unknown key 'train.models.0.lr'"),
        ({}, ["train.epochs=three"], "train.epochs"),
        ({}, ["train.models.0.optimizer.lr=-1"], "greater than 0"),
        ({}, ["train.models.0.backbone=resnet19"], "did you mean 'resnet18'"),
        ({}, ["train.models.0.objective=byoll"], "unknown objective 'byoll' (did you mean 'byol'?)"),
        ({}, ["distill.reduction=sum"], "distill.reduction"),
        ({}, ["train.models.3.width=2"], "not an index"),
        ({}, ["noequals"], "expected key=value"),
    ],
)
def test_bad_values_are_one_line_errors(tmp_path, data, overrides, needle):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data), overrides)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "dataset, needle",
    [
        (
            {"name": "fashion-mnist", "options": {"limt": 10}},
            "dataset.options: fashion-mnist: unknown option 'limt' (did you mean 'limit'?); "
            "fashion-mnist takes: limit,",
        ),
        ({"name": "fashion-mnist", "options": {"image_size": 16}}, "fashion-mnist: unknown option 'image_size'"),
        ({"name": "imagefolder", "options": {"image_sise": 16}}, "(did you mean 'image_size'?)"),
        ({"name": "filelist", "options": {"list_fle": "x"}}, "(did you mean 'list_file'?)"),
        (
            {"name": "digits", "options": {"limit": 0}},
            "digits: option limit: Input should be greater than or equal to 1",
        ),
        ({"name": "digits", "options": {"limit": True}}, "option limit"),
        (
            {"name": "digits", "options": {"long_tail": {"gama": 1}}},
            "unknown long_tail key 'gama' (did you mean 'gamma'?)",
        ),
        (
            {"name": "digits", "options": {"bad_files": "ignore"}},
            "option bad_files: Input should be 'refuse' or 'skip'",
        ),
    ],
)
def test_dataset_options_are_typed_per_reader_when_the_config_is_read(tmp_path, dataset, needle):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, {"dataset": dataset}))
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_valid_dataset_options_load_unchanged(tmp_path):
    options = {"limit": 64, "image_size": 16, "bad_files": "skip", "long_tail": {"n_max": 10}}
    config = load_config(write(tmp_path, {"dataset": {"name": "imagefolder", "root": "x", "options": options}}))
    assert config.dataset.options == options
    with pytest.raises(ConfigError, match=re.escape("dataset.options: digits: unknown option 'limt'")):
        load_config(write(tmp_path, {}), ["dataset.options={limt: 3}"])


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match=re.escape("bad.yaml")):
        load_config(bad)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")


def test_override_parsing():
    assert parse_override("a.b=1e-3") == (["a", "b"], 1e-3)
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    assert parse_override("a=hello") == (["a"], "hello")


def test_reference_dogo_template_maps_to_effective_semantics():
    notes = []
    config = load_config(FIXTURES / "template.yaml", warn=notes.append)
    assert [p.backbone for p in config.train.models] == ["resnet18", "resnet50"]
    assert [p.objective for p in config.train.models] == ["simclr", "simclr"]
    assert [p.distill_weight for p in config.train.models] == [100, 1]
    assert [p.ssl_weight for p in config.train.models] == [1, 1]
    assert config.distill.reduction == "official" and config.distill.temperature == 0.1
    assert config.train.batch_size == 256 and config.train.epochs == 3
    assert config.dataset.name == "CIFAR10" and config.dataset.root == "./data"
    # scheduler: true is the reference's per-batch cosine annealing to eta_min 3e-4: flat at lr 3e-4
    assert config.train.models[0].schedule.name == "reference-cosine"
    assert config.train.models[0].schedule.min_lr == pytest.approx(3e-4)
    assert config.eval.linear == {
        "epochs": 100,
        "batch_size": 64,
        "lr": 3e-4,
        "weight_decay": 1e-6,
        "momentum": 0.9,
        "solver": "adam",
    }
    assert len(notes) == 1 and "criterion_weight[0:2] ignored" in notes[0] and "num_workers" in notes[0]


def test_reference_main_schema_single_model():
    notes = []
    config = load_config(FIXTURES / "simclr.yaml", warn=notes.append)
    assert len(config.train.models) == 1
    peer = config.train.models[0]
    assert (peer.objective, peer.backbone, peer.n_proj, peer.ssl_weight) == ("simclr", "resnet18", 128, 1)
    assert "momentum" in notes[0]
    siam = load_config(FIXTURES / "simsiam.yaml", warn=notes.append).train.models[0]
    assert siam.objective == "simsiam" and siam.n_proj == 2048
    assert "real SimSiam loss" in notes[-1]


def test_reference_temperature_other_than_half_is_ignored_with_a_warning(tmp_path):
    data = yaml.safe_load((FIXTURES / "template.yaml").read_text())
    data["train"]["models"][0]["temperature"] = 0.2
    notes = []
    config = load_config(write(tmp_path, data), warn=notes.append)
    assert config.train.models[0].temperature == 0.5
    assert "temperature=0.2 ignored" in notes[0]


def test_reference_unknown_key_names_nearest(tmp_path):
    data = yaml.safe_load((FIXTURES / "template.yaml").read_text())
    data["train"]["batch_size"] = 128
    with pytest.raises(ConfigError, match=r"train.batch_size.*batchsize"):
        load_config(write(tmp_path, data))


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    config = load_config(path)
    assert config.name == path.stem
    assert build_config(config.dump()) == config
