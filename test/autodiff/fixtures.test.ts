import { describe, expect, it } from 'vitest';
import { addLoss, type LossSpec } from '../../compiler/autodiff/loss.js';
import { buildTrainingGraph } from '../../compiler/autodiff/training.js';
import { importOnnx } from '../../compiler/onnx/import.js';
import { ModelBuilder } from '../../src/core/ir/builder.js';
import { cloneGraph } from '../../src/core/ir/clone.js';
import { tensor } from '../../src/core/ir/tensor.js';
import '../../src/core/ops/index.js';
import { Rng } from '../../src/core/util/random.js';
import { fixturePath } from '../helpers/fixtures.js';
import { gradCheck } from '../helpers/gradcheck.js';
import { randomFeeds } from '../helpers/inputs.js';

const LOSSES: Record<string, LossSpec> = {
  mlp: { kind: 'mse' }, gpt: { kind: 'cross-entropy' }, cnn: { kind: 'cross-entropy' },
  torch_mlp: { kind: 'mse' }, torch_gpt: { kind: 'cross-entropy' }, torch_cnn: { kind: 'cross-entropy' },
};

/** The fixture with its loss as the only output, and feeds for data and labels. */
function withLoss(name: string, batch: number) {
  const g = cloneGraph(importOnnx(fixturePath(name), { batch }));
  const b = new ModelBuilder(g);
  const spec = LOSSES[name]!;
  const { loss, labels } = addLoss(b, spec);
  g.outputs.length = 0;
  b.output(loss, 'loss');
  const feeds = randomFeeds(g, batch, 4);
  const rng = new Rng(8);
  if (labels && spec.kind === 'cross-entropy') {
    const n = (labels.shape as number[]).reduce((a, x) => a * x, 1);
    const C = name.endsWith('cnn') ? 10 : name.endsWith('gpt') ? 64 : 4;
    feeds[labels.name] = tensor('int64', labels.shape as number[], Array.from({ length: n }, () => rng.int(C)));
  }
  return { g, feeds };
}

describe.each(Object.keys(LOSSES))('training graph of %s', (name) => {
  it('has gradients that match finite differences on sampled parameters', () => {
    const { g, feeds } = withLoss(name, 2);
    // h = 1e-5: these losses are O(1) while single-weight gradients are small, so a larger step keeps
    // rounding in the differences below the tolerance; truncation stays near 1e-10.
    const r = gradCheck(g, feeds, { samples: 4, trainingMode: true, h: 1e-5 });
    expect(r.checked).toBeGreaterThan(10);
    expect(r.f64).toBeLessThanOrEqual(1e-6);
    expect(r.f32).toBeLessThanOrEqual(1e-3);
  });
});

describe('training graph structure', () => {
  it('sums the gradients of a tied weight and splits backward work into B and W', () => {
    const g = importOnnx(fixturePath('gpt'), { batch: 2 });
    const t = buildTrainingGraph(g, { loss: { kind: 'cross-entropy' } });
    // wte is read by the embedding Gather and by the LM head's Transpose: two contributions, summed.
    const wteGrad = t.grads.get('wte.weight')!;
    expect(wteGrad.producer!.op).toBe('Sum');
    expect(wteGrad.producer!.meta['phase']).toBe('backwardW');
    const phases = new Set(t.graph.nodes.map((n) => n.meta['phase']));
    expect(phases).toEqual(new Set(['forward', 'loss', 'backwardB', 'backwardW']));
    // Weight gradients of a linear layer are W work; the activation gradient is B work.
    const matmuls = t.graph.nodes.filter((n) => n.name.startsWith('/h.1/mlp/c_fc/MatMul_grad/') && n.op === 'MatMul');
    expect(matmuls.map((n) => [n.outputs[0]!.shape, n.meta['phase']])).toEqual([[[2, 16, 32], 'backwardB'], [[32, 128], 'backwardW']]);
    expect(t.graph.outputs[0]).toBe(t.loss);
    expect(t.grads.size).toBe(g.params().length);
  });

  it('updates BatchNorm running statistics in training mode', () => {
    const t = buildTrainingGraph(importOnnx(fixturePath('cnn'), { batch: 2 }), { loss: { kind: 'cross-entropy' } });
    expect([...t.stateUpdates.keys()].sort()).toEqual(importOnnx(fixturePath('cnn')).states().map((s) => s.name).sort());
    expect(t.graph.outputs.some((o) => o.name === 'state:stem.bn.running_mean')).toBe(true);
  });

  it('names the op that has no gradient rule', () => {
    const b = new ModelBuilder('nograd');
    const x = b.input('x', 'float32', [2, 3]);
    const w = b.param('w', [2, 3], 'ones');
    const s = b.op('GatherElements', [b.op('Mul', [x, w]), b.op('Cast', [b.op('Abs', [x])], { to: 7 })]);
    b.output(b.op('ReduceSum', [b.op('Floor', [s])], { keepdims: 0 }), 'loss');
    // Floor has a zero gradient: the loss does not depend on w through any gradient.
    const t = buildTrainingGraph(b.finish(), { loss: { kind: 'output' } });
    expect(t.grads.size).toBe(0);
  });

  it('rejects a non-scalar output as a loss and a loss without parameters', () => {
    const g = importOnnx(fixturePath('mlp'), { batch: 2 });
    expect(() => buildTrainingGraph(g, { loss: { kind: 'output' } })).toThrow(/output 'y' has type float32\[2, 4\]; a loss output must be a floating-point scalar/);
    expect(() => buildTrainingGraph(g, { loss: { kind: 'mse', output: 'nope' } })).toThrow(/the model has no output 'nope' \(outputs: y\)/);
  });
});
