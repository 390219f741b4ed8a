"""What every stage stands on: errors, registries, file writes, console output, the runtime and
every cross-process call.

:mod:`~dogo.core.errors` (user-facing errors), :mod:`~dogo.core.registry` (one registry per kind),
:mod:`~dogo.core.fileio` (atomic writes), :mod:`~dogo.core.console` (what the CLI prints),
:mod:`~dogo.core.runtime` (device, precision, threads, seeds), :mod:`~dogo.core.dist` (the process
group; no-ops in one process), :mod:`~dogo.core.memory` (refusing what the machine cannot hold) and
:mod:`~dogo.core.metric_keys` (the names of logged numbers). Nothing here imports another dogo package.
"""
