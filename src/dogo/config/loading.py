"""Reading a config: strict YAML, dotted ``key=value`` overrides, and validation errors as one line
that names the key (and the nearest valid one)."""

from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from dogo.config.run import RunConfig
from dogo.core.errors import ConfigError


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with the safe loader; errors name the file."""
    from dogo.guards.inputs import reading

    path = Path(path)
    reading(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such config file; give the path of a YAML config, or a packaged one's name (`dogo configs`)"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8); give a YAML config") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    data = parse_yaml(text, str(path))
    if data is None or not text.strip():
        raise ConfigError(f"{path}: the file is empty; a config needs at least train.models (see configs/)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping of keys, got {type(data).__name__}")
    return data


def parse_yaml(text: str, source: str) -> Any:
    """YAML text -> data with :class:`dogo.config.strict_yaml.StrictLoader`; errors name ``source``."""
    from dogo.config.strict_yaml import StrictLoader, check_size

    try:
        data = yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}:{where} is not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    check_size(data, source)
    return data


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'train.models.0.lr=1e-3'`` -> (['train', 'models', '0', 'lr'], 0.001)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected key=value, e.g. train.epochs=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        if raw.strip()[:1] in ("[", "{"):  # meant as a YAML list or mapping: say so rather than take the text
            problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
            raise ConfigError(
                f"override {text!r}: {raw.strip()!r} is not valid YAML ({problem}); close its "
                "brackets, or quote it to mean the text"
            ) from None
        value = raw
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads '1e-3' as a string; a number is meant
    return key.strip().split("."), value


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    """Set a dotted path inside nested dicts/lists, creating missing mappings."""
    node: Any = data
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        dotted = ".".join(path[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) > len(node):
                raise ConfigError(
                    f"override {'.'.join(path)}: {dotted} is not an index of a list of {len(node)} "
                    f"(use 0..{len(node) - 1}, or {len(node)} to append an entry)"
                )
            if int(part) == len(node):  # one past the end appends: train.models.1=... adds a peer
                node.append(value if last else {})
                node = node[-1]
                continue
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise ConfigError(
                f"override {'.'.join(path)}: {'.'.join(path[:depth])} is a value, not a section; "
                f"set {'.'.join(path[:depth])} itself, or check the key"
            )


def valid_keys(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    """Every dotted key of the schema (list items as ``.0``), for 'did you mean' hints."""
    keys = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        for candidate in (annotation, *args):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                keys += valid_keys(candidate, dotted + ".")
            inner = getattr(candidate, "__args__", ())
            for item in inner:
                if isinstance(item, type) and issubclass(item, BaseModel):
                    keys += valid_keys(item, dotted + ".0.")
    return keys


def _explain(error: ValidationError, source: str) -> ConfigError:
    """Turn pydantic's report into one line naming the key, the value and what is allowed."""
    first = error.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    kind = first["type"]
    if kind == "extra_forbidden":
        generic = [k.replace(".0.", ".N.") for k in valid_keys()]
        wanted = ".".join("N" if p.isdigit() else p for p in key.split("."))
        close = difflib.get_close_matches(wanted, generic, n=1, cutoff=0.6)
        if not close:  # compare the last part only, within the same section
            section = wanted.rpartition(".")[0]
            siblings = [k for k in generic if k.rpartition(".")[0] == section]
            leaf = difflib.get_close_matches(wanted, siblings, n=1, cutoff=0.0)
            close = leaf
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return ConfigError(f"{source}: unknown key {key!r}{hint}")
    message = first["msg"].removeprefix("Value error, ")
    value = first.get("input")
    shown = "" if isinstance(value, (dict, list)) else f" (got {value!r})"
    where = f"{key}: " if key else ""
    return ConfigError(f"{source}: {where}{message}{shown}")


def build_config(data: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a plain dict into a RunConfig; errors become one-line ConfigErrors."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc, source) from None


def load_config(path: str | Path | None, overrides: Sequence[str] = (), *, warn=warnings.warn) -> RunConfig:
    """Load a dogo (or reference) YAML file, apply ``key=value`` overrides, validate.

    Reference-schema files are translated by :func:`dogo.config.reference.from_reference`; the
    keys the reference itself ignores produce one warning through ``warn``.
    """
    from dogo.config.reference import from_reference, reference_marker, schema_note

    data: dict[str, Any] = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "config"
    marker = reference_marker(data)
    if marker is not None:
        try:
            data, notes = from_reference(data, source)
        except ConfigError as exc:  # name the key that chose the schema: it may be a typo in a dogo config
            raise ConfigError(f"{exc} ({schema_note(marker)})") from None
        if notes:
            warn(f"{source}: " + "; ".join(notes))
    if path is not None and "name" not in data:
        data["name"] = Path(path).stem
    if overrides:
        # Overrides apply on top of the validated file, defaults filled in (so train.models.0 exists).
        data = build_config(data, source).dump()
        for text in overrides:
            apply_override(data, *parse_override(text))
    return build_config(data, source)
