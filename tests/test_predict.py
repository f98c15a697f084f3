"""predict.py: a checkpoint alone rebuilds the network; images of any mode and size are predicted,
non-images are reported and counted, and the preprocessing is the evaluation transform."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from conftest import run_cli
from torch import Tensor, nn

from visionbench.data.images import load_rgb
from visionbench.data.simpsons import SimpsonsDataModule
from visionbench.errors import ConfigError
from visionbench.predict import default_output_dir, load_predictor, predict


@pytest.fixture(scope="session")
def checkpoint(multirun: Path) -> Path:
    return multirun / "0" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RGB JPEG, odd-sized grayscale PNG, RGBA and CMYK in a subfolder, a text file and a hidden file."""
    root = tmp_path_factory.mktemp("images")
    (root / "sub").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(root / "photo.jpg")
    Image.fromarray(rng.integers(0, 256, (33, 77), dtype=np.uint8)).save(root / "gray.png")
    Image.new("RGBA", (64, 40), (255, 0, 0, 128)).save(root / "sub" / "alpha.png")
    Image.new("CMYK", (50, 50), (255, 0, 0, 0)).save(root / "sub" / "print.jpg")
    (root / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\0\1")
    return root


def test_cli_predicts_a_folder_of_mixed_modes_and_reports_the_non_image(checkpoint: Path, images: Path, tmp_path: Path) -> None:
    out = run_cli("src/predict.py", f"ckpt_path={checkpoint}", f"input={images}", f"output_dir={tmp_path}", "top_k=3").stdout
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")) == [
        "gray.png", "photo.png", "sub/alpha.png", "sub/print.png"
    ]
    assert f"{images / 'notes.txt'}: skipped, not an image" in out and ".DS_Store" not in out
    assert "4 image(s) predicted, 1 file(s) skipped" in out
    assert out.count("  3. ") == 4 and "  4. " not in out  # top-3 per image


def test_predict_one_image_writes_its_figure_into_the_run_folder(checkpoint: Path, images: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(checkpoint.parent.parent, run, ignore=shutil.ignore_patterns("tensorboard"))
    lines: list[str] = []
    result = predict(run / "checkpoints" / "last.ckpt", images / "photo.jpg", top_k=2, echo=lines.append)
    assert result.predicted == [images / "photo.jpg"] and not result.skipped
    assert (run / "predictions" / "photo.png").stat().st_size > 0
    assert default_output_dir(Path("r/checkpoints/last.ckpt")) == Path("r/predictions")
    assert lines[0].count("\n") == 2  # path line + top-2


def test_predict_preprocessing_equals_the_validation_dataset(checkpoint: Path) -> None:
    predictor = load_predictor(checkpoint)
    config = torch.load(checkpoint, weights_only=True)["visionbench_config"]
    data = SimpsonsDataModule(config["task"]["data"]["root"], image_size=config["task"]["data"]["image_size"],
                              split=config["task"]["data"]["split"])  # fmt: skip
    val = data.split_dataset("val")
    x, label = val[0]
    with torch.no_grad():
        expected = predictor.net(x.unsqueeze(0)).softmax(1)[0].numpy()
    assert predictor.class_names == data.class_names
    np.testing.assert_allclose(predictor.classify(load_rgb(val.root / val.entries[0].path)), expected, rtol=1e-5, atol=1e-6)


def test_class_names_stored_in_the_checkpoint_are_used(checkpoint: Path, tmp_path: Path) -> None:
    content = torch.load(checkpoint, weights_only=True)
    names = [f"class {i}" for i in range(len(load_predictor(checkpoint).class_names))]
    content["visionbench_class_names"] = names
    torch.save(content, tmp_path / "named.ckpt")
    assert load_predictor(tmp_path / "named.ckpt").class_names == names


def test_a_checkpoint_without_run_config_is_a_config_error(tmp_path: Path) -> None:
    torch.save({"state_dict": {}}, tmp_path / "plain.ckpt")
    with pytest.raises(ConfigError, match="visionbench_config"):
        load_predictor(tmp_path / "plain.ckpt")


class TinySegNet(nn.Module):
    """Class 1 wherever the red channel is above the mean: enough to check masks end to end."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


def test_segmentation_checkpoint_writes_a_palette_mask_and_an_overlay(images: Path, tmp_path: Path) -> None:
    net = TinySegNet(2)
    with torch.no_grad():
        net.conv.weight.zero_()
        net.conv.bias.zero_()
        net.conv.weight[1, 0] = 1.0  # logit of class 1 = normalised red channel
    checkpoint = {
        "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
        "visionbench_class_names": ["background", "red"],
        "visionbench_config": {
            "model": {"net": {"_target_": f"{__name__}.TinySegNet"}},
            "task": {"kind": "segmentation", "data": {"size_divisor": 32}, "module": {"eval_mode": "whole"}},
        },
    }
    torch.save(checkpoint, tmp_path / "seg.ckpt")
    out = tmp_path / "out"
    predict(tmp_path / "seg.ckpt", images / "sub", out, echo=lambda _: None)
    mask = Image.open(out / "alpha_mask.png")
    assert mask.mode == "P" and mask.size == (64, 40)
    assert np.unique(np.asarray(mask)).tolist() == [1]  # pure red everywhere
    assert Image.open(out / "alpha_overlay.png").size == (64, 40)
    assert np.unique(np.asarray(Image.open(out / "print_mask.png"))).tolist() == [0]  # CMYK cyan: no red
