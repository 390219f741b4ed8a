"""The training loop: a cohort of peers, each on its SSL objective plus the DoGo KL term.

One step (``train_step``) reads top to bottom: draw each peer's two views, forward every peer,
SSL terms, distillation terms, one backward, step every optimiser. Everything random in a step
is drawn from generators seeded by (seed, epoch, step, peer), and the data order by (seed,
epoch), so a run resumed from any checkpoint continues exactly as if it had never stopped.

The run directory holds ``config.yaml``, ``metrics.jsonl`` (one JSON object per logged step
and per epoch), TensorBoard events under ``tb/`` and ``checkpoints/{last,epoch-N}.pt``.
"""

from __future__ import annotations

import json
import math
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from dogo import dist
from dogo.checkpoint import load_checkpoint, save_checkpoint
from dogo.cohort import Cohort
from dogo.config import RunConfig, build_config
from dogo.data import ImageDataset, load_dataset
from dogo.distill import SimilarityKL, cohort_distillation
from dogo.errors import CheckpointError, ConfigError, DogoError
from dogo.runtime import (autocast_for, resolve_channels_last, resolve_device, resolve_precision,
                          seed_everything, set_threads, step_seed)


@dataclass
class StepResult:
    """What one step produced, as floats, for logging."""

    losses: dict[str, float]          # "peer/<i>/loss", "peer/<i>/loss/ssl", "peer/<i>/loss/kl", ...
    finite: bool
    bad_term: str | None = None


