"""Per-machine runtime settings: the allocator setting, checked by counting page faults."""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys

import pytest
import torch

from dogo.config import build_config
from dogo.core.errors import ConfigError
from dogo.core.runtime import resolve_allocator

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="train.allocator=retain is glibc's mallopt")

# A 64 MB block (above glibc's largest mmap threshold, like a batch's activations) allocated,
# written and freed again and again, in the main thread or in a worker thread (as peers run
# side by side); prints the minor page faults of the last four rounds. The heap takes a few
# rounds to settle (small allocations land between the freed blocks).
FAULTS = """
import json, resource, sys, threading, torch
from dogo.core.runtime import configure_allocator
applied = configure_allocator(sys.argv[1], torch.device("cpu"))
def round_trip():
    block = torch.empty(16 * 2**20, dtype=torch.float32)
    block.fill_(1.0)
    del block
def rounds(out):
    for _ in range(12):
        round_trip()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        round_trip()
    out["faults"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
out = {"applied": applied}
if sys.argv[2] == "thread":
    worker = threading.Thread(target=rounds, args=(out,))
    worker.start()
    worker.join()
else:
    rounds(out)
print(json.dumps(out))
"""


def _faults(setting: str, where: str = "main") -> dict:
    done = subprocess.run([sys.executable, "-c", FAULTS, setting, where], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@glibc
@pytest.mark.parametrize("where", ["main", "thread"])
def test_retain_stops_the_page_faults_of_big_blocks(where):
    system, retain = _faults("system", where), _faults("retain", where)
    assert system["applied"] == "system" and retain["applied"] == "retain"
    pages = 4 * 64 * 2**20 // 4096
    assert system["faults"] > pages // 2  # libc unmaps and faults every round in again
    # The block is reused; in a worker thread only because retain also makes threads share
    # the main heap (a thread's own arena cannot hold it: it faulted every page in each round).
    assert retain["faults"] < pages // 20


@glibc
def test_auto_retains_on_cpu_only():
    assert resolve_allocator("auto", torch.device("cpu")) == "retain"
    assert resolve_allocator("auto", torch.device("cuda")) == "system"
    assert resolve_allocator("system", torch.device("cpu")) == "system"


def test_allocator_is_validated():
    with pytest.raises(ConfigError, match=re.escape("train.allocator")):
        build_config({"train": {"allocator": "jemalloc"}})
