#!/usr/bin/env bash
# Builds and runs the GatedUnit kernel check (needs nvcc and an sm_90 GPU with ~30 GB free). Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
nvcc -O3 -std=c++17 -arch=sm_90 -Inative/src native/test/gated_unit_check.cu native/src/kernels_extra.cu native/src/kernels.cu -o /tmp/gated_unit_check
/tmp/gated_unit_check
