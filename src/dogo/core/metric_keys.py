"""Peer keys of ``metrics.jsonl``: ``peer/<label>/<metric>`` in the file, ``peer/<index>/<metric>`` inside dogo.

Training computes every peer's numbers by position (the cohort is a list); the log writes them
under the peer's label (its ``name``, else ``<backbone>[x<width>]-<objective>``; see
:func:`dogo.config.peer_labels`), so the file reads on its own. Files written before labels were
used key peers by index; :func:`by_index` maps both forms back to indices, so readers (the
report, the study report) treat old and new runs alike. A peer name has no ``/`` and is not a
number (checked by the config), so the two forms never collide.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["by_index", "by_label"]

_INDEXED = re.compile(r"^peer/(\d+)/(.+)$")
_PEER = re.compile(r"^peer/([^/]+)/(.+)$")


def by_label(row: dict[str, Any], labels: list[str]) -> dict[str, Any]:
    """``row`` with ``peer/<i>/...`` keys renamed ``peer/<labels[i]>/...`` (other keys unchanged, order kept)."""
    out = {}
    for key, value in row.items():
        m = _INDEXED.match(key)
        out[f"peer/{labels[int(m[1])]}/{m[2]}" if m and int(m[1]) < len(labels) else key] = value
    return out


def by_index(row: dict[str, Any], labels: list[str]) -> dict[str, Any]:
    """``row`` with ``peer/<label>/...`` keys renamed ``peer/<i>/...``; index keys (older files) stay as they are."""
    position = {label: i for i, label in enumerate(labels)}
    out = {}
    for key, value in row.items():
        m = _PEER.match(key)
        out[f"peer/{position[m[1]]}/{m[2]}" if m and m[1] in position else key] = value
    return out
