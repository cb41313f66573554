import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compile } from '../../compiler/compile.js';
import type { ScheduleName } from '../../compiler/cost/memory.js';
import { runPlanCpu } from '../../runtime/launch/cpu.js';
import { prepareJob } from '../../src/app/api/train/job.js';
import { type Tensor, tensor } from '../../src/core/ir/tensor.js';
import { writePlan } from '../../src/core/plan/io.js';
import '../../src/core/ops/index.js';

const dir = mkdtempSync(join(tmpdir(), 'cleave-dist-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SCHEDULES: [ScheduleName, number][] = [['gpipe', 1], ['1f1b', 1], ['interleaved-1f1b', 2], ['zb-h1', 1], ['zbv', 2]];
const STEPS = 3, MB = 1;
// SGD with momentum keeps the comparison about the runtime: Adam divides by √v, which turns the
// float32 rounding noise of a gradient that is zero in exact arithmetic (the key bias of attention)
// into ±lr updates whose sign depends on summation order.
const OPT = { kind: 'sgd' as const, lr: 0.05, momentum: 0.9 };

function rows(b: Record<string, Tensor>, from: number, n: number): Record<string, Tensor> {
  return Object.fromEntries(Object.entries(b).map(([k, t]) => {
    const row = t.data.length / t.shape[0]!;
    return [k, tensor(t.dtype, [n, ...t.shape.slice(1)], t.data.subarray(from * row, (from + n) * row))];
  }));
}

/** Single-device training with gradient accumulation over the same microbatches, in the same order. */
function reference(model: string, globals: Record<string, Tensor>[]) {
  const job = prepareJob({ model, loss: 'auto', steps: globals.length, batch: MB, microbatches: 1, optimizer: OPT });
  const losses: number[] = [];
  for (const g of globals) {
    const n = g[Object.keys(g)[0]!]!.shape[0]! / MB;
    const r = job.trainer.step(Array.from({ length: n }, (_, k) => rows(g, k * MB, MB)));
    losses.push(r.loss);
  }
  return { losses, weights: new Map(job.graph.params().map((p) => [p.name, p.data!])) };
}

/**
 * The global batches of `steps` steps of `size` rows (seed 11) and the single-device training on
 * them. Both depend only on the model, the rows per step and the steps, not on the plan's shape, so
 * the runs of one model with the same dp·m share them (the reference is computed once, not per
 * schedule): every cnn shape takes 4 rows a step, and the three eight-rank shapes 8.
 */
const references = new Map<string, { globals: Record<string, Tensor>[]; ref: ReturnType<typeof reference> }>();
function referenceRun(model: string, size: number, steps: number) {
  const key = `${model} ${size} ${steps}`;
  let r = references.get(key);
  if (!r) {
    const job = prepareJob({ model, loss: 'auto', steps, batch: MB, microbatches: 1, optimizer: OPT, seed: 11 });
    const globals = Array.from({ length: steps }, () => job.data.next(size));
    r = { globals, ref: reference(model, globals) };
    references.set(key, r);
  }
  return r;
}

const relErr = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let d = 0, s = 0;
  for (let i = 0; i < b.length; i++) { d = Math.max(d, Math.abs(a[i]! - b[i]!)); s = Math.max(s, Math.abs(b[i]!)); }
  return d / (s || 1);
};

// Every schedule at every pp ∈ {2, 4} × dp ∈ {1, 2}, the four shapes split between the two models
// (half the runs of the full product, which took a minute of the suite on two cores).
const SHAPES: Record<string, [number, number][]> = { gpt: [[2, 1], [4, 2]], cnn: [[4, 1], [2, 2]] };

/** Trains `model` on CPU ranks with the plan of this shape and on one device from the same batches; both agree within `tol`. */
async function matchesSingleDevice(model: string, schedule: ScheduleName, v: number, pp: number, dp: number, steps: number, tol: number): Promise<void> {
  const m = pp; // a multiple of pp, as interleaving needs
  const { plan } = compile({ model, loss: 'auto', partitions: pp, microbatches: m, schedule, virtualStages: v, dp, batch: m * MB, memoryWeight: 0.5 });
  const file = join(dir, `${model.replace(/\W/g, '_')}-${schedule}-${pp}-${dp}.plan`);
  writePlan(file, plan);
  // The same global batches for both: replica d takes rows [d·m·MB, (d+1)·m·MB).
  const { globals, ref } = referenceRun(model, dp * m * MB, steps);
  const run = await runPlanCpu({ planFile: file, data: { kind: 'batches', batches: globals }, steps, optimizer: OPT, returnWeights: true });
  expect(run.steps.map((s) => s.step)).toEqual(Array.from({ length: steps }, (_, i) => i + 1));
  run.steps.forEach((s, i) => expect(Math.abs(s.loss - ref.losses[i]!) / Math.abs(ref.losses[i]!), `loss of step ${i + 1}`).toBeLessThanOrEqual(tol));
  for (const [k, w] of ref.weights) expect(relErr(run.weights!.get(k)!.data, w.data), k).toBeLessThanOrEqual(tol);
}

describe.each(['gpt', 'cnn'])('%s on CPU ranks equals single-device training', (name) => {
  for (const [schedule, v] of SCHEDULES) for (const [pp, dp] of SHAPES[name]!) {
    it(`${schedule} pp=${pp} dp=${dp}`, () => matchesSingleDevice(`fixtures/${name}.onnx`, schedule, v, pp, dp, STEPS, 1e-5), 60_000);
  }
});

// The 8-rank shapes of SMP's examples (8 processes, 2 partitions: 4-way data parallelism), trained
// for 20 steps as the 8-GPU runs are, on CPU ranks.
describe('eight CPU ranks equal single-device training over 20 steps (float32 ≤ 1e-4)', () => {
  for (const [schedule, v, pp, dp] of [['zbv', 2, 2, 4], ['interleaved-1f1b', 2, 4, 2], ['1f1b', 1, 8, 1]] as const) {
    it(`${schedule} pp=${pp} dp=${dp}`, () => matchesSingleDevice('fixtures/gpt.onnx', schedule, v, pp, dp, 20, 1e-4), 120_000);
  }
});
