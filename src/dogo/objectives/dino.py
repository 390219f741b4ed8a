"""DINO: self-distillation with no labels, a student matching an EMA teacher's centred, sharpened
distribution over K prototypes, on multi-crop views.

Caron, Touvron, Misra, Jégou, Mairal, Bojanowski, Joulin. "Emerging Properties in
Self-Supervised Vision Transformers", ICCV 2021.

What trains, per step (the paper's Algorithm 1 with multi-crop, §3.1 and Appendix):

- views: two global crops (scale 0.4-1, BYOL's asymmetric blur and solarisation) and
  ``local_crops`` local crops (scale 0.05-0.4, blur p 0.5) at ``local_size`` px
  (:func:`default_local_size`: 96/224 of the image size, a multiple of the ViT patch it gets);
  the peer encodes the global crops as one batch and the local crops as another;
- head (:class:`DINOHead`): a 3-layer MLP (GELU) to a ``bottleneck``, L2-normalised, then a
  weight-normalised Linear to K = ``n_proj`` prototypes, without bias;
- teacher: an EMA copy of encoder and head (momentum cosine from ``base_momentum`` = 0.996 to
  1, :mod:`dogo.objectives.ema`) that sees only the two global crops;
- loss (:class:`DINOLoss`): cross-entropy between the teacher's centred, sharpened distribution
  of each global crop and the student's of every other crop; the centre is an EMA (0.9) of the
  teacher's batch mean, updated after the optimiser step from every rank's batch;
- teacher temperature: linear warm-up from 0.04 to 0.07 over the first
  ``warmup_teacher_epochs`` epochs (30), per epoch as the authors' code; student 0.1;
- the prototype layer keeps its initial weights for the first ``freeze_last_layer`` epochs (its
  gradient is dropped before the optimiser step, so the optimiser neither moves nor decays it);
- gradient clipping (``clip_grad``, 3.0; 0 turns it off): each parameter's gradient of the
  student (encoder and head) scaled to a norm of at most ``clip_grad``, as the authors' code.

Not here: the authors' weight-decay schedule (0.04 -> 0.4) and learning-rate warm-up are the
peer's optimiser and schedule settings (``optimizer``, ``schedule``); stochastic depth is not
implemented in dogo's ViTs.

In a DoGo cohort: the KL's student embeddings of a DINO peer are its L2-normalised bottleneck
outputs of the two global crops (the space the prototypes score cosines in), and so is what it
offers as a teacher (``"out"``); the EMA teacher's are offered as ``"teacher"``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from dogo.core import dist
from dogo.objectives import (
    OBJECTIVES,
    Objective,
    ObjectiveOptions,
    ObjectiveOutput,
    at_least_float32,
    embedding_std,
)
from dogo.objectives.ema import MomentumTarget, ema_update_, frozen_copy
from dogo.views import RECIPES, ViewGroup, make_recipe

#: DINO's global and local crop sides at 224 px (the authors' code).
GLOBAL_SIDE, LOCAL_SIDE = 224, 96


@RECIPES.register("dino_global_a")
def dino_global_a(image_size: int) -> dict:
    """DINO's first global crop: crop scale (0.4, 1), flip, ColorJitter(0.4, 0.4, 0.2, 0.1) p 0.8,
    grayscale 0.2, Gaussian blur p 1.0."""
    return {
        "size": image_size,
        "crop_scale": (0.4, 1.0),
        "jitter_factors": (0.4, 0.4, 0.2, 0.1),
        "grayscale_p": (0.2,),
        "blur_p": 1.0,
        "solarize_p": 0.0,
    }


@RECIPES.register("dino_global_b")
def dino_global_b(image_size: int) -> dict:
    """DINO's second global crop: as ``dino_global_a`` with blur p 0.1 and solarize p 0.2."""
    return {**dino_global_a(image_size), "blur_p": 0.1, "solarize_p": 0.2}


@RECIPES.register("dino_local")
def dino_local(image_size: int) -> dict:
    """DINO's local crops (``image_size`` is the local side): crop scale (0.05, 0.4), blur p 0.5."""
    return {**dino_global_a(image_size), "crop_scale": (0.05, 0.4), "blur_p": 0.5}


def default_local_size(image_size: int) -> int:
    """DINO's local side, 96 px at 224, scaled to ``image_size`` and rounded to a multiple of the
    patch size a ViT gets at that size (:func:`dogo.models.vit.default_patch_size`): 12 at 32 px
    (3 x 3 patches of 4), 24 at 64, 40 at 96, 96 at 224."""
    from dogo.models.vit import default_patch_size

    patch = default_patch_size(image_size)
    return max(1, round(image_size * LOCAL_SIDE / GLOBAL_SIDE / patch)) * patch


