// Single-node cases for the CUDA kernels of convolution, pooling, BatchNorm and the smaller ops, run
// against the CPU kernels: on a GPU by test/gpu/cuda.test.ts, on the host emulation of the addon by
// test/runtime/cuda_emulated.test.ts.
import { runGraph } from '../../runtime/backends/cpu/interpreter.js';
import { ModelBuilder } from '../../src/core/ir/builder.js';
import type { DType } from '../../src/core/ir/dtype.js';
import type { Attrs, Graph, Value } from '../../src/core/ir/graph.js';
import { type Tensor, bf16ToFloat, floatToBf16, floatToHalf, halfToFloat, tensor } from '../../src/core/ir/tensor.js';
import { Rng } from '../../src/core/util/random.js';
import { maxRelError } from './compare.js';
import { EINSUM_KERNEL_CASES } from './einsum_cases.js';

/**
 * An input: a float shape (normal values), or integers below `int` (int64, or floats with
 * `asFloat`: ties for MaxPool), bools, positive floats, NaN and ±∞ sprinkled in (`special`), or
 * fixed values; `constant` makes it a graph constant (Range needs its inputs constant).
 */
export type InputSpec = number[] | {
  shape: number[]; int?: number; asFloat?: boolean; bool?: boolean; positive?: boolean; special?: boolean;
  value?: number[]; dtype?: DType; constant?: boolean;
};

export interface KernelCase { op: string; inputs: InputSpec[]; attrs?: Attrs; outputs?: number; tol?: number; label?: string }

/** The output shape of `op` on inputs of these shapes (its shape inference, through a builder). */
export function outShape(op: string, shapes: number[][], attrs: Attrs): number[] {
  const b = new ModelBuilder('shape');
  const ins = shapes.map((s, i) => b.input(`x${i}`, 'float32', s));
  return b.op(op, ins, attrs).shape as number[];
}

/** Conv, ConvGradInput and ConvGradWeight of one geometry. */
export function convCases(x: number[], w: number[], attrs: Attrs, label: string): KernelCase[] {
  const y = outShape('Conv', [x, w], attrs);
  return [
    { op: 'Conv', inputs: [x, w, [w[0]!]], attrs, label },
    { op: 'Conv', inputs: [x, w], attrs, label: `${label}, no bias` },
    { op: 'ConvGradInput', inputs: [y, w], attrs: { ...attrs, shape: x }, label },
    { op: 'ConvGradWeight', inputs: [y, x], attrs: { ...attrs, shape: w }, label },
  ];
}

/** A pool and its gradient. */
function poolCases(op: 'MaxPool' | 'AveragePool', x: InputSpec, attrs: Attrs, label: string): KernelCase[] {
  const xs = Array.isArray(x) ? x : x.shape;
  const y = outShape(op, [xs], attrs);
  return op === 'MaxPool'
    ? [{ op, inputs: [x], attrs, label }, { op: 'MaxPoolGrad', inputs: [y, x], attrs, label }]
    : [{ op, inputs: [x], attrs, label }, { op: 'AveragePoolGrad', inputs: [y], attrs: { ...attrs, shape: xs }, label }];
}

const bn = (x: number[]): InputSpec[] => {
  const c = [x[1]!];
  return [x, c, c, c, { shape: c, positive: true }];
};

