"""Collect the finished training runs under a folder into one table per task and print them.

Writes report.md (every table; debug and eval runs skipped and counted; failed sweep jobs
listed) and, per task, report_<task>.csv, report_<task>.png and report_<task>_curves.png (the
monitored validation metric against training time, from each run's history.csv).

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
    parser.add_argument("--out", type=Path, default=None, help="where report.md and the per-task files go (default: DIR)")
    args = parser.parse_args()
    report, paths = report_errors(lambda: write_report(args.dir, args.out))
    print(markdown(report))
    print("Wrote " + ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
