#!/usr/bin/env bash
# The GPU check, for a machine with one NVIDIA GPU (about 10 minutes): builds the trainer
# against CUDA libtorch, runs the CUDA-marked tests (fp32 on the GPU against the CPU, bf16 and
# fp16 steps finite and learning, the fp16 loss scaler on real overflows), then the benchmark
# against the transformers reference in bf16 on the GPU, and prints the ratios.
#   bench/gpu_check.sh            (from the repository root or anywhere)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nvidia-smi >/dev/null || { echo "gpu_check.sh: no nvidia-smi: this needs an NVIDIA GPU" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
make setup
source env.sh
export MTL_LINK_CUDA=1 MTL_MINILM_DIR="$PWD/.cache/minilm" HF_HUB_OFFLINE=1
started=$(date +%s)
cargo build --release -p mtl-trainer --bin mtl-bench
cargo test --release -p mtl-trainer --test cuda --no-run
echo "build: $(( $(date +%s) - started )) s"
cargo test --release -p mtl-trainer --test cuda -- --ignored --test-threads 1
.venv/bin/python bench/run.py --device cuda --precision bf16 --skip-operator --threads 4 --warmup 3 --steps 20
echo "gpu_check.sh: done in $(( $(date +%s) - started )) s"
