import { describe, expect, it } from 'vitest';
import { buildTrainingGraph } from '../../compiler/autodiff/training.js';
import { importOnnx } from '../../compiler/onnx/import.js';
import { attentionFusion, fuseAttention } from '../../compiler/passes/attention.js';
import { GPT_DEFAULT, buildGpt } from '../../fixtures/models.js';
import { runGraph } from '../../runtime/backends/cpu/interpreter.js';
import { ModelBuilder } from '../../src/core/ir/builder.js';
import { cloneGraph } from '../../src/core/ir/clone.js';
import type { Graph, Value } from '../../src/core/ir/graph.js';
import { type Tensor, tensor } from '../../src/core/ir/tensor.js';
import { validateGraph } from '../../src/core/ir/validate.js';
import { Rng } from '../../src/core/util/random.js';
import { decomposedAttention, lowerTriangle } from '../helpers/attention.js';
import { maxRelError } from '../helpers/compare.js';
import { fixturePath } from '../helpers/fixtures.js';
import { randomFeeds } from '../helpers/inputs.js';

const count = (g: Graph, op: string): number => g.nodes.filter((n) => n.op === op).length;

/** Fuses a copy of `g`; checks it, and that its outputs equal the original's on the same feeds. */
function fusedMatches(g: Graph, feeds: Record<string, Tensor>, expected: number): Graph {
  const f = cloneGraph(g);
  expect(fuseAttention(f)).toBe(expected);
  validateGraph(f);
  expect(count(f, 'FusedAttention')).toBe(expected);
  const want = runGraph(g, feeds), got = runGraph(f, feeds);
  expect([...got.keys()]).toEqual([...want.keys()]);
  for (const [k, t] of want) expect(maxRelError(got.get(k)!, t), k).toBeLessThanOrEqual(1e-6);
  return f;
}

describe('fuseAttention on GPT', () => {
  it('fuses one attention per layer of buildGpt, mask computed in the graph, batch symbolic', () => {
    const g = buildGpt({ ...GPT_DEFAULT, layers: 3 });
    const f = fusedMatches(g, randomFeeds(g, 2), 3);
    // Nothing of the pattern is left: no scores, softmax, head transposes, nor the mask's Trilu and Cast.
    for (const op of ['Softmax', 'Where', 'Transpose', 'Trilu', 'Cast']) expect(count(f, op), op).toBe(op === 'Transpose' ? 1 : 0); // the tied LM head's
    expect(f.constants().some((c) => c.data?.dtype === 'bool')).toBe(false);
    const n = f.nodes.find((x) => x.op === 'FusedAttention')!;
    const mm = g.nodes.find((x) => x.op === 'MatMul' && x.scope === '/h.0/attn/')!;
    expect(n.name).toBe('/h.0/attn/FusedAttention');
    expect(n.scope).toBe('/h.0/attn/');
    expect(n.meta).toEqual(mm.meta);
    // The scale is the float32 constant the graph multiplied by.
    expect(n.attrs).toEqual({ heads: 4, scale: Math.fround(1 / Math.sqrt(8)), causal: 1 });
    expect(n.inputs.map((v) => v!.producer!.op)).toEqual(['Split', 'Split', 'Split']);
    expect(n.outputs.map((o) => o.type)).toEqual(['float32[N, 16, 32]', 'float32[N, 4, 16]']);
    // The fused output keeps the name of the Reshape output it replaces, which c_proj reads.
    const r = g.nodes.find((x) => x.op === 'Reshape' && x.scope === '/h.0/attn/' && x.outputs[0]!.users[0]!.scope === '/h.0/attn/c_proj/')!;
    expect(n.outputs[0]!.name).toBe(r.outputs[0]!.name);
  });

  it.each([['gpt', 2], ['torch_gpt', 2]] as const)('fuses the imported %s fixture (folded mask; PyTorch writes Where(drop, −big, scores))', (name, layers) => {
    const g = importOnnx(fixturePath(name), { batch: 2 });
    fusedMatches(g, randomFeeds(g, 2), layers);
  });

  it('gives the training graph the same loss and gradients (≤ 1e-5), attention backward as B work', () => {
    const g = buildGpt({ ...GPT_DEFAULT, batch: 2 });
    const f = cloneGraph(g);
    expect(fuseAttention(f)).toBe(2);
    const spec = { loss: { kind: 'cross-entropy' as const } };
    const [tg, tf] = [buildTrainingGraph(g, spec), buildTrainingGraph(f, spec)];
    expect(count(tf.graph, 'FusedAttentionGrad')).toBe(2);
    expect(count(tf.graph, 'Softmax')).toBe(0);
    for (const n of tf.graph.nodes) if (n.op === 'FusedAttentionGrad') expect(n.meta['phase']).toBe('backwardB');
    const feeds = randomFeeds(g, 2, 3);
    const rng = new Rng(4);
    feeds['labels'] = tensor('int64', [2, 16], Array.from({ length: 32 }, () => rng.int(64)));
    const [rg, rf] = [runGraph(tg.graph, feeds), runGraph(tf.graph, feeds)];
    expect(maxRelError(rf.get(tf.loss.name)!, rg.get(tg.loss.name)!)).toBeLessThanOrEqual(1e-6);
    expect([...tf.grads.keys()].sort()).toEqual([...tg.grads.keys()].sort());
    for (const [p, v] of tg.grads) expect(maxRelError(rf.get(tf.grads.get(p)!.name)!, rg.get(v.name)!), p).toBeLessThanOrEqual(1e-5);
  });
});

