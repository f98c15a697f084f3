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
    "task=shapes", f"paths.data_dir={SESSION_DIR / 'ddp_data'}", "task.data.generator.num_classes=11",
    "task.data.generator.per_class=102", "task.data.split.test_per_class=49",
]  # fmt: skip
# 41 validation images, evaluated at full size in padded batches of 4.
SHAPES_SEG = [
    "task=shapes_seg", f"paths.data_dir={SESSION_DIR / 'ddp_data'}", "task.data.generator.num_train=16",
    "task.data.generator.num_val=41",
]  # fmt: skip


def _metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


def _evaluate_on_1_and_2_processes(tmp_path: Path, task: list[str], model: str) -> tuple[dict[str, float], dict[str, float]]:
    train_dir = tmp_path / "train"
    run_cli("src/train.py", *task, f"model={model}", *TINY, "trainer.limit_val_batches=null", f"hydra.run.dir={train_dir}")
    ckpt = train_dir / "checkpoints" / "last.ckpt"
    common = [f"ckpt_path={ckpt}", *task, "task.data.num_workers=0", "task.data.batch_size=4"]
    run_cli("src/eval.py", *common, "trainer=cpu", f"hydra.run.dir={tmp_path / 'one'}")
    two = run_cli("src/eval.py", *common, "trainer=ddp_cpu", f"hydra.run.dir={tmp_path / 'two'}")
    assert (tmp_path / "two" / "train_ddp_process_1.log").exists(), two.stderr[-2000:]  # rank 1 really ran
    return _metrics(tmp_path / "one"), _metrics(tmp_path / "two")


def test_classification_accuracy_is_identical_on_one_and_two_processes(tmp_path: Path) -> None:
    one, two = _evaluate_on_1_and_2_processes(tmp_path, SHAPES, "cnn")
    for key in ("test/acc", "test/acc_macro", "test/acc_top5"):
        assert two[key] == one[key], key
    assert two["test/loss"] == pytest.approx(one["test/loss"], rel=1e-6)  # float sums in another order


def test_segmentation_confusion_matrix_metrics_are_identical_on_one_and_two_processes(tmp_path: Path) -> None:
    one, two = _evaluate_on_1_and_2_processes(tmp_path, SHAPES_SEG, "fcn")
    iou_keys = [k for k in one if k.startswith("test/iou/")]
    assert iou_keys, one
    for key in ("test/miou", "test/pixel_acc", *iou_keys):
        assert two[key] == one[key], key


