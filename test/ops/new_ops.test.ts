// RMSNormalization, Clip, RotaryEmbedding, CumSum, InstanceNormalization, GroupNormalization and
// Pad beyond the onnxruntime rows of ops.test.ts and the gradient rows of test/autodiff: float64
// references written here from the ONNX definitions, every error path of their attributes and
// shapes, the lifted inputs through an ONNX round trip, and what their CUDA kernels refuse.
import { describe, expect, it } from 'vitest';
import { decodeModel, encodeModel } from '../../src/core/onnx/codec.js';
import { exportModel } from '../../compiler/onnx/export.js';
import { importModel } from '../../compiler/onnx/import.js';
import { runGraph } from '../../runtime/backends/cpu/interpreter.js';
import { Cuda } from '../../runtime/backends/cuda/device.js';
import { runGraphCuda } from '../../runtime/backends/cuda/graph.js';
import { ModelBuilder } from '../../src/core/ir/builder.js';
import { CleaveError } from '../../src/core/errors.js';
import type { DType } from '../../src/core/ir/dtype.js';
import type { Attrs, Value } from '../../src/core/ir/graph.js';
import { type Tensor, tensor } from '../../src/core/ir/tensor.js';
import { getOp } from '../../src/core/ops/index.js';
import { Rng } from '../../src/core/util/random.js';
import { maxRelError } from '../helpers/compare.js';
import { HostCuda } from '../helpers/host_cuda.js';
import { runOrt } from '../helpers/ort.js';

const rng = new Rng(17);
const rand = (...shape: number[]): Tensor => tensor('float64', shape, Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal()));
const cpu = (op: string, inputs: (Tensor | null)[], attrs: Attrs): Tensor => {
  const def = getOp(op, 'test');
  const b = new ModelBuilder('n', { opset: 23 });
  const ins = inputs.map((t, i) => (t ? b.input(`x${i}`, t.dtype, t.shape) : null));
  const node = b.graph.nodes.length;
  b.ops(op, ins, attrs, 1);
  return def.cpu!(inputs, b.graph.nodes[node]!.attrs, 1)[0]!;
};