describe('fuseAttention leaves alone', () => {
  const B = 2, T = 4, D = 8, H = 2;
  /** One decomposed attention over inputs; `tweak` may change the graph before it is finished. */
  function single(tweak?: (b: ModelBuilder, out: Value) => void, causal = true): Graph {
    const b = new ModelBuilder('one');
    const [q, k, v] = ['q', 'k', 'v'].map((n) => b.input(n, 'float32', [B, T, D])) as [Value, Value, Value];
    const out = decomposedAttention(b, q, k, v, H, causal);
    b.output(out, 'out');
    tweak?.(b, out);
    return b.finish();
  }
  const feeds = randomFeeds(single(), B, 6);

  it('nothing that fits, causal or not (the plain cases fuse)', () => {
    fusedMatches(single(), feeds, 1);
    fusedMatches(single(undefined, false), feeds, 1);
  });

  it.each([
    ['Div by √Dh, explicit reshape sizes, a [1, 1, T, T] mask', 'div', 1 / 2],
    ['no scale', 'none', 1],
    ['the mask before the scale', 'mask-first', 1 / 2],
  ] as const)('the variant with %s', (_, form, scale) => {
    const b = new ModelBuilder('variant');
    const [q, k, v] = ['q', 'k', 'v'].map((n) => b.input(n, 'float32', [B, T, D])) as [Value, Value, Value];
    const split = (t: Value, perm: number[]) => b.op('Transpose', [b.op('Reshape', [t], { shape: [B, T, H, D / H] })], { perm });
    const s = b.op('MatMul', [split(q, [0, 2, 1, 3]), split(k, [0, 2, 3, 1])]);
    const mask = b.constant(tensor('bool', [1, 1, T, T], lowerTriangle(T).data), 'mask');
    const masked = (x: Value) => b.op('Where', [mask, x, b.scalar(-Infinity)]);
    const att = form === 'div' ? masked(b.op('Div', [s, b.scalar(2)]))
      : form === 'none' ? masked(s)
      : b.op('Mul', [masked(s), b.scalar(0.5)]);
    const y = b.op('MatMul', [b.op('Softmax', [att], { axis: 3 }), split(v, [0, 2, 1, 3])]);
    b.output(b.op('Reshape', [b.op('Transpose', [y], { perm: [0, 2, 1, 3] })], { shape: [B, T, D] }), 'out');
    const f = fusedMatches(b.finish(), feeds, 1);
    expect(f.nodes.map((n) => n.op)).toEqual(['FusedAttention']);
    expect(f.nodes[0]!.attrs).toEqual({ heads: H, scale, causal: 1 });
    expect(f.values.size).toBe(5); // q, k, v, out, lse: the mask and scalars went with the pattern
  });

  it.each([
    ['the softmax output is also a graph output', (b: ModelBuilder) => b.output(b.graph.nodes.find((n) => n.op === 'Softmax')!.outputs[0]!)],
    ['the scores are read twice', (b: ModelBuilder) => b.output(b.op('ReduceSum', [b.graph.nodes.find((n) => n.op === 'Mul')!.outputs[0]!], { keepdims: 0 }), 'extra')],
  ])('a pattern whose %s', (_, tweak) => {
    const g = single(tweak);
    const f = cloneGraph(g);
    expect(fuseAttention(f)).toBe(0);
    expect(f.nodes.length).toBe(g.nodes.length);
  });

  it('a head split read elsewhere too stays for that reader, and is copied into rows for the fused node', () => {
    const g = single((b) => b.output(b.op('Neg', [b.graph.nodes.find((n) => n.op === 'Transpose')!.outputs[0]!]), 'extra'));
    const f = fusedMatches(g, feeds, 1);
    expect(count(f, 'Softmax')).toBe(0);
    // q's split stays (Neg reads it); its copy into rows is a Transpose and a Reshape.
    const n = f.nodes.find((x) => x.op === 'FusedAttention')!;
    expect(n.inputs[0]!.producer!.op).toBe('Reshape');
    expect(n.inputs[0]!.producer!.inputs[0]!.producer!.op).toBe('Transpose');
  });

  it('a mask that is not causal, a masked value that is not very negative, a scale that is not constant', () => {
    const mk = (edit: (g: Graph) => void): Graph => { const g = single(); edit(g); return g; };
    const where = (g: Graph) => g.nodes.find((n) => n.op === 'Where')!;
    const notCausal = mk((g) => {
      const m = lowerTriangle(T);
      m.data[1] = 1; // row 0 sees key 1
      where(g).setInput(0, g.addConst('odd_mask', m));
    });
    const mild = mk((g) => where(g).setInput(2, g.addConst('mild', tensor('float32', [], [-5]))));
    const learned = mk((g) => {
      const mul = g.nodes.find((n) => n.op === 'Mul')!;
      mul.setInput(1, g.addParam('temperature', tensor('float32', [], [0.5])));
    });
    for (const g of [notCausal, mild, learned]) expect(fuseAttention(cloneGraph(g))).toBe(0);
  });
});

