"""Fine-tuning the whole network (encoder + linear head) on a labelled subset.

Kept simple, for small models and label sets: a copy of the encoder (the caller's stays as it
was) under a linear head initialised from the fitted linear probe (LP-FT: Kumar et al., "Fine-
tuning can distort pretrained features", ICLR 2022), SGD with momentum 0.9 and a per-step
cosine schedule to 0, ``eval_transform`` inputs (no augmentation), BatchNorm in train mode, the
last epoch's weights. Scored on the full test set.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn

from dogo.evaluate.base import generator
from dogo.evaluate.features import extract_features
from dogo.evaluate.probe import LinearProbe, accuracy
from dogo.views import eval_transform

if TYPE_CHECKING:
    from dogo.data import ImageDataset

__all__ = ["FinetuneSettings", "finetune", "finetune_accuracy"]


class FinetuneSettings(BaseModel):
    """Optional fine-tuning; mixed into the fewshot and noisy settings."""

    finetune: bool = Field(default=False, description="also fine-tune encoder + head (slow on CPU)")
    finetune_epochs: int = Field(default=20, ge=1, le=10_000, description="fine-tuning epochs")
    finetune_lr: float = Field(default=0.01, gt=0, le=10, description="SGD learning rate (cosine to 0)")
    finetune_weight_decay: float = Field(default=0.0, ge=0, le=1, description="SGD weight decay")
    finetune_batch_size: int = Field(default=64, ge=2, le=65536, description="images per step")


def finetune(
    encoder: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    probe: LinearProbe,
    settings: FinetuneSettings,
    *,
    image_size: int,
    device: str | torch.device = "cpu",
    seed: int = 0,
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> nn.Module:
    """A classifier ``Sequential(copy of encoder, Flatten, Linear)`` fine-tuned on (images, labels).

    ``images`` uint8 N x C x H x W, ``labels`` int64 N; ``probe`` initialises the head (its
    standardisation folded into the weights).
    """
    weight = probe.weight / probe.scale
    head = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(probe.bias.clamp_min(-1e4) - weight @ probe.mean)
    model = nn.Sequential(copy.deepcopy(encoder), nn.Flatten(1), head).to(device)
    model.train()
    opt = torch.optim.SGD(
        model.parameters(),
        lr=settings.finetune_lr,
        momentum=0.9,
        weight_decay=settings.finetune_weight_decay,
    )
    g = generator(seed, "finetune")
    bs = settings.finetune_batch_size
    n = len(labels)
    steps_per_epoch = max(1, n // bs if n % bs < 2 else n // bs + 1)
    total = settings.finetune_epochs * steps_per_epoch
    step = 0
    for _ in range(settings.finetune_epochs):
        perm = torch.randperm(n, generator=g)
        for start in range(0, n, bs):
            idx = perm[start : start + bs]
            if len(idx) < 2:  # BatchNorm cannot train on a single image
                continue
            for group in opt.param_groups:
                group["lr"] = 0.5 * settings.finetune_lr * (1 + math.cos(math.pi * step / total))
            x = eval_transform(images[idx].to(device), image_size, normalization=normalization)
            loss = F.cross_entropy(model(x), labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    model.eval()
    return model


def finetune_accuracy(
    model: nn.Module,
    test: ImageDataset,
    *,
    image_size: int,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> float:
    """Top-1 accuracy in percent of a classifier on every image of ``test``."""
    logits, labels = extract_features(model, test, image_size, batch_size, device, normalization)
    assert labels is not None  # the evaluation protocols pass a labelled test split
    return accuracy(logits, labels)
