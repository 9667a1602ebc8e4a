# Sourced by the scripts in images/ (and exported by the Makefile's image targets): where
# podman keeps its images and build caches, and the engine settings it runs with.
#
#   $MTL_IMAGE_CACHE/storage   containers storage: base images, built images, their layers
#   $MTL_IMAGE_CACHE/tmp       build-time cache mounts in buildah-cache/ (RUN --mount=type=cache: the cargo
#                              registry and target directory, the torch/nvidia wheels)
#   $MTL_IMAGE_CACHE/bases     debootstrap's package cache for the local base images
#
# `make images-clean` removes all of it.
MTL_IMAGE_CACHE="${MTL_IMAGE_CACHE:-${HOME:-/root}/.cache/mtl-images}"
MTL_IMAGES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export MTL_IMAGE_CACHE
export CONTAINERS_CONF="$MTL_IMAGES_DIR/containers.conf"
export CONTAINERS_STORAGE_CONF="$MTL_IMAGE_CACHE/storage.conf"
mkdir -p "$MTL_IMAGE_CACHE/storage" "$MTL_IMAGE_CACHE/tmp" "$MTL_IMAGE_CACHE/bases"
if [ ! -s "$CONTAINERS_STORAGE_CONF" ]; then
    # Native overlayfs on the host's disk; runroot (locks, mount state) is per boot in /run.
    cat >"$CONTAINERS_STORAGE_CONF" <<CONF
[storage]
driver = "overlay"
graphroot = "$MTL_IMAGE_CACHE/storage"
runroot = "/run/mtl-images/storage"
CONF
fi
# Buildah keeps RUN --mount=type=cache directories under $TMPDIR (default /var/tmp).
mtl_podman_build() {
    TMPDIR="$MTL_IMAGE_CACHE/tmp" podman build "$@"
}
