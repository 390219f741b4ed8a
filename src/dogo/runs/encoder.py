"""A run's trained encoder on its own: pick a peer (by name or index), load its backbone, preprocess.

Everything that takes the representation elsewhere starts here (``dogo export``, ``dogo embed``,
``dogo.load_encoder``)::

    import dogo

    encoder, preprocess = dogo.load_encoder("runs/quickstart/dogo", peer="student")
    features = encoder(preprocess(images_uint8))  # B x C x H x W uint8 -> B x feature_dim

Only the backbone is built and loaded (``encoder.*`` entries of the peer's weights): no
projection or prediction heads, optimiser state or other peers. ``preprocess`` is exactly the
evaluation-time transform (:func:`dogo.views.eval_transform`: resize, scale to [0, 1],
normalise with the run's statistics, grey repeated to three channels), so features match the
ones every ``dogo evaluate`` protocol scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dogo.config import RunConfig, recorded_config
from dogo.config.normalization import view_normalization
from dogo.core.errors import CheckpointError, ConfigError
from dogo.models import build_backbone
from dogo.runs.checkpoint import checkpoint_id, load_checkpoint
from dogo.views import eval_transform, normalization_for

ENCODER_PREFIX = "encoder."


@dataclass(frozen=True)
class Preprocess:
    """The evaluation-time transform of a run: uint8 ``B x C x H x W`` -> float ``B x 3 x S x S``."""

    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, images: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
        return eval_transform(images, self.image_size, normalization=(self.mean, self.std), device=device)

    def describe(self) -> dict[str, Any]:
        """What another framework needs to reproduce it (the sidecar JSON of an export)."""
        return {
            "input": "float32 B x 3 x S x S (RGB; repeat a grey channel three times)",
            "steps": [
                "resize the shorter side to image_size (bilinear, antialiased)",
                "centre crop image_size x image_size",
                "scale to [0, 1]",
                "subtract mean, divide by std",
            ],
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
        }


@dataclass
class EncoderInfo:
    """Where an encoder came from and what it expects, for sidecars and messages."""

    peer: int
    label: str
    backbone: str
    width: float
    objective: str
    image_size: int
    feature_dim: int
    checkpoint: Path
    checkpoint_sha256: str
    step: int
    epoch: int
    backbone_options: dict[str, Any] = field(default_factory=dict)
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # the run's (mean, std)

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """What the run normalised with: its recorded statistics, else (runs before them) by image size."""
        return self.normalization if self.normalization is not None else normalization_for(self.image_size)

    def as_dict(self) -> dict[str, Any]:
        import dogo

        return {
            "architecture": self.backbone,
            "width": self.width,
            "backbone_options": dict(self.backbone_options),
            "image_size": self.image_size,
            "in_channels": 3,
            "feature_dim": self.feature_dim,
            "normalization": dict(zip(("mean", "std"), map(list, self.mean_std), strict=True)),
            "peer": self.peer,
            "peer_label": self.label,
            "objective": self.objective,
            "source_checkpoint": str(self.checkpoint),
            "source_checkpoint_sha256": self.checkpoint_sha256,
            "step": self.step,
            "epoch": self.epoch,
            "dogo_version": dogo.__version__,
            "torch_version": torch.__version__,
        }


def peer_labels(config: RunConfig) -> list[str]:
    """The peers' labels as the run shows them (``name`` or ``<backbone>[x<width>]-<objective>``)."""
    from dogo.config import peer_labels

    return peer_labels(config.train.models)


def select_peers(peer: str | int, labels: list[str]) -> list[int]:
    """``all`` | an index | a peer's label (``--peer student``) -> peer indices; ConfigError otherwise."""
    text = str(peer)
    if text == "all":
        return list(range(len(labels)))
    if text.isdigit() and int(text) < len(labels):
        return [int(text)]
    if text in labels:
        return [labels.index(text)]
    choices = ", ".join(f"{i} ({label})" for i, label in enumerate(labels))
    raise ConfigError(
        f"--peer {peer}: no such peer; the run has {len(labels)} peer(s): {choices}; give an index, a name or all"
    )


