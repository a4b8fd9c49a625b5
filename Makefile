# `make run` and `make test` work from a fresh clone: they create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed

.PHONY: run test bench bench-laptop clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m studio

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/train_throughput.py && $(PY) bench/generate.py && $(PY) bench/ui.py

# issue 13's goals, one after the other on an idle machine (~25 min on 2 cores): the default run against the notebook
# yardstick, trained tokens/s and MFU at (a) and (b), the busy-neighbour rounds, startup and key-to-screen latency
bench-laptop: $(STAMP)
	$(PY) bench/default_run.py && $(PY) bench/train_throughput.py && $(PY) bench/ui.py --busy-neighbour && $(PY) bench/ui.py

clean:
	rm -rf $(VENV) .pytest_cache
