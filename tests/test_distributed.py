"""Exact numbers under DDP: evaluating one checkpoint on 1 and 2 processes (gloo, CPU) gives the
same metrics, on splits whose size is not divisible by the world size.

Runs through the real CLI (``trainer=ddp_cpu``): Lightning's DDP launcher re-runs ``sys.argv``,
so inside pytest it would re-launch pytest itself (see shared/MACHINE.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import SESSION_DIR, TINY, run_cli

pytestmark = pytest.mark.slow

# 11 classes x 49 test images = 539: odd, so a padding DistributedSampler would repeat a sample.
SHAPES = [
    "task=shapes",
    f"paths.data_dir={SESSION_DIR / 'ddp_data'}",
    "task.data.generator.num_classes=11",
    "task.data.generator.per_class=102",
    "task.data.split.test_per_class=49",
]
# 41 validation images, evaluated at full size in padded batches of 4.
SHAPES_SEG = [
    "task=shapes_seg",
    f"paths.data_dir={SESSION_DIR / 'ddp_data'}",
    "task.data.generator.num_train=16",
    "task.data.generator.num_val=41",
]


def _metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


def _best_checkpoint(run_dir: Path) -> Path:
    (best,) = (run_dir / "checkpoints").glob("epoch_*.ckpt")  # the one the run's own test used
    return best


def _test_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k.startswith("test/")}


NAN_ON_RANK_ONE = """
import os
from visionbench.models.cnn import PlainCNN


class NanOnRankOne(PlainCNN):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps = 0

    def forward(self, x):
        out = super().forward(x)
        if self.training:
            self.steps += 1
            if os.environ.get("LOCAL_RANK") == "1" and self.steps > 1:
                out = out * float("nan")
        return out
"""


AUGMENTATION_PROBE = """
import json
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


