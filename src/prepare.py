"""Import a dataset download and build its deterministic split manifest, or clean its caches.

python src/prepare.py task=simpsons source=$HOME/Downloads/archive.zip
python src/prepare.py task=shapes
python src/prepare.py task=simpsons clean_cache=true   # or clean_cache=all
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from visionbench.cli import CONFIG_DIR, report_errors, start_command
from visionbench.data.sources.prepare import clean_cache, import_source, print_counts


def prepare(cfg: DictConfig) -> None:
    if cfg.clean_cache:
        datamodule = instantiate(cfg.task.data, pipeline="cached", _convert_="all")  # the caches it would read
        print(clean_cache(Path(datamodule.root), cfg.clean_cache, datamodule))
        return
    datamodule = instantiate(cfg.task.data, _convert_="all")
    if cfg.source is not None:
        import_source(Path(cfg.source).expanduser(), Path(datamodule.root))
    datamodule.prepare_data()
    if cfg.task.kind != "classification":
        print(f"{cfg.task.name}: {datamodule.num_classes} classes, data in {datamodule.root} checked and ready.")
        return
    print_counts(Path(datamodule.root))
    excluded = datamodule.excluded_files()
    if excluded:
        print(f"{len(excluded)} file(s) excluded (unreadable or duplicate content): see {datamodule.root}/excluded.csv")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="prepare")
def main(cfg: DictConfig) -> None:
    report_errors(lambda: prepare(cfg))


if __name__ == "__main__":
    start_command("prepare")
    main()
