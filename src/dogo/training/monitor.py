"""The online kNN monitor's two measures: frozen-encoder features of a split, and weighted-kNN accuracy.

The trainer scores every peer with them each ``logging.knn_every`` epochs; the ``knn`` protocol
and the feature cache of :mod:`dogo.evaluate` use the same two functions, so the monitor and
``dogo evaluate RUN knn`` compute one number the same way.

Features are the flattened encoder output (the pooled representation, un-normalised, as in the
reference's linear evaluation) of ``dogo.views.eval_transform`` inputs: resize to the encoder's
image size, scale to [0, 1], normalise; greyscale is repeated to three channels there.

Weighted kNN is the InstDisc monitor (Wu et al., "Unsupervised feature learning via non-parametric
instance discrimination", CVPR 2018), as DINO's ``eval_knn.py`` and solo-learn's
``WeightedKNNClassifier`` compute it: L2-normalise train and test features; for each test feature
take the ``k`` train features of highest cosine similarity s_i; each votes for its label with
weight exp(s_i / T); the class with the largest summed vote is the prediction (top-5: the five
largest). Test rows are processed in chunks so that the similarity block stays under ~64 M numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from dogo.views import eval_transform

if TYPE_CHECKING:
    from dogo.data import ImageDataset

__all__ = ["extract_features", "knn_accuracy", "knn_predict"]

#: (mean, std) per RGB channel.
Normalization = tuple[tuple[float, ...], tuple[float, ...]]


def extract_features(
    encoder: nn.Module,
    dataset: ImageDataset,
    image_size: int,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    normalization: Normalization | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Features ``float32 N x d`` (on the CPU) of every image of ``dataset``, and its labels.

    ``normalization``: the run's (mean, std) (:mod:`dogo.config.normalization`); None: by image size.
    The encoder runs in eval mode (BatchNorm running statistics, no dropout) under
    ``torch.no_grad``; every module's training flag is restored afterwards. ``no_grad`` rather
    than ``inference_mode``: the probes train on these tensors, and inference tensors cannot
    be saved for backward.
    """
    modes = [(m, m.training) for m in encoder.modules()]
    encoder.eval()
    chunks = []
    try:
        with torch.no_grad():
            for start in range(0, len(dataset.images), batch_size):
                batch = dataset.images[start : start + batch_size].to(device, non_blocking=True)
                out = encoder(eval_transform(batch, image_size, normalization=normalization))
                chunks.append(out.flatten(1).float().cpu())
    finally:
        for module, mode in modes:
            module.training = mode
    features = torch.cat(chunks) if chunks else torch.empty(0, getattr(encoder, "feature_dim", 0))
    return features, dataset.labels


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
