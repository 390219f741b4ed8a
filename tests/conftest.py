"""Test-session settings: one CPU thread per pytest-xdist worker (two workers share two cores), and a guard
that fails any test leaving the process's SIGINT or SIGTERM handler changed."""

import os
import signal

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)

# Fixtures shared by several test modules, found by pytest here: a module that imported one and
# named it as a test's parameter would redefine the import (ruff F811).
from guarded import world  # noqa: F401 - the `world` fixture of the guards tests
from test_bad_inputs import runs  # noqa: F401 - the trained `runs` of test_robustness too

_GUARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# The guard: every phase of every test (setup, with the module- and session-scoped fixtures it starts, the
# test itself, teardown) and the collection of every module must leave SIGINT and SIGTERM as it found them.
# A handler left changed (dogo's CLI run in-process, a Trainer, a study) leaks into every later test of the
# worker and into the subprocesses they start: a child started with SIGINT ignored keeps it ignored and
# trains on through its Ctrl-C. The leaker fails, and the handler is put back so that only it fails.


def _handlers() -> dict:
    return {sig: signal.getsignal(sig) for sig in _GUARDED_SIGNALS}


def _put_back(before: dict) -> list[str]:
    """What changed since ``before`` (put back as it was)."""
    changed = []
    for sig, handler in before.items():
        after = signal.getsignal(sig)
        if after is not handler:
            changed.append(f"{signal.Signals(sig).name}: {handler!r} -> {after!r}")
            signal.signal(sig, handler)
    return changed


def _guarded(phase: str):
    @pytest.hookimpl(wrapper=True)
    def hook(item):
        before = _handlers()
        try:
            return (yield)
        finally:
            changed = _put_back(before)
            if changed:
                pytest.fail(f"{phase} left signal handlers changed: " + "; ".join(changed), pytrace=False)

    return hook


pytest_runtest_setup = _guarded("setup (the test's fixtures)")
pytest_runtest_call = _guarded("the test")
pytest_runtest_teardown = _guarded("teardown (the test's fixtures)")


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    before = _handlers()
    report = yield
    changed = _put_back(before)
    if changed:
        report.outcome = "failed"
        report.longrepr = f"collecting {collector.nodeid} left signal handlers changed: " + "; ".join(changed)
    return report
