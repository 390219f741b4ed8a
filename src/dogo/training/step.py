"""One training step of a cohort, the only one: used by the trainer and timed by ``dogo bench``.

Reading order: :func:`set_up` resolves how steps run on this machine (:class:`StepSettings`)
and builds the cohort and the KL term; a :class:`Sampler` gives each step its batch (an epoch
permutation seeded by (seed, epoch), the step's slice, this rank's share) and each peer's view
seeds; :func:`training_step` draws the views and calls :func:`train_step`, which reads top to
bottom: forward every peer, SSL terms, distillation terms, then each peer's backward and
optimiser step (one after another or side by side, :mod:`dogo.training.peer_threads`).

Everything random in a step is drawn from generators seeded by (seed, epoch, step, peer, rank),
so a run resumed from any checkpoint continues exactly as if it had never stopped.

``times`` (a :class:`PartTimes`) is an optional timer of the step's parts (augmentation, each
peer's forward and backward, distillation, optimiser) for ``dogo bench``; without it the parts
run untimed.
"""

from __future__ import annotations

import contextlib
import copy
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from dogo.config import RunConfig, peer_labels
from dogo.core import dist
from dogo.core.runtime import (
    autocast_for,
    compile_module,
    configure_allocator,
    resolve_channels_last,
    resolve_device,
    resolve_precision,
    seed_everything,
    set_threads,
    step_seed,
)
from dogo.distill import SimilarityKL, cohort_distillation
from dogo.training.cohort import Cohort, Peer
from dogo.training.init_from import initialise_peers
from dogo.training.peer_threads import PeerRunner, resolve_concurrent_peers

__all__ = [
    "PartTimes",
    "Sampler",
    "Setup",
    "StepResult",
    "StepSettings",
    "build_cohort",
    "draw_views",
    "process_device",
    "set_up",
    "train_step",
    "training_step",
]


@dataclass
class StepResult:
    """What one step produced, as floats, for logging."""

    losses: dict[str, float]  # "peer/<i>/loss", "peer/<i>/loss/ssl", "peer/<i>/loss/kl", ...
    finite: bool
    bad_term: str | None = None


@dataclass
class StepSettings:
    """How training steps run on this machine, resolved once from ``config.train``."""

    device: torch.device
    precision: str  # "bf16", "fp16" or "fp32" (train.precision, auto resolved)
    channels_last: bool
    autocast: Any  # the precision's autocast context (a no-op one for fp32)
    allocator: str  # "retain" or "system", applied to this process
    concurrent_peers: bool  # peers side by side (dogo.training.peer_threads)

    @classmethod
    def resolve(cls, config: RunConfig, device: torch.device) -> StepSettings:
        """Resolve every ``auto`` for ``device`` and apply the allocator setting to this process."""
        train = config.train
        precision = resolve_precision(train.precision, device)
        return cls(
            device,
            precision,
            resolve_channels_last(train.channels_last, precision, device),
            autocast_for(precision, device),
            configure_allocator(train.allocator, device),
            resolve_concurrent_peers(config, device),
        )


@dataclass
class Setup:
    """What every step needs: the settings, the cohort (distributed under torchrun), the KL term and,
    under fp16, each peer's loss scaler (None for bf16 and fp32, and for frozen peers)."""

    settings: StepSettings
    cohort: Cohort
    kl: SimilarityKL
    scalers: list[Any] | None = None


def process_device(config: RunConfig) -> torch.device:
    """This process's device, with the process group started under torchrun (a no-op otherwise).

    ``cuda`` becomes ``cuda:LOCAL_RANK``. The one place where device and process group are resolved.
    """
    device = resolve_device(config.train.device)
    dist.init_from_env(config.train.dist_backend, device)
    return dist.local_device(device)


def step_settings(config: RunConfig) -> StepSettings:
    """Threads and global seeds set, device and process group resolved, every ``auto`` decided."""
    set_threads(config.train.num_threads)
    seed_everything(config.seed)
    return StepSettings.resolve(config, process_device(config))


def build_cohort(
    config: RunConfig,
    steps_per_epoch: int,
    device: torch.device,
    channels_last: bool,
    init_from: bool = True,
    log=print,
) -> Cohort:
    """The configured cohort, initialised from ``config.seed`` (and the peers' ``init_from`` runs
    unless ``init_from=False``: a resumed run), on its device and memory layout.

    With ``train.compile`` the backbones are compiled in place (their state_dict keys stay the same).
    """
    torch.manual_seed(config.seed)
    cohort = Cohort.from_config(config, steps_per_epoch)
    if init_from:
        initialise_peers(cohort, config, log if dist.is_main_process() else (lambda line: None))
    cohort.to(device, channels_last)
    if config.train.compile:
        for peer in cohort.peers:
            compile_module(peer.encoder)
    return cohort


