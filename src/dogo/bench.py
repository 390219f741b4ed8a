"""``dogo bench``: training throughput of a configured cohort, against the machine's ceiling and the reference.

Three measurements in one run, so that every ratio compares numbers taken on the same machine
under the same load:

1. **dogo** (:func:`time_training`): real training steps of the configured cohort, exactly the
   trainer's loop body: a batch indexed from uint8 images held in memory, each peer's two
   augmented views (:func:`dogo.train.draw_views`), :func:`dogo.train.train_step` (forward,
   SSL and KL losses, backward, every optimiser), after warm-up. Images/s per step (an image =
   two views through every peer), median, min and max. Then a few *instrumented* steps
   (:func:`split_step`) split a step's time into augmentation, each peer's forward and backward,
   heads + SSL losses, distillation, optimiser and the rest; they compute the same thing, peers
   one after another, with every optimiser stepped after the last backward.
2. **The ceiling** (:func:`measure_backbone`): for every distinct backbone of the cohort,
   forward + backward + the peer's optimiser on pre-made tensors, two views of ``batch``
   images per step, in each setting this machine offers (fp32, fp32 + channels_last,
   bf16 autocast + channels_last, and the fastest of those plus ``torch.compile``). The fastest
   setting of each backbone gives the ceiling in images/s: ``1 / sum_k (2 / views_per_s_k)``.
   On a CPU with a core per peer the backbones are also run side by side, a thread each
   (:func:`measure_side_by_side`), as ``train.concurrent_peers`` runs them; the faster counts.
   It runs with ``train.allocator=retain`` where that exists, whatever the run's. The table
   of settings is the measurement that picks ``precision: auto`` and
   ``channels_last: auto`` (:mod:`dogo.runtime`).
3. **The reference**, stood in as REFERENCE.md §6 describes: the reference cohort (two ResNet-18
   SimCLR peers, batch 256, 32 px, fp32) trains at ``0.936 x`` a quarter of the views/s of a
   plain fp32 ResNet-18 forward + backward + Adam at batch 256, 32 px, on pre-made tensors,
   measured here in a child process with libc's allocator as the reference runs (dogo's
   allocator setting would make it 30 % faster). Its peak memory is stood in by dogo's own
   training step in the reference's settings (fp32, NCHW, views forwarded separately, no
   compile, libc's allocator) in another child process, so that its high-water mark is its own.

On the CPU peak memory is the process's resident high-water mark (``ru_maxrss``, the same as
``VmHWM``) at the end of the timed steps, before the ceiling runs; on a GPU
``torch.cuda.max_memory_allocated``. Tracemalloc does not see torch's allocations.

Targets (issue 6): in the reference setting at least 3x the reference's images/s (4x on a CPU
with AMX), at least 90 % of the ceiling, and peak memory no more than the reference's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import torch

from dogo.config import OptimizerConfig, RunConfig
from dogo.errors import DogoError
from dogo.peer_threads import PeerRunner
from dogo.runtime import (autocast_for, compile_module, configure_allocator, cpu_flags, cpu_has_amx, resolve_device,
                          seed_everything, set_threads, step_seed)

__all__ = [
    "REFERENCE_RATIO",
    "run_bench",
    "time_training",
    "split_step",
    "measure_backbone",
    "measure_ceiling",
    "measure_side_by_side",
    "reference_stand_in",
    "stand_in_result",
    "format_report",
    "add_bench_parser",
    "cmd_bench",
]

#: The reference cohort's images/s as a fraction of a quarter of plain fp32 ResNet-18 views/s (REFERENCE.md §6).
REFERENCE_RATIO = 0.936
#: The batch and image size of the reference setting and of the stand-in measurement.
REFERENCE_BATCH, REFERENCE_SIZE = 256, 32
#: Targets of issue 6.
SPEEDUP_TARGET, SPEEDUP_TARGET_AMX, CEILING_TARGET = 3.0, 4.0, 0.90

#: Native shapes (C, H, W) of the datasets, for ``--synthetic`` (others: 3 x image_size x image_size).
SYNTHETIC_SHAPES = {
    "fashion-mnist": (1, 28, 28), "mnist": (1, 28, 28), "digits": (1, 8, 8),
    "cifar10": (3, 32, 32), "cifar100": (3, 32, 32), "cifar10-lt": (3, 32, 32), "cifar10-imbalanced": (3, 32, 32),
    "stl10": (3, 96, 96), "tiny-imagenet": (3, 64, 64),
}

Log = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


# ------------------------------------------------------------------------------------- clocks, memory


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clock(device: torch.device) -> float:
    _sync(device)
    return time.perf_counter()


def _rss_mb() -> float:
    """Current resident set size of this process in MB (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def _peak_rss_mb() -> float:
    """This process's resident high-water mark in MB (``ru_maxrss``: KB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _peak_rss_mb()


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


# ------------------------------------------------------------------------------------- data


def bench_images(config: RunConfig, synthetic: bool, count: int) -> tuple[torch.Tensor, str]:
    """The uint8 ``N x C x H x W`` images the steps index into, and where they came from.

    ``synthetic``: ``max(count, 2 * batch)`` random images of the dataset's native shape
    (:data:`SYNTHETIC_SHAPES`), else the configured dataset's training split, in memory as
    the trainer holds it.
    """
    d = config.dataset
    if synthetic:
        shape = SYNTHETIC_SHAPES.get(d.name, (3, d.image_size, d.image_size))
        generator = torch.Generator().manual_seed(config.seed)
        images = torch.randint(0, 256, (max(count, 2 * config.train.batch_size), *shape), generator=generator,
                               dtype=torch.uint8)
        return images, f"synthetic uint8 {'x'.join(map(str, shape))}"
    from dogo.data import load_dataset

    try:
        data = load_dataset(d.name, root=d.root, split=d.split, download=d.download, **d.options)
    except DogoError as exc:
        raise DogoError(f"{exc} (or bench on random images of the same shape with --synthetic)") from None
    if config.train.batch_size > len(data.images):
        raise DogoError(f"train.batch_size={config.train.batch_size} is larger than {d.name}/{d.split} "
                        f"({len(data.images)} images); lower it")
    return data.images, f"{d.name}/{d.split} ({len(data.images)} images in memory)"


# ------------------------------------------------------------------------------------- the cohort


class _Setup:
    """The trainer's set-up of a cohort for a config: its step settings, the cohort and the KL term."""

    def __init__(self, config: RunConfig, steps_per_epoch: int) -> None:
        from dogo.distill import SimilarityKL
        from dogo.train import StepSettings, build_cohort

        set_threads(config.train.num_threads)
        seed_everything(config.seed)
        self.config = config
        self.settings = StepSettings.resolve(config, resolve_device(config.train.device))
        self.device = self.settings.device
        self.cohort = build_cohort(config, steps_per_epoch, self.device, self.settings.channels_last)
        self.kl = SimilarityKL(config.distill.temperature, config.distill.reduction)

    def seeds(self, step: int) -> list[int]:
        shared = self.config.distill.views == "shared"
        return [step_seed(self.config.seed, 0, step, 0 if shared else k) for k in range(len(self.cohort))]


def _batches(images: torch.Tensor, batch: int, seed: int):
    """Endless random batches of indices into ``images`` (a new permutation per pass)."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(order) - batch + 1, batch):
            yield order[start:start + batch]


def time_training(setup: _Setup, images: torch.Tensor, steps: int, warmup: int, log: Log = _quiet) -> dict[str, Any]:
    """Seconds per real training step (the trainer's loop body) after ``warmup`` untimed steps."""
    from dogo.train import draw_views, train_step

    config, device = setup.config, setup.device
    batch = config.train.batch_size
    batches = _batches(images, batch, config.seed)
    seconds, finite = [], True
    runner = PeerRunner(len(setup.cohort), setup.settings.concurrent_peers)
    try:
        for step in range(warmup + steps):
            start = _clock(device)
            chunk = images[next(batches)]
            views = draw_views(setup.cohort, chunk, setup.seeds(step), device, setup.settings.channels_last)
            setup.cohort.train(True)
            setup.cohort.set_lr(step)
            result = train_step(setup.cohort, views, setup.kl, setup.settings.autocast, "skip", runner)
            elapsed = _clock(device) - start
            finite = finite and result.finite
            if step >= warmup:
                seconds.append(elapsed)
            log(f"  step {step + 1}/{warmup + steps}{' (warm-up)' if step < warmup else ''}: {elapsed:.2f} s, "
                f"{batch / elapsed:.1f} images/s")
    finally:
        runner.close()
    rates = [batch / s for s in seconds]
    return {"step_s": seconds, "images_per_s": _summary(rates), "finite": finite}


def split_step(setup: _Setup, images: torch.Tensor, step: int) -> dict[str, float]:
    """Seconds of each part of one instrumented training step.

    The same parts as :func:`dogo.train.train_step` (``Peer.forward``, ``cohort_distillation``,
    the optimisers), timed one by one: ``augmentation``; ``peer/<i>/forward`` (encoder, head
    and SSL loss; the head and SSL loss alone also as ``peer/<i>/heads_and_ssl``, a part of
    it); ``distillation`` (every KL term, the weighted totals and the float losses);
    ``peer/<i>/backward`` (the backward of the peer's total); ``optimiser`` (learning rates,
    zero_grad, step);
    ``other`` (indexing the batch and everything between the timed parts); ``total``.
    Peers run one after another here, all threads each, even where the timed steps run them
    side by side (``train.concurrent_peers``): the split says where the time goes, not how it
    overlaps.
    """
    from dogo.distill import cohort_distillation
    from dogo.train import draw_views

    cohort, device = setup.cohort, setup.device
    parts: dict[str, float] = {}
    objective_s = [0.0] * len(cohort)
    hooks = []
    for i, peer in enumerate(cohort.peers):
        # Timing hooks on the (never compiled) objective split the peer's forward.
        def pre(module, args, i=i):
            module._bench_start = _clock(device)

        def post(module, args, output, i=i):
            objective_s[i] += _clock(device) - module._bench_start

        hooks += [peer.objective.register_forward_pre_hook(pre), peer.objective.register_forward_hook(post)]
    try:
        start = _clock(device)
        chunk = images[torch.randint(0, len(images), (setup.config.train.batch_size,),
                                     generator=torch.Generator().manual_seed(step))]
        t = _clock(device)
        views = draw_views(cohort, chunk, setup.seeds(step), device, setup.settings.channels_last)
        parts["augmentation"] = _clock(device) - t
        t = _clock(device)
        cohort.train(True)
        cohort.set_lr(step)
        for optimizer in filter(None, cohort.optimizers):
            optimizer.zero_grad(set_to_none=True)
        parts["optimiser"] = _clock(device) - t
        outputs = []
        for i, (module, (a, b)) in enumerate(zip(cohort.train_modules, views)):
            t = _clock(device)
            outputs.append(module(a, b, setup.settings.autocast))
            parts[f"peer/{i}/forward"] = _clock(device) - t
            parts[f"peer/{i}/heads_and_ssl"] = objective_s[i]
        t = _clock(device)
        kl_terms, _ = cohort_distillation(outputs, [p.objective.name for p in cohort.peers],
                                          [p.distill_weight for p in cohort.peers], setup.kl)
        totals = [peer.ssl_weight * out.loss + kl_k for peer, out, kl_k in zip(cohort.peers, outputs, kl_terms)]
        _ = [float(x.detach()) for out, kl_k in zip(outputs, kl_terms) for x in (out.loss, kl_k)]
        parts["distillation"] = _clock(device) - t
        for i, total in enumerate(totals):
            t = _clock(device)
            if total.requires_grad:
                total.backward()
            parts[f"peer/{i}/backward"] = _clock(device) - t
        t = _clock(device)
        for optimizer in filter(None, cohort.optimizers):
            optimizer.step()
        parts["optimiser"] += _clock(device) - t
        total_s = _clock(device) - start
    finally:
        for hook in hooks:
            hook.remove()
    counted = sum(v for k, v in parts.items() if not k.endswith("heads_and_ssl"))
    parts["other"] = max(total_s - counted, 0.0)
    parts["total"] = total_s
    return parts


# ------------------------------------------------------------------------------------- the ceiling


def measure_backbone(name: str, width: float, image_size: int, batch: int, *, precision: str = "fp32",
                     channels_last: bool = False, compile: bool = False, forwards: int = 2,
                     optimizer: OptimizerConfig | None = None, steps: int = 3, warmup: int = 1,
                     device: torch.device | str = "cpu", seed: int = 0) -> dict[str, Any]:
    """Views/s of a backbone's forward + backward + optimiser step on pre-made tensors.

    Each step forwards ``forwards`` batches of ``batch`` random views (``3 x image_size^2``),
    backpropagates a scalar of the features and steps the optimiser (the peer's; Adam 3e-4 by
    default). ``views_per_s`` is ``forwards * batch`` over the median step time of ``steps``
    steps after ``warmup``; ``first_step_s`` includes compilation when ``compile``.
    """
    step = _backbone_step(name, width, image_size, batch, precision=precision, channels_last=channels_last,
                          compile=compile, forwards=forwards, optimizer=optimizer, device=device, seed=seed)
    device = torch.device(device)
    first = _timed(step, device)
    for _ in range(warmup - 1):
        step()
    seconds = [_timed(step, device) for _ in range(steps)]
    return {"views_per_s": forwards * batch / statistics.median(seconds), "step_s": seconds, "first_step_s": first}


def _timed(step: Callable[[], None], device: torch.device) -> float:
    start = _clock(device)
    step()
    return _clock(device) - start


def _backbone_step(name: str, width: float, image_size: int, batch: int, *, precision: str, channels_last: bool,
                   compile: bool, forwards: int, optimizer: OptimizerConfig | None, device: torch.device | str,
                   seed: int) -> Callable[[], None]:
    """A backbone with its optimiser and pre-made views; the returned function runs one step of it."""
    from dogo.models import build_backbone
    from dogo.optim import build_optimizer

    device = torch.device(device)
    torch.manual_seed(seed)
    model = build_backbone(name, image_size=image_size, width=width).to(device)
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = build_optimizer(list(model.parameters()), optimizer or OptimizerConfig())
    if compile:
        compile_module(model)
    autocast = autocast_for(precision, device)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast:
            features = [model(x) for _ in range(forwards)]
        sum(f.float().square().mean() for f in features).backward()
        opt.step()

    return step


def measure_side_by_side(config: RunConfig, device: torch.device, settings: list[dict[str, Any]], *,
                         steps: int = 3, warmup: int = 1) -> dict[str, Any]:
    """Images/s of the cohort's backbones run side by side (:class:`dogo.peer_threads.PeerRunner`).

    Every peer's backbone in its own thread with its share of the cores, each in the eager
    setting of ``settings`` (one per peer), two views of ``batch`` images per step each.
    """
    peers, batch = config.train.models, config.train.batch_size
    step_fns = [_backbone_step(p.backbone, p.width, config.dataset.image_size, batch,
                               precision=setting["precision"], channels_last=setting["channels_last"], compile=False,
                               forwards=2, optimizer=p.optimizer, device=device, seed=config.seed + k)
                for k, (p, setting) in enumerate(zip(peers, settings))]
    runner = PeerRunner(len(peers), True)
    try:
        def step() -> None:
            runner.map(lambda fn: fn(), step_fns)

        for _ in range(warmup):
            step()
        seconds = [_timed(step, device) for _ in range(steps)]
    finally:
        runner.close()
    return {"images_per_s": batch / statistics.median(seconds), "step_s": seconds,
            "threads_per_peer": runner.threads_per_peer, "settings": [s["name"] for s in settings]}


def ceiling_settings(device: torch.device) -> list[dict[str, Any]]:
    """The eager settings the ceiling tries (compile is added on top of the fastest).

    fp32 channels_last is left out on a CPU: dogo does not pick it there (see
    :func:`dogo.runtime.resolve_channels_last`; it crashed oneDNN on an AVX2-only CPU).
    """
    settings = [{"name": "fp32", "precision": "fp32", "channels_last": False}]
    if torch.device(device).type != "cpu":
        settings.append({"name": "fp32+cl", "precision": "fp32", "channels_last": True})
    settings.append({"name": "bf16+cl", "precision": "bf16", "channels_last": True})
    return settings


def measure_ceiling(config: RunConfig, device: torch.device, *, steps: int = 3, warmup: int = 1,
                    compile: bool = True, log: Log = _quiet) -> dict[str, Any]:
    """The fastest setting of every distinct backbone of the cohort, and the cohort's ceiling in images/s.

    A step of the cohort needs ``2 * batch`` views through every peer, so one peer after
    another the ceiling is ``1 / sum_k (2 / views_per_s_k)`` images/s with each backbone in its
    fastest setting. On a CPU with a core per peer the backbones also run side by side
    (:func:`measure_side_by_side`, each in its fastest eager setting); the ceiling is the
    faster of the two.
    """
    batch, size = config.train.batch_size, config.dataset.image_size
    backbones: list[dict[str, Any]] = []
    by_key: dict[tuple, dict[str, Any]] = {}
    for peer in config.train.models:
        key = (peer.backbone, peer.width)
        if key in by_key:
            by_key[key]["peers"] += 1
            continue
        row: dict[str, Any] = {"backbone": peer.backbone, "width": peer.width, "peers": 1, "settings": {}}
        for setting in ceiling_settings(device):
            result = measure_backbone(peer.backbone, peer.width, size, batch, precision=setting["precision"],
                                      channels_last=setting["channels_last"], optimizer=peer.optimizer,
                                      steps=steps, warmup=warmup, device=device, seed=config.seed)
            row["settings"][setting["name"]] = result["views_per_s"]
            log(f"  ceiling {_backbone_label(row)} {setting['name']}: {result['views_per_s']:.1f} views/s")
        best = max(ceiling_settings(device), key=lambda s: row["settings"][s["name"]])
        if compile:
            name = best["name"] + "+compile"
            try:
                result = measure_backbone(peer.backbone, peer.width, size, batch, precision=best["precision"],
                                          channels_last=best["channels_last"], compile=True,
                                          optimizer=peer.optimizer, steps=steps, warmup=warmup, device=device,
                                          seed=config.seed)
                row["settings"][name] = result["views_per_s"]
                row["compile_first_step_s"] = result["first_step_s"]
                log(f"  ceiling {_backbone_label(row)} {name}: {result['views_per_s']:.1f} views/s "
                    f"(first step with compilation {result['first_step_s']:.0f} s)")
            except Exception as exc:  # noqa: BLE001 - a compiler failure skips the setting, with the reason
                row["compile_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                log(f"  ceiling {_backbone_label(row)} {name}: skipped ({row['compile_error']})")
        row["best"] = max(row["settings"], key=row["settings"].get)
        row["views_per_s"] = row["settings"][row["best"]]
        by_key[key] = row
        backbones.append(row)
    seconds_per_image = sum(2 * row["peers"] / row["views_per_s"] for row in backbones)
    result = {"backbones": backbones, "images_per_s": 1 / seconds_per_image, "one_after_another": 1 / seconds_per_image,
              "batch": batch, "image_size": size, "views_per_step": 2 * batch}
    if device.type == "cpu" and len(config.train.models) > 1 and torch.get_num_threads() >= len(config.train.models):
        eager = {s["name"]: s for s in ceiling_settings(device)}
        best_eager = {key: max(eager, key=lambda n: row["settings"][n]) for key, row in by_key.items()}
        settings = [eager[best_eager[(p.backbone, p.width)]] for p in config.train.models]
        side = measure_side_by_side(config, device, settings, steps=steps, warmup=warmup)
        log(f"  ceiling side by side ({', '.join(side['settings'])}; {side['threads_per_peer']} thread(s) per peer): "
            f"{side['images_per_s']:.2f} images/s")
        result["side_by_side"] = side
        result["images_per_s"] = max(result["images_per_s"], side["images_per_s"])
    return result


def _backbone_label(row: dict[str, Any]) -> str:
    return row["backbone"] + ("" if row["width"] == 1 else f" x{row['width']:g}")


# ------------------------------------------------------------------------------------- the reference


def reference_stand_in(device: torch.device, *, steps: int = 3, warmup: int = 1,
                       timeout: float = 1800) -> dict[str, Any]:
    """One measurement of the plain fp32 ResNet-18 that stands in for the reference (REFERENCE.md §6).

    Views/s of a ResNet-18, CIFAR stem, fp32, NCHW, forward + backward + Adam at batch 256,
    32 px, on pre-made tensors, measured in a child process that runs as the reference does:
    libc's allocator untouched (dogo's ``train.allocator=retain`` alone makes it about 30 %
    faster, which the reference does not get). :func:`stand_in_result` turns measurements
    into the reference's images/s.
    """
    return _in_child("_stand_in_child", {"device": str(device), "steps": steps, "warmup": warmup}, timeout)


def stand_in_result(measurements: list[dict[str, Any]]) -> dict[str, Any]:
    """The reference's images/s: ``0.936 x`` a quarter of the *fastest* stand-in measurement.

    The bench measures the stand-in before dogo's steps and again after the ceiling; the same
    measurement has come out up to 15 % apart on a shared 2-core machine, so the faster one is
    kept: the speed-up is never flattered by a slow moment of the reference.
    """
    views = [m["views_per_s"] for m in measurements if "views_per_s" in m]
    if not views:
        return {"error": next((m["error"] for m in measurements if "error" in m), "not measured")}
    return {
        "images_per_s": REFERENCE_RATIO * max(views) / 4,
        "fp32_resnet18_views_per_s": max(views),
        "fp32_resnet18_views_per_s_each": views,
        "how": (f"stood in (REFERENCE.md §6): {REFERENCE_RATIO} x plain fp32 ResNet-18 views/s "
                f"(batch {REFERENCE_BATCH}, {REFERENCE_SIZE} px, forward+backward+Adam, pre-made tensors, "
                f"libc's allocator, a child process; the faster of {len(views)} measurements) / 4, in this run"),
    }


def _stand_in_child(request: dict[str, Any]) -> dict[str, Any]:
    plain = measure_backbone("resnet18", 1.0, REFERENCE_SIZE, REFERENCE_BATCH, forwards=1, steps=request["steps"],
                             warmup=request["warmup"], device=request["device"])
    return {"views_per_s": plain["views_per_s"]}


def _in_child(function: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run ``function(request)`` of this module in a fresh Python process; its JSON result or ``{"error"}``.

    A fresh process has its own peak RSS and libc's allocator settings, as the reference had.
    """
    code = f"import json, sys; from dogo import bench; print(json.dumps(bench.{function}(json.load(sys.stdin))))"
    try:
        done = subprocess.run([sys.executable, "-c", code], input=json.dumps(request), capture_output=True,
                              text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"child failed: {tail}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def is_reference_setting(config: RunConfig) -> bool:
    """Two ResNet-18 SimCLR peers, batch 256, 32 px: the setting REFERENCE.md §6 timed."""
    models = config.train.models
    return (len(models) == 2 and all(m.backbone == "resnet18" and m.width == 1 and m.objective == "simclr"
                                     for m in models)
            and config.train.batch_size == REFERENCE_BATCH and config.dataset.image_size == REFERENCE_SIZE)


def reference_memory(config: RunConfig, synthetic: bool, steps: int = 2, timeout: float = 1800) -> dict[str, Any]:
    """Peak memory of the reference's settings, in a child process so that its high-water mark is its own.

    The child runs dogo's training step with ``precision=fp32``, ``channels_last=off``,
    ``compile=false``, ``allocator=system`` (what the reference does: fp32, NCHW, each view
    forwarded separately, libc's allocator) on the same data, ``steps`` steps (the second
    holds the optimiser state and the activations). Also returns the images/s of the steps
    after the first: dogo end to end in the reference's settings, a check on the stand-in.
    """
    if steps < 2:
        raise ValueError("the reference's memory needs at least 2 steps (optimiser state + activations)")
    data = config.dump()
    data["train"].update(precision="fp32", channels_last="off", compile=False, allocator="system")
    result = _in_child("_memory_child", {"config": data, "synthetic": synthetic, "steps": steps}, timeout)
    if "error" not in result:
        result["how"] = ("dogo's training step in the reference's settings (fp32, NCHW, views forwarded separately, "
                         "no compile, libc's allocator), same data, peak RSS of a child process")
    return result


def _memory_child(request: dict[str, Any]) -> dict[str, Any]:
    from dogo.config import build_config

    config = build_config(request["config"])
    images, _ = bench_images(config, request["synthetic"], config.train.batch_size * 2)
    setup = _Setup(config, max(1, len(images) // config.train.batch_size))
    before = _rss_mb()
    timing = time_training(setup, images, steps=request["steps"] - 1, warmup=1)
    return {"peak_memory_mb": _peak_memory_mb(setup.device), "rss_before_steps_mb": before,
            "images_per_s": timing["images_per_s"]["median"]}


# ------------------------------------------------------------------------------------- the whole bench


def run_bench(config: RunConfig, steps: int = 5, warmup: int = 2, *, split_steps: int = 2, synthetic: bool = False,
              ceiling: bool = True, ceiling_steps: int = 3, ceiling_compile: bool = True, reference: bool = True,
              memory_reference: bool = True, log: Log = _quiet) -> dict[str, Any]:
    """Benchmark training of ``config``'s cohort; returns one JSON-ready dict.

    Keys: ``images_per_s`` (median over ``steps`` timed steps after ``warmup``),
    ``images_per_s_min``/``_max``, ``step_s``, ``split`` (mean seconds of each part over
    ``split_steps`` instrumented steps, with ``fraction``), ``peak_memory_mb``, and, when
    measured, ``ceiling_images_per_s``, ``ceiling`` (every backbone's views/s per setting),
    ``fraction_of_ceiling``, ``reference`` (stand-in images/s and peak memory),
    ``speedup_vs_reference``, ``targets`` (each with ``target``, ``achieved``, ``pass``), plus
    the machine, the settings used and ``config`` (the full config it ran).
    """
    if steps < 1 or warmup < 0 or split_steps < 0:
        raise DogoError(f"bench: need steps >= 1, warmup >= 0, split steps >= 0 (got {steps}, {warmup}, {split_steps})")
    batch = config.train.batch_size
    load_before = _load_average()
    log(f"loading data ({'synthetic' if synthetic else config.dataset.name})")
    images, source = bench_images(config, synthetic, batch * 4)
    setup = _Setup(config, max(1, len(images) // batch))
    device = setup.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = _rss_mb()
    stand_ins = []
    if reference:
        log("measuring the reference stand-in (plain fp32 ResNet-18, batch 256, 32 px) in a child process")
        stand_ins.append(reference_stand_in(device, steps=ceiling_steps))
    log(f"timing {warmup} warm-up + {steps} training steps (batch {batch}, {setup.settings.precision}, "
        f"channels_last {setup.settings.channels_last}, compile {config.train.compile})")
    timing = time_training(setup, images, steps, warmup, log)
    peak = _peak_memory_mb(device)
    splits = []
    for i in range(split_steps):
        splits.append(split_step(setup, images, warmup + steps + i))
        log(f"  instrumented step {i + 1}/{split_steps}: {splits[-1]['total']:.2f} s")
    split = {k: statistics.mean(s[k] for s in splits) for k in splits[0]} if splits else {}
    result: dict[str, Any] = {
        "images_per_s": timing["images_per_s"]["median"],
        "images_per_s_min": timing["images_per_s"]["min"],
        "images_per_s_max": timing["images_per_s"]["max"],
        "step_s": timing["step_s"],
        "steps": steps, "warmup": warmup, "finite": timing["finite"],
        "split": split,
        "split_fraction": {k: v / split["total"] for k, v in split.items() if k != "total"} if split else {},
        "peak_memory_mb": peak,
        "memory_before_steps_mb": rss_before if device.type == "cpu" else 0.0,
        "memory_kind": "cuda max_memory_allocated" if device.type == "cuda" else "peak RSS (ru_maxrss) of the process",
        "device": str(device),
        "machine": {"cpu": _cpu_name(), "threads": torch.get_num_threads(), "amx": cpu_has_amx(),
                    "avx512_bf16": "avx512_bf16" in cpu_flags(), "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "precision": setup.settings.precision, "channels_last": setup.settings.channels_last,
        "compile": config.train.compile,
        "allocator": setup.settings.allocator, "concurrent_peers": setup.settings.concurrent_peers,
        "batch_size": batch, "image_size": config.dataset.image_size, "data": source,
        "peers": [{"label": p.label, "backbone": m.backbone, "width": m.width, "objective": m.objective}
                  for p, m in zip(setup.cohort.peers, config.train.models)],
        "reference_setting": is_reference_setting(config),
        "config": config.dump(),
    }
    del setup
    if ceiling:
        log("measuring the ceiling (backbones alone on pre-made tensors)")
        configure_allocator("auto", device)  # the fastest setting, whatever the run's
        result["ceiling"] = measure_ceiling(config, device, steps=ceiling_steps, compile=ceiling_compile, log=log)
        result["ceiling_images_per_s"] = result["ceiling"]["images_per_s"]
        result["fraction_of_ceiling"] = result["images_per_s"] / result["ceiling_images_per_s"]
    if reference:
        log("measuring the reference stand-in again")
        stand_ins.append(reference_stand_in(device, steps=ceiling_steps))
        result["reference"] = stand_in_result(stand_ins)
        if "images_per_s" in result["reference"]:
            result["speedup_vs_reference"] = result["images_per_s"] / result["reference"]["images_per_s"]
    if memory_reference:
        log("measuring the reference's peak memory (fp32, NCHW) in a child process")
        result.setdefault("reference", {})["memory"] = reference_memory(config, synthetic)
    result["targets"] = _targets(result)
    result["load_average"] = {"before": load_before, "after": _load_average(), "cores": os.cpu_count()}
    return result


def _targets(result: dict[str, Any]) -> dict[str, Any]:
    targets: dict[str, Any] = {}
    if "speedup_vs_reference" in result:
        amx = result["machine"]["amx"]
        target = SPEEDUP_TARGET_AMX if amx else SPEEDUP_TARGET
        targets["speedup"] = {"target": target, "achieved": result["speedup_vs_reference"],
                              "pass": result["speedup_vs_reference"] >= target,
                              "applies": result["reference_setting"],
                              "why": "AMX present: 4x" if amx else "no AMX: 3x"}
    if "fraction_of_ceiling" in result:
        targets["ceiling"] = {"target": CEILING_TARGET, "achieved": result["fraction_of_ceiling"],
                              "pass": result["fraction_of_ceiling"] >= CEILING_TARGET, "applies": True}
    memory = result.get("reference", {}).get("memory", {})
    if "peak_memory_mb" in memory:
        targets["memory"] = {"target": memory["peak_memory_mb"], "achieved": result["peak_memory_mb"],
                             "pass": result["peak_memory_mb"] <= memory["peak_memory_mb"], "applies": True}
    return targets


# ------------------------------------------------------------------------------------- the table


def format_report(result: dict[str, Any], title: str = "") -> str:
    """The human table of a :func:`run_bench` result."""
    m = result["machine"]
    lines = []
    head = f"dogo bench{': ' + title if title else ''}"
    lines.append(head)
    where = m["gpu"] or f"{m['cpu']}, {m['threads']} threads"
    units = [name for name, present in (("AMX", m["amx"]), ("AVX512-BF16", m["avx512_bf16"])) if present]
    features = ", ".join(units) or "no bf16 units"
    lines.append(f"device   {result['device']} ({where}; {features}), torch {m['torch']}")
    lines.append(f"settings precision {result['precision']}, "
                 f"channels_last {'on' if result['channels_last'] else 'off'}, "
                 f"compile {'on' if result['compile'] else 'off'}, allocator {result['allocator']}, "
                 f"peers {'side by side' if result.get('concurrent_peers') else 'one after another'}")
    peers = ", ".join(f"{p['label']} ({p['backbone']}{'' if p['width'] == 1 else ' x%g' % p['width']}, "
                      f"{p['objective']})" for p in result["peers"])
    lines.append(f"cohort   {peers}; batch {result['batch_size']}, {result['image_size']} px; data {result['data']}")
    lines.append("")
    lines.append(f"throughput   {result['images_per_s']:8.2f} images/s median   (min {result['images_per_s_min']:.2f}, "
                 f"max {result['images_per_s_max']:.2f}; {result['steps']} steps after {result['warmup']} warm-up; "
                 "an image = 2 views through every peer)")
    lines.append(f"peak memory  {result['peak_memory_mb']:8.0f} MB   ({result['memory_kind']}; "
                 f"{result['memory_before_steps_mb']:.0f} MB before the first step)")
    split = result.get("split")
    if split:
        lines.append("")
        lines.append(f"split of a step (mean of instrumented steps, {split['total']:.3f} s):")
        for key, value in split.items():
            if key == "total":
                continue
            label = key.replace("peer/", "peer ").replace("/", " ")
            if key.endswith("heads_and_ssl"):
                label = "  of which " + label.split(" ", 2)[-1].replace("_", " ")
            lines.append(f"  {label:<28} {value:8.3f} s  {100 * value / split['total']:5.1f} %")
    ceiling = result.get("ceiling")
    if ceiling:
        lines.append("")
        lines.append(f"ceiling: backbones alone, forward+backward+optimiser on pre-made tensors, "
                     f"2 x {ceiling['batch']} views per step (views/s)")
        names = list(dict.fromkeys(k for row in ceiling["backbones"] for k in row["settings"]))
        lines.append(f"  {'backbone':<16}" + "".join(f"{n:>18}" for n in names) + "   fastest")
        for row in ceiling["backbones"]:
            cells = "".join(f"{row['settings'][n]:18.1f}" if n in row["settings"] else f"{'-':>18}" for n in names)
            lines.append(f"  {_backbone_label(row):<16}{cells}   {row['best']}")
            if "compile_error" in row:
                lines.append(f"  (compile skipped: {row['compile_error']})")
        side = ceiling.get("side_by_side")
        if side:
            lines.append(f"  the backbones one after another: {ceiling['one_after_another']:.2f} images/s; "
                         f"side by side ({side['threads_per_peer']} thread(s) each, {', '.join(side['settings'])}): "
                         f"{side['images_per_s']:.2f} images/s")
        lines.append(f"  ceiling {result['ceiling_images_per_s']:.2f} images/s; dogo reaches "
                     f"{100 * result['fraction_of_ceiling']:.1f} % of it")
    reference = result.get("reference")
    if reference and "images_per_s" in reference:
        lines.append("")
        each = " and ".join(f"{v:.1f}" for v in reference["fp32_resnet18_views_per_s_each"])
        lines.append(f"reference {reference['images_per_s']:.2f} images/s, {reference['how']}: "
                     f"{REFERENCE_RATIO} x {reference['fp32_resnet18_views_per_s']:.1f} / 4 (measured {each} views/s)")
        lines.append(f"  dogo / reference = {result['speedup_vs_reference']:.2f}x")
    if reference and "memory" in reference:
        mem = reference["memory"]
        if "peak_memory_mb" in mem:
            lines.append(f"reference peak memory {mem['peak_memory_mb']:.0f} MB ({mem['how']}); "
                         f"that step ran at {mem['images_per_s']:.2f} images/s")
        else:
            lines.append(f"reference peak memory: not measured ({mem.get('error')})")
    elif reference and "error" in reference:
        lines.append("")
        lines.append(f"reference: not measured ({reference['error']})")
    load = result.get("load_average", {})
    if load.get("before") is not None:
        busy = load["before"] > 0.5 * (load["cores"] or 1)  # "after" counts this bench itself
        lines.append("")
        lines.append(f"load average {load['before']:.1f} before, {load['after'] or 0:.1f} after (this bench included), "
                     f"{load['cores']} cores"
                     + ("; WARNING: other processes were running, the numbers are not this machine's best "
                        "(bench again when it is idle)" if busy else ""))
    targets = result.get("targets", {})
    if targets:
        lines.append("")
        lines.append("targets (issue 6):")
        t = targets.get("speedup")
        if t:
            note = "" if t["applies"] else " (the target is for the reference setting; informative here)"
            lines.append(f"  speed-up >= {t['target']:g}x ({t['why']}): {t['achieved']:.2f}x "
                         f"{'PASS' if t['pass'] else 'FAIL'}{note}")
        t = targets.get("ceiling")
        if t:
            lines.append(f"  >= {100 * t['target']:.0f} % of the ceiling: {100 * t['achieved']:.1f} % "
                         f"{'PASS' if t['pass'] else 'FAIL'}")
        t = targets.get("memory")
        if t:
            lines.append(f"  peak memory <= reference's {t['target']:.0f} MB: {t['achieved']:.0f} MB "
                         f"{'PASS' if t['pass'] else 'FAIL'}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- the CLI

EPILOG_BENCH = """\
examples:
  dogo bench configs/fmnist-dogo.yaml
  dogo bench configs/cifar10-dogo.yaml train.models.1.backbone=resnet18 train.models.1.name=peer --synthetic
      # the reference setting: two ResNet-18 SimCLR peers, batch 256, 32 px (CIFAR-shaped random images)
  dogo bench configs/fmnist-dogo.yaml --steps 10 --json > bench.json
  dogo bench configs/fmnist-dogo.yaml train.precision=fp32 --no-ceiling    # what bf16 buys
  dogo bench configs/fmnist-dogo.yaml train.allocator=system --no-reference  # what retaining memory buys
  dogo bench configs/cifar10-dogo.yaml train.models.1.backbone=resnet18 train.concurrent_peers=off --synthetic
      # against the reference setting above: what running its two peers side by side buys

Times real training steps of the configured cohort (data from memory, augmentation, forward,
losses, backward, optimiser) after warm-up, splits a step's time into its parts, and measures,
in the same run, the ceiling (the backbones alone on pre-made tensors in the fastest setting
this machine offers: precision, layout, torch.compile, allocator, peers side by side) and the
reference's images/s (stood in by 0.936 x a quarter of a plain fp32 ResNet-18's views/s,
REFERENCE.md §6, measured before and after in a child process with libc's allocator, as the
reference runs; the faster counts).
A full run of the reference setting takes several minutes on a 2-core CPU (the first
torch.compile of a backbone alone 1-2 minutes; later runs reuse the compile cache).
Numbers on a shared machine are noisy: bench when it is idle and repeat.
"""


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``dogo bench`` to the CLI's sub-parsers."""
    b = subparsers.add_parser(
        "bench", help="training images/s of a config, against the machine's ceiling and the reference",
        description="Benchmark training throughput: images/s, the split of a step, peak memory, "
        "the ceiling of the backbones alone, and the reference's speed on this machine.",
        epilog=EPILOG_BENCH, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("config", metavar="CONFIG.yaml", help="run config (dogo's schema or the reference's)")
    b.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.batch_size=128")
    b.add_argument("--steps", type=int, default=5, help="timed training steps (default 5)")
    b.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    b.add_argument("--split-steps", type=int, default=2, help="instrumented steps for the split (default 2)")
    b.add_argument("--ceiling-steps", type=int, default=3, help="timed steps per ceiling setting (default 3)")
    b.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    b.add_argument("--synthetic", action="store_true", help="random uint8 images of the dataset's shape, no files")
    b.add_argument("--no-ceiling", dest="ceiling", action="store_false", help="skip the ceiling")
    b.add_argument("--no-compile", dest="ceiling_compile", action="store_false",
                   help="leave torch.compile out of the ceiling")
    b.add_argument("--no-reference", dest="reference", action="store_false",
                   help="skip the reference stand-in and its memory")
    b.add_argument("--check", action="store_true", help="exit 1 when a target that applies fails")
    b.set_defaults(func=cmd_bench)
    return b


def cmd_bench(args: argparse.Namespace) -> int:
    from dogo.config import load_config

    config = load_config(args.config, args.overrides, warn=lambda m: print(f"warning: {m}", file=sys.stderr))
    log = (lambda message: print(message, file=sys.stderr, flush=True))
    result = run_bench(config, steps=args.steps, warmup=args.warmup, split_steps=args.split_steps,
                       synthetic=args.synthetic, ceiling=args.ceiling, ceiling_steps=args.ceiling_steps,
                       ceiling_compile=args.ceiling_compile, reference=args.reference,
                       memory_reference=args.reference, log=log)
    if args.json:
        print(json.dumps(result, indent=2, default=_jsonable))
    else:
        print(format_report(result, f"{args.config} {' '.join(args.overrides)}".strip()))
    if args.check and not all(t["pass"] for t in result["targets"].values() if t["applies"]):
        return 1
    return 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)
