// CUDA kernels against the CPU reference. Skips itself where the addon is not built or no GPU exists.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compile } from '../../compiler/compile.js';
import { runPlanCpu } from '../../runtime/launch/cpu.js';
import { runPlanCuda } from '../../runtime/launch/cuda.js';
import { writePlan } from '../../src/core/plan/io.js';
import { describe, expect, it } from 'vitest';
import { importOnnx } from '../../compiler/onnx/import.js';
import { runGraph } from '../../runtime/backends/cpu/interpreter.js';
import { Cuda } from '../../runtime/backends/cuda/device.js';
import { runGraphCuda } from '../../runtime/backends/cuda/graph.js';
import { cudaAvailable, nativeCuda, requireCuda } from '../../runtime/backends/cuda/native.js';
import { ModelBuilder } from '../../src/core/ir/builder.js';
import type { Attrs, Value } from '../../src/core/ir/graph.js';
import { type Tensor, bf16ToFloat, floatToBf16, floatToHalf, halfToFloat, tensor } from '../../src/core/ir/tensor.js';
import { allOps } from '../../src/core/ops/index.js';
import { Rng } from '../../src/core/util/random.js';
import { fixturePath } from '../helpers/fixtures.js';
import { prepareJob } from '../../src/app/api/train/job.js';
import { CpuTrainer } from '../../src/app/api/train/trainer.js';
import { randomFeeds } from '../helpers/inputs.js';
import { biasedAttentionCase } from '../helpers/attention.js';
import { maxRelError } from '../helpers/compare.js';
import { KERNEL_CASES, caseErrors, caseName, convCases, outShape } from '../helpers/cuda_cases.js';

const gpu = cudaAvailable();
const hasNvcc = spawnSync('nvcc', ['--version']).status === 0;

describe('the CUDA addon', () => {
  it.runIf(hasNvcc)('opens NCCL at its first use, or says that it is not installed', () => {
    const n = nativeCuda()!;
    let id: Uint8Array | undefined;
    try {
      id = n.ncclUniqueId();
    } catch (e) {
      expect((e as Error).message).toMatch(/NCCL is not installed \(tried libnccl\.so\.2, libnccl\.so\); multi-GPU runs need NCCL 2\.x/);
    }
    if (id) expect(id.length).toBe(128);
    expect(() => n.ncclInit(new Uint8Array(5), 1, 0)).toThrow(/an NCCL unique id is 128 bytes, not 5|NCCL is not installed/);
  });

  it.runIf(gpu)('runs a one-rank NCCL communicator: all-reduce, split, abort', () => {
    const dev = new Cuda();
    const n = dev.n;
    const comm = n.ncclInit(n.ncclUniqueId(), 1, 0);
    const x = dev.upload(tensor('float32', [4], [1, 2, 3, 4]));
    n.ncclAllReduce(comm, 0, x.ptr, 4);
    expect(Array.from(dev.download(x).data)).toEqual([1, 2, 3, 4]);
    const sub = n.ncclSplit(comm, 0, 0);
    n.ncclAllReduce(sub, 0, x.ptr, 4);
    expect(n.ncclAsyncError(sub)).toBeNull();
    n.ncclClose(sub, false);
    n.ncclClose(comm, true);
    dev.freeAll();
  });

  it.runIf(hasNvcc)('is built where nvcc exists, and reports the device or its absence', () => {
    const n = nativeCuda();
    expect(n).not.toBeNull();
    const info = n!.info();
    if (info) expect(info.name).toMatch(/\w/);
    else expect(() => requireCuda()).toThrow(/no CUDA device is visible/);
  });
});

