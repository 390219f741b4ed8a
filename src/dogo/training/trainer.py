"""The training loop: a cohort of peers, each on its SSL objective plus the DoGo KL term.

The step itself lives in :mod:`dogo.step` (the same one ``dogo bench`` times); this module runs
it over the epochs: the batch and view seeds of each step (:class:`dogo.step.Sampler`), logging,
the online kNN monitor, checkpoints, signals, and resuming.

The run directory holds ``config.yaml``, ``metrics.jsonl`` (one JSON object per logged step
and per epoch), TensorBoard events under ``tb/`` and ``checkpoints/{last,epoch-N}.pt``.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dogo.config import RunConfig
from dogo.config.normalization import resolve_normalization
from dogo.core import dist
from dogo.core.errors import CheckpointError, ConfigError, DogoError
from dogo.data import ImageDataset
from dogo.guards.messages import what_is
from dogo.runs.checkpoint import rng_state, save_checkpoint, set_rng_state
from dogo.runs.disk import drop_previous, prune_epoch_checkpoints
from dogo.runs.kept import keep_weights
from dogo.runs.layout import RunDir
from dogo.training.gather import BatchGatherer
from dogo.training.log import TrainingLog
from dogo.training.logtail import restore_log
from dogo.training.peer_threads import PeerRunner
from dogo.training.step import Sampler, set_up, step_settings, training_step


class Trainer:
    """Pretrains a cohort from a :class:`RunConfig` into a run directory.

    ``Trainer(config, run_dir).fit()`` starts a run; ``Trainer.resume(run_dir).fit()`` continues
    one from ``checkpoints/last.pt``.
    """

    def __init__(
        self,
        config: RunConfig,
        run_dir: str | Path,
        *,
        log: Callable[[str], None] = print,
        _resume_state: dict[str, Any] | None = None,
        _resume_from: Path | None = None,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.layout = RunDir(self.run_dir)
        self.log = log
        self._warned: set[str] = set()  # the warnings said once per run (_warn_once)
        self.settings = step_settings(config)  # threads, seeds, device and process group, every auto
        self.device = self.settings.device

        self.data = self._load_training_data()
        if config.train.batch_size % dist.world_size():
            raise ConfigError(
                f"train.batch_size={config.train.batch_size} is the global batch and must be divisible by the "
                f"{dist.world_size()} processes; use a multiple of {dist.world_size()}"
            )
        if config.train.batch_size > len(self.data.images):
            raise ConfigError(
                f"train.batch_size={config.train.batch_size} is larger than the dataset "
                f"({len(self.data.images)} images in {config.dataset.name}/{config.dataset.split}); lower it"
            )
        self.sampler = Sampler(
            len(self.data.images), config.train.batch_size, config.seed, shared_views=config.distill.views == "shared"
        )
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.total_steps = self.steps_per_epoch * config.train.epochs
        if config.train.max_steps:
            self.total_steps = min(self.total_steps, config.train.max_steps)
        beyond = [step for step in config.train.keep_at if step > self.total_steps]
        if beyond:
            raise ConfigError(
                f"train.keep_at: step {beyond[0]} is beyond the run's {self.total_steps} steps "
                f"({self.steps_per_epoch} a epoch); raise train.epochs (or train.max_steps) or drop it"
            )
        self.keep_at = set(config.train.keep_at)
        # dataset.normalization: data -> the split's statistics, recorded in the config (and config.yaml)
        self.normalization = resolve_normalization(config, self.data, log if dist.is_main_process() else lambda m: None)
        if _resume_state is None and dist.is_main_process() and self.layout.config.is_file():
            from dogo.runs.rundir import write_config

            write_config(config, self.run_dir)  # prepared before the trainer (the Python API): record them there too

        # init_from is read when a run starts; a resumed run continues from its own checkpoint
        self.setup = set_up(config, self.steps_per_epoch, self.settings, init_from=_resume_state is None, log=log)
        self.cohort, self.kl = self.setup.cohort, self.setup.kl
        self.monitor = self._load_monitor_data()
        self.step = 0
        self._window: list[dict[str, float]] = []  # steps since the last metrics row (kept in checkpoints)
        self.stop_requested: str | None = None
        self.restore_notes: list[str] = []  # what resuming had to repair, for the user
        if _resume_state is not None:
            self._restore(_resume_state, _resume_from or self.layout.last_checkpoint)

    # ------------------------------------------------------------------ set-up

    def _dataset(self, split: str) -> ImageDataset:
        from dogo.data.source import load_split

        return load_split(self.config.dataset, split, log=self.log if dist.is_main_process() else lambda m: None)

    def _load_training_data(self) -> ImageDataset:
        return self._dataset(self.config.dataset.split)

    def _load_monitor_data(self) -> tuple[ImageDataset, ImageDataset] | None:
        """Labelled (bank, queries) for the online kNN, or None when the data has no labels.

        An eval split that cannot be read (e.g. an image folder without split folders) is said in
        one line: the monitor is off, and probes (``dogo evaluate``) need that split too.
        """
        cfg = self.config
        if not cfg.logging.knn_every or not cfg.dataset.eval_split:
            return None
        try:
            bank = self.data if self.data.labels is not None else self._dataset("train")
            queries = self._dataset(cfg.dataset.eval_split)
        except DogoError as error:
            if dist.is_main_process():
                self.log(
                    f"kNN monitor and probes off: no labelled {cfg.dataset.eval_split!r} split ({error}); add "
                    f"one, or set dataset.eval_split: null to silence this"
                )
            return None
        if bank.labels is None or queries.labels is None:
            return None
        limit = cfg.logging.monitor_limit
        return bank.subset(slice(limit)), queries.subset(slice(limit))  # slice(None): all

    # ------------------------------------------------------------------ the loop

    def fit(self) -> dict[str, Any]:
        """Train to the configured number of epochs; returns the last epoch's metrics (as in metrics.jsonl)."""
        cfg = self.config
        if dist.is_main_process() and self.run_dir.is_dir():
            from dogo.guards.ownership import mark

            mark(self.run_dir, "run")  # a run directory not made by prepare_run_dir (the Python API) is one now
        log = TrainingLog(
            cfg, self.layout, [p.label for p in self.cohort.peers], self.total_steps, self.step, self._window, self.log
        )
        runner = PeerRunner(len(self.cohort), self.settings.concurrent_peers)
        last_epoch: dict[str, Any] = {}
        # The next steps' batches are gathered (from memory or the store's memory map) while this one trains.
        gatherer = BatchGatherer(self.data.images, self.sampler, self.step, self.total_steps, self.device)
        run_began, first_step = time.perf_counter(), self.step
        try:
            with self._stop_on_signals():
                if self.step == 0 and 0 in self.keep_at:
                    self.keep(log)  # the initialisation: a budget like any other
                while self.step < self.total_steps:
                    epoch = self.step // self.steps_per_epoch
                    began, waited = time.perf_counter(), gatherer.wait_s
                    images = gatherer.get(self.step)
                    seeds = self.sampler.view_seeds(self.step, len(self.cohort))
                    result, rates = training_step(
                        self.setup, images, seeds, self.step, nonfinite=cfg.train.nonfinite, runner=runner
                    )
                    if not result.finite and cfg.train.nonfinite == "stop":
                        raise DogoError(
                            f"non-finite {result.bad_term} at step {self.step} (epoch {epoch + 1}); stopped, "
                            f"{self._last_good()} — lower the learning rate or set train.nonfinite=skip"
                        )
                    self.step += 1
                    # skipped (train.nonfinite=skip, or fp16's scaler) when bad_term is set
                    log.after_step(
                        self.step,
                        epoch,
                        result.losses,
                        rates,
                        result.bad_term,
                        last=self.step == self.total_steps,
                        data_wait_s=gatherer.wait_s - waited,
                        step_s=time.perf_counter() - began,
                    )
                    end_of_epoch = self.step % self.steps_per_epoch == 0 or self.step == self.total_steps
                    if self.step in self.keep_at:
                        self.keep(log)
                    if end_of_epoch:
                        last_epoch = self._end_epoch(epoch, log)
                    elif cfg.logging.save_every_steps and self.step % cfg.logging.save_every_steps == 0:
                        self.save(log)
                    if self._stopped(end_of_epoch, log):
                        break
            if self.step >= self.total_steps and not cfg.logging.keep_previous and dist.is_main_process():
                drop_previous(self.layout.checkpoints)  # finished cleanly: no fallback needed
        finally:
            gatherer.close()
            runner.close()
            log.close(finished=self.step >= self.total_steps)
        if dist.is_main_process():
            self.summarise(time.perf_counter() - run_began, first_step)
        if self.stop_requested is not None:  # last, under the table: how to go on
            self.log(
                f"stopped by {self.stop_requested} at step {self.step}; "
                f"resume with `dogo pretrain --resume {self.run_dir}`"
            )
        return last_epoch

    def summarise(self, seconds: float, first_step: int = 0) -> None:
        """The end-of-run table: per peer the final loss (and KL) and best kNN; steps, time, images/s, checkpoint."""
        from dogo.training.summary import read_rows, summary_lines

        labels = [p.label for p in self.cohort.peers]
        epochs = -(-self.step // self.steps_per_epoch)
        for line in summary_lines(
            read_rows(self.layout.metrics, labels),
            labels,
            steps=self.step,
            epochs=epochs,
            seconds=seconds,
            checkpoint=self.layout.last_checkpoint,
            resumed_at=first_step,
        ):
            self.log(line)

    @contextlib.contextmanager
    def _stop_on_signals(self):
        """SIGINT / SIGTERM ask the loop to stop after the step in flight (with a checkpoint)."""
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, self._request_stop)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stopped(self, end_of_epoch: bool, log: TrainingLog) -> bool:
        """Whether a signal (to this or any rank) stops the run here; all ranks stop at the same step."""
        if not dist.any_process(self.stop_requested is not None):
            return False
        self.stop_requested = self.stop_requested or "a signal to another process"
        if not end_of_epoch:
            self.save(log)
        return True

    def _end_epoch(self, epoch: int, log: TrainingLog) -> dict[str, Any]:
        cfg = self.config
        row: dict[str, Any] = {"epoch": epoch + 1, "step": self.step}
        if self.monitor is not None and (epoch + 1) % cfg.logging.knn_every == 0 and dist.is_main_process():
            row.update(self.knn_monitor())
        row = log.end_epoch(row)
        self.save(log)
        if cfg.logging.save_every and (epoch + 1) % cfg.logging.save_every == 0 and dist.is_main_process():
            path = self.layout.epoch_checkpoint(epoch + 1)
            if path.is_symlink():  # the user's link by that name: never written through, never replaced
                self._warn_once(
                    f"{path}: not written: {what_is(path)}; dogo never writes through or replaces a link among "
                    "its checkpoints (remove or rename the link to keep this epoch's checkpoint)"
                )
            else:
                save_checkpoint(path, self.state(log))
            prune_epoch_checkpoints(self.layout.checkpoints, cfg.logging.keep_last, warn=self._warn_once)
        return row

    def _warn_once(self, message: str) -> None:
        """A warning on stderr, once per run however many epochs meet it (a link among the checkpoints)."""
        if message not in self._warned:
            self._warned.add(message)
            print(f"warning: {message}", file=sys.stderr)

    def knn_monitor(self) -> dict[str, float]:
        """Weighted-kNN top-1 of every peer's frozen encoder on the monitor split."""
        from dogo.training.monitor import extract_features, knn_accuracy

        assert self.monitor is not None, "knn_monitor() runs only when there is monitor data"
        bank, queries = self.monitor
        # _load_monitor_data keeps labelled splits only; extract_features returns these labels.
        assert bank.labels is not None and queries.labels is not None
        num_classes = int(max(bank.labels.max(), queries.labels.max())) + 1
        out = {}
        size = self.config.dataset.image_size
        for i, peer in enumerate(self.cohort.peers):
            with (
                self.settings.autocast
            ):  # the training precision: a monitor, not a final score (features come back fp32)
                train_x, _ = extract_features(
                    peer.encoder, bank, size, device=self.device, normalization=self.normalization
                )
                test_x, _ = extract_features(
                    peer.encoder, queries, size, device=self.device, normalization=self.normalization
                )
            top1, top5 = knn_accuracy(
                train_x,
                bank.labels,
                test_x,
                queries.labels,
                k=self.config.logging.knn_k,
                temperature=self.config.logging.knn_temperature,
                num_classes=num_classes,
            )
            out[f"peer/{i}/knn_top1"] = float(top1)
            out[f"peer/{i}/knn_top5"] = float(top5)
        return out

    def _request_stop(self, signum, frame) -> None:
        self.stop_requested = signal.Signals(signum).name

    # ------------------------------------------------------------------ checkpoints

    def state(self, log: TrainingLog | None = None) -> dict[str, Any]:
        """Everything needed to continue exactly as if the run had never stopped.

        ``config`` (resolved), ``step``, ``epoch`` and ``step_in_epoch``, every peer's weights
        (``peers``) and optimiser state (``optimizers``), the learning rates of this step (``lr``:
        the schedules are precomputed per step from the config, so the step is their whole state
        and no scheduler state is stored), the Python, numpy, torch (and CUDA) RNG states,
        ``scaler`` (under fp16 each peer's GradScaler state, None for a frozen peer; None for bf16
        and fp32, which need no scaler), the metrics
        bookkeeping (``metrics_bytes``: the length of metrics.jsonl, truncated to it on resume;
        ``metrics_window``: the steps not yet averaged into a row) and the peer labels. The data
        order and the views are not generator states to save: they are drawn from generators
        seeded by (seed, epoch) and (seed, epoch, step, peer, rank), redrawn identically.
        """
        return {
            "config": self.config.dump(),
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "step_in_epoch": self.step % self.steps_per_epoch,
            "peers": [peer.state_dict() for peer in self.cohort.peers],
            "optimizers": [opt.state_dict() if opt is not None else None for opt in self.cohort.optimizers],
            "lr": [schedule[min(self.step, len(schedule) - 1)] for schedule in self.cohort.schedules],
            "scaler": None
            if self.setup.scalers is None
            else [None if scaler is None else scaler.state_dict() for scaler in self.setup.scalers],
            "rng": rng_state(),
            "metrics_bytes": log.tell() if log is not None else 0,
            "metrics_window": [dict(row) for row in self._window],
            "labels": [peer.label for peer in self.cohort.peers],
        }

    def save(self, log: TrainingLog | None = None) -> None:
        """Write ``checkpoints/last.pt`` atomically, keeping the one it replaces as ``last.prev.pt``."""
        if dist.is_main_process():
            save_checkpoint(self.layout.last_checkpoint, self.state(log), keep_previous=True)

    def keep(self, log: TrainingLog | None = None) -> None:
        """Keep every peer's weights at this step (``train.keep_at``) in ``checkpoints/step-N.pt``, and
        ``last.pt`` with them, so that a run stopped later resumes from here rather than replaying."""
        if dist.is_main_process():
            state = self.state(log)
            keep_weights(self.run_dir, self.step, state)
            save_checkpoint(self.layout.last_checkpoint, state, keep_previous=True)

    def _last_good(self) -> str:
        last = self.layout.last_checkpoint
        if last.exists():
            return f"the last good checkpoint {last} is kept (resume with `dogo pretrain --resume {self.run_dir}`)"
        return "no checkpoint had been written yet"

    def _restore(self, state: dict[str, Any], path: Path) -> None:
        """Continue from the checkpoint ``path``'s ``state``: each peer's weights read as every reader of weights
        reads them (:func:`dogo.guards.verified.check_weights`: of the config's shapes, finite), then the rest."""
        from dogo.guards.verified import check_weights

        fix = (
            "the file is not what dogo wrote (damaged, or edited); move it aside and `dogo pretrain --resume` "
            "falls back to an older checkpoint"
        )
        try:
            for k, (peer, weights) in enumerate(zip(self.cohort.peers, state["peers"], strict=True)):
                check_weights(peer, weights, f"{path}: peer {k} ({peer.label})", fix)
                peer.load_state_dict(weights)
            for optimizer, saved in zip(self.cohort.optimizers, state["optimizers"], strict=True):
                if (optimizer is None) != (saved is None):
                    raise ValueError("a peer is frozen in one and trainable in the other")
                if optimizer is not None:
                    optimizer.load_state_dict(saved)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"{self.run_dir}: the checkpoint's weights do not fit this config's models "
                f"({' '.join(str(exc).split())[:160]}); it comes from another config"
            ) from None
        if self.setup.scalers is not None and state.get("scaler"):
            for scaler, saved in zip(self.setup.scalers, state["scaler"], strict=True):
                if scaler is not None and saved is not None:
                    scaler.load_state_dict(saved)
        self.step = int(state["step"])
        self._window = [dict(row) for row in state.get("metrics_window", [])]
        set_rng_state(state["rng"])
        if dist.is_main_process():
            # Lines written after the checkpoint are replayed by the resumed run; a torn last line
            # (a write cut by a crash) is cut too, so the next row starts on a line of its own.
            note = restore_log(self.layout.metrics, int(state["metrics_bytes"]))
            if note:
                self.restore_notes.append(note)

    @classmethod
    def resume(
        cls, run_dir: str | Path, overrides: Sequence[str] = (), *, warn: Callable[[str], None] | None = None, **kwargs
    ) -> Trainer:
        """A trainer that continues ``run_dir`` from its newest good checkpoint.

        ``overrides`` (``key=value``) may change settings that alter training (e.g. more
        epochs); they are checked against the checkpoint's config and ``config.yaml``
        (:func:`dogo.rundir.resume_config`), then written back to ``config.yaml`` and recorded
        in ``resume-log.jsonl``. Fallbacks to an older checkpoint are reported through ``warn``
        (default: stderr).
        """
        from dogo.runs.rundir import check_run_dir, record_resume, resume_checkpoint, resume_config
        from dogo.runs.runlock import acquire

        notes: list[str] = []

        def note(message: str) -> None:
            notes.append(message)
            if dist.is_main_process():
                (warn or (lambda m: print(f"warning: {m}", file=sys.stderr)))(message)

        run_dir = Path(run_dir)
        if dist.launched_rank() == 0:  # before anything in the folder is read or written (and before the group starts)
            acquire(check_run_dir(run_dir))
        path, state = resume_checkpoint(run_dir, note)
        config, changes = resume_config(run_dir, state.get("config", {}), list(overrides), path)
        trainer = cls(config, run_dir, _resume_state=state, _resume_from=path, **kwargs)
        for message in trainer.restore_notes:
            note(message)
        if dist.is_main_process():
            record_resume(
                run_dir,
                config,
                checkpoint=path,
                step=trainer.step,
                overrides=list(overrides),
                changes=changes,
                fallback=notes[0] if notes else None,
            )
        return trainer
