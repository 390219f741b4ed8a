"""Self-supervised objectives: a head on top of the encoder features plus its loss.

An :class:`Objective` takes the pooled encoder features of the two views of a batch and returns
an :class:`ObjectiveOutput`: the SSL loss, the normalised embeddings the peer uses as a
*student* in the distillation KL, and the normalised embeddings other peers may use when this
peer is their *teacher* (see :func:`dogo.distill.distill_pair`).

Adding an objective is one file with ``@OBJECTIVES.register("name")`` on an :class:`Objective`
subclass whose ``__init__`` accepts ``(feature_dim, **options)``, plus its import at the bottom of
this file. Every setting of the method, with its default, is a field of the pydantic model in its
``Options`` attribute, and only there: a config reaches them as ``train.models[K].objective_options``
(validated when the config is read), except the peer-level keys ``n_proj`` and ``temperature``
(:data:`PEER_KEYS`), which override the method's own defaults only when the config sets them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import Tensor, nn

from dogo.core.errors import ConfigError
from dogo.core.registry import Registry, nearest
from dogo.views.multicrop import ViewGroup, pair_of_views

__all__ = [
    "OBJECTIVES",
    "PEER_KEYS",
    "NTXentLoss",
    "Objective",
    "ObjectiveOptions",
    "ObjectiveOutput",
    "SimCLR",
    "SimSiam",
    "SimSiamLoss",
    "at_least_float32",
    "build_objective",
    "embedding_std",
    "objective_options",
]

OBJECTIVES: Registry[type[Objective]] = Registry("objective")

#: Peer-level keys (``train.models[K].n_proj``, ``.temperature``) that set the method's option of
#: the same name when a config gives them; ``None`` (not set) leaves the method's own default. A
#: method without such an option (SimSiam's temperature) ignores the key.
PEER_KEYS = ("n_proj", "temperature")


@dataclass
class ObjectiveOutput:
    """What one peer's objective hands to the distillation and to the logs.

    Attributes:
        loss: scalar SSL loss (with its graph).
        student: ``(a, b)``, each ``N x D`` and L2-normalised: the embeddings of views a and b
            used on the student side of the KL.
        teacher: name -> ``(a, b)``, L2-normalised ``N x D'``: the embeddings peers may use when
            this peer is their teacher (``"out"`` always; ``"z"`` for SimSiam).
        collapse_std: detached scalar, the collapse signal :func:`embedding_std` of the
            objective's output (``None`` when an objective does not compute one).
    """

    loss: Tensor
    student: tuple[Tensor, Tensor]
    teacher: dict[str, tuple[Tensor, Tensor]]
    collapse_std: Tensor | None = None


def at_least_float32(x: Tensor) -> Tensor:
    """``x`` in float32 when it has a lower precision (float16, bfloat16), else unchanged.

    Losses compute in at least float32, with autocast disabled (float64 stays float64, which
    the tests use to compare with slow references).
    """
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def embedding_std(*zs: Tensor) -> Tensor:
    """Collapse signal: per-dimension std over the batch of the L2-normalised embeddings,
    averaged over dimensions (and over the given views), detached.

    About ``1 / sqrt(D)`` for well-spread embeddings, 0 when every image maps to the same point
    (SimSiam, Chen & He 2021, Fig. 2). Uses the population std (``correction=0``).

    Args:
        zs: one or more ``N x D`` embeddings (normalised here; need not be normalised).

    Returns:
        float32 scalar tensor, detached.
    """
    with torch.no_grad():
        stds = [F.normalize(z.detach().float(), dim=1).std(dim=0, correction=0).mean() for z in zs]
        return torch.stack(stds).mean()


class ObjectiveOptions(BaseModel):
    """Base of an objective's settings: every hyperparameter of the method with its default, the one
    place it is written. Unknown keys are errors; the fields are the keyword arguments of the
    objective's ``__init__``. ``n_proj`` and ``temperature`` (:data:`PEER_KEYS`), where a method has
    them, are set by the peer-level keys of the same name, the others by
    ``train.models[K].objective_options``."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Objective(nn.Module):
    """Base of every SSL objective, and the whole contract between a method and the trainer.

    ``self.options`` is the method's validated :class:`ObjectiveOptions` (defaults filled in): the
    hyperparameters it trains with. Every method's :meth:`forward` has one signature,
    ``forward(*feats, targets=None)``.

    Class attributes:
        name: the registry name (``"simclr"``, ``"simsiam"``, ``"byol"``, ...).
        view_recipe: the augmentation recipe of a two-view objective
            (``dogo.views.make_recipe(view_recipe, image_size)``): one name for both views, or a
            pair ``(name_a, name_b)``, one recipe per view (BYOL's asymmetric blur/solarize). An
            objective with more views, or views of several sizes, overrides :meth:`view_groups`.
        Options: the :class:`ObjectiveOptions` subclass of its settings.

    Hooks a method with a target (momentum) network overrides; the defaults do nothing, so
    SimCLR and SimSiam implement none of them:

    - :meth:`attach` ``(encoder)``: called once by the peer with its online encoder, after
      construction: build the target copies here. Target modules are attributes of the objective,
      so they are part of the peer's ``state_dict`` (checkpointed, resumed bit-exactly) and move
      with the peer; their parameters must have ``requires_grad=False`` (:func:`frozen_copy`),
      which keeps them out of the optimiser (the peer optimises only parameters that require a
      gradient) and out of DDP's gradient reduction. They are never part of ``peer.encoder``,
      so ``dogo export`` / ``load_encoder`` never see them.
    - :meth:`view_groups` ``(image_size)``: the views, in groups of one size
      (:class:`dogo.views.ViewGroup`); by default two views of :attr:`view_recipe`, each a group
      of its own. The first two views are the global ones that enter the DoGo KL.
    - :meth:`encode_targets` ``(*views)``: the target encoder's features of the views it needs
      (``None``: no target network); the peer calls it under the training autocast, and the
      result reaches :meth:`forward` as ``targets``.
    - :meth:`set_total_steps` ``(total, steps_per_epoch)``: the run's length, once, to precompute
      per-step schedules (BYOL's cosine momentum, DINO's teacher temperature per epoch), like the
      learning-rate schedule.
    - :meth:`step_schedules` ``()``: those per-step schedules by name (``{"momentum": [...]}``).
    - :meth:`set_step` ``(step)``: before each training step (with the learning rate), so the
      step's schedule values are a function of the step alone: nothing to save.
    - :meth:`after_backward` ``(encoder)``: after the backward of a trainable peer, before its
      optimiser step, with the gradients unscaled (DINO clips them and drops its prototypes' while
      they are frozen).
    - :meth:`after_step` ``(encoder)``: after each optimiser step of a trainable peer (EMA
      updates), with the online encoder.
    - :meth:`teacher_key` ``(student_name)``: which of ``ObjectiveOutput.teacher`` enters the
      DoGo similarity matrices when this objective teaches ``student_name``.
    """

    name: str = ""
    view_recipe: str | tuple[str, str] = ""
    Options: type[ObjectiveOptions] = ObjectiveOptions

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.options = _validated(type(self), options or {}, f"{self.name or type(self).__name__} options")

    def forward(self, *feats: Tensor, targets: Sequence[Tensor] | None = None) -> ObjectiveOutput:
        """Encoder features of the views (``N x feature_dim`` each, in the order the views are
        drawn: two for a two-view method) -> ObjectiveOutput.

        ``targets``: :meth:`encode_targets`'s features, only for objectives with a target network.
        """
        raise NotImplementedError

    @classmethod
    def teacher_key(cls, student_name: str) -> str:
        """The ``ObjectiveOutput.teacher`` entry used when this objective teaches a peer whose
        objective is ``student_name`` (default ``"out"``)."""
        return "out"

    def attach(self, encoder: nn.Module) -> None:
        """Called once with the peer's online encoder (build target copies here)."""

    def view_groups(self, image_size: int) -> list[ViewGroup]:
        """The views this objective trains on at ``image_size``, in groups of one size (default:
        two views of :attr:`view_recipe`, one group each: encoded one at a time)."""
        return pair_of_views(self.view_recipe, image_size)

    def encode_targets(self, *views: Tensor) -> tuple[Tensor, ...] | None:
        """Target-network features of the views it needs, or ``None`` (no target network)."""
        return None

    def set_total_steps(self, total: int, steps_per_epoch: int | None = None) -> None:
        """The run's total number of optimiser steps and its steps per epoch (precompute per-step schedules)."""

    def set_step(self, step: int) -> None:
        """The step about to run (select this step's schedule values)."""

    def after_backward(self, encoder: nn.Module) -> None:
        """After the backward of a trainable peer, before its optimiser step (gradient clipping)."""

    def step_schedules(self) -> dict[str, list[float]]:
        """The per-step schedules :meth:`set_total_steps` precomputed, by name (``{}``: none), so that
        :func:`dogo.training.cohort.length_dependence` can tell whether they depend on the run's length."""
        return {}

    def after_step(self, encoder: nn.Module) -> None:
        """After the optimiser step of a trainable peer (EMA updates of target networks)."""


