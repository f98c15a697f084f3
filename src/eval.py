"""Evaluate a checkpoint on the test split (or ``split=val``).

python src/eval.py ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt [task=shapes]
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from visionbench.cli import CONFIG_DIR, report_errors, start_command


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    from visionbench.run import evaluate  # imported after composition: config errors answer fast

    report_errors(lambda: evaluate(cfg))


if __name__ == "__main__":
    start_command("eval")
    main()
