"""The run folder and what a trained run gives back.

:mod:`~dogo.runs.layout` (its file names), :mod:`~dogo.runs.runlock` (one process per folder),
:mod:`~dogo.runs.checkpoint` (atomic hashed saves, ``weights_only`` loads), :mod:`~dogo.runs.rundir`
(creating a run folder safely, resuming it), :mod:`~dogo.runs.kept` (weights kept at chosen steps),
:mod:`~dogo.runs.disk` (checkpoints kept, cache cap,
``dogo clean``), :mod:`~dogo.runs.encoder` (a run's encoder alone: ``dogo.load_encoder``),
:mod:`~dogo.runs.export` (``dogo export``) and :mod:`~dogo.runs.embed` (``dogo embed``).
"""
