#!/usr/bin/env bash
# Installs what images/ needs from Debian's packages (as root; Debian 12 or later): podman
# with buildah's build engine, runc (crun refuses hosts with hybrid cgroups), fuse-overlayfs,
# and debootstrap for the local base images.
set -euo pipefail
pkgs=(podman buildah runc fuse-overlayfs debootstrap)
if [ "$(id -u)" != 0 ]; then
    echo "images/install-tools.sh: run as root, or: sudo apt-get install ${pkgs[*]}" >&2
    exit 1
fi
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}"