def set_up(
    config: RunConfig, steps_per_epoch: int, settings: StepSettings | None = None, *, init_from: bool = True, log=print
) -> Setup:
    """The trainer's (and the bench's) set-up: settings, the cohort (DDP-wrapped under torchrun), the KL."""
    settings = settings or step_settings(config)
    from dogo.core import dist
    from dogo.guards.resources import check_cohort_fits

    check_cohort_fits(
        config,
        settings.device,
        config.train.batch_size // dist.world_size(),  # before allocating
        peer_labels(config.train.models),
        Peer.from_config,
    )
    cohort = build_cohort(config, steps_per_epoch, settings.device, settings.channels_last, init_from, log)
    cohort.distribute(settings.device, config.train.sync_batchnorm)  # DDP + sync BN under torchrun
    return Setup(
        settings,
        cohort,
        SimilarityKL(config.distill.temperature, config.distill.reduction),
        make_scalers(cohort, settings.precision, settings.device),
    )


def make_scalers(cohort: Cohort, precision: str, device: torch.device) -> list[Any] | None:
    """One ``torch.amp.GradScaler`` per trainable peer under fp16 (peers' losses differ in scale), else None.

    fp16's narrow range underflows small gradients: each peer's loss is scaled up before its
    backward and its gradients unscaled before its optimiser step; a step whose gradients
    overflowed is skipped by the scaler, which lowers its scale (not an error, whatever
    ``train.nonfinite`` says). Their states are checkpointed (``Trainer.state()["scaler"]``).
    """
    if precision != "fp16":
        return None
    return [torch.amp.GradScaler(device.type) if optimizer is not None else None for optimizer in cohort.optimizers]


class Sampler:
    """Which images a step trains on, and the seeds of each peer's views.

    The data order of an epoch is a permutation seeded by (seed, epoch); step ``s`` takes slice
    ``s mod steps_per_epoch`` of the global batch and this rank its share (:func:`dist.shard`).
    """

    def __init__(self, num_images: int, batch_size: int, seed: int, shared_views: bool = False) -> None:
        self.num_images, self.batch_size, self.seed = num_images, batch_size, seed
        self.shared_views = shared_views
        self.steps_per_epoch = num_images // batch_size
        self._order: tuple[int, torch.Tensor] | None = None

    def epoch_order(self, epoch: int) -> torch.Tensor:
        if self._order is None or self._order[0] != epoch:
            generator = torch.Generator().manual_seed(step_seed(self.seed, epoch))
            self._order = (epoch, torch.randperm(self.num_images, generator=generator))
        return self._order[1]

    def indices(self, step: int) -> torch.Tensor:
        """This rank's share of step ``step``'s global batch (indices into the images)."""
        epoch, index = divmod(step, self.steps_per_epoch)
        batch = self.epoch_order(epoch)[index * self.batch_size : (index + 1) * self.batch_size]
        return dist.shard(batch)

    def view_seeds(self, step: int, peers: int) -> list[int]:
        """One seed per peer (the same for every peer with shared views), distinct per rank."""
        epoch, index = divmod(step, self.steps_per_epoch)
        return [step_seed(self.seed, epoch, index, 0 if self.shared_views else k, dist.rank()) for k in range(peers)]


class PartTimes:
    """Wall seconds of a step's parts, summed over calls: ``with times("optimiser"): ...`` (thread-safe)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def __call__(self, part: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            with self._lock:
                self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - start

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _untimed(part: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def draw_views(
    cohort: Cohort, images: torch.Tensor, seeds: list[int], device: torch.device, channels_last: bool
) -> list[tuple[torch.Tensor, ...]]:
    """Each peer's augmented views of the same uint8 images (its own recipes and draws: two views,
    or every view of a multi-crop objective, the two global ones first)."""
    # The uint8 batch travels to the device once (4x less to copy than floats; asynchronous from the
    # gatherer's pinned memory) and every peer's views are made there. The draws come from a CPU
    # generator seeded per peer, so the views are those of the host path (dogo.views).
    images = images.to(device, non_blocking=True)
    views = []
    for peer, seed in zip(cohort.peers, seeds, strict=True):
        generator = torch.Generator().manual_seed(seed)
        pair = tuple(recipe(images, generator) for recipe in peer.recipes)  # one recipe per view
        if channels_last:
            pair = tuple(v.contiguous(memory_format=torch.channels_last) for v in pair)
        views.append(pair)
    return views


def training_step(
    setup: Setup,
    images: torch.Tensor,
    seeds: list[int],
    step: int,
    *,
    nonfinite: str = "stop",
    runner: PeerRunner | None = None,
    times: PartTimes | None = None,
) -> tuple[StepResult, list[float]]:
    """The loop body: views of ``images`` (uint8), this step's learning rates, :func:`train_step`."""
    timed = times or _untimed
    settings = setup.settings
    with timed("augmentation"):
        views = draw_views(setup.cohort, images, seeds, settings.device, settings.channels_last)
    setup.cohort.train(True)
    rates = setup.cohort.set_lr(step)
    result = train_step(setup.cohort, views, setup.kl, settings.autocast, nonfinite, runner, times, setup.scalers)
    return result, rates