def _validated(cls: type[Objective], options: dict[str, Any], where: str) -> ObjectiveOptions:
    """``options`` checked against ``cls.Options`` (defaults filled in); one-line ConfigErrors."""
    name = cls.name or cls.__name__
    if not isinstance(options, dict):
        raise ConfigError(f"{where}: must be a mapping of {name} options, got {type(options).__name__}")
    valid = list(cls.Options.model_fields)
    for key in options:
        if key not in valid:
            takes = ", ".join(valid) if valid else "none"
            raise ConfigError(
                f"{where}: unknown {name} option {key!r}{nearest(str(key), valid)}; {name} takes: {takes}"
            )
    try:
        return cls.Options.model_validate(options)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{where}.{key}: {first['msg']} (got {first.get('input')!r})") from None


def objective_options(name: str, options: dict[str, Any] | None, where: str = "objective_options") -> dict[str, Any]:
    """Validate ``options`` against the ``Options`` of the objective registered as ``name``.

    Returns the options given (validated and converted, defaults not filled in). Raises
    :class:`~dogo.core.errors.ConfigError` naming ``where``, the key and, for an unknown key, the
    nearest valid one. The peer-level keys (:data:`PEER_KEYS`) are refused here: they are set on
    the peer.
    """
    cls = OBJECTIVES.get(name)
    options = {} if options is None else options
    for key in PEER_KEYS:
        if isinstance(options, dict) and key in options:
            peer = where.rsplit(".objective_options", 1)[0] if ".objective_options" in where else "the peer"
            raise ConfigError(f"{where}.{key}: {key} is a key of the peer itself; set {peer}.{key} instead")
    return _validated(cls, options, where).model_dump(include=set(options))


