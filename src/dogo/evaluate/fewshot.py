"""Limited labels: the linear probe trained on a class-balanced, seeded subset of the labels.

For each label budget (a fraction of every class's images, or a count per class) and each of
``draws`` seeded draws, pick the labelled images class by class, hold a per-class share
(``val_fraction``, rounded down) of them out for epoch selection, train the probe on the rest
and score it on the full test set; report every draw and the mean and sample std over draws.
With ``finetune: true`` the whole network is also fine-tuned on all the picked images
(:mod:`dogo.evaluate.finetune`).

Budgets: ``fraction f`` keeps ``max(1, round(f * n_c))`` images of each class c (so the subset
keeps the train set's class proportions: equal counts on a balanced set); ``per_class k`` keeps
``min(k, n_c)``. Classes with no training images get none.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
from pydantic import Field, model_validator

from dogo.evaluate.base import (
    CommaList,
    add_draws_row,
    derive_seed,
)
from dogo.evaluate.finetune import FinetuneSettings
from dogo.evaluate.inputs import ProtocolInput, protocol
from dogo.evaluate.probe import ProbeSettings

__all__ = ["FewshotSettings", "run", "select_labelled"]


class FewshotSettings(ProbeSettings, FinetuneSettings):
    """Settings of the ``fewshot`` protocol: label budgets, draws, and the probe's settings."""

    fractions: CommaList[Annotated[float, Field(gt=0, le=1)]] = Field(
        default=[0.01, 0.1], description="label budgets as a fraction of each class, e.g. 0.01,0.1"
    )
    per_class: CommaList[Annotated[int, Field(ge=1)]] = Field(
        default=[], description="label budgets as images per class, e.g. 1,10"
    )
    draws: int = Field(default=5, ge=1, le=1000, description="seeded draws per budget (mean +- std)")

    @model_validator(mode="after")
    def _some_budget(self) -> FewshotSettings:
        if not self.fractions and not self.per_class:
            raise ValueError("give at least one label budget in fractions or per_class")
        return self


def select_labelled(
    labels: torch.Tensor,
    num_classes: int,
    *,
    fraction: float | None = None,
    per_class: int | None = None,
    val_fraction: float = 0.0,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices) of a class-balanced labelled subset.

    Give exactly one of ``fraction`` / ``per_class`` (see the module docstring). Of each class's
    ``n`` picked images, ``floor(val_fraction * n)`` go to validation.
    """
    if (fraction is None) == (per_class is None):
        raise ValueError("give exactly one of fraction and per_class")
    train_parts, val_parts = [], []
    for c in range(num_classes):
        members = (labels == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        if len(members) == 0:
            continue
        if fraction is not None:
            n = max(1, round(fraction * len(members)))
        elif per_class is not None:  # always, given exactly one of the two (checked above)
            n = min(per_class, len(members))
        n_val = int(val_fraction * n + 1e-9)
        val_parts.append(members[:n_val])
        train_parts.append(members[n_val:n])
    return torch.cat(train_parts), torch.cat(val_parts)


def budget_label(fraction: float | None, per_class: int | None) -> str:
    return f"{100 * fraction:g}%" if fraction is not None else f"{per_class}/class"


@protocol("fewshot", FewshotSettings)
def run(data: ProtocolInput, settings: FewshotSettings) -> dict:
    """Probe (and optionally fine-tune) on each label budget, ``draws`` times each."""
    _, train_y, _, test_y = data.features(settings)
    classes = data.classes
    budgets = [(f, None) for f in settings.fractions] + [(None, k) for k in settings.per_class]
    rows: list[dict[str, Any]] = []
    summary: dict[str, float] = {}
    for fraction, per_class in budgets:
        draws = []
        for draw in range(settings.draws):
            seed = derive_seed(settings.seed, "fewshot", fraction, per_class, draw)
            tr, va = select_labelled(
                train_y,
                classes,
                fraction=fraction,
                per_class=per_class,
                val_fraction=settings.val_fraction,
                generator=torch.Generator().manual_seed(seed),
            )
            draws.append(data.probe(settings, seed, train_y, tr, va, finetune_idx=torch.cat([tr, va])))
        add_draws_row(
            rows,
            summary,
            f"fewshot {budget_label(fraction, per_class)}",
            draws,
            settings.finetune,
            fraction=fraction,
            per_class=per_class,
            num_labelled=draws[0]["num_train"] + draws[0]["num_val"],
        )
    return data.result(
        "fewshot",
        settings,
        summary=summary,
        num_classes=classes,
        num_train_total=len(train_y),
        num_test=len(test_y),
        results=rows,
    )
