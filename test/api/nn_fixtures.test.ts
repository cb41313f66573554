import { describe, expect, it } from 'vitest';
import { type LossSpec } from '../../compiler/autodiff/loss.js';
import { buildTrainingGraph } from '../../compiler/autodiff/training.js';
import { compile } from '../../compiler/compile.js';
import { importOnnx } from '../../compiler/onnx/import.js';
import { runGraph } from '../../runtime/backends/cpu/interpreter.js';
import { nn } from '../../src/app/api/index.js';
import type { Graph } from '../../src/core/ir/graph.js';
import { type Tensor, tensor } from '../../src/core/ir/tensor.js';
import '../../src/core/ops/index.js';
import { Rng } from '../../src/core/util/random.js';
import { GPT_DEFAULT, buildGpt } from '../../fixtures/models.js';
import { maxRelError } from '../helpers/compare.js';
import { fixturePath } from '../helpers/fixtures.js';

const { Module, Linear, Conv2d, BatchNorm2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten, GPT, trace } = nn;
type SymTensor = nn.SymTensor;

/** The fixture's parameters and state, by name. */
function weightsOf(g: Graph): Map<string, Tensor> {
  return new Map([...g.params(), ...g.states()].map((v) => [v.name, v.data!]));
}

/** Runs forward, then the training graph (loss, every gradient, every state update), of both graphs on the same feeds. */
function expectSameTraining(ours: Graph, ref: Graph, feeds: Record<string, Tensor>, loss: LossSpec, labels: Tensor): void {
  expect(ours.params().map((p) => p.name).sort()).toEqual(ref.params().map((p) => p.name).sort());
  expect(ours.states().map((p) => p.name).sort()).toEqual(ref.states().map((p) => p.name).sort());
  const out = ref.outputs[0]!.name;
  expect(maxRelError(runGraph(ours, feeds).get(ours.outputs[0]!.name)!, runGraph(ref, feeds).get(out)!)).toBeLessThanOrEqual(1e-6);
  const [a, b] = [buildTrainingGraph(ours, { loss }), buildTrainingGraph(ref, { loss })];
  const withLabels = { ...feeds, [a.labels!.name]: labels };
  const [ra, rb] = [runGraph(a.graph, withLabels), runGraph(b.graph, withLabels)];
  const names = b.graph.outputs.map((v) => v.name);
  expect(a.graph.outputs.map((v) => v.name).sort()).toEqual([...names].sort());
  for (const n of names) expect(maxRelError(ra.get(n)!, rb.get(n)!), n).toBeLessThanOrEqual(1e-6);
}

const ints = (shape: number[], n: number, seed: number) => {
  const rng = new Rng(seed);
  return tensor('int64', shape, Array.from({ length: shape.reduce((p, q) => p * q, 1) }, () => rng.int(n)));
};
const normals = (shape: number[], seed: number) => {
  const rng = new Rng(seed);
  return tensor('float32', shape, Array.from({ length: shape.reduce((p, q) => p * q, 1) }, () => rng.normal()));
};

