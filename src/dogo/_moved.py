"""Old module names that still import, with a DeprecationWarning, for one release.

The flat modules of ``src/dogo/`` were grouped into packages by stage (docs/ARCHITECTURE.md).
``import dogo.train``, ``from dogo.checkpoint import load_checkpoint`` and ``from dogo import dist``
keep working: the old name is an alias of the same module object (so monkeypatching either name
patches both), and importing it warns once, naming the new place. Nothing else is kept under the
old names; checkpoints, feature caches and result files record no module paths.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

#: old module (under ``dogo.``) -> where it lives now (under ``dogo.``)
MOVED = {
    "errors": "core.errors",
    "registry": "core.registry",
    "fileio": "core.fileio",
    "console": "core.console",
    "runtime": "core.runtime",
    "dist": "core.dist",
    "memory": "core.memory",
    "metric_keys": "core.metric_keys",
    "reference_config": "config.reference",
    "strict_yaml": "config.strict_yaml",
    "train": "training.trainer",
    "step": "training.step",
    "gather": "training.gather",
    "cohort": "training.cohort",
    "peer_threads": "training.peer_threads",
    "optim": "training.optim",
    "init_from": "training.init_from",
    "training_log": "training.log",
    "logtail": "training.logtail",
    "mlflow_log": "training.mlflow_log",
    "layout": "runs.layout",
    "rundir": "runs.rundir",
    "runlock": "runs.runlock",
    "disk": "runs.disk",
    "checkpoint": "runs.checkpoint",
    "encoder": "runs.encoder",
    "export": "runs.export",
    "embed": "runs.embed",
    "evaluation_runner": "evaluate.runner",
    "quickstart": "cli.quickstart",
    "kept": "runs.kept",
}


def _bootstrap(filename: str) -> bool:
    return "importlib" in filename and "_bootstrap" in filename


def _warn(old: str, new: str) -> None:
    """A DeprecationWarning attributed to the line that imported the old name (not to importlib or dogo).

    ``stacklevel`` counts frames as :func:`warnings.warn` does: importlib's own bootstrap frames
    are not counted; this module's, dogo's ``__init__`` and :func:`importlib.import_module` are.
    """
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename in _OURS:
        caller = frame.f_back
        while caller is not None and _bootstrap(caller.f_code.co_filename):
            caller = caller.f_back
        if caller is None:
            break
        level, frame = level + 1, caller
    warnings.warn(
        f"{old} has moved to {new}; the old name works until the next release", DeprecationWarning, stacklevel=level
    )


class _Aliases(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``dogo.<old>`` and hands back the module ``dogo.<new>`` itself (one object, two names)."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith("dogo.") or fullname[5:] not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = "dogo." + MOVED[spec.name[5:]]
        _warn(spec.name, new)
        module = importlib.import_module(new)
        spec.loader_state = module.__spec__  # the import system sets module.__spec__ to the alias's
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = module.__spec__.loader_state  # give the module its own spec back


#: frames between the importing line and the warning: this module, dogo's ``__init__`` (``from dogo import dist``)
#: and ``importlib.import_module``
_OURS = {__file__, __file__.replace("_moved.py", "__init__.py"), importlib.__file__}
_FINDER = _Aliases()


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once): after the real finders, so it sees only old names."""
    if not any(isinstance(finder, _Aliases) for finder in sys.meta_path):
        sys.meta_path.append(_FINDER)


def module(name: str):
    """``from dogo import <old>``: the moved module under its old name (warning once), or None."""
    if name not in MOVED:
        return None
    return importlib.import_module(f"dogo.{name}")
