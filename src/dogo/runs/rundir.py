"""The run directory: creating it safely, resuming it, and loading what a run trained.

Its layout is :class:`dogo.runs.layout.RunDir`.

Resuming (:func:`resume_checkpoint`, :func:`resume_config`): the newest checkpoint that loads
and verifies is used (``last.pt``, else ``last.prev.pt`` or the newest ``epoch-N.pt``, saying
so); the config it was trained with is compared with ``config.yaml`` and the command's
overrides. A setting that alters training may change only when the resume command names it
(``dogo pretrain --resume RUN train.epochs=40``); settings the saved state depends on
(architecture, image size, batch size, dataset) never change.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from dogo.config import (
    RUNTIME_KEYS,
    RunConfig,
    apply_override,
    build_config,
    flatten,
    parse_override,
    read_yaml,
    recorded_config,
    under,
)
from dogo.core.errors import CheckpointError, ConfigError, DogoError
from dogo.guards.outputs import Appender, Outputs, write_output
from dogo.guards.ownership import check_removable, mark, missing_folders, remove_empty, remove_owned
from dogo.runs.checkpoint import load_checkpoint, previous_path, remove_stale_temporaries
from dogo.runs.layout import RunDir
from dogo.runs.runlock import acquire, is_locked, locked_error, release

# Keys the saved state depends on (weights' shapes, optimiser type, data order, step count per
# epoch): a resume may never change them, not even explicitly.
FIXED_KEYS = (
    "dataset.name",
    "dataset.split",
    "dataset.image_size",
    "dataset.options",
    "dataset.normalization",
    "train.batch_size",
    "train.models",
    "train.models.N.objective",
    "train.models.N.backbone",
    "train.models.N.width",
    "train.models.N.backbone_options",
    "train.models.N.n_proj",
    "train.models.N.optimizer.name",
    "train.models.N.trainable",
)
MAX_LISTED = 6


def default_run_dir(config: RunConfig, root: str | Path = "runs") -> Path:
    """``runs/<config-name>-<YYYYmmdd-HHMMSS>`` (numbered if that exists already)."""
    base = Path(root) / f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = base, 1
    while candidate.exists():
        candidate, n = base.with_name(f"{base.name}-{n}"), n + 1
    return candidate


def check_new_run_dir(run_dir: str | Path) -> Path:
    """Refuse an existing non-empty ``run_dir`` or one that cannot be created (before any work).

    A folder left by a run that never reached its first checkpoint (:func:`never_checkpointed`)
    and that no process owns is accepted: :func:`prepare_run_dir` starts it afresh.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        if never_checkpointed(run_dir) and is_locked(run_dir):
            raise locked_error(run_dir)  # a run in its first epoch, not one left behind
        if not never_checkpointed(run_dir):
            raise DogoError(
                f"{run_dir}: already exists; pass --resume {run_dir} to continue that run or choose another --out"
            )
        check_removable(run_dir, why="reusing the folder of a run that stopped before its first checkpoint")
    ancestor = run_dir.absolute()
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise DogoError(
            f"{run_dir}: cannot create the run directory ({ancestor} is a file, not a folder); choose another --out"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise DogoError(
            f"{run_dir}: cannot create the run directory ({ancestor} is not writable); choose another --out"
        )
    return run_dir


def _write_text_atomic(path: Path, text: str) -> None:
    write_output(path, text, own=True)


def prepare_run_dir(config: RunConfig, run_dir: str | Path) -> Path:
    """Create a new run directory (refusing an existing non-empty one), own it, write config.yaml.

    The directory is locked (:mod:`dogo.runs.runlock`) before anything is written in it, so a second
    process aiming at the same folder is refused instead of interleaving with this one.
    """
    run_dir = check_new_run_dir(run_dir)
    existed = run_dir.exists()
    made = missing_folders(run_dir)[1:]  # the folders above it that --out names and that are not there yet
    try:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            acquire(run_dir)
            if any(run_dir.iterdir()):  # a run that never reached its first checkpoint: start it afresh
                _clear(run_dir, keep_folder=True)
            mark(run_dir, "run")  # dogo made it: `dogo clean` and a failed first step may remove what is in it
            RunDir(run_dir).checkpoints.mkdir(exist_ok=True)
        except OSError as exc:
            raise DogoError(
                f"{run_dir}: cannot create the run directory ({exc.strerror}); choose another --out"
            ) from None
        write_config(config, run_dir)
    except BaseException:
        if not existed:  # a full disk, say: leave nothing behind
            release(run_dir)
            try:
                remove_owned(run_dir, why="a run directory that could not be set up")
            except (OSError, DogoError):
                with contextlib.suppress(OSError):
                    run_dir.rmdir()
            remove_empty(made)
        raise
    _MADE_ABOVE[run_dir.absolute()] = made
    return run_dir


#: Each new run directory of this process: the folders above it that :func:`prepare_run_dir` created (the
#: deepest first), removed with it when the run fails before its first checkpoint, if they are still empty.
_MADE_ABOVE: dict[Path, list[Path]] = {}


def write_config(config: RunConfig, run_dir: str | Path) -> None:
    """Write ``RUN_DIR/config.yaml`` (atomically) unless it already says exactly that."""
    path, text = RunDir(run_dir).config, yaml.safe_dump(config.dump(), sort_keys=False)
    if not path.is_file() or path.read_text() != text:
        _write_text_atomic(path, text)


#: What a run writes before its first checkpoint (tb/ holds event files, checkpoints/ temporaries).
_EARLY_FILES, _EARLY_FOLDERS = set(RunDir.EARLY_FILES), set(RunDir.EARLY_FOLDERS)


def never_checkpointed(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds only what a run writes before its first checkpoint, and no checkpoint.

    Such a folder (a first step that failed, a run killed in its first epoch) cannot be resumed;
    it is removed when the failure is seen and reused by ``--out`` otherwise.
    """
    run_dir = Path(run_dir)
    try:
        for entry in run_dir.iterdir():
            if entry.name in _EARLY_FILES and entry.is_file() and not entry.is_symlink():
                continue
            if entry.name in _EARLY_FOLDERS and entry.is_dir() and not entry.is_symlink():
                if any(
                    not f.is_file()
                    or f.is_symlink()
                    or (entry.name == RunDir(run_dir).checkpoints.name and f.suffix == ".pt")
                    for f in entry.iterdir()
                ):
                    return False
                continue
            return False
    except OSError:
        return False
    return RunDir(run_dir).is_run()


def _clear(run_dir: Path, keep_folder: bool) -> None:
    """Remove what :func:`never_checkpointed` allows in ``run_dir`` (and the folder itself), if dogo made it."""
    why = "a run that stopped before its first checkpoint"
    if not keep_folder:
        remove_owned(run_dir, why=why)
        return
    check_removable(run_dir, why=why)
    for entry in run_dir.iterdir():
        if entry.name != ".dogo":
            remove_owned(entry, why=why)


def discard_new_run_dir(run_dir: str | Path) -> list[Path] | None:
    """Remove a run directory whose run failed before its first checkpoint, and the folders above it that
    :func:`prepare_run_dir` made for it and that are empty now; returns those folders (None if not removed).

    The user can then rerun with the same ``--out``. A folder holding anything else (a
    checkpoint, files of the user's) is left alone, and so is every folder that existed before the run.
    """
    run_dir = Path(run_dir)
    try:
        if not never_checkpointed(run_dir):
            return None
        release(run_dir)
        _clear(run_dir, keep_folder=False)
    except (OSError, DogoError):
        return None
    return remove_empty(_MADE_ABOVE.pop(run_dir.absolute(), []))


@contextlib.contextmanager
def removed_if_it_fails_early(run_dir: str | Path, say: Callable[[str], None]) -> Iterator[None]:
    """A new run's training: when it fails before its first checkpoint, its directory is removed.

    Such a run can be neither resumed nor reused by ``--out`` as it stands; removed, the same command
    runs again. A :class:`DogoError` keeps its one line, which says so; anything else is said first.
    """
    try:
        yield
    except BaseException as exc:
        above = discard_new_run_dir(run_dir)
        if above is not None:
            removed = f"{run_dir} was removed: the run failed before its first checkpoint"
            if above:
                names = [str(folder) for folder in above]
                listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
                removed += f"; so {'was' if len(names) == 1 else 'were'} {listed}, made for it"
            if isinstance(exc, DogoError):
                raise type(exc)(f"{exc} ({removed})") from None
            say(removed)
        raise


def check_run_dir(run_dir: str | Path) -> Path:
    """An existing run directory (with ``config.yaml``), else a one-line error."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DogoError(f"{run_dir}: no such run directory; give the folder `dogo pretrain` wrote (its --out)")
    if not RunDir(run_dir).is_run():
        raise DogoError(f"{run_dir}: not a dogo run directory (no config.yaml); give the folder `dogo pretrain` wrote")
    return run_dir


def checkpoint_path(run_dir: str | Path, checkpoint: str = "last") -> Path:
    """``last`` | ``epoch-N`` | a path -> the checkpoint file."""
    run_dir = check_run_dir(run_dir)
    candidate = Path(checkpoint)
    if candidate.suffix == ".pt" and candidate.exists():
        return candidate
    path = RunDir(run_dir).checkpoint(checkpoint)
    if not path.exists() and re.fullmatch(r"step-\d+", checkpoint):
        from dogo.runs.kept import kept_steps

        kept = ", ".join(map(str, kept_steps(run_dir))) or "none (set train.keep_at before training)"
        raise CheckpointError(f"{run_dir}: no weights kept at {checkpoint.replace('-', ' ')}; kept steps: {kept}")
    if not path.exists():
        found = sorted(p.stem for p in RunDir(run_dir).checkpoints.glob("*.pt"))
        raise CheckpointError(f"{path}: no such checkpoint; found: {', '.join(found) or 'none (run not trained yet)'}")
    if re.fullmatch(r"step-\d+", checkpoint):  # the weights kept at a step: the file kept.json recorded
        from dogo.runs.checkpoint import checkpoint_id
        from dogo.runs.kept import kept_steps

        entry = kept_steps(run_dir).get(int(checkpoint[len("step-") :]))
        if entry is not None and entry["sha256"] != checkpoint_id(path, full=True):
            from dogo.guards.verified import Damaged

            raise Damaged(
                f"{path}: not the file {RunDir(run_dir).kept} recorded for {checkpoint} (its sha256 "
                "differs: replaced since?); restore it, or resume the run with train.keep_at to keep it again"
            )
    return path


# --------------------------------------------------------------------------- resume


def _epoch_number(path: Path) -> int:
    match = re.fullmatch(r"epoch-(\d+)", path.stem)
    return int(match.group(1)) if match else -1


def resume_checkpoint(run_dir: str | Path, warn: Callable[[str], None]) -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint of ``run_dir`` that loads and verifies, with its state.

    ``last.pt`` first; when it is missing or damaged, the later of ``last.prev.pt`` and the
    newest valid ``epoch-N.pt`` (by step), reported through ``warn``. Temporary files left by a
    save that was killed are removed. CheckpointError when there is none.
    """
    run_dir = check_run_dir(run_dir)
    folder = RunDir(run_dir).checkpoints
    remove_stale_temporaries(folder)
    last = RunDir(run_dir).last_checkpoint
    epochs = sorted(folder.glob("epoch-*.pt"), key=_epoch_number, reverse=True) if folder.is_dir() else []
    candidates = [p for p in (last, previous_path(last)) if p.exists()] + epochs
    if not candidates:
        if never_checkpointed(run_dir):
            raise CheckpointError(
                f"{run_dir}: no checkpoint to resume: the run stopped before its first checkpoint; "
                f"start it again with `dogo pretrain CONFIG --out {run_dir}`, which reuses the folder"
            )
        raise CheckpointError(
            f"{run_dir}: no checkpoint to resume (expected {last}); the run stopped before its "
            "first checkpoint — start a new run instead"
        )
    problems: list[str] = []
    if last.exists():
        try:
            return last, load_checkpoint(last)
        except CheckpointError as exc:
            problems.append(str(exc))
    else:
        problems.append(f"{last}: missing")
    best: tuple[Path, dict[str, Any]] | None = None
    prev = previous_path(last)
    if prev.exists():
        try:
            best = (prev, load_checkpoint(prev))
        except CheckpointError as exc:
            problems.append(str(exc))
    for path in epochs:  # newest first: the first that loads is the only one that can be later
        try:
            state = load_checkpoint(path)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        if best is None or int(state.get("step", -1)) > int(best[1].get("step", -1)):
            best = (path, state)
        break
    if best is None:
        raise CheckpointError(f"{run_dir}: no usable checkpoint: " + "; ".join(problems))
    warn(f"{problems[0]}; falling back to {best[0]} (step {int(best[1].get('step', 0))})")
    return best


def _generic(key: str) -> str:
    return ".".join("N" if part.isdigit() else part for part in key.split("."))


def _listing(changes: dict[str, tuple[Any, Any]], old: str, new: str) -> str:
    shown = [f"{key} ({old} {_short(a)}, {new} {_short(b)})" for key, (a, b) in list(changes.items())[:MAX_LISTED]]
    more = len(changes) - MAX_LISTED
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _short(value: Any) -> str:
    text = "unset" if value is _MISSING else json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


_MISSING = object()


def resume_config(
    run_dir: str | Path, saved: dict[str, Any], overrides: Sequence[str] = (), checkpoint: str | Path = "checkpoint"
) -> tuple[RunConfig, dict[str, tuple[Any, Any]]]:
    """The config a resumed run continues with, and what changed relative to the checkpoint.

    Starts from ``RUN_DIR/config.yaml`` plus ``overrides`` and compares it with ``saved`` (the
    checkpoint's config). A difference in a setting that alters training is refused unless an
    override names it; a difference in :data:`FIXED_KEYS` is always refused. Returns the new
    config and ``{dotted key: (checkpoint value, new value)}`` of every difference.
    """
    run_dir = check_run_dir(run_dir)
    config_path = RunDir(run_dir).config
    current = recorded_config(read_yaml(config_path), str(config_path)).dump()
    try:
        previous = recorded_config(dict(saved), f"{checkpoint}: its config").dump()
    except ConfigError as exc:
        raise CheckpointError(
            f"{exc} (the checkpoint was written by another version of dogo?); resume it with that "
            "version, or start a new run"
        ) from None
    named = []
    for text in overrides:
        path, value = parse_override(text)
        apply_override(current, path, value)
        named.append(".".join(path))
    config = build_config(current, f"{config_path} with the overrides" if overrides else str(config_path))
    old, new = flatten(previous), flatten(config.dump())
    changes = {
        key: (old.get(key, _MISSING), new.get(key, _MISSING))
        for key in {**old, **new}
        if old.get(key, _MISSING) != new.get(key, _MISSING)
    }
    changes = dict(sorted(changes.items()))
    fixed = {
        k: v
        for k, v in changes.items()
        if _generic(k) in FIXED_KEYS or under(k, ("dataset.options", "dataset.normalization"))
    }
    if fixed:
        raise CheckpointError(
            f"{checkpoint} does not fit this run: {_listing(fixed, 'checkpoint', 'run')}; the saved weights, "
            f"optimiser state or data order depend on these settings, so they cannot change on resume (a "
            f"checkpoint from another config?) — start a new run to change them"
        )
    unasked = {k: v for k, v in changes.items() if not under(k, RUNTIME_KEYS) and not under(k, named)}
    if unasked:
        example = " ".join(f"{k}={_short(b)}" for k, (_, b) in list(unasked.items())[:2])
        raise CheckpointError(
            f"{config_path} differs from {checkpoint} in {_listing(unasked, 'checkpoint', 'config.yaml')}; a "
            f"setting that alters training changes on resume only when the command names it: undo the edit, "
            f"or accept it with `dogo pretrain --resume {run_dir} {example}`"
        )
    return config, changes


def record_resume(
    run_dir: str | Path,
    config: RunConfig,
    *,
    checkpoint: Path,
    step: int,
    overrides: list[str],
    changes: dict[str, tuple[Any, Any]],
    fallback: str | None = None,
) -> None:
    """Write the resumed config back to ``config.yaml`` and append a line to ``resume-log.jsonl``, both or neither.

    The new ``config.yaml`` is written to its temporary file first, then the log line is appended, then the
    config is renamed into place; a failure at any point (a full disk on either file) leaves both as they were:
    the temporary file is removed, and a log line whose config could not be renamed is cut off again.
    """
    run_dir = Path(run_dir)
    mark(run_dir, "run", adopted=True)  # a run of a dogo older than the markers becomes dogo's own
    config_path = RunDir(run_dir).config
    text = yaml.safe_dump(config.dump(), sort_keys=False)
    entry = {
        "time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "checkpoint": str(checkpoint.relative_to(run_dir)) if checkpoint.is_relative_to(run_dir) else str(checkpoint),
        "step": step,
        "overrides": list(overrides),
        "changes": {k: [None if a is _MISSING else a, None if b is _MISSING else b] for k, (a, b) in changes.items()},
    }
    if fallback:
        entry["fallback"] = fallback
    out = Outputs(own=True)
    try:
        if config_path.read_text() != text:
            out.write(config_path, text)  # to its temporary file: renamed below, after the log line landed
        log_path = RunDir(run_dir).resume_log
        existed = os.path.lexists(log_path)
        log = Appender(log_path)  # a full disk: one line naming it, and no half line left
        try:
            length = log.tell()
            log.write(json.dumps(entry) + "\n")
            out.commit()
        except BaseException:
            log.cut(length)  # the config stayed as it was: so does its log
            if not existed:
                with contextlib.suppress(OSError):
                    log_path.unlink()  # made for this line: gone with it
            raise
        finally:
            log.close()
    finally:
        out.discard()
