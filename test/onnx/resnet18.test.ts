import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { addLoss } from '../../compiler/autodiff/loss.js';
import { buildTrainingGraph } from '../../compiler/autodiff/training.js';
import { compile } from '../../compiler/compile.js';
import { importOnnx } from '../../compiler/onnx/import.js';
import { toFloat64 } from '../../compiler/passes/precision.js';
import { readNpy } from '../../runtime/data/npy.js';
import { runGraph } from '../../runtime/backends/cpu/interpreter.js';
import { runPlanCpu } from '../../runtime/launch/cpu.js';
import { ModelBuilder } from '../../src/core/ir/builder.js';
import { cloneGraph } from '../../src/core/ir/clone.js';
import type { Graph } from '../../src/core/ir/graph.js';
import type { DType } from '../../src/core/ir/dtype.js';
import { type Tensor, tensor } from '../../src/core/ir/tensor.js';
import '../../src/core/ops/index.js';
import { writePlan } from '../../src/core/plan/io.js';
import { Rng } from '../../src/core/util/random.js';
import { FIXTURES } from '../helpers/fixtures.js';
import { gradCheck } from '../helpers/gradcheck.js';

// torchvision's ResNet-18 code at widths 8–64 (177,167 parameters, 7 classes), written by PyTorch
// 1.13's TorchScript exporter at opset 17 in eval mode (fixtures/torch/export.py says how):
// resnet18_ts17 is the exporter's default, every BatchNorm folded into its Conv; resnet18_ts17bn
// keeps the BatchNormalization nodes (TrainingMode.PRESERVE), so cleave's training graph runs them
// on batch statistics (buildTrainingGraph's training form, the default of compile and run) and
// updates their running statistics as state.

const TORCH = join(FIXTURES, 'torch');
const NAMES = ['resnet18_ts17', 'resnet18_ts17bn', 'resnet18_tiny_ts17bn'] as const;

interface Flat { shape: number[]; dtype: DType; data: number[] }
interface OutSpec { shape: number[]; dtype: 'float32'; npy: string }
interface Io {
  inputs: Record<string, Flat>;
  outputs: Record<string, OutSpec>;
  /** resnet18_ts17bn: PyTorch's train-mode forward (float32 and float64) and two BatchNorms' running statistics after it. */
  training?: { logits: OutSpec; logits_float64: Flat; state: Record<string, Flat> };
}
const io = (name: string): Io => JSON.parse(readFileSync(join(TORCH, `${name}.io.json`), 'utf8')) as Io;
const onnx = (name: string): string => join(TORCH, `${name}.onnx`);
const feedsOf = (x: Io): Record<string, Tensor> =>
  Object.fromEntries(Object.entries(x.inputs).map(([k, v]) => [k, tensor(v.dtype, v.shape, v.data)]));

/** max |a − b| (NaN counts as the worst) and where. */
function worstDiff(a: ArrayLike<number>, b: ArrayLike<number>): { worst: number; at: number } {
  let worst = 0, at = -1;
  for (let i = 0; i < b.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= worst)) { worst = d; at = i; }
  }
  return { worst, at };
}

