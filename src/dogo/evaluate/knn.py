"""Weighted k-nearest-neighbour classification of frozen features.

The InstDisc monitor (Wu et al., "Unsupervised feature learning via non-parametric instance
discrimination", CVPR 2018), as DINO's ``eval_knn.py`` and solo-learn's ``WeightedKNNClassifier``
compute it: L2-normalise train and test features; for each test feature take the ``k`` train
features of highest cosine similarity s_i; each votes for its label with weight exp(s_i / T);
the class with the largest summed vote is the prediction (top-5: the five largest).
Test rows are processed in chunks so that the similarity block stays under ~64 M numbers.
The classifier itself is the trainer's online monitor's (:mod:`dogo.training.monitor`).
"""

from __future__ import annotations

from pydantic import Field

from dogo.evaluate.base import ProtocolSettings
from dogo.evaluate.inputs import ProtocolInput, protocol
from dogo.training.monitor import knn_accuracy, knn_predict

__all__ = ["KnnSettings", "knn_accuracy", "knn_predict", "run"]


class KnnSettings(ProtocolSettings):
    """Settings of the ``knn`` protocol."""

    k: int = Field(default=200, ge=1, le=100_000, description="neighbours that vote")
    temperature: float = Field(default=0.1, gt=0, le=100, description="vote weight exp(cosine / T)")


@protocol("knn", KnnSettings)
def run(data: ProtocolInput, settings: KnnSettings) -> dict:
    """Weighted kNN of ``test`` against all of ``train`` (no training, no validation split)."""
    train_x, train_y, test_x, test_y = data.features(settings)
    classes = data.classes
    top1, top5 = knn_accuracy(
        train_x.to(data.device), train_y, test_x, test_y, settings.k, settings.temperature, classes
    )
    return data.result(
        "knn",
        settings,
        summary={"knn": top1},
        test_top1=top1,
        test_top5=top5,
        num_classes=classes,
        feature_dim=int(train_x.shape[1]),
        num_train=len(train_y),
        num_test=len(test_y),
    )
