"""Every cross-process call of dogo, each a no-op in a single process.

Losses and the training loop never call ``torch.distributed`` directly: they call these
helpers, which do the right thing when a process group is initialised and return their input
(or the single-process answer) otherwise. The gather that keeps gradients follows lightly's
``GatherLayer`` (``lightly/utils/dist.py``).

Convention for gradients: :func:`gather_with_grad` sends back to each rank the gradient of the
*sum* of all ranks' losses with respect to its own input. ``DistributedDataParallel`` then
averages parameter gradients over ranks, so a loss whose per-rank values average to the
single-process loss gets exactly the single-process gradient.
"""

from __future__ import annotations

import torch
import torch.distributed as torch_dist
from torch import Tensor

__all__ = [
    "is_distributed",
    "world_size",
    "rank",
    "is_main_process",
    "barrier",
    "all_reduce_mean",
    "gather_with_grad",
]


def is_distributed() -> bool:
    """True when ``torch.distributed`` is available and a process group is initialised."""
    return torch_dist.is_available() and torch_dist.is_initialized()


def world_size() -> int:
    """Number of processes in the default group (1 in a single process)."""
    return torch_dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """Rank of this process in the default group (0 in a single process)."""
    return torch_dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    """True on rank 0: the process that writes logs, checkpoints and reports."""
    return rank() == 0


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if is_distributed():
        torch_dist.barrier()


def all_reduce_mean(x: Tensor) -> Tensor:
    """Mean of ``x`` over all processes, detached (``x`` itself in a single process).

    For logging: the input is not modified and no gradient flows through the result.
    """
    if not is_distributed():
        return x
    y = x.detach().clone()
    torch_dist.all_reduce(y, op=torch_dist.ReduceOp.SUM)
    return y / world_size()


class _GatherLayer(torch.autograd.Function):
    """all_gather in the forward; in the backward, the sum over ranks of the gradients of every
    gathered piece, of which each rank keeps the slice that belongs to its own input."""

    @staticmethod
    def forward(ctx, x: Tensor) -> tuple[Tensor, ...]:  # type: ignore[override]
        pieces = [torch.empty_like(x) for _ in range(torch_dist.get_world_size())]
        torch_dist.all_gather(pieces, x)
        return tuple(pieces)

    @staticmethod
    def backward(ctx, *grads: Tensor) -> Tensor:  # type: ignore[override]
        stacked = torch.stack(grads)
        torch_dist.all_reduce(stacked, op=torch_dist.ReduceOp.SUM)
        return stacked[torch_dist.get_rank()]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0, keeping gradients to each owner.

    Args:
        x: ``n x ...``, the same shape on every rank (use ``drop_last`` batches).

    Returns:
        ``(world_size * n) x ...``, rank r's rows at ``[r * n, (r + 1) * n)``. In a single process
        ``x`` itself. Backward: each rank receives the gradient of the sum of all ranks'
        losses with respect to its own ``x`` (see the module docstring).
    """
    if not is_distributed() or world_size() == 1:
        return x
    return torch.cat(_GatherLayer.apply(x.contiguous()), dim=0)
