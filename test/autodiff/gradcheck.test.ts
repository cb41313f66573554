import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../src/core/ir/builder.js';
import type { DType } from '../../src/core/ir/dtype.js';
import type { Attrs, Value } from '../../src/core/ir/graph.js';
import { type Tensor, tensor } from '../../src/core/ir/tensor.js';
import { allOps } from '../../src/core/ops/index.js';
import { Rng } from '../../src/core/util/random.js';
import { gradCheck } from '../helpers/gradcheck.js';

interface In { shape: number[]; dtype?: DType; values?: number[]; positive?: boolean; ints?: number; fixed?: boolean }
interface Case { op: string; inputs: (In | null)[]; attrs?: Attrs; outputs?: number; label?: string; opset?: number; useOutputs?: number[] }

const f = (...shape: number[]): In => ({ shape });
const pos = (...shape: number[]): In => ({ shape, positive: true });
const fixed = (spec: In): In => ({ ...spec, fixed: true });
const labels = (values: number[], shape = [values.length]): In => ({ shape, dtype: 'int64', values, fixed: true });

/** Differentiable inputs become parameters; the loss is Σ out · R for a fixed random R. */
const CASES: Case[] = [
  { op: 'MatMul', inputs: [f(3, 4), f(4, 5)] },
  { op: 'MatMul', inputs: [f(2, 1, 3, 4), f(3, 4, 2)], label: 'batch broadcast' },
  { op: 'MatMul', inputs: [f(4), f(2, 4, 3)], label: '1-D left' },
  { op: 'MatMul', inputs: [f(2, 3, 4), f(4)], label: '1-D right' },
  { op: 'MatMul', inputs: [f(4), f(4)], label: 'dot' },
  { op: 'Gemm', inputs: [f(3, 4), f(4, 5), f(5)] },
  { op: 'Gemm', inputs: [f(4, 3), f(5, 4), f(3, 1)], attrs: { transA: 1, transB: 1, alpha: 0.5, beta: 2 }, label: 'transposed' },
  { op: 'Gemm', inputs: [f(4, 3), f(4, 5)], attrs: { transA: 1 }, label: 'transA' },
  { op: 'Gemm', inputs: [f(3, 4), f(5, 4)], attrs: { transB: 1 }, label: 'transB' },
  ...['Add', 'Sub', 'Mul', 'Div'].map((op) => ({ op, inputs: [f(2, 3, 4), op === 'Div' ? pos(3, 1) : f(3, 1)] })),
  { op: 'Mul', inputs: [f(2, 3), f()], label: 'scalar' },
  { op: 'Pow', inputs: [pos(3, 4), f(4)] },
  { op: 'Pow', inputs: [pos(3, 4), fixed({ shape: [], values: [2] })], label: 'constant exponent' },
  ...['Sqrt', 'Reciprocal', 'Log'].map((op) => ({ op, inputs: [pos(3, 5)] })),
  ...['Neg', 'Exp', 'Abs', 'Erf', 'Tanh', 'Sigmoid', 'Relu', 'HardSwish', 'Floor', 'Ceil', 'Identity', 'Sin', 'Cos'].map((op) => ({ op, inputs: [f(3, 5)] })),
  { op: 'LeakyRelu', inputs: [f(3, 5)], attrs: { alpha: 0.2 } },
  { op: 'HardSigmoid', inputs: [f(3, 5)] },
  { op: 'Gelu', inputs: [f(3, 5)], opset: 20 },
  { op: 'Gelu', inputs: [f(3, 5)], attrs: { approximate: 'tanh' }, opset: 20, label: 'tanh' },
  { op: 'Softmax', inputs: [f(2, 3, 5)], attrs: { axis: 1 } },
  { op: 'LogSoftmax', inputs: [f(2, 3, 5)] },
  { op: 'LayerNormalization', inputs: [f(2, 3, 8), f(8), f(8)] },
  { op: 'LayerNormalization', inputs: [f(2, 3, 4), f(4)], attrs: { axis: 1 }, label: 'axis 1, broadcast scale, no bias' },
  { op: 'BatchNormalization', inputs: [f(2, 3, 2, 2), f(3), f(3), fixed(f(3)), fixed(pos(3))], label: 'inference' },
  { op: 'BatchNormalization', inputs: [f(4, 3, 2, 2), f(3), f(3), fixed(f(3)), fixed(pos(3))], attrs: { training_mode: 1 }, outputs: 3, useOutputs: [0], label: 'training' },
  { op: 'Conv', inputs: [f(2, 4, 6, 6), f(6, 2, 3, 3), f(6)], attrs: { group: 2, pads: [1, 0, 2, 1], strides: [2, 1], dilations: [1, 2] } },
  { op: 'Conv', inputs: [f(1, 2, 9), f(3, 2, 4)], attrs: { pads: [1, 2] }, label: '1-D' },
  { op: 'MaxPool', inputs: [f(2, 2, 5, 5)], attrs: { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] } },
  { op: 'AveragePool', inputs: [f(2, 2, 5, 5)], attrs: { kernel_shape: [3, 3], pads: [1, 1, 1, 1], count_include_pad: 1 } },
  { op: 'AveragePool', inputs: [f(1, 2, 6, 6)], attrs: { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1], ceil_mode: 1 }, label: 'ceil, exclude pad' },
  { op: 'GlobalAveragePool', inputs: [f(2, 3, 4, 5)] },
  { op: 'Reshape', inputs: [f(2, 3, 4)], attrs: { shape: [0, -1, 2] } },
  { op: 'Transpose', inputs: [f(2, 3, 4)], attrs: { perm: [2, 0, 1] } },
  { op: 'Flatten', inputs: [f(2, 3, 4)], attrs: { axis: 2 } },
  { op: 'Squeeze', inputs: [f(2, 1, 3)], attrs: { axes: [1] } },
  { op: 'Unsqueeze', inputs: [f(2, 3)], attrs: { axes: [0, 3] } },
  { op: 'Concat', inputs: [f(2, 3), f(2, 1), f(2, 2)], attrs: { axis: -1 } },
  { op: 'Split', inputs: [f(2, 7)], attrs: { axis: 1, split: [2, 4, 1] }, outputs: 3 },
  { op: 'Split', inputs: [f(6, 2)], outputs: 3, useOutputs: [0, 2], label: 'unused output' },
  { op: 'Slice', inputs: [f(5, 6)], attrs: { starts: [1, -1], ends: [4, 0], axes: [0, 1], steps: [2, -2] } },
  { op: 'Gather', inputs: [f(5, 4), labels([0, 4, -1, 2, 2, 1], [2, 3])] },
  { op: 'Gather', inputs: [f(3, 5, 2), labels([4, 0, 4, 1])], attrs: { axis: 1 }, label: 'axis 1, repeats' },
  { op: 'GatherElements', inputs: [f(3, 4), labels([0, 3, 1, 1, -1, 2], [3, 2])], attrs: { axis: 1 } },
  { op: 'Expand', inputs: [f(3, 1)], attrs: { shape: [2, 1, 4] } },
  { op: 'Tile', inputs: [f(2, 3)], attrs: { repeats: [2, 3] } },
  { op: 'Trilu', inputs: [f(2, 4, 5)], attrs: { upper: 0, k: 1 } },
  { op: 'Where', inputs: [{ shape: [3, 1], dtype: 'bool', values: [1, 0, 1], fixed: true }, f(3, 4), f(4)] },
  { op: 'Cast', inputs: [f(3, 2)], attrs: { to: 1 } },
  { op: 'CastLike', inputs: [f(3, 2), { shape: [1], values: [0], fixed: true }] },
  { op: 'ReduceMean', inputs: [f(2, 3, 4)], attrs: { axes: [1], keepdims: 0 } },
  { op: 'ReduceSum', inputs: [f(2, 3, 4)], attrs: { axes: [0, 2] } },
  { op: 'ReduceMax', inputs: [f(2, 3, 4)], attrs: { axes: [1] } },
  { op: 'ReduceMin', inputs: [f(2, 3, 4)], attrs: { axes: [2], keepdims: 0 } },
  { op: 'Min', inputs: [f(3, 4), f(4)] },
  { op: 'Max', inputs: [f(3, 4), f(3, 1), f(4)] },
  { op: 'Sum', inputs: [f(3, 4), f(4)] },
  { op: 'Dropout', inputs: [f(3, 4)], attrs: { ratio: 0.3 }, label: 'inference' },
  { op: 'SoftmaxCrossEntropyLoss', inputs: [f(4, 5), labels([1, 0, 4, 2])] },
  { op: 'SoftmaxCrossEntropyLoss', inputs: [f(3, 5, 2), labels([1, -100, 4, 2, 0, 3], [3, 2]), fixed(pos(5))], attrs: { ignore_index: -100, reduction: 'sum' }, label: 'weights, ignore_index, sum' },
  { op: 'SoftmaxCrossEntropyLoss', inputs: [f(4, 3), labels([1, 0, 2, 2])], attrs: { reduction: 'none' }, label: 'none' },
  { op: 'RMSNormalization', inputs: [f(2, 3, 8), f(8)], opset: 23 },
  { op: 'RMSNormalization', inputs: [f(2, 3, 4), f(3, 1)], attrs: { axis: 1, epsilon: 1e-3 }, opset: 23, label: 'axis 1, broadcast scale' },
  { op: 'Clip', inputs: [f(3, 5)], attrs: { min: -0.5, max: 0.7 } },
  { op: 'Clip', inputs: [f(3, 5)], attrs: { max: 0.2 }, label: 'max only' },
  { op: 'RotaryEmbedding', inputs: [f(2, 3, 4, 8), fixed(f(2, 4, 4)), fixed(f(2, 4, 4))], opset: 23, label: '4-D' },
  { op: 'RotaryEmbedding', inputs: [f(2, 4, 12), fixed(f(6, 2)), fixed(f(6, 2)), labels([0, 1, 2, 3, 5, 4, 2, 0], [2, 4])], attrs: { num_heads: 2, rotary_embedding_dim: 4, interleaved: 1 }, opset: 23, label: '3-D, position ids, partial, interleaved' },
  { op: 'CumSum', inputs: [f(3, 4, 5)], attrs: { axis: 1 } },
  { op: 'CumSum', inputs: [f(3, 4)], attrs: { axis: 0, exclusive: 1, reverse: 1 }, label: 'exclusive, reverse' },
  { op: 'InstanceNormalization', inputs: [f(2, 3, 4, 2), f(3), f(3)] },
  { op: 'GroupNormalization', inputs: [f(2, 6, 3, 2), f(6), f(6)], attrs: { num_groups: 3 }, opset: 21, label: 'per channel' },
  { op: 'GroupNormalization', inputs: [f(2, 6, 5), f(2), f(2)], attrs: { num_groups: 2 }, opset: 18, label: 'per group' },
  { op: 'Pad', inputs: [f(2, 3)], attrs: { pads: [1, 0, 2, 1], constant_value: 1.5 } },
  { op: 'Pad', inputs: [f(2, 3, 4)], attrs: { pads: [0, -1, 1, 0, 1, -2] }, label: 'negative pads' },
  { op: 'Pad', inputs: [f(3, 5)], attrs: { pads: [2, 1, 1, 4], mode: 'reflect' }, label: 'reflect' },
  { op: 'Pad', inputs: [f(3, 4)], attrs: { pads: [2, 3, 1, 5], mode: 'edge' }, label: 'edge' },
  { op: 'Attention', inputs: [f(2, 3, 8), f(2, 3, 8), f(2, 3, 8)], attrs: { q_num_heads: 2, kv_num_heads: 2, is_causal: 1 }, opset: 23, label: '3-D causal' },
  { op: 'Attention', inputs: [f(1, 2, 3, 4), f(1, 2, 3, 4), f(1, 2, 3, 4)], attrs: { scale: 0.8 }, opset: 23, label: '4-D' },
  // cleave's GatedUnit (SwiGLU/GeGLU gate): both inputs, each activation; and a gate alone (up fixed).
  ...['silu', 'gelu_tanh', 'gelu'].map((activation) => ({ op: 'GatedUnit', inputs: [f(3, 2, 5), f(3, 2, 5)], attrs: { activation }, label: activation })),
  { op: 'GatedUnit', inputs: [f(4, 6), fixed(f(4, 6))], label: 'default silu, up fixed' },
  // Einsum: each operand's gradient is an Einsum of the output gradient with the others; letters
  // summed by one operand alone come back through Expand, broadcast ellipsis axes through ReduceSum.
  ...([
    ['ij,jk->ik', [f(3, 4), f(4, 5)]],
    ['bhqd,bhkd->bhqk', [f(2, 2, 3, 4), f(2, 2, 5, 4)]],
    ['bhqk,bhkd->bhqd', [f(1, 2, 3, 4), f(1, 2, 4, 3)]],
    ['ij->ji', [f(3, 4)]],
    ['ij->i', [f(3, 4)]],
    ['i,i->', [f(6), f(6)]],
    ['i,j->ij', [f(3), f(4)]],
    ['...ij,...jk->...ik', [f(2, 1, 3, 4), f(1, 3, 4, 2)]],
    ['ij,jk', [f(3, 4), f(4, 2)]],
    ['ij,jk,kl->il', [f(2, 3), f(3, 4), f(4, 2)]],
    ['ij,kj->k', [f(3, 4), f(5, 4)]],
    ['bi...,b...->...i', [f(2, 3, 2, 2), f(2, 1, 2)]],
  ] as const).map(([equation, inputs]): Case => ({ op: 'Einsum', inputs: [...inputs], attrs: { equation }, label: equation })),
  // GatherND: slices and single elements, repeated tuples (their gradients add), negative indices, batch_dims 1.
  { op: 'GatherND', inputs: [f(4, 3, 2), labels([1, 3, 1, -3], [4, 1])], label: 'slices, repeated tuples' },
  { op: 'GatherND', inputs: [f(3, 4), labels([0, 0, 2, -1, 0, 0, 1, 2, 2, 3], [5, 2])], label: 'single elements, repeated tuples' },
  { op: 'GatherND', inputs: [f(2, 3, 4), labels([2, 2, -1, 0, 1, 1], [2, 3, 1])], attrs: { batch_dims: 1 }, label: 'batch_dims 1, repeats' },
  { op: 'GatherND', inputs: [f(2, 3, 4), { shape: [2, 2, 2], dtype: 'int32', values: [1, 3, 1, 3, -1, 0, 0, -4], fixed: true }], attrs: { batch_dims: 1 }, label: 'batch_dims 1, int32 elements' },
];

