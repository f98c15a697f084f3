"""Every task x model pair composes; a model serving another task kind fails at config time."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO, run_cli
from hydra.utils import get_class, instantiate

from visionbench.errors import ConfigError
from visionbench.run import check_model_task

TASKS = sorted(p.stem for p in (REPO / "conf" / "task").glob("*.yaml"))
MODELS = sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml"))


def test_the_expected_tasks_and_models_are_configured() -> None:
    assert {"simpsons", "shapes", "voc", "shapes_seg"} <= set(TASKS)
    assert {"cnn", "resnet_small", "resnet50", "vgg19", "inception_v1", "fcn", "fcn8s", "fpn"} <= set(MODELS)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("model", MODELS)
def test_every_task_and_model_pair_composes_and_kinds_are_checked(compose_cfg, task: str, model: str) -> None:
    cfg = compose_cfg([f"task={task}", f"model={model}"])
    assert cfg.task.name == task and cfg.model.name == model
    kind = get_class(cfg.model.net._target_).task_kind
    if kind == cfg.task.kind:
        check_model_task(cfg.model, cfg.task)
    else:
        with pytest.raises(ConfigError, match=f"model={model}.*is a {kind} network.*task={task}"):
            check_model_task(cfg.model, cfg.task)


def test_defaults_are_the_reference_simpsons_setting(compose_cfg) -> None:
    cfg = compose_cfg([])
    assert (cfg.task.name, cfg.model.name) == ("simpsons", "resnet_small")
    assert (cfg.task.data.image_size, cfg.task.data.batch_size) == (128, 32)
    assert cfg.task.module.optimizer._target_ == "torch.optim.Adam" and cfg.task.module.optimizer.lr == 1e-3


def test_experiment_reproduces_the_reference_settings(compose_cfg) -> None:
    cfg = compose_cfg(["experiment=seed_resnet_vs_cnn"])
    assert cfg.callbacks.early_stopping.patience == 3 and cfg.callbacks.early_stopping.monitor == "val/acc"
    assert cfg.task.data.augment.enabled and cfg.task.data.augment.degrees == 40


@pytest.mark.parametrize("trainer", ["default", "cpu", "gpu", "ddp", "ddp_cpu"])
def test_trainer_configs_compose(compose_cfg, trainer: str) -> None:
    cfg = compose_cfg([f"trainer={trainer}", "task=shapes"])
    assert cfg.trainer.use_distributed_sampler is False  # the DataModules shard evaluation exactly


def test_unknown_model_is_answered_with_the_available_options(tmp_path: Path) -> None:
    result = run_cli("src/train.py", "model=resnet5O", "task=shapes", f"hydra.run.dir={tmp_path}", check=False)
    assert result.returncode == 1
    assert "Could not find 'model/resnet5O'" in result.stderr and "resnet50" in result.stderr


def test_summary_prints_the_layer_table_at_the_tasks_reference_size(compose_cfg) -> None:
    import sys

    sys.path.insert(0, str(REPO / "src"))
    from summary import summarize

    assert "Total params: 3,491,603" in summarize(compose_cfg(["model=cnn", "task=simpsons"]))
    table = summarize(compose_cfg(["model=fcn", "task=voc"]))
    assert "3x320x480" in table and "Total params: 12,993,642" in table


def test_summary_command_prints_the_table_and_writes_no_run_folder(tmp_path: Path) -> None:
    result = run_cli("src/summary.py", "model=resnet_small", "task=simpsons", env={"VISIONBENCH_LOG_DIR": str(tmp_path / "logs")})
    assert "Total params: 1,157,011" in result.stdout  # trainable; Keras adds the 256 BN statistics
    assert not (tmp_path / "logs").exists() and not (REPO / "summary.log").exists()


def test_training_the_built_in_data_at_another_size_resizes_it_instead_of_regenerating_it(compose_cfg, tmp_path: Path) -> None:
    small = ["task=shapes", f"paths.data_dir={tmp_path}", "task.data.generator.num_classes=2", "task.data.generator.per_class=12",
             "task.data.split.min_images=5", "task.data.split.test_per_class=2", "task.data.num_workers=0"]  # fmt: skip
    default = instantiate(compose_cfg(small).task.data)
    default.prepare_data()
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "shapes").rglob("*.jpg")}
    larger = instantiate(compose_cfg([*small, "task.data.image_size=64"]).task.data)
    larger.prepare_data()
    larger.setup("fit")
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "shapes").rglob("*.jpg")} == files and files  # not rewritten
    assert larger.datasets["train"][0][0].shape == (3, 64, 64)  # resized by the cache instead