interface Case { op: string; inputs: (number[] | { shape: number[]; int?: number; bool?: boolean; positive?: boolean; asFloat?: boolean })[]; attrs?: Attrs; outputs?: number; tol?: number }
const CASES: Case[] = [
  ...['Neg', 'Abs', 'Exp', 'Tanh', 'Sigmoid', 'Relu', 'HardSwish', 'Erf', 'Floor', 'Ceil', 'Sin', 'Cos'].map((op) => ({ op, inputs: [[33, 17]] })),
  ...['Log', 'Sqrt', 'Reciprocal'].map((op) => ({ op, inputs: [{ shape: [9, 13], positive: true }] })),
  { op: 'LeakyRelu', inputs: [[5, 7]], attrs: { alpha: 0.1 } },
  { op: 'HardSigmoid', inputs: [[5, 7]] },
  { op: 'Gelu', inputs: [[5, 300]] },
  { op: 'Gelu', inputs: [[5, 300]], attrs: { approximate: 'tanh' } },
  ...['Add', 'Sub', 'Mul', 'Div'].map((op) => ({ op, inputs: [[4, 3, 65], [3, 1]] })),
  { op: 'Where', inputs: [{ shape: [3, 1], bool: true }, [3, 40], [40]] },
  { op: 'Softmax', inputs: [[6, 1000]] },
  { op: 'LogSoftmax', inputs: [[6, 37]] },
  { op: 'LayerNormalization', inputs: [[8, 256], [256], [256]] },
  { op: 'MatMul', inputs: [[64, 48], [48, 80]] },
  { op: 'MatMul', inputs: [[3, 4, 17, 9], [3, 4, 9, 21]] },
  { op: 'MatMul', inputs: [[2, 16, 32], [32, 96]] },
  { op: 'Transpose', inputs: [[2, 3, 4, 5]], attrs: { perm: [0, 2, 1, 3] } },
  { op: 'Reshape', inputs: [[2, 3, 4]], attrs: { shape: [6, 4] } },
  { op: 'Split', inputs: [[2, 16, 96]], attrs: { axis: -1, split: [32, 32, 32] }, outputs: 3 },
  { op: 'Slice', inputs: [[6, 8]], attrs: { starts: [1, 7], ends: [5, 0], axes: [0, 1], steps: [2, -3] } },
  { op: 'Gather', inputs: [[64, 32], { shape: [2, 16], int: 64 }] },
  { op: 'Expand', inputs: [[3, 1]], attrs: { shape: [2, 3, 5] } },
  { op: 'GeluGrad', inputs: [[7, 9], [7, 9]] },
  { op: 'ReduceSum', inputs: [[4, 6, 5]], attrs: { axes: [1] } },
  { op: 'ReduceMean', inputs: [[4, 6, 5]], attrs: { axes: [0, 2], keepdims: 0 } },
  { op: 'ReduceMax', inputs: [[4, 6, 5]], attrs: { axes: [2] } },
  ...['Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual'].map((op) => ({ op, inputs: [{ shape: [4, 5], int: 3, asFloat: true }, { shape: [5], int: 3, asFloat: true }] })),
  { op: 'Concat', inputs: [[2, 3, 4], [2, 5, 4]], attrs: { axis: 1 } },
  { op: 'Sum', inputs: [[3, 4], [3, 4], [3, 4]] },
  { op: 'GatherGrad', inputs: [[2, 16, 32], { shape: [2, 16], int: 64 }], attrs: { axis: 0, shape: [64, 32] } },
  { op: 'LayerNormalizationGradInput', inputs: [[8, 64], [8, 64], [64]] },
  { op: 'LayerNormalizationGradParams', inputs: [[8, 64], [8, 64]], outputs: 2 },
  { op: 'SoftmaxCrossEntropyLoss', inputs: [[16, 64], { shape: [16], int: 64 }] },
  { op: 'SoftmaxCrossEntropyLoss', inputs: [[16, 64], { shape: [16], int: 64 }], attrs: { reduction: 'sum' } },
  { op: 'SoftmaxCrossEntropyLossGrad', inputs: [{ shape: [], positive: true }, [16, 64], { shape: [16], int: 64 }] },
  // Shapes that reach the collapsed and tiled paths: flat same-shape maps, a bias over rows, a
  // mask over heads, column reductions over many rows (two-stage, several row chunks).
  { op: 'Add', inputs: [[4, 7, 33], [4, 7, 33]] },
  { op: 'Mul', inputs: [[4, 7, 33], []] },
  { op: 'Add', inputs: [[2, 9, 130], [130]] },
  { op: 'Where', inputs: [{ shape: [17, 17], bool: true }, [2, 3, 17, 17], []] },
  { op: 'ReduceSum', inputs: [[3, 700, 45]], attrs: { axes: [0, 1] } },
  { op: 'ReduceSum', inputs: [[3, 700, 45]], attrs: { axes: [1], keepdims: 0 } },
  { op: 'ReduceMean', inputs: [[1500, 33]], attrs: { axes: [0] } },
  { op: 'ReduceMax', inputs: [[1500, 33]], attrs: { axes: [0] } },
  { op: 'LayerNormalizationGradParams', inputs: [[2100, 96], [2100, 96]], outputs: 2 },
  // 16-byte vector paths (contiguous, bias rows, scalars) and LayerNorm rows too wide for a warp.
  { op: 'Add', inputs: [[4, 16, 64], [64]] },
  { op: 'Add', inputs: [[64], [4, 16, 64]] },
  { op: 'Sub', inputs: [[2, 8, 32], [2, 8, 32]] },
  { op: 'Mul', inputs: [[16, 64], []] },
  { op: 'Tanh', inputs: [[8, 64]] },
  { op: 'Gelu', inputs: [[8, 64]], attrs: { approximate: 'tanh' } },
  { op: 'GeluGrad', inputs: [[16, 64], [16, 64]], attrs: { approximate: 'tanh' } },
  { op: 'LayerNormalization', inputs: [[3, 5000], [5000], [5000]] },
  { op: 'LayerNormalizationGradInput', inputs: [[3, 5000], [3, 5000], [5000]] },
  { op: 'LayerNormalizationGradParams', inputs: [[3, 5000], [3, 5000]], outputs: 2 },
  { op: 'Split', inputs: [[2, 16, 192]], attrs: { axis: -1, split: [64, 64, 64] }, outputs: 3 },
  { op: 'Concat', inputs: [[2, 16, 64], [2, 16, 64], [2, 16, 64]], attrs: { axis: -1 } },
  { op: 'Concat', inputs: [[3, 8], [5, 8]], attrs: { axis: 0 } },
  { op: 'FusedMatMul', inputs: [[3, 9, 17], [3, 21, 9]], attrs: { transA: 1, transB: 1, alpha: 0.5 } },
  { op: 'FusedMatMul', inputs: [[2, 16, 32], [48, 32]], attrs: { transA: 0, transB: 1, alpha: 1 } },
  { op: 'FusedMatMul', inputs: [[300, 24], [300, 40]], attrs: { transA: 1, transB: 0, alpha: 0.125 } },
  // Fused attention: head size 64 and 128 take the tensor-core path in bf16, others the generic one.
  { op: 'FusedAttention', inputs: [[2, 64, 128], [2, 64, 128], [2, 64, 128]], attrs: { heads: 2, scale: 0.125, causal: 1 }, outputs: 2, tol: 1e-4 },
  { op: 'FusedAttention', inputs: [[2, 37, 64], [2, 37, 64], [2, 37, 64]], attrs: { heads: 2, scale: 0.17, causal: 0 }, outputs: 2, tol: 1e-4 },
  { op: 'FusedAttention', inputs: [[1, 130, 256], [1, 130, 256], [1, 130, 256]], attrs: { heads: 2, scale: 0.09, causal: 1 }, outputs: 2, tol: 1e-4 },
  // GatedUnit over a Llama-sized MLP row block (many grid blocks), each activation, and its gradient.
  ...['silu', 'gelu_tanh', 'gelu'].flatMap((activation): Case[] => [
    { op: 'GatedUnit', inputs: [[2, 64, 1376], [2, 64, 1376]], attrs: { activation } },
    { op: 'GatedUnitGrad', inputs: [[2, 64, 1376], [2, 64, 1376], [2, 64, 1376]], attrs: { activation }, outputs: 2 },
  ]),
  { op: 'GatedUnit', inputs: [[1], [1]] },
  // Einsum at attention sizes (one batched GEMM each, B read transposed for the scores), heads in
  // the middle (both operands permuted), a broadcast ellipsis and a three-operand chain.
  { op: 'Einsum', inputs: [[2, 8, 64, 64], [2, 8, 96, 64]], attrs: { equation: 'bhqd,bhkd->bhqk' } },
  { op: 'Einsum', inputs: [[2, 8, 64, 96], [2, 8, 96, 64]], attrs: { equation: 'bhqk,bhkd->bhqd' } },
  { op: 'Einsum', inputs: [[2, 48, 4, 32], [2, 40, 4, 32]], attrs: { equation: 'bqhd,bkhd->bhqk' } },
  { op: 'Einsum', inputs: [[4, 1, 32, 48], [1, 3, 48, 40]], attrs: { equation: '...ij,...jk->...ik' } },
  { op: 'Einsum', inputs: [[64, 96], [96, 80], [80, 48]], attrs: { equation: 'ij,jk,kl->il' } },
  { op: 'Einsum', inputs: [[33, 257]], attrs: { equation: 'ij->ji' } },
  { op: 'Einsum', inputs: [[33, 257]], attrs: { equation: 'ij->i' } },
  // GatherND over an embedding-sized table (rows, single elements, batch_dims 1) and its scatter-add
  // gradient with repeated rows (atomics: sums within float rounding of the CPU's).
  { op: 'GatherND', inputs: [[512, 96], { shape: [4, 64, 1], int: 512 }] },
  { op: 'GatherND', inputs: [[64, 32, 8], { shape: [300, 3], int: 8 }] },
  { op: 'GatherND', inputs: [[4, 128, 64], { shape: [4, 33, 1], int: 128 }], attrs: { batch_dims: 1 } },
  { op: 'GatherNDGrad', inputs: [[4, 64, 96], { shape: [4, 64, 1], int: 16 }], attrs: { shape: [16, 96] } },
  { op: 'GatherNDGrad', inputs: [[4, 33, 64], { shape: [4, 33, 1], int: 8 }], attrs: { batch_dims: 1, shape: [4, 128, 64] } },
];

