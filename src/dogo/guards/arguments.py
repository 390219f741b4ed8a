"""Arguments typed at the door (class 5): every command-line value checked by the config schema's own code.

- :class:`Parser` is the CLI's argparse parser: a value argparse refuses (a missing argument, two
  options that exclude each other, a number that is not one) is one line, ``dogo CMD: error:
  ...``, exit status 2, instead of the usage text and the error.
- The ``type=`` of every number, device and inline YAML value of every command is one of the
  functions here: :func:`schema_field` validates a value as a field of the config schema
  (``--image-size`` is ``dataset.image_size``: the same pydantic field, ranges and validators);
  :func:`count` is a pydantic-checked integer in a range (bounded by :data:`MAX_COUNT`, the bound of
  the schema's counts too); :func:`device` is ``train.device``'s check and then
  :func:`dogo.core.runtime.resolve_device`'s (a CUDA device that exists here); :func:`setting` is a
  ``KEY=VALUE`` whose value is YAML that parses (:func:`dogo.config.parse_override`, as for
  ``dogo pretrain``'s overrides).
- :func:`settings` checks ``KEY=VALUE`` items together when another argument picks their schema
  (``dogo evaluate``'s protocol settings: ``--protocol`` names the settings model): each is a
  :func:`setting`, then the model's own code takes them all. Argparse's ``type=`` sees one value
  and not the others, so the command names the check as its ``door`` (``set_defaults(door=...)``)
  and :func:`check_door` runs it once parsing is over, before the command reads anything.

The schema's own pieces (a config model, ``parse_override``) are passed in by the commands: guards
sit below the config package, which checks its files with them (:mod:`dogo.guards.inputs`).

Refused values never reach the command: a bad ``--batch-size`` of ``dogo embed`` costs nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from pydantic import BaseModel  # imported where used at run time: startup stays light

__all__ = ["MAX_COUNT", "Parser", "check_door", "count", "device", "schema_field", "setting", "settings"]

#: Upper bound of counts (epochs, steps, batch size), in the config schema and on the command line: large
#: enough for any real run, small enough that arithmetic on it stays exact and nothing tries to
#: precompute a billion of anything.
MAX_COUNT = 10_000_000


class Parser(argparse.ArgumentParser):
    """argparse with one-line refusals (``dogo export: error: argument --at: ...; see dogo export --help``)."""

    def error(self, message: str) -> NoReturn:
        text = " ".join(message.split())
        try:
            from dogo.core import dist

            talk = dist.launched_rank() == 0
        except Exception:
            talk = True
        if talk:
            print(f"{self.prog}: error: {text}; see `{self.prog} --help`", file=sys.stderr)
        sys.exit(2)


def _refuse(text: str, reason: str) -> NoReturn:
    raise argparse.ArgumentTypeError(f"{text!r}: {reason}")


def schema_field(model: type[BaseModel], field: str) -> Callable[[str], Any]:
    """A ``type=`` that validates a value as ``model.field`` of the config schema (its type, range and validators)."""

    def check(text: str) -> Any:
        from pydantic import ValidationError

        target = model.model_construct()
        try:
            model.__pydantic_validator__.validate_assignment(target, field, text)
        except ValidationError as exc:
            _refuse(text, exc.errors()[0]["msg"].removeprefix("Value error, "))
        return getattr(target, field)

    check.__name__ = field  # argparse names the type in some messages
    return check


def count(minimum: int = 0, maximum: int | None = None) -> Callable[[str], int]:
    """A ``type=`` for an integer from ``minimum`` to ``maximum`` (default: the schema's ``MAX_COUNT``)."""

    def check(text: str) -> int:
        from typing import Annotated

        from pydantic import Field, TypeAdapter, ValidationError

        top = MAX_COUNT if maximum is None else maximum
        try:
            return TypeAdapter(Annotated[int, Field(ge=minimum, le=top)]).validate_python(text)
        except ValidationError as exc:
            _refuse(text, exc.errors()[0]["msg"])

    check.__name__ = "integer"
    return check


def device(model: type[BaseModel], field: str = "device") -> Callable[[str], str]:
    """A ``type=`` for a device: ``model.field``'s values (``TrainConfig``: ``train.device``), and one that
    exists on this machine."""

    def check(text: str) -> str:
        from dogo.core.errors import ConfigError

        value = schema_field(model, field)(text)
        try:
            from dogo.core.runtime import resolve_device

            resolve_device(value)
        except ConfigError as exc:
            _refuse(text, str(exc).split(": ", 1)[-1].replace("train.device=", "--device "))
        return value

    check.__name__ = "device"
    return check


def setting(parse: Callable[[str], tuple[list[str], Any]]) -> Callable[[str], tuple[str, Any]]:
    """A ``type=`` for ``KEY=VALUE`` with a YAML value that ``parse`` accepts (:func:`dogo.config.parse_override`,
    as for ``dogo pretrain``'s overrides)."""

    def check(text: str) -> tuple[str, Any]:
        from dogo.core.errors import ConfigError

        try:
            keys, value = parse(text)
        except ConfigError as exc:
            _refuse(text, str(exc).split(": ", 1)[-1])
        return ".".join(keys), value

    check.__name__ = "setting"
    return check


def settings(
    parse: Callable[[str], tuple[list[str], Any]],
    validate: Callable[[dict[str, Any]], Any],
    name: str = "key=value",
) -> Callable[[Sequence[str]], Any]:
    """A check of ``KEY=VALUE`` items taken together: each a :func:`setting` (YAML that ``parse`` accepts), then
    ``validate`` (a settings model's own code, raising :class:`~dogo.core.errors.ConfigError`) takes them all as
    ``{key: value}``. Returns what ``validate`` returns; a refusal is an ``ArgumentTypeError`` naming ``name``."""
    item = setting(parse)

    def check(texts: Sequence[str]) -> Any:
        from dogo.core.errors import ConfigError

        values: dict[str, Any] = {}
        for text in texts:
            try:
                key, value = item(text)
            except argparse.ArgumentTypeError as exc:
                raise argparse.ArgumentTypeError(f"argument {name}: {exc}") from None
            values[key] = value
        try:
            return validate(values)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(f"argument {name}: {exc}") from None

    return check


def check_door(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Run the command's ``door`` (``set_defaults(door=check)``; ``check(args)`` raises ``ArgumentTypeError``), the
    check of values that depend on each other, once parsing is over; a refusal is ``parser``'s one-line error."""
    door = getattr(args, "door", None)
    if door is None:
        return
    try:
        door(args)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
