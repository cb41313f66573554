// GEMM throughput of cleave's CUDA addon (cuBLAS, float32 accumulation) beside PyTorch's on the same
// card, same shapes. Run on a GPU host: node dist/bench/cuda_gemm.js [size]
import { spawnSync } from 'node:child_process';
import { Cuda } from '../runtime/backends/cuda/device.js';
import { tensor } from '../src/core/ir/tensor.js';
import type { DeviceTensor } from '../src/core/ops/registry.js';

const N = Number(process.argv[2] ?? 4096);
const dev = new Cuda();
const info = dev.n.info()!;
const results: string[] = [`card: ${info.name} (${(info.memoryBytes / 2 ** 30).toFixed(0)} GiB, sm ${info.computeCapability})`];
for (const dtype of ['bfloat16', 'float32'] as const) {
  // Random operands: tensor cores run measurably faster on zeros, which would flatter the figure.
  const rand = (): DeviceTensor => {
    const host = new Float32Array(N * N);
    let s = 7;
    for (let i = 0; i < host.length; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      host[i] = s / 4294967296 - 0.5;
    }
    const f = dev.upload(tensor('float32', [N, N], host));
    if (dtype === 'float32') return f;
    const h = dev.alloc(dtype, [N, N]);
    dev.cast(f, h);
    return h;
  };
  const a = rand(), b = rand(), c = dev.alloc(dtype, [N, N]);
  for (let i = 0; i < 3; i++) dev.matmul(a, b, c);
  dev.n.synchronize();
  const reps = 20;
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) dev.matmul(a, b, c);
  dev.n.synchronize();
  const ms = (performance.now() - t0) / reps;
  results.push(`cleave  ${dtype.padEnd(8)} ${N}³  ${ms.toFixed(3)} ms  ${((2 * N ** 3) / ms / 1e9).toFixed(1)} TFLOP/s`);
  dev.freeAll();
}
// The same products in PyTorch (float32 without TF32, as cleave's float32 path).
const py = `
import torch, time
torch.backends.cuda.matmul.allow_tf32 = False
N = ${N}
for dt, name in ((torch.bfloat16, 'bfloat16'), (torch.float32, 'float32')):
    a = torch.randn(N, N, device='cuda', dtype=dt); b = torch.randn(N, N, device='cuda', dtype=dt)
    for _ in range(3): a @ b
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(20): a @ b
    torch.cuda.synchronize(); ms = (time.perf_counter() - t) / 20 * 1e3
    print(f"pytorch {name:8} {N}³  {ms:.3f} ms  {2 * N**3 / ms / 1e9:.1f} TFLOP/s  (torch {torch.__version__})")
`;
const r = spawnSync('python3', ['-c', py], { encoding: 'utf8' });
results.push(r.status === 0 ? r.stdout.trim() : `pytorch: not run (${(r.stderr || 'python3 missing').trim().split('\n').at(-1)})`);
console.log(results.join('\n'));
