"""The reference's config files mean what the reference's code did with them (docs/reference.md §7).

Each expected value here is written from what the authors' code does with a key, not from
dogo's schema: the `dogo` branch hard-codes NT-Xent's temperature 0.5 and Adam, both branches
step CosineAnnealingLR(T_max=epochs, eta_min=3e-4) once per batch, and the `main` branch's
SimSiam projector has two Linear layers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from dogo.config import ScheduleConfig, load_config
from dogo.core.errors import ConfigError
from dogo.training.cohort import Cohort, Peer
from dogo.training.optim import lr_schedule

FIXTURES = Path(__file__).parent / "fixtures" / "reference"


def template(name: str = "template-small.yaml") -> dict:
    return yaml.safe_load((FIXTURES / name).read_text())


def load(tmp_path, data, overrides=()):
    path = tmp_path / "ref.yaml"
    path.write_text(yaml.safe_dump(data))
    notes: list[str] = []
    config = load_config(path, list(overrides), warn=notes.append)
    assert all(note.startswith(f"{path}: ") for note in notes)
    return config, " ".join(note.removeprefix(f"{path}: ") for note in notes)


def reference_ntxent(z_i: torch.Tensor, z_j: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """The reference's NT-Xent, as its code computes it: cosine similarities of the 2N views,
    the positive pair of each anchor against its 2N - 2 negatives as logits of class 0,
    cross-entropy summed and divided by 2N."""
    n = z_i.shape[0]
    z = torch.cat([z_i, z_j])
    sim = F.cosine_similarity(z.unsqueeze(1), z.unsqueeze(0), dim=2) / temperature
    positives = torch.cat([torch.diag(sim, n), torch.diag(sim, -n)]).reshape(2 * n, 1)
    mask = torch.ones(2 * n, 2 * n, dtype=torch.bool)
    mask.fill_diagonal_(False)
    for i in range(n):
        mask[i, n + i] = mask[n + i, i] = False
    negatives = sim[mask].reshape(2 * n, -1)
    logits = torch.cat([positives, negatives], dim=1)
    labels = torch.zeros(2 * n, dtype=torch.long)
    return F.cross_entropy(logits, labels, reduction="sum") / (2 * n)


def torch_per_batch_cosine(lr: float, epochs: int, steps: int, eta_min: float = 3e-4) -> list[float]:
    """The rate of each batch when CosineAnnealingLR(T_max=epochs) is stepped after every batch."""
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=lr, weight_decay=1e-6)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=eta_min)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


# ---- 1. train.models[].temperature: the dogo branch trains at 0.5 -------------------------------


@pytest.mark.parametrize("value", [0.2, 1.0])
def test_dogo_branch_temperature_is_ignored_and_trains_at_half(tmp_path, value):
    data = template()
    data["train"]["models"][0]["temperature"] = value
    config, notes = load(tmp_path, data)
    assert config.train.models[0].temperature == 0.5
    assert f"train.models.0.temperature={value} ignored" in notes
    assert "train.models.N.temperature" in notes  # dogo's own key, for another temperature
    peer = Peer.from_config(config.train.models[0], 16, "p")
    assert peer.objective.criterion.temperature == 0.5
    g = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(6, 8, generator=g, dtype=torch.float64), torch.randn(6, 8, generator=g, dtype=torch.float64)
    torch.testing.assert_close(peer.objective.criterion(z_a, z_b), reference_ntxent(z_a, z_b, 0.5))


def test_dogo_branch_temperature_half_loads_without_a_note(tmp_path):
    config, notes = load(tmp_path, template())
    assert [p.temperature for p in config.train.models] == [0.5, 0.5]
    assert "temperature" not in notes


def test_main_branch_temperature_is_honoured(tmp_path):
    data = template("simclr-small.yaml")
    data["train"]["temperature"] = 0.2
    config, notes = load(tmp_path, data)
    assert config.train.models[0].temperature == 0.2
    assert "temperature" not in notes


# ---- 2. train.models[].optimizer: the dogo branch always builds Adam ----------------------------


def test_dogo_branch_always_builds_adam(tmp_path):
    data = template()
    data["train"]["models"][0]["optimizer"].update(name="SGD", momentum=0.9, lr=0.05, weight_decay=1e-4)
    config, notes = load(tmp_path, data)
    assert "train.models.0.optimizer.name=SGD ignored" in notes and "always builds Adam" in notes
    assert "train.models.N.optimizer.name" in notes
    assert "train.models.0.optimizer.momentum ignored" in notes
    assert "train.models.1.optimizer" not in notes
    cohort = Cohort.from_config(config, steps_per_epoch=2)
    for optimizer, (lr, wd) in zip(cohort.optimizers, [(0.05, 1e-4), (3e-4, 1e-6)], strict=True):
        assert type(optimizer) is torch.optim.Adam
        group = optimizer.param_groups[0]
        assert group["lr"] == pytest.approx(lr) and group["weight_decay"] == pytest.approx(wd)


def test_dogo_branch_adam_by_name_loads_without_a_note(tmp_path):
    _, notes = load(tmp_path, template())
    assert "optimizer" not in notes


# ---- 3. scheduler: true: CosineAnnealingLR(T_max=epochs, eta_min=3e-4) stepped per batch --------


@pytest.mark.parametrize("lr, epochs, steps_per_epoch", [(1e-3, 3, 150), (1e-4, 7, 100), (3e-3, 40, 20)])
def test_scheduler_reproduces_per_batch_cosine_annealing(tmp_path, lr, epochs, steps_per_epoch):
    data = template()
    data["train"]["models"][0]["optimizer"]["lr"] = lr
    data["train"]["epochs"] = epochs
    config, notes = load(tmp_path, data)
    peer = config.train.models[0]
    total = steps_per_epoch * epochs
    got = lr_schedule(peer.schedule, peer.optimizer.lr, total, steps_per_epoch)  # as Cohort.from_config
    want = torch_per_batch_cosine(lr, epochs, total)
    assert len(got) == total
    assert got == pytest.approx(want, rel=1e-9, abs=0)
    # it oscillates: the period is 2 x epochs batches, not one cosine over the run
    assert got[2 * epochs] == pytest.approx(lr) and got[epochs] == pytest.approx(3e-4)
    assert "train.models.0.optimizer.scheduler" in notes and "once per batch" in notes
    assert "2 x epochs batches" in notes and "name: cosine" in notes
    # the second peer has scheduler: false: a constant rate
    assert config.train.models[1].schedule.name == "constant"


def test_scheduler_at_default_lr_is_flat_and_silent(tmp_path):
    config, notes = load(tmp_path, template("template.yaml"))
    peer = config.train.models[0]
    assert peer.schedule.name == "reference-cosine" and peer.schedule.min_lr == 3e-4
    rates = lr_schedule(peer.schedule, peer.optimizer.lr, 300, 100)
    assert rates == pytest.approx(torch_per_batch_cosine(3e-4, 3, 300), rel=1e-12)
    assert max(rates) == pytest.approx(min(rates))
    assert "scheduler" not in notes


def test_scheduler_of_the_main_branch(tmp_path):
    data = template("simclr-small.yaml")
    data["train"]["optimizer"]["lr"] = 2e-3
    data["train"]["epochs"] = 5
    config, notes = load(tmp_path, data)
    peer = config.train.models[0]
    assert lr_schedule(peer.schedule, peer.optimizer.lr, 250, 50) == pytest.approx(
        torch_per_batch_cosine(2e-3, 5, 250), rel=1e-9
    )
    assert "train.optimizer.scheduler" in notes


def test_reference_cosine_in_dogos_schema_with_explicit_t_max():
    cfg = ScheduleConfig(name="reference-cosine", min_lr=1e-5, t_max=37)
    assert lr_schedule(cfg, 0.1, 500, 10) == pytest.approx(torch_per_batch_cosine(0.1, 37, 500, eta_min=1e-5), rel=1e-9)


# ---- 4. main branch simsiam.yaml: a 2-layer projector -------------------------------------------


def test_main_branch_simsiam_builds_a_two_layer_projector(tmp_path):
    config, notes = load(tmp_path, template("simsiam-small.yaml"))
    peer_cfg = config.train.models[0]
    assert peer_cfg.objective == "simsiam" and peer_cfg.objective_options == {"projector_layers": 2}
    assert "2-layer projector" in notes
    peer = Peer.from_config(peer_cfg, 16, "p")
    d = peer.encoder.feature_dim
    # the reference's main branch: Linear(d, 2048) BN ReLU, [middle block commented out], Linear(2048, 2048) BN
    projector = peer.objective.projector
    assert [type(m) for m in projector] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d]
    assert [(m.in_features, m.out_features) for m in projector if isinstance(m, nn.Linear)] == [(d, 2048), (2048, 2048)]


def test_dogo_branch_simsiam_keeps_three_layers(tmp_path):
    config, _ = load(tmp_path, template())
    assert config.train.models[1].objective == "simsiam" and config.train.models[1].objective_options == {}
    peer = Peer.from_config(config.train.models[1], 16, "p")
    assert sum(isinstance(m, nn.Linear) for m in peer.objective.projector) == 3


# ---- objective options from dogo's own schema ---------------------------------------------------


def own(tmp_path, peer: dict, overrides=()):
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump({"train": {"models": [peer]}}))
    return load_config(path, list(overrides))


def test_objective_options_reach_the_objective(tmp_path):
    config = own(
        tmp_path,
        {"objective": "simsiam", "width": 0.25, "objective_options": {"projector_layers": 2}},
        ["train.models.0.objective_options.pred_hidden=16"],
    )
    assert config.train.models[0].objective_options == {"projector_layers": 2, "pred_hidden": 16}
    peer = Peer.from_config(config.train.models[0], 16, "p")
    assert peer.objective.projector.layers == 2 and peer.objective.predictor[0].out_features == 16
    simclr = own(tmp_path, {"objective": "simclr", "width": 0.25, "objective_options": {"hidden": 32}})
    assert Peer.from_config(simclr.train.models[0], 16, "p").objective.head[0].out_features == 32


@pytest.mark.parametrize(
    "peer, needle",
    [
        (
            {"objective": "simsiam", "objective_options": {"projector_layer": 2}},
            "train.models.0.objective_options: unknown simsiam option 'projector_layer' "
            "(did you mean 'projector_layers'?)",
        ),
        (
            {"objective": "simclr", "objective_options": {"projector_layers": 2}},
            "unknown simclr option 'projector_layers'",
        ),
        (
            {"objective": "simsiam", "objective_options": {"projector_layers": 0}},
            "train.models.0.objective_options.projector_layers",
        ),
        ({"objective": "simclr", "objective_options": {"hidden": "wide"}}, "train.models.0.objective_options.hidden"),
    ],
)
def test_objective_option_errors_at_load(tmp_path, peer, needle):
    with pytest.raises(ConfigError) as info:
        own(tmp_path, peer)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_a_typo_given_as_an_override_is_an_error_at_load(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'pred_hidden'"):
        own(tmp_path, {"objective": "simsiam"}, ["train.models.0.objective_options.pred_hiden=16"])


# ---- the ignored-keys warning names only keys that are present ----------------------------------


def test_ignored_keys_warning_names_only_present_keys(tmp_path):
    data = template("template-small.yaml")
    del data["train"]["save_dir"], data["eval"]["num_workers"], data["eval"]["model_path"]
    _, notes = load(tmp_path, data)
    assert "train.num_workers ignored (dogo augments in-process)" in notes
    assert "save_dir" not in notes and "--out" not in notes and "momentum" not in notes
    assert "eval.model, eval.backbone, eval.n_proj ignored" in notes
    assert "eval.num_workers" not in notes and "model_path" not in notes
    data = template("simclr-small.yaml")
    del data["train"]["save_dir"], data["train"]["num_workers"]
    _, notes = load(tmp_path, data)
    assert "train.momentum ignored (the reference never uses it)" in notes
    assert "augments" not in notes


@pytest.mark.parametrize("where, value", [("temperature", "warm"), ("optimizer.lr", "fast")])
def test_non_numbers_are_one_line_errors(tmp_path, where, value):
    data = template()
    node = data["train"]["models"][0]
    *parents, leaf = where.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    with pytest.raises(ConfigError, match=f"train.models.0.{where} must be a number"):
        load(tmp_path, data)
