"""What a run prints: Lightning's lines once, without its advertisements or warnings a user cannot act on."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


class NoAdvertisements(logging.Filter):
    """Drops Lightning's "💡 Tip: ... try installing litlogger / litmodels" lines from a user's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def tidy_lightning_output() -> None:
    """``import lightning`` gives the ``lightning`` logger a console handler of its own, and its
    records also reach the root logger, which Hydra sends to the console and ``train.log``: every
    Lightning line was printed twice. The root's handlers alone now print them, without the
    advertisements for Lightning's cloud services. Lightning 2.6's
    own use of a pytree API that torch 2.14 deprecates warns at every fit; nothing a user can fix."""
    logging.getLogger("lightning").handlers.clear()
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, NoAdvertisements) for f in logger.filters):
            logger.addFilter(NoAdvertisements())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """stdout holds only the summary: Lightning's device lines ("GPU available: ...") are not shown.
    Nor are two warnings that do not apply: its hint to add loader workers (decoding is small next to
    the forward and the figures), and that it cannot track which samples a batch holds (each
    ``PredictBatch`` names its files itself)."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message="Couldn't infer the batch indices.*")
            yield
    finally:
        logger.setLevel(level)
