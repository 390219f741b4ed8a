"""What a run's views and evaluation normalise with (``dataset.normalization``), resolved once per run.

- ``data`` (the default): the per-channel mean and std of the training split (:mod:`dogo.data.stats`;
  an image store keeps them from when it was prepared). A new run resolves them when it starts and
  records them in its ``config.yaml`` as ``{mean, std}``, so evaluation, export and embed use what the
  run trained with, whatever happens to the data later.
- ``reference``: the reference's statistics keyed on the image size (:func:`dogo.views.normalization_for`):
  reference-schema configs, and every run recorded before dogo had this setting
  (:mod:`dogo.config.records`).
- ``{mean, std}``: as given.
"""

from __future__ import annotations

from collections.abc import Callable

from dogo.config import RunConfig
from dogo.config.run import Normalization
from dogo.data import ImageDataset
from dogo.views import normalization_for

Stats = tuple[tuple[float, float, float], tuple[float, float, float]]


def view_normalization(config: RunConfig) -> Stats | None:
    """``(mean, std)`` of a run's config; None while ``data`` is not resolved (a config never trained)."""
    setting = config.dataset.normalization
    if isinstance(setting, Normalization):
        # three values each (the validator repeats a single one), which list[float] does not carry
        return tuple(setting.mean), tuple(setting.std)  # type: ignore[return-value]  # see the line above
    if setting == "reference":
        return normalization_for(config.dataset.image_size)
    return None


def resolve_normalization(config: RunConfig, data: ImageDataset, log: Callable[[str], None] = lambda m: None) -> Stats:
    """The run's ``(mean, std)``; ``data`` is replaced in ``config`` by the statistics of the training split."""
    stats = view_normalization(config)
    if stats is not None:
        return stats
    from dogo.data.stats import dataset_stats

    mean, std = dataset_stats(data)
    config.dataset.normalization = Normalization(mean=list(mean), std=list(std))
    log(
        f"normalisation from the data ({len(data)} images of {config.dataset.name}/{config.dataset.split}): "
        f"mean {_short(mean)}, std {_short(std)} (dataset.normalization)"
    )
    return mean, std


def _short(values: tuple[float, ...]) -> str:
    return f"{values[0]:.3f}" if len(set(values)) == 1 else "(" + ", ".join(f"{v:.3f}" for v in values) + ")"
