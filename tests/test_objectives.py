"""SSL objectives: losses against slow references written from the formulas, the objectives'
outputs, the registry, and the distributed gather on two gloo processes."""

from __future__ import annotations

import math
import socket

import pytest
import torch
import torch.nn.functional as F

from dogo.core import dist as dogo_dist
from dogo.core.errors import ConfigError
from dogo.objectives import (
    OBJECTIVES,
    NTXentLoss,
    Objective,
    ObjectiveOutput,
    SimCLR,
    SimSiam,
    SimSiamLoss,
    build_objective,
    embedding_std,
)


def slow_ntxent(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent from the formula: explicit loops over the 2N anchors, log-sum-exp per anchor."""
    views = [F.normalize(v, dim=0) for v in list(z_a) + list(z_b)]  # 2N vectors
    n2 = len(views)
    n = n2 // 2
    total = z_a.new_zeros(())
    for i in range(n2):
        positive = (i + n) % n2
        sims = [torch.dot(views[i], views[k]) / temperature for k in range(n2) if k != i]
        log_denominator = torch.logsumexp(torch.stack(sims), dim=0)
        total = total - (torch.dot(views[i], views[positive]) / temperature - log_denominator)
    return total / n2


@pytest.mark.parametrize("n", [1, 2, 6])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_ntxent_matches_loop_reference_values_and_gradients(n: int, temperature: float) -> None:
    g = torch.Generator().manual_seed(n)
    z_a = torch.randn(n, 5, generator=g, dtype=torch.float64, requires_grad=True)
    z_b = torch.randn(n, 5, generator=g, dtype=torch.float64, requires_grad=True)
    loss = NTXentLoss(temperature)(z_a, z_b)
    grads = torch.autograd.grad(loss, (z_a, z_b))
    expected = slow_ntxent(z_a, z_b, temperature)
    expected_grads = torch.autograd.grad(expected, (z_a, z_b))
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_ntxent_properties() -> None:
    g = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    loss = NTXentLoss(0.5)
    value = loss(z_a, z_b)
    # cosine similarity: invariant to the scale of each embedding; one process: gather is a no-op
    torch.testing.assert_close(loss(3.0 * z_a, 0.1 * z_b), value)
    torch.testing.assert_close(NTXentLoss(0.5, gather=False)(z_a, z_b), value)
    # symmetric in the views; perfectly aligned views beat random ones
    torch.testing.assert_close(loss(z_b, z_a), value)
    assert loss(z_a, z_a) < value
    # views agree, negatives orthogonal: -log(e^(1/t) / (e^(1/t) + 2N - 2)) with 1/t = 2, N = 8
    eye = torch.eye(8, 16)
    expected = -math.log(math.e**2 / (math.e**2 + 14))
    torch.testing.assert_close(loss(eye, eye), torch.tensor(expected))
    with pytest.raises(ConfigError):
        NTXentLoss(0.0)
    with pytest.raises(ValueError):
        loss(z_a, z_b[:4])


def test_ntxent_runs_in_float32_under_autocast() -> None:
    g = torch.Generator().manual_seed(1)
    z_a, z_b = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = NTXentLoss(0.5)(z_a.bfloat16(), z_b.bfloat16())
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, NTXentLoss(0.5)(z_a, z_b), rtol=2e-2, atol=2e-2)


def test_simsiam_loss_matches_formula_and_stops_gradient() -> None:
    g = torch.Generator().manual_seed(2)
    p_a, p_b, z_a, z_b = (torch.randn(6, 10, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(4))
    loss = SimSiamLoss()(p_a, p_b, z_a, z_b)
    cos = [
        torch.dot(p, z) / (p.norm() * z.norm())
        for p_rows, z_rows in ((p_a, z_b), (p_b, z_a))
        for p, z in zip(p_rows, z_rows, strict=True)
    ]
    expected = -0.5 * (torch.stack(cos[:6]).mean() + torch.stack(cos[6:]).mean())
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert z_a.grad is None and z_b.grad is None
    assert p_a.grad is not None and p_b.grad is not None
    # aligned predictions reach the minimum -1, whatever their scale
    x = torch.randn(4, 3, generator=g)
    torch.testing.assert_close(SimSiamLoss()(2 * x, 3 * x, x, x), torch.tensor(-1.0))


def test_embedding_std_collapse_signal() -> None:
    g = torch.Generator().manual_seed(3)
    constant = torch.ones(64, 32) * torch.randn(1, 32, generator=g)
    assert embedding_std(constant).item() == pytest.approx(0.0, abs=1e-6)
    spread = torch.randn(4096, 32, generator=g)
    assert embedding_std(spread).item() == pytest.approx(1 / math.sqrt(32), rel=0.05)
    out = embedding_std(spread.requires_grad_(), constant)
    assert out.dtype == torch.float32 and out.dim() == 0 and not out.requires_grad
    assert out.item() == pytest.approx(0.5 / math.sqrt(32), rel=0.05)


def _check_output(out: ObjectiveOutput, n: int, dims: dict[str, int]) -> None:
    assert out.loss.dim() == 0 and out.loss.requires_grad and torch.isfinite(out.loss)
    assert out.collapse_std is not None and out.collapse_std.dim() == 0
    assert not out.collapse_std.requires_grad and out.collapse_std.dtype == torch.float32
    pairs = {"student": out.student, **out.teacher}
    assert set(pairs) == {"student", *dims}
    for key, (a, b) in pairs.items():
        assert a.shape == b.shape == (n, dims.get(key, dims["out"]))
        torch.testing.assert_close(a.norm(dim=1), torch.ones(n))
        torch.testing.assert_close(b.norm(dim=1), torch.ones(n))


def test_simclr_objective() -> None:
    torch.manual_seed(0)
    obj = build_objective("simclr", feature_dim=16, n_proj=24, temperature=0.2)
    assert isinstance(obj, SimCLR) and isinstance(obj, Objective)
    assert obj.name == "simclr" and obj.view_recipe == "simclr"
    assert obj.criterion.temperature == 0.2
    feat_a, feat_b = torch.randn(8, 16), torch.randn(8, 16)
    out = obj(feat_a, feat_b)
    _check_output(out, 8, {"out": 24})
    assert out.teacher["out"][0] is out.student[0] and out.teacher["out"][1] is out.student[1]
    torch.testing.assert_close(out.loss, NTXentLoss(0.2)(*out.student))
    out.loss.backward()
    assert all(p.grad is not None for p in obj.parameters())
    assert build_objective("simclr", 16).head(feat_a).shape == (8, 128)  # n_proj default 128


def test_simsiam_objective() -> None:
    torch.manual_seed(0)
    obj = build_objective("simsiam", feature_dim=16, n_proj=32)  # temperature given, ignored
    assert isinstance(obj, SimSiam)
    assert obj.name == "simsiam" and obj.view_recipe == "simsiam"
    feat_a, feat_b = torch.randn(8, 16), torch.randn(8, 16)
    out = obj(feat_a, feat_b)
    _check_output(out, 8, {"out": 32, "z": 32})
    assert out.teacher["out"][0] is out.student[0]
    z_a, z_b = obj.projector(feat_a), obj.projector(feat_b)
    p_a, p_b = obj.predictor(z_a), obj.predictor(z_b)
    torch.testing.assert_close(out.loss, SimSiamLoss()(p_a, p_b, z_a, z_b))
    torch.testing.assert_close(out.student[0], F.normalize(p_a, dim=1))
    torch.testing.assert_close(out.teacher["z"][1], F.normalize(z_b, dim=1))
    torch.testing.assert_close(out.collapse_std, embedding_std(z_a, z_b))


def test_registry_and_build_errors() -> None:
    assert {"simclr", "simsiam"} <= set(OBJECTIVES.names())
    with pytest.raises(ConfigError, match="simclr"):
        build_objective("simclrr", 16)
    with pytest.raises(ConfigError, match="n_proj"):
        build_objective("simclr", 16, n_proj=0)


# ---------------------------------------------------------------- two gloo processes


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, inputs: dict, out_dir: str) -> None:
    """One rank: the NT-Xent and KL losses on its slice of the global batch."""
    import torch.distributed as td

    from dogo.distill import SimilarityKL

    torch.set_num_threads(1)
    url = f"tcp://127.0.0.1:{port}"
    td.init_process_group("gloo", init_method=url, rank=rank, world_size=world_size)
    try:
        n = inputs["z_a"].shape[0] // world_size
        local = {k: v[rank * n : (rank + 1) * n].clone().requires_grad_() for k, v in inputs.items()}
        result = {
            "rank": dogo_dist.rank(),
            "world_size": dogo_dist.world_size(),
            "main": dogo_dist.is_main_process(),
            "rank_mean": dogo_dist.all_reduce_mean(torch.tensor(float(rank))),
        }
        ntxent = NTXentLoss(0.5)(local["z_a"], local["z_b"])
        (ntxent / world_size).backward()  # what DDP's gradient averaging amounts to
        result["ntxent"] = ntxent.detach()
        result["ntxent_grads"] = (local["z_a"].grad, local["z_b"].grad)
        for reduction in ("official", "batchmean"):
            for t in local.values():
                t.grad = None
            kl = SimilarityKL(0.1, reduction)(*(local[k] for k in ("s_a", "s_b", "t_a", "t_b")))
            (kl / world_size).backward()
            result[reduction] = kl.detach()
            result[reduction + "_grads"] = (local["s_a"].grad, local["s_b"].grad)
            result[reduction + "_teacher_grads"] = (local["t_a"].grad, local["t_b"].grad)
        dogo_dist.barrier()
        torch.save(result, f"{out_dir}/rank{rank}.pt")
    finally:
        td.destroy_process_group()


def test_gather_with_grad_two_processes_match_one_process(tmp_path) -> None:
    import torch.multiprocessing as mp

    from dogo.distill import SimilarityKL

    world_size, n = 2, 5
    g = torch.Generator().manual_seed(4)
    names = ("z_a", "z_b", "s_a", "s_b", "t_a", "t_b")
    inputs = {k: torch.randn(world_size * n, 12, generator=g) for k in names}
    inputs["s_b"] = inputs["s_a"] + 0.5 * inputs["s_b"]  # a non-trivial similarity structure
    args = (world_size, _free_port(), inputs, str(tmp_path))
    mp.spawn(_ddp_worker, args=args, nprocs=world_size, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world_size)]

    assert [r["rank"] for r in results] == [0, 1] and [r["main"] for r in results] == [True, False]
    assert all(r["world_size"] == 2 and r["rank_mean"].item() == 0.5 for r in results)
    assert dogo_dist.world_size() == 1 and dogo_dist.rank() == 0 and dogo_dist.is_main_process()

    full = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    tol = {"rtol": 1e-5, "atol": 1e-5}
    ntxent = NTXentLoss(0.5)(full["z_a"], full["z_b"])
    grads = torch.autograd.grad(ntxent, (full["z_a"], full["z_b"]))
    mean_over_ranks = torch.stack([r["ntxent"] for r in results]).mean()
    torch.testing.assert_close(mean_over_ranks, ntxent.detach(), **tol)
    for r, result in enumerate(results):
        for got, want in zip(result["ntxent_grads"], grads, strict=True):
            torch.testing.assert_close(got, want[r * n : (r + 1) * n], **tol)

    for reduction in ("official", "batchmean"):
        kl = SimilarityKL(0.1, reduction)(full["s_a"], full["s_b"], full["t_a"], full["t_b"])
        grads = torch.autograd.grad(kl, (full["s_a"], full["s_b"]))
        mean_over_ranks = torch.stack([r[reduction] for r in results]).mean()
        torch.testing.assert_close(mean_over_ranks, kl.detach(), **tol)
        for r, result in enumerate(results):
            for got, want in zip(result[reduction + "_grads"], grads, strict=True):
                torch.testing.assert_close(got, want[r * n : (r + 1) * n], **tol)
            assert result[reduction + "_teacher_grads"] == (None, None)
