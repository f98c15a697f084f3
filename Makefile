# Every target sets itself up: `make test` on a fresh clone creates .venv and installs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint format demo compare bench report tensorboard data-simpsons data-voc clean-cache clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,sweep,export]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)  ## unit + CLI tests (benchmarks excluded), on 2 processes: a file's tests (and its DDP runs) share one
	$(PY) -m pytest -q -n 2 --dist loadfile

lint: $(STAMP)  ## ruff's lint rules, its formatting and mypy's type check (all configured in pyproject.toml)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/mypy

format: $(STAMP)  ## ruff's formatter over the tree, then ruff's safe fixes (import order, ...)
	$(VENV)/bin/ruff format src tests
	$(VENV)/bin/ruff check --fix src tests

demo: $(STAMP)  ## plain CNN vs small ResNet on the built-in dataset, then a comparison table
	$(PY) src/demo.py

bench: $(STAMP)  ## speed/cost/quality table of every model (logs/bench/<time>/, and its section of docs/results.md), then the data-path benchmark
	$(PY) src/bench.py results_doc=docs/results.md
	$(PY) -m visionbench.bench.data_speed logs/bench/data

# Which network wins at equal cost: experiment=simpsons_budget (every classification network, the same
# wall-clock budget each), then the report of that sweep (table + validation accuracy against time).
#   make compare [BUDGET=00:00:05:00] [TASK=shapes] [ARGS="model=cnn,resnet_small seed=1,2"]
compare: $(STAMP)  ## every classification network for the same wall-clock budget, then its report (BUDGET=DD:HH:MM:SS per network, TASK=, ARGS=)
	@sweep=$${VISIONBENCH_LOG_DIR:-logs}/simpsons_budget/multiruns/$$(date +%Y-%m-%d_%H-%M-%S) && \
	$(PY) src/train.py -m experiment=simpsons_budget $(if $(TASK),task=$(TASK)) $(if $(BUDGET),trainer.max_time=$(BUDGET)) $(ARGS) hydra.sweep.dir=$$sweep && \
	$(PY) src/report.py $$sweep

report: $(STAMP)  ## one table per task (Markdown; CSV + PNG per task) of the training runs under DIR: make report DIR=logs/train/multiruns/<time>
	$(PY) src/report.py $(or $(DIR),logs)

tensorboard: $(STAMP)
	$(VENV)/bin/tensorboard --logdir logs

data-simpsons: $(STAMP)  ## build the Simpsons split from a Kaggle download: make data-simpsons SOURCE=archive.zip
	$(PY) src/prepare.py task=simpsons source=$(SOURCE)

data-voc:  ## where PASCAL VOC2012 goes (not downloaded: the machines are offline)
	@echo "PASCAL VOC2012 segmentation is not downloaded automatically."
	@echo "1. Get VOCtrainval_11-May-2012.tar (1.9 GB) from the PASCAL VOC 2012 website"
	@echo "2. mkdir -p data/voc && tar -xf VOCtrainval_11-May-2012.tar -C data/voc"
	@echo "   -> data/voc/VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}"
	@echo "3. Optional SBD augmented train set (10,582 images): copy SegmentationClassAug/ and"
	@echo "   ImageSets/Segmentation/train_aug.txt into data/voc/VOCdevkit/VOC2012/, then task.data.train_split=train_aug"
	@echo "4. Check every file once: $(PY) src/prepare.py task=voc task.data.validate=true"
	@echo "No download needed for the built-in stand-in: $(PY) src/train.py task=shapes_seg model=fcn"

clean-cache: $(STAMP)  ## remove the caches the task's current settings do not read: make clean-cache TASK=simpsons (ALL=1: every cache)
	$(PY) src/prepare.py task=$(or $(TASK),simpsons) clean_cache=$(if $(ALL),all,true)

clean:
	rm -rf logs/train logs/debug logs/eval