class DINOOptions(ObjectiveOptions):
    """DINO's settings (``n_proj`` and ``temperature`` are the peer's keys, the rest ``objective_options``)."""

    n_proj: int = Field(65536, ge=1, description="K, the number of prototypes (the head's output size)")
    temperature: float = Field(0.1, gt=0, description="student temperature")
    hidden: int = Field(2048, ge=1, description="hidden width of the head's MLP")
    bottleneck: int = Field(256, ge=1, description="bottleneck size (the L2-normalised embedding)")
    norm_last_layer: bool = Field(True, description="prototype norms fixed to 1 (true) or learned")
    use_bn: bool = Field(False, description="BatchNorm after the head's hidden layers (the authors' use_bn_in_head)")
    teacher_temperature: float = Field(0.07, gt=0, description="teacher temperature after the warm-up")
    warmup_teacher_temperature: float = Field(0.04, gt=0, description="teacher temperature at the first epoch")
    warmup_teacher_epochs: int = Field(30, ge=0, description="epochs of the linear teacher-temperature warm-up")
    center_momentum: float = Field(0.9, ge=0.0, le=1.0, description="EMA rate of the centre")
    base_momentum: float = Field(0.996, ge=0.0, le=1.0, description="teacher EMA momentum at the first step")
    momentum_schedule: Literal["cosine", "constant"] = Field("cosine", description="cosine to 1, or constant")
    local_crops: int = Field(8, ge=0, le=64, description="number of local crops (0: the two global crops only)")
    local_size: int | None = Field(
        None,
        ge=1,
        description="side of the local crops (default: 96/224 of the "
        "image size, a multiple of the ViT patch size: 12 at 32 px)",
    )
    global_scale: tuple[float, float] = Field((0.4, 1.0), description="crop scale range of the global crops")
    local_scale: tuple[float, float] = Field((0.05, 0.4), description="crop scale range of the local crops")
    freeze_last_layer: int = Field(1, ge=0, description="epochs during which the prototypes keep their initial weights")
    clip_grad: float = Field(3.0, ge=0.0, description="per-parameter gradient norm clip of the student (0: off)")

    @model_validator(mode="after")
    def _scales(self) -> DINOOptions:
        for name in ("global_scale", "local_scale"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high <= 1.0:
                raise ValueError(f"{name} must be two numbers 0 < low <= high <= 1, got {[low, high]}")
        return self


class PrototypeLayer(nn.Module):
    """DINO's last layer: a weight-normalised Linear without bias (Salimans & Kingma 2016),
    ``W[k] = g[k] v[k] / ||v[k]||``, ``B x bottleneck -> B x K``.

    ``weight_v`` starts as a Linear's default initialisation, ``weight_g`` at 1; with
    ``learn_norm=False`` (DINO's default, ``norm_last_layer``) ``weight_g`` stays 1 (no gradient).
    """

    def __init__(self, in_dim: int, out_dim: int, learn_norm: bool = False) -> None:
        super().__init__()
        self.weight_v = nn.Parameter(nn.Linear(in_dim, out_dim, bias=False).weight.detach().clone())
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=learn_norm)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_g * F.normalize(self.weight_v, dim=1))