const dir = mkdtempSync(join(tmpdir(), 'cleave-resnet18-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('ResNet-18 (torchvision, narrow)', () => {
  it('imports: the default export has no BatchNormalization, the PRESERVE export keeps 20 with running statistics as state', () => {
    const fused = importOnnx(onnx('resnet18_ts17'));
    expect(fused.nodes.filter((n) => n.op === 'BatchNormalization')).toHaveLength(0);
    expect(fused.nodes.filter((n) => n.op === 'Conv')).toHaveLength(20);
    const g = importOnnx(onnx('resnet18_ts17bn'));
    expect(g.nodes.filter((n) => n.op === 'BatchNormalization')).toHaveLength(20);
    expect(g.states()).toHaveLength(40);
    // PyTorch's count of model.parameters() (BatchNorm's running statistics are buffers).
    expect(g.params().reduce((a, p) => a + p.data!.data.length, 0)).toBe(177_167);
  });

  it.each(NAMES)('%s: computes PyTorch\'s eval-mode output on the CPU reference backend (max |Δ| ≤ 1e-4)', (name) => {
    const x = io(name);
    const out = runGraph(importOnnx(onnx(name)), feedsOf(x));
    for (const [k, spec] of Object.entries(x.outputs)) {
      const ref = readNpy(join(TORCH, spec.npy));
      const ours = out.get(k)!;
      expect(ours.shape).toEqual(ref.shape);
      const { worst, at } = worstDiff(ours.data, ref.data);
      expect(worst, `${name} ${k}: worst |Δ| = ${worst} at ${at} (ours ${ours.data[at]}, PyTorch ${ref.data[at]})`).toBeLessThanOrEqual(1e-4);
    }
  });
});

/** The fixture with a cross-entropy loss as its only output, and feeds with random classes. */
function withLoss(name: string): { g: Graph; feeds: Record<string, Tensor> } {
  const g = cloneGraph(importOnnx(onnx(name)));
  const b = new ModelBuilder(g);
  const { loss, labels } = addLoss(b, { kind: 'cross-entropy' });
  g.outputs.length = 0;
  b.output(loss, 'loss');
  const feeds = feedsOf(io(name));
  const rng = new Rng(5);
  feeds[labels!.name] = tensor('int64', [2], [rng.int(7), rng.int(7)]);
  return { g, feeds };
}

