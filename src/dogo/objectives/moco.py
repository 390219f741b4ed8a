"""MoCo v2: a query encoder trained with InfoNCE against momentum-encoder keys and a queue of negatives.

He, Fan, Wu, Xie, Girshick. "Momentum Contrast for Unsupervised Visual Representation
Learning", CVPR 2020; Chen, Fan, Girshick, He. "Improved Baselines with Momentum Contrastive
Learning" (MoCo v2), arXiv:2003.04297, 2020.

Batch statistics and torchrun: MoCo's *shuffle BN* (shuffling the key batch across GPUs so that
the key encoder's BatchNorm cannot leak which sample is the positive) is not implemented. dogo's
answer is SyncBN, as SimCLR's global BN and MoCo v3: with ``train.sync_batchnorm: auto`` the
objective's BatchNorms (including the momentum encoder copied into it) use the global batch, and
``train.sync_batchnorm: on`` also the query encoder's. In one process the statistics are those
of the local (per-view) batch, as for SimCLR; the leak shuffle BN targets is then not blocked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

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
from dogo.objectives.ema import MomentumTarget, ema_update_, frozen_copy
from dogo.views import RECIPES


@RECIPES.register("moco_v2")
def moco_v2_view(image_size: int) -> dict:
    """MoCo v2's augmentation: crop scale (0.2, 1), ColorJitter(0.4, 0.4, 0.4, 0.1) p = 0.8,
    grayscale 0.2, flip; Gaussian blur by the reference's rule (p = 0.5 at 224 px only)."""
    return {"size": image_size, "crop_scale": (0.2, 1.0), "jitter_strength": 0.5, "grayscale_p": (0.2,)}


class MoCoOptions(ObjectiveOptions):
    """MoCo v2's settings (``n_proj`` and ``temperature`` are the peer's keys, the rest ``objective_options``)."""

    n_proj: int = Field(128, ge=1, description="output size of the MLP head (MoCo v2: 128)")
    temperature: float = Field(0.2, gt=0, description="InfoNCE temperature (MoCo v2: 0.2)")
    hidden: int = Field(2048, ge=1, description="hidden width of the MLP head (MoCo v2: the feature size, 2048)")
    queue_size: int = Field(65536, ge=1, description="number of negative keys kept (K)")
    base_momentum: float = Field(0.999, ge=0.0, le=1.0, description="momentum of the key encoder (m)")
    momentum_schedule: Literal["constant", "cosine"] = Field("constant", description="constant (MoCo) or cosine to 1")
    symmetric: bool = Field(
        False,
        description="False: MoCo v2's loss, queries of view a against keys of view b; True: the mean over "
        "both view orders (the queue still receives view b's keys only)",
    )


