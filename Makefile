# `make run` and `make test` create .venv on first use, then do their job.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.embedtune-installed
PARAMS ?= params/scifact.yaml

.PHONY: run test test-all setup lab clean-cache

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: pip takes the CPU wheel; an unpinned torch pulls a multi-GB CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m ipykernel install --sys-prefix --name embedtune --display-name "Python (embedtune)" >/dev/null
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/embedtune run $(PARAMS)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest -m "not slow and not gpu" tests

test-all: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest tests

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

clean-cache:
	rm -rf cache/
