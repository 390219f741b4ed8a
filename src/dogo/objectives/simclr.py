"""SimCLR: a projection head trained with the NT-Xent contrastive loss.

Chen, Kornblith, Norouzi, Hinton. "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from dogo.core import dist
from dogo.core.errors import ConfigError
from dogo.models.heads import SimCLRHead
from dogo.objectives import (
    OBJECTIVES,
    Objective,
    ObjectiveOptions,
    ObjectiveOutput,
    at_least_float32,
    embedding_std,
)


class SimCLROptions(ObjectiveOptions):
    """SimCLR's settings (``n_proj`` and ``temperature`` are the peer's keys, the rest ``objective_options``)."""

    n_proj: int = Field(128, ge=1, description="projection size")
    temperature: float = Field(0.5, gt=0, description="NT-Xent temperature (the reference's hard-coded 0.5)")
    hidden: int = Field(512, ge=1, description="hidden width of the projection head")
    gather: bool = Field(True, description="distributed runs: negatives over the global batch")


class NTXentLoss(nn.Module):
    """Normalised temperature-scaled cross-entropy (NT-Xent) over the 2N views of N images.

    With u = z / ||z|| and s(i, j) = u_i . u_j / tau over the 2N views, for anchor i with
    positive p(i) (the other view of the same image)::

        l_i  = -log( exp(s(i, p(i))) / sum_{k != i} exp(s(i, k)) )
        loss = (1 / 2N) * sum_i l_i

    i.e. 1 positive and 2N - 2 negatives per anchor, the summed cross-entropy divided by 2N
    (as the reference: temperature 0.5).

    Distributed (``gather=True`` and a process group): the keys (positives and negatives) span
    the global batch, gathered with :func:`dogo.dist.gather_with_grad`; each rank's loss covers its
    own 2n anchors, so the mean of the ranks' losses equals the single-process loss on the
    concatenated batch, and so do the gradients (DDP averaging). In one process ``gather`` changes
    nothing. Computed in at least float32 with autocast disabled.

    Shapes:
        z_a, z_b: ``N x D`` projections of views a and b (row i of both = image i); need not be
        normalised. Returns a scalar.
    """

    def __init__(self, temperature: float = 0.5, gather: bool = True) -> None:
        super().__init__()
        if not temperature > 0:
            raise ConfigError(f"NT-Xent temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.gather = gather

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather={self.gather}"

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        if z_a.shape != z_b.shape or z_a.dim() != 2:
            raise ValueError(f"NT-Xent needs two N x D tensors, got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
        n = z_a.shape[0]
        with torch.autocast(device_type=z_a.device.type, enabled=False):
            a = F.normalize(at_least_float32(z_a), dim=1)
            b = F.normalize(at_least_float32(z_b), dim=1)
            keys_a, keys_b, offset = a, b, 0
            if self.gather:
                keys_a, keys_b = dist.gather_with_grad(a), dist.gather_with_grad(b)
                offset = dist.rank() * n
            n_global = keys_a.shape[0]
            # rows: the 2n local anchors (a then b); columns: the 2N global keys (a then b)
            logits = torch.cat([a, b]) @ torch.cat([keys_a, keys_b]).T / self.temperature
            own = offset + torch.arange(n, device=a.device)
            self_col = torch.cat([own, n_global + own])
            positive_col = torch.cat([n_global + own, own])
            is_self = torch.zeros_like(logits, dtype=torch.bool)
            is_self[torch.arange(2 * n, device=a.device), self_col] = True
            logits = logits.masked_fill(is_self, float("-inf"))
            return F.cross_entropy(logits, positive_col)


@OBJECTIVES.register("simclr")
class SimCLR(Objective):
    """SimCLR objective: ``z = g(h)`` with :class:`~dogo.models.heads.SimCLRHead`
    (Linear(d, 512, no bias) -> BN -> ReLU -> Linear(512, n_proj)), loss :class:`NTXentLoss`.

    The head runs on each view separately (BatchNorm statistics per view, as the reference).
    Output: ``student = teacher["out"] = (z_a, z_b)`` L2-normalised, ``collapse_std`` of z.

    Args:
        feature_dim: encoder feature size d.
        options: :class:`SimCLROptions`: ``n_proj`` (128), ``temperature`` (0.5, the reference's
            hard-coded value), ``hidden`` (512), ``gather`` (negatives over the global batch when
            distributed, see :class:`NTXentLoss`).

    ``n_proj`` and ``temperature`` are the peer's keys; ``gather`` and ``hidden`` are set from a
    config as ``train.models[K].objective_options``.
    """

    name = "simclr"
    view_recipe = "simclr"
    Options = SimCLROptions
    options: SimCLROptions  # the validated settings (set by Objective.__init__)

    def __init__(self, feature_dim: int, **options: Any) -> None:
        super().__init__(options)
        o = self.options
        self.head = SimCLRHead(feature_dim, o.hidden, o.n_proj)
        self.criterion = NTXentLoss(o.temperature, gather=o.gather)

    def forward(self, *feats: Tensor, targets: Sequence[Tensor] | None = None) -> ObjectiveOutput:
        feat_a, feat_b = feats
        z_a = F.normalize(self.head(feat_a), dim=1)
        z_b = F.normalize(self.head(feat_b), dim=1)
        return ObjectiveOutput(
            loss=self.criterion(z_a, z_b),
            student=(z_a, z_b),
            teacher={"out": (z_a, z_b)},
            collapse_std=embedding_std(z_a, z_b),
        )
