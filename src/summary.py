"""Print a network's layer table, parameter count and FLOPs: ``python src/summary.py model=X task=Y``."""

from __future__ import annotations

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from visionbench.bench.summary import layer_table


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    num_classes = OmegaConf.select(cfg, "task.num_classes", default=10)
    net = instantiate(cfg.model.net, num_classes=num_classes)
    print(layer_table(net, cfg.task.data.image_size))


if __name__ == "__main__":
    main()
