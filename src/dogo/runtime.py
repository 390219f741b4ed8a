"""Device, precision, memory layout and seeds: the settings chosen per machine.

``precision: auto`` picks bf16 autocast where the hardware runs bf16 matrix math natively and
fp32 elsewhere. Measured with ``dogo bench`` (REFERENCE.md §6 and the README's performance
table): on CPUs with AMX-BF16 or AVX512-BF16 a ResNet-18 step runs 2.4-3.3x faster in bf16 with
channels_last than in fp32; on CPUs without them bf16 is emulated and slower. ``channels_last:
auto`` is on for convolutional backbones on every device (1.25x on both CPUs measured).
"""

from __future__ import annotations

import os
import random
from contextlib import nullcontext
from functools import lru_cache

import numpy as np
import torch

from dogo.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; checks that an explicit device exists."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name}: no CUDA device is available here; use train.device=cpu")
    return device


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 matrix instructions (AMX-BF16 or AVX512-BF16)."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def cpu_has_amx() -> bool:
    """True on CPUs with AMX-BF16 tile units (Intel Sapphire Rapids and later)."""
    return "amx_bf16" in cpu_flags()


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where bf16 matrix math is native (AMX/AVX512-BF16 CPUs, Ampere+ GPUs)."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def resolve_channels_last(name: str) -> bool:
    return name in ("auto", "on")


def autocast_for(precision: str, device: torch.device):
    """The autocast context of a precision (a no-op context for fp32)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def compile_module(module: torch.nn.Module) -> None:
    """``torch.compile`` a module in place (``module.compile()``: its state_dict keys stay the same).

    Compilation happens on the first forward (on a 2-core CPU, 1-2 minutes for a ResNet-18
    training graph the first time; later processes reuse the on-disk cache).
    """
    module.compile()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def step_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (seed, epoch, step, peer, rank...) by SeedSequence.

    Views are drawn from a generator seeded per step, so a run resumed at any step draws exactly
    the views an uninterrupted run would.
    """
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint64)[0] >> 1)


def set_threads(num_threads: int | None) -> None:
    if num_threads:
        torch.set_num_threads(num_threads)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)