function makeInputs(c: Case, rng: Rng): Tensor[] {
  return c.inputs.map((s) => {
    const spec = Array.isArray(s) ? { shape: s } : s;
    const n = spec.shape.reduce((a, b) => a * b, 1);
    if (spec.int !== undefined) return tensor(spec.asFloat ? 'float32' : 'int64', spec.shape, Array.from({ length: n }, () => rng.int(spec.int!)));
    if (spec.bool) return tensor('bool', spec.shape, Array.from({ length: n }, () => rng.int(2)));
    return tensor('float32', spec.shape, Array.from({ length: n }, () => (c.op === 'Div' || spec.positive ? 0.5 + rng.next() : 2 * rng.normal())));
  });
}

describe.runIf(gpu)('CUDA kernels match the CPU kernels', () => {
  it.each(CASES.map((c) => [`${c.op} ${JSON.stringify(c.attrs ?? {})}`, c] as const))('%s', (_, c) => {
    const rng = new Rng(3);
    const ins = makeInputs(c, rng);
    const b = new ModelBuilder('k');
    const vals = ins.map((t, i) => b.input(`x${i}`, t.dtype, t.shape));
    const outs = b.ops(c.op, vals, c.attrs ?? {}, c.outputs ?? 1);
    outs.forEach((o, i) => b.output(o, `y${i}`));
    const g = b.finish();
    const feeds = Object.fromEntries(ins.map((t, i) => [`x${i}`, t]));
    const cpu = runGraph(g, feeds);
    // The bfloat16 reference sees the same rounded inputs (Floor of 2.999 is 3 once it is bf16).
    const rounded = Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, t.dtype === 'float32' ? tensor('float32', t.shape, Array.from(t.data, (x) => bf16ToFloat(floatToBf16(x)))) : t]));
    const cpuBf16 = runGraph(g, rounded);
    const cpuF16 = runGraph(g, Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, t.dtype === 'float32' ? tensor('float32', t.shape, Array.from(t.data, (x) => halfToFloat(floatToHalf(x)))) : t])));
    const f32 = runGraphCuda(g, feeds, 'float32');
    const bf16 = runGraphCuda(g, feeds, 'bfloat16');
    const f16 = runGraphCuda(g, feeds, 'float16');
    for (const [k, ref] of cpu) {
      expect(maxRelError(f16.get(k)!, cpuF16.get(k)!), `${k} float16`).toBeLessThanOrEqual(5e-3);
      expect(maxRelError(f32.get(k)!, ref), `${k} float32`).toBeLessThanOrEqual(c.tol ?? 1e-5);
      // bfloat16 keeps 8 bits of mantissa: rounding the output (and float32 accumulation inside)
      // is about 2^-8 ≈ 4e-3 of the tensor's scale.
      expect(maxRelError(bf16.get(k)!, cpuBf16.get(k)!), `${k} bfloat16`).toBeLessThanOrEqual(1e-2);
    }
  });

  it('cover every registry op they claim', () => {
    const tested = new Set([...CASES, ...KERNEL_CASES].map((c) => c.op));
    // Views share one kernel (Reshape's); Cast is checked by the round trip below; Pow by the fixture.
    // FusedAttentionGrad needs its forward's log-sum-exp: its own test below runs the pair.
    for (const d of allOps()) if (d.cuda && !['Pow', 'Identity', 'Flatten', 'Squeeze', 'Unsqueeze', 'FusedAttentionGrad'].includes(d.op)) expect(tested.has(d.op), d.op).toBe(true);
  });

  it('round-trip bfloat16 casts', () => {
    const dev = new Cuda();
    const x = tensor('float32', [5], [1, -2.5, 3.140625, 1e-3, 65504]);
    const d = dev.upload(x);
    const h = dev.alloc('bfloat16', [5]);
    const back = dev.alloc('float32', [5]);
    dev.cast(d, h);
    dev.cast(h, back);
    // Round to nearest even, as the host conversion does: 1e-3 → 0.00099945…, 65504 → 65536.
    expect(Array.from(dev.download(back).data)).toEqual(Array.from(x.data, (v) => bf16ToFloat(floatToBf16(v))));
    expect(dev.download(back).data[4]).toBe(65536);
    dev.freeAll();
  });
});