export const KERNEL_CASES: KernelCase[] = [
  { op: 'Not', inputs: [{ shape: [5, 7], bool: true }] },
  // Cast to and from integers and bools (Dropout's gradient casts its bool mask; ONNX models cast ids).
  { op: 'Cast', inputs: [{ shape: [5, 7], bool: true }], attrs: { to: 1 }, label: 'bool → float' },
  { op: 'Cast', inputs: [{ shape: [4, 9], int: 1000 }], attrs: { to: 1 }, label: 'int64 → float' },
  { op: 'Cast', inputs: [[3, 11]], attrs: { to: 7 }, label: 'float → int64' },
  { op: 'Cast', inputs: [[3, 11]], attrs: { to: 9 }, label: 'float → bool' },
  { op: 'CastLike', inputs: [{ shape: [4, 9], int: 1000 }, [2]], label: 'int64 like float' },
  { op: 'CastLike', inputs: [[3, 11], { shape: [1], int: 5 }], label: 'float like int64' },
  { op: 'Cast', inputs: [{ shape: [6, 5], int: 70000 }], attrs: { to: 6 }, label: 'int64 → int32' },
  { op: 'Cast', inputs: [{ shape: [4, 5], int: 5_000_000_000 }], attrs: { to: 6 }, label: 'int64 → int32, wrapping' },
  { op: 'Cast', inputs: [{ shape: [4, 5], int: 3 }], attrs: { to: 9 }, label: 'int64 → bool' },
  { op: 'And', inputs: [{ shape: [4, 5], bool: true }, { shape: [5], bool: true }] },
  { op: 'Or', inputs: [{ shape: [4, 1], bool: true }, { shape: [3, 1, 6], bool: true }] },
  { op: 'IsNaN', inputs: [{ shape: [6, 9], special: true }] },
  { op: 'Min', inputs: [[4, 1, 6], [5, 1], [6]] },
  { op: 'Max', inputs: [[3, 8], [8]] },
  { op: 'Max', inputs: [[3, 8]] },
  { op: 'GatherElements', inputs: [[4, 6, 5], { shape: [4, 3, 5], int: 6 }], attrs: { axis: 1 } },
  { op: 'GatherElements', inputs: [[3, 7], { shape: [5, 4], int: 3 }], attrs: { axis: 0 } },
  { op: 'GatherElementsGrad', inputs: [[4, 3, 5], { shape: [4, 3, 5], int: 6 }], attrs: { axis: 1, shape: [4, 6, 5] } },
  { op: 'Tile', inputs: [[2, 3, 4]], attrs: { repeats: [2, 1, 3] } },
  { op: 'Tile', inputs: [[3, 1]], attrs: { repeats: [2, 4] } },
  { op: 'Trilu', inputs: [[2, 5, 7]], attrs: { upper: 1, k: 1 } },
  { op: 'Trilu', inputs: [[6, 4]], attrs: { upper: 0, k: -1 } },
  { op: 'Dropout', inputs: [[8, 33]], attrs: { ratio: 0.3, training_mode: 1, seed: 7 }, outputs: 2 },
  { op: 'Dropout', inputs: [[8, 33]], attrs: { ratio: 0.3 }, outputs: 2, label: 'inference' },
  { op: 'Shape', inputs: [[2, 3, 4]], attrs: { start: 1 } },
  { op: 'Size', inputs: [[2, 3, 4]] },
  { op: 'Constant', inputs: [], attrs: { value: tensor('float32', [2, 2], [1.5, -2, 0.25, 3]) } },
  { op: 'Constant', inputs: [], attrs: { value_ints: [3, 1, 4] } },
  { op: 'ConstantOfShape', inputs: [], attrs: { shape: [3, 4], value: tensor('float32', [1], [1.5]) } },
  { op: 'ConstantOfShape', inputs: [], attrs: { shape: [2, 5], value: tensor('int64', [1], [7]) } },
  { op: 'Range', inputs: [{ shape: [], value: [1.5], constant: true }, { shape: [], value: [7], constant: true }, { shape: [], value: [0.5], constant: true }] },
  { op: 'Range', inputs: [10, 2, -3].map((v) => ({ shape: [], value: [v], dtype: 'int64' as const, constant: true })) },
  { op: 'ReduceMin', inputs: [[4, 6, 5]], attrs: { axes: [1] } },
  { op: 'ReduceMin', inputs: [[4, 6, 5]], attrs: { axes: [0, 2], keepdims: 0 } },
  { op: 'Gemm', inputs: [[5, 7], [7, 9], [9]] },
  { op: 'Gemm', inputs: [[5, 7], [16, 7], [16]], attrs: { transB: 1 }, label: 'bias epilogue' },
  // GEMM epilogues: N a multiple of 8 takes cuBLASLt's fused epilogue, N = 20 and batched B the
  // unfused kernels where cuBLASLt has none (the host emulation refuses N % 8 ≠ 0 as cuBLASLt may).
  { op: 'FusedMatMul', inputs: [[2, 16, 32], [32, 48], [48]], attrs: { epilogue: 'bias' } },
  { op: 'FusedMatMul', inputs: [[2, 16, 32], [32, 20], [20]], attrs: { epilogue: 'bias' }, label: 'N 20' },
  { op: 'FusedMatMul', inputs: [[40, 16], [24, 40], [24]], attrs: { epilogue: 'bias', transA: 1, transB: 1, alpha: 0.5 } },
  { op: 'FusedMatMul', inputs: [[3, 9, 17], [3, 17, 8], [8]], attrs: { epilogue: 'bias' }, label: 'batched B' },
  { op: 'FusedMatMul', inputs: [[2, 16, 32], [32, 64], [64]], attrs: { epilogue: 'gelu_bias' }, outputs: 2 },
  { op: 'FusedMatMul', inputs: [[2, 16, 32], [32, 64], [64]], attrs: { epilogue: 'gelu_bias' }, label: 'no pre-activation' },
  { op: 'FusedMatMul', inputs: [[2, 16, 32], [32, 20], [20]], attrs: { epilogue: 'gelu_bias' }, outputs: 2, label: 'N 20' },
  { op: 'FusedMatMul', inputs: [[2, 16, 32], [20, 32], [20]], attrs: { epilogue: 'gelu_bias', transB: 1 }, label: 'N 20, no pre-activation' },
  { op: 'FusedMatMul', inputs: [[2, 16, 48], [64, 48], [2, 16, 64]], attrs: { epilogue: 'dgelu', transB: 1 } },
  { op: 'FusedMatMul', inputs: [[2, 16, 48], [20, 48], [2, 16, 20]], attrs: { epilogue: 'dgelu', transB: 1 }, label: 'N 20' },
  { op: 'Gemm', inputs: [[7, 5], [9, 7], [5, 1]], attrs: { transA: 1, transB: 1, alpha: 0.5, beta: 2 } },
  { op: 'Gemm', inputs: [[6, 4], [6, 3]], attrs: { transA: 1 } },
  { op: 'BatchNormalization', inputs: bn([4, 3, 5, 6]), label: 'inference' },
  { op: 'BatchNormalization', inputs: bn([4, 3, 5, 6]), attrs: { training_mode: 1, momentum: 0.8 }, outputs: 3 },
  { op: 'BatchNormalization', inputs: bn([16, 6]), attrs: { training_mode: 1 }, outputs: 3, label: 'rank 2' },
  // 8·1024 elements per channel: several chunks in the two-stage reduction.
  { op: 'BatchNormalization', inputs: bn([8, 4, 32, 32]), attrs: { training_mode: 1 }, outputs: 3, label: 'many chunks' },
  { op: 'BatchNormalizationGradInput', inputs: [[4, 3, 5, 6], ...bn([4, 3, 5, 6])], attrs: { training_mode: 1 } },
  { op: 'BatchNormalizationGradInput', inputs: [[4, 3, 5, 6], ...bn([4, 3, 5, 6])], label: 'inference' },
  { op: 'BatchNormalizationGradParams', inputs: [[4, 3, 5, 6], [4, 3, 5, 6], [3], { shape: [3], positive: true }], attrs: { training_mode: 1 }, outputs: 2 },
  { op: 'BatchNormalizationGradParams', inputs: [[4, 3, 5, 6], [4, 3, 5, 6], [3], { shape: [3], positive: true }], outputs: 2, label: 'inference' },
  ...convCases([2, 3, 9, 9], [4, 3, 3, 3], { pads: [1, 1, 1, 1] }, 'same size'),
  ...convCases([2, 3, 9, 8], [4, 3, 3, 3], { strides: [2, 2], pads: [0, 1, 1, 2] }, 'stride 2, uneven pads'),
  ...convCases([2, 4, 7, 8], [6, 2, 3, 3], { group: 2, dilations: [2, 1], pads: [2, 1, 2, 1] }, 'groups, dilation'),
  ...convCases([2, 6, 5, 5], [6, 1, 3, 3], { group: 6, pads: [1, 1, 1, 1] }, 'depthwise'),
  ...convCases([1, 2, 7, 7], [3, 2, 3, 3], { auto_pad: 'SAME_UPPER', strides: [2, 2] }, 'SAME_UPPER'),
  ...convCases([2, 3, 11], [5, 3, 4], { strides: [3], pads: [1, 2] }, '1-D'),
  ...convCases([1, 2, 5, 4, 6], [3, 2, 2, 3, 2], { pads: [1, 0, 1, 0, 1, 1] }, '3-D'),
  ...poolCases('MaxPool', [2, 3, 9, 9], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }, 'padded'),
  ...poolCases('MaxPool', [1, 2, 7, 7], { kernel_shape: [2, 2], strides: [2, 2], ceil_mode: 1 }, 'ceil_mode'),
  ...poolCases('MaxPool', [2, 2, 9, 8], { kernel_shape: [2, 2], dilations: [2, 2] }, 'dilated'),
  ...poolCases('MaxPool', { shape: [2, 3, 8, 8], int: 3, asFloat: true }, { kernel_shape: [3, 3], strides: [1, 1], pads: [1, 1, 1, 1] }, 'ties'),
  ...poolCases('MaxPool', [2, 3, 10], { kernel_shape: [3], strides: [2] }, '1-D'),
  { op: 'MaxPool', inputs: [[2, 3, 8, 8]], attrs: { kernel_shape: [2, 2], strides: [2, 2] }, outputs: 2, label: 'indices' },
  ...poolCases('AveragePool', [4, 16, 4, 4], { kernel_shape: [3, 3], pads: [1, 1, 1, 1], strides: [1, 1], count_include_pad: 1 }, 'count_include_pad'),
  ...poolCases('AveragePool', [2, 3, 9, 9], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }, 'padding excluded'),
  ...poolCases('AveragePool', [1, 2, 7, 7], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1], ceil_mode: 1, count_include_pad: 1 }, 'ceil_mode, count_include_pad'),
  ...poolCases('AveragePool', [1, 2, 4, 5, 6], { kernel_shape: [2, 3, 2], strides: [2, 1, 2] }, '3-D'),
  { op: 'GlobalAveragePool', inputs: [[2, 3, 5, 7]] },
  { op: 'GlobalAveragePool', inputs: [[2, 3, 11]] },
  { op: 'SliceGrad', inputs: [[2, 3]], attrs: { starts: [1, 7], ends: [5, 0], axes: [0, 1], steps: [2, -3], shape: [6, 8] } },
  { op: 'SliceGrad', inputs: [[2, 5, 4]], attrs: { starts: [1], ends: [6], axes: [1], shape: [2, 9, 4] } },
  // RMSNormalization: rows narrower and wider than a warp's stride, a scale over two axes, and a
  // parameter gradient over many row chunks.
  { op: 'RMSNormalization', inputs: [[6, 7, 64], [64]] },
  { op: 'RMSNormalization', inputs: [[3, 5000], [5000]], label: 'wide rows' },
  { op: 'RMSNormalization', inputs: [[2, 3, 5, 6], [5, 6]], attrs: { axis: -2, epsilon: 1e-3 }, label: 'axis -2' },
  { op: 'RMSNormalizationGradInput', inputs: [[6, 7, 64], [6, 7, 64], [64]] },
  { op: 'RMSNormalizationGradInput', inputs: [[2, 3, 5, 6], [2, 3, 5, 6], [6]], attrs: { axis: 2 }, label: 'axis 2, trailing scale' },
  { op: 'RMSNormalizationGradParams', inputs: [[6, 7, 64], [6, 7, 64]] },
  { op: 'RMSNormalizationGradParams', inputs: [[2100, 96], [2100, 96]], label: 'many chunks' },
  { op: 'Clip', inputs: [[7, 9]], attrs: { min: -0.5, max: 0.8 } },
  { op: 'Clip', inputs: [[7, 9]], attrs: { max: 0.3 }, label: 'max only' },
  { op: 'RotaryEmbedding', inputs: [[2, 3, 5, 8], [2, 5, 4], [2, 5, 4]] },
  { op: 'RotaryEmbedding', inputs: [[2, 4, 12], [6, 2], [6, 2], { shape: [2, 4], value: [0, 1, 2, 3, 5, 4, 2, 0], dtype: 'int64' }], attrs: { num_heads: 2, rotary_embedding_dim: 4, interleaved: 1 }, label: 'position ids, partial, interleaved' },
  { op: 'CumSum', inputs: [[3, 40, 5]], attrs: { axis: 1 } },
  { op: 'CumSum', inputs: [[6, 7]], attrs: { axis: -1, exclusive: 1, reverse: 1 }, label: 'exclusive, reverse' },
  { op: 'InstanceNormalization', inputs: [[2, 3, 5, 6], [3], [3]] },
  { op: 'GroupNormalization', inputs: [[2, 6, 4, 3], [6], [6]], attrs: { num_groups: 3 } },
  { op: 'GroupNormalization', inputs: [[2, 6, 9], [2], [2]], attrs: { num_groups: 2 }, label: 'per group' },
  { op: 'Pad', inputs: [[2, 3, 4]], attrs: { pads: [0, 1, -1, 1, 2, 0], constant_value: 0.5 } },
  { op: 'Pad', inputs: [[3, 5]], attrs: { pads: [2, 1, 1, 4], mode: 'reflect' }, label: 'reflect' },
  { op: 'Pad', inputs: [[3, 4]], attrs: { pads: [2, 3, 1, 5], mode: 'edge' }, label: 'edge' },
  { op: 'PadGrad', inputs: [[6, 8]], attrs: { pads: [1, 0, 2, 4], mode: 'constant', shape: [3, 4] } },
  { op: 'PadGrad', inputs: [[6, 10]], attrs: { pads: [2, 1, 1, 4], mode: 'reflect', shape: [3, 5] }, label: 'reflect' },
  { op: 'PadGrad', inputs: [[6, 12]], attrs: { pads: [2, 3, 1, 5], mode: 'edge', shape: [3, 4] }, label: 'edge' },
  // GatedUnit (SwiGLU/GeGLU gate) and its one-pass gradient, each activation; an odd element count.
  ...['silu', 'gelu_tanh', 'gelu'].flatMap((activation): KernelCase[] => [
    { op: 'GatedUnit', inputs: [[6, 7, 33], [6, 7, 33]], attrs: { activation }, label: activation },
    { op: 'GatedUnitGrad', inputs: [[6, 7, 33], [6, 7, 33], [6, 7, 33]], attrs: { activation }, outputs: 2, label: activation },
  ]),
  { op: 'GatedUnit', inputs: [[5, 3], [5, 3]], label: 'default activation' },
  ...EINSUM_KERNEL_CASES,
  // GatherND (elements moved by width) and GatherNDGrad (float32 atomics, cast once): slices, single
  // elements, negative and repeated tuples, int32 indices, batch_dims 1, and an int64 data copy.
  { op: 'GatherND', inputs: [[6, 5, 7], { shape: [4, 3, 1], int: 6 }], label: 'slices' },
  { op: 'GatherND', inputs: [[4, 5, 3], { shape: [5, 2], value: [0, 4, -1, -5, 3, 2, 0, 4, 1, 1], dtype: 'int64' }], label: 'rows, negative and repeated' },
  { op: 'GatherND', inputs: [[4, 5, 3], { shape: [2, 3, 3], value: [0, 0, 0, 3, 4, 2, -1, -1, -1, 1, 2, 1, 0, 0, 0, 2, -3, 1], dtype: 'int32' }], label: 'single elements, int32' },
  { op: 'GatherND', inputs: [[3, 6, 4, 5], { shape: [3, 7, 2], int: 4 }], attrs: { batch_dims: 1 }, label: 'batch_dims 1' },
  { op: 'GatherND', inputs: [{ shape: [5, 4], int: 1000 }, { shape: [3, 1], value: [4, -5, 2], dtype: 'int64' }], label: 'int64 data' },
  { op: 'GatherNDGrad', inputs: [[4, 3, 5, 7], { shape: [4, 3, 1], int: 6 }], attrs: { shape: [6, 5, 7] }, label: 'slices, repeats' },
  { op: 'GatherNDGrad', inputs: [[2, 3], { shape: [2, 3, 3], value: [0, 0, 0, 3, 4, 2, -1, -1, -1, 0, 0, 0, 3, 4, 2, 1, 2, 1], dtype: 'int32' }], attrs: { shape: [4, 5, 3] }, label: 'single elements, int32, repeats' },
  { op: 'GatherNDGrad', inputs: [[3, 7, 5], { shape: [3, 7, 2], int: 4 }], attrs: { batch_dims: 1, shape: [3, 6, 4, 5] }, label: 'batch_dims 1' },
];

