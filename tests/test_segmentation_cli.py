"""The real CLI on the built-in shapes_seg data: every segmentation model runs, mismatches fail cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from visionbench.cli import REPO_ROOT
from visionbench.data.shapes_seg import generate_shapes_seg

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def seg_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small shapes_seg dataset generated once per session; the CLI finds it and reuses it."""
    data_dir = tmp_path_factory.mktemp("seg_data")
    generate_shapes_seg(data_dir / "shapes_seg", num_train=8, num_val=4, log=lambda _: None)
    return data_dir


def train_cli(run_dir: Path, data_dir: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(REPO_ROOT / "src" / "train.py"), f"hydra.run.dir={run_dir}", f"paths.data_dir={data_dir}", *overrides]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)


@pytest.mark.parametrize("model", ["fcn", "fcn8s", "fpn"])
def test_every_segmentation_model_trains_validates_and_tests_through_the_cli(model: str, seg_data_dir: Path, tmp_path: Path) -> None:
    result = train_cli(tmp_path, seg_data_dir, "task=shapes_seg", f"model={model}", "debug=fdr", "task.data.batch_size=2")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= metrics["test/miou"] <= 1.0 and 0.0 <= metrics["test/pixel_acc"] <= 1.0
    assert "val/miou_best" in metrics


@pytest.mark.parametrize(
    ("model", "task", "overrides"),
    [
        # run.py prepares the data before checking the model, so keep the classification data tiny.
        ("fcn", "shapes", ["task.data.generator.num_classes=2", "task.data.generator.per_class=3", "task.data.split.min_images=1", "task.data.split.test_per_class=1"]),
        ("cnn", "shapes_seg", []),
    ],
)
def test_a_model_of_another_task_kind_fails_with_the_config_error_paragraph(
    model: str, task: str, overrides: list[str], seg_data_dir: Path, tmp_path: Path
) -> None:
    result = train_cli(tmp_path, seg_data_dir, f"task={task}", f"model={model}", "debug=fdr", *overrides)
    assert result.returncode == 1
    assert f"error: model={model} " in result.stderr and f"but task={task} is a" in result.stderr
    assert "Traceback" not in result.stderr
