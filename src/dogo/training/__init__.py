"""Pretraining a cohort: the peers, the one training step, the loop over epochs and what it logs.

:mod:`~dogo.training.cohort` (a peer: backbone + objective + optimiser + schedule; the cohort, a
list of them), :mod:`~dogo.training.optim` (optimisers and schedules), :mod:`~dogo.training.init_from`
(a peer started from another run), :mod:`~dogo.training.peer_threads` (peers side by side),
:mod:`~dogo.training.step` (the one step, which ``dogo bench`` times), :mod:`~dogo.training.gather`
(the next batches, gathered in a thread), :mod:`~dogo.training.trainer` (``Trainer``: the loop,
checkpoints, resuming), :mod:`~dogo.training.log` (metrics.jsonl, TensorBoard, the console),
:mod:`~dogo.training.mlflow_log` and :mod:`~dogo.training.logtail` (the log cut back on resume).
"""
