"""predict.py: a checkpoint alone rebuilds the task; images of any mode and size are predicted
in batches by Trainer.predict into predictions.csv under names that never collide, non-images are
listed and counted (none readable is an error), and the preprocessing is the evaluation transform."""

from __future__ import annotations

import csv
import shutil
import zlib
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import BasePredictionWriter
from omegaconf import open_dict
from PIL import Image
from torch import Tensor, nn

from conftest import TINY, run_cli
from visionbench.checkpoint import load_checkpoint
from visionbench.cli import report_errors
from visionbench.data.classification import ClassFolderDataModule
from visionbench.data.predict_files import input_files, predict_loader
from visionbench.errors import ConfigError
from visionbench.masks import voc_palette
from visionbench.predict import default_output_dir, predict
from visionbench.run import train
from visionbench.tasks.base import VisionTask
from visionbench.tasks.classification import ClassificationTask


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


@pytest.mark.slow
def test_cli_predicts_a_folder_in_batches_into_a_csv_and_lists_the_non_image(checkpoint: Path, images: Path, tmp_path: Path) -> None:
    """photo.jpg and photo.png both keep their figure; batches of 2 cross the skipped file; stdout is a
    summary, and stderr (not a terminal here, as in a log file) ends with a plain progress line."""
    process = run_cli("src/predict.py", f"ckpt_path={checkpoint}", f"input={images}", f"output_dir={tmp_path}", "top_k=3", "batch_size=2")
    out = process.stdout
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")) == [
        "gray.png.png",
        "photo.jpg.png",
        "photo.png.png",
        "sub/alpha.png.png",
        "sub/print.jpg.png",
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
    assert process.stderr.splitlines()[-1].startswith("predicting 6/6 files | elapsed ")


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
) -> None:
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
    task = VisionTask.from_checkpoint(checkpoint)
    config = task.run_config["task"]["data"]
    data = ClassFolderDataModule(config["root"], image_size=config["image_size"], split=config["split"])
    val = data.dataset("val")
    x, _ = val[0]
    batch = next(iter(predict_loader([val.items.root / val.items.paths[0]], val.items.root, "classification", config, batch_size=1)))
    torch.testing.assert_close(batch.images[0], x)
    with torch.no_grad():
        expected = task.net(x.unsqueeze(0)).softmax(1)[0].sort(descending=True, stable=True)
        ranking = task.predict_step(batch, 0)
    assert task.class_names == data.class_names
    assert ranking.classes[0].tolist() == expected.indices.tolist()
    torch.testing.assert_close(ranking.probabilities[0], expected.values, rtol=1e-5, atol=1e-6)


def test_prediction_is_trainer_predict_with_a_prediction_writer(
    checkpoint: Path, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[L.Trainer, L.LightningModule]] = []
    original = L.Trainer.predict

    def spy(trainer: L.Trainer, model: L.LightningModule, **kwargs: object) -> object:
        calls.append((trainer, model))
        return original(trainer, model, **kwargs)

    monkeypatch.setattr(L.Trainer, "predict", spy)
    predict(checkpoint, images / "photo.jpg", tmp_path, echo=lambda _: None)
    [(trainer, model)] = calls
    assert isinstance(model, ClassificationTask) and not model.training
    assert any(isinstance(c, BasePredictionWriter) for c in trainer.callbacks)


def test_class_names_stored_in_the_checkpoint_are_used(checkpoint: Path, tmp_path: Path) -> None:
    content = torch.load(checkpoint, weights_only=True)
    names = [f"class {i}" for i in range(len(VisionTask.from_checkpoint(checkpoint).class_names))]
    content["visionbench_class_names"] = names
    torch.save(content, tmp_path / "named.ckpt")
    assert VisionTask.from_checkpoint(tmp_path / "named.ckpt").class_names == names