class InfoNCELoss(nn.Module):
    """MoCo's InfoNCE with a queue (He et al. 2020, eq. 1 and Algorithm 1)::

        l_pos[i] = q[i] . k[i] / tau,   l_neg[i, j] = q[i] . queue[j] / tau
        loss     = mean_i -log( exp(l_pos[i]) / (exp(l_pos[i]) + sum_j exp(l_neg[i, j])) )

    with q, k, queue L2-normalised (normalised here); no gradient reaches k or the queue. Computed
    in at least float32 with autocast disabled.

    Shapes:
        q, k: ``N x D``; queue: ``K x D``. Returns a scalar.
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = float(temperature)

    def forward(self, q: Tensor, k: Tensor, queue: Tensor) -> Tensor:
        with torch.autocast(device_type=q.device.type, enabled=False):
            q = F.normalize(at_least_float32(q), dim=1)
            k = F.normalize(at_least_float32(k.detach()), dim=1)
            queue = F.normalize(at_least_float32(queue.detach()), dim=1)
            l_pos = (q * k).sum(dim=1, keepdim=True)
            l_neg = q @ queue.T
            logits = torch.cat([l_pos, l_neg], dim=1) / self.temperature
            return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


@OBJECTIVES.register("moco")
class MoCo(MomentumTarget, Objective):
    """MoCo v2: query ``q = g(f(x))``, key ``k = g'(f'(x))`` (momentum copies), loss :class:`InfoNCELoss`.

    Head ``g``: Linear(d, hidden) -> ReLU -> Linear(hidden, n_proj) (MoCo v2's MLP, 128 out).
    ``f'``, ``g'`` are frozen copies made in :meth:`attach` and follow by EMA with momentum
    ``base_momentum`` (0.999) after each optimiser step. The queue (``queue``, ``K x n_proj``,
    and its write position ``queue_ptr``) is a buffer: part of the peer's state_dict, so it is
    checkpointed and resumed exactly.

    The loss (default, MoCo v2's and its authors' code): ``L(q_a, k_b)``, the queries of view a
    against the keys of view b; after each optimiser step the keys of view b (gathered from every
    rank under torchrun, so every rank's queue is the same) replace the oldest entries, N per
    step. ``symmetric=True``: ``(L(q_a, k_b) + L(q_b, k_a)) / 2``, both terms against the same
    queue, which still receives view b's keys only (N per step, so it fills in ``K / N`` steps
    either way); the authors' CIFAR-10 demo instead sums the two terms and enqueues both views'
    keys (2N per step).

    Output: ``student = teacher["out"] = (q_a, q_b)``, ``teacher["key"] = (k_a, k_b)``, all
    L2-normalised; ``collapse_std`` of q.

    Reading the loss: the queue starts as random unit vectors (as in the authors' code), nearly
    orthogonal to every query, so they are easy negatives and the first steps' loss is far below
    chance, ``log(K + 1)``. An untrained encoder maps all images close together, so each real key
    that replaces a random one is a hard negative and the loss *rises* towards ``log(K + 1)`` until
    the first ``K / batch_size`` steps have filled the queue. Compare losses only after that.
    The collapse signal can dip over the same steps (easy negatives push nothing apart) and
    recovers once the queue holds real keys.
    """

    name = "moco"
    view_recipe = "moco_v2"
    Options = MoCoOptions
    options: MoCoOptions  # the validated settings (set by Objective.__init__)
    queue: Tensor  # buffers registered in __init__
    queue_ptr: Tensor

    def __init__(self, feature_dim: int, **options: Any) -> None:
        super().__init__(options)
        o = self.options
        self.head = nn.Sequential(
            nn.Linear(feature_dim, o.hidden), nn.ReLU(inplace=True), nn.Linear(o.hidden, o.n_proj)
        )
        self.criterion = InfoNCELoss(o.temperature)
        self.symmetric = o.symmetric
        self.base_momentum, self.schedule_kind = float(o.base_momentum), o.momentum_schedule
        self.momenta, self.momentum = [self.base_momentum], self.base_momentum
        self.target_encoder: nn.Module | None = None
        self.target_head = frozen_copy(self.head)
        self.register_buffer("queue", F.normalize(torch.randn(o.queue_size, o.n_proj), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self._pending: Tensor | None = None  # this step's keys, enqueued after the optimiser step

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys`` (all ranks' when distributed) over the oldest queue entries."""
        keys = dist.gather_with_grad(keys.detach()).to(self.queue.dtype)[-len(self.queue) :]
        idx = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % len(self.queue)
        self.queue[idx] = keys
        self.queue_ptr.copy_((self.queue_ptr + len(keys)) % len(self.queue))

    def after_step(self, encoder: nn.Module) -> None:
        if self.target_encoder is None:
            raise RuntimeError(f"{type(self).__name__}.after_step before attach(encoder)")
        ema_update_(self.target_encoder, encoder, self.momentum)
        ema_update_(self.target_head, self.head, self.momentum)
        if self._pending is not None:
            self.enqueue(self._pending)
            self._pending = None

    def forward(self, *feats: Tensor, targets: Sequence[Tensor] | None = None) -> ObjectiveOutput:
        feat_a, feat_b = feats
        if targets is None:
            raise ValueError("MoCo needs the momentum encoder's features (Peer.forward passes them)")
        q_a, q_b = F.normalize(self.head(feat_a), dim=1), F.normalize(self.head(feat_b), dim=1)
        with torch.no_grad():
            k_a, k_b = (F.normalize(self.target_head(at_least_float32(t)), dim=1) for t in targets)
        loss = self.criterion(q_a, k_b, self.queue)  # the loss keeps a normalised copy, not the buffer
        if self.symmetric:
            loss = 0.5 * (loss + self.criterion(q_b, k_a, self.queue))
        self._pending = k_b if self.training else None
        return ObjectiveOutput(
            loss=loss,
            student=(q_a, q_b),
            teacher={"out": (q_a, q_b), "key": (k_a, k_b)},
            collapse_std=embedding_std(q_a, q_b),
        )
