"""predict.py: a checkpoint alone rebuilds the network; images of any mode and size are predicted
in batches into predictions.csv under names that never collide, non-images are listed and counted
(none readable is an error), and the preprocessing is the evaluation transform."""

from __future__ import annotations

import csv
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
from visionbench.cli import report_errors
from visionbench.errors import ConfigError
from visionbench.predict import default_output_dir, input_files, load_predictor, predict


@pytest.fixture(scope="session")
def checkpoint(multirun: Path) -> Path:
    return multirun / "0" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RGB JPEG and a PNG of the same stem, odd-sized grayscale PNG, RGBA and CMYK in a subfolder,
    a text file and a hidden file."""
    root = tmp_path_factory.mktemp("images")
    (root / "sub").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(root / "photo.jpg")
    Image.fromarray(rng.integers(0, 256, (60, 60, 3), dtype=np.uint8)).save(root / "photo.png")
    Image.fromarray(rng.integers(0, 256, (33, 77), dtype=np.uint8)).save(root / "gray.png")
    Image.new("RGBA", (64, 40), (255, 0, 0, 128)).save(root / "sub" / "alpha.png")
    Image.new("CMYK", (50, 50), (255, 0, 0, 0)).save(root / "sub" / "print.jpg")
    (root / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\0\1")
    return root


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_cli_predicts_a_folder_in_batches_into_a_csv_and_lists_the_non_image(checkpoint: Path, images: Path, tmp_path: Path) -> None:
    """photo.jpg and photo.png both keep their figure; batches of 2 cross the skipped file; stdout is a summary."""
    out = run_cli("src/predict.py", f"ckpt_path={checkpoint}", f"input={images}", f"output_dir={tmp_path}", "top_k=3", "batch_size=2").stdout
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")) == [
        "gray.png.png", "photo.jpg.png", "photo.png.png", "sub/alpha.png.png", "sub/print.jpg.png"
    ]
    rows = read_csv(tmp_path / "predictions.csv")
    assert [r["path"] for r in rows] == ["gray.png", "photo.jpg", "photo.png", "sub/alpha.png", "sub/print.jpg"]
    assert list(rows[0]) == ["path", "predicted", "probability", "class_2", "probability_2", "class_3", "probability_3"]
    assert all(1 >= float(r["probability"]) >= float(r["probability_2"]) >= float(r["probability_3"]) for r in rows)
    assert out.splitlines() == [
        f"{images / 'notes.txt'}: skipped, not an image (unrecognised format)",
        f"5 image(s) predicted, 1 file(s) skipped (not readable as images, listed above). Per-image results: "
        f"{tmp_path / 'predictions.csv'}; figures in {tmp_path}",
    ]


def test_predict_one_image_prints_its_ranking_and_writes_into_the_run_folder(checkpoint: Path, images: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(checkpoint.parent.parent, run, ignore=shutil.ignore_patterns("tensorboard"))
    lines: list[str] = []
    result = predict(run / "checkpoints" / "last.ckpt", images / "photo.jpg", top_k=2, echo=lines.append)
    assert result.predicted == [images / "photo.jpg"] and not result.skipped
    assert (run / "predictions" / "photo.jpg.png").stat().st_size > 0
    assert read_csv(run / "predictions" / "predictions.csv")[0]["path"] == "photo.jpg"
    assert default_output_dir(Path("r/checkpoints/last.ckpt")) == Path("r/predictions")
    assert lines[0].count("\n") == 2 and len(lines) == 2  # path line + top-2, then the summary


def test_no_readable_image_is_an_error_naming_the_files_and_writes_nothing(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # fmt: skip
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "empty.jpg").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        report_errors(lambda: predict(checkpoint, tmp_path / "in" / "empty.jpg", tmp_path / "out", echo=lambda _: None))
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    assert f"None of the 1 file(s) of input='{tmp_path / 'in' / 'empty.jpg'}'" in error and "(zero-byte file)" in error
    assert "Traceback" not in error and not (tmp_path / "out").exists()


def test_figures_false_writes_only_the_csv(checkpoint: Path, images: Path, tmp_path: Path) -> None:
    result = predict(checkpoint, images, tmp_path, batch_size=3, figures=False, echo=lambda _: None)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["predictions.csv"] and len(result.rows) == 5


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
    np.testing.assert_allclose(predictor.classify([load_rgb(val.root / val.entries[0].path)])[0], expected, rtol=1e-5, atol=1e-6)


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
    mask = Image.open(out / "alpha.png.mask.png")
    assert mask.mode == "P" and mask.size == (64, 40)
    assert np.unique(np.asarray(mask)).tolist() == [1]  # pure red everywhere
    assert Image.open(out / "alpha.png.overlay.png").size == (64, 40)
    assert np.unique(np.asarray(Image.open(out / "print.jpg.mask.png"))).tolist() == [0]  # CMYK cyan: no red
    assert read_csv(out / "predictions.csv") == [
        {"path": "alpha.png", "mask": "alpha.png.mask.png", "fraction_background": "0.0", "fraction_red": "1.0"},
        {"path": "print.jpg", "mask": "print.jpg.mask.png", "fraction_background": "1.0", "fraction_red": "0.0"},
    ]
    lines: list[str] = []
    predict(tmp_path / "seg.ckpt", images / "sub" / "alpha.png", tmp_path / "one", echo=lines.append)
    assert lines[0].splitlines()[1:] == [f"  {'red':<20} 100.0% of pixels"]  # classes absent from the mask are not listed


def test_an_output_folder_inside_the_input_folder_is_not_read_back_as_input(images: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    shutil.copytree(images, folder)
    (folder / "predictions").mkdir()
    shutil.copy(folder / "photo.jpg", folder / "predictions" / "photo.jpg.png")  # an earlier run's figure
    assert folder / "predictions" / "photo.jpg.png" not in input_files(folder, folder / "predictions")
    assert folder / "sub" / "alpha.png" in input_files(folder, folder / "predictions")
    assert input_files(folder, folder) == input_files(folder, tmp_path) == input_files(folder)  # outputs beside or above: all inputs


@pytest.mark.parametrize(("setting", "value"), [("top_k", 0), ("batch_size", 0)])
def test_settings_below_one_are_config_errors(checkpoint: Path, images: Path, tmp_path: Path, setting: str, value: int) -> None:
    with pytest.raises(ConfigError, match=f"{setting}={value}"):
        predict(checkpoint, images, tmp_path, **{setting: value}, echo=lambda _: None)
