"""BYOL: an online network (projector + predictor) regressing an EMA target network's projections.

Grill, Strub, Altché, Tallec, Richemond, Buchatskaya, Doersch, Pires, Guo, Azar, Piot,
Kavukcuoglu, Munos, Valko. "Bootstrap Your Own Latent: A New Approach to Self-Supervised
Learning", NeurIPS 2020.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from dogo.objectives import (
    OBJECTIVES,
    Objective,
    ObjectiveOptions,
    ObjectiveOutput,
    at_least_float32,
    embedding_std,
)
from dogo.objectives.ema import MomentumTarget, ema_update_, frozen_copy
from dogo.objectives.simsiam import cross_view_cosines
from dogo.views import RECIPES


@RECIPES.register("byol_a")
def byol_view_a(image_size: int) -> dict:
    """BYOL's first view (Grill et al. 2020, Table 6): ColorJitter(0.4, 0.4, 0.2, 0.1) p = 0.8,
    grayscale 0.2, Gaussian blur p = 1.0, no solarize."""
    return {
        "size": image_size,
        "jitter_factors": (0.4, 0.4, 0.2, 0.1),
        "grayscale_p": (0.2,),
        "blur_p": 1.0,
        "solarize_p": 0.0,
    }


@RECIPES.register("byol_b")
def byol_view_b(image_size: int) -> dict:
    """BYOL's second view: as ``byol_a`` with blur p = 0.1 and solarize p = 0.2."""
    return {**byol_view_a(image_size), "blur_p": 0.1, "solarize_p": 0.2}


class BYOLOptions(ObjectiveOptions):
    """BYOL's settings (``n_proj`` is the peer's key, the rest ``objective_options``; no temperature)."""

    n_proj: int = Field(256, ge=1, description="projection and prediction size (paper: 256)")
    hidden: int = Field(4096, ge=1, description="hidden width of the projector and the predictor (paper: 4096)")
    base_momentum: float = Field(0.996, ge=0.0, le=1.0, description="target EMA momentum at the first step (tau_base)")
    momentum_schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="cosine: tau from base_momentum to 1 over the run (the paper); constant: base_momentum"
    )


def byol_mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """BYOL's projector / predictor: Linear(in, hidden) -> BN -> ReLU -> Linear(hidden, out)."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
    )


class BYOLLoss(nn.Module):
    """BYOL's symmetrised regression loss (paper eq. 2, summed over both view orders)::

        l(p, z) = || p / ||p|| - z / ||z|| ||^2 = 2 - 2 cos(p, z)
        loss    = mean_i l(p_a[i], sg(t_b[i])) + mean_i l(p_b[i], sg(t_a[i]))

    in [0, 8]; 0 when each online prediction points along the target projection of the other
    view. No gradient reaches the targets. Computed in at least float32 with autocast disabled.

    Shapes:
        p_a, p_b: ``N x D`` online predictions; t_a, t_b: ``N x D`` target projections (need not
        be normalised). Returns a scalar.
    """

    def forward(self, p_a: Tensor, p_b: Tensor, t_a: Tensor, t_b: Tensor) -> Tensor:
        cos_ab, cos_ba = cross_view_cosines(p_a, p_b, t_a, t_b)
        return (2.0 - 2.0 * cos_ab).mean() + (2.0 - 2.0 * cos_ba).mean()


@OBJECTIVES.register("byol")
class BYOL(MomentumTarget, Objective):
    """BYOL objective: online ``z = proj(h)``, ``p = pred(z)``; target ``t = proj'(f'(x))``, loss :class:`BYOLLoss`.

    The target encoder ``f'`` and projector ``proj'`` are frozen copies (:func:`frozen_copy`) of
    the peer's encoder and of ``proj``, made in :meth:`attach`, and follow them by EMA after every
    optimiser step (:meth:`after_step`) with momentum ``tau_k`` from :func:`momentum_schedule`
    (cosine from ``base_momentum`` = 0.996 to 1, the paper's). Views: BYOL's asymmetric pair,
    recipes ``byol_a`` (blur p = 1, no solarize) and ``byol_b`` (blur p = 0.1, solarize p = 0.2).

    Output: ``student = teacher["out"] = (p_a, p_b)`` (like SimSiam's p), ``teacher["target"]``
    the target projections, all L2-normalised; ``collapse_std`` of the online projections z.

    Args:
        feature_dim: encoder feature size d.
        options: :class:`BYOLOptions`: ``n_proj`` (projection / prediction size, 256, the
            paper's), ``hidden`` (4096), ``base_momentum`` (0.996), ``momentum_schedule``
            (cosine). BYOL has no temperature: a peer's ``temperature`` key is ignored.
    """

    name = "byol"
    view_recipe = ("byol_a", "byol_b")
    Options = BYOLOptions
    options: BYOLOptions  # the validated settings (set by Objective.__init__)

    def __init__(self, feature_dim: int, **options: Any) -> None:
        super().__init__(options)
        o = self.options
        self.projector = byol_mlp(feature_dim, o.hidden, o.n_proj)
        self.predictor = byol_mlp(o.n_proj, o.hidden, o.n_proj)
        self.criterion = BYOLLoss()
        self.base_momentum, self.schedule_kind = float(o.base_momentum), o.momentum_schedule
        self.momenta = [self.base_momentum]  # per step, set by set_total_steps
        self.momentum = self.base_momentum
        self.target_encoder: nn.Module | None = None
        self.target_projector = frozen_copy(self.projector)

    def after_step(self, encoder: nn.Module) -> None:
        if self.target_encoder is None:
            raise RuntimeError(f"{type(self).__name__}.after_step before attach(encoder)")
        ema_update_(self.target_encoder, encoder, self.momentum)
        ema_update_(self.target_projector, self.projector, self.momentum)

    def forward(self, *feats: Tensor, targets: Sequence[Tensor] | None = None) -> ObjectiveOutput:
        feat_a, feat_b = feats
        if targets is None:
            raise ValueError("BYOL needs the target encoder's features (Peer.forward passes them)")
        z_a, z_b = self.projector(feat_a), self.projector(feat_b)
        p_a, p_b = self.predictor(z_a), self.predictor(z_b)
        with torch.no_grad():
            t_a, t_b = (self.target_projector(at_least_float32(t)) for t in targets)
        loss = self.criterion(p_a, p_b, t_a, t_b)
        p_a, p_b = F.normalize(p_a, dim=1), F.normalize(p_b, dim=1)
        t_a, t_b = F.normalize(t_a, dim=1), F.normalize(t_b, dim=1)
        return ObjectiveOutput(
            loss=loss,
            student=(p_a, p_b),
            teacher={"out": (p_a, p_b), "target": (t_a, t_b)},
            collapse_std=embedding_std(z_a, z_b),
        )