class AugmentationProbe(Callback):
    '''Writes what each rank trains on first: its augmented images and the dropout mask it draws.'''

    def __init__(self, out_dir):
        self.out_dir = Path(out_dir)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0 and trainer.current_epoch == 0:
            with torch.random.fork_rng():  # look at the stream without moving it: the resumed run has no probe
                dropout = torch.nn.functional.dropout(torch.ones(16)).tolist()
            record = {"images": batch[0].flatten()[:64].tolist(), "dropout": dropout}
            (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
"""


# Trained once (2 epochs on 2 processes, the cached pipeline, the whole test split) for the DDP tests below.
STRAIGHT = [
    *SHAPES,
    "model=cnn",
    "trainer=ddp_cpu",
    *TINY,
    "trainer.limit_train_batches=3",
    "trainer.limit_test_batches=null",
    "trainer.deterministic=true",
    "task.data.pipeline=cached",
    "callbacks.figures=null",
]


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The folder of a 2-process run with the probe (its records sit beside the run folder) and its output."""
    base = tmp_path_factory.mktemp("ddp")
    (base / "probe.py").write_text(AUGMENTATION_PROBE)
    probe = ["+callbacks.probe._target_=probe.AugmentationProbe", f"+callbacks.probe.out_dir={base}"]
    run_dir = base / "straight"
    result = run_cli("src/train.py", *STRAIGHT, *probe, "trainer.max_epochs=2", f"hydra.run.dir={run_dir}", env={"PYTHONPATH": str(base)})
    return run_dir, result.stdout + result.stderr


def test_ranks_train_on_their_own_samples_and_draw_their_own_dropout(straight: tuple[Path, str]) -> None:
    """Each sample's augmentation is drawn from (seed, epoch, index) in the loader (the CPU path), so it
    belongs to the sample, whichever rank reads it; the model's own randomness is the rank's."""
    run_dir, _ = straight
    rank0, rank1 = (json.loads((run_dir.parent / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["images"] != rank1["images"]
    assert rank0["dropout"] != rank1["dropout"]


def test_rank_0_alone_writes_the_run_folder_tensorboard_and_closing_lines(straight: tuple[Path, str]) -> None:
    run_dir, output = straight
    assert output.count(f"TensorBoard: tensorboard --logdir {run_dir}") == 1
    event_files = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    writer_pids = {f.name.split(".")[-2] for f in event_files}  # events.out.tfevents.<time>.<host>.<pid>.<n>
    assert event_files and len(writer_pids) == 1  # one process (rank 0) writes; fit and test share the run
    assert (run_dir / "train_ddp_process_1.log").is_file()  # rank 1 really ran, and logged here
    assert sorted(p.name for p in run_dir.parent.iterdir() if p.is_dir() and p.name != "__pycache__") == ["straight"]


def test_classification_accuracy_is_identical_on_one_and_two_processes(straight: tuple[Path, str], tmp_path: Path) -> None:
    """The run tested its best checkpoint on 2 processes; the same checkpoint on 1 gives the same numbers."""
    run_dir, _ = straight
    run_cli(
        "src/eval.py",
        f"ckpt_path={_best_checkpoint(run_dir)}",
        *SHAPES,
        "task.data.num_workers=0",
        "task.data.batch_size=4",
        "trainer=cpu",
        f"hydra.run.dir={tmp_path}",
    )
    one, two = _test_metrics(_metrics(tmp_path)), _test_metrics(_metrics(run_dir))
    for key in ("test/acc", "test/acc_macro", "test/acc_top5"):
        assert two[key] == one[key], key
    assert two["test/loss"] == pytest.approx(one["test/loss"], rel=1e-6)  # float sums in another order


def test_resuming_on_two_processes_equals_training_straight(straight: tuple[Path, str], tmp_path: Path) -> None:
    run_dir, _ = straight
    run_cli("src/train.py", *STRAIGHT, "trainer.max_epochs=1", "test=false", f"hydra.run.dir={tmp_path}")
    run_cli(
        "src/train.py",
        *STRAIGHT,
        "trainer.max_epochs=2",
        f"ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}",
        f"hydra.run.dir={tmp_path}",
    )
    straight_metrics, again = _metrics(run_dir), _metrics(tmp_path)
    volatile = {"wall_time_s", "perf/train_images_per_s", "perf/train_tflops", "perf/train_mfu", "perf/peak_tflops"}
    assert {k: v for k, v in again.items() if k not in volatile} == {k: v for k, v in straight_metrics.items() if k not in volatile}
    weights = [torch.load(d / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for d in (run_dir, tmp_path)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_segmentation_confusion_matrix_metrics_are_identical_on_one_and_two_processes(tmp_path: Path) -> None:
    """Trained and tested (whole split) on 1 process; its best checkpoint evaluated on 2."""
    train_dir = tmp_path / "train"
    run_cli(
        "src/train.py",
        *SHAPES_SEG,
        "model=fcn",
        *TINY,
        "trainer.limit_val_batches=null",
        "trainer.limit_test_batches=null",
        f"hydra.run.dir={train_dir}",
    )
    two = run_cli(
        "src/eval.py",
        f"ckpt_path={_best_checkpoint(train_dir)}",
        *SHAPES_SEG,
        "task.data.num_workers=0",
        "task.data.batch_size=4",
        "trainer=ddp_cpu",
        f"hydra.run.dir={tmp_path / 'two'}",
    )
    assert (tmp_path / "two" / "train_ddp_process_1.log").exists(), two.stderr[-2000:]  # rank 1 really ran
    one, two_metrics = _test_metrics(_metrics(train_dir)), _test_metrics(_metrics(tmp_path / "two"))
    iou_keys = [k for k in one if k.startswith("test/iou/")]
    assert iou_keys, one
    for key in ("test/miou", "test/pixel_acc", "test/class_acc", *iou_keys):
        assert two_metrics[key] == one[key], key


def test_a_ddp_sweep_keeps_each_jobs_processes_apart_and_a_nan_on_one_rank_ends_it_with_the_message(tmp_path: Path) -> None:
    """Job 0 trains on 2 processes into its own folder. In job 1, rank 1 alone diverges at its second
    step: both ranks stop together with the paragraph (instead of rank 0 failing in the gradient
    all-reduce under gloo, or waiting for a timeout under NCCL). In ``-m`` a failed job normally fails
    alone; a DDP job exits instead (its other ranks may be waiting in a collective), so the sweep
    stops there: job 2 never starts, and nothing hangs."""
    (tmp_path / "nan_net.py").write_text(NAN_ON_RANK_ONE)
    sweep = tmp_path / "sweep"
    result = run_cli(
        "src/train.py",
        "-m",
        *SHAPES,
        "model=cnn",
        "model.net._target_=visionbench.models.cnn.PlainCNN,nan_net.NanOnRankOne,visionbench.models.cnn.PlainCNN",
        "trainer=ddp_cpu",
        *TINY,
        "trainer.limit_train_batches=3",
        "callbacks.figures=null",
        f"hydra.sweep.dir={sweep}",
        check=False,
        timeout=300,
        env={"PYTHONPATH": str(tmp_path)},
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert (sweep / "0" / "metrics.json").is_file()
    assert (sweep / "0" / "train_ddp_process_1.log").is_file()  # rank 1 of this job logged here
    assert "Traceback" not in result.stderr and "Connection closed" not in result.stderr, result.stderr[-3000:]
    assert "error: The training loss became nan at epoch 0, batch 1" in result.stderr  # rank 1
    assert "error: The training loss became non-finite on another process at epoch 0, batch 1" in result.stderr  # rank 0
    assert (sweep / "1").is_dir() and not (sweep / "1" / "metrics.json").exists() and not (sweep / "2").exists()
