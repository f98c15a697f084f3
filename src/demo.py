"""The two-minute tour: plain CNN vs small ResNet on the built-in dataset, then a comparison table
and their validation accuracy against training time.

    make demo                       # or: python src/demo.py --epochs 6

The table's time-to columns compare the seconds each network takes to reach the demo's targets.
task=shapes' own (0.5/0.8/0.9, for long runs) are out of reach in 6 epochs; the demo's are levels both
networks reach in 6 epochs (docs/results.md has a measured run), so the columns and the curves show
which gets there first.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from visionbench.cli import REPO_ROOT
from visionbench.report import markdown, write_report

EPOCHS = 6
TARGETS = (0.2, 0.3, 0.4)


def train_overrides(models: str, epochs: int, out: Path) -> list[str]:
    """The sweep's overrides for ``src/train.py -m``."""
    targets = ",".join(f"{t:g}" for t in TARGETS)
    return [
        "task=shapes",
        f"model={models}",
        f"trainer.max_epochs={epochs}",
        f"task.targets=[{targets}]",
        "trainer.accelerator=cpu",
        f"hydra.sweep.dir={out}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=f"epochs per model (default: {EPOCHS})")
    parser.add_argument("--models", default="cnn,resnet_small", help="comma-separated model configs")
    parser.add_argument("--out", type=Path, default=None, help="sweep folder (default: logs/demo/<time>)")
    args = parser.parse_args()
    out = args.out or REPO_ROOT / "logs" / "demo" / time.strftime("%Y-%m-%d_%H-%M-%S")
    command = [sys.executable, str(REPO_ROOT / "src" / "train.py"), "-m", *train_overrides(args.models, args.epochs, out)]
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    report, files = write_report(out)
    print(f"\nDemo finished in {time.perf_counter() - start:.0f} s. Comparison ({', '.join(str(p) for p in files.values())}):\n")
    print(markdown(report))
    for name, path in files.items():
        if name.endswith("_curves.png"):
            print(f"Validation accuracy against training time: {path}")
    print(f"\nTensorBoard: {REPO_ROOT / '.venv/bin/tensorboard'} --logdir {out}")


if __name__ == "__main__":
    main()
