"""Evaluation of frozen (or fine-tuned) encoders: features, protocols, result files.

Every protocol is ``PROTOCOLS.get(name)(encoder, train, test, settings, *, image_size, device,
feature_cache) -> dict`` with ``settings = parse_settings(name, ["key=value", ...])`` (an
instance of ``PROTOCOL_SETTINGS[name]``):

=========  ==============================================================================
linear     linear probe on frozen features (Adam / SGD / L-BFGS), best-validation epoch
knn        weighted kNN (k=200, T=0.1), top-1 and top-5
fewshot    the probe (and optionally fine-tuning) on 1 %, 10 % ... or k per class of labels
noisy      the probe on symmetric / asymmetric noisy labels, clean test labels
transfer   the probe on another dataset's splits
shift      the probe on corrupted copies of the test set (CIFAR-10-C style, severities 1..5)
=========  ==============================================================================

Accuracies are percentages. Results go to ``RUN_DIR/eval/`` through :func:`save_result`.
"""

import sys

from dogo.evaluate import fewshot, knn, linear, noisy, shift, transfer
from dogo.evaluate.base import PROTOCOL_SETTINGS, PROTOCOLS, parse_settings
from dogo.evaluate.features import FeatureCache, extract_features
from dogo.evaluate.fewshot import FewshotSettings
from dogo.evaluate.knn import KnnSettings, knn_accuracy
from dogo.evaluate.linear import LinearSettings
from dogo.evaluate.noisy import NoisySettings
from dogo.evaluate.probe import LinearProbe, ProbeSettings, fit_probe
from dogo.evaluate.results import load_results, save_result
from dogo.evaluate.shift import ShiftSettings, corrupt
from dogo.evaluate.transfer import TransferSettings

__all__ = [
    "PROTOCOLS",
    "PROTOCOL_SETTINGS",
    "FeatureCache",
    "FewshotSettings",
    "KnnSettings",
    "LinearProbe",
    "LinearSettings",
    "NoisySettings",
    "ProbeSettings",
    "ShiftSettings",
    "TransferSettings",
    "corrupt",
    "extract_features",
    "fewshot",
    "fit_probe",
    "knn",
    "knn_accuracy",
    "linear",
    "load_results",
    "noisy",
    "parse_settings",
    "save_result",
    "shift",
    "transfer",
]


# the base is this module's own class (ModuleType, or a loader's subclass), known only at run time
class _CallableModule(sys.modules[__name__].__class__):  # type: ignore[misc]  # a dynamic base class
    """``dogo.evaluate(run_dir, protocol, ...)`` runs :func:`dogo.evaluate.runner.evaluate_run`.

    The top-level name ``dogo.evaluate`` is this package (importing any of its modules binds it),
    so the public function of that name is the package made callable.
    """

    def __call__(self, run_dir, protocol, settings=(), *, peer="all", checkpoint="last"):
        from pathlib import Path

        from dogo.evaluate.runner import evaluate_run

        return evaluate_run(Path(run_dir), protocol, settings, peer=peer, checkpoint=checkpoint)


sys.modules[__name__].__class__ = _CallableModule
