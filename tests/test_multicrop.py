"""Views in groups of one size (dogo.views.multicrop): a two-view method draws and encodes its views
exactly as before (one at a time), a multi-crop objective's groups are drawn in order from one
generator and each encoded as one batch, and a cohort of a multi-crop peer with a two-view peer
trains (the KL on the two global views)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dogo.config import PeerConfig
from dogo.core.errors import ConfigError
from dogo.distill import SimilarityKL
from dogo.models import build_backbone
from dogo.objectives import Objective, ObjectiveOutput, build_objective, embedding_std
from dogo.objectives.simclr import NTXentLoss
from dogo.training.cohort import Cohort, Peer
from dogo.training.step import train_step
from dogo.views import ViewGroup, draw_groups, encode_groups, make_recipe, pair_of_views


def test_a_group_has_one_size() -> None:
    with pytest.raises(ConfigError, match="share one size"):
        ViewGroup((make_recipe("simclr", 16), make_recipe("simclr", 8)))
    with pytest.raises(ConfigError, match="at least one"):
        ViewGroup(())
    group = ViewGroup((make_recipe("byol_a", 16), make_recipe("byol_b", 16)))
    assert group.size == 16 and len(group) == 2


def test_two_view_methods_keep_two_groups_of_one_view() -> None:
    for name, recipes in (("simclr", ("simclr", "simclr")), ("byol", ("byol_a", "byol_b"))):
        groups = build_objective(name, 8, hidden=8).view_groups(16)
        assert [len(g) for g in groups] == [1, 1]
        assert [g.recipes[0] for g in groups] == [make_recipe(r, 16) for r in recipes]
    assert pair_of_views("simsiam", 8) == [ViewGroup((make_recipe("simsiam", 8),))] * 2


def test_views_are_drawn_in_order_from_one_generator() -> None:
    images = torch.randint(0, 256, (5, 1, 12, 12), dtype=torch.uint8)
    groups = [
        ViewGroup((make_recipe("simclr", 12),) * 2),
        ViewGroup((make_recipe("simclr", 4, crop_scale=(0.05, 0.4)),) * 3),
    ]
    views = draw_groups(groups, images, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    expected = [r(images, g) for group in groups for r in group.recipes]
    assert [v.shape for v in views] == [(5, 3, 12, 12)] * 2 + [(5, 3, 4, 4)] * 3
    assert all(torch.equal(a, b) for a, b in zip(views, expected, strict=True))


class BatchSizes(nn.Module):
    """An encoder that records the batches it sees and whose output depends on the batch (BatchNorm)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, ...]] = []
        self.bn = nn.BatchNorm1d(3)
        self.feature_dim = 3

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(tuple(x.shape))
        return self.bn(x.mean(dim=(2, 3)))


def test_each_group_is_one_batch_and_single_views_go_alone() -> None:
    encoder = BatchSizes()
    a, b = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    locals_ = [torch.randn(4, 3, 4, 4) for _ in range(3)]
    two = pair_of_views("simclr", 8)
    feats = encode_groups(encoder, [a, b], two)
    assert encoder.seen == [(4, 3, 8, 8), (4, 3, 8, 8)]  # the reference's per-view BatchNorm
    torch.testing.assert_close(feats[1], encoder.bn(b.mean(dim=(2, 3))))
    encoder.seen.clear()
    multi = [ViewGroup((make_recipe("simclr", 8),) * 2), ViewGroup((make_recipe("simclr", 4),) * 3)]
    feats = encode_groups(encoder, [a, b, *locals_], multi)
    assert encoder.seen == [(8, 3, 8, 8), (12, 3, 4, 4)] and len(feats) == 5
    torch.testing.assert_close(torch.cat(feats[:2]), encoder.bn(torch.cat([a, b]).mean(dim=(2, 3))))
    with pytest.raises(ValueError, match="3 views"):
        encode_groups(encoder, [a, b, a], two)


class ToyMultiCrop(Objective):
    """NT-Xent on the two global views plus the mean agreement of each local view with them: a
    stand-in for a multi-crop method (not registered)."""

    name = "toy_multicrop"

    def __init__(self, feature_dim: int) -> None:
        super().__init__({})
        self.head = nn.Linear(feature_dim, 8)
        self.criterion = NTXentLoss(0.5)

    def view_groups(self, image_size: int) -> list[ViewGroup]:
        return [
            ViewGroup((make_recipe("simclr", image_size),) * 2),
            ViewGroup((make_recipe("simclr", image_size // 2, crop_scale=(0.05, 0.4)),) * 3),
        ]

    def forward(self, *feats: Tensor, targets: Sequence[Tensor] | None = None) -> ObjectiveOutput:
        z = [F.normalize(self.head(f), dim=1) for f in feats]
        local = sum(-(zl * (z[0] + z[1]).detach()).sum(1).mean() for zl in z[2:])
        return ObjectiveOutput(
            self.criterion(z[0], z[1]) + local, (z[0], z[1]), {"out": (z[0], z[1])}, embedding_std(z[0], z[1])
        )


def test_a_multi_crop_peer_and_a_two_view_peer_train_together() -> None:
    torch.manual_seed(0)
    encoder = build_backbone("resnet18", image_size=8, width=0.0625)
    toy = ToyMultiCrop(encoder.feature_dim)
    multi = Peer(encoder, toy, toy.view_groups(8), "multi", distill_weight=10)
    simclr = Peer.from_config(PeerConfig(objective="simclr", backbone="resnet18", width=0.0625), 8, "simclr")
    assert len(multi.recipes) == 5 and len(simclr.recipes) == 2
    peers = [multi, simclr]
    cohort = Cohort(peers, [torch.optim.Adam(p.optimised_parameters(), 1e-3) for p in peers], [[1e-3], [1e-3]])
    images = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    views = [tuple(draw_groups(p.groups, images, torch.Generator().manual_seed(k))) for k, p in enumerate(peers)]
    assert [v.shape[-1] for v in views[0]] == [8, 8, 4, 4, 4]
    before = [p.detach().clone() for p in encoder.parameters()]
    cohort.train(True)
    result = train_step(cohort, views, SimilarityKL(), torch.autocast("cpu", enabled=False))
    assert result.finite and result.losses["peer/0/loss/kl"] > 0 and result.losses["peer/1/loss/kl"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, encoder.parameters(), strict=True))
