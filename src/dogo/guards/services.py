"""Outside services (class 7): a tracker reached within a timeout, or not used, as the config says.

Every call dogo makes to a service it does not run (MLflow today; any future tracker) goes through
:class:`Service`: the call runs with a deadline (``timeout_s``); what it raises, whatever its type
(an MLflow error, a file error of a local store, a driver that is not installed), and a call that
does not answer in time, become one line naming the service and where it is. Then ``on_error``
decides: ``stop`` (the default) raises :class:`ServiceError`, before any training when it is the
first call; ``continue`` warns once and goes on without the service (every later call is skipped).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from dogo.core.errors import DogoError

__all__ = ["Service", "ServiceError"]

T = TypeVar("T")


class ServiceError(DogoError):
    """An outside service that failed or did not answer, with ``on_error: stop``."""


_DATABASE_ERROR = re.compile(r"\(\w+(\.\w+)*\.(Operational|Integrity|Database|Programming)Error\) ")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:  # a local store's folder: its path and the reason
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # a database's own error under MLflow's and SQLAlchemy's wording: "(sqlite3.OperationalError) database or
    # disk is full" rather than "(raised as a result of Query-invoked autoflush; ...)"
    wording = ("(raised as a result of", "[SQL:", "[parameters:", "(Background on this error")
    text = next((line for line in lines if not line.startswith(wording)), "")
    text = next((line for line in lines if _DATABASE_ERROR.match(line)), text)
    text = text if len(text) <= 240 else text[:237] + "..."
    if text and (isinstance(exc, DogoError) or type(exc).__module__.startswith("mlflow")):
        return text  # already worded for the user
    return f"{type(exc).__name__}: {text}".rstrip(": ")


class Service:
    """One outside service: its name for messages, the deadline of a call, and what a failure does."""

    def __init__(
        self, name: str, *, timeout_s: float, on_error: str, warn: Callable[[str], None], setting: str
    ) -> None:
        self.name, self.timeout_s, self.on_error, self.warn, self.setting = name, timeout_s, on_error, warn, setting
        self.off = False  # failed once with on_error: continue

    def call(self, what: str, function: Callable[[], T]) -> T | None:
        """``function()`` within the deadline; None when the service is off (or just failed, going on)."""
        if self.off:
            return None
        result: list[Any] = []
        error: list[BaseException] = []

        def run() -> None:
            try:
                result.append(function())
            except BaseException as exc:
                error.append(exc)

        worker = threading.Thread(target=run, name=f"dogo {self.name}", daemon=True)
        worker.start()
        worker.join(self.timeout_s)
        if worker.is_alive():
            problem = f"no answer within {self.timeout_s:g} s ({what})"
        elif error:
            problem = _describe(error[0])
        else:
            return result[0]
        if self.on_error == "continue":
            self.off = True
            self.warn(f"{self.name}: {problem}; going on without it ({self.setting}.on_error: continue)")
            return None
        raise ServiceError(
            f"{self.name}: {problem}; fix it, or set {self.setting}.on_error=continue to go on without it"
        )