function build(c: Case): { g: ReturnType<ModelBuilder['finish']>; feeds: Record<string, Tensor> } {
  const rng = new Rng(5);
  const b = new ModelBuilder('grad', { opset: c.opset ?? 17 });
  const ins: (Value | null)[] = c.inputs.map((spec, i) => {
    if (!spec) return null;
    const n = spec.shape.reduce((a, x) => a * x, 1);
    const values = spec.values ?? Array.from({ length: n }, () => (spec.ints !== undefined ? rng.int(spec.ints) : spec.positive ? 0.5 + rng.next() : rng.normal()));
    const t = tensor(spec.dtype ?? 'float32', spec.shape, values);
    return spec.fixed || spec.dtype ? b.constant(t, `in${i}`) : b.graph.addParam(`p${i}`, t);
  });
  const outs = b.ops(c.op, ins, c.attrs ?? {}, c.outputs ?? 1);
  const terms = (c.useOutputs ?? outs.map((_, i) => i)).map((i) => {
    const o = outs[i]!;
    const r = tensor(o.dtype, o.shape as number[], Array.from({ length: (o.shape as number[]).reduce((a, x) => a * x, 1) }, () => rng.normal()));
    return b.op('ReduceSum', [b.op('Mul', [o, b.constant(r, 'R')])], { keepdims: 0 });
  });
  b.output(terms.length > 1 ? b.op('Sum', terms) : terms[0]!, 'loss');
  return { g: b.finish(), feeds: {} };
}

describe.each(CASES.map((c) => [`${c.op}${c.label ? ` (${c.label})` : ''}`, c] as const))('gradient of %s', (_, c) => {
  it('matches central finite differences (float64 ≤ 1e-6, float32 ≤ 1e-3)', () => {
    const { g, feeds } = build(c);
    const r = gradCheck(g, feeds, { samples: 24 });
    expect(r.checked).toBeGreaterThan(0);
    expect(r.f64).toBeLessThanOrEqual(1e-6);
    expect(r.f32).toBeLessThanOrEqual(1e-3);
  });
});

it('every op with a gradient rule has a gradient-check row', () => {
  const tested = new Set(CASES.map((c) => c.op));
  for (const def of allOps()) if (def.grad && !def.domain) expect(tested.has(def.op), `${def.op} has no gradient check`).toBe(true);
});
