"""``run_bench``: dogo's steps, the ceiling and the reference, measured in one run.

Every ratio compares numbers taken on the same machine under the same load. On the CPU peak
memory is the process's resident high-water mark (``ru_maxrss``, the same as ``VmHWM``) at the
end of the timed steps, before the ceiling runs; on a GPU ``torch.cuda.max_memory_allocated``.

Targets: in the reference setting at least 3x the reference's images/s (4x on a CPU with AMX,
where bf16 is far faster than fp32), at least 90 % of the ceiling, and peak memory no more than
the reference's.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from dogo.bench.ceiling import measure_ceiling
from dogo.bench.machine import Log, cpu_name, load_average, others_busy, peak_memory_mb, quiet, rss_mb
from dogo.bench.reference import is_reference_setting, reference_memory, reference_stand_in, stand_in_result
from dogo.bench.steps import bench_images, bench_setup, mean_split, split_step, time_training
from dogo.config import RunConfig
from dogo.core.errors import DogoError
from dogo.core.runtime import configure_allocator, cpu_flags, cpu_has_amx
from dogo.training.step import Sampler, Setup, step_settings

SPEEDUP_TARGET, SPEEDUP_TARGET_AMX, CEILING_TARGET = 3.0, 4.0, 0.90


def run_bench(
    config: RunConfig,
    steps: int = 5,
    warmup: int = 2,
    *,
    split_steps: int = 2,
    synthetic: bool = False,
    ceiling: bool = True,
    ceiling_steps: int = 3,
    ceiling_compile: bool = True,
    reference: bool = True,
    memory_reference: bool = True,
    log: Log = quiet,
) -> dict[str, Any]:
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
    load_before, busy_before = load_average(), others_busy()
    # as the trainer (and dogo pretrain): threads, seeds, the device and every auto resolved before any data is
    # read, so a device this machine does not have (train.device=cuda:7) is refused in one line first
    settings = step_settings(config)
    log(f"loading data ({'synthetic' if synthetic else config.dataset.name})")
    images, source = bench_images(config, synthetic, config.train.batch_size * 4)
    setup, sampler = bench_setup(config, images, settings)
    device = setup.settings.device
    stand_ins = []
    if reference:
        log("measuring the reference stand-in (plain fp32 ResNet-18, batch 256, 32 px) in a child process")
        stand_ins.append(reference_stand_in(device, steps=ceiling_steps))
    result = _measure_dogo(config, setup, sampler, images, source, steps, warmup, split_steps, log)
    del setup  # the ceiling measures the backbones alone: free the cohort first
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
    result["load_average"] = {
        "before": load_before,
        "after": load_average(),
        "cores": os.cpu_count(),
        "others_busy_before": busy_before,
    }
    return result


def _measure_dogo(
    config: RunConfig,
    setup: Setup,
    sampler: Sampler,
    images: torch.Tensor,
    source: str,
    steps: int,
    warmup: int,
    split_steps: int,
    log: Log,
) -> dict[str, Any]:
    """dogo's timed steps, the split of a step and the peak memory, with the settings they ran in."""
    settings, device, batch = setup.settings, setup.settings.device, config.train.batch_size
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = rss_mb()
    log(
        f"timing {warmup} warm-up + {steps} training steps (batch {batch}, {settings.precision}, "
        f"channels_last {settings.channels_last}, compile {config.train.compile})"
    )
    timing = time_training(setup, sampler, images, steps, warmup, log)
    peak = peak_memory_mb(device)
    splits = []
    for i in range(split_steps):
        splits.append(split_step(setup, sampler, images, warmup + steps + i))
        log(f"  instrumented step {i + 1}/{split_steps}: {splits[-1]['total']:.2f} s")
    split = mean_split(splits)
    return {
        "images_per_s": timing["images_per_s"]["median"],
        "images_per_s_min": timing["images_per_s"]["min"],
        "images_per_s_max": timing["images_per_s"]["max"],
        "step_s": timing["step_s"],
        "steps": steps,
        "warmup": warmup,
        "finite": timing["finite"],
        "data_wait_s": timing["data_wait_s"],
        "data_wait_fraction": timing["data_wait_fraction"],
        "split": split,
        "split_fraction": {k: v / split["total"] for k, v in split.items() if k != "total"} if split else {},
        "peak_memory_mb": peak,
        "memory_before_steps_mb": rss_before if device.type == "cpu" else 0.0,
        "memory_kind": "cuda max_memory_allocated" if device.type == "cuda" else "peak RSS (ru_maxrss) of the process",
        "device": str(device),
        "machine": {
            "cpu": cpu_name(),
            "threads": torch.get_num_threads(),
            "amx": cpu_has_amx(),
            "avx512_bf16": "avx512_bf16" in cpu_flags(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        },
        "precision": settings.precision,
        "channels_last": settings.channels_last,
        "compile": config.train.compile,
        "allocator": settings.allocator,
        "concurrent_peers": settings.concurrent_peers,
        "batch_size": batch,
        "image_size": config.dataset.image_size,
        "data": source,
        "peers": [
            {"label": p.label, "backbone": m.backbone, "width": m.width, "objective": m.objective}
            for p, m in zip(setup.cohort.peers, config.train.models, strict=True)
        ],
        "reference_setting": is_reference_setting(config),
        "config": config.dump(),
    }


def _targets(result: dict[str, Any]) -> dict[str, Any]:
    targets: dict[str, Any] = {}
    if "speedup_vs_reference" in result:
        amx = result["machine"]["amx"]
        target = SPEEDUP_TARGET_AMX if amx else SPEEDUP_TARGET
        targets["speedup"] = {
            "target": target,
            "achieved": result["speedup_vs_reference"],
            "pass": result["speedup_vs_reference"] >= target,
            "applies": result["reference_setting"],
            "why": "AMX present: 4x" if amx else "no AMX: 3x",
        }
    if "fraction_of_ceiling" in result:
        targets["ceiling"] = {
            "target": CEILING_TARGET,
            "achieved": result["fraction_of_ceiling"],
            "pass": result["fraction_of_ceiling"] >= CEILING_TARGET,
            "applies": True,
        }
    memory = result.get("reference", {}).get("memory", {})
    if "peak_memory_mb" in memory:
        targets["memory"] = {
            "target": memory["peak_memory_mb"],
            "achieved": result["peak_memory_mb"],
            "pass": result["peak_memory_mb"] <= memory["peak_memory_mb"],
            "applies": True,
        }
    return targets
