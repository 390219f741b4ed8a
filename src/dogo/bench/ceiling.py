"""The ceiling: the cohort's backbones alone, forward + backward + optimiser on pre-made tensors.

For every distinct backbone of the cohort, every view a peer trains on per image, in the peer's
groups (:func:`peer_views`: two views of ``batch`` images for a two-view method, one batch each;
DINO's two global views as one batch and its local views as another, at their smaller size), plus,
for a peer with a target network such as BYOL's, MoCo's or DINO's, the two global views through a
frozen copy without a graph (:func:`target_forwards`), in each setting this machine offers
(:func:`ceiling_settings`, and the fastest of those plus ``torch.compile``). The fastest setting
of each backbone gives the ceiling in images/s: ``1 / sum_k (views_k / views_per_s_k)``, with
``views_k`` the views of one image through peer k. On a CPU with a core per peer the backbones
also run side by side, a thread each (:func:`measure_side_by_side`), as
``train.concurrent_peers=on`` runs them; the faster counts.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import torch

from dogo.bench.machine import Log, clock, quiet
from dogo.config import OptimizerConfig, PeerConfig, RunConfig
from dogo.core.runtime import autocast_for, compile_module, cpu_has_native_bf16
from dogo.objectives import OBJECTIVES, Objective, build_objective
from dogo.objectives.ema import frozen_copy
from dogo.training.peer_threads import PeerRunner


def target_forwards(objective: str) -> int:
    """Views per image through the objective's target encoder, without a graph: its 2 global views
    when it has a target network (it overrides :meth:`Objective.encode_targets`: BYOL, MoCo, DINO), else 0."""
    return 0 if OBJECTIVES.get(objective).encode_targets is Objective.encode_targets else 2


def peer_views(peer: PeerConfig, image_size: int) -> tuple[tuple[int, int], ...]:
    """``(size, views)`` of each of the peer's view groups, each encoded as one batch:
    ``((32, 1), (32, 1))`` for a two-view method at 32 px, ``((32, 2), (12, 6))`` for DINO with six
    local crops of 12 px. The objective is built on the meta device (no memory) to ask it."""
    with torch.device("meta"):
        objective = build_objective(
            peer.objective, 8, n_proj=peer.n_proj, temperature=peer.temperature, **peer.objective_options
        )
    return tuple((group.size, len(group)) for group in objective.view_groups(image_size))


def measure_backbone(
    name: str,
    width: float,
    image_size: int,
    batch: int,
    *,
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    forwards: int = 2,
    targets: int = 0,
    optimizer: OptimizerConfig | None = None,
    steps: int = 3,
    warmup: int = 1,
    device: torch.device | str = "cpu",
    seed: int = 0,
    groups: tuple[tuple[int, int], ...] | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Views/s of a backbone's forward + backward + optimiser step on pre-made tensors.

    Each step forwards ``forwards`` batches of ``batch`` random views (``3 x image_size^2``) or,
    with ``groups`` (``(size, views)`` pairs, :func:`peer_views`), one batch of ``views x batch``
    views of ``size`` px per group; backpropagates a scalar of the features and steps the optimiser
    (the peer's; Adam 3e-4 by default); ``targets`` more batches of ``image_size`` go through a
    frozen copy of the backbone without a graph (a target network, :func:`target_forwards`).
    ``views_per_s`` is the views trained per step over the median step time of ``steps`` steps
    after ``warmup``; ``first_step_s`` includes compilation when ``compile``. ``options``: the
    backbone's own (a ViT's patch size).
    """
    groups = groups or ((image_size, 1),) * forwards
    step = _backbone_step(
        name,
        width,
        image_size,
        batch,
        precision=precision,
        channels_last=channels_last,
        compile=compile,
        groups=groups,
        targets=targets,
        optimizer=optimizer,
        device=device,
        seed=seed,
        options=options,
    )
    device = torch.device(device)
    first = _timed(step, device)
    for _ in range(warmup - 1):
        step()
    seconds = [_timed(step, device) for _ in range(steps)]
    views = sum(count for _, count in groups)
    return {"views_per_s": views * batch / statistics.median(seconds), "step_s": seconds, "first_step_s": first}


