"""Per-peer optimisers and learning-rate schedules.

Schedules are precomputed per step (as in DINO): ``lr_schedule(cfg, base_lr, total_steps,
steps_per_epoch)[step]`` is the learning rate of that step, so resuming at any step needs no
scheduler state. ``cosine`` anneals once from ``lr`` to ``min_lr`` after a linear warm-up.
``reference-cosine`` is what the reference's ``scheduler: true`` does (docs/reference.md §7):
``CosineAnnealingLR(T_max=epochs, eta_min)`` stepped once per *batch*, so the rate follows a cosine
between ``lr`` and ``eta_min`` with a period of ``2 * T_max`` steps (flat at its default
``lr = eta_min = 3e-4``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from dogo.config import OptimizerConfig, ScheduleConfig


class LARS(torch.optim.Optimizer):
    """LARS (You et al. 2017, "Large Batch Training of Convolutional Networks"), SimCLR's optimiser.

    SGD with momentum whose step for each weight matrix is scaled by the trust ratio
    ``eta * ||w|| / (||g|| + wd * ||w||)``. Biases and BatchNorm parameters (1-d tensors) are
    neither decayed nor adapted, as in SimCLR.
    """

    def __init__(self, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9, eta: float = 0.001):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if p.ndim > 1:
                    grad = grad.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = torch.norm(p), torch.norm(grad)
                    trust = torch.where(
                        (w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm, torch.ones_like(w_norm)
                    )
                    grad = grad.mul(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(grad)
                p.add_(buf, alpha=-group["lr"])
        return loss


def build_optimizer(params: list[nn.Parameter], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """The optimiser a peer's config names (learning rate set per step by the schedule)."""
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum)
    return LARS(params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum)


class LrSchedule(Sequence[float]):
    """Learning rate of every step: linear warm-up, then constant, cosine or reference-cosine.

    A sequence of ``total_steps`` rates computed on indexing rather than stored: a run of a
    million epochs (stopped early by ``max_steps``) needs no list of billions of floats, and
    ``schedule[step]`` is the same number a stored list would hold.

    ``reference-cosine`` is the closed form of PyTorch's ``CosineAnnealingLR`` after ``t`` calls of
    ``step()``: ``eta_min + (lr - eta_min) * (1 + cos(pi * t / T_max)) / 2`` for every ``t``
    (not clamped at ``T_max``: past it the rate climbs back), with ``T_max = t_max`` or, by
    default, the number of epochs ``total_steps // steps_per_epoch``.
    """

    def __init__(self, cfg: ScheduleConfig, base_lr: float, total_steps: int, steps_per_epoch: int) -> None:
        self.name, self.min_lr, self.base_lr = cfg.name, cfg.min_lr, base_lr
        self.total_steps = total_steps
        self.warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total_steps)
        self.t_max = cfg.t_max or max(1, total_steps // max(1, steps_per_epoch))

    def __len__(self) -> int:
        return self.total_steps

    def __getitem__(self, step):  # type: ignore[override]
        if isinstance(step, slice):
            return [self[i] for i in range(*step.indices(self.total_steps))]
        if step < 0:
            step += self.total_steps
        if not 0 <= step < self.total_steps:
            raise IndexError(f"step {step} outside the schedule's {self.total_steps} steps")
        if step < self.warmup:
            return self.base_lr * (step + 1) / self.warmup
        if self.name == "cosine":
            progress = (step - self.warmup) / max(1, self.total_steps - self.warmup)
            return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * progress))
        if self.name == "reference-cosine":
            t = (step - self.warmup) % (2 * self.t_max)  # exact period; keeps the cosine's argument small
            return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * t / self.t_max))
        return self.base_lr


def lr_schedule(cfg: ScheduleConfig, base_lr: float, total_steps: int, steps_per_epoch: int) -> LrSchedule:
    """Learning rate of every step (see :class:`LrSchedule`)."""
    return LrSchedule(cfg, base_lr, total_steps, steps_per_epoch)
