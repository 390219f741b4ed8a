"""Heads on top of a backbone's pooled feature: SimCLR's projection head, SimSiam's projector and
predictor, exactly as in the DoGo reference (docs/reference.md §1.2).

The heads return *un-normalised* vectors; the objectives L2-normalise them.

* :class:`SimCLRHead` (Chen et al., "A Simple Framework for Contrastive Learning of Visual
  Representations", ICML 2020): Linear(d, 512, no bias) - BN - ReLU - Linear(512, 128).
* :class:`SimSiamProjector` and :class:`SimSiamPredictor` (Chen & He, "Exploring Simple
  Siamese Representation Learning", CVPR 2021).

Departures from the SimSiam paper, kept because the reference has them: the projector's
Linear layers have biases (the paper's have none, being followed by BN) and its final BN is
affine (the paper's output BN has no learnable scale/shift); the predictor's hidden Linear has
no bias while its output Linear has one. ``layers=3`` is the reference's ``dogo`` branch;
``layers=2`` is its ``main`` branch, where the middle block is commented out.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from dogo.core.errors import ConfigError

__all__ = ["SimCLRHead", "SimSiamPredictor", "SimSiamProjector"]


def _check_dims(owner: str, **dims: int) -> None:
    for key, value in dims.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{owner}: {key} must be a positive integer, got {value!r}")


class SimCLRHead(nn.Sequential):
    """SimCLR projection head g: ``B x in_dim -> B x out_dim``.

    Linear(in_dim, hidden, bias=False) -> BatchNorm1d(hidden) -> ReLU -> Linear(hidden, out_dim).

    Args:
        in_dim: the backbone's ``feature_dim``.
        hidden: hidden width (512 in the reference).
        out_dim: projection size ``n_proj`` (128 in the reference).
    """

    def __init__(self, in_dim: int, hidden: int = 512, out_dim: int = 128) -> None:
        _check_dims("SimCLRHead", in_dim=in_dim, hidden=hidden, out_dim=out_dim)
        super().__init__(
            nn.Linear(in_dim, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, out_dim),
        )
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x in_dim`` features -> ``B x out_dim`` projections z (not normalised)."""
        return super().forward(x)


class SimSiamProjector(nn.Sequential):
    """SimSiam projection MLP: ``B x in_dim -> B x dim``.

    ``layers`` blocks of Linear(., dim) -> BatchNorm1d(dim) -> ReLU, the last without ReLU.
    ``layers=3`` (default, the reference's ``dogo`` branch):
    Linear(in_dim, dim) - BN - ReLU - Linear(dim, dim) - BN - ReLU - Linear(dim, dim) - BN;
    ``layers=2`` (its ``main`` branch): Linear(in_dim, dim) - BN - ReLU - Linear(dim, dim) - BN.
    Linear layers have biases and every BN is affine, as in the reference (module docstring).

    Args:
        in_dim: the backbone's ``feature_dim``.
        dim: width of every layer and of the output (2048).
        layers: number of Linear layers (>= 1).
    """

    def __init__(self, in_dim: int, dim: int = 2048, layers: int = 3) -> None:
        _check_dims("SimSiamProjector", in_dim=in_dim, dim=dim, layers=layers)
        modules: list[nn.Module] = []
        for i in range(layers):
            modules += [nn.Linear(in_dim if i == 0 else dim, dim), nn.BatchNorm1d(dim)]
            if i < layers - 1:
                modules.append(nn.ReLU(inplace=True))
        super().__init__(*modules)
        self.in_dim, self.out_dim, self.layers = in_dim, dim, layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x in_dim`` features -> ``B x dim`` projections z (not normalised)."""
        return super().forward(x)


class SimSiamPredictor(nn.Sequential):
    """SimSiam prediction MLP h: ``B x dim -> B x dim``.

    Linear(dim, hidden, bias=False) -> BatchNorm1d(hidden) -> ReLU -> Linear(hidden, dim).

    Args:
        dim: the projector's output size (2048; the reference's ``n_proj``).
        hidden: bottleneck width (512).
    """

    def __init__(self, dim: int = 2048, hidden: int = 512) -> None:
        _check_dims("SimSiamPredictor", dim=dim, hidden=hidden)
        super().__init__(
            nn.Linear(dim, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, dim),
        )
        self.in_dim = self.out_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x dim`` projections z -> ``B x dim`` predictions p (not normalised)."""
        return super().forward(x)