def test_multirun_with_ddp_cpu_keeps_each_jobs_processes_in_its_own_folder(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run_cli("src/train.py", "-m", *SHAPES, "model=cnn,resnet_small", "trainer=ddp_cpu", *TINY, f"hydra.sweep.dir={sweep}")
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    for job in jobs:
        assert (sweep / job / "metrics.json").is_file()
        assert (sweep / job / "train_ddp_process_1.log").is_file()  # rank 1 of this job logged here


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


def test_a_nan_loss_on_one_rank_stops_every_rank_with_the_message(tmp_path: Path) -> None:
    """Rank 1 alone diverges at its second step: both ranks stop together with the paragraph,
    instead of rank 0 failing in the gradient all-reduce (gloo) or waiting for a timeout (NCCL)."""
    (tmp_path / "nan_net.py").write_text(NAN_ON_RANK_ONE)
    result = run_cli(
        "src/train.py", *SHAPES, "model=cnn", "model.net._target_=nan_net.NanOnRankOne", "trainer=ddp_cpu", *TINY,
        "trainer.limit_train_batches=3", "callbacks.figures=null", f"hydra.run.dir={tmp_path / 'run'}",
        check=False, timeout=300, env={"PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Connection closed" not in result.stderr, result.stderr[-3000:]
    assert "error: The training loss became nan at epoch 0, batch 1" in result.stderr  # rank 1
    assert "error: The training loss became non-finite on another process at epoch 0, batch 1" in result.stderr  # rank 0


def test_a_failing_ddp_job_ends_its_sweep_instead_of_leaving_ranks_waiting(tmp_path: Path) -> None:
    """In ``-m`` a failed job normally fails alone; a DDP job exits instead (its other ranks may be
    waiting in a collective), so the sweep stops at it, with the message and without hanging."""
    (tmp_path / "nan_net.py").write_text(NAN_ON_RANK_ONE)
    sweep = tmp_path / "sweep"
    result = run_cli(
        "src/train.py", "-m", *SHAPES, "model=cnn", "model.net._target_=nan_net.NanOnRankOne,visionbench.models.cnn.PlainCNN",
        "trainer=ddp_cpu", *TINY, "trainer.limit_train_batches=3", "callbacks.figures=null", f"hydra.sweep.dir={sweep}",
        check=False, timeout=300, env={"PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    assert "error: The training loss became nan at epoch 0, batch 1" in result.stderr
    assert (sweep / "0").is_dir() and not (sweep / "1").exists()



AUGMENTATION_PROBE = """
import json
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


class AugmentationProbe(Callback):
    '''Writes what each rank drew for its first training batch: augmentation parameters and a dropout mask.'''

    def __init__(self, out_dir):
        self.out_dir = Path(out_dir)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0 and trainer.current_epoch == 0:
            params = trainer.datamodule.batch_transform.last_params
            with torch.random.fork_rng():  # look at the stream without moving it: the resumed run has no probe
                dropout = torch.nn.functional.dropout(torch.ones(16)).tolist()
            record = {"brightness": params.brightness.tolist(), "dropout": dropout}
            (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
"""


def test_ranks_draw_their_own_augmentation_and_resuming_on_two_processes_equals_training_straight(tmp_path: Path) -> None:
    """Also: one run folder, written by rank 0 alone (TensorBoard, the closing lines)."""
    (tmp_path / "probe.py").write_text(AUGMENTATION_PROBE)
    common = [
        *SHAPES, "model=cnn", "trainer=ddp_cpu", *TINY, "trainer.limit_train_batches=3", "trainer.deterministic=true",
        "task.data.pipeline=cached", "callbacks.figures=null",
    ]  # fmt: skip
    probe = ["+callbacks.probe._target_=probe.AugmentationProbe", f"+callbacks.probe.out_dir={tmp_path}"]
    env = {"PYTHONPATH": str(tmp_path)}
    run_dir = tmp_path / "straight"
    result = run_cli("src/train.py", *common, *probe, "trainer.max_epochs=2", f"hydra.run.dir={run_dir}", env=env)
    assert (result.stdout + result.stderr).count(f"TensorBoard: tensorboard --logdir {run_dir}") == 1  # rank 0 alone
    event_files = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    writer_pids = {f.name.split(".")[-2] for f in event_files}  # events.out.tfevents.<time>.<host>.<pid>.<n>
    assert event_files and len(writer_pids) == 1  # one process (rank 0) writes; fit and test share the run
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir() and p.name != "__pycache__") == ["straight"]  # no second folder from rank 1
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["brightness"] != rank1["brightness"]  # batch position k: another brightness on each rank
    assert rank0["dropout"] != rank1["dropout"]  # and another dropout mask

    resumed = tmp_path / "resumed"
    run_cli("src/train.py", *common, "trainer.max_epochs=1", "test=false", f"hydra.run.dir={resumed}")
    run_cli("src/train.py", *common, "trainer.max_epochs=2", f"ckpt_path={resumed / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={resumed}")
    straight, again = _metrics(tmp_path / "straight"), _metrics(resumed)
    volatile = {"wall_time_s", "perf/train_images_per_s", "perf/train_tflops", "perf/train_mfu"}
    assert {k: v for k, v in again.items() if k not in volatile} == {k: v for k, v in straight.items() if k not in volatile}
    weights = [torch.load(d / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for d in (tmp_path / "straight", resumed)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
