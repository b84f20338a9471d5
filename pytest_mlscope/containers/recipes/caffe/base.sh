#!/usr/bin/env bash
# The Caffe stack's base: Debian bullseye (Python 3.9), the last Debian release with Caffe
# (python3-caffe, a CPU build), and OpenBLAS for its BLAS (about 5x faster than the reference
# BLAS Debian falls back to). Then `mlscope containers build caffe` builds FROM it.
#
#   mlscope containers base caffe                  # -> mlscope/base:bullseye-caffe
#
# Needs root, debootstrap and a running Docker daemon, as base/build.sh does (MLSCOPE_BASE_BUILD:
# that builder, when it is not beside this folder).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
MLSCOPE_BASE_SUITE=bullseye \
MLSCOPE_BASE_PACKAGES="python3-caffe libopenblas0-pthread" \
    exec bash "${MLSCOPE_BASE_BUILD:-$here/../base/build.sh}" "${1:-mlscope/base:bullseye-caffe}"