def _timed(step: Callable[[], None], device: torch.device) -> float:
    start = clock(device)
    step()
    return clock(device) - start


def _backbone_step(
    name: str,
    width: float,
    image_size: int,
    batch: int,
    *,
    precision: str,
    channels_last: bool,
    compile: bool,
    groups: tuple[tuple[int, int], ...],
    optimizer: OptimizerConfig | None,
    device: torch.device | str,
    seed: int,
    targets: int = 0,
    options: dict[str, Any] | None = None,
) -> Callable[[], None]:
    """A backbone with its optimiser and pre-made views, one batch per group (and a frozen target
    copy when ``targets``); the returned function runs one step of it."""
    from dogo.models import build_backbone
    from dogo.training.optim import build_optimizer

    device = torch.device(device)
    torch.manual_seed(seed)
    model = build_backbone(name, image_size=image_size, width=width, **(options or {})).to(device)
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    inputs = [torch.randn(count * batch, 3, size, size, device=device) for size, count in groups]
    if channels_last:
        # Module.to takes memory_format at run time; torch's overloads of it leave the keyword out
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # see the line above
        x = x.contiguous(memory_format=torch.channels_last)
        inputs = [v.contiguous(memory_format=torch.channels_last) for v in inputs]
    opt = build_optimizer(list(model.parameters()), optimizer or OptimizerConfig())
    target = frozen_copy(model).train() if targets else None
    if compile:
        compile_module(model)
        if target is not None:  # made when targets
            compile_module(target)
    autocast = autocast_for(precision, device)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast:
            with torch.no_grad():
                if target is not None:  # made when targets
                    for _ in range(targets):
                        target(x)
            features = [model(v) for v in inputs]
        sum(f.float().square().mean() for f in features).backward()
        opt.step()

    return step


def measure_side_by_side(
    config: RunConfig, device: torch.device, settings: list[dict[str, Any]], *, steps: int = 3, warmup: int = 1
) -> dict[str, Any]:
    """Images/s of the cohort's backbones run side by side (:class:`dogo.training.peer_threads.PeerRunner`).

    Every peer's backbone in its own thread with its share of the cores, each in the eager
    setting of ``settings`` (one per peer), every view of ``batch`` images per step each
    (:func:`peer_views`).
    """
    peers, batch, size = config.train.models, config.train.batch_size, config.dataset.image_size
    step_fns = [
        _backbone_step(
            p.backbone,
            p.width,
            size,
            batch,
            precision=setting["precision"],
            channels_last=setting["channels_last"],
            compile=False,
            groups=peer_views(p, size),
            targets=target_forwards(p.objective),
            optimizer=p.optimizer,
            device=device,
            seed=config.seed + k,
            options=p.backbone_options,
        )
        for k, (p, setting) in enumerate(zip(peers, settings, strict=True))
    ]
    runner = PeerRunner(len(peers), True)
    try:

        def step() -> None:
            runner.map(lambda fn: fn(), step_fns)

        for _ in range(warmup):
            step()
        seconds = [_timed(step, device) for _ in range(steps)]
    finally:
        runner.close()
    return {
        "images_per_s": batch / statistics.median(seconds),
        "step_s": seconds,
        "threads_per_peer": runner.threads_per_peer,
        "settings": [s["name"] for s in settings],
    }


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


