"""VICReg: variance-invariance-covariance regularisation of two views' embeddings.

Bardes, Ponce, LeCun. "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", ICLR 2022.
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


class VICRegOptions(ObjectiveOptions):
    """VICReg's settings (``n_proj`` is the peer's key, the rest ``objective_options``; no temperature)."""

    n_proj: int = Field(8192, ge=1, description="output size of the expander (paper: 8192)")
    hidden: int = Field(8192, ge=1, description="hidden width of the expander (paper: 8192)")
    sim_coeff: float = Field(25.0, ge=0.0, description="invariance weight (lambda)")
    std_coeff: float = Field(25.0, ge=0.0, description="variance weight (mu)")
    cov_coeff: float = Field(1.0, ge=0.0, description="covariance weight (nu)")
    gather: bool = Field(True, description="distributed runs: variance and covariance over the global batch")


def _off_diagonal_square_sum(m: Tensor) -> Tensor:
    return m.pow(2).sum() - torch.diagonal(m).pow(2).sum()


class VICRegLoss(nn.Module):
    """VICReg's loss as its official code (facebookresearch/vicreg, ``main_vicreg.py``), with
    which the published weights 25 / 25 / 1 were tuned::

        inv  = mean_{b, j} (x[b, j] - y[b, j])^2                       (F.mse_loss)
        std  = [mean_j relu(1 - sqrt(var_j(x) + 1e-4)) + mean_j relu(1 - sqrt(var_j(y) + 1e-4))] / 2
        cov  = [sum_{i != j} C(x)[i, j]^2 + sum_{i != j} C(y)[i, j]^2] / D,  C = (x - mean)^T (x - mean) / (N - 1)
        loss = sim_coeff * inv + std_coeff * std + cov_coeff * cov

    (var unbiased, N - 1). The paper's eq. 6 divides the invariance by N only and does not halve
    the variance term; the code's version is what the weights belong to. Distributed
    (``gather=True``): x and y are gathered from every rank first, so all three terms are over
    the global batch (every rank computes the global loss). At least float32, autocast disabled.

    Shapes:
        x, y: ``N x D`` embeddings (expander outputs), N >= 2. Returns a scalar.
    """

    def __init__(
        self, sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0, gather: bool = True
    ) -> None:
        super().__init__()
        self.sim_coeff, self.std_coeff, self.cov_coeff, self.gather = sim_coeff, std_coeff, cov_coeff, gather

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            x, y = at_least_float32(x), at_least_float32(y)
            if self.gather:
                x, y = dist.gather_with_grad(x), dist.gather_with_grad(y)
            n, d = x.shape
            inv = F.mse_loss(x, y)
            x, y = x - x.mean(dim=0), y - y.mean(dim=0)
            std_x, std_y = torch.sqrt(x.var(dim=0) + 1e-4), torch.sqrt(y.var(dim=0) + 1e-4)
            std = F.relu(1 - std_x).mean() / 2 + F.relu(1 - std_y).mean() / 2
            cov = (_off_diagonal_square_sum(x.T @ x / (n - 1)) + _off_diagonal_square_sum(y.T @ y / (n - 1))) / d
            return self.sim_coeff * inv + self.std_coeff * std + self.cov_coeff * cov


@OBJECTIVES.register("vicreg")
class VICReg(Objective):
    """VICReg: ``z = expander(h)``, loss :class:`VICRegLoss`.

    Expander: Linear(d, hidden) - BN - ReLU - Linear(hidden, hidden) - BN - ReLU - Linear(hidden,
    n_proj) (the paper's: 8192 everywhere). Views: SimCLR's recipe (the paper's is BYOL's).

    Output: ``student = teacher["out"] = (z_a, z_b)`` L2-normalised; ``collapse_std`` of z.
    """

    name = "vicreg"
    view_recipe = "simclr"
    Options = VICRegOptions
    options: VICRegOptions  # the validated settings (set by Objective.__init__)

    def __init__(self, feature_dim: int, **options: Any) -> None:
        super().__init__(options)
        o = self.options
        self.expander = nn.Sequential(
            nn.Linear(feature_dim, o.hidden),
            nn.BatchNorm1d(o.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(o.hidden, o.hidden),
            nn.BatchNorm1d(o.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(o.hidden, o.n_proj),
        )
        self.criterion = VICRegLoss(o.sim_coeff, o.std_coeff, o.cov_coeff, o.gather)

    def forward(self, *feats: Tensor, targets: Sequence[Tensor] | None = None) -> ObjectiveOutput:
        feat_a, feat_b = feats
        z_a, z_b = self.expander(feat_a), self.expander(feat_b)
        loss = self.criterion(z_a, z_b)
        z_a, z_b = F.normalize(z_a, dim=1), F.normalize(z_b, dim=1)
        return ObjectiveOutput(
            loss=loss, student=(z_a, z_b), teacher={"out": (z_a, z_b)}, collapse_std=embedding_std(z_a, z_b)
        )
