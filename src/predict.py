"""Predict with a trained checkpoint: top-k classes (or a mask) per image in predictions.csv, and a figure per image.

python src/predict.py ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt input=photo.jpg
python src/predict.py ckpt_path=... input=folder/ output_dir=out/ top_k=3 figures=false
python src/predict.py model_file=logs/train/runs/<run>/export/cnn.onnx input=folder/   # the exported network
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from visionbench.cli import CONFIG_DIR, report_errors, start_command
from visionbench.predict import predict


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    output_dir, ckpt_path, model_file = (Path(p) if p else None for p in (cfg.output_dir, cfg.ckpt_path, cfg.model_file))
    report_errors(
        lambda: predict(ckpt_path, Path(cfg.input), output_dir, cfg.top_k, cfg.device, cfg.batch_size, cfg.figures, model_file=model_file)
    )


if __name__ == "__main__":
    start_command("predict")
    main()
