import { describe, expect, it } from 'vitest';
import { encodeModel } from '../../src/core/onnx/codec.js';
import { exportModel } from '../../compiler/onnx/export.js';
import { ModelBuilder } from '../../src/core/ir/builder.js';
import type { DType } from '../../src/core/ir/dtype.js';
import type { Attrs, Value } from '../../src/core/ir/graph.js';
import { type Tensor, tensor } from '../../src/core/ir/tensor.js';
import { allOps, getOp } from '../../src/core/ops/index.js';
import { Rng } from '../../src/core/util/random.js';
import { maxRelError, runOrt } from '../helpers/ort.js';

interface In { shape: number[]; dtype?: DType; values?: number[]; positive?: boolean; ints?: number; const?: boolean }
interface Case { op: string; inputs: (In | null)[]; attrs?: Attrs; outputs?: number; opset?: number; label?: string; tol?: number }

const f = (...shape: number[]): In => ({ shape });
const pos = (...shape: number[]): In => ({ shape, positive: true });
const idx = (n: number, ...shape: number[]): In => ({ shape, dtype: 'int64', ints: n });

/** One row per op behaviour; each runs in onnxruntime and on cleave's CPU kernel. */
const CASES: Case[] = [
  { op: 'MatMul', inputs: [f(3, 4), f(4, 5)] },
  { op: 'MatMul', inputs: [f(2, 1, 3, 4), f(3, 4, 2)], label: 'batched broadcast' },
  { op: 'MatMul', inputs: [f(4), f(2, 4, 3)], label: '1-D left' },
  { op: 'Gemm', inputs: [f(4, 3), f(5, 4), f(5)], attrs: { transA: 1, transB: 1, alpha: 0.5, beta: 2 } },
  { op: 'Gemm', inputs: [f(3, 4), f(4, 5), f(3, 1)], label: 'column bias' },
  ...['Add', 'Sub', 'Mul', 'Div'].map((op) => ({ op, inputs: [f(2, 3, 4), f(3, 1)] })),
  { op: 'Div', inputs: [idx(50, 5), { shape: [5], dtype: 'int64', values: [3, -3, 7, 2, 5] }], label: 'int64 truncates' },
  { op: 'Pow', inputs: [pos(3, 4), f(4)] },
  ...['Sqrt', 'Reciprocal', 'Log'].map((op) => ({ op, inputs: [pos(3, 5)] })),
  ...['Neg', 'Exp', 'Abs', 'Erf', 'Tanh', 'Sigmoid', 'Relu', 'HardSwish', 'Floor', 'Ceil', 'Sin', 'Cos'].map((op) => ({ op, inputs: [f(3, 5)] })),
  { op: 'LeakyRelu', inputs: [f(3, 5)], attrs: { alpha: 0.2 } },
  { op: 'HardSigmoid', inputs: [f(3, 5)], attrs: { alpha: 0.3, beta: 0.4 } },
  { op: 'Gelu', inputs: [f(3, 5)], opset: 20 },
  { op: 'Gelu', inputs: [f(3, 5)], attrs: { approximate: 'tanh' }, opset: 20, label: 'tanh' },
  { op: 'Softmax', inputs: [f(2, 3, 5)], attrs: { axis: 1 } },
  { op: 'LogSoftmax', inputs: [f(2, 3, 5)] },
  { op: 'LayerNormalization', inputs: [f(2, 3, 8), f(8), f(8)], outputs: 3 },
  { op: 'LayerNormalization', inputs: [f(2, 3, 4), f(3, 4)], attrs: { axis: 1, epsilon: 1e-3 }, label: 'axis 1, no bias' },
  { op: 'BatchNormalization', inputs: [f(2, 3, 4, 4), f(3), f(3), f(3), pos(3)], label: 'inference' },
  { op: 'BatchNormalization', inputs: [f(4, 3, 2, 2), f(3), f(3), f(3), pos(3)], attrs: { training_mode: 1, momentum: 0.8 }, outputs: 3, label: 'training' },
  { op: 'Conv', inputs: [f(2, 4, 7, 7), f(6, 2, 3, 3), f(6)], attrs: { group: 2, pads: [1, 0, 2, 1], strides: [2, 1], dilations: [1, 2] } },
  { op: 'Conv', inputs: [f(1, 3, 6, 6), f(4, 3, 3, 3)], attrs: { auto_pad: 'SAME_UPPER', strides: [2, 2] }, label: 'SAME_UPPER' },
  { op: 'Conv', inputs: [f(1, 2, 9), f(3, 2, 4)], attrs: { pads: [1, 2] }, label: '1-D' },
  { op: 'MaxPool', inputs: [f(2, 3, 7, 7)], attrs: { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }, outputs: 2 },
  { op: 'MaxPool', inputs: [f(1, 2, 6, 6)], attrs: { kernel_shape: [2, 2], strides: [2, 2], ceil_mode: 1, dilations: [2, 2] }, label: 'ceil, dilated' },
  { op: 'AveragePool', inputs: [f(2, 3, 6, 6)], attrs: { kernel_shape: [3, 3], pads: [1, 1, 1, 1], count_include_pad: 1 } },
  { op: 'AveragePool', inputs: [f(2, 3, 7, 7)], attrs: { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1], ceil_mode: 1 }, label: 'ceil, exclude pad' },
  { op: 'GlobalAveragePool', inputs: [f(2, 3, 4, 5)] },
  { op: 'Reshape', inputs: [f(2, 3, 4)], attrs: { shape: [0, -1, 2] } },
  { op: 'Transpose', inputs: [f(2, 3, 4)], attrs: { perm: [2, 0, 1] } },
  { op: 'Transpose', inputs: [f(2, 3, 4)], label: 'reversed' },
  { op: 'Flatten', inputs: [f(2, 3, 4, 5)], attrs: { axis: 2 } },
  { op: 'Squeeze', inputs: [f(2, 1, 3, 1)], attrs: { axes: [1, -1] } },
  { op: 'Unsqueeze', inputs: [f(2, 3)], attrs: { axes: [0, 3] } },
  { op: 'Concat', inputs: [f(2, 3), f(2, 1), f(2, 2)], attrs: { axis: -1 } },
  { op: 'Split', inputs: [f(2, 7)], attrs: { axis: 1, split: [2, 4, 1] }, outputs: 3 },
  { op: 'Split', inputs: [f(6, 2)], outputs: 3, label: 'even' },
  { op: 'Slice', inputs: [f(5, 6)], attrs: { starts: [1, -1], ends: [4, 0], axes: [0, 1], steps: [2, -2] } },
  { op: 'Slice', inputs: [f(4, 6)], attrs: { starts: [2], ends: [2 ** 62] }, label: 'to the end' },
  { op: 'Gather', inputs: [f(5, 4), { shape: [2, 3], dtype: 'int64', values: [0, 4, -1, 2, 2, 1] }] },
  { op: 'Gather', inputs: [f(3, 5, 2), idx(5, 4)], attrs: { axis: 1 }, label: 'axis 1' },
  { op: 'GatherElements', inputs: [f(3, 4), { shape: [3, 2], dtype: 'int64', values: [0, 3, 1, 1, -1, 2] }], attrs: { axis: 1 } },
  // GatherND (int64 indices, as ONNX types them; int32 ones are checked in test/ops/gathernd.test.ts).
  { op: 'GatherND', inputs: [f(4, 3, 2), { shape: [3, 1], dtype: 'int64', values: [1, 3, -1] }], label: 'whole slices, negative index' },
  { op: 'GatherND', inputs: [f(3, 4), { shape: [2, 2, 2], dtype: 'int64', values: [0, 0, 2, -1, -3, 3, 1, 2] }], label: 'single elements' },
  { op: 'GatherND', inputs: [f(3, 4, 5), { shape: [2, 2], dtype: 'int64', values: [2, 1, -2, -4] }], label: 'rows of a 3-D tensor' },
  { op: 'GatherND', inputs: [f(2, 3, 4), { shape: [2, 2, 1], dtype: 'int64', values: [2, 0, -1, 1] }], attrs: { batch_dims: 1 }, label: 'batch_dims 1, slices' },
  { op: 'GatherND', inputs: [f(2, 3, 4), { shape: [2, 2], dtype: 'int64', values: [1, 3, -3, -1] }], attrs: { batch_dims: 1 }, label: 'batch_dims 1, single elements' },
  { op: 'GatherND', inputs: [f(2, 3, 4, 5), { shape: [2, 3, 2, 1], dtype: 'int64', values: [0, 3, 1, 2, -1, 0, 2, 2, 1, -4, 3, 0] }], attrs: { batch_dims: 2 }, label: 'batch_dims 2' },
  { op: 'GatherND', inputs: [idx(9, 3, 4), { shape: [2, 1], dtype: 'int64', values: [2, 0] }], label: 'int64 data' },
  { op: 'Expand', inputs: [f(3, 1)], attrs: { shape: [2, 1, 4] } },
  { op: 'Where', inputs: [{ shape: [3, 1], dtype: 'bool', values: [1, 0, 1] }, f(3, 4), f(4)] },
  { op: 'Equal', inputs: [idx(3, 4, 3), idx(3, 3)] },
  { op: 'IsNaN', inputs: [{ shape: [4], values: [0, NaN, 1, NaN] }] },
  { op: 'Cast', inputs: [{ shape: [5], values: [-1.7, 0, 2.5, 3.9, -0.2] }], attrs: { to: 7 } },
  { op: 'Cast', inputs: [idx(3, 4)], attrs: { to: 9 }, label: 'to bool' },
  { op: 'CastLike', inputs: [{ shape: [5], values: [-1.7, 0, 2.5, 3.9, -0.2] }, idx(2, 4)], label: 'to int64' },
  { op: 'CastLike', inputs: [idx(3, 4), f(2)], label: 'to float' },
  { op: 'ReduceMean', inputs: [f(2, 3, 4)], attrs: { axes: [1], keepdims: 0 } },
  { op: 'ReduceMean', inputs: [f(2, 3, 4)], attrs: { axes: [-1, 0] }, opset: 18, label: 'axes as input' },
  { op: 'ReduceSum', inputs: [f(2, 3, 4)], attrs: { axes: [0, 2] } },
  { op: 'ReduceSum', inputs: [f(2, 3)], label: 'all axes' },
  { op: 'ReduceMax', inputs: [f(2, 3, 4)], attrs: { axes: [1] } },
  { op: 'Dropout', inputs: [f(3, 4)], attrs: { ratio: 0.3 }, outputs: 2, label: 'inference' },
  { op: 'Identity', inputs: [f(3)] },
  { op: 'Trilu', inputs: [f(2, 4, 5)], attrs: { upper: 0, k: 1 } },
  { op: 'Trilu', inputs: [f(4, 4)], attrs: { k: -1 }, label: 'upper' },
  { op: 'SoftmaxCrossEntropyLoss', inputs: [f(4, 5), { shape: [4], dtype: 'int64', values: [1, 0, 4, 2] }], outputs: 2 },
  { op: 'SoftmaxCrossEntropyLoss', inputs: [f(3, 5, 2), { shape: [3, 2], dtype: 'int64', values: [1, -100, 4, 2, 0, 3] }, pos(5)], attrs: { ignore_index: -100, reduction: 'sum' }, label: 'weights, ignore_index' },
  { op: 'SoftmaxCrossEntropyLoss', inputs: [f(4, 3), { shape: [4], dtype: 'int64', values: [1, 0, 2, 2] }], attrs: { reduction: 'none' }, label: 'none' },
  { op: 'Tile', inputs: [f(2, 3)], attrs: { repeats: [2, 1] } },
  { op: 'Min', inputs: [f(3, 4), f(4), f(3, 1)] },
  { op: 'Max', inputs: [f(3, 4), f(4)] },
  { op: 'Less', inputs: [f(3, 4), f(4)] },
  { op: 'Not', inputs: [{ shape: [3], dtype: 'bool', values: [1, 0, 1] }] },
  { op: 'RMSNormalization', inputs: [f(2, 3, 8), f(8)], opset: 23 },
  { op: 'RMSNormalization', inputs: [f(2, 3, 4), f(3, 4)], attrs: { axis: 1, epsilon: 1e-3 }, opset: 23, label: 'axis 1' },
  { op: 'RMSNormalization', inputs: [f(2, 3, 4), f(1, 4)], attrs: { axis: -2 }, opset: 23, label: 'broadcast scale' },
  { op: 'RMSNormalization', inputs: [f(4, 6), f(6)], attrs: { stash_type: 1 }, opset: 23, label: 'rank 2' },
  { op: 'Clip', inputs: [f(3, 5)], attrs: { min: -0.5, max: 0.7 } },
  { op: 'Clip', inputs: [f(3, 5)], attrs: { max: 0.2 }, label: 'max only' },
  { op: 'Clip', inputs: [f(3, 5)], attrs: { min: 0.1 }, label: 'min only' },
  { op: 'Clip', inputs: [f(4)], label: 'no bounds' },
  { op: 'Clip', inputs: [f(3, 4)], attrs: { min: 0.5, max: -0.5 }, label: 'min above max' },
  { op: 'Clip', inputs: [idx(20, 3, 4)], attrs: { min: 3, max: 12 }, label: 'int64' },
  { op: 'RotaryEmbedding', inputs: [f(2, 3, 4, 8), f(2, 4, 4), f(2, 4, 4)], opset: 23, label: '4-D, caches [B, S, D/2]' },
  { op: 'RotaryEmbedding', inputs: [f(2, 4, 12), f(6, 3), f(6, 3), { shape: [2, 4], dtype: 'int64', values: [0, 1, 2, 3, 5, 4, 2, 0] }], attrs: { num_heads: 2 }, opset: 23, label: '3-D, position ids' },
  { op: 'RotaryEmbedding', inputs: [f(1, 2, 3, 8), f(1, 3, 4), f(1, 3, 4)], attrs: { interleaved: 1 }, opset: 23, label: 'interleaved' },
  { op: 'RotaryEmbedding', inputs: [f(2, 3, 2, 8), f(5, 2), f(5, 2), { shape: [2, 2], dtype: 'int64', values: [4, 0, 1, 3] }], attrs: { rotary_embedding_dim: 4 }, opset: 23, label: 'partial rotation' },
  { op: 'RotaryEmbedding', inputs: [f(1, 3, 8), f(1, 3, 2), f(1, 3, 2)], attrs: { num_heads: 2, rotary_embedding_dim: 4, interleaved: 1 }, opset: 23, label: '3-D, partial, interleaved' },
  { op: 'CumSum', inputs: [f(3, 4, 5)], attrs: { axis: 1 } },
  { op: 'CumSum', inputs: [f(3, 4)], attrs: { axis: -1, exclusive: 1 }, label: 'exclusive' },
  { op: 'CumSum', inputs: [f(3, 4)], attrs: { axis: 0, reverse: 1 }, label: 'reverse' },
  { op: 'CumSum', inputs: [f(2, 5)], attrs: { axis: 1, reverse: 1, exclusive: 1 }, label: 'reverse, exclusive' },
  { op: 'CumSum', inputs: [idx(9, 2, 5)], attrs: { axis: 1 }, label: 'int64' },
  { op: 'InstanceNormalization', inputs: [f(2, 3, 4, 5), f(3), f(3)] },
  { op: 'InstanceNormalization', inputs: [f(2, 4, 7), f(4), f(4)], attrs: { epsilon: 1e-2 }, label: '1-D spatial' },
  { op: 'GroupNormalization', inputs: [f(2, 6, 3, 4), f(6), f(6)], attrs: { num_groups: 3 }, opset: 21, label: 'per channel (opset 21)' },
  { op: 'GroupNormalization', inputs: [f(2, 4, 5), f(4), f(4)], attrs: { num_groups: 1, epsilon: 1e-3 }, opset: 21, label: 'one group' },
  { op: 'GroupNormalization', inputs: [f(2, 6, 5), f(2), f(2)], attrs: { num_groups: 2 }, opset: 18, label: 'per group (opset 18)' },
  { op: 'Pad', inputs: [f(2, 3)], attrs: { pads: [1, 0, 2, 1], constant_value: 1.5 } },
  { op: 'Pad', inputs: [f(2, 3, 4)], attrs: { pads: [0, -1, 1, 0, 1, -2] }, label: 'negative pads crop' },
  { op: 'Pad', inputs: [f(3, 5)], attrs: { pads: [2, 1, 1, 4], mode: 'reflect' }, label: 'reflect' },
  { op: 'Pad', inputs: [f(3, 4)], attrs: { pads: [2, 3, 1, 5], mode: 'edge' }, label: 'edge' },
  { op: 'Pad', inputs: [f(2, 3, 4)], attrs: { pads: [1, 2, 0, 1], axes: [-1, 1], mode: 'reflect' }, opset: 18, label: 'axes' },
  { op: 'Pad', inputs: [idx(9, 2, 3)], attrs: { pads: [1, 1, 0, 0], constant_value: 7 }, label: 'int64' },
  { op: 'Attention', inputs: [f(2, 5, 8), f(2, 5, 8), f(2, 5, 8)], attrs: { q_num_heads: 2, kv_num_heads: 2, is_causal: 1 }, opset: 23, label: '3-D causal' },
  { op: 'Attention', inputs: [f(2, 3, 4, 5), f(2, 3, 4, 5), f(2, 3, 4, 5)], attrs: { scale: 0.3 }, opset: 23, label: '4-D, scale' },
  // Einsum (torch.einsum's export): products, attention scores, transposes, sums, dot and outer
  // products, ellipsis broadcasting, the implicit form, spaces, and a chain of three operands.
  ...([
    ['ij,jk->ik', [f(3, 4), f(4, 5)]],
    ['bij,bjk->bik', [f(2, 3, 4), f(2, 4, 5)]],
    ['bhqd,bhkd->bhqk', [f(2, 3, 4, 5), f(2, 3, 6, 5)]],
    ['bhqk,bhkd->bhqd', [f(2, 3, 4, 6), f(2, 3, 6, 5)]],
    ['ij->ji', [f(3, 4)]],
    ['ij->i', [f(3, 4)]],
    ['i,i->', [f(7), f(7)]],
    ['i,j->ij', [f(3), f(5)]],
    ['...ij,...jk->...ik', [f(2, 3, 4, 5), f(2, 3, 5, 2)]],
    ['...ij,...jk->...ik', [f(2, 1, 4, 5), f(1, 3, 5, 2)]],
    ['ij,jk', [f(3, 4), f(4, 5)]],
    ['ij,jk,kl->il', [f(2, 3), f(3, 4), f(4, 5)]],
    ['bn,anm,bm->ba', [f(2, 3), f(4, 3, 5), f(2, 5)]],
    ['ij , jk -> ki', [f(3, 4), f(4, 5)]],
    ['bi...,b...->...i', [f(2, 3, 4, 5), f(2, 4, 5)]],
    ['ba', [f(3, 4)]],
  ] as const).map(([equation, inputs], k): Case => ({ op: 'Einsum', inputs: [...inputs], attrs: { equation }, label: `${equation}${k === 9 ? ', size-1 broadcast' : ''}`, tol: 1e-5 })),
];