class DINOHead(nn.Module):
    """DINO's projection head: ``x -> (z, logits)``.

    ``z = normalize(MLP(x))`` with MLP = Linear(d, hidden) - GELU - Linear(hidden, hidden) - GELU -
    Linear(hidden, bottleneck) (truncated-normal std 0.02 weights, zero biases, no BatchNorm), and
    ``logits = last_layer(z)`` over K prototypes (:class:`PrototypeLayer`).

    Shapes: ``x`` ``B x d`` -> ``z`` ``B x bottleneck`` (unit norm), ``logits`` ``B x K``.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: int = 2048,
        bottleneck: int = 256,
        norm_last_layer: bool = True,
        use_bn: bool = False,
    ) -> None:
        super().__init__()

        def norm() -> list[nn.Module]:
            return [nn.BatchNorm1d(hidden)] if use_bn else []

        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden),
            *norm(),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            *norm(),
            nn.GELU(),
            nn.Linear(hidden, bottleneck),
        )
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = PrototypeLayer(bottleneck, out_dim, learn_norm=not norm_last_layer)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = F.normalize(self.mlp(x), dim=-1)
        return z, self.last_layer(z)


class DINOLoss(nn.Module):
    """DINO's multi-crop cross-entropy between a sharpened, centred teacher and the student::

        P_s(v) = softmax(s_v / tau_s),   P_t(i) = softmax((t_i - c) / tau_t)
        H(a, b) = - sum_k a[k] log b[k]
        loss    = 1/M sum_{i in globals} sum_{v != i} mean_n H(P_t(i)[n], P_s(v)[n])

    over the teacher's global crops i (2) and every student crop v (globals first, then locals),
    M = 2 V - 2 pairs; with V = 2 this is Algorithm 1's ``H(t1, s2)/2 + H(t2, s1)/2``. The teacher
    side is detached. Computed in at least float32 with autocast disabled.

    Shapes:
        student: V tensors ``N x K`` (logits); teacher: 2 tensors ``N x K``; center ``1 x K``.
        Returns a scalar.
    """

    def __init__(self, student_temperature: float = 0.1) -> None:
        super().__init__()
        self.student_temperature = float(student_temperature)

    def extra_repr(self) -> str:
        return f"student_temperature={self.student_temperature}"

    def forward(
        self, student: Sequence[Tensor], teacher: Sequence[Tensor], center: Tensor, teacher_temperature: float
    ) -> Tensor:
        with torch.autocast(device_type=student[0].device.type, enabled=False):
            log_p = [F.log_softmax(at_least_float32(s) / self.student_temperature, dim=-1) for s in student]
            center = at_least_float32(center.detach())
            q = [F.softmax((at_least_float32(t.detach()) - center) / teacher_temperature, dim=-1) for t in teacher]
            terms = [
                -(q_i * log_p[v]).sum(dim=-1).mean() for i, q_i in enumerate(q) for v in range(len(log_p)) if v != i
            ]
            return torch.stack(terms).mean()


def teacher_temperatures(start: float, end: float, warmup_epochs: int, epochs: int) -> list[float]:
    """The teacher temperature of every epoch: linear from ``start`` to ``end`` over the first
    ``warmup_epochs`` (both ends included, as ``numpy.linspace``), then ``end``."""
    if warmup_epochs > 1:
        warm = [start + (end - start) * e / (warmup_epochs - 1) for e in range(warmup_epochs)]
    else:
        warm = [start] * warmup_epochs
    return (warm + [end] * max(epochs - warmup_epochs, 0))[: max(epochs, 1)] or [end]


@OBJECTIVES.register("dino")
class DINO(MomentumTarget, Objective):
    """DINO (the module docstring has the recipe): student ``(z, logits) = head(f(x))`` on every crop,
    teacher ``head'(f'(x))`` on the two global crops, loss :class:`DINOLoss`.

    State: the teacher encoder and head (frozen copies, EMA after each optimiser step) and the
    ``center`` buffer (``1 x K``) are part of the peer's state_dict, so a resumed run continues
    bit for bit; the temperature, momentum and the frozen prototype layer are functions of the step.

    Output: ``student = teacher["out"]`` = the student's L2-normalised bottleneck embeddings of the
    two global crops (what the DoGo KL compares), ``teacher["teacher"]`` the EMA teacher's;
    ``collapse_std`` of the student's embeddings.
    """

    name = "dino"
    view_recipe = ("dino_global_a", "dino_global_b")
    Options = DINOOptions
    options: DINOOptions  # the validated settings (set by Objective.__init__)
    center: Tensor  # buffer registered in __init__

    def __init__(self, feature_dim: int, **options: Any) -> None:
        super().__init__(options)
        o = self.options
        self.head = DINOHead(feature_dim, o.n_proj, o.hidden, o.bottleneck, o.norm_last_layer, o.use_bn)
        self.criterion = DINOLoss(o.temperature)
        self.base_momentum, self.schedule_kind = float(o.base_momentum), o.momentum_schedule
        self.momenta, self.momentum = [self.base_momentum], self.base_momentum
        self.target_encoder: nn.Module | None = None
        self.target_head = frozen_copy(self.head)
        self.register_buffer("center", torch.zeros(1, o.n_proj))
        self.steps_per_epoch, self.total_steps = 1, 1
        self.temperatures = teacher_temperatures(
            o.warmup_teacher_temperature, o.teacher_temperature, o.warmup_teacher_epochs, o.warmup_teacher_epochs + 1
        )
        self.teacher_temperature = self.temperatures[0]
        self.current_step = 0
        self._pending: Tensor | None = None  # this step's teacher batch mean, folded into the centre after the step

    @classmethod
    def teacher_key(cls, student_name: str) -> str:
        """What a DINO peer teaches with: its own (student) bottleneck embeddings, whoever the student."""
        return "out"

    def view_groups(self, image_size: int) -> list[ViewGroup]:
        o = self.options
        groups = [
            ViewGroup(
                (
                    make_recipe("dino_global_a", image_size, crop_scale=o.global_scale),
                    make_recipe("dino_global_b", image_size, crop_scale=o.global_scale),
                )
            )
        ]
        if o.local_crops:
            local = make_recipe("dino_local", o.local_size or default_local_size(image_size), crop_scale=o.local_scale)
            groups.append(ViewGroup((local,) * o.local_crops))
        return groups

    def encode_targets(self, *views: Tensor) -> tuple[Tensor, ...]:
        """The teacher encoder's features of the two global crops (one batch), without a graph."""
        if self.target_encoder is None:
            raise RuntimeError("DINO needs its peer's encoder: call attach(encoder) first")
        with torch.no_grad():
            return tuple(self.target_encoder(torch.cat(views[:2])).chunk(2))

    def set_total_steps(self, total: int, steps_per_epoch: int | None = None) -> None:
        super().set_total_steps(total)
        o = self.options
        self.total_steps = max(total, 1)
        self.steps_per_epoch = max(1, steps_per_epoch or total)
        epochs = math.ceil(max(total, 1) / self.steps_per_epoch)
        self.temperatures = teacher_temperatures(
            o.warmup_teacher_temperature, o.teacher_temperature, o.warmup_teacher_epochs, epochs
        )

    def _teacher_temperature_at(self, step: int) -> float:
        return self.temperatures[min(step // self.steps_per_epoch, len(self.temperatures) - 1)]

    def set_step(self, step: int) -> None:
        super().set_step(step)
        self.current_step = step
        self.teacher_temperature = self._teacher_temperature_at(step)

    def step_schedules(self) -> dict[str, list[float]]:
        """Per step: the teacher's EMA momentum (cosine over the whole run by default: it depends on
        the run's length) and the teacher temperature (warmed up per epoch: it depends on the steps
        per epoch only), for :func:`dogo.training.cohort.length_dependence`."""
        temperatures = [self._teacher_temperature_at(k) for k in range(self.total_steps)]
        return {"momentum": self.momenta, "teacher temperature": temperatures}

    @property
    def last_layer_frozen(self) -> bool:
        return self.current_step < self.options.freeze_last_layer * self.steps_per_epoch

    def after_backward(self, encoder: nn.Module) -> None:
        """Clip the student's gradients per parameter; drop the prototypes' while they are frozen."""
        if self.options.clip_grad > 0:
            for p in [*encoder.parameters(), *self.head.parameters()]:
                if p.grad is not None:
                    p.grad.mul_((self.options.clip_grad / (p.grad.norm() + 1e-6)).clamp(max=1.0))
        if self.last_layer_frozen:
            for p in self.head.last_layer.parameters():
                p.grad = None

    @torch.no_grad()
    def after_step(self, encoder: nn.Module) -> None:
        if self.target_encoder is None:
            raise RuntimeError(f"{type(self).__name__}.after_step before attach(encoder)")
        ema_update_(self.target_encoder, encoder, self.momentum)
        ema_update_(self.target_head, self.head, self.momentum)
        if self._pending is not None:
            batch_center = dist.all_reduce_mean(self._pending)  # every rank's teacher outputs
            m = self.options.center_momentum
            self.center.copy_(self.center * m + batch_center * (1 - m))
            self._pending = None

    def forward(self, *feats: Tensor, targets: Sequence[Tensor] | None = None) -> ObjectiveOutput:
        if targets is None:
            raise ValueError("DINO needs the teacher encoder's features (Peer.forward passes them)")
        z, logits = self.head(torch.cat(feats))  # no BatchNorm in the head: one pass over every crop
        z, logits = z.chunk(len(feats)), logits.chunk(len(feats))
        with torch.no_grad():
            t_z, t_logits = self.target_head(torch.cat([at_least_float32(t) for t in targets]))
        loss = self.criterion(logits, t_logits.chunk(2), self.center, self.teacher_temperature)
        self._pending = at_least_float32(t_logits).mean(dim=0, keepdim=True) if self.training else None
        t_a, t_b = t_z.chunk(2)
        return ObjectiveOutput(
            loss=loss,
            student=(z[0], z[1]),
            teacher={"out": (z[0], z[1]), "teacher": (t_a, t_b)},
            collapse_std=embedding_std(z[0], z[1]),
        )
