"""`dogo export --format safetensors` writes the backbone's code beside the weights: generated from dogo's own
modules (every registered backbone, checked against them here), and loaded where dogo cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dogo.cli import main
from dogo.models import BACKBONES, build_backbone
from dogo.runs.export_code import MARKER, backbone_source


@pytest.mark.parametrize("name", BACKBONES.names())
def test_generated_backbone_is_dogos_for_every_architecture(name):
    namespace: dict = {}
    exec(
        compile(
            "from __future__ import annotations\nimport sys\nimport torch\nfrom torch import nn\n"
            + backbone_source(name),
            f"<{name}>",
            "exec",
        ),
        namespace,
    )
    for image_size in (16, 112):  # the small-image stem and ImageNet's
        ours = build_backbone(name, image_size=image_size, width=0.25).eval()
        theirs = namespace["BACKBONES"].get(name)(image_size=image_size, width=0.25, in_channels=3).eval()
        assert {k: v.shape for k, v in theirs.state_dict().items()} == {
            k: v.shape for k, v in ours.state_dict().items()
        }
        theirs.load_state_dict(ours.state_dict())
        x = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert torch.equal(theirs(x), ours(x)), (name, image_size)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export-code")
    (root / "tiny.yaml").write_text("""
name: tiny
dataset: {name: digits, image_size: 8, options: {limit: 128}}
train: {epochs: 1, batch_size: 64, precision: fp32, models: [{name: student, backbone: resnet18, width: 0.0625}]}
logging: {save_every: 0, knn_every: 0, progress: false, tensorboard: false}
""")
    assert main(["pretrain", str(root / "tiny.yaml"), "--out", str(root / "run"), "--quiet"]) == 0
    return root / "run"


BLOCKED = """
import sys
sys.modules["dogo"] = None  # `import dogo` now raises ImportError, whatever is installed
try:
    import dogo
except ImportError:
    pass
else:
    raise SystemExit("dogo is importable")
import importlib.util
import numpy as np
import torch
spec = importlib.util.spec_from_file_location("student", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
encoder = module.load(sys.argv[2])
images = torch.from_numpy(np.load(sys.argv[3]))
with torch.no_grad():
    np.save(sys.argv[4], encoder(module.preprocess(images)).numpy())
print(sorted(k for k, m in sys.modules.items() if m is not None and k.split(".")[0] == "dogo"))
"""


def test_the_export_loads_in_a_process_without_dogo_and_gives_dogo_embeds_features(run, tmp_path, capsys):
    from dogo.data import load_dataset

    weights = tmp_path / "student.safetensors"
    assert main(["export", str(run), "--format", "safetensors", "--out", str(weights)]) == 0
    assert f'{tmp_path / "student.py"} (load("student.safetensors")' in capsys.readouterr().out
    code = tmp_path / "student.py"
    assert code.read_text().splitlines()[0] == MARKER
    assert json.loads((tmp_path / "student.safetensors.json").read_text())["python"] == "student.py"
    assert main(["embed", str(run), "--data", "digits", "--split", "test", "--out", str(tmp_path / "dogo.npy")]) == 0
    np.save(tmp_path / "images.npy", load_dataset("digits", split="test").images.numpy())
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            BLOCKED,
            str(code),
            str(weights),
            str(tmp_path / "images.npy"),
            str(tmp_path / "plain.npy"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"  # nothing of dogo was loaded
    plain, ours = np.load(tmp_path / "plain.npy"), np.load(tmp_path / "dogo.npy")
    assert plain.shape == ours.shape and len(ours) == 360
    assert np.abs(plain - ours).max() < 1e-5


def test_a_python_file_of_the_users_is_never_overwritten(run, tmp_path, capsys):
    (tmp_path / "student.py").write_text("print('mine')\n")
    assert main(["export", str(run), "--format", "safetensors", "--out", str(tmp_path / "student.safetensors")]) == 2
    assert "student.py: exists and was not written by dogo export" in capsys.readouterr().err
    assert (tmp_path / "student.py").read_text() == "print('mine')\n" and not (
        tmp_path / "student.safetensors"
    ).exists()
    assert main(["export", str(run), "--format", "safetensors", "--out", str(tmp_path / "weights.py")]) == 2
    assert "would be overwritten by their Python file" in capsys.readouterr().err
