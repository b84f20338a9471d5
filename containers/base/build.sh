#!/usr/bin/env bash
# Builds a minimal Debian base image with Python 3 without pulling from any container registry:
# debootstrap from a Debian package mirror into a folder, then `docker import`. It stands in for
# python:3.11-slim on machines that cannot reach Docker Hub (air-gapped CI, this project's CI):
#
#   containers/base/build.sh                     # -> mlscope/base:bookworm
#   mlscope containers build onnxruntime --base mlscope/base:bookworm
#
# Needs root (debootstrap chroots), debootstrap and a running Docker daemon.
# Environment: MLSCOPE_BASE_SUITE (default bookworm, whose python3 is 3.11), MLSCOPE_BASE_MIRROR
# (default http://deb.debian.org/debian), MLSCOPE_BASE_TAG (default mlscope/base:<suite>).
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

# What an image needs at run time only: no package caches, docs or apt lists.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/locale/*
python="$(chroot "$rootfs" python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"

tar --numeric-owner -C "$rootfs" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --change "LABEL org.mlscope.base=debootstrap org.mlscope.suite=$suite org.mlscope.python=$python" \
    - "$tag" >/dev/null
echo "built $tag (Debian $suite, Python $python): debootstrap ${bootstrapped}s, total $((SECONDS - started))s, $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')"
