"""The files a prediction leaves: a ``BasePredictionWriter`` turns each batch that
``VisionTask.predict_step`` returns into rows of ``predictions.csv``, masks and figures.

Output names keep the input's extension (``a.jpg.png``, ``a.png.png``) so that ``a.jpg`` and
``a.png`` of one folder never overwrite each other. Progress goes to stderr, so that stdout holds
only the summary and can be piped.
"""

from __future__ import annotations

import csv
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor

from visionbench.callbacks.base import task_of
from visionbench.callbacks.progress import clock
from visionbench.data.predict_files import ImageFile, PredictBatch
from visionbench.data.storage.atomic import atomic_path
from visionbench.drawing import VOC_COLORMAP, Prediction, SegmentationRow, palette_image, predictions_figure, segmentation_figure
from visionbench.errors import ConfigError
from visionbench.tasks.base import VisionTask
from visionbench.tasks.classification import ClassRanking
from visionbench.tasks.segmentation import SegmentationTask

Row = dict[str, str | float]


@dataclass
class PredictResult:
    """What was predicted and skipped, for callers and tests that do not parse stdout."""

    csv_path: Path
    predicted: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, why it is not an image)
    rows: list[Row] = field(default_factory=list)  # one per predicted image, as written to ``csv_path``


class FileProgress:
    """Files done out of ``total`` on stderr: a rich bar on a terminal; elsewhere (a log file, SLURM,
    ``| tee``, where a bar draws nothing) a line every ``every`` seconds and one at the end."""

    def __init__(self, total: int, every: float = 10.0) -> None:
        self.total, self.every, self.done = total, every, 0
        console = Console(stderr=True)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
        self.bar = Progress(*columns, console=console) if console.is_terminal else None
        self._task = self.bar.add_task("predicting", total=total) if self.bar is not None else None
        self._start = self._last_line = 0.0

    def start(self) -> None:
        self._start = self._last_line = time.perf_counter()
        if self.bar is not None:
            self.bar.start()

    def advance(self, files: int) -> None:
        self.done += files
        if self.bar is not None and self._task is not None:
            self.bar.advance(self._task, files)
            return
        now = time.perf_counter()
        if now - self._last_line >= self.every or self.done == self.total:
            self._last_line = now
            elapsed = now - self._start
            left = elapsed * (self.total - self.done) / max(self.done, 1)
            print(
                f"predicting {self.done}/{self.total} files | elapsed {clock(elapsed)} | left ~{clock(left)}", file=sys.stderr, flush=True
            )

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class PredictionWriter(BasePredictionWriter, ABC):
    """Writes each batch's images as they come, then ``predictions.csv`` (atomically) once all are done.

    Rows, predicted and skipped files are kept in the order of the input listing, whatever order
    the batches came in. Nothing is written when no file was an image.
    """

    def __init__(self, output_dir: Path, total: int, top_k: int, figures: bool) -> None:
        super().__init__(write_interval="batch_and_epoch")
        self.output_dir, self.top_k, self.figures = output_dir, top_k, figures
        self.result = PredictResult(output_dir / "predictions.csv")
        self.progress = FileProgress(total)
        self._predicted: list[tuple[int, Path, Row]] = []
        self._skipped: list[tuple[int, Path, str]] = []

    @abstractmethod
    def rows(self, prediction: Any, files: list[ImageFile], class_names: Sequence[str]) -> Iterator[Row]:
        """One CSV row per file, writing its mask and figure on the way."""

    @abstractmethod
    def describe(self, row: Row) -> str:
        """The ranked lines printed for a single input image (a folder gets only the summary)."""

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.progress.start()

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.progress.stop()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.progress.stop()  # leave the terminal usable for the error

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: PredictBatch,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        rows = self.rows(prediction, batch.files, task_of(pl_module, VisionTask).class_names)
        self._predicted += [(f.position, f.path, row) for f, row in zip(batch.files, rows, strict=True)]
        self._skipped += [(u.position, u.path, u.reason) for u in batch.unreadable]
        self.progress.advance(len(batch.files) + len(batch.unreadable))

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Sequence[Any], batch_indices: Sequence[Any]
    ) -> None:
        self.result.predicted = [path for _, path, _ in sorted(self._predicted, key=lambda p: p[0])]
        self.result.rows = [row for _, _, row in sorted(self._predicted, key=lambda p: p[0])]
        self.result.skipped = [(path, why) for _, path, why in sorted(self._skipped)]
        if not self.result.rows:
            return
        with atomic_path(self.result.csv_path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(self.result.rows[0]))
            writer.writeheader()
            writer.writerows(self.result.rows)

    def _output(self, name: str, suffix: str) -> Path:
        path = self.output_dir / f"{name}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


