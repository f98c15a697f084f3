"""The network's layer table as TensorBoard text, so a run's dashboard says what was trained."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.model_summary import ModelSummary

from visionbench.callbacks.base import tensorboard_writer


class ModelSummaryText(Callback):
    """Writes Lightning's layer summary (names, types, parameters) once per fit, on rank 0."""

    def __init__(self, max_depth: int = 2) -> None:
        self.max_depth = max_depth

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = tensorboard_writer(trainer)
        if writer is None:
            return
        summary = str(ModelSummary(pl_module, max_depth=self.max_depth))
        # Indented lines render as a preformatted block in TensorBoard's Markdown text view.
        writer.add_text("model/summary", "\n".join("    " + line for line in summary.splitlines()), trainer.global_step)
