"""Bad input gets one clear paragraph (what, which file or key, how to fix) and exit code 1, or,
for per-file problems, a warning with the count and the list written beside the data.

Reader-level checks (truncated/zero-byte/text JPEGs, odd colour modes, VOC masks, sizes, lists)
are pinned in test_split.py and test_segmentation_data.py; here are the user-facing ends.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch._utils import ExceptionWrapper

from conftest import TINY, run_cli
from kaggle_fixture import make_kaggle_download
from test_segmentation_data import write_list, write_mask, write_pair
from visionbench.checkpoint import load_checkpoint
from visionbench.cli import report_errors
from visionbench.config_checks import check_numeric_knobs
from visionbench.data.classification import ClassFolderDataModule
from visionbench.data.sources.pair_layouts import VOC_DIR
from visionbench.data.sources.split import EXCLUDED, SplitSpec, build_split
from visionbench.errors import ConfigError, CorruptDataError, DataNotFoundError
from visionbench.run import check_resume, evaluate, train


def _paragraph(stderr: str) -> str:
    """The ``error:`` paragraph printed by the entry point; there must be exactly one, on one line."""
    assert "Traceback" not in stderr, stderr[-3000:]
    error = stderr.split("\nerror: ", 1)[1].strip()
    assert len(error.splitlines()) == 1, error
    return error


@pytest.mark.slow
def test_non_numeric_override_names_the_key_the_value_and_an_example(tmp_path: Path) -> None:
    result = run_cli("src/train.py", "task=shapes", "model=cnn", "trainer.max_epochs=abc", f"hydra.run.dir={tmp_path}", check=False)
    assert result.returncode == 1
    error = _paragraph(result.stderr)
    assert "trainer.max_epochs is 'abc'" in error and "trainer.max_epochs=10" in error


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("trainer.min_epochs", "'1'"),
        ("trainer.devices", "two"),
        ("trainer.num_nodes", 0),
        ("trainer.log_every_n_steps", 2.5),
        ("trainer.check_val_every_n_epoch", "true"),
        ("task.data.batch_size", "'32'"),
        ("task.data.num_workers", -1),
        ("task.data.image_size", "big"),
        ("optimizer.lr", "fast"),
        ("optimizer.weight_decay", -0.1),
        ("optimizer.norm_weight_decay", -1),
        ("optimizer.momentum", "high"),
        ("scheduler.warmup_epochs", -1),
        ("seed", 1.5),
        ("ema_warmup", "flase"),
        ("model.net.bn_momentum", 1.5),
        ("model.net.bn_eps", 0),
    ],
)
def test_every_numeric_knob_is_type_checked(compose_cfg, key: str, value: object) -> None:
    group = {
        "optimizer.momentum": ["optimizer=sgd"],
        "scheduler.warmup_epochs": ["scheduler=cosine"],
        "ema_warmup": ["ema_decay=0.99"],
        "model.net.bn_momentum": ["model=resnet_small"],
        "model.net.bn_eps": ["model=resnet_small"],
    }.get(key, [])
    cfg = compose_cfg(["task=shapes", *group, f"{key}={value}"])
    with pytest.raises(ConfigError, match=f"Config key {key} is .* e.g. `{key}="):
        check_numeric_knobs(cfg)


@pytest.mark.parametrize("devices", ["auto", "-1", "2", "[0,1]", "'0,1'"])
def test_every_form_of_devices_lightning_accepts_passes(compose_cfg, devices: str) -> None:
    check_numeric_knobs(compose_cfg(["task=shapes", f"trainer.devices={devices}", "trainer.max_epochs=-1"]))


@pytest.mark.slow
def test_missing_data_root_names_the_folder_through_the_cli(tmp_path: Path) -> None:
    result = run_cli(
        "src/train.py",
        "task=simpsons",
        "model=cnn",
        f"task.data.root={tmp_path / 'nowhere'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        check=False,
    )
    assert result.returncode == 1
    error = _paragraph(result.stderr)
    assert str(tmp_path / "nowhere") in error and "task=shapes" in error
    assert "nowhere" not in result.stdout  # printed once, on stderr
    assert not (tmp_path / "run").exists()  # a run that wrote nothing but its config and log leaves no stub folder


def test_unknown_task_lists_the_available_tasks(tmp_path: Path) -> None:
    result = run_cli("src/train.py", "task=simpson", f"hydra.run.dir={tmp_path}", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Could not find 'task/simpson'" in result.stderr and "simpsons" in result.stderr


@pytest.mark.slow
def test_bad_mask_read_in_a_dataloader_worker_prints_the_readers_paragraph(tmp_path: Path) -> None:
    voc = tmp_path / VOC_DIR
    for image_id in ("a", "b", "c", "d"):
        write_pair(voc, image_id, height=32, width=32)
    bad = np.zeros((32, 32), np.uint8)
    bad[:4] = 37  # neither a VOC class (0..20) nor void (255)
    write_mask(voc / "SegmentationClass" / "c.png", bad)
    write_list(voc, "train", ["a", "b", "c"])
    write_list(voc, "val", ["d"])
    result = run_cli(
        "src/train.py",
        "task=voc",
        "model=fcn",
        *TINY,
        f"task.data.root={tmp_path}",
        "task.data.crop=[32,32]",
        "task.data.pipeline=pil",
        "task.data.num_workers=1",
        "task.data.batch_size=3",
        "callbacks.figures=null",
        f"hydra.run.dir={tmp_path / 'run'}",
        check=False,
    )
    assert result.returncode == 1
    error = _paragraph(result.stderr)
    assert error.startswith("Mask ") and str(voc / "SegmentationClass" / "c.png") in error and "[37]" in error


def test_worker_wrapped_errors_are_reported_without_the_workers_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    message = "Mask 'x.png' contains value(s) [37] outside the class indices 0..20 and 255 (ignore). Re-extract it."
    try:
        raise CorruptDataError(message)
    except CorruptDataError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(SystemExit) as exit_info:
        report_errors(wrapped.reraise)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == f"error: {message}"


def test_an_empty_class_folder_is_dropped_and_counted_not_fatal(tmp_path: Path) -> None:
    root = make_kaggle_download(tmp_path / "simpsons", kaggle_test=False)
    (root / "simpsons_dataset" / "maggie_simpson").mkdir()
    result = build_split(root, SplitSpec())
    assert result.dropped_classes["maggie_simpson"] == 0
    assert "maggie_simpson" not in {e.label for e in result.entries}


def test_excluded_files_are_counted_in_a_warning_and_listed_beside_the_data(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_kaggle_download(tmp_path / "simpsons", kaggle_test=False)
    with caplog.at_level(logging.WARNING):
        ClassFolderDataModule(root, image_size=32, batch_size=4, num_workers=0).prepare_data()
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "excluded" in r.getMessage())
    assert warning.startswith("5 file(s) excluded") and str(root / EXCLUDED) in warning
    listed = (root / EXCLUDED).read_text().splitlines()
    assert len(listed) == 1 + 5 and any("zero-byte file" in line for line in listed)


def test_the_config_checks_accept_the_shipped_configs(compose_cfg) -> None:
    for task in ("simpsons", "shapes", "voc", "shapes_seg"):
        check_numeric_knobs(compose_cfg([f"task={task}"]))
    assert OmegaConf.select(compose_cfg(["task=voc"]), "task.data.image_size") is None  # absent keys are skipped


def test_user_errors_raised_inside_instantiate_are_reported_unwrapped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "weights.pth"
    with pytest.raises(SystemExit):
        report_errors(lambda: instantiate({"_target_": "visionbench.checkpoint.load_checkpoint", "path": str(missing)}))
    assert capsys.readouterr().err.strip() == f"error: Checkpoint '{missing}' does not exist. " + (
        "Pass ckpt_path=<run folder>/checkpoints/last.ckpt (or an epoch_*.ckpt) of a finished training run."
    )


def test_a_required_value_left_unset_names_the_key(compose_cfg, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = compose_cfg(["task=shapes"], config_name="eval")  # ckpt_path: ???
    with pytest.raises(SystemExit):
        report_errors(lambda: evaluate(cfg))
    assert "ckpt_path has no value" in capsys.readouterr().err


def test_an_unknown_eval_split_is_a_config_error(compose_cfg) -> None:
    with pytest.raises(ConfigError, match="split=tset"):
        evaluate(compose_cfg(["task=shapes", "ckpt_path=x.ckpt", "split=tset"], config_name="eval"))


@pytest.mark.parametrize("content", [b"not a checkpoint", None], ids=["text file", "truncated"])
def test_an_unreadable_checkpoint_is_named_with_the_fix(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "last.ckpt"
    torch.save({"visionbench_config": {}, "state_dict": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(content if content is not None else path.read_bytes()[:2000])
    with pytest.raises(CorruptDataError, match=r"last\.ckpt' is not a readable checkpoint"):
        load_checkpoint(path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_gpu_trainers_without_cuda_say_so_before_touching_data(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(["task=shapes", "trainer=gpu", f"paths.data_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="trainer=cpu"):
        train(cfg)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_resuming_another_models_checkpoint_names_both_models(compose_cfg, multirun: Path) -> None:
    ckpt = multirun / "0" / "checkpoints" / "last.ckpt"  # model=cnn
    with pytest.raises(ConfigError, match="trained with model=cnn, but this run has model=resnet_small"):
        check_resume(compose_cfg(["task=shapes", "model=resnet_small", f"ckpt_path={ckpt}"]))


def test_resuming_into_a_new_run_folder_asks_for_the_checkpoints_folder(compose_cfg, multirun: Path) -> None:
    ckpt = multirun / "0" / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match=f"hydra.run.dir={multirun / '0'}"):
        check_resume(compose_cfg(["task=shapes", "model=cnn", f"ckpt_path={ckpt}"]))


def test_resuming_from_a_missing_checkpoint_is_named(compose_cfg, tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=r"missing\.ckpt' does not exist"):
        check_resume(compose_cfg(["task=shapes", "model=cnn", f"ckpt_path={tmp_path / 'missing.ckpt'}"]))


def test_a_misspelt_added_key_names_the_setting_it_resembles(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = OmegaConf.create({"trainer": {"_target_": "lightning.pytorch.Trainer", "max_epoch": 1}})  # from +trainer.max_epoch=1
    with pytest.raises(SystemExit):
        report_errors(lambda: instantiate(cfg))
    error = capsys.readouterr().err.strip()
    assert (
        error.startswith("error: trainer.max_epoch is not a setting of lightning.pytorch") and "Did you mean trainer.max_epochs?" in error
    )


class NetWithABug(torch.nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.norm = torch.nn.BatchNorm2d(num_classes, momentun=0.1)  # a bug in our code, not a user's key


def test_a_bad_call_inside_a_network_keeps_its_traceback() -> None:
    with pytest.raises(InstantiationException, match="momentun"):
        report_errors(lambda: instantiate({"_target_": f"{__name__}.NetWithABug", "num_classes": 3}))


def test_a_checkpoint_holding_code_objects_is_refused_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "foreign.ckpt"
    torch.save({"visionbench_config": {"model": {}}, "hyper_parameters": {"make": functools.partial(print)}}, path)
    with pytest.raises(ConfigError, match=r"holds objects other than tensors .* functools\.partial"):
        load_checkpoint(path)


def test_a_linked_checkpoint_resumes_in_the_run_folder_that_holds_the_link(compose_cfg, multirun: Path, tmp_path: Path) -> None:
    link = tmp_path / "checkpoints" / "last.ckpt"  # compose_cfg's run folder is tmp_path
    link.parent.mkdir()
    link.symlink_to(multirun / "0" / "checkpoints" / "last.ckpt")
    check_resume(compose_cfg(["task=shapes", "model=cnn", f"ckpt_path={link}"]))
