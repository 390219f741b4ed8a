"""Weighted k-nearest-neighbour classification of frozen features.

The InstDisc monitor (Wu et al., "Unsupervised feature learning via non-parametric instance
discrimination", CVPR 2018), as DINO's ``eval_knn.py`` and solo-learn's ``WeightedKNNClassifier``
compute it: L2-normalise train and test features; for each test feature take the ``k`` train
features of highest cosine similarity s_i; each votes for its label with weight exp(s_i / T);
the class with the largest summed vote is the prediction (top-5: the five largest).
Test rows are processed in chunks so that the similarity block stays under ~64 M numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from pydantic import Field

from dogo.evaluate.base import ProtocolSettings, protocol

if TYPE_CHECKING:
    from dogo.evaluate.inputs import ProtocolInput

__all__ = ["KnnSettings", "knn_accuracy", "knn_predict", "run"]


class KnnSettings(ProtocolSettings):
    """Settings of the ``knn`` protocol."""

    k: int = Field(200, ge=1, le=100_000, description="neighbours that vote")
    temperature: float = Field(0.1, gt=0, le=100, description="vote weight exp(cosine / T)")


def knn_predict(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    k: int,
    temperature: float,
    num_classes: int,
    chunk_elements: int = 1 << 26,
) -> torch.Tensor:
    """Summed class votes ``M x num_classes`` (float32) for every test row.

    ``train_feats`` N x d, ``train_labels`` N (int), ``test_feats`` M x d; they are L2-normalised
    here. ``k`` is capped at N.
    """
    train = F.normalize(train_feats.float(), dim=1)
    test = F.normalize(test_feats.float().to(train.device), dim=1)
    train_labels = train_labels.long().to(train.device)
    k = min(k, len(train))
    rows = max(1, chunk_elements // max(1, len(train)))
    votes = []
    for start in range(0, len(test), rows):
        sim = test[start : start + rows] @ train.t()
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        chunk = torch.zeros(len(top_sim), num_classes, device=train.device)
        votes.append(chunk.scatter_add_(1, train_labels[top_idx], weights))
    if not votes:
        return torch.zeros(0, num_classes)
    return torch.cat(votes)


def knn_accuracy(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
) -> tuple[float, float]:
    """(top-1, top-5) accuracy in percent of weighted kNN (see the module docstring).

    ``num_classes`` defaults to 1 + the largest label seen. With fewer than five classes top-5
    counts the top ``num_classes`` (so it is 100).
    """
    if num_classes is None:
        num_classes = 1 + int(max(train_labels.max(), test_labels.max()))
    votes = knn_predict(train_feats, train_labels, test_feats, k, temperature, num_classes)
    ranked = votes.topk(min(5, num_classes), dim=1).indices.cpu()
    hits = ranked == test_labels.long().cpu()[:, None]
    n = max(1, len(test_labels))
    return 100.0 * float(hits[:, 0].sum()) / n, 100.0 * float(hits.any(1).sum()) / n


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