describe.runIf(gpu)('fused attention on CUDA', () => {
  // The last column is a causal sliding window (0: none): on both head sizes of the tensor-core path and the generic one.
  // Then a causal sliding window (0: none) and the key/value heads (0: as many as the query heads), on
  // both head sizes of the tensor-core path and the generic one.
  const shapes: [number, number, number, number, number, number, number][] = [[2, 64, 128, 2, 1, 0, 0], [2, 37, 64, 2, 0, 0, 0], [1, 130, 256, 2, 1, 0, 0], [2, 200, 512, 4, 1, 0, 0], [1, 33, 48, 3, 1, 0, 0],
    [1, 300, 256, 2, 1, 17, 0], [2, 257, 128, 2, 1, 64, 0], [1, 65, 192, 2, 1, 10, 0], [1, 200, 64, 2, 1, 33, 0],
    [2, 129, 512, 8, 1, 0, 2], [1, 200, 1024, 8, 0, 0, 4], [1, 70, 384, 4, 1, 0, 1], [1, 257, 512, 8, 1, 40, 2]];
  it.each(shapes)('forward and gradient of B %i, T %i, D %i, %i heads, causal %i, window %i, kv heads %i match the CPU kernels', (B, T, D, H, causal, window, kvHeads) => {
    const b = new ModelBuilder('attn');
    const Dk = kvHeads ? (D / H) * kvHeads : D;
    const [q, dout] = ['q', 'dout'].map((n) => b.input(n, 'float32', [B, T, D])) as [Value, Value];
    const [k, v] = ['k', 'v'].map((n) => b.input(n, 'float32', [B, T, Dk])) as [Value, Value];
    const attrs = { heads: H, scale: 1 / Math.sqrt(D / H), causal, window, kv_heads: kvHeads };
    const [o, lse] = b.ops('FusedAttention', [q, k, v], attrs, 2) as [Value, Value];
    const grads = b.ops('FusedAttentionGrad', [dout, q, k, v, o, lse], attrs, 3);
    [o, lse, ...grads].forEach((x, i) => b.output(x, `y${i}`));
    const g = b.finish();
    const rng = new Rng(11);
    const feeds = Object.fromEntries(['q', 'k', 'v', 'dout'].map((n) => {
      const w = n === 'k' || n === 'v' ? Dk : D;
      return [n, tensor('float32', [B, T, w], Array.from({ length: B * T * w }, () => rng.normal()))];
    }));
    const cpu = runGraph(g, feeds);
    const rounded = Object.fromEntries(Object.entries(feeds).map(([n, t]) => [n, tensor('float32', t.shape, Array.from(t.data, (x) => bf16ToFloat(floatToBf16(x))))]));
    const cpuBf16 = runGraph(g, rounded);
    const f32 = runGraphCuda(g, feeds, 'float32');
    const bf16 = runGraphCuda(g, feeds, 'bfloat16');
    for (const [name, ref] of cpu) {
      expect(maxRelError(f32.get(name)!, ref), `${name} float32`).toBeLessThanOrEqual(1e-4);
      // bf16 inputs and outputs, float32 softmax statistics: P is rounded to bf16 before P·V on
      // tensor cores, a few roundings of 2^-8 each.
      expect(maxRelError(bf16.get(name)!, cpuBf16.get(name)!), `${name} bfloat16`).toBeLessThanOrEqual(3e-2);
    }
  });
});

