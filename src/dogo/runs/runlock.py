"""One process per run directory: an OS lock on the folder, taken before anything is written.

Two processes writing one run (a ``--resume`` started while the run still trains) would
truncate each other's ``metrics.jsonl`` and rewrite ``config.yaml``. :func:`acquire` takes an
exclusive ``flock`` on the run directory itself (no lock file to create or leave behind). The
kernel drops the lock when its process exits, however it exits, so a lock is never stale: a
killed run's folder is free at once. The second process gets one line naming the owner's pid,
read from ``/proc/locks`` where the system has it.

Locks are per open file description, so a process keeps the descriptor of each folder it owns
and :func:`acquire` is idempotent within the process; :func:`release_all` frees them (the CLI
calls it when a command ends; in a library process they last until exit). The lock is
:mod:`dogo.guards.flock`'s, the one every folder dogo writes is held with (:mod:`dogo.guards.locks`);
this module names it for run directories.
"""

from __future__ import annotations

from dogo.guards.flock import (  # noqa: F401 - the run directory's lock is the folder lock
    _HELD,
    RunLockedError,
    _key,
    acquire,
    is_locked,
    locked_error,
    owner_pid,
    release,
    release_all,
)

__all__ = ["RunLockedError", "acquire", "is_locked", "locked_error", "owner_pid", "release", "release_all"]