def train_step(
    cohort: Cohort,
    views: list[tuple[torch.Tensor, ...]],
    kl: SimilarityKL,
    autocast,
    nonfinite: str = "stop",
    runner: PeerRunner | None = None,
    times: PartTimes | None = None,
    scalers: list[Any] | None = None,
) -> StepResult:
    """One optimisation step of every peer on its views; returns the losses as floats.

    ``runner`` runs the per-peer parts (forward, backward + optimiser step) one after another
    or side by side (:mod:`dogo.training.peer_threads`); the result is the same. With ``scalers``
    (fp16) each peer's backward and step go through its GradScaler, and a non-finite step is
    the scaler's to skip: the result is then finite, with ``bad_term`` naming what overflowed.
    """
    timed = times or _untimed
    run = (runner or PeerRunner(len(cohort), concurrent=False)).map
    with timed("optimiser"):
        for optimizer in filter(None, cohort.optimizers):
            optimizer.zero_grad(set_to_none=True)

    def forward(i: int, module, pair):
        with timed(f"peer/{i}/forward"):  # a copy of the autocast context: it keeps state while entered
            return module(*pair, autocast=copy.copy(autocast))

    outputs = run(forward, range(len(cohort)), cohort.train_modules, views)
    with timed("distillation"):
        kl_terms, _ = cohort_distillation(
            outputs, [p.objective.name for p in cohort.peers], [p.distill_weight for p in cohort.peers], kl
        )
        totals = [
            peer.ssl_weight * out.loss + kl_k for peer, out, kl_k in zip(cohort.peers, outputs, kl_terms, strict=True)
        ]
        terms: dict[str, torch.Tensor] = {}
        for i, (out, kl_k, total) in enumerate(zip(outputs, kl_terms, totals, strict=True)):
            terms.update(
                {
                    f"peer/{i}/loss": total,
                    f"peer/{i}/loss/ssl": out.loss,
                    f"peer/{i}/loss/kl": kl_k,
                    f"peer/{i}/collapse_std": out.collapse_std,
                }
            )
        # Means over ranks (one all-reduce; the values themselves in one process): every rank logs
        # the global-batch losses and takes the same branch below.
        values = dist.all_reduce_mean(torch.stack([v.detach().double() for v in terms.values()])).tolist()
    losses: dict[str, float] = dict(zip(terms, values, strict=True))
    bad = next(
        (
            f"peer {i} ({peer.label}) {term}"
            for i, peer in enumerate(cohort.peers)
            for term in ("loss/ssl", "loss/kl", "loss")
            if not math.isfinite(losses[f"peer/{i}/{term}"])
        ),
        None,
    )
    if bad is not None and nonfinite == "skip" and not scalers:
        return StepResult(losses, False, bad)
    if bad is None or scalers:
        # Teachers are detached: a peer's total depends on its own graph only, so its backward
        # gives exactly its gradient, as one backward of the sum would.
        def backward_and_step(i: int, total: torch.Tensor, optimizer: torch.optim.Optimizer | None, scaler) -> None:
            if optimizer is None:  # a frozen peer: nothing to learn
                return
            with timed(f"peer/{i}/backward"):
                (total if scaler is None else scaler.scale(total)).backward()
            with timed("optimiser"):
                if scaler is None:
                    cohort.peers[i].after_backward()  # the objective's hook: DINO's gradient clipping
                    optimizer.step()
                else:  # unscaled first, so the hook sees true gradients; skips the step when they are not finite
                    scaler.unscale_(optimizer)
                    cohort.peers[i].after_backward()
                    scaler.step(optimizer)
                    scaler.update()
                cohort.peers[i].after_step()  # the objective's hook: EMA of its target networks

        run(backward_and_step, range(len(cohort)), totals, cohort.optimizers, scalers or [None] * len(cohort))
    return StepResult(losses, bad is None or bool(scalers), bad)