describe.runIf(gpu)('fused attention with a bias and cross-attention on CUDA', () => {
  // B, Tq, Tk, D, heads, causal, bias shape: T5's per-head bias shared over the batch, a per-batch
  // one, cross-attention (Tk ≠ Tq); head sizes 64 and 128 (the tensor-core sizes: a bias takes the generic kernels) and 16.
  const shapes: [number, number, number, number, number, number, number[]][] = [
    [2, 64, 64, 128, 2, 0, [1, 2, 64, 64]], [2, 64, 64, 256, 2, 1, [1, 2, 64, 64]], [2, 37, 77, 128, 2, 0, [1, 2, 37, 77]],
    [2, 70, 70, 64, 4, 1, [2, 1, 70, 70]], [1, 130, 33, 256, 2, 0, [1, 1, 130, 33]], [2, 40, 40, 128, 2, 0, [2, 2, 40, 40]],
  ];
  it.each(shapes)('forward, gradient and dscores of B %i, Tq %i, Tk %i, D %i, %i heads, causal %i, bias %j match the CPU kernels', (B, Tq, Tk, D, H, causal, biasShape) => {
    const b = new ModelBuilder('attn');
    const feeds = biasedAttentionCase(b, B, Tq, Tk, D, H, causal === 1, biasShape, 13);
    const g = b.finish();
    const cpu = runGraph(g, feeds);
    const rounded = Object.fromEntries(Object.entries(feeds).map(([n, t]) => [n, tensor('float32', t.shape, Array.from(t.data, (x) => bf16ToFloat(floatToBf16(x))))]));
    const cpuBf16 = runGraph(g, rounded);
    const f32 = runGraphCuda(g, feeds, 'float32');
    const bf16 = runGraphCuda(g, feeds, 'bfloat16');
    for (const [name, ref] of cpu) {
      expect(maxRelError(f32.get(name)!, ref), `${name} float32`).toBeLessThanOrEqual(1e-4);
      expect(maxRelError(bf16.get(name)!, cpuBf16.get(name)!), `${name} bfloat16`).toBeLessThanOrEqual(3e-2);
    }
  });
});

