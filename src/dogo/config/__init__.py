"""The run configuration: one typed, validated schema, loaded from YAML with dotted overrides.

A config file looks like (every key optional except ``train.models``)::

    name: fmnist-dogo
    seed: 0
    dataset: {name: fashion-mnist, image_size: 32}
    train:
      epochs: 20
      batch_size: 256
      models:                       # the cohort; one entry = the single-model SSL baseline
        - {objective: simclr, backbone: resnet18, width: 0.25, distill_weight: 1.0}
        - {objective: simsiam, backbone: resnet18, objective_options: {projector_layers: 2}}
    distill: {temperature: 0.1, reduction: official, views: independent}
    logging: {log_every: 50, save_every: 10}

Unknown keys are errors that name the key and the nearest valid one; values are checked for
type and range before any work starts. ``load_config`` also reads the reference's own YAML
files (see :mod:`dogo.config.reference`).

The package: :mod:`~dogo.config.base` (what every section shares), :mod:`~dogo.config.training` (the
``train`` and ``distill`` sections), :mod:`~dogo.config.run` (:class:`RunConfig`, the ``dataset``,
``logging`` and ``eval`` sections) and :mod:`~dogo.config.loading` (YAML, overrides, errors).
"""

from __future__ import annotations

from dogo.config.base import MAX_COUNT, Schema
from dogo.config.loading import (
    apply_override,
    build_config,
    load_config,
    parse_override,
    parse_yaml,
    read_yaml,
    valid_keys,
)
from dogo.config.records import recorded_config
from dogo.config.run import RUNTIME_KEYS, DatasetConfig, EvalConfig, LoggingConfig, RunConfig, flatten, under
from dogo.config.training import (
    DistillConfig,
    OptimizerConfig,
    PeerConfig,
    ScheduleConfig,
    TrainConfig,
    peer_labels,
)

__all__ = [
    "MAX_COUNT",
    "RUNTIME_KEYS",
    "DatasetConfig",
    "DistillConfig",
    "EvalConfig",
    "LoggingConfig",
    "OptimizerConfig",
    "PeerConfig",
    "RunConfig",
    "ScheduleConfig",
    "Schema",
    "TrainConfig",
    "apply_override",
    "build_config",
    "flatten",
    "load_config",
    "parse_override",
    "parse_yaml",
    "peer_labels",
    "read_yaml",
    "recorded_config",
    "under",
    "valid_keys",
]
