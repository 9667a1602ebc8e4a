#!/usr/bin/env bash
# Local stand-ins for the images Dockerfile.trainer and Dockerfile.operator build FROM, for
# machines that reach no container registry (only Debian's package mirror). Idempotent: an
# image is rebuilt only when this script, the host's CA certificates or (for the Rust base)
# the host's Rust toolchain changed; each image carries the key it was built from.
#
#   localhost/mtl-base/debian:bookworm           debootstrap --variant=minbase, as debian:bookworm
#   localhost/mtl-base/rust:<X.Y>-bookworm       + apt's C/C++ toolchain and this machine's Rust
#                                                toolchain, laid out as rust:<X.Y>-bookworm
#                                                (RUSTUP_HOME, CARGO_HOME, PATH)
#   localhost/mtl-base/cuda:13.0.2-base          stands in for nvidia/cuda:13.0.2-base-ubuntu24.04:
#                                                bookworm with its NVIDIA_*, LD_LIBRARY_PATH and
#                                                PATH, and Ubuntu's uid-1000 user "ubuntu"
#   localhost/mtl-base/distroless-cc:nonroot     stands in for gcr.io/distroless/cc-debian12:nonroot:
#                                                the same Debian 12 packages unpacked without dpkg
#                                                or a shell, user nonroot (65532)
#
# Every image trusts the host's CA bundle and the certificates in
# /usr/local/share/ca-certificates (HTTPS from builds goes through them here).
#
#   images/bases.sh            build what is missing or stale, print the four names
#   images/bases.sh --names    print the names only (KEY=VALUE lines for --build-arg)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

MIRROR="${MTL_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${MTL_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
KEY_LABEL=dev.mtl.base-key

toolchain_dir() { dirname "$(dirname "$(rustup which rustc 2>/dev/null || command -v rustc)")"; }
rust_version() { "$(toolchain_dir)/bin/rustc" -V | awk '{print $2}'; }
rust_minor() { rust_version | cut -d. -f1,2; }

DEBIAN=localhost/mtl-base/debian:bookworm
RUST=localhost/mtl-base/rust:$(rust_minor)-bookworm
CUDA=localhost/mtl-base/cuda:13.0.2-base
DISTROLESS=localhost/mtl-base/distroless-cc:nonroot

if [ "${1:-}" = --names ]; then
    printf 'RUST_IMAGE=%s\nCUDA_IMAGE=%s\nRUNTIME_IMAGE=%s\n' "$RUST" "$CUDA" "$DISTROLESS"
    exit 0
fi

