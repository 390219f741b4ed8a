"""Data-parallel training on 2 CPU processes (gloo) against one process with the same global batch.

Two launches, to stay fast on 2 cores: ``torch.multiprocessing`` workers that start their process
group through ``dogo.core.dist.init_from_env`` from torchrun's environment variables (one step on each
rank's slice of views drawn once in the parent, compared with the parent's single-process step on
all of them; then a run stopped after 2 steps and resumed to 4), and one
``torchrun -m dogo pretrain`` of the same 4 steps through the CLI, which the resumed run must match.
A CNN + ViT cohort (a SimCLR ResNet with a DINO ViT: multi-crop views, an EMA teacher, DINO's
centre) gets the same one-step comparison in float64, and a torchrun of 3 steps.

Tolerance of the one-step equivalence, on every loss term, every parameter gradient (after DDP's
averaging) and every BatchNorm running statistic, per tensor: ``max|got - want| <= tol *
max(1, max|want|)`` with ``tol = 1e-10`` in float64 (measured: 5e-14, i.e. the computation is
the same up to rounding) and ``tol = 1e-4`` in float32 (measured: 2.4e-6 on the losses, 2.5e-5 on
the gradients: two ranks sum the same terms in another order, and the distillation weight 100
amplifies rounding). With per-rank BatchNorm (``sync_batchnorm=off``) the losses miss by 0.2, so
the comparison is not vacuous. The logged ``collapse_std`` is the mean over ranks of a per-rank
std, not the global-batch std, and is not compared.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from dogo.config import build_config
from dogo.core import dist
from dogo.runs.checkpoint import load_checkpoint
from dogo.runs.rundir import prepare_run_dir
from dogo.runs.runlock import release
from dogo.training.step import draw_views, train_step
from dogo.training.trainer import Trainer

WORLD = 2
GLOBAL_BATCH = 16
TOL = {"fp64": 1e-10, "fp32": 1e-4}  # bounds on _worst(): per tensor, max|got - want| / max(1, max|want|)
# (name, parameter dtype, train.sync_batchnorm) of the one-step comparisons
VARIANTS = [("fp64", torch.float64, "on"), ("fp32", torch.float32, "on"), ("fp32-bn-off", torch.float32, "off")]
LOSS_KEYS = [f"peer/{i}/{t}" for i in range(2) for t in ("loss", "loss/ssl", "loss/kl")]

# A SimCLR peer and a SimSiam peer (both objectives, both pairings of the KL) on 8x8 digits.
CONFIG = {
    "name": "ddp-test",
    "seed": 3,
    "dataset": {"name": "digits", "image_size": 8},
    "train": {
        "epochs": 1,
        "batch_size": GLOBAL_BATCH,
        "max_steps": 4,
        "precision": "fp32",
        "num_threads": 1,
        "sync_batchnorm": "on",
        "models": [
            {
                "objective": "simclr",
                "backbone": "resnet18",
                "width": 0.0625,
                "distill_weight": 100,
                "optimizer": {"lr": 1e-3},
            },
            {"objective": "simsiam", "backbone": "resnet18", "width": 0.0625, "n_proj": 32, "optimizer": {"lr": 1e-3}},
        ],
    },
    "logging": {"log_every": 1, "save_every": 0, "knn_every": 0, "tensorboard": False, "progress": False},
}


# A CNN + ViT cohort: the SimCLR ResNet student with a DINO ViT-Tiny peer (multi-crop views, an EMA
# teacher, the centre, the prototypes frozen in the first epoch, gradient clipping).
MIXED_MODELS = [
    {
        "name": "cnn",
        "objective": "simclr",
        "backbone": "resnet18",
        "width": 0.0625,
        "distill_weight": 100,
        "optimizer": {"lr": 1e-3},
    },
    {
        "name": "vit",
        "objective": "dino",
        "backbone": "vit_tiny",
        "width": 0.0625,
        "n_proj": 16,
        "objective_options": {"hidden": 16, "bottleneck": 8, "local_crops": 2},
        "optimizer": {"name": "adamw", "lr": 1e-3},
    },
]


def _config(**train):
    data = json.loads(json.dumps(CONFIG))
    data["train"].update(train)
    return build_config(data)


def _mixed_config(**train):
    return _config(models=MIXED_MODELS, **train)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun_pretrain(config: Path, out: Path) -> list[str]:
    """``torchrun -m dogo pretrain CONFIG --out OUT`` on WORLD local ranks, at a free port."""
    torchrun = Path(sys.executable).with_name("torchrun")
    return [
        str(torchrun),
        "--nproc_per_node",
        str(WORLD),
        "--master_port",
        str(_free_port()),
        "-m",
        "dogo",
        "pretrain",
        str(config),
        "--out",
        str(out),
    ]


def _grads_and_buffers(trainer: Trainer) -> dict[str, torch.Tensor]:
    out = {}
    for i, peer in enumerate(trainer.cohort.peers):  # (target networks and frozen prototypes have no gradient)
        out.update({f"{i}.{k}.grad": p.grad.detach().clone() for k, p in peer.named_parameters() if p.grad is not None})
        out.update({f"{i}.{k}": b.detach().clone() for k, b in peer.named_buffers() if b.is_floating_point()})
    return out


def _step_rows(run: Path) -> list[int]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [row["step"] for row in rows if "images_per_s" in row]  # step rows, not epoch rows


def _step(config, views, dtype: torch.dtype, run_dir) -> dict:
    """Build a trainer with ``dtype`` parameters and run one step on ``views``."""
    torch.set_default_dtype(dtype)
    try:
        trainer = Trainer(config, run_dir, log=lambda m: None)
    finally:
        torch.set_default_dtype(torch.float32)
    trainer.cohort.train(True)
    step = train_step(
        trainer.cohort,
        [tuple(v.to(dtype) for v in peer_views) for peer_views in views],
        trainer.kl,
        trainer.settings.autocast,
    )
    return {"losses": step.losses, "state": _grads_and_buffers(trainer), "trainer": trainer}


def _worker(rank: int, port: int, views, mixed_views, out_dir: str) -> None:
    """One rank, started as torchrun would start it (environment variables only)."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    result = {}
    try:
        n = GLOBAL_BATCH // WORLD
        local = [tuple(v[rank * n : (rank + 1) * n] for v in peer_views) for peer_views in views]
        # 1. one step on this rank's slice of the parent's views (the trainer starts the group)
        for name, dtype, sync in VARIANTS:
            result[name] = _step(_config(sync_batchnorm=sync), local, dtype, out_dir)
            trainer = result[name].pop("trainer")
            if name == "fp32":
                result["params_after_step"] = [p.detach().clone() for p in trainer.cohort.peers[0].parameters()]
        mixed = [tuple(v[rank * n : (rank + 1) * n] for v in peer_views) for peer_views in mixed_views]
        result["mixed"] = _step(_mixed_config(), mixed, torch.float64, out_dir)
        result["mixed"].pop("trainer")
        result["world"] = (dist.rank(), dist.world_size(), dist.is_main_process())
        auto = Trainer(_config(sync_batchnorm="auto"), out_dir, log=lambda m: None).cohort
        result["auto"] = [
            {
                part: sorted(
                    {type(m).__name__ for m in getattr(peer, part).modules() if "BatchNorm" in type(m).__name__}
                )
                for part in ("encoder", "objective")
            }
            for peer in auto.peers
        ]
        result["wrapped"] = [type(m).__name__ for m in auto.train_modules]
        result["seeds"] = [
            trainer.sampler.view_seeds(0, 2),
            trainer.sampler.view_seeds(0, 2),
            trainer.sampler.view_seeds(1, 2),
        ]
        # 2. a run stopped after 2 steps, then resumed to 4 (Trainer.resume: what `--resume` runs)
        run = Path(out_dir) / "resumed"
        Trainer(_config(max_steps=2), run, log=lambda m: None).fit()
        if dist.is_main_process():
            result["first_part"] = (load_checkpoint(run / "checkpoints" / "last.pt")["step"], _step_rows(run))
        Trainer.resume(run, ["train.max_steps=4"], log=lambda m: None).fit()
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.cleanup()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Reference step in this process, then the same step (and a 4-step run) on 2 gloo ranks."""
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("ddp")
    threads = torch.get_num_threads()  # the trainers below set 1 (train.num_threads)
    try:
        reference = Trainer(_config(), out / "reference", log=lambda m: None)
        assert not dist.is_distributed() and reference.cohort.train_modules == reference.cohort.peers
        images = reference.data.images[:GLOBAL_BATCH]
        views = draw_views(reference.cohort, images, [11, 12], reference.device, reference.settings.channels_last)
        expected = {}
        for name, dtype, _ in VARIANTS[:2]:
            expected[name] = _step(_config(), views, dtype, out / "reference")
            del expected[name]["trainer"]
        mixed = Trainer(_mixed_config(), out / "reference-mixed", log=lambda m: None)
        mixed_views = draw_views(mixed.cohort, images, [11, 12], mixed.device, mixed.settings.channels_last)
        expected["mixed"] = _step(_mixed_config(), mixed_views, torch.float64, out / "reference-mixed")
        del expected["mixed"]["trainer"]
    finally:
        torch.set_num_threads(threads)

    prepare_run_dir(_config(max_steps=2), out / "resumed")
    release(out / "resumed")  # prepare_run_dir locks it for this process; the ranks train it
    mp.spawn(_worker, args=(_free_port(), views, mixed_views, str(out)), nprocs=WORLD, join=True)
    results = [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]
    return out, expected, results


def _worst(got: dict, want: dict) -> float:
    """max over entries of ``max|got - want| / max(1, max|want|)`` (entries: floats or tensors).

    Relative to each tensor's largest value (elementwise relative errors are meaningless for
    entries that are zero up to rounding, such as the gradients of biases followed by BatchNorm)
    and absolute below 1.
    """
    assert got.keys() == want.keys()
    worst = 0.0
    for key, value in want.items():
        a, b = (torch.as_tensor(x, dtype=torch.float64 if isinstance(x, float) else None) for x in (got[key], value))
        worst = max(worst, float((a - b).abs().max() / b.abs().max().clamp(min=1.0)))
    return worst


def test_two_ranks_compute_the_single_process_step(two_ranks) -> None:
    _, expected, results = two_ranks
    assert [r["world"] for r in results] == [(0, 2, True), (1, 2, False)]
    assert not dist.is_distributed()  # the parent never joined a group

    for name, _, _ in VARIANTS[:2]:
        want = expected[name]
        for r in results:
            got = r[name]
            losses = _worst({k: got["losses"][k] for k in LOSS_KEYS}, {k: want["losses"][k] for k in LOSS_KEYS})
            state = _worst(got["state"], want["state"])
            assert losses < TOL[name], (name, losses)  # logged losses: the means over ranks
            assert state < TOL[name], (name, state)  # DDP-averaged gradients, synced BN statistics
    for a, b in zip(results[0]["params_after_step"], results[1]["params_after_step"], strict=True):
        assert torch.equal(a, b)  # one optimiser step on identical averaged gradients

    # Per-rank BatchNorm is a different computation: the tolerance would catch it.
    off = results[0]["fp32-bn-off"]
    assert _worst(off["losses"], expected["fp32"]["losses"]) > 100 * TOL["fp32"]


def test_two_ranks_compute_the_single_process_step_of_a_cnn_and_vit_cohort(two_ranks) -> None:
    """The ResNet + DINO ViT cohort, in float64: multi-crop views sliced per rank, DINO's loss and
    gradient clipping on DDP-averaged gradients, its centre from every rank's batch mean."""
    _, expected, results = two_ranks
    want = expected["mixed"]
    assert "1.objective.center" in want["state"] and want["state"]["1.objective.center"].abs().sum() > 0
    assert "1.objective.head.last_layer.weight_v.grad" not in want["state"]  # frozen in the first epoch
    for r in results:
        keys = [f"peer/{i}/{t}" for i in range(2) for t in ("loss", "loss/ssl", "loss/kl")]
        assert _worst({k: r["mixed"]["losses"][k] for k in keys}, {k: want["losses"][k] for k in keys}) < TOL["fp64"]
        assert _worst(r["mixed"]["state"], want["state"]) < TOL["fp64"]


