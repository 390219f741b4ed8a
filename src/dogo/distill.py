"""The Distill-on-the-Go term: a KL between peers' cross-view similarity distributions.

Bhat, Arani, Zonooz. "Distill on the Go: Online knowledge distillation in self-supervised
learning", CVPR Workshops 2021 (docs/reference.md §1.3).

For peer k with L2-normalised embeddings u^a, u^b of the two views of N images,
``S_k = u^a @ u^b.T / tau`` (``N x N``, tau = 0.1) and ``P_k = softmax(S_k, dim=1)``. Peer k (the
student) is pulled towards peer m (the teacher, detached) by ``KL(P_m || P_k)``; the total loss
of peer k is ``SSL_k + lambda_k * KL_k``. Every peer is student and teacher.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dogo.core import dist
from dogo.core.errors import ConfigError
from dogo.objectives import OBJECTIVES, ObjectiveOutput, at_least_float32

__all__ = ["REDUCTIONS", "SimilarityKL", "cohort_distillation", "distill_pair"]

REDUCTIONS = ("official", "batchmean")


class SimilarityKL(nn.Module):
    """KL divergence between the row-softmaxed cross-view similarity matrices of two peers::

        S_s = s_a @ s_b.T / tau,  S_t = t_a @ t_b.T / tau        (N x N)
        P_s = softmax(S_s, dim=1), P_t = softmax(S_t, dim=1)
        KL  = sum_ij P_t[i, j] * (log P_t[i, j] - log P_s[i, j])

    The teacher side is detached: no gradient reaches ``t_a`` or ``t_b``.

    Reductions:
        ``"official"``: ``KL / N^2``, the mean over all N^2 entries: the value of the
        reference's ``F.kl_div(P_s.log(), P_t)`` (default reduction ``'mean'``), written out
        because PyTorch warns that this reduction will change meaning. The reference's
        weights (lambda = [100, 1]) belong to this reduction.
        ``"batchmean"``: ``KL / N``, the mean over rows of each row's KL (a true KL per
        anchor); N times the official value, so weights must be N times smaller.

    Log-probabilities come from ``log_softmax`` rather than the reference's ``log(softmax)``:
    equal up to float rounding (measured in float32 at tau = 0.1, N = 256: relative differences
    of at most ~3e-6, below the error of either against float64, up to ~2e-5 when the KL is
    small; ``tests/test_distill.py`` checks the agreement), and free of ``log(0) = -inf`` where
    a probability underflows (low precision, small tau). Computed in at least float32 with
    autocast disabled. Inputs are L2-normalised again here (idempotent) so that S is always a
    cosine / tau.

    Distributed (``gather=True`` and a process group): each rank's rows (its own anchors) are
    compared with the columns of the global batch (``b`` gathered with
    :func:`dogo.core.dist.gather_with_grad`), and the reduction divides by the global N, so the mean
    of the ranks' values equals the single-process value on the concatenated batch. In one
    process ``gather`` changes nothing.

    Shapes:
        student_a, student_b: ``N x D``; teacher_a, teacher_b: ``N x D'`` (D' may differ from D:
        only the ``N x N`` matrices are compared). Returns a scalar.
    """

    def __init__(self, temperature: float = 0.1, reduction: str = "official", gather: bool = True) -> None:
        super().__init__()
        if not temperature > 0:
            raise ConfigError(f"KL temperature must be > 0, got {temperature}")
        if reduction not in REDUCTIONS:
            raise ConfigError(f"KL reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.temperature = float(temperature)
        self.reduction = reduction
        self.gather = gather

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, reduction={self.reduction!r}, gather={self.gather}"

    def log_probs(self, a: Tensor, b: Tensor) -> Tensor:
        """``log_softmax(normalize(a) @ normalize(b).T / tau, dim=1)``: ``n x N`` (N global)."""
        a = F.normalize(at_least_float32(a), dim=1)
        b = F.normalize(at_least_float32(b), dim=1)
        if self.gather:
            b = dist.gather_with_grad(b)
        return F.log_softmax(a @ b.T / self.temperature, dim=1)

    def forward(self, student_a: Tensor, student_b: Tensor, teacher_a: Tensor, teacher_b: Tensor) -> Tensor:
        if student_a.shape != student_b.shape or teacher_a.shape != teacher_b.shape:
            raise ValueError("both views of a peer must have the same shape")
        if student_a.dim() != 2 or teacher_a.dim() != 2 or student_a.shape[0] != teacher_a.shape[0]:
            raise ValueError(
                f"student {tuple(student_a.shape)} and teacher {tuple(teacher_a.shape)} must be "
                "N x D matrices over the same N images"
            )
        with torch.autocast(device_type=student_a.device.type, enabled=False):
            log_p_student = self.log_probs(student_a, student_b)
            with torch.no_grad():
                log_p_teacher = self.log_probs(teacher_a.detach(), teacher_b.detach())
            kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum()
            n_rows, n_cols = log_p_student.shape  # local anchors x global batch
            return kl / (n_rows * n_cols if self.reduction == "official" else n_rows)


def distill_pair(
    student_out: ObjectiveOutput,
    teacher_out: ObjectiveOutput,
    student_name: str,
    teacher_name: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The four embeddings ``(s_a, s_b, t_a, t_b)`` of one student/teacher pair for the KL.

    The student always uses its ``student`` embeddings (SimCLR: z, SimSiam: p). The teacher's
    objective chooses which of its ``teacher`` embeddings enters the matrices
    (:meth:`~dogo.objectives.Objective.teacher_key`): ``"out"`` (SimCLR: z, SimSiam: p), except
    when student and teacher are both SimSiam: then the teacher's projector output
    ``teacher["z"]`` (docs/reference.md §1.3: each SimSiam peer uses its own p against the
    other's z).

    Args:
        student_out, teacher_out: the peers' :class:`~dogo.objectives.ObjectiveOutput`.
        student_name, teacher_name: the peers' objective names (``Objective.name``).
    """
    key = OBJECTIVES.get(teacher_name).teacher_key(student_name) if teacher_name in OBJECTIVES.names() else "out"
    if key not in teacher_out.teacher:
        offered = sorted(teacher_out.teacher)
        raise KeyError(f"teacher {teacher_name!r} offers {offered}, not {key!r}")
    s_a, s_b = student_out.student
    t_a, t_b = teacher_out.teacher[key]
    return s_a, s_b, t_a, t_b