describe('the module library', () => {
  it('traces a GPT that equals the ONNX-imported fixture of the same weights, outputs and gradients', () => {
    const ref = importOnnx(fixturePath('gpt'), { batch: 3 });
    const gpt = new GPT({ vocab: 64, seq: 16, dim: 32, heads: 4, layers: 2 });
    gpt.loadStateDict(weightsOf(ref));
    const ours = trace(gpt, { input_ids: { dtype: 'int64', shape: [3, 16] } }, { outputs: ['logits'] });
    // The tied head shares the embedding: one parameter, named where it is first found.
    expect(gpt.namedParameters().filter(([n]) => n.startsWith('wte') || n.startsWith('lm_head')).map(([n]) => n)).toEqual(['wte.weight']);
    expect(ours.nodes.some((n) => n.name === '/h.1/attn/c_attn/MatMul')).toBe(true);
    expectSameTraining(ours, ref, { input_ids: ints([3, 16], 64, 1) }, { kind: 'cross-entropy' }, ints([3, 16], 64, 2));
    // Compiled, it is the fixture's plan: attention fused the same way, the same programs per stage.
    const opts = { loss: 'auto', partitions: 2, microbatches: 2, batch: 6, schedule: '1f1b' } as const;
    const [a, b] = [compile({ ...opts, model: 'gpt', graph: ours }).plan, compile({ ...opts, model: fixturePath('gpt') }).plan];
    expect(a.nodes.filter((n) => n.op === 'FusedAttention')).toHaveLength(2);
    expect(a.stages.map((s) => s.forward.map((i) => a.nodes[i]!.op))).toEqual(b.stages.map((s) => s.forward.map((i) => b.nodes[i]!.op)));
    expect(a.nodes.map((n) => n.op).sort()).toEqual(b.nodes.map((n) => n.op).sort());
  });

  it('draws the same initial weights as the fixture builder from the same seed, tied or not', () => {
    for (const cfg of [GPT_DEFAULT, { ...GPT_DEFAULT, tied: false, gelu: 'tanh' as const, layers: 1 }]) {
      const ref = buildGpt({ ...cfg, batch: 2 });
      const ours = trace(new GPT(cfg), { input_ids: { dtype: 'int64', shape: [2, cfg.seq] } }, { seed: cfg.seed, outputs: ['logits'] });
      const mine = weightsOf(ours);
      for (const [name, t] of weightsOf(ref)) expect(mine.get(name)?.data, name).toEqual(t.data);
      const feeds = { input_ids: ints([2, cfg.seq], cfg.vocab, 5) };
      expect(maxRelError(runGraph(ours, feeds).get('logits')!, runGraph(ref, feeds).get('logits')!)).toBeLessThanOrEqual(1e-6);
    }
  });

  it('traces the MLP fixture: Linear on 2-D inputs is one Gemm', () => {
    class Mlp extends Module {
      fc0 = new Linear(16, 32);
      fc1 = new Linear(32, 32);
      fc2 = new Linear(32, 4);
      forward(x: SymTensor): SymTensor {
        return this.fc2.forward(this.fc1.forward(this.fc0.forward(x).relu()).relu());
      }
    }
    const ref = importOnnx(fixturePath('mlp'), { batch: 5 });
    const m = new Mlp();
    m.loadStateDict(weightsOf(ref));
    const ours = trace(m, { x: { dtype: 'float32', shape: [5, 16] } }, { outputs: ['y'] });
    expect(ours.nodes.map((n) => n.op)).toEqual(['Gemm', 'Relu', 'Gemm', 'Relu', 'Gemm']);
    expectSameTraining(ours, ref, { x: normals([5, 16], 3) }, { kind: 'mse' }, normals([5, 4], 4));
  });

  it('traces the CNN fixture: Conv2d, BatchNorm2d (training on batch statistics), pooling, Flatten', () => {
    class ConvBn extends Module {
      conv: nn.Conv2d;
      bn: nn.BatchNorm2d;
      constructor(cin: number, cout: number, stride: number, readonly relu: boolean) {
        super();
        this.conv = new Conv2d(cin, cout, 3, { stride, padding: 1, bias: false });
        this.bn = new BatchNorm2d(cout);
      }
      forward(x: SymTensor): SymTensor {
        const y = this.bn.forward(this.conv.forward(x));
        return this.relu ? y.relu() : y;
      }
    }
    class Block extends Module {
      a = new ConvBn(8, 8, 1, true);
      b = new ConvBn(8, 8, 1, false);
      forward(x: SymTensor): SymTensor { return this.b.forward(this.a.forward(x)).add(x).relu(); }
    }
    class Cnn extends Module {
      stem = new ConvBn(3, 8, 1, true);
      block = new Block();
      pool = new MaxPool2d(2);
      down = new ConvBn(8, 16, 2, true);
      avg = new AvgPool2d(3, { stride: 1, padding: 1 });
      gap = new AdaptiveAvgPool2d(1);
      flat = new Flatten();
      fc = new Linear(16, 10);
      forward(x: SymTensor): SymTensor {
        const h = this.down.forward(this.pool.forward(this.block.forward(this.stem.forward(x))));
        return this.fc.forward(this.flat.forward(this.gap.forward(this.avg.forward(h))));
      }
    }
    const ref = importOnnx(fixturePath('cnn'), { batch: 2 });
    const m = new Cnn();
    m.loadStateDict(weightsOf(ref));
    const ours = trace(m, { image: { dtype: 'float32', shape: [2, 3, 16, 16] } }, { outputs: ['logits'] });
    expectSameTraining(ours, ref, { image: normals([2, 3, 16, 16], 6) }, { kind: 'cross-entropy' }, ints([2], 10, 7));
  });
});