export const caseName = (c: KernelCase): string => `${c.op}${c.label ? ` (${c.label})` : ''} ${JSON.stringify(c.attrs ?? {}, (_, v) => (v && typeof v === 'object' && 'data' in v ? `tensor [${v.shape}]` : v))}`;

function makeInput(spec: InputSpec, rng: Rng): Tensor {
  const s = Array.isArray(spec) ? { shape: spec } : spec;
  const n = s.shape.reduce((a, b) => a * b, 1);
  if (s.value) return tensor(s.dtype ?? 'float32', s.shape, s.value);
  if (s.int !== undefined) return tensor(s.asFloat ? 'float32' : 'int64', s.shape, Array.from({ length: n }, () => rng.int(s.int!)));
  if (s.bool) return tensor('bool', s.shape, Array.from({ length: n }, () => rng.int(2)));
  const t = tensor('float32', s.shape, Array.from({ length: n }, () => (s.positive ? 0.5 + rng.next() : 2 * rng.normal())));
  if (s.special) for (let i = 0; i < n; i += 5) t.data[i] = [NaN, Infinity, -Infinity][(i / 5) % 3]!;
  return t;
}

/** The case as a one-node graph, and its feeds. */
export function caseGraph(c: KernelCase, seed = 3): { g: Graph; feeds: Record<string, Tensor> } {
  const rng = new Rng(seed);
  const b = new ModelBuilder('k');
  const feeds: Record<string, Tensor> = {};
  const vals: Value[] = c.inputs.map((spec, i) => {
    const t = makeInput(spec, rng);
    if (!Array.isArray(spec) && spec.constant) return b.constant(t, `c${i}`);
    feeds[`x${i}`] = t;
    return b.input(`x${i}`, t.dtype, t.shape);
  });
  b.ops(c.op, vals, c.attrs ?? {}, c.outputs ?? 1).forEach((o, i) => b.output(o, `y${i}`));
  return { g: b.finish(), feeds };
}