describe('float64 references', () => {
  it('RMSNormalization: x / √(mean(x²) + ε) · scale over the axes from `axis` on', () => {
    const x = rand(2, 3, 4), s = rand(3, 4);
    const y = cpu('RMSNormalization', [x, s], { axis: 1, epsilon: 1e-3 });
    for (let n = 0; n < 2; n++) {
      let ms = 0;
      for (let k = 0; k < 12; k++) ms += x.data[n * 12 + k]! ** 2 / 12;
      for (let k = 0; k < 12; k++) expect(y.data[n * 12 + k]).toBeCloseTo((x.data[n * 12 + k]! / Math.sqrt(ms + 1e-3)) * s.data[k]!, 12);
    }
  });

  it('RotaryEmbedding: halves (j, j + rd/2) or pairs (2j, 2j + 1) turn by the position\'s angle; the rest passes', () => {
    const B = 1, H = 2, S = 3, D = 6, rd = 4;
    const x = rand(B, H, S, D);
    const theta = (p: number, j: number) => p / 10000 ** (j / (rd / 2));
    const cos = tensor('float64', [5, rd / 2], Array.from({ length: 5 * 2 }, (_, i) => Math.cos(theta(Math.floor(i / 2), i % 2))));
    const sin = tensor('float64', [5, rd / 2], Array.from({ length: 5 * 2 }, (_, i) => Math.sin(theta(Math.floor(i / 2), i % 2))));
    const pos = tensor('int64', [B, S], [4, 0, 2]);
    for (const interleaved of [0, 1]) {
      const y = cpu('RotaryEmbedding', [x, cos, sin, pos], { interleaved, rotary_embedding_dim: rd });
      for (let h = 0; h < H; h++) for (let s = 0; s < S; s++) {
        const base = (h * S + s) * D, p = pos.data[s]!;
        for (let j = 0; j < rd / 2; j++) {
          const [i1, i2] = interleaved ? [2 * j, 2 * j + 1] : [j, j + rd / 2];
          const c = Math.cos(theta(p, j)), sn = Math.sin(theta(p, j));
          expect(y.data[base + i1]).toBeCloseTo(c * x.data[base + i1]! - sn * x.data[base + i2]!, 12);
          expect(y.data[base + i2]).toBeCloseTo(sn * x.data[base + i1]! + c * x.data[base + i2]!, 12);
        }
        for (let d = rd; d < D; d++) expect(y.data[base + d]).toBe(x.data[base + d]);
      }
    }
  });

  it('CumSum, Clip and Pad on small known values', () => {
    const x = tensor('float64', [2, 3], [1, 2, 3, 4, 5, 6]);
    expect(Array.from(cpu('CumSum', [x], { axis: 1 }).data)).toEqual([1, 3, 6, 4, 9, 15]);
    expect(Array.from(cpu('CumSum', [x], { axis: 1, exclusive: 1, reverse: 1 }).data)).toEqual([5, 3, 0, 11, 6, 0]);
    expect(Array.from(cpu('CumSum', [x], { axis: 0, reverse: 1 }).data)).toEqual([5, 7, 9, 4, 5, 6]);
    expect(Array.from(cpu('Clip', [x], { min: 2, max: 4.5 }).data)).toEqual([2, 2, 3, 4, 4.5, 4.5]);
    expect(Array.from(cpu('Clip', [tensor('float64', [2], [NaN, 9])], { min: 5, max: 1 }).data)).toEqual([NaN, 1]);
    const row = tensor('float64', [4], [1, 2, 3, 4]);
    expect(Array.from(cpu('Pad', [row], { pads: [2, 3], mode: 'reflect' }).data)).toEqual([3, 2, 1, 2, 3, 4, 3, 2, 1]);
    expect(Array.from(cpu('Pad', [row], { pads: [2, 1], mode: 'edge' }).data)).toEqual([1, 1, 1, 2, 3, 4, 4]);
    expect(Array.from(cpu('Pad', [row], { pads: [-1, 2], constant_value: 9 }).data)).toEqual([2, 3, 4, 9, 9]);
  });

  it('GroupNormalization with one channel a group is InstanceNormalization; one group is LayerNorm over [C, …]', () => {
    const x = rand(2, 4, 5), s = rand(4), bias = rand(4);
    const inst = cpu('InstanceNormalization', [x, s, bias], {});
    expect(maxRelError(cpu('GroupNormalization', [x, s, bias], { num_groups: 4 }), inst)).toBeLessThan(1e-12);
    const ones = tensor('float64', [4], [1, 1, 1, 1]), zeros = tensor('float64', [4], [0, 0, 0, 0]);
    const one = cpu('GroupNormalization', [x, ones, zeros], { num_groups: 1 });
    const ln = cpu('LayerNormalization', [x, tensor('float64', [4, 5], new Array(20).fill(1))], { axis: 1 });
    expect(maxRelError(one, ln)).toBeLessThan(1e-12);
  });
});

it('RMSNormalization matches its decomposition (Pow, ReduceMean, Add, Sqrt, Div, Mul) run by onnxruntime', async () => {
  const b = new ModelBuilder('rms', { opset: 18 });
  const x = b.input('x', 'float32', [2, 3, 8]);
  const s = b.input('s', 'float32', [8]);
  const ms = b.op('ReduceMean', [b.op('Mul', [x, x])], { axes: [-1], keepdims: 1 });
  const y = b.op('Mul', [b.op('Div', [x, b.op('Sqrt', [b.op('Add', [ms, b.scalar(1e-5)])])]), s]);
  b.output(y, 'y');
  const r32 = (...shape: number[]) => tensor('float32', shape, Array.from({ length: shape.reduce((p, q) => p * q, 1) }, () => rng.normal()));
  const feeds = { x: r32(2, 3, 8), s: r32(8) };
  const ref = (await runOrt(encodeModel(exportModel(b.finish()).model), feeds))['y']!;
  expect(maxRelError(cpu('RMSNormalization', [feeds.x, feeds.s], {}), ref)).toBeLessThan(1e-6);
});

type Row = [string, [number[], DType?][], Attrs, RegExp];
const i64 = 'int64' as const;

