"""Every task x model pair composes; a model serving another task kind fails at config time."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hydra.utils import get_class, instantiate

from conftest import REPO, run_cli
from visionbench.compose import check_model_task
from visionbench.errors import ConfigError

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
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer.lr == 1e-3 and not cfg.scheduler


@pytest.mark.parametrize("experiment", ["seed_cnn", "seed_resnet_small"])
def test_each_seed_experiment_is_the_articles_protocol_with_keras_defaults(compose_cfg, experiment: str) -> None:
    """Both models: 128x128, batch 32, Adam 1e-3 (Keras' epsilon 1e-7) without weight decay or
    schedule, Glorot-uniform init (Keras' default)."""
    cfg = compose_cfg([f"experiment={experiment}"])
    assert (cfg.task.name, cfg.model.name) == ("simpsons", experiment.removeprefix("seed_"))
    assert (cfg.task.data.image_size, cfg.task.data.batch_size) == (128, 32)
    assert (cfg.optimizer._target_, cfg.optimizer.lr, cfg.optimizer.weight_decay) == ("torch.optim.Adam", 1e-3, 0.0)
    assert cfg.optimizer.eps == 1e-7 and cfg.model.net.init == "keras"
    assert not cfg.scheduler and cfg.callbacks.early_stopping.monitor == "val/acc"


def test_the_article_stops_the_plain_cnn_early_and_trains_the_resnet_40_epochs(compose_cfg) -> None:
    cnn, resnet = compose_cfg(["experiment=seed_cnn"]), compose_cfg(["experiment=seed_resnet_small"])
    assert (cnn.trainer.max_epochs, cnn.callbacks.early_stopping.patience) == (50, 3)
    assert resnet.trainer.max_epochs == 40 and resnet.callbacks.early_stopping.patience >= 40


def test_the_article_trains_the_plain_cnn_without_augmentation(compose_cfg) -> None:
    assert compose_cfg(["experiment=seed_cnn"]).task.data.augment.enabled is False


def test_the_article_trains_the_small_resnet_with_keras_augmentation_and_nearest_fill(compose_cfg) -> None:
    augment = compose_cfg(["experiment=seed_resnet_small"]).task.data.augment
    assert augment.enabled is True and augment.fill == "nearest"
    assert (augment.degrees, augment.translate, augment.shear, augment.zoom, augment.hflip) == (40, 0.2, 0.2, 0.1, 0.5)
    assert list(augment.brightness) == [0.8, 1.2] and augment.zoom_independent is True


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
    with pytest.raises(ConfigError, match=r"task\.num_classes=N"):  # your own data has no reference class count
        summarize(compose_cfg(["model=cnn", "task=folder"]))
    assert "Total params:" in summarize(compose_cfg(["model=cnn", "task=folder", "task.num_classes=5"]))


@pytest.mark.slow
def test_summary_command_prints_the_table_and_writes_no_run_folder(tmp_path: Path) -> None:
    result = run_cli("src/summary.py", "model=resnet_small", "task=simpsons", env={"VISIONBENCH_LOG_DIR": str(tmp_path / "logs")})
    assert "Total params: 1,157,011" in result.stdout  # trainable; Keras adds the 256 BN statistics
    assert not (tmp_path / "logs").exists() and not (REPO / "summary.log").exists()


def test_training_the_built_in_data_at_another_size_resizes_it_instead_of_regenerating_it(compose_cfg, tmp_path: Path) -> None:
    small = [
        "task=shapes",
        f"paths.data_dir={tmp_path}",
        "task.data.generator.num_classes=2",
        "task.data.generator.per_class=12",
        "task.data.split.min_images=5",
        "task.data.split.test_per_class=2",
        "task.data.num_workers=0",
    ]
    default = instantiate(compose_cfg(small).task.data)
    default.prepare_data()
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "shapes").rglob("*.jpg")}
    larger = instantiate(compose_cfg([*small, "task.data.image_size=64"]).task.data)
    larger.prepare_data()
    larger.setup("fit")
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "shapes").rglob("*.jpg")} == files and files  # not rewritten
    assert larger.datasets["train"][0][0].shape == (3, 64, 64)  # resized by the cache instead


@pytest.mark.parametrize("experiment", ["simpsons_budget", "camvid_budget"])
def test_every_network_of_an_equal_budget_sweep_composes_with_keys_its_class_takes(compose_cfg, experiment: str) -> None:
    """The sweep's settings go to every network it names: none may carry a key only one network takes
    (the fast recipe's model.net.init reached ResNet50 when the budget experiment inherited it)."""
    models = compose_cfg([f"experiment={experiment}"], "train").hydra.sweeper.params.model.split(",")
    for model in models:
        cfg = compose_cfg([f"experiment={experiment}", f"model={model}"])
        net = {k: v for k, v in cfg.model.net.items() if not k.startswith("_")}
        inspect.signature(get_class(cfg.model.net._target_)).bind_partial(**net)
        assert cfg.scheduler._target_.endswith("budget_schedule") and cfg.trainer.max_epochs == -1


def test_the_fast_recipe_starts_at_chance_balances_the_classes_and_reports_tta_beside_the_plain_scores(compose_cfg) -> None:
    cfg = compose_cfg(["experiment=simpsons_fast"])
    assert cfg.model.net.init == "keras" and cfg.task.data.sampler == "balanced" and cfg.ema_decay == 0.999
    assert cfg.task.module.tta == "flip" and cfg.trainer.max_epochs == 15 and cfg.task.monitor == "val/acc"


@pytest.mark.parametrize(
    ("overrides", "precision"),
    [([], "32-true"), (["experiment=simpsons_fast"], "32-true"), (["trainer.precision=bf16-mixed"], "bf16-mixed")],
)
def test_bf16_autocast_only_where_requested(compose_cfg, overrides: list[str], precision: str) -> None:
    """bf16 is ~3x faster on a CPU with AMX but 4-10x slower on one without bf16 instructions: never a default."""
    assert compose_cfg(overrides).trainer.precision == precision


def test_the_equal_budget_comparison_times_the_accuracies_networks_reach_in_minutes(compose_cfg) -> None:
    """Time to 50 / 70 / 80 % validation accuracy: the Simpsons task's 0.8 / 0.9 go unreached in 15 minutes."""
    cfg = compose_cfg(["experiment=simpsons_budget"])
    assert list(cfg.task.targets) == [0.5, 0.7, 0.8] == list(cfg.callbacks.time_to_target.thresholds)
