#!/usr/bin/env bash
# Builds a minimal Debian base image with Python 3 without pulling from any container registry:
# debootstrap from a Debian package mirror into a folder, then `docker import`. It stands in for
# python:3.11-slim on machines that cannot reach Docker Hub (air-gapped CI, this project's CI):
#
#   mlscope containers base                      # runs this: -> mlscope/base:bookworm
#   mlscope containers build onnxruntime --base mlscope/base:bookworm
#
# Needs root (debootstrap chroots), debootstrap and a running Docker daemon.
# Environment: MLSCOPE_BASE_SUITE (default bookworm, whose python3 is 3.11), MLSCOPE_BASE_MIRROR
# (default http://deb.debian.org/debian), MLSCOPE_BASE_TAG (default mlscope/base:<suite>),
# MLSCOPE_BASE_PACKAGES (Debian packages to add, e.g. "python3-caffe libopenblas0-pthread" on
# bullseye for the Caffe stack: caffe/base.sh, `mlscope containers base caffe`). The image's labels record the suite,
# the Python version and each added package's version (org.mlscope.packages, name=version).
set -euo pipefail

suite="${MLSCOPE_BASE_SUITE:-bookworm}"
mirror="${MLSCOPE_BASE_MIRROR:-http://deb.debian.org/debian}"
tag="${1:-${MLSCOPE_BASE_TAG:-mlscope/base:${suite}}}"

for tool in debootstrap docker tar; do
    command -v "$tool" >/dev/null || { echo "build.sh: $tool is not installed" >&2; exit 2; }
done
if [ "$(id -u)" != 0 ]; then
    echo "build.sh: debootstrap needs root (run with sudo)" >&2
    exit 2
fi

rootfs="$(mktemp -d "${TMPDIR:-/tmp}/mlscope-base.XXXXXX")"
trap 'rm -rf "$rootfs"' EXIT

started=$SECONDS
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
    echo "build.sh: debootstrap $suite from $mirror failed; its log ends with:" >&2
    tail -20 "$rootfs.log" >&2
    exit 1
}
rm -f "$rootfs.log"
bootstrapped=$((SECONDS - started))

# Added packages go in with apt inside the root file system (debootstrap's own resolver does not
# follow alternatives such as libblas.so.3), without recommends and without starting services.
packages="${MLSCOPE_BASE_PACKAGES:-}"
package_label=""
if [ -n "$packages" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
    chmod +x "$rootfs/usr/sbin/policy-rc.d"
    mount -t proc proc "$rootfs/proc"
    trap 'umount "$rootfs/proc" 2>/dev/null || true; rm -rf "$rootfs"' EXIT
    # shellcheck disable=SC2086  # the package list is split on purpose
    if ! { chroot "$rootfs" apt-get update -q \
           && DEBIAN_FRONTEND=noninteractive chroot "$rootfs" apt-get install -y -q \
                --no-install-recommends $packages; } >"$rootfs.log" 2>&1; then
        echo "build.sh: apt-get install $packages in $suite failed; its log ends with:" >&2
        tail -20 "$rootfs.log" >&2
        exit 1
    fi
    rm -f "$rootfs.log"
    umount "$rootfs/proc"
    rm -f "$rootfs/usr/sbin/policy-rc.d"
    for package in $packages; do
        version="$(chroot "$rootfs" dpkg-query -W -f '${Version}' "$package")"
        package_label="$package_label $package=$version"
    done
    package_label="${package_label# }"
fi

# What an image needs at run time only: no package caches, docs or apt lists.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/locale/*
python="$(chroot "$rootfs" python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"

tar --numeric-owner -C "$rootfs" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --change "LABEL org.mlscope.base=debootstrap org.mlscope.suite=$suite org.mlscope.python=$python" \
    --change "LABEL org.mlscope.packages=\"$package_label\"" \
    - "$tag" >/dev/null
echo "built $tag (Debian $suite, Python $python${package_label:+, $package_label}): debootstrap ${bootstrapped}s, total $((SECONDS - started))s, $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')"
