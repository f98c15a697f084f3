"""export.py: every network exports to ONNX in eval mode and ONNX Runtime computes its logits; a
checkpoint exports with a sidecar and a parity check that refuses a tampered file or a too-strict
tolerance; predict.py model_file= gives the checkpoint's predictions; without the optional packages,
one paragraph says how to install them."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from PIL import Image
from torch import Tensor, nn

from conftest import REPO, run_cli
from visionbench.bench.speed import build_net
from visionbench.errors import ConfigError, CorruptDataError, DataNotFoundError
from visionbench.export.exporter import (
    DEFAULT_OPSET,
    ParityError,
    check_parity,
    export_checkpoint,
    export_network,
    measure_parity,
)
from visionbench.export.runtime import OnnxNet
from visionbench.predict import predict
from visionbench.tasks.base import VisionTask

CLASSIFICATION = ["cnn", "resnet_small", "resnet50", "vgg19", "inception_v1"]
SEGMENTATION = ["fcn", "fcn8s", "fpn"]
CHEAP = {"cnn", "resnet_small"}  # under ~5 s each on a loaded 2-core CPU; the others are marked slow


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in CHEAP else pytest.mark.slow) for n in CLASSIFICATION + SEGMENTATION])
def test_every_network_exports_in_eval_mode_and_onnx_runtime_matches_eager_pytorch(name: str, tmp_path: Path) -> None:
    """Built as `model=<name>` builds it, in training mode (Inception with its auxiliary heads): the file has
    the eval-mode network's one output; another batch (and, for segmentation, another size) than the example
    gives the eager logits at full resolution."""
    segmentation = name in SEGMENTATION
    torch.manual_seed(0)
    net = build_net(name, num_classes=3, image_size=32)
    size, other_size = ((64, 64), (96, 64)) if segmentation else ((32, 32), (32, 32))
    example, other = torch.randn(2, 3, *size), torch.randn(3, 3, *other_size)
    path = tmp_path / f"{name}.onnx"
    export_network(net, example, path, dynamic_batch=True, dynamic_size=segmentation, opset=DEFAULT_OPSET)
    assert [o.name for o in onnx.load(path, load_external_data=False).graph.output] == ["logits"]
    exported = OnnxNet(path)
    assert exported(other).shape == ((3, 3, 96, 64) if segmentation else (3, 3))
    parity = measure_parity(exported, net, other, "random images")
    check_parity(parity, 1e-4, path, "")
    assert not net.training


@pytest.fixture(scope="module")
def checkpoint(multirun: Path) -> Path:
    """The session's tiny plain CNN trained on the built-in shapes (48 px, 12 classes)."""
    return multirun / "0" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def exported(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``src/export.py`` run as a user runs it: the folder it wrote and its stdout."""
    out = tmp_path_factory.mktemp("export")
    process = run_cli("src/export.py", f"ckpt_path={checkpoint}", f"output_dir={out}")
    return out, process.stdout


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for name, shape in {"a.png": (40, 60, 3), "b.jpg": (48, 48, 3), "c.png": (90, 33)}.items():
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / name)
    return folder


@pytest.mark.slow
def test_export_cli_writes_the_network_and_its_sidecar_and_prints_the_parity(exported: tuple[Path, str]) -> None:
    out, stdout = exported
    assert sorted(p.name for p in out.iterdir()) == ["cnn.json", "cnn.onnx"]  # no staging leftovers
    sidecar = json.loads((out / "cnn.json").read_text())
    assert sidecar["input"]["shape"] == ["batch", 3, 48, 48] and sidecar["input"]["mean"] == [0.485, 0.456, 0.406]
    assert sidecar["output"]["shape"] == ["batch", 12] and len(sidecar["class_names"]) == 12
    assert sidecar["parity"]["source"] == "8 validation images of task=shapes" and sidecar["parity"]["max_abs_diff"] <= 1e-4
    assert sidecar["run_config"]["model"]["name"] == "cnn"
    assert "Parity on 8 validation images of task=shapes: max |Δ logit|" in stdout and "top-1 agreement" in stdout
    assert f"model_file={out / 'cnn.onnx'}" in stdout


@pytest.mark.slow
def test_predict_from_the_exported_file_equals_predict_from_the_checkpoint(
    checkpoint: Path, exported: tuple[Path, str], photos: Path, tmp_path: Path
) -> None:
    predict(checkpoint, photos, tmp_path / "ckpt", batch_size=2, figures=False, echo=lambda _: None)
    predict(None, photos, tmp_path / "onnx", batch_size=2, figures=False, echo=lambda _: None, model_file=exported[0] / "cnn.onnx")
    from_checkpoint, from_onnx = read_csv(tmp_path / "ckpt" / "predictions.csv"), read_csv(tmp_path / "onnx" / "predictions.csv")
    assert [list(r) for r in from_onnx] == [list(r) for r in from_checkpoint] and len(from_onnx) == 3
    for ours, theirs in zip(from_onnx, from_checkpoint, strict=True):
        assert [v for k, v in ours.items() if not k.startswith("probability")] == [
            v for k, v in theirs.items() if not k.startswith("probability")
        ]  # the same file, the same classes in the same order
        assert [float(v) for k, v in ours.items() if k.startswith("probability")] == pytest.approx(
            [float(v) for k, v in theirs.items() if k.startswith("probability")], abs=1e-4
        )


@pytest.mark.slow
def test_a_tampered_file_fails_the_parity_check_or_the_load_with_one_paragraph(
    checkpoint: Path, exported: tuple[Path, str], tmp_path: Path
) -> None:
    model = onnx.load(exported[0] / "cnn.onnx")
    weight = model.graph.initializer[0]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.5, weight.name))
    onnx.save(model, tmp_path / "altered.onnx")
    net = VisionTask.from_checkpoint(checkpoint).net
    images = torch.randn(4, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    parity = measure_parity(OnnxNet(tmp_path / "altered.onnx"), net, images, "4 random images")
    with pytest.raises(ParityError, match=r"altered\.onnx") as error:
        check_parity(parity, 1e-4, tmp_path / "altered.onnx", "")
    assert "\n" not in str(error.value) and "export again" in str(error.value)

    (tmp_path / "cut.onnx").write_bytes((exported[0] / "cnn.onnx").read_bytes()[:50_000])
    with pytest.raises(CorruptDataError, match=r"cut\.onnx' is not a readable ONNX model") as error:
        OnnxNet(tmp_path / "cut.onnx")
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_a_too_strict_tolerance_fails_with_one_paragraph_and_keeps_nothing(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ParityError, match=r"tolerance 1e-09\b.*Nothing was written.*raise tolerance=") as error:
        export_checkpoint(checkpoint, tmp_path, tolerance=1e-9, parity_images=2, data_dir=os.environ["VISIONBENCH_DATA_DIR"])
    assert "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_without_the_export_packages_exporting_and_onnx_prediction_name_the_pip_command(
    checkpoint: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for package in ("onnx", "onnxruntime", "onnxscript"):
        monkeypatch.setitem(sys.modules, package, None)  # `import onnxruntime` now raises ImportError
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[export\]"') as error:
        export_checkpoint(checkpoint, tmp_path)
    assert "onnx (" in str(error.value) and "Training and evaluation do not need them" in str(error.value)
    with pytest.raises(ConfigError, match=r"needs the optional package\(s\) onnxruntime"):
        OnnxNet(tmp_path / "cnn.onnx")
    result = predict(checkpoint, photos / "a.png", tmp_path / "ckpt", figures=False, echo=lambda _: None)
    assert len(result.rows) == 1  # a checkpoint predicts without them


class RedSegNet(nn.Module):
    """Class 1 where the red channel is above its mean, by a clear margin on 8-bit images: masks are exact."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.weight[1, 0, 1, 1] = 1.0

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


def test_a_segmentation_network_predicts_the_checkpoints_masks_from_its_exported_file(tmp_path: Path) -> None:
    """Sliding windows over images of several sizes: the file takes any height and width. The task's data
    is absent, so the parity check runs on a fixed random batch and says so."""
    net = RedSegNet(2)
    config = {
        "paths": {"data_dir": str(tmp_path)},
        "model": {"name": "red", "net": {"_target_": f"{__name__}.RedSegNet"}},
        "task": {
            "name": "tiny_seg",
            "kind": "segmentation",
            "data": {
                "_target_": "visionbench.data.segmentation.ImageMaskDataModule",
                "root": str(tmp_path / "absent"),
                "crop": [24, 24],
                "size_divisor": 32,
                "ignore_index": 255,
            },
            "module": {
                "_target_": "visionbench.tasks.segmentation.SegmentationTask",
                "eval_mode": "slide",
                "window": [24, 24],
                "stride": [16, 16],
            },
        },
    }
    ckpt = tmp_path / "seg.ckpt"
    torch.save(
        {
            "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
            "visionbench_config": config,
            "visionbench_class_names": ["background", "red"],
        },
        ckpt,
    )
    lines: list[str] = []
    result = export_checkpoint(ckpt, tmp_path / "export", parity_images=2, data_dir=str(tmp_path), echo=lines.append)
    assert "a fixed random batch of 2 images (the task's data is not readable here" in lines[0]
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar["input"]["shape"] == ["batch", 3, "height", "width"] and sidecar["void_value"] == 255
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(2)
    for name, (h, w) in {"a.png": (40, 64), "b.png": (70, 30), "c.png": (20, 90)}.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images / name)
    predict(ckpt, images, tmp_path / "ckpt", batch_size=2, figures=False, echo=lambda _: None)
    predict(None, images, tmp_path / "onnx", batch_size=2, figures=False, echo=lambda _: None, model_file=result.model_file)
    assert read_csv(tmp_path / "onnx" / "predictions.csv") == read_csv(tmp_path / "ckpt" / "predictions.csv")
    for name in ("a.png", "b.png", "c.png"):
        masks = [np.asarray(Image.open(tmp_path / where / f"{name}.mask.png")) for where in ("ckpt", "onnx")]
        assert np.array_equal(*masks) and 0 < masks[0].mean() < 1, name


def test_predict_takes_exactly_one_of_a_checkpoint_and_an_exported_file(checkpoint: Path, photos: Path, tmp_path: Path) -> None:
    for given in ({"ckpt_path": None}, {"ckpt_path": checkpoint, "model_file": tmp_path / "x.onnx"}):
        with pytest.raises(ConfigError, match=r"Pass exactly one of ckpt_path=.* and model_file="):
            predict(input_path=photos, output_dir=tmp_path, echo=lambda _: None, **given)  # type: ignore[arg-type]


def test_an_exported_file_without_its_sidecar_names_the_missing_file(tmp_path: Path) -> None:
    shutil.copy(REPO / "pyproject.toml", tmp_path / "net.onnx")  # any file: the sidecar is read first
    with pytest.raises(DataNotFoundError, match=r"net.onnx. has no net.json beside it"):
        predict(None, tmp_path, tmp_path / "out", model_file=tmp_path / "net.onnx", echo=lambda _: None)
