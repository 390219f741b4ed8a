"""dogo: self-supervised pretraining of small vision models with online mutual distillation.

Distill-on-the-Go (Bhat, Arani, Zonooz, CVPR Workshops 2021): a cohort of peers trains from
scratch, each on its own SSL objective plus a KL term that pulls its cross-view similarity
distribution towards each peer's. The package follows the data flow:
data -> views -> models -> objectives -> distillation -> training -> evaluation -> reports -> cli.
"""

__version__ = "0.1.0"

import sys as _sys

if _sys.argv[:1] == ["-m"]:  # `python -m dogo ...` is importing this package: from here on, Ctrl-C is one line
    import os as _os
    import signal as _signal

    def _interrupted(signum, frame):  # no imports: dogo.guards.signals takes over in dogo.__main__
        command = next((a for a in _sys.argv[1:] if not a.startswith("-")), "")
        _os.write(2, f"dogo {command}: interrupted\n".encode() if command else b"dogo: interrupted\n")
        _os._exit(130)

    if _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
        _signal.signal(_signal.SIGINT, _interrupted)

from dogo import _moved

# The public API, imported on first use so that `import dogo` stays cheap (no torch until needed):
#   dogo.load_config(path, overrides) -> RunConfig          dogo.Trainer(config, run_dir).fit()
#   dogo.load_encoder(run_dir, peer=...) -> (nn.Module, preprocess)
#   dogo.evaluate(run_dir, protocol, settings, peer=..., checkpoint=...) -> list of result dicts
#     (dogo.evaluate is also the package of protocols: dogo.evaluate.PROTOCOLS, dogo.evaluate.knn ...)
#   registries: dogo.BACKBONES, dogo.OBJECTIVES, dogo.DATASETS, dogo.PROTOCOLS
_LAZY = {
    "load_config": ("dogo.config", "load_config"),
    "RunConfig": ("dogo.config", "RunConfig"),
    "Trainer": ("dogo.training.trainer", "Trainer"),
    "load_encoder": ("dogo.runs.encoder", "load_encoder"),
    "evaluate": ("dogo.evaluate", None),
    "evaluate_run": ("dogo.evaluate.runner", "evaluate_run"),
    "export_encoder": ("dogo.runs.export", "export_encoder"),
    "embed": ("dogo.runs.embed", "embed"),
    "load_dataset": ("dogo.data", "load_dataset"),
    "load_checkpoint": ("dogo.runs.checkpoint", "load_checkpoint"),
    "build_backbone": ("dogo.models", "build_backbone"),
    "BACKBONES": ("dogo.models", "BACKBONES"),
    "OBJECTIVES": ("dogo.objectives", "OBJECTIVES"),
    "DATASETS": ("dogo.data", "DATASETS"),
    "PROTOCOLS": ("dogo.evaluate", "PROTOCOLS"),
    "DogoError": ("dogo.core.errors", "DogoError"),
}

__all__ = ["__version__", *_LAZY]


# Modules moved into packages by stage keep their old names for one release (dogo._moved).
_moved.install()


def __getattr__(name: str):
    if name not in _LAZY:
        moved = _moved.module(name)  # `from dogo import dist`: the old flat module, with a DeprecationWarning
        if moved is not None:
            return moved
        raise AttributeError(f"module 'dogo' has no attribute {name!r}")
    import importlib

    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
