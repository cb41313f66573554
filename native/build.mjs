// Builds the CUDA addon with nvcc: native/build/cleave_cuda.node. Where nvcc is absent the build is
// skipped (npm ci still succeeds; the CPU backend needs nothing of CUDA).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, 'build', 'cleave_cuda.node');
const sources = ['addon.cpp', 'kernels.cu', 'kernels_extra.cu', 'attention.cu', 'cublas_api.cpp', 'cublaslt_api.cpp', 'gemm.cpp', 'nccl_api.cpp'].map((f) => join(here, 'src', f));

const nvcc = process.env.NVCC ?? (spawnSync('nvcc', ['--version']).status === 0 ? 'nvcc' : '');
if (!nvcc) {
  console.log('cleave: nvcc not found, skipping the CUDA addon (the CPU backend works without it)');
  process.exit(0);
}
// Rebuild only when a source is newer than the addon.
if (existsSync(out) && !process.argv.includes('--force')) {
  const built = statSync(out).mtimeMs;
  if ([...sources, ...['check.h', 'kernels.cuh', 'kernels_extra.cuh', 'attention.cuh', 'cublas_api.h', 'cublaslt_api.h', 'gemm.h', 'nccl_api.h', 'elem.cuh', 'dl.h'].map((f) => join(here, 'src', f))].every((f) => statSync(f).mtimeMs < built)) process.exit(0);
}
const require = createRequire(import.meta.url);
const nodeInclude = join(dirname(dirname(process.execPath)), 'include', 'node');
const addonInclude = require('node-addon-api').include_dir ?? dirname(require.resolve('node-addon-api/napi.h'));
// Hopper (H100, H200) natively; PTX for newer cards. CLEAVE_CUDA_ARCH overrides, e.g. "80;90".
const arch = (process.env.CLEAVE_CUDA_ARCH ?? '90').split(';').flatMap((a) => ['-gencode', `arch=compute_${a},code=sm_${a}`]);
mkdirSync(dirname(out), { recursive: true });
const args = [
  '-O3', '-std=c++17', '-shared', '-Xcompiler', '-fPIC', '-Xcompiler', '-fvisibility=hidden',
  ...arch, '-gencode', `arch=compute_${(process.env.CLEAVE_CUDA_ARCH ?? '90').split(';').at(-1)},code=compute_${(process.env.CLEAVE_CUDA_ARCH ?? '90').split(';').at(-1)}`,
  `-I${nodeInclude}`, `-I${addonInclude}`, '-DNAPI_VERSION=8', '-DNAPI_CPP_EXCEPTIONS', '-DNODE_ADDON_API_DISABLE_DEPRECATED',
  ...sources, '-o', out, '-ldl',
];
console.log(`cleave: building the CUDA addon (${nvcc})`);
try {
  execFileSync(nvcc, args, { stdio: 'inherit' });
} catch {
  console.error('cleave: the CUDA addon failed to build; the CPU backend still works');
  process.exit(process.env.CI_REQUIRE_CUDA ? 1 : 0);
}
