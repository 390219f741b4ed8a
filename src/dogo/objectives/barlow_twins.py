"""Barlow Twins: the cross-correlation of two views' projections driven to the identity.

Zbontar, Jing, Misra, LeCun, Deny. "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction", ICML 2021.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from dogo.core import dist
from dogo.objectives import (
    OBJECTIVES,
    Objective,
    ObjectiveOptions,
    ObjectiveOutput,
    at_least_float32,
    embedding_std,
)


class BarlowTwinsOptions(ObjectiveOptions):
    """Barlow Twins' settings (``n_proj`` is the peer's key, the rest ``objective_options``; no temperature)."""

    n_proj: int = Field(8192, ge=1, description="projection size (paper: 8192)")
    hidden: int = Field(8192, ge=1, description="hidden width of the projector (paper: 8192)")
    lambda_offdiag: float = Field(0.0051, ge=0.0, description="weight of the off-diagonal (redundancy) term")
    gather: bool = Field(True, description="distributed runs: the correlation over the global batch")


def standardise(z: Tensor, eps: float = 1e-5) -> Tensor:
    """Per-dimension ``(z - mean) / sqrt(var + eps)`` over the batch (biased var): BatchNorm1d
    without affine parameters in training mode, the paper's ``bn``."""
    mean = z.mean(dim=0, keepdim=True)
    var = z.var(dim=0, correction=0, keepdim=True)
    return (z - mean) / torch.sqrt(var + eps)


class BarlowTwinsLoss(nn.Module):
    """Barlow Twins' loss (paper eq. 1 and Algorithm 1)::

        c[i, j] = sum_b za[b, i] zb[b, j] / N      za, zb standardised over the batch
        loss    = sum_i (1 - c[i, i])^2 + lambda_offdiag * sum_{i != j} c[i, j]^2

    Distributed (``gather=True``): both projections are gathered from every rank
    (:func:`dogo.dist.gather_with_grad`), so the standardisation and ``c`` are over the global
    batch N and every rank computes the global loss. Computed in at least float32 with autocast
    disabled.

    Shapes:
        z_a, z_b: ``N x D`` projections. Returns a scalar.
    """

    def __init__(self, lambda_offdiag: float = 0.0051, gather: bool = True) -> None:
        super().__init__()
        self.lambda_offdiag, self.gather = float(lambda_offdiag), gather

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        with torch.autocast(device_type=z_a.device.type, enabled=False):
            z_a, z_b = at_least_float32(z_a), at_least_float32(z_b)
            if self.gather:
                z_a, z_b = dist.gather_with_grad(z_a), dist.gather_with_grad(z_b)
            c = standardise(z_a).T @ standardise(z_b) / z_a.shape[0]
            diagonal = torch.diagonal(c)
            on = (1.0 - diagonal).pow(2).sum()
            off = c.pow(2).sum() - diagonal.pow(2).sum()
            return on + self.lambda_offdiag * off


@OBJECTIVES.register("barlow_twins")
class BarlowTwins(Objective):
    """Barlow Twins: ``z = proj(h)``, loss :class:`BarlowTwinsLoss`.

    Projector: Linear(d, hidden, no bias) - BN - ReLU - Linear(hidden, hidden, no bias) - BN - ReLU
    - Linear(hidden, n_proj, no bias) (the paper's: 8192 everywhere). Views: SimCLR's recipe (the
    paper uses BYOL's).

    Output: ``student = teacher["out"] = (z_a, z_b)`` L2-normalised; ``collapse_std`` of z.
    """

    name = "barlow_twins"
    view_recipe = "simclr"
    Options = BarlowTwinsOptions
    options: BarlowTwinsOptions  # the validated settings (set by Objective.__init__)

    def __init__(self, feature_dim: int, **options: Any) -> None:
        super().__init__(options)
        o = self.options
        self.projector = nn.Sequential(
            nn.Linear(feature_dim, o.hidden, bias=False),
            nn.BatchNorm1d(o.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(o.hidden, o.hidden, bias=False),
            nn.BatchNorm1d(o.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(o.hidden, o.n_proj, bias=False),
        )
        self.criterion = BarlowTwinsLoss(o.lambda_offdiag, o.gather)

    def forward(self, *feats: Tensor, targets: Sequence[Tensor] | None = None) -> ObjectiveOutput:
        feat_a, feat_b = feats
        z_a, z_b = self.projector(feat_a), self.projector(feat_b)
        loss = self.criterion(z_a, z_b)
        z_a, z_b = F.normalize(z_a, dim=1), F.normalize(z_b, dim=1)
        return ObjectiveOutput(
            loss=loss, student=(z_a, z_b), teacher={"out": (z_a, z_b)}, collapse_std=embedding_std(z_a, z_b)
        )
