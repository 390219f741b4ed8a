"""Every cross-process call of dogo, each a no-op in a single process.

Losses and the training loop never call ``torch.distributed`` directly: they call these
helpers, which do the right thing when a process group is initialised and return their input
(or the single-process answer) otherwise. The gather that keeps gradients follows lightly's
``GatherLayer`` (``lightly/utils/dist.py``).

Convention for gradients: :func:`gather_with_grad` (and :func:`all_reduce_sum_with_grad`) send
back to each rank the gradient of the *sum* of all ranks' losses with respect to its own input.
``DistributedDataParallel`` then averages parameter gradients over ranks, so a loss whose
per-rank values average to the single-process loss gets exactly the single-process gradient.

Launching: ``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`init_from_env` starts the process group from them (gloo on CPUs, NCCL on
GPUs, one GPU per process chosen by ``LOCAL_RANK``) and does nothing without them.
:func:`data_parallel` wraps a module in ``DistributedDataParallel`` and
:func:`convert_sync_batchnorm` synchronises its BatchNorm statistics across ranks (on CPUs with
:class:`SyncBatchNorm` below: PyTorch's own ``torch.nn.SyncBatchNorm`` refuses CPU tensors).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as torch_dist
from torch import Tensor, nn

__all__ = [
    "SyncBatchNorm",
    "all_reduce_mean",
    "all_reduce_sum_with_grad",
    "any_process",
    "barrier",
    "broadcast_object",
    "cleanup",
    "convert_sync_batchnorm",
    "data_parallel",  # modules
    "gather_with_grad",
    "init_from_env",
    "is_distributed",
    "is_main_process",
    "launched_by_torchrun",  # who am I
    "local_device",  # set-up
    "local_rank",
    "on_main_process",  # collectives
    "rank",
    "shard",
    "world_size",
]

T = TypeVar("T")

BACKENDS = ("auto", "gloo", "nccl")


def is_distributed() -> bool:
    """True when ``torch.distributed`` is available and a process group is initialised."""
    return torch_dist.is_available() and torch_dist.is_initialized()


def world_size() -> int:
    """Number of processes in the default group (1 in a single process)."""
    return torch_dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """Rank of this process in the default group (0 in a single process)."""
    return torch_dist.get_rank() if is_distributed() else 0


def local_rank() -> int:
    """Rank of this process on its machine (``LOCAL_RANK`` set by torchrun; 0 otherwise)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """True on rank 0: the process that writes logs, checkpoints and reports."""
    return rank() == 0


def launched_rank() -> int:
    """The rank torchrun gave this process (``RANK``; 0 otherwise), known before the group starts."""
    return int(os.environ.get("RANK", "0"))


def launched_by_torchrun() -> bool:
    """True when the environment describes a process group (``RANK`` and ``WORLD_SIZE`` set)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


# --------------------------------------------------------------------------- set-up


def init_from_env(
    backend: str = "auto", device: torch.device | str | None = None, timeout_minutes: float = 30.0
) -> bool:
    """Start the default process group from torchrun's environment variables.

    A no-op returning False without them (a plain ``python``/``dogo`` process), and returning
    True when a group is initialised already (so calling it twice is safe).

    Args:
        backend: ``"auto"`` (NCCL when ``device`` is a CUDA device, else gloo), ``"gloo"`` or
            ``"nccl"``.
        device: the device this process trains on. For CUDA, the process binds to
            ``cuda:LOCAL_RANK`` (see :func:`local_device`).
        timeout_minutes: how long a collective waits for the other ranks before failing.

    Raises:
        ConfigError: an unknown backend, or NCCL without a CUDA device.
    """
    from dogo.core.errors import ConfigError

    if is_distributed():
        return True
    if not launched_by_torchrun():
        return False
    if backend not in BACKENDS:
        raise ConfigError(f"train.dist_backend: unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    device = local_device(device if device is not None else "cpu")
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError(
            f"train.dist_backend=nccl needs CUDA devices, but this process trains on {device}; "
            "use train.dist_backend=gloo (or auto)"
        )
    options: dict[str, Any] = {"timeout": timedelta(minutes=timeout_minutes)}
    if device.type == "cuda":
        torch.cuda.set_device(device)
        if backend == "nccl":
            options["device_id"] = device  # binds the communicator to this GPU (no guessing in barrier)
    torch_dist.init_process_group(backend=backend, init_method="env://", **options)
    return True


def cleanup() -> None:
    """Destroy the default process group (no-op when there is none)."""
    if is_distributed():
        torch_dist.destroy_process_group()


def local_device(device: torch.device | str) -> torch.device:
    """The device of this process: a CUDA device without an index becomes ``cuda:LOCAL_RANK``.

    A device with an explicit index, and every non-CUDA device, is returned unchanged.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank() if launched_by_torchrun() else torch.cuda.current_device())
    return device


# --------------------------------------------------------------------------- collectives


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if is_distributed():
        torch_dist.barrier()


def all_reduce_mean(x: Tensor) -> Tensor:
    """Mean of ``x`` over all processes, detached (``x`` itself in a single process).

    For logging: the input is not modified and no gradient flows through the result, which is
    on ``x``'s device (a CPU tensor is fine with NCCL too: it travels through the GPU).
    """
    if not is_distributed():
        return x
    y = x.detach().to(_collective_device(), copy=True)
    torch_dist.all_reduce(y, op=torch_dist.ReduceOp.SUM)
    return (y / world_size()).to(x.device)


