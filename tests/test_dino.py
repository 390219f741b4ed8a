"""DINO (dogo.objectives.dino): the loss against a slow reference written from the paper's
Algorithm 1 (values and gradients, float64), the head, the centre, the teacher temperature, the
frozen prototypes, gradient clipping, the multi-crop views, and DINO in a cohort with a SimCLR
ResNet and on a ViT."""

from __future__ import annotations

import math

import pytest
import torch

from dogo.config import PeerConfig, RunConfig
from dogo.core.errors import ConfigError
from dogo.distill import SimilarityKL, distill_pair
from dogo.objectives import DINO, objective_options
from dogo.objectives.dino import DINOHead, DINOLoss, default_local_size, teacher_temperatures
from dogo.objectives.ema import momentum_schedule
from dogo.training.cohort import Cohort, Peer
from dogo.training.step import train_step
from dogo.views import draw_groups

SMALL = {"hidden": 32, "bottleneck": 16, "local_crops": 3}


def slow_dino_loss(student, teacher, center, tps, tpt):
    """The paper's Algorithm 1, ``H(t, s) = -(softmax((t - C) / tpt) * log softmax(s / tps)).sum(1).mean()``,
    per image and per class in plain loops, averaged over every (teacher global crop i, student
    crop v != i) pair: with two crops, ``H(t1, s2) / 2 + H(t2, s1) / 2``."""

    def softmax(row, temp):
        e = [torch.exp(x / temp) for x in row]
        total = sum(e)
        return [x / total for x in e]

    terms = []
    for i, t in enumerate(teacher):
        for v, s in enumerate(student):
            if v == i:
                continue
            per_image = []
            for n in range(t.shape[0]):
                p_t = softmax([(t[n, k].detach() - center[0, k]) for k in range(t.shape[1])], tpt)
                p_s = softmax([s[n, k] for k in range(s.shape[1])], tps)
                per_image.append(-sum(p_t[k] * torch.log(p_s[k]) for k in range(t.shape[1])))
            terms.append(torch.stack(per_image).mean())
    return torch.stack(terms).mean()


