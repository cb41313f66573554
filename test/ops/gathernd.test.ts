// GatherND and its gradient GatherNDGrad: the ONNX spec's examples pinned, int32 indices against
// onnxruntime on the same indices as int64 (ONNX types GatherND's indices int64 only), shape
// inference with symbolic dims, the errors naming the node, scatter-add of repeated tuples, the
// autodiff rule, the cost, and the device path on the host emulation (out-of-range tuples, int32
// indices, accumulation). Rows against onnxruntime are in test/ops/ops.test.ts, finite differences
// in test/autodiff/gradcheck.test.ts, the CUDA kernels in test/helpers/cuda_cases.ts (emulated) and
// test/gpu/cuda.test.ts.
import { describe, expect, it } from 'vitest';
import { buildTrainingGraph } from '../../compiler/autodiff/training.js';
import { encodeModel } from '../../src/core/onnx/codec.js';
import { exportModel } from '../../compiler/onnx/export.js';
import { runGraph } from '../../runtime/backends/cpu/interpreter.js';
import { Cuda } from '../../runtime/backends/cuda/device.js';
import { ModelBuilder } from '../../src/core/ir/builder.js';
import { CleaveError } from '../../src/core/errors.js';
import type { DType } from '../../src/core/ir/dtype.js';
import type { Attrs, ValueType } from '../../src/core/ir/graph.js';
import { type Tensor, tensor } from '../../src/core/ir/tensor.js';
import { getOp } from '../../src/core/ops/index.js';
import { Rng } from '../../src/core/util/random.js';
import { HostCuda } from '../helpers/host_cuda.js';
import { maxRelError, runOrt } from '../helpers/ort.js';

const cpu = (op: string, inputs: Tensor[], attrs: Attrs = {}): Tensor => getOp(op, 'test').cpu!(inputs, { batch_dims: 0, ...attrs }, 1)[0]!;
const randn = (shape: number[], rng: Rng): Tensor => tensor('float32', shape, Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal()));
const i64 = (shape: number[], values: number[]): Tensor => tensor('int64', shape, values);

describe('GatherND on the ONNX spec examples', () => {
  const cube = tensor('float32', [2, 2, 2], [0, 1, 2, 3, 4, 5, 6, 7]);
  const square = tensor('int32', [2, 2], [0, 1, 2, 3]);
  it.each([
    ['1: single elements', square, i64([2, 2], [0, 0, 1, 1]), 0, [2], [0, 3]],
    ['2: rows', square, i64([2, 1], [1, 0]), 0, [2, 2], [2, 3, 0, 1]],
    ['3: rows of a cube', cube, i64([2, 2], [0, 1, 1, 0]), 0, [2, 2], [2, 3, 4, 5]],
    ['4: an extra index axis', cube, i64([2, 1, 2], [0, 1, 1, 0]), 0, [2, 1, 2], [2, 3, 4, 5]],
    ['5: batch_dims 1', cube, i64([2, 1], [1, 0]), 1, [2, 2], [2, 3, 4, 5]],
  ] as const)('example %s', (_, data, ind, b, shape, values) => {
    const y = cpu('GatherND', [data, ind], { batch_dims: b });
    expect(y.dtype).toBe(data.dtype);
    expect(y.shape).toEqual(shape);
    expect(Array.from(y.data)).toEqual(values);
  });

  it('wraps negative indices: -1 is the last entry of its axis', () => {
    expect(Array.from(cpu('GatherND', [cube, i64([2, 3], [-1, -2, -1, 0, -1, 1])]).data)).toEqual([5, 3]);
  });
});

