# Every target sets itself up: `make test` on a fresh clone creates .venv and installs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-all demo bench tensorboard data-simpsons data-voc clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,sweep]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)  ## unit + CLI tests (benchmarks excluded)
	$(PY) -m pytest -q

demo: $(STAMP)  ## plain CNN vs small ResNet on the built-in dataset, then a comparison table
	$(PY) src/demo.py

bench: $(STAMP)  ## speed/cost/quality table of every model (logs/bench/<time>/)
	$(PY) src/bench.py

tensorboard: $(STAMP)
	$(VENV)/bin/tensorboard --logdir logs

data-simpsons: $(STAMP)  ## build the Simpsons split from a Kaggle download: make data-simpsons SOURCE=archive.zip
	$(PY) src/prepare.py task=simpsons source=$(SOURCE)

clean:
	rm -rf logs/train logs/debug logs/eval