@pytest.mark.parametrize("crops", [2, 5])
def test_loss_matches_algorithm_1_values_and_gradients(crops: int) -> None:
    g = torch.Generator().manual_seed(crops)
    student = [torch.randn(3, 6, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(crops)]
    teacher = [torch.randn(3, 6, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    center = torch.randn(1, 6, generator=g, dtype=torch.float64)
    loss = DINOLoss(0.1)(student, teacher, center, 0.04)
    expected = slow_dino_loss(student, teacher, center, 0.1, 0.04)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    for got, want in zip(torch.autograd.grad(loss, student), torch.autograd.grad(expected, student), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    DINOLoss(0.1)(student, teacher, center, 0.04).backward()
    assert all(t.grad is None for t in teacher)  # the teacher is detached
    if crops == 2:  # Algorithm 1 exactly: H(t1, s2)/2 + H(t2, s1)/2

        def h(t, s):
            return -(torch.softmax((t - center) / 0.04, 1) * torch.log_softmax(s / 0.1, 1)).sum(1).mean()

        torch.testing.assert_close(loss, h(teacher[0], student[1]) / 2 + h(teacher[1], student[0]) / 2)


def test_head_is_a_bottleneck_mlp_with_weight_normalised_prototypes() -> None:
    torch.manual_seed(0)
    head = DINOHead(16, 64, hidden=32, bottleneck=8)
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 32), (32, 32), (32, 8)]
    assert sum(isinstance(m, torch.nn.GELU) for m in head.mlp) == 2
    z, logits = head(torch.randn(5, 16))
    torch.testing.assert_close(z.norm(dim=1), torch.ones(5))
    w = head.last_layer.weight_g * torch.nn.functional.normalize(head.last_layer.weight_v, dim=1)
    torch.testing.assert_close(w.norm(dim=1), torch.ones(64))  # norm_last_layer: unit prototypes
    torch.testing.assert_close(logits, z @ w.T)
    assert not head.last_layer.weight_g.requires_grad
    assert DINOHead(16, 64, 32, 8, norm_last_layer=False).last_layer.weight_g.requires_grad
    with_bn = DINOHead(16, 64, 32, 8, use_bn=True).mlp
    assert [type(m).__name__ for m in with_bn] == [
        "Linear",
        "BatchNorm1d",
        "GELU",
        "Linear",
        "BatchNorm1d",
        "GELU",
        "Linear",
    ]


def test_teacher_temperature_warms_up_per_epoch() -> None:
    assert teacher_temperatures(0.04, 0.07, 4, 6) == pytest.approx([0.04, 0.05, 0.06, 0.07, 0.07, 0.07])
    assert teacher_temperatures(0.04, 0.07, 0, 3) == [0.07] * 3
    dino = DINO(8, **SMALL, n_proj=16, warmup_teacher_epochs=3)
    dino.set_total_steps(20, steps_per_epoch=5)
    assert dino.momenta == momentum_schedule(0.996, 20)
    seen = []
    for step in range(20):
        dino.set_step(step)
        seen.append(dino.teacher_temperature)
    assert seen == pytest.approx([0.04] * 5 + [0.055] * 5 + [0.07] * 10)
    assert dino.criterion.student_temperature == 0.1


def _peer(backbone: str = "resnet18", **options) -> Peer:
    cfg = PeerConfig(
        objective="dino", backbone=backbone, width=0.0625, n_proj=32, objective_options={**SMALL, **options}
    )
    torch.manual_seed(0)
    return Peer.from_config(cfg, image_size=8, label="dino")


def test_views_are_two_global_crops_and_local_crops() -> None:
    peer = _peer()
    assert [(g.size, len(g)) for g in peer.groups] == [(8, 2), (4, 3)]
    a, b, local = peer.recipes[0], peer.recipes[1], peer.recipes[2]
    assert a.crop_scale == b.crop_scale == (0.4, 1.0) and local.crop_scale == (0.05, 0.4)
    assert (a.blur_p, b.blur_p, local.blur_p, a.solarize_p, b.solarize_p) == (1.0, 0.1, 0.5, 0.0, 0.2)
    assert (a.brightness, a.contrast, a.saturation, a.hue) == pytest.approx((0.4, 0.4, 0.2, 0.1))
    assert [default_local_size(s) for s in (8, 16, 32, 64, 96, 224)] == [4, 8, 12, 24, 40, 96]
    assert [(g.size, len(g)) for g in _peer(local_crops=0, global_scale=(0.3, 0.9)).groups] == [(8, 2)]
    with pytest.raises(ConfigError, match="local_scale"):
        objective_options("dino", {"local_scale": [0.5, 0.1]})
    with pytest.raises(ConfigError, match="did you mean 'local_crops'"):
        objective_options("dino", {"local_crop": 2})
    with pytest.raises(ConfigError, match="views of 6 px do not fit vit_tiny's patch size 4"):
        _peer("vit_tiny", local_size=6)


def test_the_centre_is_state_and_follows_the_teachers_batch_mean() -> None:
    peer = _peer()
    dino = peer.objective
    assert "objective.center" in peer.state_dict() and torch.equal(dino.center, torch.zeros(1, 32))
    dino.set_total_steps(10, 5)
    dino.set_step(0)
    images = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    views = draw_groups(peer.groups, images, torch.Generator().manual_seed(0))
    peer.train()
    for _ in range(2):
        center = dino.center.clone()
        with torch.no_grad():
            t_feats = dino.target_encoder(torch.cat(views[:2]))
            _, t_logits = dino.target_head(t_feats)
        out = peer(*views)
        assert torch.equal(dino.center, center)  # the loss used the centre before this step
        peer.after_step()
        torch.testing.assert_close(dino.center, 0.9 * center + 0.1 * t_logits.mean(0, keepdim=True))
    peer.eval()  # evaluating (or a frozen peer) does not move the centre
    before = dino.center.clone()
    peer(*views)
    peer.after_step()
    assert torch.equal(dino.center, before) and out.loss.isfinite()


def test_prototypes_are_frozen_for_the_first_epoch_and_gradients_clipped() -> None:
    config = RunConfig.model_validate(
        {
            "name": "t",
            "seed": 0,
            "dataset": {"name": "digits", "image_size": 8},
            "train": {
                "epochs": 2,
                "batch_size": 6,
                "precision": "fp32",
                "models": [
                    {
                        "objective": "dino",
                        "backbone": "resnet18",
                        "width": 0.0625,
                        "n_proj": 32,
                        "objective_options": {**SMALL, "clip_grad": 0.01},
                        "optimizer": {"name": "adamw", "lr": 1e-2},
                    },
                    {"objective": "simclr", "backbone": "resnet18", "width": 0.0625, "n_proj": 8},
                ],
            },
        }
    )
    cohort = Cohort.from_config(config, steps_per_epoch=2)
    dino = cohort.peers[0].objective
    prototypes = dino.head.last_layer.weight_v
    images = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    norms = []
    original = dino.after_backward

    def spy(encoder):
        original(encoder)
        norms.extend(
            float(p.grad.norm()) for p in [*encoder.parameters(), *dino.head.parameters()] if p.grad is not None
        )

    dino.after_backward = spy
    for step in range(3):
        cohort.train(True)
        cohort.set_lr(step)
        before = prototypes.detach().clone()
        views = [tuple(draw_groups(p.groups, images, torch.Generator().manual_seed(step))) for p in cohort.peers]
        assert train_step(cohort, views, SimilarityKL(), torch.autocast("cpu", enabled=False)).finite
        if step < 2:  # the first epoch: no gradient, no optimiser state, no weight decay
            assert dino.last_layer_frozen and torch.equal(prototypes, before)
            assert prototypes not in cohort.optimizers[0].state
        else:
            assert not dino.last_layer_frozen and not torch.equal(prototypes, before)
    assert norms and max(norms) <= 0.01 * (1 + 1e-4)  # every parameter's gradient clipped to 0.01


def test_dino_in_a_cohort_with_a_simclr_resnet() -> None:
    peer = _peer("vit_tiny")
    assert type(peer.encoder).__name__ == "VisionTransformer"
    simclr = Peer.from_config(PeerConfig(objective="simclr", backbone="resnet18", width=0.0625), 8, "simclr")
    images = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    peer.train(), simclr.train()
    out = peer(*draw_groups(peer.groups, images, torch.Generator().manual_seed(0)))
    other = simclr(*draw_groups(simclr.groups, images, torch.Generator().manual_seed(1)))
    assert set(out.teacher) == {"out", "teacher"} and out.student[0] is out.teacher["out"][0]
    assert out.student[0].shape == (6, 16) and not out.teacher["teacher"][0].requires_grad
    for student in ("simclr", "dino", "simsiam"):
        assert DINO.teacher_key(student) == "out"
    s_a, _s_b, t_a, _t_b = distill_pair(other, out, "simclr", "dino")
    assert t_a is out.student[0] and s_a is other.student[0]
    kl = SimilarityKL()(*distill_pair(out, other, "dino", "simclr"))
    assert kl.isfinite() and kl.requires_grad
    assert out.loss.isfinite() and 0 < out.loss.item() < 2 * math.log(32)