describe('int32 indices give what onnxruntime gives for the same indices as int64', () => {
  it.each([
    ['slices', [5, 3, 4], [2, 3, 1], [4, -1, 0, 2, 2, -5], 0],
    ['single elements', [4, 3, 2], [5, 3], [0, 0, 0, 3, 2, 1, -1, -1, -1, 1, 0, 1, 2, -3, 0], 0],
    ['batch_dims 1', [3, 4, 5], [3, 2, 2], [0, 0, 3, 4, -1, 2, 1, -5, 2, 2, 0, 1], 1],
  ] as const)('%s', async (_, dataShape, indShape, values, b) => {
    const data = randn([...dataShape], new Rng(4));
    const g = new ModelBuilder('gnd', { opset: 17 });
    g.output(g.op('GatherND', [g.input('data', 'float32', [...dataShape]), g.input('ind', 'int64', [...indShape])], { batch_dims: b }), 'y');
    const ref = (await runOrt(encodeModel(exportModel(g.finish()).model), { data, ind: i64([...indShape], [...values]) }))['y']!;
    const ours = cpu('GatherND', [data, tensor('int32', [...indShape], [...values])], { batch_dims: b });
    expect(ours.shape).toEqual(ref.shape);
    expect(maxRelError(ours, ref)).toBe(0);
    // The int32 graph infers what the int64 one does.
    const g32 = new ModelBuilder('gnd32');
    const y32 = g32.op('GatherND', [g32.input('data', 'float32', [...dataShape]), g32.input('ind', 'int32', [...indShape])], { batch_dims: b });
    expect(y32.shape).toEqual(ref.shape);
  });
});

describe('shape inference', () => {
  const infer = (data: (number | string)[], ind: (number | string)[], attrs: Attrs = {}, dtype: DType = 'int64') => {
    const b = new ModelBuilder('s');
    return b.op('GatherND', [b.input('d', 'bfloat16', data), b.input('i', dtype, ind)], attrs);
  };

  it('keeps symbolic dims where they land: batch, index and slice dims', () => {
    expect(infer(['B', 5, 'H'], ['T', 2]).shape).toEqual(['T', 'H']);
    expect(infer(['B', 'S', 4], ['B', 'T', 1], { batch_dims: 1 }).shape).toEqual(['B', 'T', 4]);
    expect(infer([2, 'S', 4, 6], ['N', 'M', 3]).shape).toEqual(['N', 'M', 6]);
    expect(infer(['B', 7, 3], [4, 'T', 1], { batch_dims: 1 }, 'int32').shape).toEqual([4, 'T', 3]);
    expect(infer(['B', 7, 3], [4, 'T', 1], { batch_dims: 1 }).dtype).toBe('bfloat16');
  });

  it('gives a rank of q + r − k − 1 − b, down to a rank-0 output', () => {
    expect(infer([3, 4], [2]).shape).toEqual([]);
    expect(infer([2, 3, 4], [2, 2], { batch_dims: 1 }).shape).toEqual([2]);
  });

  it('GatherNDGrad gives the data shape of its attribute and dy\'s type', () => {
    const b = new ModelBuilder('g');
    const dx = b.op('GatherNDGrad', [b.input('dy', 'float16', ['B', 'T', 4]), b.input('i', 'int64', ['B', 'T', 1])], { batch_dims: 1, shape: [3, 9, 4] });
    expect([dx.dtype, dx.shape]).toEqual(['float16', [3, 9, 4]]);
  });
});

type Row = [string, [(number | string)[], DType?][], Attrs, RegExp];