def _collective_device() -> torch.device:
    """Where small control tensors live for the current backend (NCCL needs CUDA tensors)."""
    if torch_dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def any_process(flag: bool) -> bool:
    """True when ``flag`` is true on at least one process (``flag`` itself in a single process).

    Lets every rank take the same branch, e.g. stop together when one received SIGTERM.
    """
    if not is_distributed():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s picklable ``obj`` on every rank (``obj`` itself in a single process)."""
    if not is_distributed():
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=src, device=_collective_device())
    return box[0]


def on_main_process(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and hand its result to every rank.

    A :class:`~dogo.core.errors.DogoError` raised by ``fn`` is raised on every rank (with rank 0's
    message), so that the other ranks do not wait forever for a process that has stopped.
    In a single process: ``fn()``.
    """
    from dogo.core.errors import DogoError

    if not is_distributed():
        return fn()
    result: Any = None
    error: tuple[type, str] | None = None
    if is_main_process():
        try:
            result = fn()
        except DogoError as exc:
            error = (type(exc), str(exc))
    result, error = broadcast_object((result, error))
    if error is not None:
        raise error[0](error[1])
    return result


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


class _AllReduceSum(torch.autograd.Function):
    """all_reduce(SUM) in the forward and in the backward: every rank's output is the same sum,
    so the gradient of the sum of all ranks' losses with respect to each input is the sum of
    the ranks' output gradients."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        y = x.clone()
        torch_dist.all_reduce(y, op=torch_dist.ReduceOp.SUM)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        torch_dist.all_reduce(grad, op=torch_dist.ReduceOp.SUM)
        return grad


def all_reduce_sum_with_grad(x: Tensor) -> Tensor:
    """Sum of ``x`` over all ranks, on every rank, differentiable (``x`` itself in one process).

    Backward follows the module's convention: each rank receives the gradient of the sum of all
    ranks' losses with respect to its own ``x``.
    """
    if not is_distributed() or world_size() == 1:
        return x
    return _AllReduceSum.apply(x)


def shard(indices: Tensor) -> Tensor:
    """This rank's contiguous share of a global batch of indices (all of it in one process).

    This is dogo's distributed sampler: every rank draws the same seeded permutation of the
    dataset per epoch, cuts the same global batches from it and keeps its own slice, so rank r
    holds images ``[r * n, (r + 1) * n)`` of each global batch of ``world_size * n``.
    The global batch size must be divisible by the number of processes.
    """
    if not is_distributed():
        return indices
    size = world_size()
    if len(indices) % size:
        raise ValueError(f"global batch of {len(indices)} is not divisible by {size} processes")
    return indices.view(size, -1)[rank()]


# --------------------------------------------------------------------------- modules


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics span the global batch of all ranks, on any device.

    ``torch.nn.SyncBatchNorm`` only runs on GPUs (it raises on CPU tensors), so gloo/CPU runs use
    this one; :func:`convert_sync_batchnorm` picks PyTorch's fused version on GPUs. Training
    mode, with a process group of more than one rank, per channel c over the ``N`` global values
    (batch and spatial positions of every rank)::

        mean_c = sum x / N,   var_c = sum (x - mean_c)^2 / N            (two all-reduces)
        y      = (x - mean_c) / sqrt(var_c + eps) * weight_c + bias_c

    with the running statistics updated from ``mean_c`` and the unbiased ``var_c * N / (N - 1)``,
    as ``F.batch_norm`` does on one process holding the whole batch. Both sums go through
    :func:`all_reduce_sum_with_grad`, so gradients are those of the single-process batch norm.
    Computed in at least float32 (the output keeps the input's dtype). Otherwise (eval mode, one process)
    it is a plain ``F.batch_norm``. Shapes: ``B x C`` or ``B x C x ...``.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not (self.training and is_distributed() and world_size() > 1):
            return super().forward(input)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        x = input.float() if input.dtype in (torch.float16, torch.bfloat16) else input
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        local_count = x.new_full((1,), x.numel() / x.shape[1])
        sums = all_reduce_sum_with_grad(torch.cat([x.sum(dims), local_count]))
        count = sums[-1].detach()
        mean = sums[:-1] / count
        centered = x - mean.view(shape)
        var = all_reduce_sum_with_grad((centered * centered).sum(dims)) / count
        y = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                unbiased = var * count / (count - 1).clamp(min=1)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        return y.to(input.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device | str = "cpu") -> nn.Module:
    """Replace every ``BatchNorm1d/2d/3d`` inside ``module`` by a synchronised batch norm.

    On CUDA (and other accelerators) PyTorch's fused ``torch.nn.SyncBatchNorm``; on CPU
    :class:`SyncBatchNorm`. Parameters and buffers are the same tensor objects (optimisers built
    before the conversion keep working) and the state-dict keys do not change, so checkpoints load
    into models with plain BatchNorm. Children are replaced in place; returns ``module`` (or the
    replacement when ``module`` itself is a batch norm).
    """
    if torch.device(device).type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, (SyncBatchNorm, nn.SyncBatchNorm)
    ):
        synced = SyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            synced.weight, synced.bias = module.weight, module.bias
        if module.track_running_stats:
            synced.running_mean, synced.running_var = module.running_mean, module.running_var
            synced.num_batches_tracked = module.num_batches_tracked
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        replacement = convert_sync_batchnorm(child, device)
        if replacement is not child:
            setattr(module, name, replacement)
    return module


def data_parallel(module: nn.Module, device: torch.device | str) -> nn.Module:
    """``module`` wrapped in ``DistributedDataParallel`` (``module`` itself in one process).

    Every parameter must receive a gradient in every step (``find_unused_parameters=False``,
    true of dogo's peers: the teacher side of the KL is detached but each peer's own loss uses
    all its parameters). The wrapper averages gradients over ranks during the backward and
    broadcasts rank 0's buffers before each forward.
    """
    if not is_distributed():
        return module
    device = torch.device(device)
    device_ids = [device] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=False)
