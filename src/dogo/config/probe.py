"""The settings every evaluation protocol shares, and the linear probe's.

:class:`ProbeSettings` is also the run config's ``eval.linear`` block (checked when the config is
read, not when ``dogo evaluate`` runs after hours of training), so it lives here, below both the
config (:mod:`dogo.config.run`) and the protocols (:mod:`dogo.evaluate`), which build on it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ProbeSettings", "ProtocolSettings"]


class ProtocolSettings(BaseModel):
    """Settings every protocol has. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    feature_batch_size: int = Field(
        default=512, ge=1, le=65536, description="images per forward pass when extracting features"
    )


class ProbeSettings(ProtocolSettings):
    """How the linear head is trained; shared by linear, fewshot, noisy, transfer and shift."""

    solver: Literal["adam", "sgd", "lbfgs"] = Field(
        default="adam", description="adam (reference), sgd (momentum) or lbfgs (scikit-learn)"
    )
    epochs: int = Field(default=100, ge=1, le=100_000, description="epochs over the probe's train part")
    batch_size: int = Field(default=64, ge=1, le=1_000_000, description="features per step")
    lr: float = Field(default=3e-4, gt=0, le=100, description="learning rate (adam/sgd)")
    weight_decay: float = Field(default=1e-6, ge=0, le=1, description="L2 weight decay (adam/sgd)")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD momentum (sgd only)")
    schedule: Literal["constant", "cosine"] = Field(
        default="constant", description="learning rate: constant, or cosine to 0 over the epochs"
    )
    val_fraction: float = Field(
        default=0.15, ge=0, lt=1, description="share of the labelled train set held out to pick the epoch"
    )
    standardize: bool = Field(
        default=False, description="standardise features with train-part mean/std (lbfgs always does)"
    )
    C: float = Field(default=1.0, gt=0, description="inverse L2 strength (lbfgs only)")
    max_iter: int = Field(default=1000, ge=1, le=1_000_000, description="L-BFGS iterations (lbfgs only)")
    seed: int = Field(default=0, ge=0, description="seeds the split, the initialisation and the shuffles")
