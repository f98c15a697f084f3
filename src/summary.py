"""Print a network's layer table, parameter count and FLOPs at the task's input size:

python src/summary.py model=inception_v1 task=simpsons
"""

from __future__ import annotations

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from visionbench.cli import CONFIG_DIR, report_errors, start_command
from visionbench.errors import ConfigError


def summarize(cfg: DictConfig) -> str:
    from visionbench.bench.summary import layer_table
    from visionbench.compose import check_model_task, input_size

    check_model_task(cfg.model, cfg.task)
    if cfg.task.get("num_classes") is None:
        raise ConfigError(
            f"task={cfg.task.name} has no reference number of classes (its data decides it at training time), so the "
            "layer table needs one: add task.num_classes=N, e.g. `python src/summary.py task=folder task.num_classes=5`."
        )
    net = instantiate(cfg.model.net, num_classes=cfg.task.num_classes)
    return layer_table(net, input_size(cfg.task))


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="summary")
def main(cfg: DictConfig) -> None:
    print(report_errors(lambda: summarize(cfg)))


if __name__ == "__main__":
    start_command("summary")
    main()
