"""A run's recorded config (``config.yaml``, a checkpoint's, a study arm's) read by today's schema.

A setting added to dogo since a run was trained must mean, for that run, what the run actually did,
not today's default. Every recorded config is a full dump of its schema, so a key it lacks is one
its dogo did not have:

- ``dataset.normalization``: runs before it normalised with the reference's statistics keyed on
  the image size, so they keep ``reference`` (new runs record the statistics they used);
- ``dataset.options.image_size`` of folder and file-list datasets: those runs decoded the images
  at 64 px whatever ``dataset.image_size`` said (new runs decode at ``dataset.image_size``).

:func:`recorded_config` is how every reader of a run's own config builds it; a user's config file
goes through :func:`dogo.config.load_config` and gets today's defaults.
"""

from __future__ import annotations

import copy
from typing import Any

from dogo.config.loading import build_config
from dogo.config.run import RunConfig

#: The decode size of folder and file-list readers before ``dataset.image_size`` set it.
OLD_DECODE_SIZE = 64


def as_recorded(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a recorded config dict) with the settings its dogo did not have set to what it did."""
    dataset = data.get("dataset")
    if not isinstance(dataset, dict) or "normalization" in dataset:
        return data
    data = copy.deepcopy(data)
    dataset = data["dataset"]
    dataset["normalization"] = "reference"
    options = dataset.get("options")
    if isinstance(options, dict) and options.get("image_size") is None and _decodes_files(dataset.get("name")):
        dataset["options"] = {**options, "image_size": OLD_DECODE_SIZE}
    return data


def recorded_config(data: dict[str, Any], source: str = "config") -> RunConfig:
    """:func:`~dogo.config.build_config` of a recorded config, read as :func:`as_recorded` says."""
    return build_config(as_recorded(data), source)


def _decodes_files(name: Any) -> bool:
    from dogo.core.errors import ConfigError
    from dogo.data import get_spec

    try:
        return "image_size" in get_spec(str(name)).options.model_fields
    except ConfigError:
        return False
