"""Test-session settings: one CPU thread per pytest-xdist worker (two workers share two cores)."""

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)

# Fixtures shared by several test modules, found by pytest here: a module that imported one and
# named it as a test's parameter would redefine the import (ruff F811).
from guarded import world  # noqa: F401 - the `world` fixture of the guards tests
from test_bad_inputs import runs  # noqa: F401 - the trained `runs` of test_robustness too