def measure_ceiling(
    config: RunConfig, device: torch.device, *, steps: int = 3, warmup: int = 1, compile: bool = True, log: Log = quiet
) -> dict[str, Any]:
    """The fastest setting of every distinct backbone of the cohort, and the cohort's ceiling in images/s.

    A step of the cohort needs ``views_k * batch`` views through peer k (2 for a two-view method,
    DINO's global and local crops: :func:`peer_views`), so one peer after another the ceiling is
    ``1 / sum_k (views_k / views_per_s_k)`` images/s with each backbone in its fastest setting.
    On a CPU with a core per peer the backbones also run side by side
    (:func:`measure_side_by_side`, each in its fastest eager setting); the ceiling is the
    faster of the two.
    """
    batch, size = config.train.batch_size, config.dataset.image_size
    backbones: list[dict[str, Any]] = []
    by_key: dict[tuple, dict[str, Any]] = {}

    def key_of(p: PeerConfig) -> tuple:
        return (
            p.backbone,
            p.width,
            tuple(sorted(p.backbone_options.items())),
            target_forwards(p.objective),
            peer_views(p, size),
        )

    for peer in config.train.models:
        key = key_of(peer)
        if key in by_key:
            by_key[key]["peers"] += 1
            continue
        groups = key[4]
        row: dict[str, Any] = {
            "backbone": peer.backbone,
            "width": peer.width,
            "target_forwards": key[3],
            "views": [list(g) for g in groups],
            "views_per_image": sum(c for _, c in groups),
            "peers": 1,
            "settings": {},
        }
        if peer.backbone_options:
            row["backbone_options"] = dict(peer.backbone_options)
        for setting in ceiling_settings(device, config.train.precision):
            result = measure_backbone(
                peer.backbone,
                peer.width,
                size,
                batch,
                precision=setting["precision"],
                channels_last=setting["channels_last"],
                targets=row["target_forwards"],
                optimizer=peer.optimizer,
                steps=steps,
                warmup=warmup,
                device=device,
                seed=config.seed,
                groups=groups,
                options=peer.backbone_options,
            )
            row["settings"][setting["name"]] = result["views_per_s"]
            log(f"  ceiling {backbone_label(row)} {setting['name']}: {result['views_per_s']:.1f} views/s")
        best = max(ceiling_settings(device, config.train.precision), key=lambda s: row["settings"][s["name"]])
        if compile:
            name = best["name"] + "+compile"
            try:
                result = measure_backbone(
                    peer.backbone,
                    peer.width,
                    size,
                    batch,
                    precision=best["precision"],
                    channels_last=best["channels_last"],
                    compile=True,
                    targets=row["target_forwards"],
                    optimizer=peer.optimizer,
                    steps=steps,
                    warmup=warmup,
                    device=device,
                    seed=config.seed,
                    groups=groups,
                    options=peer.backbone_options,
                )
                row["settings"][name] = result["views_per_s"]
                row["compile_first_step_s"] = result["first_step_s"]
                log(
                    f"  ceiling {backbone_label(row)} {name}: {result['views_per_s']:.1f} views/s "
                    f"(first step with compilation {result['first_step_s']:.0f} s)"
                )
            except Exception as exc:
                row["compile_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                log(f"  ceiling {backbone_label(row)} {name}: skipped ({row['compile_error']})")
        row["best"] = max(row["settings"], key=row["settings"].get)
        row["views_per_s"] = row["settings"][row["best"]]
        by_key[key] = row
        backbones.append(row)
    seconds_per_image = sum(row["views_per_image"] * row["peers"] / row["views_per_s"] for row in backbones)
    views_per_step = batch * sum(row["views_per_image"] * row["peers"] for row in backbones)
    result = {
        "backbones": backbones,
        "images_per_s": 1 / seconds_per_image,
        "one_after_another": 1 / seconds_per_image,
        "batch": batch,
        "image_size": size,
        "views_per_step": views_per_step,
    }
    if device.type == "cpu" and len(config.train.models) > 1 and torch.get_num_threads() >= len(config.train.models):
        eager = {s["name"]: s for s in ceiling_settings(device, config.train.precision)}
        best_eager = {key: max(eager, key=lambda n: row["settings"][n]) for key, row in by_key.items()}
        settings = [eager[best_eager[key_of(p)]] for p in config.train.models]
        side = measure_side_by_side(config, device, settings, steps=steps, warmup=warmup)
        log(
            f"  ceiling side by side ({', '.join(side['settings'])}; {side['threads_per_peer']} thread(s) per peer): "
            f"{side['images_per_s']:.2f} images/s"
        )
        result["side_by_side"] = side
        result["images_per_s"] = max(result["images_per_s"], side["images_per_s"])
    return result


def backbone_label(row: dict[str, Any]) -> str:
    groups = row.get("views") or []
    multi = "" if all(count == 1 for _, count in groups) else " " + "+".join(f"{c}x{s}px" for s, c in groups)
    return (
        row["backbone"]
        + ("" if row["width"] == 1 else f" x{row['width']:g}")
        + (" +target" if row.get("target_forwards") else "")
        + multi
    )
