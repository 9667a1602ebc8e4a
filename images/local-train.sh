#!/usr/bin/env bash
# make docker-local-train: the local job (examples/job-local.yaml) inside the trainer image, with
# docker when a docker daemon answers, else with podman (the image built by images/build.sh).
# The checkout is mounted at its own path and the trainer runs as the calling user, so
# out/ gets the checkpoints as `make run-local` writes them. A GPU is used when the host has one.
#   images/local-train.sh [extra mtl-trainer train flags, e.g. --output out/elsewhere]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
job="${JOB_LOCAL:-examples/job-local.yaml}"
run_args=(--rm --user "$(id -u):$(id -g)" -v "$PWD:$PWD" -w "$PWD")
# A .cache that links elsewhere (a worktree sharing another checkout's) is mounted at its target.
if [ -L .cache ]; then
    real="$(readlink -f .cache)"
    run_args+=(-v "$real:$real:ro")
fi
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    docker build -f Dockerfile.trainer -t mtl-trainer:local .
    gpu=()
    if command -v nvidia-smi >/dev/null; then gpu=(--gpus all); fi
    exec docker run "${run_args[@]}" "${gpu[@]}" mtl-trainer:local train --job "$job" "$@"
fi
if ! command -v podman >/dev/null; then
    echo "no docker daemon answers and podman is not installed (make image-tools installs it)" >&2
    exit 1
fi
echo "docker has no daemon here: building and running with podman" >&2
images/build.sh trainer >&2
. images/env.sh
gpu=()
if command -v nvidia-smi >/dev/null; then gpu=(--device nvidia.com/gpu=all); fi
exec podman run "${run_args[@]}" "${gpu[@]}" "localhost/mtl-trainer:${MTL_IMAGE_TAG:-local}" \
    train --job "$job" "$@"
