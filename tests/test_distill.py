"""The DoGo similarity KL: against a slow reference from the formula and the reference's own
``F.kl_div`` call, its properties, the SimSiam pairings and a cohort of three mixed peers.
(The two-process check of its gather is in test_objectives.py.)"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from dogo.core.errors import ConfigError
from dogo.distill import SimilarityKL, cohort_distillation, distill_pair
from dogo.objectives import ObjectiveOutput, build_objective


def slow_kl(s_a, s_b, t_a, t_b, temperature: float, reduction: str) -> torch.Tensor:
    """KL(P_t || P_s) from the formula, one entry at a time."""
    n = s_a.shape[0]

    def probs(a, b):
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
        rows = []
        for i in range(n):
            e = [torch.exp(torch.dot(a[i], b[j]) / temperature) for j in range(n)]
            total = sum(e)
            rows.append([x / total for x in e])
        return rows

    p_s, p_t = probs(s_a, s_b), probs(t_a.detach(), t_b.detach())
    kl = sum(p_t[i][j] * (torch.log(p_t[i][j]) - torch.log(p_s[i][j])) for i in range(n) for j in range(n))
    return kl / (n * n if reduction == "official" else n)


def _embeddings(n: int, d: int, seed: int, dtype=torch.float64, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    a = F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=1)
    b = F.normalize(a + 0.7 * torch.randn(n, d, generator=g, dtype=dtype), dim=1)
    return a.requires_grad_(requires_grad), b.requires_grad_(requires_grad)


@pytest.mark.parametrize("reduction", ["official", "batchmean"])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_kl_matches_loop_reference_values_and_gradients(reduction: str, temperature: float) -> None:
    s_a, s_b = _embeddings(6, 8, 0, requires_grad=True)
    t_a, t_b = _embeddings(6, 5, 1)  # the teacher's dimension may differ
    kl = SimilarityKL(temperature, reduction)(s_a, s_b, t_a, t_b)
    expected = slow_kl(s_a, s_b, t_a, t_b, temperature, reduction)
    torch.testing.assert_close(kl, expected, rtol=1e-9, atol=1e-12)
    got = torch.autograd.grad(kl, (s_a, s_b))
    want = torch.autograd.grad(expected, (s_a, s_b))
    for x, y in zip(got, want, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_official_reduction_is_the_reference_kl_div_call(dtype) -> None:
    """The reference: F.kl_div(P_s.log(), P_t) with the default reduction 'mean' (log of the
    softmax, not log_softmax); dogo's log_softmax agrees up to float rounding."""
    n, tau = 256, 0.1
    s_a, s_b = _embeddings(n, 128, 2, dtype)
    t_a, t_b = _embeddings(n, 64, 3, dtype)
    p_s = (s_a @ s_b.T / tau).softmax(dim=1)
    p_t = (t_a @ t_b.T / tau).softmax(dim=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = F.kl_div(p_s.log(), p_t, reduction="mean")
    kl = SimilarityKL(tau, "official")
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(kl(s_a, s_b, t_a, t_b), reference, rtol=rtol, atol=0)
    torch.testing.assert_close(SimilarityKL(tau, "batchmean")(s_a, s_b, t_a, t_b), n * reference, rtol=rtol, atol=0)


def test_kl_properties() -> None:
    s_a, s_b = _embeddings(16, 8, 4, torch.float32)
    t_a, t_b = _embeddings(16, 8, 5, torch.float32)
    kl = SimilarityKL()
    assert kl.temperature == 0.1 and kl.reduction == "official" and kl.gather
    assert kl(s_a, s_b, s_a, s_b).item() == 0.0  # identical peers: exactly 0
    assert kl(s_a, s_b, 2 * s_a, 3 * s_b).item() == pytest.approx(0.0, abs=1e-7)  # cosine
    for seed in range(5):
        x_a, x_b = _embeddings(16, 8, 10 + seed, torch.float32)
        assert kl(s_a, s_b, x_a, x_b).item() > 0
        assert kl(x_a, x_b, t_a, t_b).item() > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = kl(s_a.bfloat16(), s_b.bfloat16(), t_a.bfloat16(), t_b.bfloat16())
    assert low.dtype == torch.float32
    with pytest.raises(ConfigError, match="batchmean"):
        SimilarityKL(reduction="mean")
    with pytest.raises(ConfigError):
        SimilarityKL(temperature=0)
    with pytest.raises(ValueError):
        kl(s_a, s_b, t_a[:8], t_b[:8])


def test_no_gradient_reaches_the_teacher() -> None:
    s_a, s_b = _embeddings(8, 8, 6, torch.float32, requires_grad=True)
    t_a, t_b = _embeddings(8, 8, 7, torch.float32, requires_grad=True)
    SimilarityKL()(s_a, s_b, t_a, t_b).backward()
    assert t_a.grad is None and t_b.grad is None
    assert s_a.grad is not None and s_a.grad.abs().sum() > 0 and s_b.grad.abs().sum() > 0


def _fake(name: str, n: int = 4, d: int = 3) -> ObjectiveOutput:
    def pair():
        return F.normalize(torch.randn(n, d), dim=1), F.normalize(torch.randn(n, d), dim=1)

    out, z = pair(), pair()
    teacher = {"out": out, "z": z} if name == "simsiam" else {"out": out}
    return ObjectiveOutput(loss=torch.zeros(()), student=out, teacher=teacher)


@pytest.mark.parametrize(
    ("student", "teacher", "key"),
    [
        ("simclr", "simclr", "out"),
        ("simclr", "simsiam", "out"),
        ("simsiam", "simclr", "out"),
        ("simsiam", "simsiam", "z"),
    ],
)
def test_distill_pair_chooses_the_reference_embeddings(student, teacher, key) -> None:
    s, t = _fake(student), _fake(teacher)
    got = distill_pair(s, t, student, teacher)
    assert got[0] is s.student[0] and got[1] is s.student[1]
    assert got[2] is t.teacher[key][0] and got[3] is t.teacher[key][1]
    if teacher == "simsiam" and student == "simclr":
        assert got[2] is t.student[0]  # the SimSiam teacher offers its p to a SimCLR student


def test_cohort_of_two_is_the_reference_term() -> None:
    names = ["simclr", "simsiam"]
    outputs = [_fake(name) for name in names]
    kl = SimilarityKL(0.1, "official")
    terms, pairs = cohort_distillation(outputs, names, [100.0, 1.0], kl)
    expected = 100.0 * kl(*outputs[0].student, *outputs[1].teacher["out"])
    torch.testing.assert_close(terms[0], expected)
    torch.testing.assert_close(terms[1], 1.0 * kl(*outputs[1].student, *outputs[0].teacher["out"]))
    assert set(pairs) == {(0, 1), (1, 0)}
    torch.testing.assert_close(pairs[(0, 1)], terms[0] / 100.0)


def test_cohort_of_three_mixed_peers() -> None:
    torch.manual_seed(0)
    names = ["simclr", "simsiam", "simsiam"]
    objectives = [build_objective(name, feature_dim=16, n_proj=32) for name in names]
    features = [tuple(torch.randn(8, 16, requires_grad=True) for _ in "ab") for _ in names]
    outputs = [obj(*feat) for obj, feat in zip(objectives, features, strict=True)]
    weights = [100.0, 1.0, 2.0]
    kl = SimilarityKL(0.1, "official")
    terms, pairs = cohort_distillation(outputs, names, weights, kl)

    assert len(terms) == 3 and set(pairs) == {(k, m) for k in range(3) for m in range(3) if k != m}
    assert all(not v.requires_grad and v.item() > 0 for v in pairs.values())
    s = [out.student for out in outputs]
    out, z = [o.teacher["out"] for o in outputs], [o.teacher.get("z") for o in outputs]
    expected = {
        (0, 1): kl(*s[0], *out[1]),
        (0, 2): kl(*s[0], *out[2]),  # SimCLR student: the SimSiam p
        (1, 0): kl(*s[1], *out[0]),
        (1, 2): kl(*s[1], *z[2]),  # SimSiam-SimSiam: the other's z
        (2, 0): kl(*s[2], *out[0]),
        (2, 1): kl(*s[2], *z[1]),
    }
    for key, value in expected.items():
        torch.testing.assert_close(pairs[key], value.detach())
    for k in range(3):
        others = [expected[(k, m)] for m in range(3) if m != k]
        torch.testing.assert_close(terms[k], weights[k] * sum(others) / 2)

    # each term trains its own peer only
    terms[1].backward()
    assert features[1][0].grad is not None and features[1][0].grad.abs().sum() > 0
    assert all(f.grad is None for k in (0, 2) for f in features[k])
    assert all(p.grad is None for k in (0, 2) for p in objectives[k].parameters())


def test_cohort_edge_cases() -> None:
    kl = SimilarityKL()
    terms, pairs = cohort_distillation([_fake("simclr")], ["simclr"], [1.0], kl)
    assert pairs == {} and terms[0].item() == 0.0
    with pytest.raises(ValueError, match="one weight per peer"):
        cohort_distillation([_fake("simclr"), _fake("simclr")], ["simclr", "simclr"], [1.0], kl)


def test_batchmean_is_n_times_official() -> None:
    s_a, s_b = _embeddings(10, 8, 8)
    t_a, t_b = _embeddings(10, 8, 9)
    official = SimilarityKL(0.1, "official")(s_a, s_b, t_a, t_b)
    batchmean = SimilarityKL(0.1, "batchmean")(s_a, s_b, t_a, t_b)
    assert math.isclose(batchmean.item(), 10 * official.item(), rel_tol=1e-12)
