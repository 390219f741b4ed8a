"""MoCo v2, Barlow Twins and VICReg: losses against slow loop references written from the papers'
pseudo-code (values and gradients), the MoCo queue, and the global batch on two gloo processes."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.nn.functional as F

from dogo.config import PeerConfig
from dogo.core.errors import ConfigError
from dogo.objectives import objective_options
from dogo.objectives.barlow_twins import BarlowTwinsLoss
from dogo.objectives.moco import InfoNCELoss
from dogo.objectives.vicreg import VICRegLoss
from dogo.training.cohort import Peer

# ----------------------------------------------------------------------------- loop references


def slow_infonce(q, k, queue, tau):
    """He et al. 2020, Algorithm 1, one query at a time."""
    total = q.new_zeros(())
    for qi, ki in zip(q, k, strict=True):
        qi, ki = qi / qi.norm(), ki.detach() / ki.detach().norm()
        pos = torch.dot(qi, ki) / tau
        negs = [torch.dot(qi, kj / kj.norm()) / tau for kj in queue]
        total = total - (pos - torch.logsumexp(torch.stack([pos, *negs]), dim=0))
    return total / len(q)


def slow_barlow(z_a, z_b, lam, eps=1e-5):
    """Zbontar et al. 2021, Algorithm 1, with explicit sums over the batch."""
    n, d = z_a.shape

    def bn(z):
        cols = []
        for j in range(d):
            col = z[:, j]
            mean = sum(col) / n
            var = sum((v - mean) ** 2 for v in col) / n
            cols.append((col - mean) / torch.sqrt(var + eps))
        return torch.stack(cols, dim=1)

    a, b = bn(z_a), bn(z_b)
    loss = z_a.new_zeros(())
    for i in range(d):
        for j in range(d):
            c = sum(a[s, i] * b[s, j] for s in range(n)) / n
            loss = loss + ((1 - c) ** 2 if i == j else lam * c**2)
    return loss


def slow_vicreg(x, y, sim=25.0, std=25.0, cov=1.0):
    """facebookresearch/vicreg main_vicreg.py, element by element."""
    n, d = x.shape
    inv = sum((x[s, j] - y[s, j]) ** 2 for s in range(n) for j in range(d)) / (n * d)

    def var_cov(z):
        zc = z - z.mean(dim=0)
        v = sum(F.relu(1 - torch.sqrt(sum(zc[s, j] ** 2 for s in range(n)) / (n - 1) + 1e-4)) for j in range(d)) / d
        c = (
            sum(
                (sum(zc[s, i] * zc[s, j] for s in range(n)) / (n - 1)) ** 2
                for i in range(d)
                for j in range(d)
                if i != j
            )
            / d
        )
        return v, c

    vx, cx = var_cov(x)
    vy, cy = var_cov(y)
    return sim * inv + std * (vx / 2 + vy / 2) + cov * (cx + cy)


def _check(loss, expected, inputs):
    torch.testing.assert_close(loss, expected, rtol=1e-9, atol=1e-10)
    got = torch.autograd.grad(loss, inputs, allow_unused=True)
    want = torch.autograd.grad(expected, inputs, allow_unused=True)
    for a, b in zip(got, want, strict=True):
        if b is None:
            assert a is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).requires_grad_()


@pytest.mark.parametrize("tau", [0.2, 0.5])
def test_infonce_matches_loop_reference(tau):
    q, k, queue = _rand(4, 6, seed=1), _rand(4, 6, seed=2), _rand(7, 6, seed=3)
    _check(InfoNCELoss(tau)(q, k, queue), slow_infonce(q, k, queue, tau), (q,))
    loss = InfoNCELoss(tau)(q, k, queue)
    loss.backward()
    assert k.grad is None and queue.grad is None


@pytest.mark.parametrize("lam", [0.0051, 0.5])
def test_barlow_twins_matches_loop_reference(lam):
    z_a, z_b = _rand(5, 4, seed=4), _rand(5, 4, seed=5)
    _check(BarlowTwinsLoss(lam)(z_a, z_b), slow_barlow(z_a, z_b, lam), (z_a, z_b))
    # perfectly correlated, decorrelated dimensions: zero loss
    x = torch.linalg.qr(torch.randn(16, 4, dtype=torch.float64))[0] * 4
    x = x - x.mean(0)
    assert BarlowTwinsLoss(0.0)(x, 2 * x).item() == pytest.approx(0.0, abs=1e-4)


def test_vicreg_matches_loop_reference():
    x, y = _rand(6, 3, seed=6), _rand(6, 3, seed=7)
    _check(VICRegLoss()(x, y), slow_vicreg(x, y), (x, y))
    _check(VICRegLoss(1.0, 2.0, 3.0)(x, y), slow_vicreg(x, y, 1.0, 2.0, 3.0), (x, y))
    # a collapsed embedding pays the full variance term: 25 * (1 - 1e-2)
    c = torch.ones(8, 5, dtype=torch.float64)
    assert VICRegLoss()(c, c).item() == pytest.approx(25 * (1 - 1e-2))


# ----------------------------------------------------------------------------- the objectives


def _peer(objective, **options):
    cfg = PeerConfig(
        objective=objective, backbone="resnet18", width=0.0625, n_proj=8, objective_options={"hidden": 16, **options}
    )
    torch.manual_seed(0)
    return Peer.from_config(cfg, image_size=8, label=objective)


@pytest.mark.parametrize("objective", ["moco", "barlow_twins", "vicreg"])
def test_objective_output_and_gradients(objective):
    peer = _peer(objective, **({"queue_size": 12} if objective == "moco" else {}))
    x = torch.randn(6, 3, 8, 8)
    out = peer(x, x.flip(3))
    assert out.loss.requires_grad and torch.isfinite(out.loss)
    assert out.student[0].shape == (6, 8)
    torch.testing.assert_close(out.student[0].norm(dim=1), torch.ones(6))
    out.loss.backward()
    assert all(p.grad is not None for p in peer.encoder.parameters() if p.requires_grad)
    assert not any(k.startswith("encoder.") and "target" in k for k in peer.state_dict())


def test_moco_queue_is_state_filled_after_each_step_oldest_first():
    peer = _peer("moco", queue_size=10, base_momentum=0.9)
    moco = peer.objective
    assert {"objective.queue", "objective.queue_ptr"} <= set(peer.state_dict())
    assert not any(p is moco.queue for p in peer.optimised_parameters())
    peer.train()
    for _ in range(3):
        start = int(moco.queue_ptr)
        out = peer(torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8))
        keys = out.teacher["key"][1]
        target_before = [p.clone() for p in moco.target_head.parameters()]
        peer.after_step()
        idx = [(start + i) % 10 for i in range(4)]
        torch.testing.assert_close(moco.queue[idx], keys)
        assert int(moco.queue_ptr) == (start + 4) % 10
        for new, old, o in zip(moco.target_head.parameters(), target_before, moco.head.parameters(), strict=True):
            torch.testing.assert_close(new, 0.9 * old + 0.1 * o)
    peer.eval()  # a frozen / evaluating peer does not enqueue
    before = moco.queue.clone()
    peer(torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8))
    peer.after_step()
    assert torch.equal(before, moco.queue)


def test_options_name_the_nearest():
    with pytest.raises(ConfigError, match="did you mean 'queue_size'"):
        objective_options("moco", {"queue_sise": 10})
    with pytest.raises(ConfigError, match="did you mean 'lambda_offdiag'"):
        objective_options("barlow_twins", {"lambda_off_diag": 0.1})
    with pytest.raises(ConfigError, match="did you mean 'std_coeff'"):
        objective_options("vicreg", {"std_coef": 1.0})


# ----------------------------------------------------------------------------- global batch (2 gloo ranks)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world_size, port, inputs, out_dir):
    import torch.distributed as td

    torch.set_num_threads(1)
    td.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        n = inputs["a"].shape[0] // world_size
        result = {}
        for name, loss_fn in (("barlow", BarlowTwinsLoss(0.0051)), ("vicreg", VICRegLoss())):
            a, b = (inputs[k][rank * n : (rank + 1) * n].clone().requires_grad_() for k in ("a", "b"))
            loss = loss_fn(a, b)
            (loss / world_size).backward()  # DDP's gradient averaging
            result[name] = (loss.detach(), a.grad, b.grad)
        peer = _peer("moco", queue_size=6)
        peer.objective.enqueue(inputs["a"][rank * n : (rank + 1) * n, :8].float())
        result["queue"] = peer.objective.queue.clone()
        torch.save(result, f"{out_dir}/rank{rank}.pt")
    finally:
        td.destroy_process_group()


def test_two_ranks_compute_the_global_batch_loss(tmp_path):
    import torch.multiprocessing as mp

    world_size, n = 2, 4
    g = torch.Generator().manual_seed(9)
    inputs = {k: torch.randn(world_size * n, 10, generator=g, dtype=torch.float64) for k in ("a", "b")}
    mp.spawn(_worker, args=(world_size, _free_port(), inputs, str(tmp_path)), nprocs=world_size, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world_size)]
    for name, loss_fn in (("barlow", BarlowTwinsLoss(0.0051)), ("vicreg", VICRegLoss())):
        a, b = (inputs[k].clone().requires_grad_() for k in ("a", "b"))
        loss = loss_fn(a, b)
        grads = torch.autograd.grad(loss, (a, b))
        for r, result in enumerate(results):
            got_loss, got_a, got_b = result[name]
            torch.testing.assert_close(got_loss, loss.detach())
            torch.testing.assert_close(got_a, grads[0][r * n : (r + 1) * n])
            torch.testing.assert_close(got_b, grads[1][r * n : (r + 1) * n])
    # MoCo: every rank enqueued both ranks' keys (the last 6 of 8), identical queues
    expected = inputs["a"][-6:, :8].float()
    for result in results:
        torch.testing.assert_close(result["queue"], expected)