/** Every error path: bad attributes, ranks, shapes and types, each naming the node. */
const ERRORS: Row[] = [
  ['RMSNormalization', [[[2, 8]], [[8]]], { stash_type: 7 }, /^node '\/RMSNormalization': attribute 'stash_type' must be one of 1, 10, 11, 16, got 7$/],
  ['RMSNormalization', [[[2, 8]], [[8]]], { epsilon: -1 }, /^node '\/RMSNormalization': attribute 'epsilon' must be a non-negative number, got -1$/],
  ['RMSNormalization', [[[2, 8]], [[8]]], { axis: 2 }, /node '\/RMSNormalization': axis 2 is out of range for rank 2/],
  ['RMSNormalization', [[[2, 8]], [[7]]], {}, /node '\/RMSNormalization': input 1 of shape \[7\] does not match the normalized shape \[8\]/],
  ['RMSNormalization', [[[2, 8]], [[8], 'float64']], {}, /node '\/RMSNormalization': scale is float64 but X is float32/],
  ['RMSNormalization', [[[2, 8], i64], [[8], i64]], {}, /node '\/RMSNormalization': needs a floating-point input, got int64/],
  ['RMSNormalization', [[[]], [[]]], {}, /node '\/RMSNormalization': RMSNormalization needs an input of rank ≥ 1, got a scalar/],
  ['RMSNormalization', [[[2, 8]]], {}, /node '\/RMSNormalization': input 1 is required/],
  ['Clip', [[[3], 'bool']], {}, /node '\/Clip': does not take bool inputs/],
  ['Clip', [[[3]]], { min: 'a' }, /^node '\/Clip': input 'min' must be a number, got 'a'$/],
  ['Clip', [[[3]]], { lo: 1 }, /^node '\/Clip': Clip has no attribute 'lo'$/],
  ['RotaryEmbedding', [[[2, 8]], [[2, 4]], [[2, 4]]], {}, /node '\/RotaryEmbedding': X has shape \[2, 8\]; expected rank 3 \[B, S, hidden\] or 4 \[B, H, S, D\]/],
  ['RotaryEmbedding', [[[1, 3, 8]], [[1, 3, 4]], [[1, 3, 4]]], {}, /node '\/RotaryEmbedding': a 3-D X \[1, 3, 8\] \[B, S, hidden\] needs num_heads/],
  ['RotaryEmbedding', [[[1, 3, 8]], [[1, 3, 4]], [[1, 3, 4]]], { num_heads: 3 }, /node '\/RotaryEmbedding': hidden size 8 of X \[1, 3, 8\] does not divide into 3 heads/],
  ['RotaryEmbedding', [[[1, 2, 3, 8]], [[1, 3, 4]], [[1, 3, 4]]], { num_heads: 3 }, /node '\/RotaryEmbedding': num_heads 3 does not match the 2 heads of X \[1, 2, 3, 8\]/],
  ['RotaryEmbedding', [[[1, 2, 3, 8]], [[1, 3, 4]], [[1, 3, 4]]], { rotary_embedding_dim: 5 }, /node '\/RotaryEmbedding': rotary_embedding_dim 5 must be even and at most the head size 8/],
  ['RotaryEmbedding', [[[1, 2, 3, 8]], [[1, 3, 4]], [[1, 3, 4]]], { rotary_embedding_dim: 10 }, /node '\/RotaryEmbedding': rotary_embedding_dim 10 must be even and at most the head size 8/],
  ['RotaryEmbedding', [[[1, 2, 3, 8]], [[1, 3, 4]], [[1, 3, 4]]], { interleaved: 2 }, /^node '\/RotaryEmbedding': attribute 'interleaved' must be 0 or 1, got 2$/],
  ['RotaryEmbedding', [[[1, 2, 3, 8]], [[1, 3, 3]], [[1, 3, 4]]], {}, /node '\/RotaryEmbedding': cos_cache \(without position_ids, \[B, S, rotary_embedding_dim \/ 2\]\) has shape \[1, 3, 3\]; expected \[1, 3, 4\]/],
  ['RotaryEmbedding', [[[1, 2, 3, 8]], [[9, 4]], [[9, 4]], [[1, 3], 'int32']], {}, /node '\/RotaryEmbedding': position_ids must be int64, got int32/],
  ['RotaryEmbedding', [[[1, 2, 3, 8]], [[9, 4]], [[9, 4]], [[1, 2], i64]], {}, /node '\/RotaryEmbedding': position_ids has shape \[1, 2\]; expected \[1, 3\]/],
  ['RotaryEmbedding', [[[1, 2, 3, 8]], [[9, 4]], [[9, 2]], [[1, 3], i64]], {}, /node '\/RotaryEmbedding': sin_cache has shape \[9, 2\]; expected \[9, 4\]/],
  ['RotaryEmbedding', [[[1, 2, 3, 8]], [[9, 4], 'float64'], [[9, 4]], [[1, 3], i64]], {}, /node '\/RotaryEmbedding': cos_cache is float64 but X is float32/],
  ['CumSum', [[[2, 3]]], {}, /node '\/CumSum': CumSum needs an axis/],
  ['CumSum', [[[2, 3]]], { axis: 2 }, /node '\/CumSum': axis 2 is out of range for rank 2/],
  ['CumSum', [[[2, 3], 'bool']], { axis: 0 }, /node '\/CumSum': does not take bool inputs/],
  ['CumSum', [[[2, 3]]], { axis: 0, exclusive: 2 }, /^node '\/CumSum': attribute 'exclusive' must be 0 or 1, got 2$/],
  ['CumSum', [[[2, 3]]], { axis: 0.5 }, /^node '\/CumSum': input 'axis' must be an integer, got 0\.5$/],
  ['InstanceNormalization', [[[2, 3]], [[3]], [[3]]], {}, /node '\/InstanceNormalization': InstanceNormalization needs an input \[N, C, D1, …\] of rank ≥ 3, got \[2, 3\]/],
  ['InstanceNormalization', [[[2, 3, 4]], [[4]], [[3]]], {}, /node '\/InstanceNormalization': scale has shape \[4\]; expected \[3\] for input \[2, 3, 4\]/],
  ['InstanceNormalization', [[[2, 3, 4]], [[3]], [[3], 'float64']], {}, /node '\/InstanceNormalization': inputs have different element types/],
  ['GroupNormalization', [[[2, 6, 4]], [[6]], [[6]]], {}, /^node '\/GroupNormalization': GroupNormalization needs the attribute 'num_groups'$/],
  ['GroupNormalization', [[[2, 6, 4]], [[6]], [[6]]], { num_groups: 0 }, /^node '\/GroupNormalization': attribute 'num_groups' must be a positive integer, got 0$/],
  ['GroupNormalization', [[[2, 6, 4]], [[6]], [[6]]], { num_groups: 4 }, /node '\/GroupNormalization': 6 channels of \[2, 6, 4\] do not divide into num_groups 4/],
  ['GroupNormalization', [[[2, 6, 4]], [[4]], [[6]]], { num_groups: 3 }, /node '\/GroupNormalization': scale has shape \[4\]; expected \[6\] \(one per channel\) or \[3\] \(one per group, opset 18\)/],
  ['GroupNormalization', [[[2, 6, 4]], [[6]], [[3]]], { num_groups: 3 }, /node '\/GroupNormalization': scale \[6\] and bias \[3\] differ in size/],
  ['GroupNormalization', [[[6]], [[6]], [[6]]], { num_groups: 3 }, /node '\/GroupNormalization': GroupNormalization needs an input \[N, C, …\] of rank ≥ 2, got \[6\]/],
  ['Pad', [[[2, 3]]], {}, /node '\/Pad': Pad needs pads/],
  ['Pad', [[[2, 3]]], { pads: [1, 1, 1] }, /node '\/Pad': Pad has 3 pads for 2 axes of an input of rank 2; it needs two per axis \(4\)/],
  ['Pad', [[[2, 3]]], { pads: [1, 1], mode: 'wrap' }, /^node '\/Pad': attribute 'mode' must be one of 'constant', 'reflect', 'edge', got 'wrap'$/],
  ['Pad', [[[2, 3]]], { pads: [0, 3, 0, 0], mode: 'reflect' }, /node '\/Pad': reflect pads 3 and 0 of dimension 1 of \[2, 3\] must be less than its size 3/],
  ['Pad', [[[2, 3]]], { pads: [0, -2, 0, -2] }, /node '\/Pad': pads -2 and -2 of dimension 1 of \[2, 3\] leave a negative size -1/],
  ['Pad', [[[2, 3]]], { pads: [1, 1, 1, 1], axes: [0, -2] }, /node '\/Pad': Pad axes \[0, -2\] repeat an axis/],
  ['Pad', [[[0, 3]]], { pads: [1, 0, 0, 0], mode: 'edge' }, /node '\/Pad': edge pads of dimension 0 of \[0, 3\] have no edge to repeat/],
  ['Pad', [[[2, 3]]], { pads: [1, 1], axes: [2] }, /node '\/Pad': axis 2 is out of range for rank 2/],
];

