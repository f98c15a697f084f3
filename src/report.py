"""Collect every finished run under a folder into one table (CSV, Markdown, PNG) and print it.

    python src/report.py logs/train/multiruns/<time>
    python src/report.py logs --out reports/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from visionbench.cli import report_errors
from visionbench.report import markdown, write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path, help="a run, multirun or logs folder (searched recursively)")
    parser.add_argument("--out", type=Path, default=None, help="where report.{csv,md,png} go (default: DIR)")
    args = parser.parse_args()
    report, paths = report_errors(lambda: write_report(args.dir, args.out))
    print(markdown(report))
    print("Wrote " + ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
