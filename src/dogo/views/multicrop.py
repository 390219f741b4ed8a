"""Views in groups of one size: two views for most methods, multi-crop for DINO.

Multi-crop (Caron et al., SwAV, NeurIPS 2020; DINO, ICCV 2021) trains on a few large ("global")
crops and several small ("local") ones of each image. An objective declares its views as a list of
:class:`ViewGroup`, each a tuple of recipes of one output size; the peer draws every view of every
group, in order, from one generator, and encodes each group as one batch (:func:`encode_groups`).

A two-view method has two groups of one view each (:func:`pair_of_views`): its views are drawn as
they always were and go through the encoder one at a time, so BatchNorm statistics stay per view
and the numbers are those of dogo before multi-crop, bit for bit. DINO has one group of its two
global views and one of its local views: a ResNet then normalises each group over all its views,
as DINO's own code does, and a ViT runs one forward per size.

The first two views are always the global ones: the DoGo similarity KL compares those
(``ObjectiveOutput.student`` and ``.teacher`` hold two views whatever the method draws).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dogo.core.errors import ConfigError
from dogo.views.recipe import ViewRecipe, make_recipe

__all__ = ["ViewGroup", "draw_groups", "encode_groups", "pair_of_views"]


@dataclass(frozen=True)
class ViewGroup:
    """Views of one output size, one recipe each, that a peer encodes as one batch."""

    recipes: tuple[ViewRecipe, ...]

    def __post_init__(self) -> None:
        if not self.recipes:
            raise ConfigError(
                "`ViewGroup(recipes=())`: a view group needs at least one recipe; an objective's "
                "view_groups() returns groups of one or more `ViewRecipe`s"
            )
        sizes = sorted({r.size for r in self.recipes})
        if len(sizes) != 1:
            raise ConfigError(f"the views of a group share one size, got sizes {sizes}")

    @property
    def size(self) -> int:
        return self.recipes[0].size

    def __len__(self) -> int:
        return len(self.recipes)


def pair_of_views(view_recipe: str | tuple[str, ...], image_size: int) -> list[ViewGroup]:
    """A two-view method's groups: one recipe name for both views, or one per view, each view a group of its own."""
    names = (view_recipe, view_recipe) if isinstance(view_recipe, str) else tuple(view_recipe)
    return [ViewGroup((make_recipe(name, image_size),)) for name in names]


def draw_groups(groups: Sequence[ViewGroup], images: Tensor, generator: torch.Generator) -> list[Tensor]:
    """Every view of every group, in order (each recipe draws from ``generator`` in turn)."""
    return [recipe(images, generator) for group in groups for recipe in group.recipes]


def encode_groups(encoder: nn.Module, views: Sequence[Tensor], groups: Sequence[ViewGroup]) -> list[Tensor]:
    """The encoder's features of every view (in order), each group of ``k`` views as one batch of ``k N``.

    Shapes: ``views[i]`` is ``N x 3 x S_g x S_g`` for the group ``g`` it belongs to; returns one
    ``N x feature_dim`` tensor per view.
    """
    if len(views) != sum(len(g) for g in groups):
        raise ValueError(f"{len(views)} views for groups of {[len(g) for g in groups]} views")
    features: list[Tensor] = []
    start = 0
    for group in groups:
        chunk = views[start : start + len(group)]
        start += len(group)
        if len(chunk) == 1:
            features.append(encoder(chunk[0]))
        else:
            features.extend(encoder(torch.cat(list(chunk))).chunk(len(chunk)))
    return features
