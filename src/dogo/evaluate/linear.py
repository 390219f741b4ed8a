"""The ``linear`` protocol: the linear probe (:mod:`dogo.evaluate.probe`) fit on the train split's
features, its epoch picked on a held-out part of them, scored on all of the test split.

The probe's machinery (:func:`fit_probe`, :class:`LinearProbe`, :func:`holdout_split`, ...) is
importable from here too, where it lived before it moved below the protocols.
"""

from __future__ import annotations

from dogo.evaluate.inputs import ProtocolInput, protocol
from dogo.evaluate.probe import (
    LinearProbe,
    ProbeFit,
    ProbeSettings,
    accuracy,
    fit_probe,
    fit_with_holdout,
    holdout_split,
    probe_numbers,
)

__all__ = [
    "LinearProbe",
    "LinearSettings",
    "ProbeFit",
    "ProbeSettings",
    "accuracy",
    "fit_probe",
    "fit_with_holdout",
    "holdout_split",
    "probe_numbers",
    "run",
]


class LinearSettings(ProbeSettings):
    """Settings of the ``linear`` protocol (all of :class:`ProbeSettings`)."""


@protocol("linear", LinearSettings)
def run(data: ProtocolInput, settings: LinearSettings) -> dict:
    """Linear probe: train on ``train`` (minus the validation part), score on all of ``test``."""
    train_x, train_y, test_x, test_y = data.features(settings)
    classes = data.classes
    fit = fit_with_holdout(train_x, train_y, classes, settings, device=data.device)
    numbers = probe_numbers(fit, test_x, test_y)
    return data.result(
        "linear",
        settings,
        summary={"linear": numbers["test_top1"]},
        num_classes=classes,
        feature_dim=int(train_x.shape[1]),
        num_test=len(test_y),
        **numbers,
    )