describe.runIf(gpu)('CUDA views', () => {
  it('make Reshape free of copies in a graph run, with the same results', () => {
    const b = new ModelBuilder('views');
    const x = b.input('x', 'float32', [4, 6]);
    const r = b.op('Reshape', [x], { shape: [2, 12] });
    const y = b.op('Relu', [r]);
    b.output(b.op('Reshape', [y], { shape: [24] }), 'y');
    const g = b.finish();
    const feeds = { x: tensor('float32', [4, 6], Array.from({ length: 24 }, (_, i) => i - 12)) };
    const dev = new Cuda();
    const out = runGraphCuda(g, feeds, 'float32', dev);
    expect(Array.from(out.get('y')!.data)).toEqual(Array.from(runGraph(g, feeds).get('y')!.data));
    expect(dev.allocations).toBe(0);
  });
});

describe.runIf(gpu)('the GPT fixture on the GPU', () => {
  it('computes the forward the CPU computes (float32 ≤ 1e-5, bfloat16 ≤ 5e-2)', () => {
    const g = importOnnx(fixturePath('gpt'), { batch: 4 });
    const feeds = randomFeeds(g, 4, 5);
    const ref = runGraph(g, feeds).get('logits')!;
    expect(maxRelError(runGraphCuda(g, feeds, 'float32').get('logits')!, ref)).toBeLessThanOrEqual(1e-5);
    // Two blocks of bf16 activations and weights: errors of ~2^-8 per op compound over ~30 ops.
    expect(maxRelError(runGraphCuda(g, feeds, 'bfloat16').get('logits')!, ref)).toBeLessThanOrEqual(5e-2);
  });
});

describe.runIf(gpu)('training the GPT fixture on the GPU', () => {
  it('reproduces the CPU run\'s losses (float32 ≤ 1e-4 relative; bfloat16 ≤ 3e-2)', () => {
    const job = () => prepareJob({ model: fixturePath('gpt'), loss: 'auto', steps: 5, batch: 8, microbatches: 2, optimizer: { kind: 'adamw', lr: 1e-2 }, seed: 4 });
    const cpu = job(), f32 = job(), bf16 = job();
    const f32Run = new CpuTrainer(f32.training, { optimizer: { kind: 'adamw', lr: 1e-2 }, runner: (g, feeds) => runGraphCuda(g, feeds, 'float32') });
    const bf16Run = new CpuTrainer(bf16.training, { optimizer: { kind: 'adamw', lr: 1e-2 }, runner: (g, feeds) => runGraphCuda(g, feeds, 'bfloat16') });
    for (let s = 0; s < 5; s++) {
      const batch = cpu.data.next(8);
      const mbs = [0, 1].map((k) => Object.fromEntries(Object.entries(batch).map(([n, t]) => [n, tensor(t.dtype, [4, ...t.shape.slice(1)], t.data.subarray(k * (t.data.length / 2), (k + 1) * (t.data.length / 2)))])));
      const a = cpu.trainer.step(mbs).loss, b = f32Run.step(mbs).loss, c = bf16Run.step(mbs).loss;
      expect(Math.abs(b - a) / a, `step ${s + 1} float32`).toBeLessThanOrEqual(1e-4);
      // bf16 activations and weights (float32 master copy on the host): per-op rounding of 2^-8
      // compounds through ~200 ops of forward and backward; the loss drifts by well under 3%.
      expect(Math.abs(c - a) / a, `step ${s + 1} bfloat16`).toBeLessThanOrEqual(3e-2);
    }
  }, 120_000);
});

describe.runIf(gpu)('cleave run --backend cuda', () => {
  it('trains a one-rank plan with the losses of the CPU ranks (float32 ≤ 1e-4; bf16 ≤ 3e-2; fp16 ≤ 1e-2)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cleave-gpu-'));
    const opt = { kind: 'adamw' as const, lr: 1e-2 };
    const job = prepareJob({ model: fixturePath('gpt'), loss: 'auto', steps: 4, batch: 8, microbatches: 1, optimizer: opt, seed: 6 });
    const batches = Array.from({ length: 4 }, () => job.data.next(8));
    const results: number[][] = [];
    for (const policy of ['fp32', 'bf16', 'fp16'] as const) {
      const file = join(dir, `${policy}.plan`);
      writePlan(file, compile({ model: fixturePath('gpt'), loss: 'auto', partitions: 1, microbatches: 2, schedule: '1f1b', batch: 8, policy }).plan);
      results.push((await runPlanCuda({ planFile: file, data: { kind: 'batches', batches }, steps: 4, optimizer: opt })).steps.map((s) => s.loss));
    }
    const cpuFile = join(dir, 'cpu.plan');
    writePlan(cpuFile, compile({ model: fixturePath('gpt'), loss: 'auto', partitions: 1, microbatches: 2, schedule: '1f1b', batch: 8 }).plan);
    const cpu = (await runPlanCpu({ planFile: cpuFile, data: { kind: 'batches', batches }, steps: 4, optimizer: opt })).steps.map((s) => s.loss);
    cpu.forEach((l, i) => {
      expect(Math.abs(results[0]![i]! - l) / l, `float32 step ${i + 1}`).toBeLessThanOrEqual(1e-4);
      expect(Math.abs(results[1]![i]! - l) / l, `bfloat16 step ${i + 1}`).toBeLessThanOrEqual(3e-2);
      expect(Math.abs(results[2]![i]! - l) / l, `float16 step ${i + 1}`).toBeLessThanOrEqual(1e-2);
    });
    rmSync(dir, { recursive: true, force: true });
  }, 120_000);
});

