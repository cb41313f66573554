import { describe, expect, it } from 'vitest';
import { buildTrainingGraph } from '../../compiler/autodiff/training.js';
import { toFloat64 } from '../../compiler/passes/precision.js';
import { runGraph } from '../../runtime/backends/cpu/interpreter.js';
import { Cuda } from '../../runtime/backends/cuda/device.js';
import { runGraphCuda } from '../../runtime/backends/cuda/graph.js';
import { ModelBuilder } from '../../src/core/ir/builder.js';
import type { Graph, Value } from '../../src/core/ir/graph.js';
import { type Tensor, tensor } from '../../src/core/ir/tensor.js';
import { getOp } from '../../src/core/ops/index.js';
import { Rng } from '../../src/core/util/random.js';
import { biasedAttentionCase } from '../helpers/attention.js';
import { maxRelError } from '../helpers/compare.js';
import { gradCheck } from '../helpers/gradcheck.js';
import { HostCuda } from '../helpers/host_cuda.js';

// FusedAttention's bias input (T5's relative position bias, ALiBi) and cross-attention (k, v with
// another length than q), checked against the attention written out op by op.

const B = 2, H = 2, D = 8, Dh = D / H;

const randn = (shape: number[], rng: Rng): Tensor => tensor('float32', shape, Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal()));

/** softmax(scale · q kᵀ + bias) v, heads split and merged, written out: the reference. */
function writtenOut(b: ModelBuilder, q: Value, k: Value, v: Value, bias: Value, scale: number, causalMask: Tensor | null): Value {
  const split = (t: Value, perm: number[]): Value => b.op('Transpose', [b.op('Reshape', [t], { shape: [0, 0, H, Dh] })], { perm });
  let s = b.op('Add', [b.op('Mul', [b.op('MatMul', [split(q, [0, 2, 1, 3]), split(k, [0, 2, 3, 1])]), b.scalar(scale)]), bias]);
  if (causalMask) s = b.op('Where', [b.constant(causalMask, 'mask'), s, b.scalar(-1e30)]);
  const y = b.op('Transpose', [b.op('MatMul', [b.op('Softmax', [s], { axis: -1 }), split(v, [0, 2, 1, 3])])], { perm: [0, 2, 1, 3] });
  return b.op('Reshape', [y], { shape: [0, 0, D] });
}

const lower = (T: number): Tensor => tensor('bool', [T, T], Array.from({ length: T * T }, (_, i) => (i % T <= Math.floor(i / T) ? 1 : 0)));

/** A loss Σ R ∘ attention over parameters q, k, v and bias, fused or written out. */
function lossGraph(Tq: number, Tk: number, biasShape: number[], causal: boolean, fused: boolean, seed: number): Graph {
  const rng = new Rng(seed);
  const b = new ModelBuilder(fused ? 'fused' : 'ref');
  const q = b.graph.addParam('q', randn([B, Tq, D], rng));
  const k = b.graph.addParam('k', randn([B, Tk, D], rng)), v = b.graph.addParam('v', randn([B, Tk, D], rng));
  const bias = b.graph.addParam('bias', randn(biasShape, rng));
  const R = randn([B, Tq, D], rng);
  const scale = 0.5; // exact in float32: the written-out graph holds it as a float32 constant
  const out = fused
    ? b.ops('FusedAttention', [q, k, v, bias], { heads: H, scale, causal: causal ? 1 : 0 }, 2)[0]!
    : writtenOut(b, q, k, v, bias, scale, causal ? lower(Tq) : null);
  b.output(b.op('ReduceSum', [b.op('Mul', [out, b.constant(R, 'R')])], { keepdims: 0 }), 'loss');
  return b.finish();
}

const cases: [string, number, number, number[], boolean][] = [
  ['a per-head bias shared over the batch (T5)', 4, 4, [1, H, 4, 4], false],
  ['a per-batch bias shared over heads', 4, 4, [B, 1, 4, 4], false],
  ['a full bias', 3, 3, [B, H, 3, 3], false],
  ['causal with a bias (T5 decoder)', 5, 5, [1, H, 5, 5], true],
  ['cross-attention with a bias (3 queries, 6 keys)', 3, 6, [1, H, 3, 6], false],
];

