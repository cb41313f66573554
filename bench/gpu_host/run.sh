#!/usr/bin/env bash
# Runs on the GPU host, from the repository root, with .gpuhost/ from pack.sh beside it. Writes every log
# under $OUT (default /tmp/cleave-out): card.txt, build.log, times.txt, and one log per part asked for:
#   GPUTESTS="files [-t pattern]"  vitest on those files, killed after GPUTESTS_S s (default 300) -> gpu_tests.log
#   CHECKS=1                        the native kernel checks (attention, GatedUnit, GatherND)     -> checks.log
#   FULL=gpt2,llama FULLARGS=…      bench/hf_models.ts on those models                             -> full.txt, full.err
#   SINGLE="args"                   bench/gpt_single.ts with those arguments                        -> single.txt, single.err
set -uo pipefail
OUT=${OUT:-/tmp/cleave-out}; mkdir -p "$OUT"
stamp() { echo "$1 $(( $(date +%s) - T0 )) s" >> "$OUT/times.txt"; }
T0=$(date +%s)
mkdir -p /opt/node && tar xJf .gpuhost/node.tar.xz -C /opt/node && export PATH=/opt/node/bin:$PATH
tar xJf .gpuhost/app.tar.xz
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$OUT/card.txt" 2>&1
stamp unpacked
export PATH=/usr/local/cuda/bin:/usr/local/cuda-13.0/bin:$PATH
node native/build.mjs --force > "$OUT/build.log" 2>&1 || { echo "native build failed" >> "$OUT/build.log"; stamp build-failed; exit 1; }
stamp built
if [ -n "${GPUTESTS:-}" ]; then
  # shellcheck disable=SC2086
  timeout "${GPUTESTS_S:-300}" npx vitest run $GPUTESTS > "$OUT/gpu_tests.log" 2>&1; echo "exit $?" >> "$OUT/gpu_tests.log"
  stamp gpu-tests
fi
if [ -n "${CHECKS:-}" ]; then
  for c in attention gated_unit gathernd; do
    echo "== $c" >> "$OUT/checks.log"
    timeout 300 bash "native/test/run_${c}_check.sh" >> "$OUT/checks.log" 2>&1; echo "exit $?" >> "$OUT/checks.log"
  done
  stamp checks
fi
if [ -n "${FULL:-}" ]; then
  # shellcheck disable=SC2086
  node dist/bench/hf_models.js --models "$FULL" ${FULLARGS:-} > "$OUT/full.txt" 2> "$OUT/full.err"; echo "exit $?" >> "$OUT/full.txt"
  stamp hf-models
fi
if [ -n "${SINGLE+x}" ]; then
  # shellcheck disable=SC2086
  node dist/bench/gpt_single.js ${SINGLE} > "$OUT/single.txt" 2> "$OUT/single.err"; echo "exit $?" >> "$OUT/single.txt"
  stamp gpt-single
fi
