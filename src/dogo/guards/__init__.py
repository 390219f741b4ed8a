"""Guards in one place: each class of fault has one mechanism that every command goes through.

A command added later gets the guards by using these functions, not by knowing about the faults:

1. writing an output: :mod:`dogo.guards.outputs` (temporary file beside the target, then rename;
   refuses to write over a run's own files or an input the command reads; a full disk is one line
   with the path and the bytes wanted), with :mod:`dogo.guards.inputs` (what the command reads);
2. deleting: :mod:`dogo.guards.ownership` (a marker written when dogo makes a folder, read by
   :mod:`dogo.guards.markers`; only marked folders are removed, symbolic links are never followed);
3. one writer at a time: :mod:`dogo.guards.locks` (an OS lock, :mod:`dogo.guards.flock`, on every
   folder a command writes);
4. verified on read: :mod:`dogo.guards.verified` (content checked before use: one line naming the
   file and the problem, or a warning and recomputation where dogo can redo the work);
5. arguments typed at the door: :mod:`dogo.guards.arguments`;
6. resources asked for up front: :mod:`dogo.guards.resources` (on :func:`dogo.core.memory.check_fits`);
7. outside services: :mod:`dogo.guards.services` (MLflow reached within a timeout, or not used);
8. signals at any moment: :mod:`dogo.guards.signals` (Ctrl-C during start-up);
9. messages that name things: :mod:`dogo.guards.messages` (what is true of a path, in words).

The modules import nothing heavy (no torch) so that the CLI can use them before start-up ends, and
nothing of dogo's but :mod:`dogo.core`: every other package sits above them (docs/ARCHITECTURE.md).
Where a guard's rule is a higher layer's code (the config schema's fields, how a peer is built), the
caller passes it in.
"""