/** Every error path, each naming the node. */
const ERRORS: Row[] = [
  ['GatherND', [[[]], [[1], 'int64']], {}, /^node '\/GatherND': GatherND needs data of rank 1 or more, got a scalar$/],
  ['GatherND', [[[3]], [[], 'int64']], {}, /^node '\/GatherND': GatherND needs indices of rank 1 or more, got a scalar$/],
  ['GatherND', [[[3, 4]], [[2, 1], 'float32']], {}, /^node '\/GatherND': GatherND indices must be int64 \(or int32\), got float32$/],
  ['GatherND', [[[3, 4]], [[2, 3], 'int64']], {}, /^node '\/GatherND': GatherND's index tuples \(last dim of indices \[2, 3\]\) must have 1 to 2 elements \(data rank 2 less batch_dims 0\), got 3$/],
  ['GatherND', [[[3, 4]], [[2, 0], 'int64']], {}, /must have 1 to 2 elements \(data rank 2 less batch_dims 0\), got 0$/],
  ['GatherND', [[[2, 3, 4]], [[2, 3], 'int64']], { batch_dims: 1 }, /^node '\/GatherND': GatherND's index tuples \(last dim of indices \[2, 3\]\) must have 1 to 2 elements \(data rank 3 less batch_dims 1\), got 3$/],
  ['GatherND', [[[3, 4]], [[3, 'k'], 'int64']], {}, /^node '\/GatherND': GatherND needs the last dim of indices \(the index tuple's length\) static, got 'k' in \[3, k\]$/],
  ['GatherND', [[[2, 3, 4]], [[3, 1], 'int64']], { batch_dims: 1 }, /^node '\/GatherND': GatherND's 1 batch dims differ: data \[2, 3, 4\] and indices \[3, 1\] at axis 0 \(2 vs 3\)$/],
  ['GatherND', [[[2, 3, 4]], [[2, 1], 'int64']], { batch_dims: 2 }, /^node '\/GatherND': GatherND batch_dims 2 must be below both ranks \(data \[2, 3, 4\], indices \[2, 1\]\)$/],
  ['GatherND', [[[2, 3]], [[2, 3, 1], 'int64']], { batch_dims: 2 }, /^node '\/GatherND': GatherND batch_dims 2 must be below both ranks \(data \[2, 3\], indices \[2, 3, 1\]\)$/],
  ['GatherND', [[[2, 3]], [[2, 1], 'int64']], { batch_dims: -1 }, /^node '\/GatherND': attribute 'batch_dims'/],
  ['GatherNDGrad', [[[2, 5]], [[2, 1], 'int64']], { shape: [4, 3] }, /^node '\/GatherNDGrad': GatherNDGrad needs dy of GatherND's output shape \[2, 3\] \(data \[4, 3\], indices \[2, 1\]\), got \[2, 5\]$/],
  ['GatherNDGrad', [[[2]], [[2, 1], 'int64']], { shape: [4, 3] }, /GatherNDGrad needs dy of GatherND's output shape \[2, 3\]/],
  ['GatherNDGrad', [[[2, 3], 'int64'], [[2, 1], 'int64']], { shape: [4, 3] }, /^node '\/GatherNDGrad': .*int64/],
  ['GatherNDGrad', [[[2, 3]], [[2, 3], 'int64']], { shape: [4, 3] }, /^node '\/GatherNDGrad': GatherND's index tuples .* got 3$/],
];

it.each(ERRORS)('%s refuses %j %j: %s', (op, inputs, attrs, message) => {
  const b = new ModelBuilder('bad');
  const vs = inputs.map(([shape, dtype], i) => b.input(`x${i}`, dtype ?? 'float32', shape));
  expect(() => b.op(op, vs, attrs)).toThrow(CleaveError);
  expect(() => b.op(op, vs, attrs)).toThrow(message);
});

describe('out-of-range indices on the CPU', () => {
  it.each([
    ['GatherND', 3, 0, /^node '\/GatherND' \(GatherND\): GatherND: index 3 \(tuple 1, position 0\) is out of range for axis 0 of size 3 of data \[3, 4\]$/],
    ['GatherND', -5, 1, /GatherND: index -5 \(tuple 1, position 1\) is out of range for axis 1 of size 4 of data \[3, 4\]$/],
    ['GatherNDGrad', 4, 1, /^node '\/GatherNDGrad' \(GatherNDGrad\): GatherNDGrad: index 4 \(tuple 1, position 1\) is out of range for axis 1 of size 4 of data \[3, 4\]$/],
  ] as const)('%s: index %d at position %d is an error naming the node', (op, bad, pos, message) => {
    const b = new ModelBuilder('oob');
    const values = [0, 1, 2, 3];
    values[2 + pos] = bad;
    const ind = b.input('ind', 'int64', [2, 2]);
    const y = op === 'GatherND'
      ? b.op('GatherND', [b.input('data', 'float32', [3, 4]), ind])
      : b.op('GatherNDGrad', [b.input('dy', 'float32', [2]), ind], { shape: [3, 4] });
    b.output(y, 'y');
    const g = b.finish();
    const feeds = { ind: i64([2, 2], values), ...(op === 'GatherND' ? { data: randn([3, 4], new Rng(1)) } : { dy: randn([2], new Rng(1)) }) };
    expect(() => runGraph(g, feeds)).toThrow(CleaveError);
    expect(() => runGraph(g, feeds)).toThrow(message);
  });
});

describe('GatherNDGrad', () => {
  it('adds dy of repeated tuples, negative ones included, into zeros of the data shape', () => {
    const dy = tensor('float32', [4, 2], [1, 2, 10, 20, 100, 200, 0.5, 0.25]);
    const dx = cpu('GatherNDGrad', [dy, i64([4, 1], [1, -2, 2, 1])], { shape: [3, 2] });
    expect(dx.shape).toEqual([3, 2]);
    // Rows 0, 1 (as −2) and 3 of dy land on data row 1, row 2 on row 2.
    expect(Array.from(dx.data)).toEqual([0, 0, 11.5, 22.25, 100, 200]);
  });

  it('with batch_dims 1 adds only within each batch entry', () => {
    const dy = tensor('float32', [2, 3], [1, 2, 3, 4, 5, 6]);
    const dx = cpu('GatherNDGrad', [dy, tensor('int32', [2, 3, 2], [0, 1, 0, 1, 1, 0, -1, -1, 0, 0, -1, -1])], { batch_dims: 1, shape: [2, 2, 2] });
    expect(Array.from(dx.data)).toEqual([0, 3, 3, 0, 5, 0, 0, 10]);
  });

  it('is what autodiff writes for GatherND: the data shape as an attribute, no gradient for the indices', () => {
    const rng = new Rng(3);
    const b = new ModelBuilder('ad');
    const x = b.graph.addParam('x', randn([2, 3, 4], rng));
    const y = b.op('GatherND', [x, b.constant(i64([2, 2, 1], [2, 2, 0, -1]), 'ind')], { batch_dims: 1 });
    b.output(b.op('ReduceSum', [b.op('Mul', [y, b.constant(randn([2, 2, 4], rng), 'R')])], { keepdims: 0 }), 'loss');
    const t = buildTrainingGraph(b.finish(), { loss: { kind: 'output' } });
    const grads = t.graph.nodes.filter((n) => n.op === 'GatherNDGrad');
    expect(grads).toHaveLength(1);
    expect(grads[0]!.attrs).toMatchObject({ batch_dims: 1, shape: [2, 3, 4] });
    expect(grads[0]!.inputs[1]!.name).toMatch(/\bind$/);
  });
});

it('costs a copy of the output (forward) and one add per dy element (gradient)', () => {
  const cost = (op: string, inputs: ValueType[], attrs: Attrs) => {
    const def = getOp(op, 'test');
    const ctx = { node: 'n', inputs, numOutputs: 1, attrs: { batch_dims: 0, ...attrs }, consts: [] };
    return def.cost(ctx, def.infer(ctx));
  };
  const fwd = cost('GatherND', [{ dtype: 'float32', shape: [10, 8] }, { dtype: 'int64', shape: [3, 1] }], {});
  expect(fwd.flops).toBe(0);
  expect(fwd.bytes).toBeGreaterThanOrEqual(3 * 8 * 4);
  const bwd = cost('GatherNDGrad', [{ dtype: 'float32', shape: [3, 8] }, { dtype: 'int64', shape: [3, 1] }], { shape: [10, 8] });
  expect(bwd.flops).toBe(24);
  expect(bwd.bytes).toBeGreaterThanOrEqual(10 * 8 * 4);
});

describe('device calls (host emulation)', () => {
  it('GatherND writes 0 for an out-of-range tuple and GatherNDGrad skips it, as gatherElements does', () => {
    const host = new HostCuda();
    const dev = new Cuda(host.native);
    const data = dev.upload(tensor('float32', [3, 2], [1, 2, 3, 4, 5, 6]));
    const ind = dev.upload(i64([3, 1], [2, 3, -4]));
    const out = dev.alloc('float32', [3, 2]);
    dev.gatherND(data, ind, out, 0);
    expect(Array.from(dev.download(out).data)).toEqual([5, 6, 0, 0, 0, 0]);
    const dx = dev.alloc('float32', [3, 2]);
    dev.gatherNDGrad(dev.upload(tensor('float32', [3, 2], [1, 1, 1, 1, 1, 1])), ind, dx, 0);
    expect(Array.from(dev.download(dx).data)).toEqual([0, 0, 0, 0, 1, 1]);
    dev.freeAll();
  });

  it('reads int32 indices, moves int64 and bool elements, and accumulates into float32', () => {
    const host = new HostCuda();
    const dev = new Cuda(host.native);
    const ind = dev.upload(tensor('int32', [2, 2], [1, 0, -1, -1]));
    for (const [dtype, values] of [['int64', [7, -8, 9, 10]], ['bool', [1, 0, 0, 1]], ['bfloat16', [0.5, 1.5, 2.5, 3.5]]] as const) {
      const out = dev.alloc(dtype, [2]);
      dev.gatherND(dev.upload(tensor(dtype, [2, 2], values)), ind, out, 0);
      expect(Array.from(dev.download(out).data), dtype).toEqual([values[2], values[3]]);
    }
    const acc = dev.upload(tensor('float32', [2, 2], [1, 1, 1, 1]));
    dev.gatherNDGrad(dev.upload(tensor('float32', [2], [10, 20])), ind, acc, 0, true);
    expect(Array.from(dev.download(acc).data)).toEqual([1, 1, 11, 21]);
    getOp('GatherNDGrad', 'test').cudaAccumulate!(dev, [dev.upload(tensor('float32', [2], [5, 5])), ind], acc, { batch_dims: 0, shape: [2, 2] });
    expect(Array.from(dev.download(acc).data)).toEqual([1, 1, 16, 26]);
    expect(host.calls.get('gatherND')).toBe(3);
    expect(host.calls.get('gatherNDAdd')).toBe(2);
    dev.freeAll();
  });

  it('refuses what the kernels cannot take, by name', () => {
    const dev = new Cuda(new HostCuda().native);
    const data = dev.alloc('float32', [3, 4]);
    expect(() => dev.gatherND(data, dev.alloc('float32', [2, 1]), dev.alloc('float32', [2, 4]), 0)).toThrow(/GatherND on CUDA takes int64 or int32 indices, not float32/);
    expect(() => dev.gatherND(data, dev.alloc('int64', [2, 3]), dev.alloc('float32', [2]), 0)).toThrow(/GatherND: indices \[2, 3\] do not index data \[3, 4\] with batch_dims 0/);
    expect(() => dev.gatherNDGrad(dev.alloc('float32', [2]), dev.alloc('int64', [2, 2]), dev.alloc('bfloat16', [3, 4]), 0, true)).toThrow(/GatherNDGrad accumulates into float32 on CUDA, not bfloat16/);
    const big = dev.alloc('float32', [1, 1, 1, 1, 1, 1, 2]);
    expect(() => dev.gatherND(big, dev.alloc('int64', [1, 7]), dev.alloc('float32', [1]), 0)).toThrow(/GatherND on CUDA takes index tuples of 6 elements at most, not 7/);
    dev.freeAll();
  });
});
