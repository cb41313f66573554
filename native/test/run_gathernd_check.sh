#!/usr/bin/env bash
# Builds and runs the GatherND kernel check (needs nvcc and an sm_90 GPU with ~4 GB free). Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
nvcc -O3 -std=c++17 -arch=sm_90 -Inative/src native/test/gathernd_check.cu native/src/kernels_extra.cu native/src/kernels.cu -o /tmp/gathernd_check
/tmp/gathernd_check
