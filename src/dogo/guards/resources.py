"""Resources asked for up front (class 6): what a config implies is refused before it is allocated.

:func:`dogo.core.memory.check_fits` is the one check (the size wanted against what the machine has free,
one line naming what asked); this module says what a training config asks for before any of it
exists. Every peer is built on PyTorch's ``meta`` device, which allocates nothing, so its weights,
buffers (a MoCo queue, a target network) and heads are counted exactly, whatever their shape; then
a trainable peer's gradients and optimiser state (two moments at most), the batch of views, and the
copies a checkpoint of that state is serialised through (:func:`dogo.runs.checkpoint.save_checkpoint`
holds about three while it writes).
Activations are not counted (they depend on the backbone's every layer): the estimate is a floor,
so a refusal is always right, and an accepted config may still need more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["check_cohort_fits", "cohort_bytes"]


#: makes one peer from its config (``train.models.N``), image size and label: the trainer's
#: ``Peer.from_config``, passed in by the caller (guards sit below the models and the trainer)
Build = Callable[[Any, int, str], Any]


def _peer_bytes(cfg: Any, image_size: int, label: str, build: Build) -> tuple[int, str] | None:
    """(bytes of a peer's weights, gradients, optimiser state and buffers; its largest tensor in words)."""
    import torch

    try:
        with torch.device("meta"):
            peer = build(cfg, image_size, label)
    except Exception:
        return None
    tensors = [(name, t) for name, t in [*peer.named_parameters(), *peer.named_buffers()]]
    weights = sum(t.numel() * t.element_size() for _, t in tensors)
    trainable = sum(p.numel() * p.element_size() for p in peer.parameters() if p.requires_grad) if cfg.trainable else 0
    name, largest = max(tensors, key=lambda item: item[1].numel() * item[1].element_size())
    shape = "x".join(map(str, largest.shape))
    state = weights + 2 * trainable  # what a checkpoint holds: weights, buffers, optimiser moments
    return weights + 3 * trainable + 3 * state, f"{label}'s {name} ({shape})"


def cohort_bytes(config: Any, batch: int, labels: Sequence[str], build: Build) -> tuple[int, str]:
    """The bytes a training config asks for before its first activation, and its largest part in words.

    ``labels``: the peers' labels (:func:`dogo.config.peer_labels`); ``build``: what makes a peer.
    """
    total, largest, parts = 0, 0, ""
    for cfg, label in zip(config.train.models, labels, strict=True):
        found = _peer_bytes(cfg, config.dataset.image_size, label, build)
        if found is None:
            continue
        nbytes, what = found
        total += nbytes
        if nbytes > largest:
            largest, parts = nbytes, what
    size = config.dataset.image_size
    views = 2 * batch * 3 * size**2 * 4 * len(config.train.models)  # float32 views, two per peer
    if views > largest:
        parts = f"the views: 2 x {batch} x 3 x {size} x {size} float32 per peer (dataset.image_size, train.batch_size)"
    return total + views, parts


def check_cohort_fits(config: Any, device: Any, batch: int, labels: Sequence[str], build: Build) -> None:
    """Refuse (one line, :func:`dogo.core.memory.check_fits`) a cohort whose weights, state and batch exceed the free
    memory of ``device`` (the system's for the CPU, the GPU's own for CUDA)."""
    import torch

    from dogo.core.memory import check_fits

    nbytes, largest = cohort_bytes(config, batch, labels, build)
    available = None
    if getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_available():
        available = torch.cuda.mem_get_info(device)[0]
    where = "on the GPU" if available is not None else None
    fix = (
        f"the largest part is {largest}; lower it (train.models.N.objective_options such as queue_size or "
        "hidden, n_proj, width) or train.batch_size"
    )
    check_fits(
        nbytes,
        f"the cohort of train.models (weights, gradients, optimiser state, buffers, a batch of "
        f"{batch} views and a checkpoint being written)",
        fix,
        available=available,
        where=where,
    )
