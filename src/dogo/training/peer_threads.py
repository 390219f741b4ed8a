"""Peers side by side: every peer's forward and backward in its own thread (``train.concurrent_peers``).

A DoGo step needs every peer's forward before the distillation term and lets each peer's
backward run alone (teachers are detached), so the peers can run at the same time. On a CPU
that is faster than running them one after another with all cores each: oneDNN's convolutions
scale well but not perfectly across cores, and one core per peer leaves nothing to synchronise
(the README's performance section has the measurements). It needs one malloc arena
(``train.allocator=retain`` sets it): with glibc's per-thread arenas the worker threads' big
blocks are mapped and unmapped every step, which takes the gain away.

``auto`` runs peers one after another: side by side is opt-in (``on``). Two runs of the same
seed side by side are not bit-identical (oneDNN's per-thread partial sums land in a different
order from run to run), so a killed and resumed run would not end where an uninterrupted one
does; and on an AVX2-only CPU two peers' channels_last convolution backward side by side
corrupted the heap inside oneDNN. One after another is deterministic and safe everywhere; the README's
performance section states what side by side gains where it works.

``on`` still requires a single process (collectives issued from two threads could reach the
ranks in different orders) and no ``torch.compile`` (not thread-safe).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from dogo.config import RunConfig
from dogo.core import dist
from dogo.core.errors import ConfigError

__all__ = ["PeerRunner", "resolve_concurrent_peers"]


def resolve_concurrent_peers(config: RunConfig, device: torch.device) -> bool:
    """Whether ``train.concurrent_peers`` runs this cohort's peers side by side (``auto``: see the module)."""
    choice = config.train.concurrent_peers
    if choice == "on" and dist.world_size() > 1:
        raise ConfigError(
            "train.concurrent_peers=on needs a single process: collectives issued from several "
            "threads could reach the ranks in different orders; use auto or off under torchrun"
        )
    if choice == "on" and config.train.compile:
        raise ConfigError(
            "train.concurrent_peers=on does not go with train.compile=true (torch.compile is not "
            "thread-safe); turn one of them off"
        )
    return choice == "on"  # auto: one after another (deterministic; see the module docstring)


class PeerRunner:
    """``map(fn, *iterables)``: one call per peer, in threads or one after another, results in order.

    With ``concurrent`` every peer gets a thread of its own with ``threads // peers`` intra-op
    threads; otherwise calls run in the caller's thread, as a plain ``map``.
    """

    def __init__(self, peers: int, concurrent: bool, threads: int | None = None) -> None:
        self.concurrent = concurrent and peers > 1
        threads_per_peer = max(1, (threads or torch.get_num_threads()) // peers)
        self.threads_per_peer = threads_per_peer if self.concurrent else None
        self._pool = (
            ThreadPoolExecutor(
                max_workers=peers,
                thread_name_prefix="dogo-peer",
                initializer=torch.set_num_threads,
                initargs=(threads_per_peer,),
            )
            if self.concurrent
            else None
        )

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any]) -> list[Any]:
        if self._pool is None:
            return list(map(fn, *iterables))
        # Grad mode is per thread: a worker computes with the caller's.
        grad = torch.is_grad_enabled()

        def call(*args: Any) -> Any:
            with torch.set_grad_enabled(grad):
                return fn(*args)

        return list(self._pool.map(call, *iterables))  # re-raises a worker's exception here

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
