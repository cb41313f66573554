#!/usr/bin/env bash
# Builds and runs the attention kernel check (needs nvcc and an sm_90 GPU). Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
nvcc -O3 -std=c++17 -arch=sm_90 -Inative/src native/test/attention_check.cu native/src/attention.cu -o /tmp/attn_check
/tmp/attn_check
