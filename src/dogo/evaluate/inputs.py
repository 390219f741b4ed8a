"""What every protocol starts from: the encoder, the labelled splits, their features, one probe.

A protocol's body is ``run(data: ProtocolInput, settings) -> dict``; :func:`protocol` registers it
behind the common signature ``run(encoder, train, test, settings, *, image_size, device,
feature_cache)``. :meth:`ProtocolInput.features` computes (or reads from the cache) the
features of both splits once; :meth:`ProtocolInput.probe` is one draw of the probe protocols
(fit on chosen train images, score on the test features, optionally fine-tune);
:meth:`ProtocolInput.result` wraps the numbers with what every result records.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel
from torch import nn

from dogo.config.probe import ProtocolSettings
from dogo.evaluate.base import PROTOCOL_SETTINGS, PROTOCOLS, make_result, num_classes_of
from dogo.evaluate.features import FeatureCache, train_test_features
from dogo.evaluate.finetune import finetune, finetune_accuracy
from dogo.evaluate.probe import fit_probe, probe_numbers

if TYPE_CHECKING:
    from dogo.data import ImageDataset

__all__ = ["ProtocolInput", "protocol"]


@dataclass
class ProtocolInput:
    encoder: nn.Module
    train: ImageDataset
    test: ImageDataset
    image_size: int
    device: str | torch.device = "cpu"
    feature_cache: FeatureCache | None = None
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # the run's (mean, std); None: by size
    _features: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    def features(self, settings: ProtocolSettings) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(train features, train labels, test features, test labels); both splits must be labelled."""
        if self._features is None:
            self._features = train_test_features(
                self.encoder,
                self.train,
                self.test,
                self.image_size,
                self.feature_cache,
                settings.feature_batch_size,
                self.device,
                self.normalization,
            )
        return self._features

    @property
    def classes(self) -> int:
        return num_classes_of(self.train, self.test)

    def probe(
        self,
        settings: Any,
        seed: int,
        labels: torch.Tensor,
        train_idx: torch.Tensor,
        val_idx: torch.Tensor | None = None,
        val_labels: torch.Tensor | None = None,
        finetune_idx: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """One draw: the probe on ``labels[train_idx]``, its epoch picked on ``val_idx`` (labelled
        ``val_labels``, default ``labels[val_idx]``; none: the last epoch), scored on the test
        set; with ``settings.finetune``, also the whole network fine-tuned on ``finetune_idx``."""
        x, _, test_x, test_y = self.features(settings)
        validation = {}
        if val_idx is not None:
            validation = {"val_x": x[val_idx], "val_y": labels[val_idx] if val_labels is None else val_labels}
        fit = fit_probe(
            x[train_idx], labels[train_idx], self.classes, settings, device=self.device, seed=seed, **validation
        )
        numbers = probe_numbers(fit, test_x, test_y)
        if getattr(settings, "finetune", False):
            model = finetune(
                self.encoder,
                self.train.images[finetune_idx],
                labels[finetune_idx],
                fit.probe,
                settings,
                image_size=self.image_size,
                device=self.device,
                seed=seed,
                normalization=self.normalization,
            )
            numbers["finetune_top1"] = finetune_accuracy(
                model,
                self.test,
                image_size=self.image_size,
                batch_size=settings.feature_batch_size,
                device=self.device,
                normalization=self.normalization,
            )
        return numbers

    def result(self, name: str, settings: BaseModel, summary: dict[str, float], **numbers: Any) -> dict:
        return make_result(
            name, settings, train=self.train, test=self.test, image_size=self.image_size, summary=summary, **numbers
        )


def protocol(name: str, settings: type[ProtocolSettings]) -> Callable[[Callable[..., dict]], Callable[..., dict]]:
    """Register a protocol body ``body(data: ProtocolInput, settings) -> dict`` under ``name``.

    The registered function has the common signature ``run(encoder, train, test, settings, *,
    image_size, device="cpu", feature_cache=None, normalization=None) -> dict`` (see
    :class:`ProtocolInput`; ``normalization``: the run's (mean, std), None: by image size).
    """

    def add(body: Callable[..., dict]) -> Callable[..., dict]:
        def run(
            encoder, train, test, settings, *, image_size: int, device="cpu", feature_cache=None, normalization=None
        ) -> dict:
            return body(ProtocolInput(encoder, train, test, image_size, device, feature_cache, normalization), settings)

        functools.update_wrapper(run, body)
        PROTOCOLS.register(name)(run)
        PROTOCOL_SETTINGS[name] = settings
        run.settings = settings  # type: ignore[attr-defined]  # an attribute set on a function object
        return run

    return add
