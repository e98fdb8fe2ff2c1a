# Breast AI Node: the two commands a newcomer needs.
#   make run   set up .venv, install the node, start it on config/node.yaml
#   make test  set up .venv with test extras and the Debian tools the tests use, run pytest

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= config/node.yaml
PYTEST_ARGS ?=

# Debian packages the tests drive as real peers and validators (npm fetches the stock
# OHIF viewer the browser test opens the node's results in).
DEBIAN_TEST_PACKAGES := dcmtk dicom3tools orthanc orthanc-dicomweb libpixelmed-java \
	default-jre-headless chromium postgresql npm
SUDO := $(shell [ "$$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && echo sudo)

# The prebuilt stock OHIF viewer (npm @ohif/app), served by tests/e2e/test_ohif.py and
# bench/output_pictures.py from var/ohif/ (deploy/ohif/viewer.py).
OHIF_VERSION := 3.13.2
OHIF_DIR := var/ohif/$(OHIF_VERSION)

.PHONY: run test system-deps venv lint typecheck clean help ohif

help:
	@echo "make run    set up and start the node (config: $(CONFIG))"
	@echo "make send-demo  send a few synthetic studies to the running node"
	@echo "make test   set up and run the test suite"
	@echo "make demo   a local Orthanc and the node with synthetic studies (make demo-stop)"

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
	@echo "starting the node; in another terminal, 'make send-demo' sends it synthetic studies"
	$(BIN)/breast-node serve --config $(CONFIG)

# A few synthetic studies (mammography: a positive and negatives; and breast ultrasound)
# sent to the node that `make run` started, as a PACS would send them; then see them on
# the status page (models/demo infers the mammograms, models/demo-us the ultrasound).
SEND_STUDIES ?= 3
SEND_US_STUDIES ?= 1
.PHONY: send-demo
send-demo: $(VENV)/.installed-run $(CONFIG)
	$(BIN)/breast-train synth --out var/send-demo/mg --studies $(SEND_STUDIES) --seed 2024
	$(BIN)/breast-train synth --modality us --out var/send-demo/us --studies $(SEND_US_STUDIES) \
	  --seed 2024
	$(BIN)/breast-node send --config $(CONFIG) var/send-demo
	@echo "sent; the studies appear on the status page (node.started's status_page, by default http://127.0.0.1:8112/) once inferred"

system-deps:
	@missing=""; \
	for cmd in storescu dciodvfy Orthanc java chromium npm; do \
	  command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || missing=1; \
	done; \
	[ -f /usr/share/java/pixelmed.jar ] || missing=1; \
	[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing=1; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing=1; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $(DEBIAN_TEST_PACKAGES)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    $(DEBIAN_TEST_PACKAGES) >/dev/null; \
	fi

$(OHIF_DIR)/package/dist/index.html:
	mkdir -p $(OHIF_DIR)
	cd $(OHIF_DIR) && npm pack --silent @ohif/app@$(OHIF_VERSION) >/dev/null && \
	  tar xzf ohif-app-$(OHIF_VERSION).tgz && rm ohif-app-$(OHIF_VERSION).tgz

ohif: $(OHIF_DIR)/package/dist/index.html

test: system-deps $(VENV)/.installed-test ohif
	$(BIN)/python -m pytest $(PYTEST_ARGS)

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed-test
	$(BIN)/python -m pip install --quiet -e '.[train,test,dev]'
	@touch $@

# ruff on everything; mypy --strict on node/ and training/; the import layers of
# pyproject.toml ([tool.importlinter]): a stage imports only what comes before it.
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check node training tests bench deploy
	$(BIN)/ruff format --check node training tests bench deploy
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info

# Inference throughput and latency per architecture and for the ensemble (CPU: a few minutes;
# on a CUDA machine also bf16 and batch sizes 1/4/16). Results: docs/benchmarks.md.
.PHONY: bench-inference
bench-inference: $(VENV)/.installed-run
	$(BIN)/python bench/inference.py $(BENCH_ARGS)

# Decoding and preprocessing of detector-size mammograms per transfer syntax (explicit VR,
# JPEG 2000, JPEG-LS, JPEG lossless, RLE): the node against the previous implementation,
# stage by stage, and dcmtk; data generated once under var/bench/decode (about 3 minutes).
# Results: docs/benchmarks.md, "Decoding and preprocessing".
.PHONY: bench-decode
bench-decode: $(VENV)/.installed-test
	$(BIN)/python bench/decode.py $(BENCH_ARGS)

# Receiving throughput: our SCP against dcmtk storescp and Orthanc, 1 and 4 concurrent
# storescu senders, 20 detector-size mammograms (generated once under var/bench/ingest).
# Needs dcmtk and orthanc (make system-deps). Results: docs/benchmarks.md, "Receiving".
.PHONY: bench-ingest
bench-ingest: $(VENV)/.installed-test system-deps
	$(BIN)/python bench/ingest.py $(BENCH_ARGS)

# End to end: first C-STORE of a four-view study to the last result acknowledged by a dcmtk
# storescp, per stage (receive, decode, inference, Grad-CAM, render, send; the quiet period
# apart), for the demo and the five-architecture ensembles, uncompressed and JPEG 2000; then
# optimisation variants and 1 and 2 inference workers on a PostgreSQL queue, in studies per
# minute. CPU: about 15 minutes (data generated once under var/bench/e2e). Needs dcmtk and
# postgresql (make system-deps). Results: docs/benchmarks.md, "End to end".
.PHONY: bench-e2e
bench-e2e: $(VENV)/.installed-test system-deps
	$(BIN)/python bench/e2e.py $(BENCH_ARGS)

# Every table of docs/benchmarks.md in one run, each into its own file under
# var/bench/all-<date>/ (about 30 minutes; nothing else should run on the machine).
.PHONY: bench-all
bench-all: $(VENV)/.installed-test system-deps
	PYTHON=$(BIN)/python bench/all.sh

# A local Orthanc (routing script from deploy/orthanc/) and the node, a few synthetic
# studies pushed into Orthanc, results back in Orthanc; data under var/demo/. Stays up
# until Ctrl-C or `make demo-stop`. Uses models/demo when present (make demo-model).
.PHONY: demo demo-stop
demo: system-deps $(VENV)/.installed-run
	$(BIN)/python -m deploy.demo.run $(DEMO_ARGS)

demo-stop:
	@if [ -f var/demo/pids ]; then kill -TERM $$(tail -n 1 var/demo/pids) && echo "stopping the demo"; \
	else echo "no demo running (var/demo/pids is missing)"; fi

# One training run per ensemble member, side by side: $(1) the data folder (train/, val/,
# cache/, runs/ under it), $(2) the training config, $(3) architecture:epochs of each member.
define train_members
	mkdir -p $(1)/runs
	pids=""; trap 'kill $$pids 2>/dev/null' INT TERM; \
	for member in $(3); do \
	  arch=$${member%%:*}; \
	  $(BIN)/breast-train train --config $(2) --quiet \
	    --set data.root=$(1)/train --set data.val_root=$(1)/val \
	    --set data.cache_dir=$(1)/cache \
	    --set model.architecture=$$arch --set optim.epochs=$${member##*:} \
	    --set output=$(1)/runs/$$arch > $(1)/runs/$$arch.log 2>&1 & \
	  pids="$$pids $$!"; \
	done; \
	failed=0; for pid in $$pids; do wait $$pid || failed=1; done; \
	if [ $$failed = 1 ]; then tail -n 20 $(1)/runs/*.log; exit 1; fi
endef

# The shipped demo ensemble (models/demo), reproduced on two CPU cores: synthetic studies
# -> the images preprocessed once -> four patient-grouped folds of breast_cnn_small trained
# side by side on one thread each (`breast-train cv --fold K`; fold K with seed 7 + K;
# 512 x 256 input, max pooling, output stride 16, a patch stage first) ->
# `breast-train cv --resume`: temperatures, weights and thresholds on the
# out-of-fold predictions, the four-member folder -> evaluation on 200 held-out studies of
# a seed used for nothing else, recorded in the card (demo-model-evaluate). See
# docs/training.md.
DEMO_DIR ?= var/demo
DEMO_OUT ?= models/demo
DEMO_STUDIES ?= 1600
DEMO_TEST_STUDIES ?= 200
DEMO_TEST_SEED ?= 7477
DEMO_FOLDS ?= 4
DEMO_SET := --set data.root=$(DEMO_DIR)/train --set data.cache_dir=$(DEMO_DIR)/cache \
	--set data.folds=$(DEMO_FOLDS) --set output=$(DEMO_DIR)/cv
.PHONY: demo-model demo-model-train demo-model-evaluate
demo-model: demo-model-train demo-model-evaluate

demo-model-train: $(VENV)/.installed-test
	$(BIN)/breast-train synth --out $(DEMO_DIR)/train --studies $(DEMO_STUDIES) --seed 101
	$(BIN)/breast-train cache --config training/configs/demo.yaml --quiet $(DEMO_SET)
	mkdir -p $(DEMO_DIR)/cv
	pids=""; trap 'kill $$pids 2>/dev/null' INT TERM; \
	for fold in $$(seq 0 $$(($(DEMO_FOLDS) - 1))); do \
	  $(BIN)/breast-train cv --config training/configs/demo.yaml --quiet $(DEMO_SET) \
	    --fold $$fold > $(DEMO_DIR)/cv/fold$$fold.log 2>&1 & \
	  pids="$$pids $$!"; \
	done; \
	failed=0; for pid in $$pids; do wait $$pid || failed=1; done; \
	if [ $$failed = 1 ]; then tail -n 20 $(DEMO_DIR)/cv/fold*.log; exit 1; fi
	rm -f $(DEMO_OUT)/*.safetensors $(DEMO_OUT)/*-metrics.csv
	$(BIN)/breast-train cv --config training/configs/demo.yaml --quiet --resume $(DEMO_SET) \
	  --out $(DEMO_OUT) --name demo --version 4.0.0 \
	  --card training/configs/demo-card.yaml --tta flip --weights auto --half

demo-model-evaluate: $(VENV)/.installed-test
	$(BIN)/breast-train synth --out $(DEMO_DIR)/test --studies $(DEMO_TEST_STUDIES) \
	  --seed $(DEMO_TEST_SEED)
	$(BIN)/breast-train evaluate --model $(DEMO_OUT) --data $(DEMO_DIR)/test --record \
	  --out $(DEMO_DIR)/eval

# The shipped ultrasound ensemble (models/demo-us), reproduced on two CPU cores: synthetic
# breast ultrasound studies (training seed 4101, validation 4202, held-out test 4303: a
# seed used for nothing else) -> one training run per architecture (a plain, a residual
# and a depthwise-separable small CNN), the three side by side on one thread each
# (224 x 288 input, global max pooling) -> temperatures and thresholds on the validation
# studies with 5-view TTA, equal member weights (the card says why) -> export ->
# evaluation on the held-out studies, recorded in the card. See docs/training.md.
DEMO_US_DIR ?= var/demo-us
DEMO_US_OUT ?= models/demo-us
DEMO_US_STUDIES ?= 1200
# architecture:epochs of each member
DEMO_US_MEMBERS ?= breast_cnn_small:16 breast_resnet_small:16 breast_sepconv_small:16
.PHONY: demo-model-us
demo-model-us: $(VENV)/.installed-test
	$(BIN)/breast-train synth --modality us --out $(DEMO_US_DIR)/train \
	  --studies $(DEMO_US_STUDIES) --seed 4101
	$(BIN)/breast-train synth --modality us --out $(DEMO_US_DIR)/val --studies 100 --seed 4202
	$(BIN)/breast-train synth --modality us --out $(DEMO_US_DIR)/test --studies 150 --seed 4303
	$(call train_members,$(DEMO_US_DIR),training/configs/demo-us.yaml,$(DEMO_US_MEMBERS))
	$(BIN)/breast-train export \
	  $(foreach m,$(DEMO_US_MEMBERS),--run $(DEMO_US_DIR)/runs/$(firstword $(subst :, ,$(m)))) \
	  --val-data $(DEMO_US_DIR)/val --out $(DEMO_US_OUT) --name demo-us --version 1.1.0 \
	  --card training/configs/demo-us-card.yaml --tta multi --weights equal --half
	$(BIN)/breast-train evaluate --model $(DEMO_US_OUT) --data $(DEMO_US_DIR)/test --record \
	  --plots $(DEMO_US_DIR)/plots

# The GPU check (bench/gpu/run.sh) on a bare CUDA machine that has torch, torchvision and
# timm but not the node's other dependencies: their wheels for CPython 3.12 on x86-64
# Linux, and dcmtk's Debian packages (storescu, storescp), into var/gpu-wheels/ (about
# 30 MB, ignored by git). Copy the checkout with that folder to the GPU machine and run
# bench/gpu/run.sh there. Versions are the ones installed here.
GPU_WHEEL_PYTHON ?= 3.12
GPU_WHEELS := pydicom pynetdicom highdicom sqlalchemy apscheduler tzlocal structlog pydantic \
	pydantic-core annotated-types typing-inspection pylibjpeg pylibjpeg-openjpeg \
	pylibjpeg-libjpeg pylibjpeg-rle pyjpegls dicomweb-client retrying
GPU_DEBS := dcmtk libdcmtk17 libcharls2 libjpeg62-turbo libpng16-16 libtiff6 libwrap0 \
	libxml2 libjbig0 liblerc4 libwebp7 libdeflate0 libicu72
.PHONY: gpu-wheels
gpu-wheels: $(VENV)/.installed-test
	mkdir -p var/gpu-wheels
	for name in $(GPU_WHEELS); do \
	  version=$$($(BIN)/python -m pip show $$name | sed -n 's/^Version: //p'); \
	  $(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: \
	    --python-version $(GPU_WHEEL_PYTHON) --implementation cp \
	    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
	    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	    --platform manylinux_2_24_x86_64 --platform manylinux_2_31_x86_64 \
	    --platform manylinux_2_34_x86_64 --platform manylinux_2_35_x86_64 --platform any \
	    -d var/gpu-wheels "$$name==$$version" || exit 1; \
	done
	cd var/gpu-wheels && apt-get download $(GPU_DEBS)
	@ls var/gpu-wheels | wc -l | xargs echo "files in var/gpu-wheels:"