def select_peer(peer: str | int, labels: list[str]) -> int:
    """One peer (index or label); ``all`` is refused."""
    if str(peer) == "all":
        raise ConfigError("--peer all: choose one peer here (an index or a name)")
    return select_peers(peer, labels)[0]


def load_encoder_state(
    run_dir: str | Path, peer: str | int = 0, checkpoint: str = "last"
) -> tuple[dict[str, torch.Tensor], EncoderInfo]:
    """The backbone's state dict (keys without the ``encoder.`` prefix) and its :class:`EncoderInfo`."""
    from dogo.runs.rundir import checkpoint_path

    path = checkpoint_path(run_dir, checkpoint)
    state = load_checkpoint(path)
    config = recorded_config(state["config"], str(path))
    labels = peer_labels(config)
    k = select_peer(peer, labels)
    if not isinstance(state.get("peers"), list) or len(state["peers"]) != len(labels):
        from dogo.guards.verified import Damaged

        raise Damaged(
            f"{path}: holds the weights of a number of peers other than its config's {len(labels)}; the "
            "file is not what its config says; use another checkpoint (--checkpoint)"
        )
    weights = state["peers"][k]
    encoder_state = {
        key[len(ENCODER_PREFIX) :]: value for key, value in weights.items() if key.startswith(ENCODER_PREFIX)
    }
    if not encoder_state:
        raise CheckpointError(f"{path}: peer {k} has no encoder weights; use a checkpoint that dogo pretrain wrote")
    cfg = config.train.models[k]
    info = EncoderInfo(
        peer=k,
        label=labels[k],
        backbone=cfg.backbone,
        width=cfg.width,
        objective=cfg.objective,
        image_size=config.dataset.image_size,
        feature_dim=0,
        checkpoint=path,
        checkpoint_sha256=checkpoint_id(path, full=True),
        step=int(state.get("step", 0)),
        epoch=int(state.get("epoch", 0)),
        backbone_options=dict(cfg.backbone_options),
        normalization=view_normalization(config),
    )
    return encoder_state, info


def build_encoder(info: EncoderInfo) -> nn.Module:
    """A freshly initialised backbone of the architecture ``info`` names."""
    return build_backbone(info.backbone, image_size=info.image_size, width=info.width, **info.backbone_options)


def load_encoder_with_info(
    run_dir: str | Path, peer: str | int = 0, checkpoint: str = "last", device: torch.device | str = "cpu"
) -> tuple[nn.Module, Preprocess, EncoderInfo]:
    """:func:`load_encoder` plus the :class:`EncoderInfo` (for exports and sidecars)."""
    from dogo.guards.verified import check_weights

    encoder_state, info = load_encoder_state(run_dir, peer, checkpoint)
    encoder = build_encoder(info)
    check_weights(
        encoder,
        encoder_state,
        f"{info.checkpoint}: peer {info.peer} ({info.label}) encoder",
        "the file is not what its config says (damaged, or edited); use another checkpoint (--checkpoint)",
    )
    encoder.load_state_dict(encoder_state)
    # every backbone has an int feature_dim, but build_backbone returns a plain nn.Module, whose __getattr__ is typed
    info.feature_dim = int(encoder.feature_dim)  # type: ignore[arg-type]  # Tensor | Module (see the line above)
    mean, std = info.mean_std
    return encoder.to(device).eval(), Preprocess(info.image_size, tuple(mean), tuple(std)), info


def load_encoder(
    run_dir: str | Path, peer: str | int = 0, checkpoint: str = "last", device: torch.device | str = "cpu"
) -> tuple[nn.Module, Preprocess]:
    """A run's trained encoder (``nn.Module`` in eval mode on ``device``) and its preprocessing.

    ``peer``: an index or a peer's name (``"student"``; ``dogo evaluate`` prints the labels).
    ``checkpoint``: ``last``, ``epoch-N`` or a ``.pt`` path. The encoder maps ``preprocess(images)``
    (uint8 ``B x C x H x W``) to ``B x feature_dim`` pooled features.
    """
    encoder, preprocess, _ = load_encoder_with_info(run_dir, peer, checkpoint, device)
    return encoder, preprocess