host_cas() { ls /usr/local/share/ca-certificates/*.crt 2>/dev/null || true; }
# What every image depends on: this script and the CA certificates it copies in.
common_key=$(cat "${BASH_SOURCE[0]}" /etc/ssl/certs/ca-certificates.crt $(host_cas) | sha256sum | cut -c1-16)

current_key() { podman image inspect --format "{{index .Labels \"$KEY_LABEL\"}}" "$1" 2>/dev/null || true; }
fresh() { [ "$(current_key "$1")" = "$2" ]; }

# The host's trust store, for images with and without update-ca-certificates.
install_cas() {
    local root=$1
    mkdir -p "$root/etc/ssl/certs" "$root/usr/local/share/ca-certificates"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    for c in $(host_cas); do cp "$c" "$root/usr/local/share/ca-certificates/"; done
}

# podman run + commit: one layer on top of FROM, with image settings.
layer() {
    local from=$1 to=$2 key=$3 script=$4; shift 4
    local name="mtl-base-build-$$"
    local changes=(--change "LABEL $KEY_LABEL=$key")
    while [ $# -gt 0 ] && [ "$1" != -- ]; do changes+=(--change "$1"); shift; done
    [ "${1:-}" = -- ] && shift
    podman rm -f "$name" >/dev/null 2>&1 || true
    podman run --name "$name" "$@" "$from" bash -euxc "$script"
    podman commit --quiet "${changes[@]}" "$name" "$to" >/dev/null
    podman rm "$name" >/dev/null
}

build_debian() {
    local key=$common_key
    if fresh "$DEBIAN" "$key"; then return; fi
    echo "==> $DEBIAN (debootstrap, about a minute)"
    local work="$MTL_IMAGE_CACHE/bases/rootfs.$$"
    rm -rf "$work"
    mkdir -p "$MTL_IMAGE_CACHE/bases/debs"
    debootstrap --variant=minbase --cache-dir="$MTL_IMAGE_CACHE/bases/debs" \
        bookworm "$work" "$MIRROR" >"$MTL_IMAGE_CACHE/bases/debootstrap.log" 2>&1 \
        || { tail -20 "$MTL_IMAGE_CACHE/bases/debootstrap.log" >&2; exit 1; }
    # debian:bookworm's apt sources (deb822) and no package cache in the image.
    rm -f "$work/etc/apt/sources.list"
    cat >"$work/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    rm -rf "$work"/var/cache/apt/archives/*.deb "$work"/var/lib/apt/lists/*
    install_cas "$work"
    tar -C "$work" --numeric-owner -c . | podman import --quiet \
        --change "LABEL $KEY_LABEL=$key" --change 'CMD ["bash"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        - "$DEBIAN" >/dev/null
    rm -rf "$work"
}

build_rust() {
    local tc version
    tc=$(toolchain_dir)
    version=$(rust_version)
    local key
    key=$(printf '%s %s %s' "$common_key" "$version" "$(current_key "$DEBIAN")" | sha256sum | cut -c1-16)
    if fresh "$RUST" "$key"; then return; fi
    echo "==> $RUST (apt's build-essential, rustc $version from $tc)"
    # rust:*-bookworm is buildpack-deps:bookworm (compilers, common -dev packages) plus rustup's
    # toolchain in /usr/local/rustup, its proxies in /usr/local/cargo/bin. Here the toolchain
    # is the host's (no rustup download), without its documentation.
    layer "$DEBIAN" "$RUST" "$key" "
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            build-essential pkg-config ca-certificates curl git xz-utils unzip patch \
            zlib1g-dev libbz2-dev liblzma-dev libssl-dev
        rm -rf /var/lib/apt/lists/*
        t=/usr/local/rustup/toolchains/$version-x86_64-unknown-linux-gnu
        mkdir -p \$t /usr/local/cargo/bin
        cp -a /mnt/toolchain/bin /mnt/toolchain/lib /mnt/toolchain/libexec /mnt/toolchain/etc \$t/
        for b in \$t/bin/*; do ln -s \$b /usr/local/cargo/bin/; done
        chmod -R a+w /usr/local/cargo
        rustc -V && cargo -V" \
        "ENV RUSTUP_HOME=/usr/local/rustup" "ENV CARGO_HOME=/usr/local/cargo" \
        "ENV RUST_VERSION=$version" \
        "ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        -- -v "$tc:/mnt/toolchain:ro" \
        -e PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
}

build_cuda() {
    local key
    key=$(printf '%s %s' "$common_key" "$(current_key "$DEBIAN")" | sha256sum | cut -c1-16)
    if fresh "$CUDA" "$key"; then return; fi
    echo "==> $CUDA (bookworm with nvidia/cuda:13.0.2-base's environment)"
    # No CUDA libraries: the trainer image brings its own (the nvidia-* wheels), and the
    # driver's libcuda.so.1 is mounted from the node on a GPU machine.
    layer "$DEBIAN" "$CUDA" "$key" "
        groupadd --gid 1000 ubuntu
        useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash ubuntu" \
        "ENV NVARCH=x86_64" "ENV CUDA_VERSION=13.0.2" "ENV NVIDIA_REQUIRE_CUDA=cuda>=13.0" \
        "ENV NVIDIA_VISIBLE_DEVICES=all" "ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility" \
        "ENV LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64" \
        "ENV PATH=/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}

build_distroless() {
    local key
    key=$(printf '%s %s' "$common_key" "$(current_key "$DEBIAN")" | sha256sum | cut -c1-16)
    if fresh "$DISTROLESS" "$key"; then return; fi
    echo "==> $DISTROLESS (Debian 12 packages of distroless/cc, unpacked)"
    local work="$MTL_IMAGE_CACHE/bases/distroless.$$"
    rm -rf "$work"
    mkdir -p "$work/rootfs"
    # distroless/static: base-files, netbase, tzdata, media-types, CA certificates, passwd/group
    # with root, nobody and nonroot; base: + libc6, libssl3; cc: + libgcc-s1, libgomp1, libstdc++6.
    podman run --rm -v "$work:/out" "$DEBIAN" bash -euxc '
        apt-get update -q
        cd /out
        apt-get download -q base-files netbase tzdata media-types libc6 libssl3 \
            libgcc-s1 libgomp1 libstdc++6
        for d in *.deb; do dpkg-deb -x "$d" rootfs; done
        rm -f *.deb'
    local r="$work/rootfs"
    rm -rf "$r/usr/share/doc" "$r/usr/share/man" "$r/usr/share/lintian"
    mkdir -p "$r/tmp" "$r/home/nonroot" "$r/root" "$r/etc"
    chmod 1777 "$r/tmp"
    chmod 700 "$r/root"
    chown 65532:65532 "$r/home/nonroot"
    cat >"$r/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
    cat >"$r/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
EOF
    echo 'hosts: files dns' >"$r/etc/nsswitch.conf"
    install_cas "$r"
    rm -rf "$r/usr/local/share/ca-certificates"
    tar -C "$r" --numeric-owner -c . | podman import --quiet \
        --change "LABEL $KEY_LABEL=$key" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        --change 'USER 65532' --change 'WORKDIR /home/nonroot' \
        - "$DISTROLESS" >/dev/null
    rm -rf "$work"
}

command -v podman >/dev/null || { echo "podman is not installed: make image-tools" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "debootstrap is not installed: make image-tools" >&2; exit 1; }
build_debian
build_rust
build_cuda
build_distroless
podman image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep '^localhost/mtl-base/' | sort
