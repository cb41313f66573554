import { describe, expect, it } from 'vitest';
import { buildTrainingGraph } from '../../compiler/autodiff/training.js';
import { compile } from '../../compiler/compile.js';
import { fuseMatMuls } from '../../compiler/passes/matmul.js';
import { buildGpt } from '../../fixtures/models.js';
import { runGraph } from '../../runtime/backends/cpu/interpreter.js';
import { ModelBuilder } from '../../src/core/ir/builder.js';
import { CleaveError } from '../../src/core/errors.js';
import type { Graph } from '../../src/core/ir/graph.js';
import { type Tensor, tensor } from '../../src/core/ir/tensor.js';
import { getOp } from '../../src/core/ops/index.js';
import { Rng } from '../../src/core/util/random.js';
import { maxRelError } from '../helpers/compare.js';
import { randomFeeds } from '../helpers/inputs.js';

const swapsLast = (perm: readonly number[]) => perm.every((p, i) => (i === perm.length - 2 ? p === perm.length - 1 : i === perm.length - 1 ? p === perm.length - 2 : p === i));

function gptTraining(): { g: Graph; feeds: Record<string, Tensor> } {
  const t = buildTrainingGraph(buildGpt({ vocab: 32, seq: 8, dim: 16, heads: 2, layers: 2, tied: false, seed: 3, batch: 2 }), { loss: { kind: 'cross-entropy' } });
  const feeds = randomFeeds(t.graph, 2, 5, 32);
  return { g: t.graph, feeds };
}

describe('fuseMatMuls', () => {
  it('folds every last-two-axes Transpose and scalar scaling of a GPT training graph, with unchanged loss and gradients', () => {
    const { g, feeds } = gptTraining();
    const before = runGraph(g, feeds);
    const transposesBefore = g.nodes.filter((n) => n.op === 'Transpose').length;
    const removed = fuseMatMuls(g);
    expect(removed).toBeGreaterThan(0);
    // No Transpose that swaps the last two axes feeds a product any more, and no product is scaled afterwards.
    for (const n of g.nodes) {
      if (n.op !== 'MatMul' && n.op !== 'FusedMatMul') continue;
      for (const x of n.inputs) {
        const p = x!.producer;
        if (p?.op === 'Transpose') expect(swapsLast(p.attrs['perm'] as number[])).toBe(false);
      }
      const users = n.outputs[0]!.users;
      expect(users.some((u) => u.op === 'Mul' && u.inputs.some((v) => v?.kind === 'const' && v.data?.data.length === 1))).toBe(false);
    }
    expect(g.nodes.filter((n) => n.op === 'Transpose').length).toBeLessThan(transposesBefore);
    expect(g.nodes.some((n) => n.op === 'FusedMatMul' && n.attrs['alpha'] !== 1)).toBe(true);
    const after = runGraph(g, feeds);
    expect([...after.keys()]).toEqual([...before.keys()]);
    for (const [k, v] of before) expect(maxRelError(after.get(k)!, v), k).toBeLessThan(1e-6);
    // Phases survive, and every backward node still names a live forward node it differentiates
    // (what the partitioner groups work by).
    expect(g.nodes.every((n) => typeof n.meta['phase'] === 'string')).toBe(true);
    const live = new Set(g.nodes.map((n) => n.name));
    for (const n of g.nodes) if (typeof n.meta['gradOf'] === 'string') expect(live.has(n.meta['gradOf']), `${n.name} → ${n.meta['gradOf']}`).toBe(true);
  });

  it('a tied weight (logits = x·Wᵀ): no Transpose left, dX reads W through two swaps, dW is (xᵀ·dY)ᵀ as one product', () => {
    const t = buildTrainingGraph(buildGpt({ vocab: 32, seq: 8, dim: 16, heads: 2, layers: 1, tied: true, seed: 4, batch: 2 }), { loss: { kind: 'cross-entropy' } });
    const g = t.graph, feeds = randomFeeds(g, 2, 6, 32);
    const before = runGraph(g, feeds);
    fuseMatMuls(g);
    expect(g.nodes.filter((n) => n.op === 'Transpose' && swapsLast(n.attrs['perm'] as number[])).map((n) => n.name)).toEqual([]);
    const after = runGraph(g, feeds);
    for (const [k, v] of before) expect(maxRelError(after.get(k)!, v), k).toBeLessThan(1e-6);
    const live = new Set(g.nodes.map((n) => n.name));
    for (const n of g.nodes) if (typeof n.meta['gradOf'] === 'string') expect(live.has(n.meta['gradOf']), `${n.name} → ${n.meta['gradOf']}`).toBe(true);
  });

  it('(A·B)ᵀ becomes Bᵀ·Aᵀ only where the product is read by the swap alone', () => {
    const b = new ModelBuilder('tp', { opset: 17 });
    const x = b.input('x', 'float32', [3, 4]), y = b.input('y', 'float32', [4, 5]);
    const p = b.op('MatMul', [b.op('Transpose', [b.op('Relu', [x])], { perm: [1, 0] }), b.op('Relu', [b.input('z', 'float32', [3, 5])])]);
    b.output(b.op('Transpose', [p], { perm: [1, 0] }), 'pt');
    const q = b.op('MatMul', [x, y]);
    b.output(b.op('Transpose', [q], { perm: [1, 0] }), 'qt');
    b.output(q, 'q');
    const g = b.finish();
    const feeds = randomFeeds(g, 1);
    const want = runGraph(g, feeds);
    fuseMatMuls(g);
    const pt = g.outputs.find((o) => o.name === 'pt')!.producer!;
    // (relu(x)ᵀ·relu(z))ᵀ = relu(z)ᵀ·relu(x): the operands swapped, each read as the GEMM needs.
    expect([pt.op, pt.attrs['transA'], pt.attrs['transB'], pt.inputs.map((v) => v!.shape)]).toEqual(['FusedMatMul', 1, 0, [[3, 5], [3, 4]]]);
    expect(g.outputs.find((o) => o.name === 'qt')!.producer!.op).toBe('Transpose');
    const got = runGraph(g, feeds);
    for (const [k, v] of want) expect(maxRelError(got.get(k)!, v), k).toBeLessThan(1e-7);
  });

  it('leaves a product alone where its Transpose is a graph output and its result is read twice', () => {
    const b = new ModelBuilder('t', { opset: 17 });
    const x = b.input('x', 'float32', [3, 4]);
    const w = b.param('w', [5, 4], { normal: 1 });
    const wt = b.op('Transpose', [w], { perm: [1, 0] });
    const y = b.op('MatMul', [x, wt]);
    const s = b.op('Mul', [y, b.scalar(0.5)]);
    b.output(s, 's');
    b.output(y, 'y');
    b.output(wt, 'wt');
    const g = b.finish();
    const feeds = randomFeeds(g, 1);
    const before = runGraph(g, feeds);
    expect(fuseMatMuls(g)).toBe(0);
    expect(g.nodes.map((n) => n.op).sort()).toEqual(['MatMul', 'Mul', 'Transpose']);
    const after = runGraph(g, feeds);
    for (const [k, v] of before) expect(maxRelError(after.get(k)!, v), k).toBeLessThan(1e-7);
  });

  it('never folds a constant it is told to keep (the backward seed, which loss scaling rewrites)', () => {
    const b = new ModelBuilder('k', { opset: 17 });
    const x = b.input('x', 'float32', [3, 4]);
    const seed = b.scalar(1);
    b.output(b.op('Mul', [b.op('MatMul', [x, b.param('w', [4, 2], { normal: 1 })]), seed]), 'y');
    const g = b.finish();
    expect(fuseMatMuls(g, new Set([seed]))).toBe(0);
    expect(g.nodes.map((n) => n.op)).toEqual(['MatMul', 'Mul']);
    expect(fuseMatMuls(g)).toBe(1);
    expect(g.nodes.map((n) => n.op)).toEqual(['FusedMatMul']);
  });

  it('compiles plans with fused products by default, and without them on request', () => {
    const graph = () => buildGpt({ vocab: 32, seq: 8, dim: 16, heads: 2, layers: 1, tied: false, seed: 3, batch: 2 });
    const opts = { model: 'gpt', loss: { kind: 'cross-entropy' } as const, partitions: 1, microbatches: 2, schedule: '1f1b' as const, batch: 4 };
    const fused = compile({ ...opts, graph: graph() }).plan, plain = compile({ ...opts, graph: graph(), fuse: false }).plan;
    expect(fused.nodes.some((n) => n.op === 'FusedMatMul')).toBe(true);
    expect(plain.nodes.some((n) => n.op === 'FusedMatMul')).toBe(false);
    expect(fused.nodes.length).toBeLessThan(plain.nodes.length);
  });
});

