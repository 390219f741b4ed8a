"""dogo.evaluate and dogo.report on tiny self-made encoders and synthetic data, with known answers."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dogo
from dogo.core.errors import ConfigError, DataError
from dogo.data import ImageDataset
from dogo.evaluate import (
    PROTOCOL_SETTINGS,
    PROTOCOLS,
    FeatureCache,
    LinearSettings,
    corrupt,
    extract_features,
    fit_probe,
    knn_accuracy,
    load_results,
    parse_settings,
    save_result,
)
from dogo.evaluate.fewshot import select_labelled
from dogo.evaluate.knn import knn_predict
from dogo.evaluate.linear import holdout_split
from dogo.evaluate.noisy import asymmetric_noise, flip_map_for, symmetric_noise
from dogo.evaluate.shift import CORRUPTIONS, SEVERITY_PARAMS, has_effect
from dogo.report import write_report

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# ----------------------------------------------------------------------------- fixtures


class ColourEncoder(nn.Module):
    """Per-channel mean colour through a fixed random projection: 8-d features. Counts calls."""

    feature_dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 8)
        self.bn = nn.BatchNorm1d(8)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(8, 3, generator=torch.Generator().manual_seed(0)))
        self.calls = 0
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.modes.append(self.training)
        return self.bn(self.proj(x.mean(dim=(2, 3))))


def colour_dataset(
    per_class: int, classes: int = 4, size: int = 8, seed: int = 0, channels: int = 3, name: str = "toy"
) -> ImageDataset:
    """Class c: a distinct colour plus a little per-pixel noise (linearly separable by colour)."""
    g = torch.Generator().manual_seed(seed)
    palette = torch.tensor(
        [[220, 30, 30], [30, 200, 40], [40, 40, 210], [200, 200, 40], [150, 40, 180], [40, 180, 180]],
        dtype=torch.float32,
    )[:classes]
    labels = torch.arange(classes).repeat_interleave(per_class)
    base = palette[labels][:, :, None, None].expand(-1, -1, size, size)
    images = (base + 12 * torch.randn(len(labels), 3, size, size, generator=g)).clamp(0, 255)
    images = images.round().to(torch.uint8)
    if channels == 1:  # distinct grey levels
        grey = torch.tensor([30.0, 90.0, 150.0, 210.0, 120.0, 60.0])[labels][:, None, None, None]
        images = (grey + 12 * torch.randn(len(labels), 1, size, size, generator=g)).clamp(0, 255)
        images = images.round().to(torch.uint8)
    return ImageDataset(
        name=name, images=images, labels=labels, classes=[f"c{i}" for i in range(classes)], source="synthetic"
    )


def separable_features(n: int, classes: int = 5, d: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    centres = 10 * torch.eye(classes, d)
    return centres[y] + 0.5 * torch.randn(n, d, generator=g), y


def smooth_images(n: int = 12, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Natural-ish uint8 images: upsampled random low-resolution colour fields."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    x = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    x = x * 0.7 + 0.15 + 0.05 * torch.randn(n, 3, size, size, generator=g)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


# ----------------------------------------------------------------------------- features + cache


def test_extract_features_eval_mode_no_grad_and_restores_flags():
    enc = ColourEncoder().train()
    enc.bn.eval()  # mixed modes must come back exactly
    data = colour_dataset(10)
    feats, labels = extract_features(enc, data, image_size=8, batch_size=16)
    assert feats.shape == (40, 8) and feats.dtype == torch.float32 and not feats.requires_grad
    assert enc.calls == 3 and not any(enc.modes)  # 16 + 16 + 8, all in eval mode
    assert enc.training and enc.proj.training and not enc.bn.training
    assert torch.equal(labels, data.labels)
    # batching does not change the features
    again, _ = extract_features(enc, data, image_size=8, batch_size=40)
    torch.testing.assert_close(feats, again)


def test_feature_cache_hit_identical_and_no_recompute(tmp_path):
    enc, data = ColourEncoder(), colour_dataset(5)
    cache = FeatureCache(tmp_path / "cache", model_id="abc123")
    first, labels = cache.get(enc, data, "train", 8)
    calls = enc.calls
    second, labels2 = cache.get(enc, data, "train", 8)
    assert enc.calls == calls and (cache.hits, cache.misses) == (1, 1)
    assert torch.equal(first, second) and torch.equal(labels, labels2)
    # a fresh cache object on the same folder hits too (the file is the cache)
    again = FeatureCache(tmp_path / "cache", model_id="abc123")
    assert torch.equal(again.get(enc, data, "train", 8)[0], first) and enc.calls == calls
    # another model, image size, option or image content is a miss
    FeatureCache(tmp_path / "cache", model_id="other").get(enc, data, "train", 8)
    cache.get(enc, data, "train", 16)
    cache.get(enc, data, "train", 8, options={"corruption": "jpeg"})
    changed = colour_dataset(5, seed=1)
    cache.get(enc, changed, "train", 8)
    assert cache.misses == 4 and enc.calls == calls + 4
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_feature_cache_recovers_from_damaged_file(tmp_path):
    enc, data = ColourEncoder(), colour_dataset(3)
    cache = FeatureCache(tmp_path, model_id="m")
    good, _ = cache.get(enc, data, "test", 8)
    path = cache.path_for(cache.key(data, "test", 8))
    path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="unreadable"):
        recomputed, _ = cache.get(enc, data, "test", 8)
    assert torch.equal(recomputed, good) and cache.misses == 2


# ----------------------------------------------------------------------------- linear probe


def test_linear_probe_separable_is_perfect_for_every_solver():
    x, y = separable_features(600)
    xt, yt = separable_features(300, seed=1)
    for settings in (
        LinearSettings(epochs=10, lr=0.01),
        LinearSettings(epochs=10, solver="sgd", lr=0.01),
        LinearSettings(epochs=30, lr=0.01, schedule="cosine", standardize=True),
        LinearSettings(solver="lbfgs"),
    ):
        tr, va = holdout_split(len(y), settings.val_fraction, 0)
        fit = fit_probe(x[tr], y[tr], 5, settings, val_x=x[va], val_y=y[va])
        assert fit.probe.accuracy(xt, yt) == 100.0, settings
        assert fit.best_val_top1 == 100.0


def test_linear_probe_random_features_random_labels_is_chance():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2000, 32, generator=g), torch.randint(0, 10, (2000,), generator=g)
    xt, yt = torch.randn(2000, 32, generator=g), torch.randint(0, 10, (2000,), generator=g)
    tr, va = holdout_split(2000, 0.15, 0)
    fit = fit_probe(x[tr], y[tr], 10, LinearSettings(epochs=5), val_x=x[va], val_y=y[va])
    assert 6.0 < fit.probe.accuracy(xt, yt) < 14.0  # chance = 10 %, 2000 test points


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_fast_probe_step_matches_autograd_and_torch_optim(solver):
    """The written-out gradient + update equals nn.Linear + cross_entropy + torch.optim."""
    x, y = separable_features(100, classes=3, d=6)
    settings = LinearSettings(
        solver=solver, epochs=2, batch_size=32, lr=0.05, weight_decay=0.01, val_fraction=0, seed=3
    )
    fit = fit_probe(x, y, 3, settings)

    from dogo.evaluate.base import generator

    g = generator(3, "probe")
    wb = torch.empty(3, 7).uniform_(-1 / math.sqrt(6), 1 / math.sqrt(6), generator=g)
    layer = nn.Linear(6, 3)
    with torch.no_grad():
        layer.weight.copy_(wb[:, :6])
        layer.bias.copy_(wb[:, 6])
    if solver == "adam":
        opt = torch.optim.Adam(layer.parameters(), lr=0.05, weight_decay=0.01)
    else:
        opt = torch.optim.SGD(layer.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01)
    for _ in range(2):
        perm = torch.randperm(100, generator=g)
        for start in range(0, 100, 32):
            idx = perm[start : start + 32]
            opt.zero_grad()
            F.cross_entropy(layer(x[idx]), y[idx]).backward()
            opt.step()
    torch.testing.assert_close(fit.probe.weight, layer.weight.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fit.probe.bias, layer.bias.detach(), rtol=1e-5, atol=1e-6)


def test_probe_keeps_best_validation_epoch_and_split_ignores_global_seed():
    x, y = separable_features(300)
    tr, va = holdout_split(300, 0.15, 7)
    torch.manual_seed(123)
    tr2, _ = holdout_split(300, 0.15, 7)
    assert torch.equal(tr, tr2) and len(va) == 45 and len(set(tr.tolist()) | set(va.tolist())) == 300
    fit = fit_probe(x[tr], y[tr], 5, LinearSettings(epochs=6), val_x=x[va], val_y=y[va])
    assert len(fit.val_curve) == 6
    assert fit.best_val_top1 == max(fit.val_curve)
    assert fit.val_curve.index(fit.best_val_top1) + 1 == fit.best_epoch


# ----------------------------------------------------------------------------- kNN


def slow_knn(train_x, train_y, test_x, k, t, classes):
    """Straight from the formula, one test point at a time."""
    a, b = F.normalize(train_x, dim=1), F.normalize(test_x, dim=1)
    out = []
    for q in b:
        sims = a @ q
        order = sims.argsort(descending=True)[:k]
        votes = torch.zeros(classes)
        for i in order:
            votes[train_y[i]] += math.exp(sims[i] / t)
        out.append(votes)
    return torch.stack(out)


def test_knn_matches_formula_chunked_and_top5():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(120, 5, generator=g), torch.randint(0, 7, (120,), generator=g)
    q, qy = torch.randn(30, 5, generator=g), torch.randint(0, 7, (30,), generator=g)
    expected = slow_knn(x, y, q, 10, 0.1, 7)
    torch.testing.assert_close(knn_predict(x, y, q, 10, 0.1, 7), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(knn_predict(x, y, q, 10, 0.1, 7, chunk_elements=7 * 120), expected, rtol=1e-4, atol=1e-4)
    top1, top5 = knn_accuracy(x, y, q, qy, k=10, temperature=0.1, num_classes=7)
    ranked = expected.argsort(dim=1, descending=True)
    assert top1 == pytest.approx(100 * float((ranked[:, 0] == qy).float().mean()))
    assert top5 == pytest.approx(100 * float((ranked[:, :5] == qy[:, None]).any(1).float().mean()))


def test_knn_known_answers():
    x, y = separable_features(400)
    xt, yt = separable_features(200, seed=1)
    assert knn_accuracy(x, y, xt, yt, k=200, temperature=0.1, num_classes=5) == (100.0, 100.0)
    g = torch.Generator().manual_seed(0)
    pts, labels = torch.randn(300, 8, generator=g), torch.randint(0, 10, (300,), generator=g)
    assert knn_accuracy(pts, labels, pts, labels, k=1, temperature=0.1)[0] == 100.0  # itself
    q, qy = torch.randn(2000, 8, generator=g), torch.randint(0, 10, (2000,), generator=g)
    assert 6.0 < knn_accuracy(pts, labels, q, qy, k=20, temperature=0.1, num_classes=10)[0] < 14.0
    # k larger than the bank, fewer than five classes
    assert knn_accuracy(x[:3], y[:3], xt, yt, k=200, temperature=0.1, num_classes=5)[0] >= 0
    assert knn_accuracy(x, y % 2, xt, yt % 2, k=5, temperature=0.1, num_classes=2)[1] == 100.0


# ----------------------------------------------------------------------------- few-shot + noise


def test_fewshot_selection_class_balanced_and_seeded():
    labels = torch.arange(5).repeat_interleave(40)[torch.randperm(200)]
    tr, va = select_labelled(labels, 5, per_class=10, val_fraction=0.2, generator=torch.Generator().manual_seed(1))
    assert torch.bincount(labels[tr], minlength=5).tolist() == [8] * 5
    assert torch.bincount(labels[va], minlength=5).tolist() == [2] * 5
    assert not set(tr.tolist()) & set(va.tolist())
    tr2, va2 = select_labelled(labels, 5, per_class=10, val_fraction=0.2, generator=torch.Generator().manual_seed(1))
    tr3, _ = select_labelled(labels, 5, per_class=10, val_fraction=0.2, generator=torch.Generator().manual_seed(2))
    assert torch.equal(tr, tr2) and torch.equal(va, va2) and not torch.equal(tr, tr3)
    tr, va = select_labelled(labels, 5, fraction=0.1, generator=torch.Generator().manual_seed(0))
    assert torch.bincount(labels[tr], minlength=5).tolist() == [4] * 5 and len(va) == 0
    tr, _ = select_labelled(labels, 5, per_class=1000, generator=torch.Generator().manual_seed(0))
    assert len(tr) == 200  # capped at what each class has


def test_noise_models():
    labels = torch.arange(10).repeat_interleave(100)
    g = torch.Generator().manual_seed(0)
    noisy = symmetric_noise(labels, 0.3, 10, g)
    assert int((noisy != labels).sum()) == 300
    every = symmetric_noise(labels, 1.0, 10, g)
    assert bool((every != labels).all()) and torch.bincount(every).min() > 50  # spread out
    flips = flip_map_for(CIFAR10, 10)
    assert flips == {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
    asym = asymmetric_noise(labels, 0.4, flips, g)
    changed = asym != labels
    assert int(changed.sum()) == 200  # 40 % of the 500 images of the five source classes
    assert set(labels[changed].tolist()) <= set(flips)
    assert all(flips[a] == b for a, b in zip(labels[changed].tolist(), asym[changed].tolist(), strict=True))
    assert flip_map_for(["a", "b", "c"], 3) == {0: 1, 1: 2, 2: 0}
    assert flip_map_for(["a", "b", "c"], 3, {"a": "c", 1: 0}) == {0: 2, 1: 0}
    with pytest.raises(ConfigError, match="unknown class"):
        flip_map_for(["a", "b"], 2, {"z": "a"})


# ----------------------------------------------------------------------------- shift


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruptions_grow_with_severity(name):
    clean = smooth_images()
    distances = []
    for severity in range(1, 6):
        out = corrupt(clean, name, severity, seed=0)
        assert out.shape == clean.shape and out.dtype == torch.uint8
        distances.append(float((out.float() - clean.float()).pow(2).mean().sqrt()))
    assert distances[0] > 0
    assert all(a <= b + 1e-6 for a, b in itertools.pairwise(distances)), distances
    assert distances[-1] > distances[0]
    assert torch.equal(corrupt(clean, name, 3, seed=0), corrupt(clean, name, 3, seed=0))


def test_corruption_bounds_greyscale_and_seed():
    clean = smooth_images(4)
    grey = clean[:, :1]
    for name in CORRUPTIONS:
        assert corrupt(grey, name, 5).shape == grey.shape
        assert len(SEVERITY_PARAMS[name]) == 5
    for bad in (0, 6):
        with pytest.raises(ValueError, match="severity"):
            corrupt(clean, "contrast", bad)
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(clean, "fog", 1)
    assert not torch.equal(corrupt(clean, "gaussian_noise", 2, seed=0), corrupt(clean, "gaussian_noise", 2, seed=1))


def test_a_blur_does_nothing_at_8_px_and_the_shift_protocol_records_it():
    small, large = smooth_images(size=8), smooth_images(size=32)
    assert torch.equal(corrupt(small, "gaussian_blur", 1), small)  # 0.1 px std: rounds back to the clean image
    assert not has_effect(small, corrupt(small, "gaussian_blur", 5))
    assert has_effect(large, corrupt(large, "gaussian_blur", 1))
    assert has_effect(small, corrupt(small, "contrast", 1))
    train, test = colour_dataset(20), colour_dataset(10, seed=1)
    result = run_protocol(
        "shift", ["epochs=5", "lr=0.05", "corruptions=gaussian_blur,contrast", "severities=1,5"], train, test
    )
    assert result["no_effect"] == {"gaussian_blur": [1, 5]} and result["image_px"] == 8
    assert result["corruption_top1"]["gaussian_blur"] == {"1": result["clean_top1"], "5": result["clean_top1"]}


# ----------------------------------------------------------------------------- settings


def test_settings_defaults_and_validation():
    s = parse_settings("linear")
    assert (s.solver, s.lr, s.weight_decay, s.batch_size, s.epochs, s.val_fraction) == (
        "adam",
        3e-4,
        1e-6,
        64,
        100,
        0.15,
    )
    k = parse_settings("knn")
    assert (k.k, k.temperature) == (200, 0.1)
    f = parse_settings("fewshot", ["fractions=0.01,0.1,0.5", "draws=2", "finetune=true"])
    assert f.fractions == [0.01, 0.1, 0.5] and f.draws == 2 and f.finetune
    assert parse_settings("fewshot", ["fractions=[0.2]"]).fractions == [0.2]
    n = parse_settings("noisy", {"rates": [0, 1], "noise": "asymmetric", "flip_map": {9: 1}})
    assert n.rates == [0.0, 1.0] and n.flip_map == {9: 1}
    assert parse_settings("shift", ["severities=1,5", "corruptions=jpeg"]).severities == [1, 5]
    assert parse_settings("transfer", ["dataset=digits"]).dataset == "digits"
    bad = [
        ("linear", ["lrr=0.1"], "unknown key 'lrr'.*did you mean 'lr'"),
        ("linear", ["lr=-1"], "lr"),
        ("linear", ["val_fraction=1"], "val_fraction"),
        ("linear", ["solver=newton"], "solver"),
        ("knn", ["k=0"], "k"),
        ("knn", ["temperature=0"], "temperature"),
        ("fewshot", ["fractions=0,0.1"], "fractions"),
        ("fewshot", ["fractions=[]"], "at least one"),
        ("noisy", ["rates=1.5"], "rates"),
        ("shift", ["severities=6"], "severities"),
        ("shift", ["corruptions=fog"], "corruptions"),
        ("transfer", [], "dataset"),
        ("linear", ["epochs"], "key=value"),
    ]
    for name, overrides, match in bad:
        with pytest.raises(ConfigError, match=match):
            parse_settings(name, overrides)
    with pytest.raises(ConfigError, match="did you mean 'linear'"):
        parse_settings("linaer")
    assert (
        set(PROTOCOL_SETTINGS) == set(PROTOCOLS.names()) == {"linear", "knn", "fewshot", "noisy", "transfer", "shift"}
    )
    for cls in PROTOCOL_SETTINGS.values():
        assert cls.model_config["extra"] == "forbid"


# ----------------------------------------------------------------------------- protocols end to end


def run_protocol(name, overrides, train, test, cache=None, image_size=8):
    settings = parse_settings(name, overrides)
    return PROTOCOLS.get(name)(
        ColourEncoder(), train, test, settings, image_size=image_size, device="cpu", feature_cache=cache
    )


def test_protocols_on_a_toy_encoder(tmp_path):
    train, test = colour_dataset(40), colour_dataset(20, seed=1)
    cache = FeatureCache(tmp_path / "features", model_id="toy")
    fast = ["epochs=15", "lr=0.05"]
    results = {
        "linear": run_protocol("linear", fast, train, test, cache),
        "knn": run_protocol("knn", ["k=20"], train, test, cache),
        "fewshot": run_protocol(
            "fewshot", [*fast, "fractions=0.25", "per_class=2", "draws=2", "val_fraction=0"], train, test, cache
        ),
        "noisy": run_protocol("noisy", [*fast, "rates=0,1"], train, test, cache),
        "transfer": run_protocol(
            "transfer",
            [*fast, "dataset=toy-grey"],
            colour_dataset(30, channels=1, size=12, name="toy-grey"),
            colour_dataset(10, channels=1, size=12, seed=2, name="toy-grey"),
        ),
        "shift": run_protocol(
            "shift",
            [*fast, "corruptions=contrast,gaussian_noise", "severities=1,5", "max_test_images=50"],
            train,
            test,
            cache,
        ),
    }
    for name, result in results.items():
        assert result["protocol"] == name and result["dogo_version"] == dogo.__version__
        assert result["settings"] == PROTOCOL_SETTINGS[name].model_validate(result["settings"]).model_dump(mode="json")
        assert result["summary"] and json.loads(json.dumps(result)) == result  # JSON-able
    assert results["linear"]["test_top1"] == 100.0 and results["linear"]["num_test"] == 80
    assert len(results["linear"]["val_curve"]) == 15
    assert results["knn"]["test_top1"] == 100.0
    few = results["fewshot"]["results"]
    assert [r["num_labelled"] for r in few] == [40, 8] and len(few[0]["test_top1"]) == 2
    noisy = results["noisy"]["results"]
    assert noisy[0]["test_top1_mean"] == 100.0 and noisy[0]["actual_noise"] == [0.0]
    assert noisy[1]["actual_noise"] == [1.0] and noisy[1]["test_top1_mean"] <= 25.0  # chance
    assert results["transfer"]["variant"] == "toy-grey" and results["transfer"]["test_top1"] == 100
    shift = results["shift"]
    assert set(shift["corruption_top1"]) == {"contrast", "gaussian_noise"}
    assert set(shift["corruption_top1"]["contrast"]) == {"1", "5"} and shift["num_test"] == 50
    assert shift["clean_top1"] == 100.0
    # train + test features of the one toy dataset were extracted once, then hit
    assert cache.hits >= 8

    for name, result in results.items():
        save_result(tmp_path / "run", 0, name, result)
    names = sorted(p.name for p in (tmp_path / "run" / "eval").glob("*.json"))
    assert names == [
        "fewshot-peer0.json",
        "knn-peer0.json",
        "linear-peer0.json",
        "noisy-symmetric-peer0.json",
        "shift-peer0.json",
        "transfer-toy-grey-peer0.json",
    ]
    loaded = load_results(tmp_path / "run")
    assert {r["protocol"] for r in loaded} == set(results) and all(r["peer"] == 0 for r in loaded)


def test_noisy_full_symmetric_noise_is_at_most_chance():
    train, test = colour_dataset(60), colour_dataset(25, seed=1)
    result = run_protocol("noisy", ["epochs=30", "lr=0.05", "rates=1"], train, test)
    assert result["results"][0]["test_top1_mean"] <= 25.0  # chance with 4 classes


def test_fewshot_finetune_runs_and_leaves_encoder_alone():
    train, test = colour_dataset(10), colour_dataset(5, seed=1)
    encoder = ColourEncoder()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    settings = parse_settings(
        "fewshot",
        ["epochs=5", "lr=0.05", "per_class=4", "draws=1", "fractions=[]", "finetune=true", "finetune_epochs=2"],
    )
    result = PROTOCOLS.get("fewshot")(encoder, train, test, settings, image_size=8, device="cpu", feature_cache=None)
    assert 0 <= result["results"][0]["finetune_top1_mean"] <= 100
    assert "fewshot-ft 4/class" in result["summary"]
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())


def test_unlabelled_split_is_a_clear_error():
    train = colour_dataset(5)
    unlabelled = ImageDataset("toy", train.images, None, [], "synthetic")
    with pytest.raises(DataError, match="no labels"):
        run_protocol("linear", [], unlabelled, train)


# ----------------------------------------------------------------------------- report


def fake_run(root: Path, name: str, seed: int, acc: float) -> Path:
    run = root / name
    run.mkdir(parents=True)
    config = {
        "name": name,
        "seed": seed,
        "dataset": {"name": "toy"},
        "train": {
            "epochs": 2,
            "models": [
                {"name": "student", "backbone": "resnet18", "objective": "simclr"},
                {"backbone": "resnet50", "objective": "simsiam"},
            ],
        },
    }
    (run / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    lines = []
    for step in range(0, 40, 10):
        lines.append(
            {
                "step": step,
                "epoch": step // 20,
                "peer/0/loss/ssl": 5 - step / 10 + seed,
                "peer/0/loss/kl": 0.1 / (step + 1),
                "peer/1/loss/ssl": 6 - step / 10,
                "peer/1/lr": 3e-4,
                "images_per_s": 100.0,
            }
        )
    for epoch in (1, 2):
        lines.append({"epoch": epoch, "peer/0/knn_top1": acc + epoch, "peer/1/knn_top1": acc})
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    base = {"dogo_version": dogo.__version__, "settings": {}}
    for peer in (0, 1):
        save_result(run, peer, "linear", {**base, "summary": {"linear": acc + peer}})
        save_result(
            run,
            peer,
            "noisy",
            {
                **base,
                "variant": "symmetric",
                "results": [{"rate": r, "test_top1_mean": acc - 50 * r} for r in (0.2, 0.5)],
                "summary": {"noisy sym 20%": acc - 10},
            },
        )
        save_result(
            run,
            peer,
            "fewshot",
            {
                **base,
                "num_train_total": 1000,
                "results": [
                    {"fraction": 0.01, "per_class": None, "test_top1_mean": acc - 20},
                    {"fraction": None, "per_class": 10, "num_labelled": 100, "test_top1_mean": acc - 5},
                ],
                "summary": {"fewshot 1%": acc - 20},
            },
        )
        save_result(
            run,
            peer,
            "shift",
            {
                **base,
                "clean_top1": acc,
                "severity_mean_top1": {"1": acc - 5, "5": acc - 30},
                "corruption_top1": {"jpeg": {"1": acc - 3, "5": acc - 20}},
                "summary": {"shift mCA": acc - 17},
            },
        )
    return run


def test_report_tables_and_plots(tmp_path):
    runs = [fake_run(tmp_path, f"dogo-s{seed}", seed, 80.0 + seed) for seed in (0, 1)]
    runs.append(fake_run(tmp_path, "other", 0, 60.0))
    (runs[2] / "config.yaml").write_text(json.dumps({"name": "other", "seed": 0, "train": {"epochs": 9}}))
    report = write_report(runs, tmp_path / "out")
    text = report.read_text()
    assert report == tmp_path / "out" / "report.md"
    assert "dogo (seeds 0, 1)" in text and "peer0 (student: resnet18 simclr)" in text
    assert "peer1 (resnet50-simsiam: resnet50 simsiam)" in text  # the unnamed peer by its backbone
    assert "80.50 ± 0.71 (n=2)" in text  # linear of peer 0 over the two seeds
    for column in ("online kNN (last)", "linear", "noisy sym 20%", "fewshot 1%", "shift mCA"):
        assert column in text
    for png in ("loss.png", "knn.png", "noisy.png", "fewshot.png", "shift.png"):
        path = tmp_path / "out" / png
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({png})" in text
    # no data: no plots, still a report
    empty = tmp_path / "empty"
    empty.mkdir()
    write_report([empty], tmp_path / "out2")
    assert not list((tmp_path / "out2").glob("*.png"))


def test_report_says_no_effect_at_8_px_instead_of_a_flat_line(tmp_path, monkeypatch):
    from dogo.report import figures

    run = fake_run(tmp_path, "small", 0, 80.0)
    save_result(
        run,
        0,
        "shift",
        {
            "dogo_version": dogo.__version__,
            "settings": {},
            "clean_top1": 80.0,
            "severity_mean_top1": {"1": 77.0, "5": 66.0},
            "image_px": 8,
            "corruption_top1": {"gaussian_blur": {"1": 80.0, "5": 80.0}, "jpeg": {"1": 74.0, "5": 52.0}},
            "no_effect": {"gaussian_blur": [1, 5]},
            "summary": {"shift mCA": 71.5},
        },
    )
    panels = {}
    real_save = figures.save

    def spy(plt, fig, path, title):
        panels[Path(path).name] = [(ax.get_title(), len(ax.lines), [t.get_text() for t in ax.texts]) for ax in fig.axes]
        return real_save(plt, fig, path, title)

    monkeypatch.setattr(figures, "save", spy)
    text = write_report([run], tmp_path / "out").read_text()
    blur = next(p for p in panels["shift.png"] if p[0] == "gaussian_blur")
    assert blur[1] == 0 and blur[2] == ["no effect at 8 px"]  # no flat line, a note
    assert next(p for p in panels["shift.png"] if p[0] == "jpeg")[1] > 0
    assert "- gaussian_blur: no effect at 8 px (severity 1, 5)" in text


def test_noisy_probe_picks_its_epoch_on_clean_labels_by_default():
    from dogo.evaluate.inputs import ProtocolInput

    x, clean = separable_features(600)
    test_x, test_y = separable_features(200, seed=1)
    images = torch.zeros(600, 1, 8, 8, dtype=torch.uint8)
    train = ImageDataset("toy", images, clean, [str(c) for c in range(5)], "synthetic")
    test = ImageDataset("toy", images[:200], test_y, train.classes, "synthetic")
    body = PROTOCOLS.get("noisy").__wrapped__
    draws = {}
    for select in ("clean", "noisy", "last"):
        data = ProtocolInput(None, train, test, 8, _features=(x, clean, test_x, test_y))  # features given
        settings = parse_settings("noisy", {"epochs": 20, "lr": 0.05, "rates": [0.6], "select": select})
        result = body(data, settings)
        assert result["settings"]["select"] == select
        draws[select] = result["results"][0]["draws"][0]
    # 60 % of the labels changed: 40 % stay right, 15 % go to each other class. Scored against the
    # clean labels the chosen epoch's validation accuracy is high; against the noisy ones it can only
    # be low; "last" has no validation at all.
    assert draws["clean"]["best_val_top1"] > 80 and draws["noisy"]["best_val_top1"] < 55
    assert draws["last"]["best_val_top1"] is None and draws["last"]["num_val"] == 0
    assert parse_settings("noisy", {}).select == "clean"
    with pytest.raises(ConfigError, match="select"):
        parse_settings("noisy", {"select": "best"})
