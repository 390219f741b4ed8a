"""``dogo bench`` on a tiny cohort (ResNet-18 at width 1/16, batch 16, 16 px): the report's
shape and arithmetic, the CLI, and that bf16 autocast does not change what is learned.

No timing is asserted: the numbers depend on the machine and its load. Everything runs on one
thread (``train.num_threads: 1``): on a machine shared with other test processes, two OpenMP
threads that wait on each other are many times slower than one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

import pytest
import torch

from dogo.bench import (
    add_bench_parser,
    bench_setup,
    ceiling_settings,
    cmd_bench,
    format_report,
    measure_backbone,
    measure_ceiling,
    run_bench,
    stand_in_result,
    target_forwards,
)
from dogo.bench.ceiling import backbone_label
from dogo.config import build_config
from dogo.core.errors import DogoError

TINY = {
    "name": "tiny",
    "seed": 0,
    "dataset": {"name": "fashion-mnist", "image_size": 16},
    "train": {
        "batch_size": 16,
        "num_threads": 1,
        "models": [
            {"objective": "simclr", "backbone": "resnet18", "width": 0.0625, "distill_weight": 100},
            {"objective": "simclr", "backbone": "resnet18", "width": 0.0625},
        ],
    },
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(**train):
    data = json.loads(json.dumps(TINY))
    data["train"].update(train)
    return build_config(data)


@pytest.fixture(scope="module")
def result():
    return run_bench(
        tiny_config(),
        steps=2,
        warmup=1,
        split_steps=1,
        synthetic=True,
        ceiling_steps=1,
        ceiling_compile=False,
        reference=False,
        memory_reference=True,
    )


def test_json_has_the_documented_keys(result):
    text = json.dumps(result)  # JSON-ready as it is
    back = json.loads(text)
    for key in (
        "images_per_s",
        "images_per_s_min",
        "images_per_s_max",
        "ceiling_images_per_s",
        "peak_memory_mb",
        "config",
        "split",
        "fraction_of_ceiling",
        "targets",
        "precision",
    ):
        assert key in back, key
    assert back["config"]["train"]["batch_size"] == 16
    assert back["reference"]["memory"]["peak_memory_mb"] > 0
    assert set(back["targets"]) == {"ceiling", "memory"}


def test_numbers_are_positive_and_consistent(result):
    assert result["images_per_s_min"] <= result["images_per_s"] <= result["images_per_s_max"]
    assert result["images_per_s"] > 0 and result["ceiling_images_per_s"] > 0 and result["peak_memory_mb"] > 0
    assert len(result["step_s"]) == 2 and all(s > 0 for s in result["step_s"])
    assert math.isclose(result["fraction_of_ceiling"], result["images_per_s"] / result["ceiling_images_per_s"])
    (row,) = result["ceiling"]["backbones"]  # both peers share one backbone: measured once, counted twice
    assert row["peers"] == 2 and set(row["settings"]) == {s["name"] for s in ceiling_settings(torch.device("cpu"))}
    assert "fp32+cl" not in row["settings"]  # never channels_last in fp32 on a CPU
    assert math.isclose(result["ceiling_images_per_s"], row["views_per_s"] / 4)


def test_split_parts_sum_to_the_step(result):
    split = result["split"]
    for key in ("augmentation", "optimiser", "distillation", "other", "peer/0/forward", "peer/1/backward"):
        assert split[key] >= 0, key
    parts = sum(v for k, v in split.items() if k != "total" and not k.endswith("heads_and_ssl"))
    assert parts == pytest.approx(split["total"], rel=1e-6)
    assert split["peer/0/heads_and_ssl"] <= split["peer/0/forward"]
    assert sum(
        result["split_fraction"][k] for k in split if k != "total" and not k.endswith("heads_and_ssl")
    ) == pytest.approx(1.0)


def test_table_names_every_part(result):
    table = format_report(result, "tiny")
    for text in ("images/s", "peak memory", "ceiling", "augmentation", "peer 1 backward", "% of the ceiling"):
        assert text in table


def test_measure_backbone_counts_views():
    r = measure_backbone("resnet18", 0.0625, 16, 8, forwards=2, steps=2, warmup=1)
    assert r["views_per_s"] > 0 and len(r["step_s"]) == 2


def _parse(argv):
    parser = argparse.ArgumentParser(prog="dogo")
    add_bench_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_json(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(json.dumps(TINY))  # JSON is YAML
    args = _parse(
        [
            "bench",
            str(path),
            "train.batch_size=8",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--split-steps",
            "1",
            "--synthetic",
            "--no-ceiling",
            "--no-reference",
            "--json",
        ]
    )
    assert cmd_bench(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["train"]["batch_size"] == 8 and out["images_per_s"] > 0
    assert "ceiling_images_per_s" not in out and out["targets"] == {}


def test_cli_errors_are_dogo_errors(tmp_path):
    with pytest.raises(DogoError, match="no such config"):
        cmd_bench(_parse(["bench", str(tmp_path / "missing.yaml"), "--synthetic"]))
    path = tmp_path / "tiny.yaml"
    path.write_text(json.dumps(TINY))
    with pytest.raises(DogoError, match="steps"):
        cmd_bench(_parse(["bench", str(path), "--steps", "0", "--synthetic"]))


# bf16 must not change what is learned. The two runs share seeds, data and views; they differ
# only in the backbones' matmul precision (heads and losses stay fp32). Tolerances, for each
# peer's terms over 10 steps: every step's SSL loss within 2 % of the fp32 run's; every step's KL
# (and total, which carries the KL) within 20 % (the KL between two peers' similarity softmaxes
# at tau = 0.1 is a small difference of large logits, and the two runs' weights drift apart a
# little each step: the largest gap seen over seeds 0-3 was 11.5 %, the SSL losses' 1.0 %); the
# mean of every term over the 10 steps within 3 % (seen: at most 1.3 %); and in both runs the
# student's KL falls (its mean over the last 3 steps below 3/4 of the first 3's).
SSL_STEP_RTOL, KL_STEP_RTOL, MEAN_RTOL = 0.02, 0.20, 0.03


def _losses(precision: str, steps: int = 10) -> list[dict[str, float]]:
    from dogo.training.step import training_step

    config = tiny_config(precision=precision)  # channels_last auto: off in fp32, on in bf16
    generator = torch.Generator().manual_seed(0)
    # structured images (blobs at random places), so that the views of one image resemble each other
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    centres = torch.rand(64, 2, generator=generator) * 20 + 4
    blobs = torch.exp(-((yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2) / 30)
    images = (255 * blobs).to(torch.uint8).unsqueeze(1)
    setup, sampler = bench_setup(config, images)
    losses = []
    for step in range(steps):
        chunk = images[(step * 16) % 64 : (step * 16) % 64 + 16]
        result, _ = training_step(setup, chunk, sampler.view_seeds(step, len(setup.cohort)), step)
        assert result.finite
        losses.append({k: v for k, v in result.losses.items() if "/loss" in k})
    return losses


def test_bf16_learns_what_fp32_learns():
    fp32, bf16 = _losses("fp32"), _losses("bf16")
    for key in fp32[0]:
        rtol = SSL_STEP_RTOL if key.endswith("/ssl") else KL_STEP_RTOL  # totals carry the KL
        for step, (a, b) in enumerate(zip(fp32, bf16, strict=True)):
            assert abs(a[key] - b[key]) <= rtol * abs(a[key]), (key, step, a[key], b[key])
        mean_a, mean_b = sum(a[key] for a in fp32), sum(b[key] for b in bf16)
        assert abs(mean_a - mean_b) <= MEAN_RTOL * abs(mean_a), (key, mean_a, mean_b)
    for run in (fp32, bf16):  # the distillation does its job in both precisions (seen: 10.3 -> 7.0 in fp32)
        first, last = (sum(r["peer/0/loss/kl"] for r in rows) / 3 for rows in (run[:3], run[-3:]))
        assert last < 0.75 * first


def test_stand_in_keeps_the_fastest_measurement():
    result = stand_in_result([{"views_per_s": 40.0}, {"views_per_s": 36.0}, {"error": "timed out"}])
    assert result["fp32_resnet18_views_per_s"] == 40.0 and result["fp32_resnet18_views_per_s_each"] == [40.0, 36.0]
    assert result["images_per_s"] == pytest.approx(0.936 * 40.0 / 4)
    assert stand_in_result([{"error": "child failed: boom"}]) == {"error": "child failed: boom"}


def test_side_by_side_ceiling_is_measured_and_reported(result):
    """With a core per peer the ceiling also times the backbones side by side and keeps the faster."""
    torch.set_num_threads(2)
    try:
        ceiling = measure_ceiling(tiny_config(num_threads=2), torch.device("cpu"), steps=1, warmup=1, compile=False)
    finally:
        torch.set_num_threads(1)
    side = ceiling["side_by_side"]
    assert side["threads_per_peer"] == 1 and side["settings"] == [ceiling["backbones"][0]["best"]] * 2
    assert len(side["step_s"]) == 1 and side["images_per_s"] > 0
    assert ceiling["images_per_s"] == max(ceiling["one_after_another"], side["images_per_s"])
    report = dict(
        result,
        ceiling=ceiling,
        ceiling_images_per_s=ceiling["images_per_s"],
        fraction_of_ceiling=result["images_per_s"] / ceiling["images_per_s"],
    )
    json.dumps(report)
    assert "side by side (1 thread(s) each" in format_report(report)
    # One thread for two peers: no side by side to try.
    assert "side_by_side" not in measure_ceiling(tiny_config(), torch.device("cpu"), steps=1, warmup=1, compile=False)


def test_the_ceiling_counts_every_view_of_a_multi_crop_peer():
    """DINO's peer trains on 2 global crops (one batch) and 3 local crops (another, at 4 px) per image."""
    from dogo.bench.ceiling import peer_views

    config = tiny_config(
        models=[
            {
                "objective": "dino",
                "backbone": "resnet18",
                "width": 0.0625,
                "n_proj": 8,
                "objective_options": {"hidden": 8, "bottleneck": 8, "local_crops": 3},
            },
            {"objective": "simclr", "backbone": "resnet18", "width": 0.0625},
        ]
    )
    size = config.dataset.image_size
    assert peer_views(config.train.models[1], size) == ((size, 1), (size, 1))
    assert peer_views(config.train.models[0], size) == ((size, 2), (size // 2, 3))
    ceiling = measure_ceiling(config, torch.device("cpu"), steps=1, warmup=1, compile=False)
    dino, simclr = ceiling["backbones"]
    assert (dino["views_per_image"], dino["target_forwards"], simclr["views_per_image"]) == (5, 2, 2)
    assert backbone_label(dino) == f"resnet18 x0.0625 +target 2x{size}px+3x{size // 2}px"
    assert ceiling["views_per_step"] == (5 + 2) * config.train.batch_size
    assert math.isclose(ceiling["one_after_another"], 1 / (5 / dino["views_per_s"] + 2 / simclr["views_per_s"]))


def test_the_ceiling_counts_a_target_networks_forward():
    """BYOL's and MoCo's target encoders forward both views each step (no graph): the ceiling times them too."""
    objectives = ("simclr", "simsiam", "byol", "moco", "barlow_twins", "vicreg", "dino")
    assert [target_forwards(o) for o in objectives] == [0, 0, 2, 2, 0, 0, 2]
    from dogo.models import build_backbone

    backbone = type(build_backbone("resnet18", image_size=16, width=0.0625))
    calls = []
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: calls.append(torch.is_grad_enabled()) if isinstance(module, backbone) else None
    )
    try:
        measure_backbone("resnet18", 0.0625, 16, 8, forwards=2, targets=2, steps=1, warmup=1)
    finally:
        hook.remove()
    assert calls == [False, False, True, True] * 2  # per step: two target views without a graph, two trained

    config = tiny_config(
        models=[
            {
                "objective": "byol",
                "backbone": "resnet18",
                "width": 0.0625,
                "n_proj": 8,
                "objective_options": {"hidden": 16},
                "distill_weight": 100,
            },
            {"objective": "simclr", "backbone": "resnet18", "width": 0.0625},
        ]
    )
    ceiling = measure_ceiling(config, torch.device("cpu"), steps=1, warmup=1, compile=False)
    rows = {row["target_forwards"]: row for row in ceiling["backbones"]}  # same backbone, measured apart
    assert set(rows) == {0, 2} and rows[0]["peers"] == rows[2]["peers"] == 1
    assert backbone_label(rows[2]) == "resnet18 x0.0625 +target" and backbone_label(rows[0]) == "resnet18 x0.0625"
    assert math.isclose(ceiling["one_after_another"], 1 / (2 / rows[0]["views_per_s"] + 2 / rows[2]["views_per_s"]))


# ---------------------------------------------------------------- was the machine idle?


def test_others_busy_sees_a_process_that_runs_now():
    """A process spinning on one core while the bench would start counts as that core's share at least."""
    from dogo.bench.machine import others_busy

    spinner = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.time() + 3\nwhile time.time() < end: pass"]
    )
    try:
        time.sleep(0.3)  # the interpreter is up and spinning
        busy = others_busy(1.0)
    finally:
        spinner.kill()
        spinner.wait()
    assert busy is not None and busy >= 0.8 / os.cpu_count()


@pytest.mark.parametrize(
    ("load_before", "others", "warned"),
    [
        (1.9, 0.02, False),  # a bench that ended a minute ago still lifts the load average: no warning
        (0.1, 0.60, True),  # something runs now, whatever the average says
        (1.9, None, True),  # no /proc/stat: the load average decides
        (0.2, None, False),
    ],
)
def test_the_idle_warning_reads_what_ran_just_before(load_before, others, warned):
    from dogo.bench.table import _load

    lines = _load({"load_average": {"before": load_before, "after": 2.0, "cores": 2, "others_busy_before": others}})
    assert len(lines) == 1
    assert ("WARNING: other processes were running" in lines[0]) is warned, lines[0]
