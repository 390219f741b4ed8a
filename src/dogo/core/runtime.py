"""Device, precision, memory layout, compilation and seeds: the settings chosen per machine.

Each ``auto`` is decided by what ``dogo bench`` measured (the numbers are in the README's
"Performance" section; they depend on the machine):

- ``precision: auto`` -> bf16 autocast where bf16 matrix math is native (AMX-BF16 or
  AVX512-BF16 CPUs, bf16-capable GPUs), fp32 elsewhere (bf16 is emulated there, and slower).
  The backbones run in bf16; heads and losses stay fp32 (see ``Peer.forward``). At a toy width
  (ResNet-18 x1/16) bf16 was slower than fp32; set ``train.precision=fp32`` to opt out.
- ``channels_last: auto`` -> on for CUDA and for bf16 on CPUs with native bf16, where oneDNN's
  bf16 convolutions want it; off elsewhere (see :func:`resolve_channels_last`).
- ``train.compile`` stays off by default: on a 2-core CPU it bought about nothing (the
  convolutions stay oneDNN calls; only the BatchNorm/ReLU/add kernels get fused) and costs
  a minute or more of compilation per backbone on a cold cache; it paid on CPUs with AMX.
- ``allocator: auto`` -> ``retain`` for CPU training on glibc: freed memory stays in the process
  instead of being unmapped and faulted in again every step (:func:`configure_allocator`).
"""

from __future__ import annotations

import os
import random
import warnings
from contextlib import nullcontext
from functools import lru_cache

import numpy as np
import torch

from dogo.core.errors import ConfigError


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
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(
            f"train.device={name}: this machine has {torch.cuda.device_count()} CUDA device(s); "
            f"use cuda:0..cuda:{torch.cuda.device_count() - 1}"
        )
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"train.device={name}: dogo trains on cpu or cuda only")
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
    """``auto`` -> ``bf16`` where bf16 matrix math is native (AMX/AVX512-BF16 CPUs, Ampere+ GPUs).

    Elsewhere ``fp16`` on CUDA (older GPUs: half-precision tensor cores, with a GradScaler per
    peer, :func:`dogo.training.step.make_scalers`) and ``fp32`` on a CPU. ``fp16`` asked for on a CPU is
    refused: CPUs have no fast fp16 matrix math (it would be slower than fp32) and a loss
    scaler there only adds a way to skip steps.
    """
    if name == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"train.precision=fp16 needs a CUDA GPU (this run is on {device.type}); "
            "use train.precision=bf16 or fp32 (or auto)"
        )
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def resolve_channels_last(name: str, precision: str = "bf16", device: torch.device | None = None) -> bool:
    """``train.channels_last``: ``on`` / ``off`` as given; ``auto`` is on on CUDA, and on a CPU only for
    bf16 on a CPU with native bf16 (AMX or AVX512-BF16).

    On such CPUs oneDNN's bf16 convolutions want channels_last. Elsewhere it gains little, and on
    an AVX2-only AMD EPYC oneDNN's channels_last convolution backward was not deterministic in
    fp32 (two runs of one seed differed from the first step) and aborted the process (heap
    corruption) with one thread, with two peers side by side, and now and then in emulated bf16;
    NCHW was bit-identical run to run. See the README's performance section.
    """
    if name != "auto":
        return name == "on"
    if device is not None and device.type == "cuda":
        return True
    return precision == "bf16" and cpu_has_native_bf16()


def autocast_for(precision: str, device: torch.device):
    """The autocast context of a precision (a no-op context for fp32)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    return nullcontext()


def compile_module(module: torch.nn.Module) -> None:
    """``torch.compile`` a module in place (``module.compile()``: its state_dict keys stay the same).

    Compilation happens on the first forward (on a 2-core CPU, 1-2 minutes for a ResNet-18
    training graph the first time; later processes reuse the on-disk cache). Inductor's own
    use of the deprecated ``torch.jit.script_method`` warns once per process; that warning is
    torch's, not the user's, and is not shown.
    """
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script_method` is deprecated", category=DeprecationWarning)
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


#: mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_INT_MAX = 2**31 - 1


@lru_cache(maxsize=1)
def _glibc():
    """glibc through ctypes, or None on other C libraries (musl, macOS, Windows)."""
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def resolve_allocator(name: str, device: torch.device) -> str:
    """``auto`` -> ``retain`` for CPU training on glibc, ``system`` elsewhere."""
    if name == "auto":
        return "retain" if device.type == "cpu" and _glibc() is not None else "system"
    if name == "retain" and _glibc() is None:
        raise ConfigError("train.allocator=retain needs glibc's malloc (Linux); use train.allocator=system here")
    return name


def configure_allocator(name: str, device: torch.device) -> str:
    """Apply ``train.allocator`` to this process; returns the setting applied (``retain`` or ``system``).

    ``retain`` keeps freed memory in the process for the next step: glibc serves blocks over
    32 MB (a batch's activations) with a fresh ``mmap`` and unmaps them on free, so every step
    page-faults its activations in again. ``M_MMAP_MAX=0`` takes big blocks from the heap and a 2 GB
    ``M_TRIM_THRESHOLD`` keeps the heap's free top, so after the first step there are none.
    ``M_ARENA_MAX=1`` makes threads share that heap: a thread's own arena is a 64 MB mapped
    heap that the big blocks do not fit, so peers run side by side (``train.concurrent_peers``)
    would fault their activations in every step again. The cost: resident memory stays at its
    high-water mark. The README's performance section has the measurements. The setting lasts
    for the process; ``system`` leaves it untouched.
    """
    applied = resolve_allocator(name, device)
    if applied == "retain":
        libc = _glibc()
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, _INT_MAX)
        libc.mallopt(_M_ARENA_MAX, 1)
    return applied