it.each(ERRORS)('%s: %s %s', (op, inputs, attrs, message) => {
  const b = new ModelBuilder('bad', { opset: 23 });
  const vs = inputs.map(([shape, dtype], i) => b.input(`x${i}`, dtype ?? 'float32', shape));
  expect(() => b.ops(op, vs, attrs, 1)).toThrow(CleaveError);
  expect(() => b.ops(op, vs, attrs, 1)).toThrow(message);
});

it('a symbolic dimension may pass unpadded, not padded', () => {
  const b = new ModelBuilder('sym', { opset: 18 });
  const x = b.input('x', 'float32', ['batch', 3]);
  expect(b.op('Pad', [x], { pads: [0, 1, 0, 2] }).shape).toEqual(['batch', 6]);
  expect(() => b.op('Pad', [x], { pads: [1, 0, 0, 0] })).toThrow(/node '\/Pad_1': cannot pad symbolic dimension 'batch'/);
});

it('RotaryEmbedding\'s CPU kernel names a position id beyond the caches', () => {
  const x = rand(1, 1, 2, 4), c = rand(3, 2);
  expect(() => cpu('RotaryEmbedding', [x, c, c, tensor('int64', [1, 2], [0, 3])], {})).toThrow(/RotaryEmbedding: position id 3 is out of range for caches of 3 positions/);
});

