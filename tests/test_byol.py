"""BYOL and the target-network contract: the loss against a loop reference, the EMA update and
cosine momentum against their formulas, target networks kept out of the optimiser and the
encoder, the asymmetric views, and one training step of a BYOL + SimCLR cohort."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from dogo.config import PeerConfig
from dogo.core.errors import ConfigError
from dogo.distill import distill_pair
from dogo.objectives import BYOL, build_objective, objective_options
from dogo.objectives.byol import BYOLLoss
from dogo.objectives.ema import ema_update_, frozen_copy, momentum_schedule
from dogo.training.cohort import Cohort, Peer


def slow_byol_loss(p_a, p_b, t_a, t_b) -> torch.Tensor:
    """Grill et al. 2020, eq. 2, per image: || p/||p|| - t/||t|| ||^2, mean over images, both orders."""

    def term(ps, ts):
        values = [((p / p.norm() - t.detach() / t.detach().norm()) ** 2).sum() for p, t in zip(ps, ts, strict=True)]
        return torch.stack(values).mean()

    return term(p_a, t_b) + term(p_b, t_a)


@pytest.mark.parametrize("n", [1, 5])
def test_byol_loss_matches_loop_reference_values_and_gradients(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    p_a, p_b, t_a, t_b = (torch.randn(n, 7, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(4))
    loss = BYOLLoss()(p_a, p_b, t_a, t_b)
    expected = slow_byol_loss(p_a, p_b, t_a, t_b)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    got = torch.autograd.grad(loss, (p_a, p_b))
    want = torch.autograd.grad(expected, (p_a, p_b))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    loss = BYOLLoss()(p_a, p_b, t_a, t_b)
    loss.backward()
    assert t_a.grad is None and t_b.grad is None  # stop-gradient on the targets
    x = torch.randn(4, 3, generator=g)
    torch.testing.assert_close(BYOLLoss()(2 * x, x, x, 3 * x), torch.tensor(0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(BYOLLoss()(x, x, -x, -x), torch.tensor(8.0))


def test_momentum_schedule_is_the_papers_cosine() -> None:
    total = 37
    m = momentum_schedule(0.996, total)
    assert len(m) == total and m[0] == pytest.approx(0.996)
    for k in range(total):
        assert m[k] == pytest.approx(1 - (1 - 0.996) * (math.cos(math.pi * k / total) + 1) / 2)
    assert all(a < b for a, b in itertools.pairwise(m)) and m[-1] < 1.0 and m[-1] > 0.9999
    assert momentum_schedule(0.99, 5, "constant") == [0.99] * 5
    with pytest.raises(ValueError, match="cosine"):
        momentum_schedule(0.99, 5, "linear")


def test_ema_update_matches_the_formula() -> None:
    torch.manual_seed(0)
    online = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    target = frozen_copy(online)
    assert all(not p.requires_grad for p in target.parameters())
    assert all(
        torch.equal(a, b) for a, b in zip(target.state_dict().values(), online.state_dict().values(), strict=True)
    )
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in target.parameters()]
    ema_update_(target, online, 0.9)
    for new, old, o in zip(target.parameters(), before, online.parameters(), strict=True):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * o)


def _byol_peer(trainable: bool = True) -> Peer:
    cfg = PeerConfig(
        objective="byol",
        backbone="resnet18",
        width=0.0625,
        n_proj=8,
        objective_options={"hidden": 16},
        trainable=trainable,
    )
    torch.manual_seed(0)
    return Peer.from_config(cfg, image_size=8, label="byol")


def test_target_networks_are_state_but_not_optimised_nor_encoder() -> None:
    peer = _byol_peer()
    keys = peer.state_dict().keys()
    assert any(k.startswith("objective.target_encoder.") for k in keys)
    assert any(k.startswith("objective.target_projector.") for k in keys)
    assert not any("target" in k for k in peer.encoder.state_dict())
    optimised = {id(p) for p in peer.optimised_parameters()}
    target_params = list(peer.objective.target_encoder.parameters()) + list(
        peer.objective.target_projector.parameters()
    )
    assert target_params and not any(id(p) in optimised for p in target_params)
    assert optimised == {id(p) for p in peer.parameters() if p.requires_grad}
    online = dict(peer.encoder.state_dict())
    for key, value in peer.objective.target_encoder.state_dict().items():
        assert torch.equal(value, online[key])  # the target starts as the online network
    # asymmetric views: blur 1.0 / 0.1, solarize 0 / 0.2
    a, b = peer.recipes
    assert (a.blur_p, a.solarize_p, b.blur_p, b.solarize_p) == (1.0, 0.0, 0.1, 0.2)
    assert (a.brightness, a.contrast, a.saturation, a.hue) == pytest.approx((0.4, 0.4, 0.2, 0.1))


def test_byol_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="did you mean 'base_momentum'"):
        objective_options("byol", {"base_momentun": 0.99})
    with pytest.raises(ConfigError, match="base_momentum"):
        objective_options("byol", {"base_momentum": 1.5})
    assert isinstance(build_objective("byol", 16, hidden=8), BYOL)


def test_byol_peer_output_and_teacher_choice() -> None:
    peer = _byol_peer()
    x = torch.randn(6, 3, 8, 8)
    out = peer(x, x.flip(3))
    assert set(out.teacher) == {"out", "target"} and out.student[0] is out.teacher["out"][0]
    assert out.loss.requires_grad and 0 <= out.loss.item() <= 8
    assert not out.teacher["target"][0].requires_grad
    for name in ("simclr", "simsiam", "byol"):
        assert BYOL.teacher_key(name) == "out"
    _s_a, _s_b, t_a, _t_b = distill_pair(out, out, "simsiam", "byol")
    assert t_a is out.teacher["out"][0]
    with pytest.raises(ValueError, match="target"):
        peer.objective(torch.randn(4, peer.encoder.feature_dim), torch.randn(4, peer.encoder.feature_dim))


def test_cohort_step_updates_the_target_by_ema_with_the_scheduled_momentum() -> None:
    from dogo.config import RunConfig
    from dogo.distill import SimilarityKL
    from dogo.training.step import train_step

    config = RunConfig.model_validate(
        {
            "name": "t",
            "seed": 0,
            "dataset": {"name": "fashion-mnist", "image_size": 8},
            "train": {
                "epochs": 2,
                "batch_size": 8,
                "precision": "fp32",
                "models": [
                    {
                        "objective": "byol",
                        "backbone": "resnet18",
                        "width": 0.0625,
                        "n_proj": 8,
                        "objective_options": {"hidden": 16},
                    },
                    {"objective": "simclr", "backbone": "resnet18", "width": 0.0625, "n_proj": 8},
                ],
            },
        }
    )
    cohort = Cohort.from_config(config, steps_per_epoch=5)
    byol = cohort.peers[0].objective
    assert byol.momenta == momentum_schedule(0.996, 10)
    cohort.train(True)
    cohort.set_lr(3)
    assert byol.momentum == byol.momenta[3]
    target_before = [p.clone() for p in byol.target_encoder.parameters()]
    images = torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    views = [tuple(r(images, g) for r in peer.recipes) for peer in cohort.peers]
    result = train_step(cohort, views, SimilarityKL(), torch.autocast("cpu", enabled=False))
    assert result.finite
    m = byol.momenta[3]
    online = list(cohort.peers[0].encoder.parameters())
    changed = False
    for new, old, o in zip(byol.target_encoder.parameters(), target_before, online, strict=True):
        torch.testing.assert_close(new, m * old + (1 - m) * o)
        changed |= not torch.equal(new, old)
    assert changed


def test_frozen_byol_peer_has_no_ema_and_no_graph() -> None:
    peer = _byol_peer(trainable=False)
    assert peer.optimised_parameters() == []
    out = peer(torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8))
    assert not out.loss.requires_grad


def test_byol_recipes_are_registered_views() -> None:
    from dogo.views import make_recipe

    a, b = make_recipe("byol_a", 32), make_recipe("byol_b", 32)
    assert (a.blur_p, a.solarize_p) == (1.0, 0.0) and (b.blur_p, b.solarize_p) == (0.1, 0.2)
    assert (a.brightness, a.contrast, a.saturation, a.hue) == pytest.approx((0.4, 0.4, 0.2, 0.1))