describe.each(cases)('FusedAttention with %s', (_, Tq, Tk, biasShape, causal) => {
  it('has the loss and the gradients (bias included) autodiff gives the written-out attention', () => {
    const spec = { loss: { kind: 'output' as const } };
    const [tf, tr] = [true, false].map((f) => buildTrainingGraph(toFloat64(lossGraph(Tq, Tk, biasShape, causal, f, 7)), spec));
    const rf = runGraph(tf!.graph, {}), rr = runGraph(tr!.graph, {});
    expect(maxRelError(rf.get(tf!.loss.name)!, rr.get(tr!.loss.name)!)).toBeLessThanOrEqual(1e-12);
    for (const p of ['q', 'k', 'v', 'bias']) {
      const got = rf.get(tf!.grads.get(p)!.name)!;
      expect(got.shape, p).toEqual(p === 'bias' ? biasShape : p === 'q' ? [B, Tq, D] : [B, Tk, D]);
      expect(maxRelError(got, rr.get(tr!.grads.get(p)!.name)!), `d${p}`).toBeLessThanOrEqual(1e-10);
    }
  });

  it('has gradients that match central finite differences', () => {
    expect(gradCheck(lossGraph(Tq, Tk, biasShape, causal, true, 9), {}, { samples: 20 }).f64).toBeLessThanOrEqual(1e-6);
  });

  it('runs on the CUDA host emulation as on the CPU kernels (dscores included)', () => {
    const b = new ModelBuilder('attn');
    const feeds = biasedAttentionCase(b, B, Tq, Tk, D, H, causal, biasShape, 5);
    const g = b.finish();
    const cpu = runGraph(g, feeds), emu = runGraphCuda(g, feeds, 'float32', new Cuda(new HostCuda().native));
    for (const [name, ref] of cpu) expect(maxRelError(emu.get(name)!, ref), name).toBeLessThanOrEqual(1e-5);
  });
});

describe('FusedAttention bias edge cases', () => {
  it('a bias of −∞ on every key of a row gives that row zeros (and no NaN in its gradient)', () => {
    const rng = new Rng(3);
    const q = randn([1, 2, 4], rng), k = randn([1, 2, 4], rng), v = randn([1, 2, 4], rng), dout = randn([1, 2, 4], rng);
    const bias = tensor('float32', [1, 1, 2, 2], [0, 0, -Infinity, -Infinity]);
    const attrs = { heads: 1, scale: 0.5, causal: 0 };
    const [out, lse] = getOp('FusedAttention', 't').cpu!([q, k, v, bias], attrs, 2);
    expect(Array.from(out!.data.slice(4))).toEqual([0, 0, 0, 0]);
    expect(lse!.data[1]).toBe(-Infinity);
    const grads = getOp('FusedAttentionGrad', 't').cpu!([dout, q, k, v, out!, lse!, bias], attrs, 4);
    for (const t of grads) expect(Array.from(t.data).every(Number.isFinite)).toBe(true);
  });

  it('refuses a bias of the wrong shape or type, causal cross-attention, and a gradient without its dscores output, naming the node', () => {
    const b = new ModelBuilder('bad');
    const q = b.input('q', 'float32', [B, 3, D]), k = b.input('k', 'float32', [B, 5, D]), v = b.input('v', 'float32', [B, 5, D]);
    const attrs = { heads: H };
    expect(() => b.ops('FusedAttention', [q, k, v, b.input('b1', 'float32', [1, H, 3, 4])], attrs, 2)).toThrow(/node '\/FusedAttention': the bias float32\[1, 2, 3, 4\] must be float32\[batch or 1, heads or 1, 3, 5\] for scores of \[2, 2, 3, 5\]/);
    expect(() => b.ops('FusedAttention', [q, k, v, b.input('b2', 'float32', [3, H, 3, 5])], attrs, 2)).toThrow(/the bias float32\[3, 2, 3, 5\] must be/);
    expect(() => b.ops('FusedAttention', [q, k, v, b.input('b3', 'float32', [H, 3, 5])], attrs, 2)).toThrow(/the bias float32\[2, 3, 5\] must be/);
    expect(() => b.ops('FusedAttention', [q, k, v, b.input('b4', 'float64', [1, H, 3, 5])], attrs, 2)).toThrow(/the bias float64\[1, 2, 3, 5\] must be float32/);
    expect(() => b.ops('FusedAttention', [q, k, v], { heads: H, causal: 1 }, 2)).toThrow(/node '\/FusedAttention': causal attention needs as many keys as queries; k \[2, 5, 8\] has 5 for 3 queries/);
    const bias = b.input('bias', 'float32', [1, H, 3, 5]);
    const [o, lse] = b.ops('FusedAttention', [q, k, v, bias], attrs, 2) as [Value, Value];
    expect(() => b.ops('FusedAttentionGrad', [q, q, k, v, o, lse, bias], attrs, 3)).toThrow(/node '\/FusedAttentionGrad': FusedAttentionGrad has a bias, so 4 outputs \(dq, dk, dv, dscores\), not 3/);
    expect(() => b.ops('FusedAttentionGrad', [q, q, k, v, o, lse], attrs, 4)).toThrow(/has no bias, so 3 outputs \(dq, dk, dv\), not 4/);
  });
});
