"""SimSiam: projector + predictor trained with a stop-gradient negative cosine loss.

Chen, He. "Exploring Simple Siamese Representation Learning", CVPR 2021.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from dogo.models.heads import SimSiamPredictor, SimSiamProjector
from dogo.objectives import (
    OBJECTIVES,
    Objective,
    ObjectiveOptions,
    ObjectiveOutput,
    at_least_float32,
    embedding_std,
)


class SimSiamOptions(ObjectiveOptions):
    """SimSiam's settings (``n_proj`` is the peer's key, the rest ``objective_options``; no temperature)."""

    n_proj: int = Field(
        2048, ge=1, description="size of the projector and predictor outputs (the reference only works with 2048)"
    )
    projector_layers: int = Field(
        3, ge=1, description="Linear layers of the projector: 3 (the reference's dogo branch) or 2 (its main branch)"
    )
    pred_hidden: int = Field(512, ge=1, description="bottleneck width of the predictor")


class SimSiamLoss(nn.Module):
    """Symmetrised negative cosine similarity with stop-gradient on the projections::

        loss = -1/2 * [ mean_i cos(p_a[i], sg(z_b[i])) + mean_i cos(p_b[i], sg(z_a[i])) ]

    in [-1, 1]; -1 when each prediction points along the other view's projection. No gradient
    reaches ``z_a`` or ``z_b`` through this loss (they still get it through ``p``). Computed in
    at least float32 with autocast disabled.

    Shapes:
        p_a, p_b: ``N x D`` predictor outputs; z_a, z_b: ``N x D`` projector outputs (need not
        be normalised). Returns a scalar.
    """

    def forward(self, p_a: Tensor, p_b: Tensor, z_a: Tensor, z_b: Tensor) -> Tensor:
        cos_ab, cos_ba = cross_view_cosines(p_a, p_b, z_a, z_b)
        return -0.5 * (cos_ab.mean() + cos_ba.mean())


def cross_view_cosines(p_a: Tensor, p_b: Tensor, t_a: Tensor, t_b: Tensor) -> tuple[Tensor, Tensor]:
    """``(cos(p_a[i], sg(t_b[i])), cos(p_b[i], sg(t_a[i])))`` per sample, ``N`` each, in at least float32
    with autocast off: the symmetrised stop-gradient similarity of SimSiam and BYOL."""
    with torch.autocast(device_type=p_a.device.type, enabled=False):
        p_a, p_b = at_least_float32(p_a), at_least_float32(p_b)
        t_a, t_b = at_least_float32(t_a.detach()), at_least_float32(t_b.detach())
        return F.cosine_similarity(p_a, t_b, dim=1), F.cosine_similarity(p_b, t_a, dim=1)


@OBJECTIVES.register("simsiam")
class SimSiam(Objective):
    """SimSiam objective: ``z = proj(h)``, ``p = pred(z)``, loss :class:`SimSiamLoss`.

    Projector :class:`~dogo.models.heads.SimSiamProjector` (``projector_layers`` x (Linear,
    BN, ReLU), the last without ReLU; 3 layers as the reference's ``dogo`` branch), predictor
    :class:`~dogo.models.heads.SimSiamPredictor` (Linear(dim, 512, no bias) -> BN -> ReLU ->
    Linear(512, dim)). The loss compares p with z, so ``n_proj`` (default 2048) is the size of
    both the projector and the predictor output (the reference only works with 2048).
    Each view runs separately through the heads (BatchNorm statistics per view).

    Output: ``student = teacher["out"] = (p_a, p_b)``, ``teacher["z"] = (z_a, z_b)``, all
    L2-normalised; ``collapse_std`` of z (the SimSiam paper's collapse monitor).

    Args:
        feature_dim: encoder feature size d.
        options: :class:`SimSiamOptions`: ``n_proj`` (projector / predictor output size, 2048),
            ``projector_layers`` (3; the reference's ``main`` branch: 2), ``pred_hidden`` (512).
            SimSiam has no temperature: a peer's ``temperature`` key is ignored.

    ``projector_layers`` and ``pred_hidden`` are set from a config as
    ``train.models[K].objective_options``.
    """

    name = "simsiam"
    view_recipe = "simsiam"
    Options = SimSiamOptions
    options: SimSiamOptions  # the validated settings (set by Objective.__init__)

    def __init__(self, feature_dim: int, **options: Any) -> None:
        super().__init__(options)
        o = self.options
        self.projector = SimSiamProjector(feature_dim, o.n_proj, layers=o.projector_layers)
        self.predictor = SimSiamPredictor(o.n_proj, o.pred_hidden)
        self.criterion = SimSiamLoss()

    @classmethod
    def teacher_key(cls, student_name: str) -> str:
        """A SimSiam student is taught with the teacher's z (its own p against the other's z,
        docs/reference.md §1.3); any other student with p."""
        return "z" if student_name == "simsiam" else "out"

    def forward(self, *feats: Tensor, targets: Sequence[Tensor] | None = None) -> ObjectiveOutput:
        feat_a, feat_b = feats
        z_a, z_b = self.projector(feat_a), self.projector(feat_b)
        p_a, p_b = self.predictor(z_a), self.predictor(z_b)
        loss = self.criterion(p_a, p_b, z_a, z_b)
        p_a, p_b = F.normalize(p_a, dim=1), F.normalize(p_b, dim=1)
        z_a, z_b = F.normalize(z_a, dim=1), F.normalize(z_b, dim=1)
        return ObjectiveOutput(
            loss=loss,
            student=(p_a, p_b),
            teacher={"out": (p_a, p_b), "z": (z_a, z_b)},
            collapse_std=embedding_std(z_a, z_b),
        )
