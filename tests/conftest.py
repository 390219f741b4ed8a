"""Test-session settings: one CPU thread per pytest-xdist worker (two workers share two cores)."""

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
