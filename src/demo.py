"""The two-minute tour: plain CNN vs small ResNet on the built-in dataset, then a comparison table.

    make demo                       # or: python src/demo.py --epochs 6
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from visionbench.cli import REPO_ROOT
from visionbench.report import markdown, write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6, help="epochs per model (default: 6)")
    parser.add_argument("--models", default="cnn,resnet_small", help="comma-separated model configs")
    parser.add_argument("--out", type=Path, default=None, help="sweep folder (default: logs/demo/<time>)")
    args = parser.parse_args()
    out = args.out or REPO_ROOT / "logs" / "demo" / time.strftime("%Y-%m-%d_%H-%M-%S")
    command = [
        sys.executable, str(REPO_ROOT / "src" / "train.py"), "-m",
        "task=shapes", f"model={args.models}", f"trainer.max_epochs={args.epochs}",
        "trainer.accelerator=cpu", f"hydra.sweep.dir={out}",
    ]  # fmt: skip
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    report, files = write_report(out)
    print(f"\nDemo finished in {time.perf_counter() - start:.0f} s. Comparison ({', '.join(str(p) for p in files.values())}):\n")
    print(markdown(report))
    print(f"\nTensorBoard: {REPO_ROOT / '.venv/bin/tensorboard'} --logdir {out}")


if __name__ == "__main__":
    main()
