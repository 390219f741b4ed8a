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

__all__ = ["frozen_copy", "ema_update_", "momentum_schedule"]


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
    for t, o in zip(targets, onlines):
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
