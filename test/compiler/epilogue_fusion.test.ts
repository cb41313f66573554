import { describe, expect, it } from 'vitest';
import { buildTrainingGraph } from '../../compiler/autodiff/training.js';
import { compile } from '../../compiler/compile.js';
import { fuseEpilogues } from '../../compiler/passes/epilogue.js';
import { fuseMatMuls } from '../../compiler/passes/matmul.js';
import { buildGpt } from '../../fixtures/models.js';
import { runGraph } from '../../runtime/backends/cpu/interpreter.js';
import { ModelBuilder } from '../../src/core/ir/builder.js';
import { CleaveError } from '../../src/core/errors.js';
import type { Graph } from '../../src/core/ir/graph.js';
import { tensor } from '../../src/core/ir/tensor.js';
import { getOp } from '../../src/core/ops/index.js';
import { Rng } from '../../src/core/util/random.js';
import { maxRelError } from '../helpers/compare.js';
import { randomFeeds } from '../helpers/inputs.js';

const epilogues = (g: Graph) => g.nodes.filter((n) => n.op === 'FusedMatMul').map((n) => String(n.attrs['epilogue'] ?? '')).filter((e) => e);
const count = (xs: string[], x: string) => xs.filter((y) => y === x).length;

describe('fuseEpilogues', () => {
  it('folds every bias Add, GELU-tanh and its gradient of a GPT training graph into GEMMs, with unchanged loss and gradients', () => {
    const layers = 2;
    const t = buildTrainingGraph(buildGpt({ vocab: 32, seq: 8, dim: 16, heads: 2, layers, tied: false, seed: 3, batch: 2, gelu: 'tanh' }), { loss: { kind: 'cross-entropy' } });
    const g = t.graph;
    const feeds = randomFeeds(g, 2, 5, 32);
    fuseMatMuls(g, new Set([t.seed]));
    const before = runGraph(g, feeds);
    const nodesBefore = g.nodes.length;
    const removed = fuseEpilogues(g);
    expect(removed).toBe(nodesBefore - g.nodes.length);
    const e = epilogues(g);
    // Per layer: qkv and both output projections take a bias; the MLP's first GEMM takes bias + GELU,
    // and the GEMM of its backward input the GELU gradient.
    expect(count(e, 'bias')).toBe(3 * layers);
    expect(count(e, 'gelu_bias')).toBe(layers);
    expect(count(e, 'dgelu')).toBe(layers);
    expect(g.nodes.some((n) => n.op === 'Gelu' || n.op === 'GeluGrad')).toBe(false);
    // The pre-activation GeluGrad read is now the fused node's second output, under its old name.
    const gb = g.nodes.find((n) => n.attrs['epilogue'] === 'gelu_bias')!;
    expect(gb.outputs).toHaveLength(2);
    expect(gb.outputs[1]!.users.some((u) => u.attrs['epilogue'] === 'dgelu')).toBe(true);
    const after = runGraph(g, feeds);
    expect([...after.keys()]).toEqual([...before.keys()]);
    for (const [k, v] of before) expect(maxRelError(after.get(k)!, v), k).toBeLessThan(1e-6);
    const live = new Set(g.nodes.map((n) => n.name));
    for (const n of g.nodes) if (typeof n.meta['gradOf'] === 'string') expect(live.has(n.meta['gradOf']), `${n.name} → ${n.meta['gradOf']}`).toBe(true);
    expect(g.nodes.every((n) => typeof n.meta['phase'] === 'string')).toBe(true);
  });

  it('fuses only the bias before an exact (erf) GELU, whose gradient cuBLASLt does not have', () => {
    const t = buildTrainingGraph(buildGpt({ vocab: 32, seq: 8, dim: 16, heads: 2, layers: 1, tied: false, seed: 3, batch: 2 }), { loss: { kind: 'cross-entropy' } });
    fuseMatMuls(t.graph, new Set([t.seed]));
    fuseEpilogues(t.graph);
    expect(epilogues(t.graph)).toEqual(['bias', 'bias', 'bias', 'bias']);
    expect(t.graph.nodes.filter((n) => n.op === 'Gelu' || n.op === 'GeluGrad')).toHaveLength(2);
  });

  it('leaves products alone where the epilogue would not be one GEMM\'s or the sum is read elsewhere', () => {
    const b = new ModelBuilder('e', { opset: 20 });
    const x = b.input('x', 'float32', [2, 3, 4]);
    // A bias of the wrong shape (a matrix), a batched B, a transposed batched A, a product read twice.
    b.output(b.op('Add', [b.op('MatMul', [x, b.param('w0', [4, 5], { normal: 1 })]), b.param('m', [3, 5], { normal: 1 })]), 'wrongBias');
    b.output(b.op('Add', [b.op('MatMul', [x, b.param('w1', [2, 4, 5], { normal: 1 })]), b.param('b1', [5], { normal: 1 })]), 'batchedB');
    b.output(b.op('Add', [b.op('FusedMatMul', [x, b.param('w2', [3, 5], { normal: 1 })], { transA: 1 }), b.param('b2', [5], { normal: 1 })]), 'transA');
    const twice = b.op('MatMul', [x, b.param('w3', [4, 5], { normal: 1 })]);
    b.output(b.op('Add', [twice, b.param('b3', [5], { normal: 1 })]), 'sum');
    b.output(twice, 'product');
    // The sum both a graph output and the GELU's input: only the bias folds.
    const s = b.op('Add', [b.op('MatMul', [x, b.param('w4', [4, 5], { normal: 1 })]), b.param('b4', [5], { normal: 1 })]);
    b.output(s, 'pre');
    b.output(b.op('Gelu', [s], { approximate: 'tanh' }), 'gelu');
    const g = b.finish();
    const feeds = randomFeeds(g, 1);
    const before = runGraph(g, feeds);
    expect(fuseEpilogues(g)).toBe(1);
    expect(epilogues(g)).toEqual(['bias']);
    const after = runGraph(g, feeds);
    for (const [k, v] of before) expect(maxRelError(after.get(k)!, v), k).toBeLessThan(1e-7);
  });

  it('compiles the bf16 GPT of the benchmark with its epilogues fused', () => {
    const graph = buildGpt({ vocab: 32, seq: 8, dim: 16, heads: 2, layers: 1, tied: false, seed: 3, batch: 2, gelu: 'tanh' });
    const plan = compile({ model: 'gpt', graph, loss: { kind: 'cross-entropy' }, partitions: 1, microbatches: 2, schedule: '1f1b', batch: 4, policy: 'bf16' }).plan;
    const ops = plan.nodes.map((n) => n.op);
    expect(ops).not.toContain('Gelu');
    expect(ops).not.toContain('GeluGrad');
  });
});

