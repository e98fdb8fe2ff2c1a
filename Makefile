# Breast AI Node: the two commands a newcomer needs.
#   make run   set up .venv, install the node, start it on config/node.yaml
#   make test  set up .venv with test extras and the Debian tools the tests use, run pytest

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= config/node.yaml
PYTEST_ARGS ?=

# Debian packages the tests drive as real peers and validators.
DEBIAN_TEST_PACKAGES := dcmtk dicom3tools orthanc libpixelmed-java default-jre-headless
SUDO := $(shell [ "$$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && echo sudo)

.PHONY: run test system-deps venv lint typecheck clean help

help:
	@echo "make run    set up and start the node (config: $(CONFIG))"
	@echo "make test   set up and run the test suite"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[train,test]'
	@touch $@ $(VENV)/.installed-run

venv: $(VENV)/.installed-run

$(CONFIG):
	cp config/node.example.yaml $@
	@echo "created $@ from config/node.example.yaml"

run: $(VENV)/.installed-run $(CONFIG)
	$(BIN)/breast-node serve --config $(CONFIG)

system-deps:
	@missing=""; \
	for cmd in storescu dciodvfy Orthanc java; do \
	  command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || missing=1; \
	done; \
	[ -f /usr/share/java/pixelmed.jar ] || missing=1; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $(DEBIAN_TEST_PACKAGES)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    $(DEBIAN_TEST_PACKAGES) >/dev/null; \
	fi

test: system-deps $(VENV)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/ruff check node training tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info

# Inference throughput and latency per architecture and for the ensemble (CPU: a few minutes;
# on a CUDA machine also bf16 and batch sizes 1/4/16). Results: docs/benchmarks.md.
.PHONY: bench-inference
bench-inference: $(VENV)/.installed-run
	$(BIN)/python bench/inference.py $(BENCH_ARGS)

# Receiving throughput: our SCP against dcmtk storescp and Orthanc, 1 and 4 concurrent
# storescu senders, 20 detector-size mammograms (generated once under var/bench/ingest).
# Needs dcmtk and orthanc (make system-deps). Results: docs/benchmarks.md, "Receiving".
.PHONY: bench-ingest
bench-ingest: $(VENV)/.installed-test system-deps
	$(BIN)/python bench/ingest.py $(BENCH_ARGS)