export type GraphRunner = (g: Graph, feeds: Readonly<Record<string, Tensor>>, precision: 'float32' | 'bfloat16' | 'float16') => Map<string, Tensor>;

/**
 * Each output's error: float32 against the CPU kernel, bfloat16 against the CPU kernel on the
 * same bfloat16-rounded inputs (Floor of 2.999 is 3 once it is bf16).
 */
export function caseErrors(c: KernelCase, run: GraphRunner): { output: string; f32: number; bf16: number; f16: number }[] {
  const { g, feeds } = caseGraph(c);
  const cpu = runGraph(g, feeds);
  // Each 16-bit run is checked against the CPU on the same rounded inputs.
  const roundedBy = (round: (x: number) => number) => runGraph(g, Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, t.dtype === 'float32' ? tensor('float32', t.shape, Array.from(t.data, round)) : t])));
  const cpuBf16 = roundedBy((x) => bf16ToFloat(floatToBf16(x)));
  const cpuF16 = roundedBy((x) => halfToFloat(floatToHalf(x)));
  const f32 = run(g, feeds, 'float32');
  const bf16 = run(g, feeds, 'bfloat16');
  const f16 = run(g, feeds, 'float16');
  return [...cpu].map(([k, ref]) => ({ output: k, f32: maxRelError(f32.get(k)!, ref), bf16: maxRelError(bf16.get(k)!, cpuBf16.get(k)!), f16: maxRelError(f16.get(k)!, cpuF16.get(k)!) }));
}
