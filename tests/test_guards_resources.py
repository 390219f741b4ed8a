"""Class 6, resources asked for up front (issue 25): an allocation the config implies is refused before it is tried.

:data:`ASKS` lists what a config can ask for (a MoCo queue, a head width, a batch of large views);
:data:`ALLOCATORS` every command that builds a cohort from a config. Each pair is one line naming
the size wanted, what is free and the largest part, exit status 2, before anything is allocated or
created (:func:`dogo.guards.resources.check_cohort_fits` on :func:`dogo.core.memory.check_fits`; the
cohort is counted on PyTorch's meta device). The free memory is set to 2 GiB so that the outcome
does not depend on the machine.
"""

from __future__ import annotations

import re

import pytest
import yaml

from guarded import digits_config, run_cli
from test_bad_inputs import assert_nothing_lost, assert_one_line_error, snapshot

ASKS = {
    "moco-queue": (
        ["train.models.0.objective=moco", "train.models.0.objective_options={queue_size: 100000000}"],
        "objective.queue (100000000x16)",
    ),
    "head-width": (["train.models.0.objective_options={hidden: 20000000}"], "objective.head.0.weight (20000000x32)"),
    "batch-of-large-views": (["dataset.image_size=1024", "train.batch_size=1024"], "the views: 2 x 1024 x 3 x 1024"),
}
ALLOCATORS = {
    "pretrain": lambda cfg, tmp, more: ["pretrain", cfg, *more, "--out", str(tmp / "run")],
    "bench": lambda cfg, tmp, more: ["bench", cfg, *more, "--steps", "1", "--no-ceiling", "--no-reference"],
    # its packaged config, its first peer shaped as the world's (the sizes the lines name)
    "quickstart": lambda cfg, tmp, more: [
        *("quickstart", "train.models.0.width=0.0625", "train.models.0.n_proj=16", *more),
        *("--out", str(tmp / "quickstart")),
    ],
}


@pytest.mark.parametrize("command", list(ALLOCATORS))
@pytest.mark.parametrize("ask", list(ASKS))
def test_an_allocation_that_cannot_fit_is_refused_before_it_is_tried(ask, command, tmp_path, capsys, monkeypatch):
    import dogo.core.memory

    monkeypatch.setattr(dogo.core.memory, "available_bytes", lambda: 2 << 30)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(digits_config()))
    overrides, part = ASKS[ask]
    argv = ALLOCATORS[command](str(tmp_path / "c.yaml"), tmp_path, overrides)
    before = snapshot(tmp_path)
    code, _out, err = run_cli([*argv, "-q"], capsys)
    line = assert_one_line_error(code, err, "of memory, more than the 2.0 GiB available", command)
    assert part in line and re.search(r"needs [\d.]+ [GT]iB", line), line
    assert_nothing_lost(before, snapshot(tmp_path))


def test_the_count_is_exact_for_what_it_counts():
    """Weights and buffers counted on the meta device equal those of the real cohort."""
    import torch

    from dogo.config import build_config
    from dogo.guards.resources import _peer_bytes
    from dogo.training.cohort import Peer

    cfg = build_config(
        {
            **digits_config(),
            "train": {
                **digits_config()["train"],
                "models": [
                    {
                        "backbone": "resnet18",
                        "width": 0.0625,
                        "n_proj": 16,
                        "objective": "moco",
                        "trainable": False,
                        "objective_options": {"queue_size": 64},
                    }
                ],
            },
        },
        "test",
    )
    peer = Peer.from_config(cfg.train.models[0], 8, "p")
    real = sum(t.numel() * t.element_size() for t in [*peer.parameters(), *peer.buffers()])
    counted, _ = _peer_bytes(cfg.train.models[0], 8, "p", Peer.from_config)
    assert counted == real * 4  # frozen: no gradients or moments; a checkpoint being written holds three copies
    assert isinstance(torch.zeros(1, device="meta"), torch.Tensor)