class ClassificationWriter(PredictionWriter):
    """``path, predicted, probability, class_2, probability_2, ...`` up to ``top_k``; ``<name>.png``
    figures (the image beside its top-k bars)."""

    def rows(self, prediction: ClassRanking, files: list[ImageFile], class_names: Sequence[str]) -> Iterator[Row]:
        k = min(self.top_k, len(class_names))
        ranked = zip(prediction.probabilities.float().cpu().numpy(), prediction.classes.cpu().numpy(), strict=True)
        for file, (probabilities, classes) in zip(files, ranked, strict=True):
            row: Row = {"path": file.name, "predicted": class_names[classes[0]], "probability": round(float(probabilities[0]), 6)}
            for rank, (c, p) in enumerate(zip(classes[1:k], probabilities[1:k], strict=True), 2):
                row |= {f"class_{rank}": class_names[c], f"probability_{rank}": round(float(p), 6)}
            if self.figures:
                by_class = np.empty_like(probabilities)
                by_class[classes] = probabilities
                figure = predictions_figure([Prediction(file.image, by_class, None, file.name)], class_names, self.top_k)
                figure.savefig(self._output(file.name, ".png"))
            yield row

    def describe(self, row: Row) -> str:
        values = list(row.values())[1:]  # predicted, probability, class_2, probability_2, ...
        return "\n".join(
            f"  {rank}. {name:<20} {float(p):.4f}" for rank, (name, p) in enumerate(zip(values[::2], values[1::2], strict=True), 1)
        )


class SegmentationWriter(PredictionWriter):
    """``path, mask, fraction_<class>...`` (share of the image's pixels); ``<name>.mask.png`` (a
    palette PNG of class indices in the task's colours, ``SegmentationTask.colormap``) and, as its
    figure, ``<name>.png`` (image | prediction, with the class legend)."""

    colormap: np.ndarray = VOC_COLORMAP  # the task's, from on_predict_start

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.colormap = task_of(pl_module, SegmentationTask).colormap
        super().on_predict_start(trainer, pl_module)

    def rows(self, prediction: Tensor, files: list[ImageFile], class_names: Sequence[str]) -> Iterator[Row]:
        masks = prediction.cpu().numpy()
        for file, padded in zip(files, masks, strict=True):
            height, width = file.image.shape[:2]
            mask = padded[:height, :width]  # the batch's padding is not part of the image
            palette_image(mask, self.colormap).save(self._output(file.name, ".mask.png"))
            if self.figures:
                figure = segmentation_figure([SegmentationRow(file.image, mask, name=file.name)], class_names, self.colormap)
                figure.savefig(self._output(file.name, ".png"))
            counts = np.bincount(mask.ravel(), minlength=len(class_names))
            fractions = {f"fraction_{c}": round(float(n / mask.size), 6) for c, n in zip(class_names, counts, strict=True)}
            yield {"path": file.name, "mask": f"{file.name}.mask.png", **fractions}

    def describe(self, row: Row) -> str:
        fractions = sorted(((v, k.removeprefix("fraction_")) for k, v in row.items() if k.startswith("fraction_") and v), reverse=True)
        return "\n".join(f"  {name:<20} {float(v):6.1%} of pixels" for v, name in fractions[: self.top_k])


def prediction_writer(kind: str, output_dir: Path, total: int, top_k: int, figures: bool) -> PredictionWriter:
    """The writer for the checkpoint's task kind."""
    if kind == "classification":
        return ClassificationWriter(output_dir, total, top_k, figures)
    if kind == "segmentation":
        return SegmentationWriter(output_dir, total, top_k, figures)
    raise ConfigError(f"The checkpoint's task.kind={kind!r} has no prediction writer; expected 'classification' or 'segmentation'.")