def cohort_distillation(
    outputs: Sequence[ObjectiveOutput],
    names: Sequence[str],
    weights: Sequence[float],
    kl: SimilarityKL,
) -> tuple[list[Tensor], dict[tuple[int, int], Tensor]]:
    """The distillation term of every peer of a cohort.

    For peer k (student) and every other peer m (teacher)::

        term_k = lambda_k * mean_{m != k} KL(P_m || P_k)

    With two peers this is the reference's ``lambda_k * KL(P_m || P_k)``; with more, the average
    over the other peers (as deep mutual learning, Zhang et al. 2018), so that lambda keeps its
    scale whatever the cohort size. A single peer gets a zero term.

    Args:
        outputs: one :class:`~dogo.objectives.ObjectiveOutput` per peer.
        names: the peers' objective names (chooses the embeddings, see :func:`distill_pair`).
        weights: lambda_k per peer (the reference: [100, 1] with the official reduction).
        kl: the :class:`SimilarityKL` to apply.

    Returns:
        ``(terms, pairs)``: ``terms[k]`` the weighted scalar of peer k, with gradient into peer
        k only; ``pairs[(k, m)]`` the unweighted, detached ``KL(P_m || P_k)`` (student k,
        teacher m) for logging.
    """
    if not len(outputs) == len(names) == len(weights):
        raise ValueError(
            f"cohort_distillation needs one name and one weight per peer: {len(outputs)} outputs, "
            f"{len(names)} names, {len(weights)} weights"
        )
    terms: list[Tensor] = []
    pairs: dict[tuple[int, int], Tensor] = {}
    for k, (out_k, name_k) in enumerate(zip(outputs, names, strict=True)):
        values = []
        for m, (out_m, name_m) in enumerate(zip(outputs, names, strict=True)):
            if m == k:
                continue
            value = kl(*distill_pair(out_k, out_m, name_k, name_m))
            pairs[(k, m)] = value.detach()
            values.append(value)
        if values:
            terms.append(weights[k] * torch.stack(values).mean())
        else:
            terms.append(out_k.loss.new_zeros(()))
    return terms, pairs