describe.runIf(gpu)('launch lists and whole-step CUDA graphs', () => {
  it('replay the eager losses step for step (float32 and bf16)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cleave-gpu-graph-'));
    const opt = { kind: 'adamw' as const, lr: 1e-2 };
    const job = prepareJob({ model: fixturePath('gpt'), loss: 'auto', steps: 5, batch: 8, microbatches: 1, optimizer: opt, seed: 9 });
    const batches = Array.from({ length: 5 }, () => job.data.next(8));
    for (const policy of ['fp32', 'bf16'] as const) {
      const file = join(dir, `${policy}.plan`);
      writePlan(file, compile({ model: fixturePath('gpt'), loss: 'auto', partitions: 1, microbatches: 4, schedule: '1f1b', batch: 8, policy }).plan);
      const run = (cudaGraph: boolean, launchLists = true) => runPlanCuda({ planFile: file, data: { kind: 'batches', batches }, steps: 5, optimizer: opt, cudaGraph, launchLists });
      // Every node enqueued from JavaScript each step; launch lists (recorded at step 2 in the step
      // arena, replayed from step 3); the whole step as one graph.
      const eager = (await run(false, false)).steps.map((r) => r.loss);
      const lists = (await run(false)).steps.map((r) => r.loss);
      const graph = (await run(true)).steps.map((r) => r.loss);
      // The same kernels in the same order; only GatherGrad's atomic adds may sum in another order,
      // and cuBLASLt may pick another kernel for the arena's alignments.
      for (const [name, got] of [['lists', lists], ['graph', graph]] as const) {
        eager.forEach((l, i) => expect(Math.abs(got[i]! - l) / Math.abs(l), `${name} ${policy} step ${i + 1}`).toBeLessThanOrEqual(policy === 'fp32' ? 1e-5 : 1e-2));
      }
    }
    rmSync(dir, { recursive: true, force: true });
  }, 120_000);
});

describe.runIf(gpu)('cleave profile on the GPU', () => {
  it('times every signature of a one-rank plan, and partition --profile reads the result', async () => {
    const { profilePlan, writeMeasuredProfile } = await import('../../runtime/launch/profile.js');
    const { readMeasuredProfile, planNodeSignature } = await import('../../compiler/cost/model.js');
    const { attrsFromJson } = await import('../../src/core/plan/attrs.js');
    const dir = mkdtempSync(join(tmpdir(), 'cleave-gpu-profile-'));
    const { plan } = compile({ model: fixturePath('gpt'), loss: 'auto', partitions: 1, microbatches: 2, schedule: '1f1b', batch: 4 });
    const planFile = join(dir, 'gpt.plan');
    writePlan(planFile, plan);
    const r = await profilePlan(planFile, { steps: 1, warmup: 1 });
    const stage = plan.stages[0]!;
    for (const i of [...stage.forward, ...stage.backwardB, ...stage.backwardW]) {
      const n = plan.nodes[i]!;
      expect(r.profile.entries[planNodeSignature(plan, n, attrsFromJson(n.attrs))], n.name).toBeGreaterThan(0);
    }
    const out = join(dir, 'p.json');
    writeMeasuredProfile(out, r.profile);
    expect(Object.keys(readMeasuredProfile(out).entries).length).toBe(Object.keys(r.profile.entries).length);
    const { cli } = await import('../helpers/cli.js');
    const part = cli(['partition', fixturePath('gpt'), '--partitions', '2', '--profile', out, '--json']);
    expect(part.code, part.stderr).toBe(0);
    rmSync(dir, { recursive: true, force: true });
  }, 120_000);
});