describe('fuseAttention on ONNX Attention', () => {
  const B = 2, T = 5, H = 2, Dh = 4, D = H * Dh;

  it('fuses 3-D Attention, 4-D Attention between head splits and merges, and bare 4-D Attention, matching each', () => {
    const b = new ModelBuilder('onnx', { opset: 23 });
    const x = b.input('x', 'float32', ['N', T, D]);
    const w = b.param('w', [D, 3 * D], { normal: 0.5 });
    const [q, k, v] = b.ops('Split', [b.op('MatMul', [x, w])], { axis: -1, split: [D, D, D] }, 3) as [Value, Value, Value];
    // 3-D, causal, explicit scale.
    const y3 = b.scope('a3', () => b.op('Attention', [q, k, v], { q_num_heads: H, kv_num_heads: H, is_causal: 1, scale: 0.3 }));
    // 4-D between the usual head split and merge: the fused node reads the [N, T, D] values.
    const split = (t: Value) => b.op('Transpose', [b.op('Reshape', [t], { shape: [0, 0, H, Dh] })], { perm: [0, 2, 1, 3] });
    const y4 = b.scope('a4', () => b.op('Reshape', [b.op('Transpose', [b.op('Attention', [split(y3), split(k), split(v)], { is_causal: 1 })], { perm: [0, 2, 1, 3] })], { shape: [0, 0, D] }));
    b.output(y4, 'y');
    // Bare 4-D, non-causal, on 4-D inputs and as a graph output: heads moved into rows and back.
    const h = b.input('h', 'float32', [B, H, T, Dh]);
    b.output(b.scope('bare', () => b.op('Attention', [h, h, h], {})), 'bare');
    const g = b.finish();
    const f = fusedMatches(g, randomFeeds(g, B, 8), 3);
    expect(count(f, 'Attention')).toBe(0);
    const fused = f.nodes.filter((n) => n.op === 'FusedAttention');
    expect(fused.map((n) => [n.scope, n.attrs['causal'], n.attrs['scale']])).toEqual([['/a3/', 1, 0.3], ['/a4/', 1, 0.5], ['/bare/', 0, 0.5]]);
    expect(fused[1]!.inputs.slice(1).map((v) => v!.producer!.op)).toEqual(['Split', 'Split']);
    expect(f.outputs.map((o) => o.name)).toEqual(['y', 'bare']);
  });

  it('a float attn_mask of bias values (a trained relative bias, ALiBi) becomes the fused node\'s bias; a 3-D one stays, with the reason', () => {
    const b = new ModelBuilder('onnx', { opset: 23 });
    const h = b.input('h', 'float32', [B, H, T, Dh]);
    const rel = b.param('rel', [1, H, T, T], { normal: 1 });
    b.output(b.scope('biased', () => b.op('Attention', [h, h, h, rel], {})), 'y');
    const g = b.finish();
    const f = fusedMatches(g, randomFeeds(g, B, 4), 1);
    expect(f.nodes.find((n) => n.op === 'FusedAttention')!.inputs[3]!.name).toBe('rel');
    const b3 = new ModelBuilder('onnx3', { opset: 23 });
    const x = b3.input('x', 'float32', [B, T, D]);
    b3.output(b3.op('Attention', [x, x, x, b3.param('rel', [1, H, T, T], { normal: 1 })], { q_num_heads: H, kv_num_heads: H }), 'y');
    const rep = attentionFusion(b3.finish());
    expect(rep.fused).toBe(0);
    expect(rep.unfused.map((u) => u.reason)).toEqual(['a 3-D Attention with a float attn_mask: not fused yet']);
  });

  it('training through fused ONNX Attention gives the gradients of the unfused graph', () => {
    const b = new ModelBuilder('onnx', { opset: 23 });
    const x = b.input('x', 'float32', [B, T, D]);
    const [q, k, v] = ['wq', 'wk', 'wv'].map((n) => b.op('MatMul', [x, b.param(n, [D, D], { normal: 0.5 })])) as [Value, Value, Value];
    b.output(b.op('Attention', [q, k, v], { q_num_heads: H, kv_num_heads: H, is_causal: 1 }), 'y');
    const g = b.finish();
    const f = cloneGraph(g);
    expect(fuseAttention(f)).toBe(1);
    const spec = { loss: { kind: 'mse' as const } };
    const [tg, tf] = [buildTrainingGraph(g, spec), buildTrainingGraph(f, spec)];
    const feeds = randomFeeds(tg.graph, B, 2);
    const [rg, rf] = [runGraph(tg.graph, feeds), runGraph(tf.graph, feeds)];
    for (const [p, val] of tg.grads) expect(maxRelError(rf.get(tf.grads.get(p)!.name)!, rg.get(val.name)!), p).toBeLessThanOrEqual(1e-5);
    // The fused graph's backward does not rerun the forward, as the unfused Attention's rule must.
    expect(count(tf.graph, 'FusedAttention')).toBe(1);
    expect(count(tg.graph, 'FusedAttention')).toBe(1);
    expect(count(tg.graph, 'Attention')).toBe(1);
  });
});
