"""Transfer: an encoder pretrained on dataset A, its linear probe trained and scored on dataset B.

The caller loads B's train and test splits (``settings.dataset``, ``settings.root``) and passes
them as ``train`` / ``test``; ``eval_transform`` resizes B's images to the encoder's image size
and repeats greyscale to three channels, so sizes and channel counts may differ from A's.
The result's ``variant`` is B's name, so each target dataset gets its own result file.
"""

from __future__ import annotations

from pydantic import Field

from dogo.evaluate.inputs import ProtocolInput, protocol
from dogo.evaluate.linear import run as linear_run
from dogo.evaluate.probe import ProbeSettings

__all__ = ["TransferSettings", "run"]


class TransferSettings(ProbeSettings):
    """Settings of the ``transfer`` protocol: the target dataset, and the probe's settings."""

    dataset: str = Field(..., min_length=1, description="target dataset B (registry name)")
    root: str | None = Field(default=None, description="where B is stored (default: the usual places)")
    limit: int | None = Field(default=None, ge=1, description="use only the first N images of each of B's splits")


@protocol("transfer", TransferSettings)
def run(data: ProtocolInput, settings: TransferSettings) -> dict:
    """The linear protocol on B's splits, reported as ``transfer <B>``."""
    # the linear body without the registry wrapper; functools.update_wrapper sets __wrapped__ at run time
    result = linear_run.__wrapped__(data, settings)  # type: ignore[attr-defined]  # not declared on Callable
    top1 = result["test_top1"]
    result.update(
        protocol="transfer",
        variant=settings.dataset,
        summary={f"transfer {settings.dataset}": top1},
    )
    return result
