"""Target (momentum) networks: a frozen copy of an online module, its EMA update and the momentum schedule.

Used by the objectives with a target network (BYOL, MoCo v2). The copies are ordinary
submodules of the objective, so they are part of the peer's ``state_dict`` (checkpointed and
resumed bit-exactly) and move with it; their parameters do not require a gradient, which keeps
them out of the optimiser and out of DDP's gradient reduction.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

__all__ = ["MomentumTarget", "ema_update_", "frozen_copy", "momentum_schedule"]


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` (same weights and buffers) whose parameters require no gradient."""
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``xi <- m * xi + (1 - m) * theta`` for every parameter pair (BYOL eq. 1, MoCo eq. 2).

    Written as ``xi.lerp_(theta, 1 - m)`` (``xi + (1 - m)(theta - xi)``). Buffers (BatchNorm running
    statistics) are not averaged: the target keeps those of its own forward passes.
    """
    targets = [t for t in target.parameters()]
    onlines = [o.detach() for o in online.parameters()]
    if len(targets) != len(onlines):
        raise ValueError(f"target has {len(targets)} parameters, online {len(onlines)}")
    for t, o in zip(targets, onlines, strict=True):
        t.lerp_(o.to(t.dtype), 1.0 - momentum)


def momentum_schedule(base: float, total_steps: int, kind: str = "cosine") -> list[float]:
    """One momentum per step ``k = 0 .. total_steps - 1``.

    ``"cosine"`` (BYOL, Grill et al. 2020, §3.2): ``m_k = 1 - (1 - base) (cos(pi k / K) + 1) / 2``
    with ``K = total_steps``, from ``base`` at the first step up towards 1; ``"constant"``
    (MoCo): ``base`` at every step.
    """
    if kind == "constant":
        return [float(base)] * max(total_steps, 1)
    if kind != "cosine":
        raise ValueError(f"momentum schedule must be 'cosine' or 'constant', got {kind!r}")
    k_total = max(total_steps, 1)
    return [1.0 - (1.0 - base) * (math.cos(math.pi * k / k_total) + 1.0) / 2.0 for k in range(k_total)]


class MomentumTarget:
    """What an objective with an EMA copy of its peer's encoder shares (mixed into BYOL and MoCo).

    ``attach`` makes the frozen copy; the momentum of each step comes from a schedule precomputed
    for the run (``base_momentum`` and ``schedule_kind`` are the objective's); ``encode_targets``
    gives the target encoder's features of each view (one at a time), without a graph.
    """

    base_momentum: float
    schedule_kind: str
    momentum: float
    target_encoder: nn.Module | None

    def attach(self, encoder: nn.Module) -> None:
        self.target_encoder = frozen_copy(encoder)

    def set_total_steps(self, total: int, steps_per_epoch: int | None = None) -> None:
        self.momenta = momentum_schedule(self.base_momentum, total, self.schedule_kind)

    def step_schedules(self) -> dict[str, list[float]]:
        return {"momentum": self.momenta}

    def set_step(self, step: int) -> None:
        self.momentum = self.momenta[min(step, len(self.momenta) - 1)]

    def encode_targets(self, *views: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.target_encoder is None:
            raise RuntimeError(f"{type(self).__name__} needs its peer's encoder: call attach(encoder) first")
        with torch.no_grad():
            return tuple(self.target_encoder(view) for view in views)