def test_a_loaded_task_is_for_inference_only_and_builds_no_optimizer(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_optimizer(*args: object, **kwargs: object) -> None:
        raise AssertionError("loading a task for inference built an optimizer")

    monkeypatch.setattr(torch.optim.Optimizer, "__init__", no_optimizer)
    task = VisionTask.from_checkpoint(checkpoint)
    assert not task.training
    with pytest.raises(ConfigError, match="built for inference"):
        task.configure_optimizers()


def test_an_old_checkpoint_without_class_names_reads_them_from_its_data_or_says_how(checkpoint: Path, tmp_path: Path) -> None:
    content = torch.load(checkpoint, weights_only=True)
    names = VisionTask.from_checkpoint(checkpoint).class_names
    del content["visionbench_class_names"]
    torch.save(content, tmp_path / "old.ckpt")
    assert VisionTask.from_checkpoint(tmp_path / "old.ckpt").class_names == names  # its training data is still there
    data = content["visionbench_config"]["task"]["data"]
    data.update(root=str(tmp_path / "moved"), generator=None)  # real data that moved, not built-in data made anew
    torch.save(content, tmp_path / "moved.ckpt")
    with pytest.raises(ConfigError, match="before checkpoints carried their class names") as error:
        VisionTask.from_checkpoint(tmp_path / "moved.ckpt")
    assert str(tmp_path / "moved") in str(error.value)


def test_a_checkpoint_that_names_the_data_classes_at_their_old_places_still_loads(checkpoint: Path, tmp_path: Path) -> None:
    content = torch.load(checkpoint, weights_only=True)
    data = content["visionbench_config"]["task"]["data"]
    data["_target_"] = "visionbench.data.simpsons.SimpsonsDataModule"  # before the data rooms
    data["generator"]["_target_"] = "visionbench.data.shapes.generate_shapes"
    torch.save(content, tmp_path / "old.ckpt")
    moved = load_checkpoint(tmp_path / "old.ckpt")["visionbench_config"]["task"]["data"]
    assert isinstance(instantiate(moved, _convert_="all"), ClassFolderDataModule)
    assert VisionTask.from_checkpoint(tmp_path / "old.ckpt").class_names == VisionTask.from_checkpoint(checkpoint).class_names


def test_a_checkpoint_without_run_config_is_a_config_error(tmp_path: Path) -> None:
    torch.save({"state_dict": {}}, tmp_path / "plain.ckpt")
    with pytest.raises(ConfigError, match="visionbench_config"):
        VisionTask.from_checkpoint(tmp_path / "plain.ckpt")


class TinySegNet(nn.Module):
    """Class 1 wherever the red channel is above the mean: enough to check masks end to end."""

    def __init__(self, num_classes: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


def save_segmentation_checkpoint(path: Path, net: TinySegNet, module: dict[str, object] | None = None) -> Path:
    """A checkpoint as src/train.py writes it, for a network defined here."""
    checkpoint = {
        "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
        "visionbench_class_names": ["background", "red"],
        "visionbench_config": {
            "model": {"net": {"_target_": f"{__name__}.TinySegNet", "kernel_size": net.conv.kernel_size[0]}},
            "task": {
                "kind": "segmentation",
                "data": {"size_divisor": 32},
                "module": {"_target_": "visionbench.tasks.segmentation.SegmentationTask", "eval_mode": "whole", **(module or {})},
            },
            "optimizer": {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1},
        },
    }
    torch.save(checkpoint, path)
    return path


def test_segmentation_checkpoint_writes_a_palette_mask_and_a_figure_in_vocs_colours(images: Path, tmp_path: Path) -> None:
    """A checkpoint whose config has no task.module.palette (written before it existed) draws in VOC's colours."""
    net = TinySegNet(2)
    with torch.no_grad():
        net.conv.weight.zero_()
        net.conv.bias.zero_()
        net.conv.weight[1, 0] = 1.0  # logit of class 1 = normalised red channel
    save_segmentation_checkpoint(tmp_path / "seg.ckpt", net)
    out = tmp_path / "out"
    predict(tmp_path / "seg.ckpt", images / "sub", out, echo=lambda _: None)
    mask = Image.open(out / "alpha.png.mask.png")
    assert mask.mode == "P" and mask.size == (64, 40) and mask.getpalette() == voc_palette()
    assert np.unique(np.asarray(mask)).tolist() == [1]  # pure red everywhere
    figure = np.asarray(Image.open(out / "alpha.png.png").convert("RGB")).reshape(-1, 3)
    assert (figure == [128, 0, 0]).all(axis=1).sum() > 64 * 40  # VOC's class 1, the prediction panel drawn larger than the image
    assert np.unique(np.asarray(Image.open(out / "print.jpg.mask.png"))).tolist() == [0]  # CMYK cyan: no red
    assert read_csv(out / "predictions.csv") == [
        {"path": "alpha.png", "mask": "alpha.png.mask.png", "fraction_background": "0.0", "fraction_red": "1.0"},
        {"path": "print.jpg", "mask": "print.jpg.mask.png", "fraction_background": "1.0", "fraction_red": "0.0"},
    ]
    lines: list[str] = []
    predict(tmp_path / "seg.ckpt", images / "sub" / "alpha.png", tmp_path / "one", echo=lines.append)
    assert lines[0].splitlines()[1:] == [f"  {'red':<20} 100.0% of pixels"]  # classes absent from the mask are not listed


@pytest.mark.parametrize("eval_mode", ["whole", "slide"])
def test_a_folder_of_mixed_sizes_predicts_each_mask_as_when_predicted_alone(tmp_path: Path, eval_mode: str) -> None:
    """Images of three padded sizes, listed out of size order, and a broken file between them: batches
    group one padded size (a 3x3 network sees the padding), while the CSV and the skipped list keep
    the listing's order."""
    torch.manual_seed(0)
    window = {"window": [24, 24], "stride": [16, 16]} if eval_mode == "slide" else {}
    checkpoint = save_segmentation_checkpoint(tmp_path / "seg.ckpt", TinySegNet(2, kernel_size=3), {"eval_mode": eval_mode, **window})
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name, (h, w) in {"a.png": (40, 64), "b.png": (70, 30), "c.png": (33, 50), "e.png": (64, 64), "f.png": (20, 90)}.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)
    (folder / "d.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    together = predict(checkpoint, folder, tmp_path / "together", batch_size=2, figures=False, echo=lambda _: None)
    assert [r["path"] for r in read_csv(tmp_path / "together" / "predictions.csv")] == ["a.png", "b.png", "c.png", "e.png", "f.png"]
    assert [p.name for p, _ in together.skipped] == ["d.png"]
    for name in ("a.png", "b.png", "c.png", "e.png", "f.png"):
        predict(checkpoint, folder / name, tmp_path / "alone", figures=False, echo=lambda _: None)
        alone = np.asarray(Image.open(tmp_path / "alone" / f"{name}.mask.png"))
        assert np.array_equal(np.asarray(Image.open(tmp_path / "together" / f"{name}.mask.png")), alone), name


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


def write_rgb(path: Path, height: int, width: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(path.as_posix().encode()))  # distinct content: the split drops duplicates
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def write_index_mask(path: Path, height: int, width: int, num_classes: int, void: int) -> None:
    """Column stripes of every class under a band of void rows, as a grayscale index PNG."""
    mask = (np.arange(width) * num_classes // width).astype(np.uint8)[None].repeat(height, 0)
    mask[:3] = void
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask, mode="L").save(path)


def tiny_dataset(task: str, root: Path) -> tuple[list[str], Path]:
    """The overrides that train ``task`` on a tiny dataset written in its on-disk layout, and a folder to predict."""
    if task == "folder":  # <root>/<class>/<image>
        for name in ("cat", "dog"):
            for i in range(8):
                write_rgb(root / name / f"{i}.png", 20 + i, 24)
        return ["model=cnn", "task.data.image_size=32", "task.data.split.test_per_class=2"], root / "dog"
    if task == "seg_folder":  # images/<split>/<name>.jpg + masks/<split>/<name>.png
        for split, n in (("train", 4), ("val", 2)):
            for i in range(n):
                write_rgb(root / "images" / split / f"{i}.jpg", 30 + 4 * i, 40)
                write_index_mask(root / "masks" / split / f"{i}.png", 30 + 4 * i, 40, 2, 255)
        return ["model=fcn", "task.data.class_names=[background,road]", "task.data.crop=[32,32]"], root / "images" / "val"
    for split, n in (("train", 4), ("val", 2), ("test", 2)):  # camvid: <split>/<name>.png + <split>annot/<name>.png, 11 = void
        for i in range(n):
            write_rgb(root / split / f"{split}{i}.png", 36, 52)
            write_index_mask(root / f"{split}annot" / f"{split}{i}.png", 36, 52, 11, 11)
    return ["model=fcn", "task.data.crop=[32,48]"], root / "val"


@pytest.mark.slow
@pytest.mark.parametrize("task", ["folder", "seg_folder", "camvid"])
def test_checkpoints_of_bring_your_own_data_tasks_predict(compose_cfg, tmp_path: Path, task: str) -> None:
    overrides, inputs = tiny_dataset(task, tmp_path / "data")
    cfg = compose_cfg(
        [
            f"task={task}",
            f"task.data.root={tmp_path / 'data'}",
            *overrides,
            *TINY,
            "test=false",
            "callbacks.figures=null",
            "callbacks.model_checkpoint=null",
            "callbacks.model_summary=null",
        ]
    )
    with open_dict(cfg):
        del cfg["hydra"]  # as @hydra.main hands it over
    train(cfg)
    result = predict(tmp_path / "checkpoints" / "last.ckpt", inputs, tmp_path / "predictions", batch_size=3, echo=lambda _: None)
    assert result.predicted == sorted(inputs.iterdir()) and not result.skipped
    assert [r["path"] for r in read_csv(tmp_path / "predictions" / "predictions.csv")] == [p.name for p in result.predicted]