describe('lifted inputs through ONNX', () => {
  it('Clip bounds, Pad pads, constant_value and axes, CumSum axis are inputs of the input\'s type and come back as attributes', async () => {
    const b = new ModelBuilder('lift', { opset: 18 });
    const x = b.input('x', 'float32', [2, 3, 4]);
    const k = b.input('k', 'int64', [2, 3]);
    const c = b.op('Clip', [x], { min: -0.5, max: 0.5 });
    const p = b.op('Pad', [c], { pads: [1, 0, 2, 1], axes: [2, 0], mode: 'constant', constant_value: 0.25 });
    b.output(b.op('CumSum', [p], { axis: 1, reverse: 1 }), 'y');
    b.output(b.op('Pad', [b.op('Clip', [k], { min: 1, max: 3 })], { pads: [0, 1, 0, 0], constant_value: 7 }), 'z');
    const g = b.finish();
    const bytes = encodeModel(exportModel(g).model);
    const back = importModel(decodeModel(bytes, 'lift.onnx'), { baseDir: '.', file: 'lift.onnx' });
    expect(back.nodes.map((n) => n.op)).toEqual(g.nodes.map((n) => n.op));
    for (const [i, n] of back.nodes.entries()) expect(n.attrs).toEqual(g.nodes[i]!.attrs);
    const feeds = { x: tensor('float32', [2, 3, 4], Array.from({ length: 24 }, () => rng.normal())), k: tensor('int64', [2, 3], [0, 1, 2, 3, 4, 5]) };
    const ref = await runOrt(bytes, feeds);
    const ours = runGraph(back, feeds);
    expect(maxRelError(ours.get('y')!, ref['y']!)).toBeLessThan(1e-6);
    expect(Array.from(ours.get('z')!.data)).toEqual(Array.from(ref['z']!.data));
  });
});

describe('CUDA refusals (host emulation)', () => {
  const run = (build: (b: ModelBuilder) => Value, feeds: Record<string, Tensor>) => {
    const b = new ModelBuilder('cuda', { opset: 23 });
    b.output(build(b), 'y');
    return () => runGraphCuda(b.finish(), feeds, 'float32', new Cuda(new HostCuda().native));
  };
  it('RMSNormalization with a scale that is not the trailing dims of the normalized shape', () => {
    const f = run((b) => b.op('RMSNormalization', [b.input('x', 'float32', [2, 3, 4]), b.input('s', 'float32', [3, 1])], { axis: 1 }), { x: tensor('float32', [2, 3, 4], rand(2, 3, 4).data), s: tensor('float32', [3, 1], [1, 2, 3]) });
    expect(f).toThrow(/RMSNormalization on CUDA takes a scale that is the trailing dims of the normalized shape \[3, 4\], not \[3, 1\]/);
  });
  it('Pad and CumSum of integers (the kernels take floats)', () => {
    const k = tensor('int64', [2, 3], [1, 2, 3, 4, 5, 6]);
    expect(run((b) => b.op('Pad', [b.input('k', 'int64', [2, 3])], { pads: [1, 0, 0, 0] }), { k })).toThrow(/Pad on CUDA takes float32, bfloat16 or float16, not int64/);
    expect(run((b) => b.op('CumSum', [b.input('k', 'int64', [2, 3])], { axis: 0 }), { k })).toThrow(/CumSum on CUDA takes float32, bfloat16 or float16, not int64/);
  });
});