def draw_views(cohort: Cohort, images: torch.Tensor, seeds: list[int], device: torch.device,
               channels_last: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each peer's two augmented views of the same uint8 images (its own recipe and draws)."""
    views = []
    for peer, seed in zip(cohort.peers, seeds):
        generator = torch.Generator().manual_seed(seed)
        pair = tuple(peer.recipe(images, generator).to(device, non_blocking=True) for _ in range(2))
        if channels_last:
            pair = tuple(v.contiguous(memory_format=torch.channels_last) for v in pair)
        views.append(pair)
    return views


def train_step(cohort: Cohort, views: list[tuple[torch.Tensor, torch.Tensor]], kl: SimilarityKL,
               autocast, nonfinite: str = "stop") -> StepResult:
    """One optimisation step of every peer on its views; returns the losses as floats."""
    for optimizer in cohort.optimizers:
        optimizer.zero_grad(set_to_none=True)
    outputs = [peer(a, b, autocast) for peer, (a, b) in zip(cohort.peers, views)]
    kl_terms, _ = cohort_distillation(outputs, [p.objective.name for p in cohort.peers],
                                      [p.distill_weight for p in cohort.peers], kl)
    totals = [peer.ssl_weight * out.loss + kl_k for peer, out, kl_k in zip(cohort.peers, outputs, kl_terms)]

    losses: dict[str, float] = {}
    bad = None
    for i, (out, kl_k, total) in enumerate(zip(outputs, kl_terms, totals)):
        terms = {"loss": total, "loss/ssl": out.loss, "loss/kl": kl_k}
        for term, value in terms.items():
            losses[f"peer/{i}/{term}"] = float(value.detach())
            if bad is None and not math.isfinite(losses[f"peer/{i}/{term}"]):
                bad = f"peer {i} ({cohort.peers[i].label}) {term}"
        losses[f"peer/{i}/collapse_std"] = float(out.collapse_std)
    if bad is not None and nonfinite == "skip":
        return StepResult(losses, False, bad)
    if bad is None:
        # Teachers are detached, so one backward of the sum gives every peer its own gradient.
        torch.stack(totals).sum().backward()
        for optimizer in cohort.optimizers:
            optimizer.step()
    return StepResult(losses, bad is None, bad)


class Trainer:
    """Pretrains a cohort from a :class:`RunConfig` into a run directory.

    ``Trainer(config, run_dir).fit()`` starts a run; ``Trainer.resume(run_dir).fit()`` continues
    one from ``checkpoints/last.pt``.
    """

    def __init__(self, config: RunConfig, run_dir: str | Path, *, log: Callable[[str], None] = print,
                 _resume_state: dict[str, Any] | None = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.log = log
        set_threads(config.train.num_threads)
        seed_everything(config.seed)
        self.device = resolve_device(config.train.device)
        self.precision = resolve_precision(config.train.precision, self.device)
        self.channels_last = resolve_channels_last(config.train.channels_last)
        self.autocast = autocast_for(self.precision, self.device)

        self.data = self._load_training_data()
        self.batch_size = config.train.batch_size // dist.world_size()
        if config.train.batch_size > len(self.data.images):
            raise ConfigError(
                f"train.batch_size={config.train.batch_size} is larger than the dataset "
                f"({len(self.data.images)} images in {config.dataset.name}/{config.dataset.split}); lower it"
            )
        self.steps_per_epoch = len(self.data.images) // config.train.batch_size
        self.total_steps = self.steps_per_epoch * config.train.epochs
        if config.train.max_steps:
            self.total_steps = min(self.total_steps, config.train.max_steps)

        torch.manual_seed(config.seed)
        self.cohort = Cohort.from_config(config, self.steps_per_epoch).to(self.device, self.channels_last)
        self.kl = SimilarityKL(config.distill.temperature, config.distill.reduction)
        self.monitor = self._load_monitor_data()
        self.step = 0
        self.stop_requested: str | None = None
        if _resume_state is not None:
            self._restore(_resume_state)

    # ------------------------------------------------------------------ set-up

    def _dataset(self, split: str) -> ImageDataset:
        d = self.config.dataset
        return load_dataset(d.name, root=d.root, split=split, download=d.download, **d.options)

    def _load_training_data(self) -> ImageDataset:
        return self._dataset(self.config.dataset.split)

    def _load_monitor_data(self) -> tuple[ImageDataset, ImageDataset] | None:
        """Labelled (bank, queries) for the online kNN, or None when the data has no labels."""
        cfg = self.config
        if not cfg.logging.knn_every or not cfg.dataset.eval_split:
            return None
        try:
            bank = self.data if self.data.labels is not None else self._dataset("train")
            queries = self._dataset(cfg.dataset.eval_split)
        except DogoError:
            return None
        if bank.labels is None or queries.labels is None:
            return None
        limit = cfg.logging.monitor_limit
        return _head(bank, limit), _head(queries, limit)

    # ------------------------------------------------------------------ the loop

    def fit(self) -> dict[str, Any]:
        """Train to the configured number of epochs; returns the last epoch's metrics."""
        from tqdm import tqdm

        cfg = self.config
        writer = self._tensorboard()
        metrics = open(self.run_dir / "metrics.jsonl", "a") if dist.is_main_process() else None
        previous = {signal.SIGINT: signal.getsignal(signal.SIGINT), signal.SIGTERM: signal.getsignal(signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, self._request_stop)
        last_epoch: dict[str, Any] = {}
        bar = tqdm(total=self.total_steps, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=not (cfg.logging.progress and dist.is_main_process()), desc="pretrain")
        try:
            window: list[dict[str, float]] = []
            window_start, window_images = time.perf_counter(), 0
            while self.step < self.total_steps:
                epoch, index_in_epoch = divmod(self.step, self.steps_per_epoch)
                order = self._epoch_order(epoch)
                batch = order[index_in_epoch * cfg.train.batch_size:(index_in_epoch + 1) * cfg.train.batch_size]
                images = self.data.images[dist.shard(batch)]
                seeds = self._view_seeds(epoch, index_in_epoch)
                views = draw_views(self.cohort, images, seeds, self.device, self.channels_last)
                self.cohort.train(True)
                rates = self.cohort.set_lr(self.step)
                result = train_step(self.cohort, views, self.kl, self.autocast, cfg.train.nonfinite)
                if not result.finite and cfg.train.nonfinite == "stop":
                    raise DogoError(
                        f"non-finite {result.bad_term} at step {self.step} (epoch {epoch}); the last good "
                        f"checkpoint is {self.run_dir / 'checkpoints' / 'last.pt'} — lower the learning rate or "
                        f"set train.nonfinite=skip"
                    )
                self.step += 1
                window.append({**result.losses, **{f"peer/{i}/lr": lr for i, lr in enumerate(rates)}})
                window_images += cfg.train.batch_size
                bar.update(1)
                if self.step % cfg.logging.log_every == 0 or self.step == self.total_steps:
                    elapsed = time.perf_counter() - window_start
                    row = {"step": self.step, "epoch": epoch, **_mean(window),
                           "images_per_s": window_images / max(elapsed, 1e-9)}
                    if not result.finite:
                        row["skipped"] = result.bad_term
                    self._write(metrics, writer, row)
                    bar.set_postfix({"loss": f"{row['peer/0/loss']:.3f}", "img/s": f"{row['images_per_s']:.0f}"})
                    window, window_start, window_images = [], time.perf_counter(), 0
                end_of_epoch = self.step % self.steps_per_epoch == 0 or self.step == self.total_steps
                if end_of_epoch:
                    last_epoch = self._end_epoch(epoch, metrics, writer)
                elif cfg.logging.save_every_steps and self.step % cfg.logging.save_every_steps == 0:
                    self.save(metrics)
                if self.stop_requested:
                    if not end_of_epoch:
                        self.save(metrics)
                    self.log(f"stopped by {self.stop_requested} at step {self.step}; resume with "
                             f"`dogo pretrain --resume {self.run_dir}`")
                    break
        finally:
            bar.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if metrics:
                metrics.close()
            if writer:
                writer.close()
        return last_epoch

    def _end_epoch(self, epoch: int, metrics, writer) -> dict[str, Any]:
        cfg = self.config
        row: dict[str, Any] = {"epoch": epoch + 1, "step": self.step}
        if self.monitor is not None and (epoch + 1) % cfg.logging.knn_every == 0:
            row.update(self.knn_monitor())
        self._write(metrics, writer, row)
        self.save(metrics)
        if cfg.logging.save_every and (epoch + 1) % cfg.logging.save_every == 0 and dist.is_main_process():
            save_checkpoint(self.run_dir / "checkpoints" / f"epoch-{epoch + 1}.pt", self.state(metrics))
        return row

    def knn_monitor(self) -> dict[str, float]:
        """Weighted-kNN top-1 of every peer's frozen encoder on the monitor split."""
        from dogo.evaluate.features import extract_features
        from dogo.evaluate.knn import knn_accuracy

        bank, queries = self.monitor
        num_classes = int(max(bank.labels.max(), queries.labels.max())) + 1
        out = {}
        for i, peer in enumerate(self.cohort.peers):
            train_x, train_y = extract_features(peer.encoder, bank, self.config.dataset.image_size, device=self.device)
            test_x, test_y = extract_features(peer.encoder, queries, self.config.dataset.image_size, device=self.device)
            top1, top5 = knn_accuracy(train_x, train_y, test_x, test_y, k=self.config.logging.knn_k,
                                      temperature=self.config.logging.knn_temperature, num_classes=num_classes)
            out[f"peer/{i}/knn_top1"] = float(top1)
            out[f"peer/{i}/knn_top5"] = float(top5)
        return out

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        if getattr(self, "_order_epoch", None) != epoch:
            generator = torch.Generator().manual_seed(step_seed(self.config.seed, epoch))
            self._order = torch.randperm(len(self.data.images), generator=generator)
            self._order_epoch = epoch
        return self._order

    def _view_seeds(self, epoch: int, index: int) -> list[int]:
        shared = self.config.distill.views == "shared"
        return [step_seed(self.config.seed, epoch, index, 0 if shared else k, dist.rank())
                for k in range(len(self.cohort))]

    # ------------------------------------------------------------------ logging

    def _tensorboard(self):
        if not (self.config.logging.tensorboard and dist.is_main_process()):
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step or None)

    def _write(self, metrics, writer, row: dict[str, Any]) -> None:
        if metrics is None:
            return
        metrics.write(json.dumps(row) + "\n")
        metrics.flush()
        if writer is not None:
            for key, value in row.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)):
                    writer.add_scalar(key, value, row["step"])

    def _request_stop(self, signum, frame) -> None:
        self.stop_requested = signal.Signals(signum).name

    # ------------------------------------------------------------------ checkpoints

    def state(self, metrics=None) -> dict[str, Any]:
        """Everything needed to continue exactly: weights, optimisers, step, RNGs, config."""
        return {
            "config": self.config.dump(),
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "peers": [peer.state_dict() for peer in self.cohort.peers],
            "optimizers": [opt.state_dict() for opt in self.cohort.optimizers],
            "rng": {"torch": torch.get_rng_state(), "numpy": _numpy_state(), "python": _python_state()},
            "metrics_bytes": metrics.tell() if metrics is not None else 0,
            "labels": [peer.label for peer in self.cohort.peers],
        }

    def save(self, metrics=None) -> None:
        if dist.is_main_process():
            save_checkpoint(self.run_dir / "checkpoints" / "last.pt", self.state(metrics))

    def _restore(self, state: dict[str, Any]) -> None:
        for peer, weights in zip(self.cohort.peers, state["peers"]):
            peer.load_state_dict(weights)
        for optimizer, saved in zip(self.cohort.optimizers, state["optimizers"]):
            optimizer.load_state_dict(saved)
        self.step = int(state["step"])
        torch.set_rng_state(state["rng"]["torch"])
        _set_numpy_state(state["rng"]["numpy"])
        _set_python_state(state["rng"]["python"])
        metrics_path = self.run_dir / "metrics.jsonl"
        if metrics_path.exists() and dist.is_main_process():
            # Lines written after the checkpoint are replayed by the resumed run.
            with open(metrics_path, "r+b") as handle:
                handle.truncate(int(state["metrics_bytes"]))

    @classmethod
    def resume(cls, run_dir: str | Path, overrides: list[str] = (), **kwargs) -> "Trainer":
        run_dir = Path(run_dir)
        last = run_dir / "checkpoints" / "last.pt"
        if not last.exists():
            raise CheckpointError(f"{run_dir}: no checkpoint to resume (expected {last}); start a new run instead")
        state = load_checkpoint(last)
        config = build_config(_apply(state["config"], overrides), str(run_dir / "config.yaml"))
        return cls(config, run_dir, _resume_state=state, **kwargs)


def _apply(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    from dogo.config import apply_override, parse_override

    for text in overrides:
        apply_override(data, *parse_override(text))
    return data


def _head(ds: ImageDataset, limit: int | None) -> ImageDataset:
    if limit is None or len(ds.images) <= limit:
        return ds
    return ImageDataset(ds.name, ds.images[:limit], ds.labels[:limit], ds.classes, ds.source)


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([r[key] for r in rows if key in r])) for key in rows[0]}


def _numpy_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
            "has_gauss": has_gauss, "gauss": gauss}


def _set_numpy_state(s: dict[str, Any]) -> None:
    np.random.set_state((s["name"], s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["gauss"]))


def _python_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _set_python_state(s: list[Any]) -> None:
    random.setstate((s[0], tuple(s[1]), s[2]))