def build_objective(
    name: str,
    feature_dim: int,
    n_proj: int | None = None,
    temperature: float | None = None,
    **kw: Any,
) -> Objective:
    """Build the objective registered as ``name`` on encoder features of size ``feature_dim``.

    Every default is the method's own (its ``Options``); what is given here overrides it.

    Args:
        name: a name in ``OBJECTIVES`` (unknown names raise :class:`dogo.core.errors.ConfigError`).
        feature_dim: size of the pooled encoder feature.
        n_proj: output size of the head (``None``: the method's default, e.g. SimCLR 128,
            SimSiam 2048, DINO's K = 65536 prototypes).
        temperature: the method's temperature (``None``: its default, SimCLR 0.5, MoCo 0.2,
            DINO's student 0.1); a method without one (SimSiam, BYOL, ...) ignores it.
        kw: the objective's own options, checked against its ``Options`` (e.g. ``gather`` for
            SimCLR, ``projector_layers`` for SimSiam); unknown ones raise
            :class:`~dogo.core.errors.ConfigError`.
    """
    cls = OBJECTIVES.get(name)
    options = objective_options(name, kw)
    for key, value in (("n_proj", n_proj), ("temperature", temperature)):
        if value is not None and key in cls.Options.model_fields:
            options[key] = value
    # A registered subclass is built as (feature_dim, **options), not with the base class's (options).
    factory: Callable[..., Objective] = cls
    return factory(feature_dim, **options)


# Registration happens on import; these come last because they import the names above.
from dogo.objectives.barlow_twins import BarlowTwins  # noqa: E402, F401  # imported to register it
from dogo.objectives.byol import BYOL  # noqa: E402, F401  # imported to register it
from dogo.objectives.dino import DINO  # noqa: E402, F401  # imported to register it
from dogo.objectives.moco import MoCo  # noqa: E402, F401  # imported to register it
from dogo.objectives.simclr import NTXentLoss, SimCLR  # noqa: E402
from dogo.objectives.simsiam import SimSiam, SimSiamLoss  # noqa: E402
from dogo.objectives.vicreg import VICReg  # noqa: E402, F401  # imported to register it