describe.runIf(gpu)('CUDA kernels of convolution, pooling, BatchNorm and the smaller ops match the CPU kernels', () => {
  // The cases of test/helpers/cuda_cases.ts, which test/runtime/cuda_emulated.test.ts runs on the
  // host emulation of the addon: here the CUDA code itself.
  it.each(KERNEL_CASES.map((c) => [caseName(c), c] as const))('%s', (_, c) => {
    for (const e of caseErrors(c, (g, feeds, precision) => runGraphCuda(g, feeds, precision))) {
      expect(e.f32, `${e.output} float32`).toBeLessThanOrEqual(c.tol ?? 1e-5);
      expect(e.bf16, `${e.output} bfloat16`).toBeLessThanOrEqual(1e-2);
      expect(e.f16, `${e.output} float16`).toBeLessThanOrEqual(5e-3);
    }
  });

  it.each([1, 2])('convolve three images in chunks of %i', (images) => {
    const x = [3, 4, 7, 8], w = [6, 2, 3, 3], attrs = { group: 2, dilations: [2, 1], pads: [2, 1, 2, 1] };
    const perImage = x[1]! * 9 * outShape('Conv', [x, w], attrs).slice(2).reduce((a, b) => a * b, 1);
    for (const c of convCases(x, w, attrs, 'three images')) {
      const errors = caseErrors(c, (g, feeds, precision) => {
        const dev = new Cuda();
        dev.columnLimit = images * perImage;
        return runGraphCuda(g, feeds, precision, dev);
      });
      for (const e of errors) {
        expect(e.f32, `${caseName(c)} ${e.output} float32`).toBeLessThanOrEqual(1e-5);
        expect(e.bf16, `${caseName(c)} ${e.output} bfloat16`).toBeLessThanOrEqual(1e-2);
        expect(e.f16, `${caseName(c)} ${e.output} float16`).toBeLessThanOrEqual(5e-3);
      }
    }
  });

  it('draw Dropout masks the CPU kernel draws, from the shared generator', async () => {
    const { dropoutRng } = await import('../../src/core/ops/movement.js');
    const b = new ModelBuilder('drop');
    const x = b.input('x', 'float32', [7, 1000]);
    b.ops('Dropout', [x], { ratio: 0.25, training_mode: 1 }, 2).forEach((o, i) => b.output(o, ['y', 'mask'][i]));
    const g = b.finish();
    const feeds = { x: tensor('float32', [7, 1000], Array.from({ length: 7000 }, (_, i) => (i % 17) - 8)) };
    const start = dropoutRng.state;
    const cpu = runGraph(g, feeds);
    const after = dropoutRng.state;
    dropoutRng.state = start;
    const dev = runGraphCuda(g, feeds, 'float32');
    expect(dropoutRng.state).toBe(after);
    expect(Array.from(dev.get('mask')!.data)).toEqual(Array.from(cpu.get('mask')!.data));
    expect(maxRelError(dev.get('y')!, cpu.get('y')!)).toBeLessThanOrEqual(1e-6);
  });
});

describe.runIf(gpu)('training the CNN fixture on the GPU', () => {
  it('reproduces the CPU ranks\' losses with a one-rank plan (float32 ≤ 1e-4; bf16 ≤ 3e-2)', async () => {
    // Conv, BatchNorm on batch statistics (running statistics written back), MaxPool, AveragePool
    // with count_include_pad, GlobalAveragePool, Gemm, and all their gradients.
    const dir = mkdtempSync(join(tmpdir(), 'cleave-gpu-cnn-'));
    const opt = { kind: 'adamw' as const, lr: 1e-2 };
    const job = prepareJob({ model: fixturePath('cnn'), loss: 'auto', steps: 4, batch: 8, microbatches: 2, optimizer: opt, seed: 5 });
    const batches = Array.from({ length: 4 }, () => job.data.next(8));
    const run = { data: { kind: 'batches' as const, batches }, steps: 4, optimizer: opt };
    const losses: Record<string, number[]> = {};
    for (const policy of ['fp32', 'bf16'] as const) {
      const planFile = join(dir, `${policy}.plan`);
      writePlan(planFile, compile({ model: fixturePath('cnn'), loss: 'auto', partitions: 1, microbatches: 2, schedule: '1f1b', batch: 8, policy }).plan);
      if (policy === 'fp32') losses['cpu'] = (await runPlanCpu({ planFile, ...run })).steps.map((r) => r.loss);
      losses[policy] = (await runPlanCuda({ planFile, ...run })).steps.map((r) => r.loss);
    }
    losses['cpu']!.forEach((l, i) => {
      expect(Math.abs(losses['fp32']![i]! - l) / l, `float32 step ${i + 1}`).toBeLessThanOrEqual(1e-4);
      // bf16 activations, weights and running statistics through four Conv + BatchNorm layers.
      expect(Math.abs(losses['bf16']![i]! - l) / l, `bfloat16 step ${i + 1}`).toBeLessThanOrEqual(3e-2);
    });
    rmSync(dir, { recursive: true, force: true });
  }, 120_000);
});