describe('FusedMatMul epilogues (CPU kernel)', () => {
  const def = getOp('FusedMatMul');
  const rng = new Rng(9);
  const rand = (shape: number[]) => tensor('float32', shape, Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal()));
  const cpu = (op: string, ins: ReturnType<typeof rand>[], attrs: Record<string, string | number> = {}) => getOp(op).cpu!(ins, attrs, 1)[0]!;

  it('equals MatMul, Add, Gelu and GeluGrad run one after another', () => {
    const A = rand([2, 3, 4]), B = rand([4, 6]), bias = rand([6]), pre = rand([2, 3, 6]);
    const prod = cpu('MatMul', [A, B]);
    const sum = cpu('Add', [prod, bias]);
    const close = (got: { data: ArrayLike<number> }, want: { data: ArrayLike<number> }) => Array.from(got.data).forEach((v, i) => expect(v).toBeCloseTo(want.data[i]!, 5));
    close(def.cpu!([A, B, bias], { epilogue: 'bias' }, 1)[0]!, sum);
    const [y, p] = def.cpu!([A, B, bias], { epilogue: 'gelu_bias' }, 2);
    close(y!, cpu('Gelu', [sum], { approximate: 'tanh' }));
    close(p!, sum);
    close(def.cpu!([A, B, pre], { epilogue: 'dgelu' }, 1)[0]!, cpu('GeluGrad', [prod, pre], { approximate: 'tanh' }));
  });

  it('names the node for an unknown epilogue, a missing input, a misshapen bias or a second output it has not', () => {
    const b = new ModelBuilder('bad', { opset: 20 });
    const x = b.input('x', 'float32', [3, 4]);
    const w = b.input('w', 'float32', [4, 5]);
    const v = b.input('v', 'float32', [5]);
    const m = b.input('m', 'float32', [3, 5]);
    const fails = (f: () => unknown, re: RegExp) => {
      expect(f).toThrow(CleaveError);
      expect(f).toThrow(re);
    };
    fails(() => b.op('FusedMatMul', [x, w, v], { epilogue: 'relu' }), /node '.*': FusedMatMul epilogue 'relu' is not one of bias, gelu_bias, dgelu/);
    fails(() => b.op('FusedMatMul', [x, w], { epilogue: 'bias' }), /FusedMatMul with epilogue bias takes 3 inputs, got 2/);
    fails(() => b.op('FusedMatMul', [x, w, v]), /FusedMatMul takes 2 inputs, got 3/);
    fails(() => b.op('FusedMatMul', [x, w, m], { epilogue: 'bias' }), /bias must be \[5\], got \[3, 5\]/);
    fails(() => b.op('FusedMatMul', [x, w, v], { epilogue: 'dgelu' }), /pre-activation must be \[3, 5\], got \[5\]/);
    fails(() => b.ops('FusedMatMul', [x, w, v], { epilogue: 'bias' }, 2), /only FusedMatMul's gelu_bias epilogue has a second output/);
  });
});