def test_sync_batchnorm_auto_syncs_the_heads_and_ddp_wraps_each_peer(two_ranks) -> None:
    _, _, results = two_ranks
    for r in results:
        assert r["auto"] == [{"encoder": ["BatchNorm2d"], "objective": ["SyncBatchNorm"]}] * 2
        assert r["wrapped"] == ["DistributedDataParallel"] * 2


def test_sync_batchnorm_module_in_one_process(monkeypatch) -> None:
    """Without a process group the CPU SyncBatchNorm is BatchNorm; conversion keeps tensors and keys."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 5),
        torch.nn.BatchNorm1d(5),
    )
    x = torch.randn(6, 3, 4, 4)
    want = model(x)
    params, keys = list(model.parameters()), list(model.state_dict())
    converted = dist.convert_sync_batchnorm(model, "cpu")
    assert converted is model and [type(model[i]).__name__ for i in (1, 5)] == ["SyncBatchNorm"] * 2
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True)) and list(model.state_dict()) == keys
    torch.testing.assert_close(model(x), want)
    assert int(model[1].num_batches_tracked) == 2
    assert dist.data_parallel(model, "cpu") is model and dist.any_process(True) and not dist.any_process(False)
    assert dist.on_main_process(lambda: 7) == 7 and dist.broadcast_object("x") == "x"
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert dist.init_from_env() is False and not dist.is_distributed()  # a plain process: no group


def test_each_rank_draws_its_own_views_reproducibly(two_ranks) -> None:
    _, _, results = two_ranks
    (a0, a0_again, a1), (b0, _, _) = results[0]["seeds"], results[1]["seeds"]
    assert a0 == a0_again and a0 != a1  # the same step gives the same seeds, the next step others
    assert set(a0).isdisjoint(b0)  # and the two ranks draw different augmentations


@pytest.mark.slow
def test_torchrun_trains_and_checkpoints_as_a_resumed_run(two_ranks, tmp_path) -> None:
    out, _, results = two_ranks
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(_config().dump()))
    run = tmp_path / "run"
    command = _torchrun_pretrain(config, run)
    proc = subprocess.run(command, check=False, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("run directory:") == 1  # only rank 0 talks
    assert "2 processes (global batch 16)" in proc.stderr

    # rank 0 alone wrote one line per step and the checkpoints
    assert _step_rows(run) == [1, 2, 3, 4]
    assert results[0]["first_part"] == (2, [1, 2])
    assert _step_rows(out / "resumed") == [1, 2, 3, 4]  # the replayed lines were truncated, none doubled
    uninterrupted = load_checkpoint(run / "checkpoints" / "last.pt")
    resumed = load_checkpoint(out / "resumed" / "checkpoints" / "last.pt")
    assert uninterrupted["step"] == resumed["step"] == 4
    # 2 steps + resume = 4 uninterrupted steps (same seeds, data order and per-rank views)
    for got, want in zip(resumed["peers"], uninterrupted["peers"], strict=True):
        assert got.keys() == want.keys()
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6, msg=key)
    for got, want in zip(resumed["optimizers"], uninterrupted["optimizers"], strict=True):
        torch.testing.assert_close(got["state"], want["state"], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_torchrun_trains_a_cnn_and_vit_cohort(tmp_path) -> None:
    """`torchrun -m dogo pretrain` of the ResNet + DINO ViT cohort: 3 steps on 2 ranks, one log, a checkpoint."""
    config = tmp_path / "mixed.yaml"
    config.write_text(yaml.safe_dump(_mixed_config(max_steps=3).dump()))
    run = tmp_path / "run"
    command = _torchrun_pretrain(config, run)
    proc = subprocess.run(command, check=False, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _step_rows(run) == [1, 2, 3]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(row[f"peer/{p}/loss/kl"]) for row in rows if "images_per_s" in row for p in ("cnn", "vit"))
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 3 and state["peers"][1]["objective.center"].abs().sum() > 0


# ------------------------------------------------------------------ one store for all ranks

STORE_IMAGES = 200_000  # 3 x 32 x 32 uint8 each: a 614 MB store
STORE_BYTES = STORE_IMAGES * 3 * 32 * 32
RANK_ANON_MB = 400  # the bound on a rank's anonymous memory while it trains from the store (see below)


def _status_kb(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _status_kb(int(entry.name), "PPid") == pid:
            found.append(int(entry.name))
    return found


def _maps(pid: int, path: Path) -> bool:
    try:
        return str(path) in Path(f"/proc/{pid}/maps").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False


def _synthetic_store(tmp_path: Path, dataset) -> Path:
    """A 614 MB store of random images for an image folder of one file (writing it takes seconds, decoding
    200,000 files would take minutes); its identity and digest are the folder's, so training takes it."""
    from dogo.data.base import ImageDataset
    from dogo.data.source import _source, store_path
    from dogo.data.store import prepare_store

    store = store_path(dataset.name, "train", dataset.options, dataset.store_dir)
    ident, digest, _ = _source(dataset.name, dataset.root, "train", False, dataset.options, store)
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (STORE_IMAGES, 3, 32, 32), dtype=np.uint8))
    prepare_store(store, lambda: ImageDataset("imagefolder", images, None, [], "synthetic"), ident, digest)
    return store


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_torchrun_ranks_share_one_store_instead_of_each_holding_the_images(tmp_path) -> None:
    """Two ranks train from a 614 MB store; each one's anonymous memory (RssAnon: what no file
    backs, where a decoded in-memory split lives) stays far below the store's size.

    A rank's own memory is torch (about 145 MB of RssAnon after ``import torch``), gloo, the tiny
    cohort, its optimiser and views: about 285 MB on Linux x86-64, whatever the store's size
    (measured with stores of 3 and 307 MB). In memory, each rank would add the whole split, 614 MB,
    to that; from the store, the images are page-cache pages of ``images.npy``, one copy for both
    ranks, and a rank holds only the batches it gathers. The bound, 400 MB, leaves 115 MB for
    another torch's overhead and is 500 MB below what a rank holding a copy of the split needs.
    Samples count only while the rank maps the store (it has loaded its data).
    """
    root = tmp_path / "folder"
    (root / "train" / "c0").mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "train" / "c0" / "0.png")
    data = {
        "name": "imagefolder",
        "root": str(root),
        "image_size": 32,
        "options": {"image_size": 32},
        "store": "on",
        "store_dir": str(tmp_path / "stores"),
    }
    config = _config(max_steps=8, batch_size=32)
    config = build_config({**config.dump(), "dataset": data, "seed": 0})
    store = _synthetic_store(tmp_path, config.dataset) / "images.npy"
    assert store.stat().st_size >= STORE_BYTES
    path = tmp_path / "store.yaml"
    path.write_text(yaml.safe_dump(config.dump()))

    command = _torchrun_pretrain(path, tmp_path / "run")
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    peak: dict[int, int] = {}  # rank pid -> largest RssAnon (kB) seen while it maps the store
    began = time.monotonic()
    while proc.poll() is None:
        if time.monotonic() - began > 300:  # minutes only on a machine loaded far beyond its cores
            proc.kill()
            break
        for pid in _children(proc.pid):
            anon = _status_kb(pid, "RssAnon")
            if anon is not None and _maps(pid, store):
                peak[pid] = max(peak.get(pid, 0), anon)
        time.sleep(0.02)
    _, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert _step_rows(tmp_path / "run")[-1] == 8
    assert len(peak) == WORLD, f"saw {len(peak)} ranks mapping the store"
    worst_mb = max(peak.values()) / 1024
    assert worst_mb < RANK_ANON_MB < STORE_BYTES / 1e6, (
        f"a rank held {worst_mb:.0f} MB of anonymous memory beside a {STORE_BYTES / 1e6:.0f} MB store"
    )
