#!/usr/bin/env bash
# The Caffe stack's base: Debian bullseye (Python 3.9), the last Debian release with Caffe
# (python3-caffe, a CPU build), and OpenBLAS for its BLAS (about 5x faster than the reference
# BLAS Debian falls back to). Then `mlscope containers build caffe` builds FROM it.
#
#   containers/caffe/base.sh                       # -> mlscope/base:bullseye-caffe
#
# Needs root, debootstrap and a running Docker daemon, as containers/base/build.sh does.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
MLSCOPE_BASE_SUITE=bullseye \
MLSCOPE_BASE_PACKAGES="python3-caffe libopenblas0-pthread" \
    exec bash "$here/../base/build.sh" "${1:-mlscope/base:bullseye-caffe}"
