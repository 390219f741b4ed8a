"""What every config section shares: unknown keys are errors, and the bound on counts."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from dogo.guards.arguments import MAX_COUNT  # the bound on counts, the same one for command-line arguments

__all__ = ["MAX_COUNT", "Schema"]


class Schema(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    # allow_inf_nan=False: an infinite temperature or warm-up passes every range check (inf > 0)
    # and then trains nothing or overflows an int(); refuse it here, naming the key.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
