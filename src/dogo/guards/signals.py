"""Signals at any moment (class 8): Ctrl-C, once or twice, from the first line of dogo's code to the last.

While a command starts up (its modules, torch among them, are being imported and its arguments
parsed) an interrupt cannot be handled by unwinding: a module half imported, or a second Ctrl-C
inside the handler of the first, ends in a traceback or worse. So during start-up SIGINT ends the
process at once (:func:`starting`): one line, ``dogo COMMAND: interrupted``, exit status 130,
nothing left to unwind. Once the command runs (:func:`started`), Ctrl-C is Python's
``KeyboardInterrupt`` again: training stops after the step in flight and saves a checkpoint, and
the CLI's outer handler says the same one line; a second Ctrl-C while that line is said exits at
once, quietly (:func:`interrupted`), and the interrupted process ends at once
(:func:`end_interrupted`) rather than through the interpreter's shutdown. Every handler is
restored when :func:`dogo.cli.main` returns, so a
program that calls it keeps its own; dogo's own process ignores SIGINT while the interpreter shuts
down (Python resets its handlers then, which would end it by the signal instead of with 130).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["console_script_starting", "end_interrupted", "interrupted", "restore", "started", "starting"]

_command = ""


def _line() -> bytes:
    return (f"dogo {_command}: interrupted\n" if _command else "dogo: interrupted\n").encode()


def _exit_now(signum: int, frame: Any) -> None:
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 talks
        with contextlib.suppress(OSError):
            os.write(2, _line())
    os._exit(128 + signum)


def _exit_quietly(signum: int, frame: Any) -> None:
    os._exit(128 + signum)  # the interrupt was reported already


def _set(handler: Callable[..., Any] | int) -> Callable[..., Any] | int | None:
    try:
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN and handler is not signal.SIG_IGN:
            return None  # started with SIGINT ignored (a background job of a script): it stays ignored, as Python does
        return signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: signals are the main thread's
        return None


def starting(argv: list[str]) -> Callable[..., Any] | int | None:
    """From now until :func:`started`, Ctrl-C exits at once (one line, 130); returns the handler it replaced."""
    global _command
    _command = next((a for a in argv if not a.startswith("-")), "")
    return _set(_exit_now)


def started() -> None:
    """The command runs: Ctrl-C raises KeyboardInterrupt (training's own handler, the CLI's outer one)."""
    _set(signal.default_int_handler)


def interrupted() -> None:
    """The first interrupt is being reported: a second one exits at once (quietly) instead of interrupting that."""
    _set(_exit_quietly)


def end_interrupted(previous: Callable[..., Any] | int | None, status: int) -> None:
    """In dogo's own process (``previous`` is :func:`starting`'s handler), end now with ``status``: the interpreter's
    shutdown resets signal handlers, and a second Ctrl-C landing then would end the process by the signal
    (-2) instead of with 130. Elsewhere (a program calling :func:`dogo.cli.main`) return as usual."""
    if previous is not _exit_now:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


def restore(previous: Callable[..., Any] | int | None) -> None:
    """Put back the handler :func:`starting` replaced. In dogo's own process (``python -m dogo``, the ``dogo``
    script) the command is over and the interpreter shuts down: Ctrl-C is ignored from here, since Python
    resets its handlers to the system's default (death by SIGINT, not 130) while it finalises."""
    if previous is _exit_now:
        _set(signal.SIG_IGN)
    elif previous is not None:
        _set(previous)


def console_script_starting() -> None:
    """In the ``dogo`` console script's process only, cover the import of the CLI itself."""
    if (
        sys.argv
        and os.path.basename(sys.argv[0]) == "dogo"
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ):
        starting(sys.argv[1:])
