"""The ``train`` and ``distill`` sections: the cohort's peers (objective, backbone, optimiser, schedule),
how they train, and the distillation between them."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from dogo.config.base import MAX_COUNT, Schema


class OptimizerConfig(Schema):
    name: Literal["adam", "adamw", "sgd", "lars"] = "adam"
    lr: float = Field(default=3e-4, gt=0, le=10)
    weight_decay: float = Field(default=1e-6, ge=0, le=1)
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD and LARS only")

    @field_validator("name", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class ScheduleConfig(Schema):
    name: Literal["constant", "cosine", "reference-cosine"] = Field(
        default="constant",
        description="per-step learning-rate schedule. cosine: one half-cosine from lr to min_lr over "
        "the run; reference-cosine: the reference's CosineAnnealingLR(T_max=epochs, eta_min=min_lr) stepped once "
        "per batch, a cosine between lr and min_lr with a period of 2 x t_max steps",
    )
    warmup_epochs: float = Field(default=0.0, ge=0, le=MAX_COUNT, description="linear warm-up from 0, in epochs")
    min_lr: float = Field(default=0.0, ge=0, description="final learning rate of cosine; eta_min of reference-cosine")
    t_max: int | None = Field(
        default=None,
        ge=1,
        le=MAX_COUNT,
        description="reference-cosine: T_max in steps (default: the number of epochs, as the reference)",
    )


class PeerConfig(Schema):
    name: str | None = Field(
        default=None,
        description="label in logs, metrics.jsonl keys (peer/<name>/loss) and reports, "
        "and for --peer (default: <backbone>[x<width>]-<objective>); no '/', not a number, not 'all'",
    )
    objective: str = Field(
        default="simclr", description="SSL objective: simclr | simsiam | byol | moco | barlow_twins | vicreg"
    )
    backbone: str = Field(default="resnet18", description="backbone registry name")
    width: float = Field(default=1.0, gt=0, le=8, description="channel width multiplier")
    backbone_options: dict[str, Any] = Field(
        default_factory=dict,
        description="the backbone's own settings, checked when the config is read: "
        "vit_tiny / vit_small {patch_size: 4 below 64 px, 8 below 224, 16 from 224; pool: cls | mean}; CNNs: none",
    )
    n_proj: int | None = Field(
        default=None,
        ge=1,
        le=65536,
        description="output size of the head; unset: the method's "
        "own default (simclr 128, simsiam 2048, dino 65536 prototypes: docs/methods.md)",
    )
    temperature: float | None = Field(
        default=None,
        gt=0,
        description="the method's temperature; unset: its own default "
        "(simclr 0.5, moco 0.2, dino's student 0.1); ignored by methods without one",
    )
    objective_options: dict[str, Any] = Field(
        default_factory=dict,
        description="the objective's own settings, checked against it when the config is "
        "read: simclr {hidden: 512, gather: true}; simsiam {projector_layers: 3, pred_hidden: 512} (docs/methods.md)",
    )
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    ssl_weight: float = Field(default=1.0, ge=0, description="weight of this peer's own SSL loss")
    distill_weight: float = Field(default=1.0, ge=0, description="lambda: weight of this peer's KL term")
    trainable: bool = Field(
        default=True,
        description="false: a frozen peer (no optimiser, no gradient, BatchNorm in eval mode) that "
        "still teaches the others through the KL term",
    )
    init_from: str | None = Field(
        default=None,
        description="RUN_DIR[#peer]: start from that run's trained peer (last checkpoint; peer by name or "
        "index, default 0); with trainable: false, offline distillation from it",
    )

    @field_validator("name")
    @classmethod
    def _peer_name(cls, value: str | None) -> str | None:
        # A name keys metrics.jsonl (peer/<name>/...) and is accepted by --peer next to indices.
        if value is not None and ("/" in value or value.isdigit() or value in ("", "all")):
            raise ValueError(
                f"a peer name has no '/' and is neither a number nor 'all' (got {value!r}): it keys "
                "metrics.jsonl and --peer, which also take indices"
            )
        return value

    def label(self) -> str:
        if self.name:
            return self.name
        width = "" if self.width == 1 else f"x{self.width:g}"
        return f"{self.backbone}{width}-{self.objective}"


class DistillConfig(Schema):
    temperature: float = Field(default=0.1, gt=0, description="tau of the cross-view similarity softmax")
    reduction: Literal["official", "batchmean"] = Field(
        default="official", description="official: sum over the NxN entries / N^2 (the reference); batchmean: / N"
    )
    views: Literal["independent", "shared"] = Field(
        default="independent", description="independent: each peer draws its own two views (the reference)"
    )


class TrainConfig(Schema):
    epochs: int = Field(default=10, ge=1, le=MAX_COUNT)
    batch_size: int = Field(default=256, ge=2, le=MAX_COUNT)
    models: list[PeerConfig] = Field(default_factory=lambda: [PeerConfig()], min_length=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto",
        description="auto: bf16 autocast where the device runs it fast (measured), else fp32 on CPU and "
        "fp16 (with a GradScaler per peer) on CUDA; fp16 is for CUDA GPUs without bf16 and refused on CPU",
    )
    channels_last: Literal["auto", "on", "off"] = "auto"
    compile: bool = Field(default=False, description="torch.compile the backbones")
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    num_threads: int | None = Field(default=None, ge=1, le=4096, description="torch CPU threads (default: all cores)")
    allocator: Literal["auto", "retain", "system"] = Field(
        default="auto",
        description="retain: keep freed memory for the next step instead of returning it to the OS "
        "(glibc; no page faults per step); system: libc's defaults; auto: retain for CPU training on Linux",
    )
    concurrent_peers: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="on: run the peers' forward and backward side by side, a thread and a share of the "
        "cores each (CPU, one process, no compile; not bit-reproducible run to run); auto and off: one peer "
        "after another",
    )
    max_steps: int | None = Field(
        default=None, ge=1, le=MAX_COUNT, description="stop after this many steps (smoke runs)"
    )
    keep_at: list[int] = Field(
        default_factory=list,
        description="steps at which every peer's weights are kept in checkpoints/step-N.pt "
        "(0: the initialisation); `dogo evaluate/export/embed --at N` use one. With a schedule that does not "
        "depend on the run's length (constant learning rate, no cosine momentum), step N of a long run is the "
        "state of an N-step run",
    )
    nonfinite: Literal["stop", "skip"] = Field(
        default="stop", description="on a non-finite loss: stop or skip the step"
    )
    sync_batchnorm: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="distributed runs only: BatchNorm statistics over the global batch. auto: in the heads "
        "(SimCLR's global BN; SimSiam's heads too); on: every BN layer, backbones included (the same "
        "numbers as one process with the global batch); off: per-rank statistics",
    )
    dist_backend: Literal["auto", "gloo", "nccl"] = Field(
        default="auto", description="torch.distributed backend under torchrun: auto = nccl on CUDA, gloo on CPU"
    )

    @field_validator("keep_at")
    @classmethod
    def _keep_at(cls, value: list[int]) -> list[int]:
        if any(step < 0 for step in value) or len(set(value)) != len(value):
            raise ValueError(f"keep_at lists distinct steps >= 0 (got {value})")
        return sorted(value)

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        # Only the devices dogo trains on; whether one exists here is checked by
        # dogo.core.runtime.resolve_device before any work starts.
        if not re.fullmatch(r"auto|cpu|cuda(:\d{1,3})?", value):
            raise ValueError("unknown device; use auto, cpu, cuda or cuda:N")
        return value

    @field_validator("channels_last", "sync_batchnorm", "concurrent_peers", mode="before")
    @classmethod
    def _bool_to_choice(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return "on" if value else "off"
        return value


def peer_labels(models: list[PeerConfig] | list[dict[str, Any]]) -> list[str]:
    """Every peer's label (its name, else backbone x width - objective), repeats numbered: ['a#0', 'a#1']."""
    labels = []
    for model in models:
        peer = (
            model
            if isinstance(model, PeerConfig)
            else PeerConfig.model_construct(**{k: v for k, v in model.items() if k in PeerConfig.model_fields})
        )
        labels.append(PeerConfig.label(peer))
    return [f"{label}#{i}" if labels.count(label) > 1 else label for i, label in enumerate(labels)]
