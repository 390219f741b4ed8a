"""Vision Transformers for small images: ViT-Tiny and ViT-Small (Dosovitskiy et al., "An Image is
Worth 16x16 Words", ICLR 2021; the Tiny/Small sizes of Touvron et al., "Training data-efficient
image transformers", ICML 2021, as DINO trains them).

============  =====  =====  =====  ===========
name          dim    depth  heads  feature_dim
============  =====  =====  =====  ===========
vit_tiny      192    12     3      192 * width
vit_small     384    12     6      384 * width
============  =====  =====  =====  ===========

The architecture is timm's ``VisionTransformer`` with the classifier removed (``num_classes=0``),
module by module: a patch embedding (a ``P x P`` convolution of stride ``P``, with bias), a class
token, learned position embeddings, ``depth`` pre-norm blocks ``x + Attn(LN(x))``,
``x + MLP(LN(x))`` (qkv with bias, MLP ratio 4 with GELU, LayerNorm eps 1e-6), a final LayerNorm.
Its parameter count equals timm's for the same configuration (``tests/test_vit.py`` counts them).

Options (``train.models[K].backbone_options``, checked when the config is read):

- ``patch_size``: by default chosen from the image size so that a 32- or 64-px image gives an
  8 x 8 grid of patches and a 224-px image timm's 14 x 14: 4 below 64 px, 8 below 224 px, 16
  from 224 px (:func:`default_patch_size`). The image size must be a multiple of it.
- ``pool``: ``cls`` (default) returns the class token after the final LayerNorm (timm's
  ``global_pool="token"``, DINO's feature); ``mean`` has no class token and returns the
  LayerNorm of the mean of the patch tokens (timm's ``class_token=False, global_pool="avg"``,
  whose final norm moves after the pooling: the same parameters less the class token and its
  position).

``width`` scales the embedding dimension, keeping the number of heads (ViT-Tiny at width 0.5:
dim 96, 3 heads of 32); ``feature_dim`` is that dimension, like the CNNs' pooled width. Inputs of
another size than ``image_size`` (DINO's local crops) get their position embeddings resized by
bicubic interpolation of the patch grid, as DINO does; their side must be a multiple of the
patch size too.

Initialisation as DINO's ViT: truncated normal (std 0.02) for the Linear weights, the position
embeddings and the class token; zero biases; LayerNorm weight 1, bias 0; the patch convolution
keeps PyTorch's default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from dogo.core.errors import ConfigError
from dogo.models import BACKBONES, scale_channels

__all__ = ["ViTOptions", "VisionTransformer", "default_patch_size"]


def default_patch_size(image_size: int) -> int:
    """4 below 64 px, 8 below 224 px, 16 from 224 px: an 8 x 8 grid at 32 and 64 px, 14 x 14 at 224."""
    return 4 if image_size < 64 else 8 if image_size < 224 else 16


class ViTOptions(BaseModel):
    """``backbone_options`` of the ViTs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    patch_size: int | None = Field(
        None,
        ge=1,
        le=64,
        description="side of a patch in pixels (default: 4 below 64 px, 8 below 224 px, 16 from 224 px)",
    )
    pool: Literal["cls", "mean"] = Field(
        "cls", description="cls: the class token; mean: the mean of the patch tokens (no class token)"
    )


class Attention(nn.Module):
    """Multi-head self-attention: one qkv projection (with bias), scaled dot product, output projection."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + Attn(LN(x))``, then ``x + MLP(LN(x))`` (MLP: Linear, GELU, Linear)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """A ViT encoder without classifier: ``B x C x H x W -> B x feature_dim``.

    Args:
        image_size: the side the position embeddings are made for (other sides are interpolated).
        dim, depth, heads: embedding dimension, blocks, attention heads (``dim % heads == 0``).
        patch_size: side of a patch; ``image_size`` must be a multiple of it.
        pool: ``"cls"`` (class token) or ``"mean"`` (mean of the patch tokens, no class token).
        in_channels: input channels.
    """

    def __init__(
        self,
        image_size: int,
        dim: int,
        depth: int,
        heads: int,
        patch_size: int,
        pool: str = "cls",
        in_channels: int = 3,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"ViT: dim {dim} is not a multiple of its {heads} heads")
        self.patch_size, self.pool = patch_size, pool
        self.grid = image_size // patch_size
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        self.prefix = 1 if pool == "cls" else 0
        self.pos_embed = nn.Parameter(torch.zeros(1, self.prefix + self.grid**2, dim))
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.feature_dim: int = dim
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def position_embedding(self, rows: int, cols: int) -> torch.Tensor:
        """The position embeddings for a ``rows x cols`` patch grid (bicubic resize of the learned grid)."""
        if rows == self.grid and cols == self.grid:
            return self.pos_embed
        prefix, grid = self.pos_embed[:, : self.prefix], self.pos_embed[:, self.prefix :]
        grid = grid.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", align_corners=False)
        return torch.cat([prefix, grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x C x H x W`` (sides multiples of the patch size) -> ``B x feature_dim``."""
        height, width = x.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"ViT: input of {height} x {width} px is not a multiple of its patch size {self.patch_size}"
            )
        x = self.patch_embed(x)
        rows, cols = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.blocks(x + self.position_embedding(rows, cols))
        if self.cls_token is not None:
            return self.norm(x)[:, 0]
        return self.norm(x.mean(dim=1))


def _factory(dim: int, depth: int, heads: int, name: str) -> Callable[..., VisionTransformer]:
    def build(
        image_size: int = 32, width: float = 1.0, in_channels: int = 3, patch_size: int | None = None, pool: str = "cls"
    ) -> VisionTransformer:
        patch = default_patch_size(image_size) if patch_size is None else patch_size
        if image_size % patch:
            raise ConfigError(
                f"backbone {name!r}: image size {image_size} is not a multiple of the patch size "
                f"{patch}; set backbone_options.patch_size to a divisor of {image_size}"
            )
        return VisionTransformer(
            image_size, scale_channels(dim, width, divisor=heads), depth, heads, patch, pool, in_channels
        )

    build.Options = ViTOptions  # type: ignore[attr-defined]
    return build


vit_tiny = BACKBONES.register("vit_tiny")(_factory(192, 12, 3, "vit_tiny"))
vit_small = BACKBONES.register("vit_small")(_factory(384, 12, 6, "vit_small"))
