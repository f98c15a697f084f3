"""Train a network on a task, then test its best checkpoint.

python src/train.py model=resnet50 task=simpsons
python src/train.py -m model=cnn,resnet_small seed=1,2,3
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from visionbench.cli import CONFIG_DIR, report_errors, start_command


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    from visionbench.run import optimized_value, train  # imported after composition: config errors answer fast

    return report_errors(lambda: optimized_value(train(cfg), cfg.get("optimized_metric")))


if __name__ == "__main__":
    start_command("train")
    main()
