"""A peer (backbone + objective + view recipe + optimiser + schedule) and the cohort, a list of them.

Nothing here assumes two peers: a cohort of one is the single-model SSL baseline, and any mix
of backbones and objectives works. A peer's backbone is any ``nn.Module`` that maps a view batch
``B x 3 x S x S`` to features ``B x d`` and has ``feature_dim`` (dogo's backbones or the user's).

Also here, since they build peers: a trained run's peers (:func:`load_trained_peers`) and whether
a run's schedules depend on its length (:func:`length_dependence`, for ``train.keep_at`` budgets).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import cast

import torch
from torch import nn

from dogo.config import PeerConfig, RunConfig, peer_labels, recorded_config
from dogo.config.normalization import view_normalization
from dogo.core import dist
from dogo.core.errors import ConfigError
from dogo.models import build_backbone
from dogo.objectives import Objective, ObjectiveOutput, at_least_float32, build_objective
from dogo.runs.checkpoint import load_checkpoint
from dogo.runs.rundir import checkpoint_path
from dogo.training.optim import build_optimizer, lr_schedule
from dogo.views import ViewGroup, ViewRecipe, encode_groups


class Peer(nn.Module):
    """One member of the cohort: ``encoder`` (the representation kept after pretraining) and ``objective``."""

    def __init__(
        self,
        encoder: nn.Module,
        objective: Objective,
        groups: Sequence[ViewGroup],
        label: str,
        ssl_weight: float = 1.0,
        distill_weight: float = 1.0,
        trainable: bool = True,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.objective = objective
        objective.attach(encoder)  # target networks are copied from the online encoder here
        self.groups = list(groups)  # the objective's views, in groups of one size (dogo.views.multicrop)
        self.recipes: tuple[ViewRecipe, ...] = tuple(r for group in self.groups for r in group.recipes)
        self.recipe = self.recipes[0]
        self.label = label
        self.ssl_weight = ssl_weight
        self.distill_weight = distill_weight
        self.trainable = trainable
        if not trainable:
            self.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True) -> Peer:
        """A frozen peer (``trainable=False``) stays in eval mode: its BatchNorm statistics are fixed."""
        return super().train(mode and self.trainable)

    @classmethod
    def from_config(
        cls,
        cfg: PeerConfig,
        image_size: int,
        label: str,
        normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
    ) -> Peer:
        """The peer of ``cfg``; its views normalised with ``normalization`` (mean, std), else by image size."""
        encoder = build_backbone(cfg.backbone, image_size=image_size, width=cfg.width, **cfg.backbone_options)
        feature_dim = encoder.feature_dim
        assert isinstance(feature_dim, int)  # build_backbone checked it
        objective = build_objective(
            cfg.objective, feature_dim, n_proj=cfg.n_proj, temperature=cfg.temperature, **cfg.objective_options
        )
        groups = objective.view_groups(image_size)
        if normalization is not None:
            # 3 values each: ViewRecipe checks the lengths and raises a ConfigError otherwise.
            mean = cast(tuple[float, float, float], tuple(normalization[0]))
            std = cast(tuple[float, float, float], tuple(normalization[1]))
            groups = [ViewGroup(tuple(replace(r, mean=mean, std=std) for r in g.recipes)) for g in groups]
        patch = getattr(encoder, "patch_size", None)
        for group in groups:
            if patch and group.size % patch:
                raise ConfigError(
                    f"peer {label}: its {cfg.objective} views of {group.size} px do not fit "
                    f"{cfg.backbone}'s patch size {patch}; give the views a multiple of {patch} px "
                    f"(objective_options) or set backbone_options.patch_size"
                )
        return cls(encoder, objective, groups, label, cfg.ssl_weight, cfg.distill_weight, cfg.trainable)

    def forward(self, *views: torch.Tensor, autocast: torch.autocast | None = None) -> ObjectiveOutput:
        """Encode the views (the backbone under ``autocast`` if given) and apply the objective in (at least) fp32.

        Each group of views (:attr:`groups`) goes through the encoder as one batch: a two-view
        method's views one at a time, as in the reference, so BatchNorm statistics are per view;
        DINO's global views together and its local views together. Heads and losses run in fp32
        so that bf16 changes only the backbone's math. A frozen peer records no graph: it only teaches.
        """
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            with autocast if autocast is not None else nullcontext():
                feats = encode_groups(self.encoder, views, self.groups)
                targets = self.objective.encode_targets(*views)  # None without a target network
            feats = [at_least_float32(f) for f in feats]
            if targets is None:
                return self.objective(*feats)
            return self.objective(*feats, targets=tuple(at_least_float32(t) for t in targets))

    def optimised_parameters(self) -> list[nn.Parameter]:
        """What the optimiser updates: every parameter that requires a gradient (not the target
        networks an objective keeps, which follow by EMA)."""
        return [p for p in self.parameters() if p.requires_grad]

    def after_backward(self) -> None:
        """After this peer's backward, before its optimiser step: the objective's hook (DINO's clipping)."""
        self.objective.after_backward(self.encoder)

    def after_step(self) -> None:
        """After this peer's optimiser step: the objective's hook (EMA of target networks)."""
        self.objective.after_step(self.encoder)


@dataclass
class Cohort:
    """The peers with their optimisers (None for a frozen peer) and per-step learning rates."""

    peers: list[Peer]
    optimizers: list[torch.optim.Optimizer | None]
    schedules: list[Sequence[float]] = field(default_factory=list)
    replicas: list[nn.Module] = field(default_factory=list)  # DDP wrappers, set by distribute()

    @classmethod
    def from_config(cls, config: RunConfig, steps_per_epoch: int) -> Cohort:
        peers: list[Peer] = []
        optimizers: list[torch.optim.Optimizer | None] = []
        schedules: list[Sequence[float]] = []
        labels = peer_labels(config.train.models)
        total = steps_per_epoch * config.train.epochs
        normalization = view_normalization(config)
        for cfg, label in zip(config.train.models, labels, strict=True):
            peer = Peer.from_config(cfg, config.dataset.image_size, label, normalization)
            peers.append(peer)
            optimizers.append(build_optimizer(peer.optimised_parameters(), cfg.optimizer) if cfg.trainable else None)
            schedules.append(lr_schedule(cfg.schedule, cfg.optimizer.lr, total, steps_per_epoch))
            peer.objective.set_total_steps(total, steps_per_epoch)  # per-step schedules of the objective (EMA momentum)
        return cls(peers, optimizers, schedules)

    def __len__(self) -> int:
        return len(self.peers)

    def set_lr(self, step: int) -> list[float]:
        """This step's learning rates (returned) and the objectives' per-step values (EMA momentum)."""
        for peer in self.peers:
            peer.objective.set_step(step)
        rates = []
        # strict=False: a Cohort built without schedules sets no rates.
        for optimizer, schedule in zip(self.optimizers, self.schedules, strict=False):
            lr = schedule[min(step, len(schedule) - 1)]
            for group in optimizer.param_groups if optimizer is not None else ():
                group["lr"] = lr
            rates.append(lr)
        return rates

    def train(self, mode: bool = True) -> None:
        for peer in self.peers:
            peer.train(mode)

    @property
    def train_modules(self) -> Sequence[nn.Module]:
        """What a training step calls: each peer's DistributedDataParallel wrapper after
        :meth:`distribute` in a distributed run, else the peers themselves."""
        return self.replicas or self.peers

    def distribute(self, device: torch.device, sync_batchnorm: str = "auto") -> Cohort:
        """Prepare every peer for data-parallel training (a no-op without a process group).

        ``sync_batchnorm``: ``"auto"`` synchronises the BatchNorm of the heads (the objective:
        SimCLR's "global BN", Chen et al. 2020, which keeps the contrastive task from exploiting
        per-device statistics; SimSiam's heads likewise), ``"on"`` every BatchNorm including the
        backbone's (a run on N ranks then computes what one process computes on the global
        batch), ``"off"`` none. Each peer is then wrapped in ``DistributedDataParallel``; the
        peers themselves (and their optimisers, state dicts and checkpoints) are unchanged.
        """
        if not dist.is_distributed():
            return self
        for peer in self.peers:
            if sync_batchnorm == "on":
                dist.convert_sync_batchnorm(peer, device)
            elif sync_batchnorm == "auto":
                dist.convert_sync_batchnorm(peer.objective, device)
        # A frozen peer has no gradient to reduce: it runs as it is on every rank.
        self.replicas = [dist.data_parallel(peer, device) if peer.trainable else peer for peer in self.peers]
        return self

    def to(self, device: torch.device, channels_last: bool = False) -> Cohort:
        for peer in self.peers:
            peer.to(device)
            if channels_last:
                peer.encoder.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch stubs lack Module.to(memory_format=)
        return self


def load_trained_peers(run_dir: str | Path, checkpoint: str = "last") -> tuple[RunConfig, list[Peer], Path]:
    """The run's config and its peers with the checkpoint's weights (on the CPU, eval mode)."""
    from dogo.guards.verified import Damaged, check_weights

    path = checkpoint_path(run_dir, checkpoint)
    state = load_checkpoint(path)
    config = recorded_config(state["config"], str(path))
    labels = peer_labels(config.train.models)
    saved = state.get("peers")
    fix = "the file is not what its config says (damaged, or edited); use another checkpoint (--checkpoint)"
    if not isinstance(saved, list) or len(saved) != len(labels):
        raise Damaged(
            f"{path}: holds the weights of {len(saved) if isinstance(saved, list) else 'no'} peer(s), its "
            f"config has {len(labels)}; {fix}"
        )
    peers = []
    normalization = view_normalization(config)
    for k, (cfg, label, weights) in enumerate(zip(config.train.models, labels, saved, strict=True)):
        peer = Peer.from_config(cfg, config.dataset.image_size, label, normalization)
        check_weights(peer, weights, f"{path}: peer {k} ({label})", fix)
        peer.load_state_dict(weights)
        peers.append(peer.eval())
    return config, peers, path


def length_dependence(config, steps_per_epoch: int, steps: int) -> list[str]:
    """What makes step N <= ``steps`` of a long run differ from an N-step run: per peer, a schedule
    whose values depend on the run's length. Empty when budgets can be read off one run.

    Compares the learning rates and every objective's per-step schedules
    (:meth:`~dogo.objectives.Objective.step_schedules`) of the run as configured with those of a
    run twice as long, over its first ``steps`` steps.
    """
    total = steps_per_epoch * config.train.epochs
    reasons = []
    for cfg in config.train.models:
        label = cfg.label()
        rates = lr_schedule(cfg.schedule, cfg.optimizer.lr, total, steps_per_epoch)
        longer = lr_schedule(cfg.schedule, cfg.optimizer.lr, 2 * total, steps_per_epoch)
        if any(rates[k] != longer[k] for k in range(min(steps, total))):
            reasons.append(f"{label}: the learning-rate schedule ({cfg.schedule.name}) spans the run's length")
        objective = Peer.from_config(cfg, config.dataset.image_size, label).objective
        objective.set_total_steps(total, steps_per_epoch)
        short = objective.step_schedules()
        objective.set_total_steps(2 * total, steps_per_epoch)
        for name, values in objective.step_schedules().items():
            if list(values[:steps]) != list(short[name][:steps]):
                reasons.append(f"{label}: {cfg.objective}'s {name} schedule spans the run's length")
    return reasons
