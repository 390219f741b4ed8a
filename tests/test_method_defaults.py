"""Each method's defaults live in its own file, once: a peer whose config sets nothing but
``objective:`` trains with exactly the settings docs/methods.md documents; a peer-level key
(``n_proj``, ``temperature``) overrides them only when the config sets it; every method's
``forward`` has one signature."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch
import yaml

from dogo.config import RunConfig, build_config
from dogo.core.errors import ConfigError
from dogo.objectives import OBJECTIVES, Objective, build_objective
from dogo.training.cohort import Peer

DOCS = Path(__file__).resolve().parents[1] / "docs" / "methods.md"


def documented_defaults() -> dict[str, dict[str, object]]:
    """method -> {key: default} from the table of docs/methods.md (values read as YAML)."""
    table: dict[str, dict[str, object]] = {}
    for line in DOCS.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] in OBJECTIVES:
            table.setdefault(cells[0], {})[cells[1]] = yaml.safe_load(cells[2])
    return table


def peer_from_config(objective: str, **peer_keys) -> Peer:
    """The peer a config builds, on the meta device (no memory: the defaults are paper-sized)."""
    config = RunConfig.model_validate(
        {"train": {"models": [{"objective": objective, "backbone": "resnet18", "width": 0.0625, **peer_keys}]}}
    )
    with torch.device("meta"):
        return Peer.from_config(config.train.models[0], image_size=8, label=objective)


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_a_config_that_sets_nothing_trains_the_documented_defaults(name: str) -> None:
    documented = documented_defaults()
    assert name in documented, f"docs/methods.md has no rows for {name}"
    objective = peer_from_config(name).objective
    assert objective.options.model_dump(mode="json") == documented[name]


def test_the_temperature_a_method_trains_with_is_its_own() -> None:
    assert peer_from_config("simclr").objective.criterion.temperature == 0.5
    moco = peer_from_config("moco").objective
    assert moco.criterion.temperature == 0.2 and moco.symmetric is False  # MoCo v2: one direction
    assert peer_from_config("moco", temperature=0.5).objective.criterion.temperature == 0.5  # set: it wins
    assert peer_from_config("moco", n_proj=64).objective.queue.shape == (65536, 64)
    simsiam = peer_from_config("simsiam", temperature=0.3).objective  # no temperature: the key is ignored
    assert "temperature" not in simsiam.options.model_dump()


def test_a_run_written_before_keeps_the_temperature_it_trained_with() -> None:
    """An old config.yaml holds the resolved 0.5 on every peer: it counts as set, so a resumed
    MoCo run continues at the temperature it started with."""
    config = build_config({"train": {"models": [{"objective": "moco", "temperature": 0.5, "n_proj": None}]}})
    assert config.train.models[0].temperature == 0.5
    assert RunConfig().train.models[0].temperature is None  # a new config: the method decides


def test_peer_keys_are_refused_inside_objective_options(tmp_path) -> None:
    with pytest.raises(
        ConfigError, match=r"train\.models\.0\.objective_options\.temperature: .*set train\.models\.0\.temperature"
    ):
        build_config({"train": {"models": [{"objective": "moco", "objective_options": {"temperature": 0.2}}]}})
    with pytest.raises(ConfigError, match="n_proj"):
        build_objective("simclr", 16, n_proj=0)


def test_every_forward_has_one_signature() -> None:
    base = inspect.signature(Objective.forward)
    for name in OBJECTIVES.names():
        assert inspect.signature(OBJECTIVES.get(name).forward) == base, name
    assert re.search(r"\*feats", str(base)) and "targets" in base.parameters