describe('ResNet-18 training form (BatchNormalization on batch statistics)', () => {
  it('resnet18_ts17bn: computes PyTorch\'s train-mode output, and blends the running statistics by ONNX\'s rule', () => {
    const x = io('resnet18_ts17bn');
    const { g, feeds } = withLoss('resnet18_ts17bn');
    // buildTrainingGraph's default (compile's and run's): every BatchNormalization in its training
    // form, its running statistics state it updates.
    const t = buildTrainingGraph(g, { loss: { kind: 'output', output: 'loss' } });
    expect(t.graph.nodes.filter((n) => n.op === 'BatchNormalization' && n.attrs['training_mode'] === 1)).toHaveLength(20);
    expect(t.stateUpdates.size).toBe(40);
    const out = runGraph(t.graph, feeds, { keep: ['logits'] });
    // With 2 values a channel in layer4 (batch 2 at 1×1), batch statistics amplify float32 rounding:
    // PyTorch's float32 and float64 outputs differ by 2e-4. So float32 is held to 1e-3 and float64,
    // on the same graph in float64, to PyTorch's float64 at 1e-8 (the file's epsilon is float32's
    // 9.99999975e-6, PyTorch's 1e-5: 2e-9 here).
    const ref = readNpy(join(TORCH, x.training!.logits.npy));
    const f32 = worstDiff(out.get('logits')!.data, ref.data);
    expect(f32.worst, `train-mode logits, float32: worst |Δ| = ${f32.worst} at ${f32.at}`).toBeLessThanOrEqual(1e-3);
    const t64 = buildTrainingGraph(toFloat64(g), { loss: { kind: 'output', output: 'loss' } });
    const feeds64 = { ...feeds, pixel_values: tensor('float64', [2, 3, 32, 32], Float64Array.from(feeds['pixel_values']!.data)) };
    const f64 = worstDiff(runGraph(t64.graph, feeds64, { keep: ['logits'] }).get('logits')!.data, x.training!.logits_float64.data);
    expect(f64.worst, `train-mode logits, float64: worst |Δ| = ${f64.worst} at ${f64.at}`).toBeLessThanOrEqual(1e-8);
    // Running statistics: momentum 0.9 in ONNX's sense (PyTorch's 0.1). The means match PyTorch's;
    // the variances blend in the batch's population variance (ONNX's BatchNormalization, which
    // cleave follows) where PyTorch blends in the unbiased one, n/(n − 1) times larger for n values
    // a channel: 2·16·16 at bn1, 2·1·1 at layer4.1.bn2 (where PyTorch's is twice ours, and both
    // carry layer4's float32 rounding, 4e-5 in the means).
    const initial = new Map(g.states().map((s) => [s.name, s.data!.data]));
    for (const [bn, n, tol] of [['bn1', 512, 1e-6], ['layer4.1.bn2', 2, 1e-4]] as const) {
      const mean = out.get(t.stateUpdates.get(`${bn}.running_mean`)!.name)!.data;
      expect(worstDiff(mean, x.training!.state[`${bn}.running_mean`]!.data).worst, `${bn}.running_mean`).toBeLessThanOrEqual(tol);
      const v0 = initial.get(`${bn}.running_var`)!;
      const torchVar = x.training!.state[`${bn}.running_var`]!.data;
      const population = torchVar.map((v, c) => 0.9 * v0[c]! + (v - 0.9 * v0[c]!) * (n - 1) / n);
      const ours = out.get(t.stateUpdates.get(`${bn}.running_var`)!.name)!.data;
      expect(worstDiff(ours, population).worst, `${bn}.running_var (ONNX's rule)`).toBeLessThanOrEqual(10 * tol);
      if (n === 2) expect(worstDiff(ours, torchVar).worst, `${bn}.running_var is PyTorch's now: update this test`).toBeGreaterThan(1e-2);
    }
  });

  it('resnet18_tiny_ts17bn: parameter gradients match central differences in float64', () => {
    // The tiny copy (widths 4–8, 48×48 images): at 32×32 layer4's BatchNorms normalize 2 values a
    // channel, where the loss is so curved that central differences at h = 1e-5 are off by 1e-2 of
    // the gradient (truncation: 0.7 at h = 1e-4) while being exact here. Every parameter, 2 entries each.
    const { g, feeds } = withLoss('resnet18_tiny_ts17bn');
    const r = gradCheck(g, feeds, { samples: 2, trainingMode: true, h: 1e-5 });
    expect(r.checked).toBe(124);
    expect(r.f64, `float64 worst normwise error ${r.f64}`).toBeLessThanOrEqual(1e-6);
    expect(r.f32, `float32 worst normwise error ${r.f32}`).toBeLessThanOrEqual(1e-3);
  });
});

describe('ResNet-18 training on CPU ranks (2 pipeline stages, 2 microbatches)', () => {
  it.each(['resnet18_ts17bn', 'resnet18_ts17'])('%s: the loss falls on a fixed batch', async (name) => {
    const { plan, training } = compile({ model: onnx(name), loss: { kind: 'cross-entropy' }, partitions: 2, microbatches: 2, batch: 4, schedule: '1f1b' });
    const planFile = join(dir, `${name}.plan`);
    writePlan(planFile, plan);
    // 4 random images and classes (the fixture's static batch of 2 is the microbatch), every step.
    const rng = new Rng(3);
    const images = tensor('float32', [4, 3, 32, 32], Array.from({ length: 4 * 3 * 32 * 32 }, () => rng.normal()));
    const batch = { pixel_values: images, [training.labels!.name]: tensor('int64', [4], [0, 3, 5, 6]) };
    const steps = 6;
    const run = await runPlanCpu({ planFile, data: { kind: 'batches', batches: Array.from({ length: steps }, () => batch) }, steps, optimizer: { kind: 'adamw', lr: 1e-2 }, timeoutSeconds: 15 });
    const losses = run.steps.map((s) => s.loss);
    expect(losses).toHaveLength(steps);
    expect(losses.every(Number.isFinite)).toBe(true);
    expect(losses.at(-1)!, `${name} losses: ${losses.map((l) => l.toFixed(3)).join(' ')}`).toBeLessThan(0.5 * losses[0]!);
  });
});