function makeInput(spec: In, rng: Rng): Tensor {
  const dtype = spec.dtype ?? 'float32';
  const n = spec.shape.reduce((a, b) => a * b, 1);
  const values = spec.values ?? Array.from({ length: n }, () =>
    spec.ints !== undefined ? rng.int(spec.ints) : spec.positive ? 0.2 + 2 * rng.next() : 2 * rng.normal());
  return tensor(dtype, spec.shape, values);
}

describe.each(CASES.map((c) => [`${c.op}${c.label ? ` (${c.label})` : ''}`, c] as const))('%s', (_, c) => {
  it('infers the shapes and computes the values onnxruntime does', async () => {
    const rng = new Rng(11);
    const b = new ModelBuilder('op', { opset: c.opset ?? 17 });
    const feeds: Record<string, Tensor> = {};
    const ins: (Value | null)[] = c.inputs.map((spec, i) => {
      if (!spec) return null;
      const t = makeInput(spec, rng);
      feeds[`in${i}`] = t;
      return b.input(`in${i}`, t.dtype, t.shape);
    });
    const outs = b.ops(c.op, ins, c.attrs ?? {}, c.outputs ?? 1);
    outs.forEach((o, i) => b.output(o, `out${i}`));
    const g = b.finish();
    const ref = await runOrt(encodeModel(exportModel(g).model), feeds);
    const node = g.nodes[0]!;
    const ours = getOp(c.op, 'test').cpu!(c.inputs.map((s, i) => (s ? feeds[`in${i}`]! : null)), node.attrs, outs.length);
    outs.forEach((o, i) => {
      const r = ref[`out${i}`]!;
      expect(o.shape, `inferred shape of output ${i}`).toEqual(r.shape);
      expect(o.dtype).toBe(r.dtype);
      expect(ours[i]!.shape, `kernel shape of output ${i}`).toEqual(r.shape);
      expect(maxRelError(ours[i]!, r), `output ${i}`).toBeLessThanOrEqual(c.tol ?? 1e-6);
    });
  });
});

it('every op in the registry has a CPU kernel and a test row', () => {
  const tested = new Set(CASES.map((c) => c.op));
  // Constant, shape and folding-only ops are exercised by the importer tests.
  const foldOnly = new Set(['Constant', 'ConstantOfShape', 'Range', 'Shape', 'Size']);
  for (const def of allOps()) {
    // cleave's own gradient ops are checked against finite differences in test/autodiff.
    if (def.domain) continue;
    if (!foldOnly.has(def.op) && !['LessOrEqual', 'Greater', 'GreaterOrEqual', 'And', 'Or', 'Sum', 'ReduceMin'].includes(def.op)) {
      expect(tested.has(def.op), `${def.op} has no test row`).toBe(true);
    }
    if (!['Shape', 'Size'].includes(def.op)) expect(def.cpu, `${def.op} has no CPU kernel`).toBeDefined();
  }
});