describe('FusedMatMul', () => {
  const def = getOp('FusedMatMul');
  const rng = new Rng(4);
  const rand = (shape: number[]): Tensor => tensor('float32', shape, Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal()));
  const swap = (x: Tensor): Tensor => runGraphOp('Transpose', [x], { perm: [...x.shape.keys()].map((i, _, a) => (i === a.length - 2 ? a.length - 1 : i === a.length - 1 ? a.length - 2 : i)) });
  function runGraphOp(op: string, ins: Tensor[], attrs: Record<string, number | number[]>): Tensor {
    return getOp(op).cpu!(ins, attrs, 1)[0]!;
  }
  for (const [ta, tb] of [[0, 0], [1, 0], [0, 1], [1, 1]] as const) {
    it(`computes alpha·op(A)·op(B) with transA=${ta}, transB=${tb}, batched and with a 2-D weight`, () => {
      for (const [as, bs] of [[[2, 3, 4], [2, 4, 5]], [[2, 3, 4], [4, 5]]] as const) {
        const A = rand(ta ? [...as.slice(0, -2), as.at(-1)!, as.at(-2)!] : [...as]);
        const B = rand(tb ? [...bs.slice(0, -2), bs.at(-1)!, bs.at(-2)!] : [...bs]);
        if (ta && A.shape.length === 2) continue;
        const got = def.cpu!([A, B], { transA: ta, transB: tb, alpha: 0.25 }, 1)[0]!;
        const ref = runGraphOp('MatMul', [ta ? swap(A) : A, tb ? swap(B) : B], {});
        expect(got.shape).toEqual(ref.shape);
        got.data.forEach((v, i) => expect(v).toBeCloseTo(0.25 * ref.data[i]!, 5));
      }
    });
  }

  it('names the node when shapes do not fit', () => {
    const b = new ModelBuilder('bad', { opset: 17 });
    const x = b.input('x', 'float32', [4]);
    const y = b.input('y', 'float32', [4, 3]);
    expect(() => b.op('FusedMatMul', [x, y], { transA: 1, transB: 0, alpha: 1 })).toThrow(/FusedMatMul transposes only operands of rank ≥ 2/);
    const z = b.input('z', 'float32', [5, 3]);
    expect(() => b.op('FusedMatMul', [y, z], { transA: 1, transB: 1, alpha: 1 })).toThrow(CleaveError);
  });
});
