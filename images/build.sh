#!/usr/bin/env bash
# Builds the project's images with podman from Dockerfile.trainer and Dockerfile.operator as
# written, FROM the local base images of images/bases.sh (passed as --build-arg; the
# Dockerfiles' own defaults are the real rust, nvidia/cuda and distroless images).
#
#   images/build.sh [trainer] [operator]     default: both; tags mtl-<name>:$MTL_IMAGE_TAG (local)
#   MTL_IMAGE_BASES=upstream images/build.sh  FROM the Dockerfiles' own (registry) base images
#
# Rebuilds are cheap: podman keeps every layer, and the cargo registry, cargo's target
# directory and the torch/nvidia wheels persist in build cache mounts ($MTL_IMAGE_CACHE/tmp).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. images/env.sh
tag="${MTL_IMAGE_TAG:-local}"
build_args=()
if [ "${MTL_IMAGE_BASES:-local}" = local ]; then
    images/bases.sh >/dev/null
    while read -r kv; do build_args+=(--build-arg "$kv"); done < <(images/bases.sh --names)
fi
for what in "${@:-trainer operator}"; do
    for w in $what; do
        start=$(date +%s)
        echo "==> mtl-$w:$tag (Dockerfile.$w)"
        mtl_podman_build --layers -f "Dockerfile.$w" -t "localhost/mtl-$w:$tag" "${build_args[@]}" .
        echo "==> mtl-$w:$tag built in $(( $(date +%s) - start )) s," \
            "$(podman image inspect --format '{{.Size}}' "localhost/mtl-$w:$tag" | numfmt --to=iec)"
    done
done
