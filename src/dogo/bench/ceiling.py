"""The ceiling: the cohort's backbones alone, forward + backward + optimiser on pre-made tensors.

For every distinct backbone of the cohort, two views of ``batch`` images per step (plus, for a
peer with a target network such as BYOL's or MoCo's, both views through a frozen copy without a
graph: :func:`target_forwards`), in each setting this machine offers (:func:`ceiling_settings`, and the fastest of those plus
``torch.compile``). The fastest setting of each backbone gives the ceiling in images/s:
``1 / sum_k (2 / views_per_s_k)``. On a CPU with a core per peer the backbones also run side
by side, a thread each (:func:`measure_side_by_side`), as ``train.concurrent_peers=on`` runs
them; the faster counts.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import torch

from dogo.bench.machine import Log, clock, quiet
from dogo.config import OptimizerConfig, RunConfig
from dogo.core.runtime import autocast_for, compile_module, cpu_has_native_bf16
from dogo.objectives import OBJECTIVES, Objective
from dogo.objectives.ema import frozen_copy
from dogo.training.peer_threads import PeerRunner


def target_forwards(objective: str) -> int:
    """Forward passes per step of the objective's target encoder, without a graph: 2 (one per view)
    when it has a target network (it overrides :meth:`Objective.encode_targets`: BYOL, MoCo), else 0."""
    return 0 if OBJECTIVES.get(objective).encode_targets is Objective.encode_targets else 2


def measure_backbone(name: str, width: float, image_size: int, batch: int, *, precision: str = "fp32",
                     channels_last: bool = False, compile: bool = False, forwards: int = 2, targets: int = 0,
                     optimizer: OptimizerConfig | None = None, steps: int = 3, warmup: int = 1,
                     device: torch.device | str = "cpu", seed: int = 0) -> dict[str, Any]:
    """Views/s of a backbone's forward + backward + optimiser step on pre-made tensors.

    Each step forwards ``forwards`` batches of ``batch`` random views (``3 x image_size^2``),
    backpropagates a scalar of the features and steps the optimiser (the peer's; Adam 3e-4 by
    default); ``targets`` more batches go through a frozen copy of the backbone without a graph
    (a target network, :func:`target_forwards`). ``views_per_s`` is ``forwards * batch`` (the
    views trained) over the median step time of ``steps`` steps after ``warmup``; ``first_step_s`` includes compilation when ``compile``.
    """
    step = _backbone_step(name, width, image_size, batch, precision=precision, channels_last=channels_last,
                          compile=compile, forwards=forwards, targets=targets, optimizer=optimizer, device=device, seed=seed)
    device = torch.device(device)
    first = _timed(step, device)
    for _ in range(warmup - 1):
        step()
    seconds = [_timed(step, device) for _ in range(steps)]
    return {"views_per_s": forwards * batch / statistics.median(seconds), "step_s": seconds, "first_step_s": first}


def _timed(step: Callable[[], None], device: torch.device) -> float:
    start = clock(device)
    step()
    return clock(device) - start


def _backbone_step(name: str, width: float, image_size: int, batch: int, *, precision: str, channels_last: bool,
                   compile: bool, forwards: int, optimizer: OptimizerConfig | None, device: torch.device | str,
                   seed: int, targets: int = 0) -> Callable[[], None]:
    """A backbone with its optimiser and pre-made views (and a frozen target copy when ``targets``);
    the returned function runs one step of it."""
    from dogo.models import build_backbone
    from dogo.training.optim import build_optimizer

    device = torch.device(device)
    torch.manual_seed(seed)
    model = build_backbone(name, image_size=image_size, width=width).to(device)
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = build_optimizer(list(model.parameters()), optimizer or OptimizerConfig())
    target = frozen_copy(model).train() if targets else None
    if compile:
        compile_module(model)
        if targets:
            compile_module(target)
    autocast = autocast_for(precision, device)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast:
            with torch.no_grad():
                for _ in range(targets):
                    target(x)
            features = [model(x) for _ in range(forwards)]
        sum(f.float().square().mean() for f in features).backward()
        opt.step()

    return step


def measure_side_by_side(config: RunConfig, device: torch.device, settings: list[dict[str, Any]], *,
                         steps: int = 3, warmup: int = 1) -> dict[str, Any]:
    """Images/s of the cohort's backbones run side by side (:class:`dogo.training.peer_threads.PeerRunner`).

    Every peer's backbone in its own thread with its share of the cores, each in the eager
    setting of ``settings`` (one per peer), two views of ``batch`` images per step each.
    """
    peers, batch = config.train.models, config.train.batch_size
    step_fns = [_backbone_step(p.backbone, p.width, config.dataset.image_size, batch,
                               precision=setting["precision"], channels_last=setting["channels_last"], compile=False,
                               forwards=2, targets=target_forwards(p.objective), optimizer=p.optimizer,
                               device=device, seed=config.seed + k)
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


def ceiling_settings(device: torch.device, precision: str = "auto") -> list[dict[str, Any]]:
    """The eager settings the ceiling tries (compile is added on top of the fastest).

    On a CPU, channels_last only with native bf16: elsewhere dogo does not pick it, and oneDNN's
    channels_last kernels aborted the process on an AVX2-only CPU
    (:func:`dogo.core.runtime.resolve_channels_last`). On a CPU without native bf16, bf16 is emulated
    and several times slower than fp32, so it is tried only when the config asks for it
    (``precision``): measuring it would take minutes and never set the ceiling.
    """
    settings = [{"name": "fp32", "precision": "fp32", "channels_last": False}]
    if torch.device(device).type != "cpu":
        settings.append({"name": "fp32+cl", "precision": "fp32", "channels_last": True})
    if torch.device(device).type != "cpu" or cpu_has_native_bf16():
        settings.append({"name": "bf16+cl", "precision": "bf16", "channels_last": True})
    elif precision == "bf16":
        settings.append({"name": "bf16", "precision": "bf16", "channels_last": False})
    return settings


def measure_ceiling(config: RunConfig, device: torch.device, *, steps: int = 3, warmup: int = 1,
                    compile: bool = True, log: Log = quiet) -> dict[str, Any]:
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
        key = (peer.backbone, peer.width, target_forwards(peer.objective))
        if key in by_key:
            by_key[key]["peers"] += 1
            continue
        row: dict[str, Any] = {"backbone": peer.backbone, "width": peer.width, "target_forwards": key[2],
                               "peers": 1, "settings": {}}
        for setting in ceiling_settings(device, config.train.precision):
            result = measure_backbone(peer.backbone, peer.width, size, batch, precision=setting["precision"],
                                      channels_last=setting["channels_last"], targets=row["target_forwards"],
                                      optimizer=peer.optimizer, steps=steps, warmup=warmup, device=device, seed=config.seed)
            row["settings"][setting["name"]] = result["views_per_s"]
            log(f"  ceiling {backbone_label(row)} {setting['name']}: {result['views_per_s']:.1f} views/s")
        best = max(ceiling_settings(device, config.train.precision), key=lambda s: row["settings"][s["name"]])
        if compile:
            name = best["name"] + "+compile"
            try:
                result = measure_backbone(peer.backbone, peer.width, size, batch, precision=best["precision"],
                                          channels_last=best["channels_last"], compile=True,
                                          targets=row["target_forwards"], optimizer=peer.optimizer, steps=steps, warmup=warmup, device=device,
                                          seed=config.seed)
                row["settings"][name] = result["views_per_s"]
                row["compile_first_step_s"] = result["first_step_s"]
                log(f"  ceiling {backbone_label(row)} {name}: {result['views_per_s']:.1f} views/s "
                    f"(first step with compilation {result['first_step_s']:.0f} s)")
            except Exception as exc:  # noqa: BLE001 - a compiler failure skips the setting, with the reason
                row["compile_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                log(f"  ceiling {backbone_label(row)} {name}: skipped ({row['compile_error']})")
        row["best"] = max(row["settings"], key=row["settings"].get)
        row["views_per_s"] = row["settings"][row["best"]]
        by_key[key] = row
        backbones.append(row)
    seconds_per_image = sum(2 * row["peers"] / row["views_per_s"] for row in backbones)
    result = {"backbones": backbones, "images_per_s": 1 / seconds_per_image, "one_after_another": 1 / seconds_per_image,
              "batch": batch, "image_size": size, "views_per_step": 2 * batch}
    if device.type == "cpu" and len(config.train.models) > 1 and torch.get_num_threads() >= len(config.train.models):
        eager = {s["name"]: s for s in ceiling_settings(device, config.train.precision)}
        best_eager = {key: max(eager, key=lambda n: row["settings"][n]) for key, row in by_key.items()}
        settings = [eager[best_eager[(p.backbone, p.width, target_forwards(p.objective))]]
                    for p in config.train.models]
        side = measure_side_by_side(config, device, settings, steps=steps, warmup=warmup)
        log(f"  ceiling side by side ({', '.join(side['settings'])}; {side['threads_per_peer']} thread(s) per peer): "
            f"{side['images_per_s']:.2f} images/s")
        result["side_by_side"] = side
        result["images_per_s"] = max(result["images_per_s"], side["images_per_s"])
    return result


def backbone_label(row: dict[str, Any]) -> str:
    return (row["backbone"] + ("" if row["width"] == 1 else f" x{row['width']:g}")
            + (" +target" if row.get("target_forwards") else ""))
