"""YAML as dogo reads it: the safe loader, minus the two ways it silently loses or bloats input.

* **Duplicate keys.** PyYAML keeps the last of two equal keys in one mapping, so an edited
  config can silently train with a value the user did not see. :class:`StrictLoader` refuses
  them, naming both lines. Merge keys (``<<: *defaults``) are not duplicates: a key written
  beside a merge overrides the merged value, as YAML intends (study files rely on it).
* **Alias expansion.** Aliases share one node, but a config is validated, dumped to
  ``config.yaml`` and copied into checkpoints, each of which expands them; a few lines of
  nested aliases become gigabytes there. :func:`check_size` counts the expanded values and
  refuses a document of more than :data:`MAX_VALUES`, long before anything is written.
"""

from __future__ import annotations

from typing import Any

import yaml

from dogo.core.errors import ConfigError

#: Scalars + containers a config may hold once aliases are expanded (real configs hold hundreds).
MAX_VALUES = 100_000


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # merged keys may be overridden by the mapping's own keys
                key = self.construct_object(key_node, deep=True)
                try:
                    earlier = seen.get(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if earlier is not None:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"duplicate key {key!r} (first on line {earlier.start_mark.line + 1}); the last would "
                        "silently win — keep one",
                        key_node.start_mark,
                    )
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def check_size(data: Any, source: str, limit: int = MAX_VALUES) -> None:
    """Refuse ``data`` when its alias-expanded form holds more than ``limit`` values.

    The walk stops as soon as the count passes ``limit``, so an alias bomb costs at most
    ``limit`` steps here.
    """
    count = 0
    stack = [data]
    while stack:
        item = stack.pop()
        count += 1
        if count > limit:
            raise ConfigError(
                f"{source}: expands to more than {limit} values (YAML aliases that repeat "
                "themselves?); write the config out without nested aliases"
            )
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
