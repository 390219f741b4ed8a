"""Views made on the training device: the uint8 batch moves once, the draws stay the CPU generator's.

On CPU the device path (``draw_views(..., device)``, what the trainer runs) is checked against
the host path (each peer's recipe on the host batch, same seeds): identical views and the same
generator consumption. The CUDA test (``-m cuda``, run by scripts/gpu-check.sh) checks the
same on a GPU, to float tolerance.
"""

from __future__ import annotations

import pytest
import torch

from dogo.config import load_config
from dogo.training.step import Sampler, build_cohort, draw_views


def cohort_and_batch(device: torch.device):
    config = load_config(
        None,
        [
            "dataset.name=digits",
            "dataset.image_size=16",
            "train.batch_size=8",
            "train.precision=fp32",
            "train.models=[{backbone: resnet18, width: 0.0625, objective: simclr}, "
            "{backbone: resnet18, width: 0.0625, objective: simsiam}]",
        ],
    )
    cohort = build_cohort(config, 4, device, channels_last=False)
    images = torch.randint(0, 256, (32, 3, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    sampler = Sampler(32, 8, seed=0)
    return cohort, images[sampler.indices(3)], sampler.view_seeds(3, 2)


def host_views(cohort, batch, seeds):
    out = []
    for peer, seed in zip(cohort.peers, seeds, strict=True):
        generator = torch.Generator().manual_seed(seed)
        out.append((peer.recipe(batch, generator), peer.recipe(batch, generator), generator.get_state()))
    return out


def test_device_path_gives_the_host_views_on_cpu():
    cohort, batch, seeds = cohort_and_batch(torch.device("cpu"))
    device_views = draw_views(cohort, batch, seeds, torch.device("cpu"), channels_last=False)
    for (a, b), (ha, hb, _) in zip(device_views, host_views(cohort, batch, seeds), strict=True):
        assert torch.equal(a, ha) and torch.equal(b, hb)
    # The draws come from the CPU generator whatever the images' device: same consumption.
    for peer, seed in zip(cohort.peers, seeds, strict=True):
        g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        peer.recipe(batch, g1, device="cpu")
        peer.recipe(batch, g2)
        assert torch.equal(g1.get_state(), g2.get_state())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_device_path_on_cuda_gives_the_host_views():
    cohort, batch, seeds = cohort_and_batch(torch.device("cpu"))
    cuda = torch.device("cuda")
    device_views = draw_views(cohort, batch.pin_memory(), seeds, cuda, channels_last=True)
    for (a, b), (ha, hb, _) in zip(device_views, host_views(cohort, batch, seeds), strict=True):
        assert a.device.type == "cuda"
        assert torch.allclose(a.float().cpu(), ha, atol=1e-3) and torch.allclose(b.float().cpu(), hb, atol=1e-3)
