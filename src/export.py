"""Export a trained checkpoint's network to ONNX, with a JSON sidecar and a parity check against eager PyTorch.

python src/export.py ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt
python src/export.py ckpt_path=... output_dir=deploy/ dynamic_batch=false tolerance=1e-3
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from visionbench.cli import CONFIG_DIR, report_errors, start_command


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
def main(cfg: DictConfig) -> None:
    from visionbench.export.exporter import export_checkpoint  # after composition: config errors answer fast

    output_dir = Path(cfg.output_dir) if cfg.output_dir else None
    settings = {key: cfg[key] for key in ("format", "dynamic_batch", "opset", "tolerance", "parity_images")}
    report_errors(lambda: export_checkpoint(Path(cfg.ckpt_path), output_dir, data_dir=cfg.paths.data_dir, **settings))


if __name__ == "__main__":
    start_command("export")
    main()
