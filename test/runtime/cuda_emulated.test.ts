// The CUDA backend's TypeScript on the host emulation of the addon (test/helpers/host_cuda.ts):
// every registry kernel of test/helpers/cuda_cases.ts against the CPU kernels, Dropout's draws
// against the CPU kernel's, and the CNN fixture trained by the CUDA rank backend against the CPU
// ranks. Runs without a GPU; test/gpu runs the same cases on the device.
import { describe, expect, it } from 'vitest';
import { compile } from '../../compiler/compile.js';
import { runGraph } from '../../runtime/backends/cpu/interpreter.js';
import { Cuda, hostBytes } from '../../runtime/backends/cuda/device.js';
import { runGraphCuda } from '../../runtime/backends/cuda/graph.js';
import { CudaRankBackend } from '../../runtime/backends/cuda/rank_backend.js';
import { runPlanCpu } from '../../runtime/launch/cpu.js';
import { planWeights, runOnBackend } from '../../runtime/launch/cuda.js';
import { prepareJob } from '../../src/app/api/train/job.js';
import { ModelBuilder } from '../../src/core/ir/builder.js';
import { halfToFloat, tensor } from '../../src/core/ir/tensor.js';
import type { Graph, Value } from '../../src/core/ir/graph.js';
import type { Plan } from '../../src/core/plan/types.js';
import { dropoutRng } from '../../src/core/ops/movement.js';
import { readPlan, writePlan } from '../../src/core/plan/io.js';
import { writeOnnx } from '../../compiler/onnx/export.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { maxRelError } from '../helpers/compare.js';
import { KERNEL_CASES, caseErrors, caseName, convCases, outShape } from '../helpers/cuda_cases.js';
import { fixturePath } from '../helpers/fixtures.js';
import { HostCuda } from '../helpers/host_cuda.js';
import { lossesOnEmulatedCuda } from '../helpers/emulated_run.js';


/**
 * Each precision's losses against the CPU ranks' (float32 ≤ 1e-4; bf16 ≤ 3e-2; fp16 ≤ 1e-2: three
 * more mantissa bits than bf16, and the scaled gradients are unscaled in float32).
 */
function expectCpuLosses(losses: Record<string, number[]>): void {
  const tol: Record<string, number> = { fp32: 1e-4, bf16: 3e-2, fp16: 1e-2 };
  losses['cpu']!.forEach((l, i) => {
    for (const [p, t] of Object.entries(tol)) expect(Math.abs(losses[p]![i]! - l) / l, `${p} step ${i + 1}`).toBeLessThanOrEqual(t);
  });
}

/** x·W1·W2 (8 → 8 → 4): weight gradients that are plain GEMMs. */
function twoLayers(b: ModelBuilder, x: Value): Value {
  const h = b.op('MatMul', [x, b.param('w1', [8, 8], { normal: 0.3 })]);
  return b.op('MatMul', [h, b.param('w2', [8, 4], { normal: 0.3 })]);
}

/** The graph written as ONNX in `dir`, compiled to one rank with an MSE loss; its plan file and labels input. */
function compileToFile(dir: string, name: string, g: Graph, microbatches: number, batch: number): { plan: Plan; planFile: string; labels: string } {
  const model = join(dir, `${name}.onnx`);
  writeOnnx(g, model);
  const planFile = join(dir, `${name}.plan`);
  const plan = compile({ model, loss: { kind: 'mse' }, partitions: 1, microbatches, schedule: '1f1b', batch }).plan;
  writePlan(planFile, plan);
  return { plan, planFile, labels: plan.values[plan.model.labelsValue]!.name };
}

describe('CUDA kernels on the host emulation match the CPU kernels', () => {
  it.each(KERNEL_CASES.map((c) => [caseName(c), c] as const))('%s', (_, c) => {
    const host = new HostCuda();
    const errors = caseErrors(c, (g, feeds, precision) => runGraphCuda(g, feeds, precision, new Cuda(host.native)));
    for (const e of errors) {
      expect(e.f32, `${e.output} float32`).toBeLessThanOrEqual(c.tol ?? 1e-5);
      expect(e.bf16, `${e.output} bfloat16`).toBeLessThanOrEqual(1e-2);
      // float16: 11 bits of mantissa, rounding at 2^-11 ≈ 5e-4 of the scale.
      expect(e.f16, `${e.output} float16`).toBeLessThanOrEqual(5e-3);
    }
    expect(host.liveBlocks, 'device memory left allocated').toBe(0);
  });
});

describe('convolutions on the host emulation in chunks of images', () => {
  // Three images with columns for one or two at a time: chunks of one image (no transposes), and a
  // last chunk smaller than the others (weight gradients accumulate over chunks).
  const x = [3, 4, 7, 8], w = [6, 2, 3, 3], attrs = { group: 2, dilations: [2, 1], pads: [2, 1, 2, 1] };
  const perImage = x[1]! * 9 * outShape('Conv', [x, w], attrs).slice(2).reduce((a, b) => a * b, 1);
  it.each(convCases(x, w, attrs, 'three images').flatMap((c) => [1, 2].map((images) => [`${caseName(c)}, ${images} per chunk`, c, images] as const)))('%s', (_, c, images) => {
    const host = new HostCuda();
    const errors = caseErrors(c, (g, feeds, precision) => {
      const dev = new Cuda(host.native);
      dev.columnLimit = images * perImage;
      return runGraphCuda(g, feeds, precision, dev);
    });
    for (const e of errors) {
      expect(e.f32, `${e.output} float32`).toBeLessThanOrEqual(1e-5);
      expect(e.bf16, `${e.output} bfloat16`).toBeLessThanOrEqual(1e-2);
    }
  });
});

describe('Dropout on CUDA', () => {
  it('draws the CPU kernel\'s masks from the shared generator and leaves it where the CPU kernel does', () => {
    const b = new ModelBuilder('drop');
    const x = b.input('x', 'float32', [5, 37]);
    const [y, mask] = b.ops('Dropout', [x], { ratio: 0.4, training_mode: 1 }, 2);
    b.output(y!, 'y');
    b.output(mask!, 'mask');
    const g = b.finish();
    const feeds = { x: tensor('float32', [5, 37], Array.from({ length: 185 }, (_, i) => i - 90)) };
    const start = dropoutRng.state;
    const cpu = runGraph(g, feeds);
    const after = dropoutRng.state;
    dropoutRng.state = start;
    const dev = runGraphCuda(g, feeds, 'float32', new Cuda(new HostCuda().native));
    expect(dropoutRng.state).toBe(after);
    expect(Array.from(dev.get('mask')!.data)).toEqual(Array.from(cpu.get('mask')!.data));
    // The device scales in float32 by a float32 1/(1 − ratio); the CPU kernel in doubles.
    expect(maxRelError(dev.get('y')!, cpu.get('y')!)).toBeLessThanOrEqual(1e-6);
    // Some dropped, some kept: the threshold is not degenerate.
    const kept = Array.from(cpu.get('mask')!.data).filter((v) => v).length;
    expect(kept).toBeGreaterThan(60);
    expect(kept).toBeLessThan(160);
  });
});

describe('the CNN fixture on the CUDA rank backend (host emulation)', () => {
  it('trains with the CPU ranks\' losses (float32 ≤ 1e-4; bf16 ≤ 3e-2; fp16 with loss scaling ≤ 1e-2)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cleave-cnn-emulated-'));
    const opt = { kind: 'adamw' as const, lr: 1e-2 };
    const job = prepareJob({ model: fixturePath('cnn'), loss: 'auto', steps: 3, batch: 8, microbatches: 2, optimizer: opt, seed: 5 });
    const batches = Array.from({ length: 3 }, () => job.data.next(8));
    const run = { data: { kind: 'batches' as const, batches }, steps: 3, optimizer: opt };
    const losses: Record<string, number[]> = {};
    for (const policy of ['fp32', 'bf16', 'fp16'] as const) {
      const planFile = join(dir, `${policy}.plan`);
      writePlan(planFile, compile({ model: fixturePath('cnn'), loss: 'auto', partitions: 1, microbatches: 2, schedule: '1f1b', batch: 8, policy }).plan);
      if (policy === 'fp32') losses['cpu'] = (await runPlanCpu({ planFile, ...run })).steps.map((s) => s.loss);
      const emulated = await lossesOnEmulatedCuda(planFile, batches, run.steps, opt);
      losses[policy] = emulated.losses;
      expect(emulated.liveBlocks, `${policy}: device memory left allocated`).toBe(0);
    }
    expectCpuLosses(losses);
    expect(losses['fp32']![2]!).toBeLessThan(losses['fp32']![0]!);
    rmSync(dir, { recursive: true, force: true });
  }, 120_000);
});

describe('float16 loss scaling on the CUDA rank backend (host emulation)', () => {
  /**
   * y = x·W1·W2 with inputs near 50: at the largest scales the float16 output and activation
   * gradients overflow (weight gradients add into float32 accumulators and would not).
   */
  function overflowingPlan(policy: 'fp16' | 'bf16') {
    const b = new ModelBuilder('big', { opset: 17, seed: 2 });
    b.output(twoLayers(b, b.input('x', 'float32', [4, 8])), 'y');
    const g = b.finish();
    const weights = new Map(g.params().map((p) => [p.name, p.data!]));
    const plan = compile({ model: 'big', graph: g, loss: { kind: 'mse' }, partitions: 1, microbatches: 1, schedule: '1f1b', batch: 4, policy }).plan;
    const labels = plan.values[plan.model.labelsValue]!.name;
    const feeds = { x: tensor('float32', [4, 8], Array.from({ length: 32 }, (_, i) => 50 + (i % 5))), [labels]: tensor('float32', [4, 4]) };
    return { plan, weights, batches: Array.from({ length: 10 }, () => feeds) };
  }

  it('skips steps whose scaled gradients overflow, halving the scale until they fit, then trains', async () => {
    const { plan, weights, batches } = overflowingPlan('fp16');
    const backend = new CudaRankBackend(plan, 0, weights, { kind: 'adamw', lr: 1e-2 }, new Cuda(new HostCuda().native));
    expect(backend.scale).toBe(2 ** 15);
    const steps = (await runOnBackend(backend, { planFile: 'big.plan', data: { kind: 'batches', batches }, steps: 10, optimizer: { kind: 'adamw', lr: 1e-2 } })).steps;
    const skipped = steps.filter((s) => !Number.isFinite(s.gradNorm)).length;
    expect(skipped).toBeGreaterThan(0);
    expect(backend.skippedSteps).toBe(skipped);
    expect(backend.scale).toBe(2 ** (15 - skipped));
    // Skipped steps leave the weights alone (same batch, same loss); the steps after them train.
    for (let i = 1; i < skipped; i++) expect(steps[i]!.loss).toBe(steps[0]!.loss);
    expect(Number.isFinite(steps.at(-1)!.gradNorm)).toBe(true);
    expect(steps.at(-1)!.loss).toBeLessThan(steps[0]!.loss);
  });

  it('adds weight gradients straight into their float32 accumulators, with the CPU ranks\' losses', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cleave-direct-'));
    const b = new ModelBuilder('two', { opset: 17, seed: 2 });
    b.output(twoLayers(b, b.input('x', 'float32', [4, 8])), 'y');
    const { plan, planFile, labels } = compileToFile(dir, 'two', b.finish(), 2, 8);
    const rng = (i: number) => Math.sin(i * 1.7);
    const batch = { x: tensor('float32', [8, 8], Array.from({ length: 64 }, (_, i) => rng(i))), [labels]: tensor('float32', [8, 4], Array.from({ length: 32 }, (_, i) => rng(i + 99))) };
    const run = { data: { kind: 'batches' as const, batches: [batch, batch, batch] }, steps: 3, optimizer: { kind: 'adamw' as const, lr: 1e-2 } };
    const backend = new CudaRankBackend(plan, 0, planWeights(plan), run.optimizer, new Cuda(new HostCuda().native));
    // Both weight gradients are GEMMs that nothing else reads.
    expect(backend.directGradients).toBe(2);
    const gpu = (await runOnBackend(backend, { planFile, ...run })).steps.map((s) => s.loss);
    const cpu = (await runPlanCpu({ planFile, ...run })).steps.map((s) => s.loss);
    cpu.forEach((l, i) => expect(Math.abs(gpu[i]! - l) / l, `step ${i + 1}`).toBeLessThanOrEqual(1e-5));
    expect(gpu[2]!).toBeLessThan(gpu[0]!);
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses scales a float16 seed cannot hold, loss scaling outside fp16, and fp16 plans that do not record the seed', () => {
    const { plan, weights } = overflowingPlan('fp16');
    const dev = () => new Cuda(new HostCuda().native);
    const backend = new CudaRankBackend(plan, 0, weights, { kind: 'adamw', lr: 1e-2 }, dev());
    expect(() => backend.setLossScale(2 ** 16)).toThrow(/the loss scale must be in \(0, 32768\]; got 65536/);
    expect(() => backend.setLossScale(0)).toThrow(/the loss scale must be in/);
    const bf16 = overflowingPlan('bf16');
    expect(() => new CudaRankBackend(bf16.plan, 0, bf16.weights, { kind: 'adamw', lr: 1e-2 }, dev()).setLossScale(8)).toThrow(/loss scaling applies to fp16 plans only/);
    const old = { ...plan, model: { ...plan.model, lossSeedValue: -1 } };
    expect(() => new CudaRankBackend(old, 0, weights, { kind: 'adamw', lr: 1e-2 }, dev())).toThrow(/this plan \(version 1\) does not record where it starts: compile it again/);
  });
});

describe('static program workspaces on the CUDA rank backend (host emulation)', () => {
  it('place program-internal values at the plan\'s offsets, views aliasing them, with the CPU ranks\' losses', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cleave-arena-'));
    // Reshapes (views of workspace values) between products, a transpose copy, an activation.
    const b = new ModelBuilder('views', { opset: 17, seed: 4 });
    const x = b.input('x', 'float32', [4, 6, 8]);
    let h = b.op('Reshape', [x], { shape: [4, 48] });
    h = b.op('Relu', [b.op('MatMul', [h, b.param('w1', [48, 16], { normal: 0.2 })])]);
    h = b.op('Transpose', [b.op('Reshape', [h], { shape: [4, 4, 4] })], { perm: [0, 2, 1] });
    h = b.op('Add', [b.op('Reshape', [h], { shape: [4, 16] }), b.param('b1', [16], { normal: 0.1 })]);
    b.output(b.op('MatMul', [h, b.param('w2', [16, 3], { normal: 0.3 })]), 'y');
    const { plan, planFile, labels } = compileToFile(dir, 'views', b.finish(), 2, 8);
    const wave = (i: number) => Math.sin(i * 0.37);
    const batch = { x: tensor('float32', [8, 6, 8], Array.from({ length: 384 }, (_, i) => wave(i))), [labels]: tensor('float32', [8, 3], Array.from({ length: 24 }, (_, i) => wave(i + 500))) };
    const opt = { kind: 'adamw' as const, lr: 1e-2 };
    const run = { data: { kind: 'batches' as const, batches: [batch, batch, batch] }, steps: 3, optimizer: opt };
    const host = new HostCuda();
    const backend = new CudaRankBackend(plan, 0, planWeights(plan), opt, new Cuda(host.native));
    const ws = plan.stages[0]!.workspaces;
    expect(backend.workspaceBytes).toBe(ws.forward.bytes + ws.backwardB.bytes + ws.backwardW.bytes);
    expect(ws.forward.slots.length + ws.backwardB.slots.length).toBeGreaterThan(0);
    const gpu = (await runOnBackend(backend, { planFile, ...run })).steps.map((s) => s.loss);
    expect(host.liveBlocks).toBe(0);
    const cpu = (await runPlanCpu({ planFile, ...run })).steps.map((s) => s.loss);
    cpu.forEach((l, i) => expect(Math.abs(gpu[i]! - l) / l, `step ${i + 1}`).toBeLessThanOrEqual(1e-5));
    expect(gpu[2]!).toBeLessThan(gpu[0]!);
    rmSync(dir, { recursive: true, force: true });
  });
});

describe('CUDA rank backend guards (host emulation)', () => {
  function twoLayerPlan(dir: string, policy: 'fp32' | 'fp16' = 'fp32', withHostOp = false) {
    const b = new ModelBuilder('two', { opset: 17, seed: 2 });
    const y = twoLayers(b, b.input('x', 'float32', [4, 8]));
    // A Range stays in a graph built in code (only the importer folds constants): on CUDA it reads
    // its scalars back to the host.
    b.output(withHostOp ? b.op('Add', [y, b.op('Range', [b.scalar(0), b.scalar(4), b.scalar(1)])]) : y, 'y');
    const g = b.finish();
    const weights = new Map(g.params().map((p) => [p.name, p.data!]));
    const plan = compile({ model: 'two', graph: g, loss: { kind: 'mse' }, partitions: 1, microbatches: 1, schedule: '1f1b', batch: 4, policy }).plan;
    const labels = plan.values[plan.model.labelsValue]!.name;
    const feeds = (v: number) => ({ x: tensor('float32', [4, 8], Array.from({ length: 32 }, (_, i) => (i % 3 === 0 ? v : Math.sin(i)))), [labels]: tensor('float32', [4, 4]) });
    return { plan, weights, feeds, planFile: join(dir, 'two.plan') };
  }
  const opt = { kind: 'adamw' as const, lr: 1e-2 };

  it('refuses a CUDA graph around ops that copy between host and device, before capturing', async () => {
    const { plan, weights, feeds, planFile } = twoLayerPlan(tmpdir(), 'fp32', true);
    expect(plan.nodes.some((n) => n.op === 'Range')).toBe(true);
    const host = new HostCuda();
    const backend = new CudaRankBackend(plan, 0, weights, opt, new Cuda(host.native));
    backend.cudaGraph = true;
    await expect(runOnBackend(backend, { planFile, data: { kind: 'batches', batches: [feeds(1), feeds(1)] }, steps: 2, optimizer: opt }))
      .rejects.toThrow(/--cuda-graph: node '.*Range.*' \(Range\) copies between host and device inside the step, which a captured graph cannot/);
    expect(host.liveBlocks).toBe(0);
  });

  it('names an input whose shape changes between steps', async () => {
    const { plan, weights, feeds, planFile } = twoLayerPlan(tmpdir());
    const labels = plan.values[plan.model.labelsValue]!.name;
    const odd = { ...feeds(1), [labels]: tensor('float32', [4, 4]) };
    const wide = { ...odd, x: tensor('float32', [4, 16]) };
    const backend = new CudaRankBackend(plan, 0, weights, opt, new Cuda(new HostCuda().native));
    await expect(runOnBackend(backend, { planFile, data: { kind: 'batches', batches: [odd, wide] }, steps: 2, optimizer: opt }))
      .rejects.toThrow(/input 'x' changed from float32\[4,8\] to float32\[4,16\] between steps/);
  });

  it('stops fp16 training that makes non-finite gradients at every scale, naming the cause', async () => {
    const { plan, weights, feeds, planFile } = twoLayerPlan(tmpdir(), 'fp16');
    const backend = new CudaRankBackend(plan, 0, weights, opt, new Cuda(new HostCuda().native));
    const nan = feeds(Number.NaN);
    await expect(runOnBackend(backend, { planFile, data: { kind: 'batches', batches: Array.from({ length: 40 }, () => nan) }, steps: 40, optimizer: opt }))
      .rejects.toThrow(/fp16: 30 steps in a row had non-finite gradients down to a loss scale of .*: the model makes inf or NaN even unscaled/);
    expect(backend.skippedSteps).toBe(31);
  });

  it('uses the static workspaces of version 3 plans only (older plans packed views as copies)', () => {
    const { plan, weights } = twoLayerPlan(tmpdir());
    const dev = () => new Cuda(new HostCuda().native);
    expect(new CudaRankBackend(plan, 0, weights, opt, dev()).workspaceBytes).toBeGreaterThan(0);
    expect(new CudaRankBackend({ ...plan, version: 2 }, 0, weights, opt, dev()).workspaceBytes).toBe(0);
  });

  it('holds float16 constants beyond ±65504 at the limit rather than at infinity', () => {
    const t = tensor('float32', [4], [-1e9, 1e9, 3, Number.NEGATIVE_INFINITY]);
    expect(Array.from(hostBytes(t, 'float16') as Uint16Array, halfToFloat)).toEqual([-65504, 65504, 3, Number.NEGATIVE_INFINITY]);
  });

  it('writes integers as int64 exactly as BigInt does, across the 32-bit words and signs, and refuses fractions', () => {
    const xs = [0, 1, -1, 50303, 2 ** 31 - 1, 2 ** 31, -(2 ** 31), -(2 ** 31) - 1, 2 ** 32, 2 ** 32 + 5, -(2 ** 32) - 5, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER];
    expect(Array.from(hostBytes(tensor('int64', [xs.length], xs), 'int64') as BigInt64Array)).toEqual(xs.map((x) => BigInt(x)));
    expect(() => hostBytes(tensor('int64', [2], [3, 1.5]), 'int64')).toThrow(/1\.5/);
  });
});

describe('the GPT fixture on the CUDA rank backend (host emulation)', () => {
  it('trains through fused attention, folded GEMMs, accumulators and workspaces with the CPU ranks\' losses (float32 ≤ 1e-4; bf16 ≤ 3e-2; fp16 ≤ 1e-2)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cleave-gpt-emulated-'));
    const opt = { kind: 'adamw' as const, lr: 1e-2 };
    const job = prepareJob({ model: fixturePath('gpt'), loss: 'auto', steps: 3, batch: 4, microbatches: 1, optimizer: opt, seed: 8 });
    const run = { data: { kind: 'batches' as const, batches: [job.data.next(4), job.data.next(4), job.data.next(4)] }, steps: 3, optimizer: opt };
    const losses: Record<string, number[]> = {};
    for (const policy of ['fp32', 'bf16', 'fp16'] as const) {
      const planFile = join(dir, `${policy}.plan`);
      const plan = compile({ model: fixturePath('gpt'), loss: 'auto', partitions: 1, microbatches: 2, schedule: '1f1b', batch: 4, policy }).plan;
      expect(plan.nodes.some((n) => n.op === 'FusedAttention')).toBe(true);
      writePlan(planFile, plan);
      if (policy === 'fp32') losses['cpu'] = (await runPlanCpu({ planFile, ...run })).steps.map((s) => s.loss);
      const host = new HostCuda();
      const backend = new CudaRankBackend(plan, 0, planWeights(plan), opt, new Cuda(host.native));
      expect(backend.directGradients).toBeGreaterThan(0);
      losses[policy] = (await runOnBackend(backend, { planFile, ...run })).steps.map((s) => s.loss);
      expect(host.liveBlocks, `${policy}: device memory left allocated`).toBe(0);
    }
    expectCpuLosses(losses);
    rmSync(dir, { recursive: true, force: true });
  }, 120_000);
});

describe('whole-step CUDA graphs on the CUDA rank backend (host emulation of capture)', () => {
  it('capture step 2 and replay it with the eager losses, leaving no memory behind', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cleave-graph-emulated-'));
    const opt = { kind: 'adamw' as const, lr: 1e-2 };
    const job = prepareJob({ model: fixturePath('gpt'), loss: 'auto', steps: 4, batch: 4, microbatches: 1, optimizer: opt, seed: 12 });
    const run = { data: { kind: 'batches' as const, batches: Array.from({ length: 4 }, () => job.data.next(4)) }, steps: 4, optimizer: opt };
    const planFile = join(dir, 'gpt.plan');
    const plan = compile({ model: fixturePath('gpt'), loss: 'auto', partitions: 1, microbatches: 2, schedule: '1f1b', batch: 4, policy: 'bf16' }).plan;
    writePlan(planFile, plan);
    const losses: number[][] = [];
    for (const graph of [false, true]) {
      const host = new HostCuda();
      const backend = new CudaRankBackend(plan, 0, planWeights(plan), opt, new Cuda(host.native));
      backend.cudaGraph = graph;
      losses.push((await runOnBackend(backend, { planFile, ...run })).steps.map((s) => s.loss));
      expect(host.liveBlocks, `graph ${graph}: device memory left allocated`).toBe(0);
    }
    // The same kernels in the same order on the same data: the same numbers.
    expect(losses[1]).toEqual(losses[0]);
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);
});

describe('a capture that fails part-way (host emulation)', () => {
  it('reports the failure itself, ends the capture and frees everything', async () => {
    /** Runs out of memory at the n-th allocation after it is armed. */
    class Flaky extends HostCuda {
      left = Infinity;
      override alloc(bytes: number): bigint {
        if (--this.left < 0) throw new Error('cudaMallocAsync failed: out of memory');
        return super.alloc(bytes);
      }
    }
    const dir = mkdtempSync(join(tmpdir(), 'cleave-graph-fail-'));
    const opt = { kind: 'adamw' as const, lr: 1e-2 };
    const job = prepareJob({ model: fixturePath('gpt'), loss: 'auto', steps: 3, batch: 4, microbatches: 1, optimizer: opt, seed: 2 });
    const planFile = join(dir, 'gpt.plan');
    const plan = compile({ model: fixturePath('gpt'), loss: 'auto', partitions: 1, microbatches: 2, schedule: '1f1b', batch: 4 }).plan;
    writePlan(planFile, plan);
    const host = new Flaky();
    const backend = new CudaRankBackend(plan, 0, planWeights(plan), opt, new Cuda(host.native));
    backend.cudaGraph = true;
    const run = { planFile, data: { kind: 'batches' as const, batches: Array.from({ length: 3 }, () => job.data.next(4)) }, steps: 3, optimizer: opt };
    // Armed after step 1: the failure comes inside step 2's capture.
    await expect(runOnBackend(backend, run, (r) => { if (r.step === 1) host.left = 40; })).rejects.toThrow(/out of memory/);
    expect(host.liveBlocks).toBe(0);
    // The capture was ended: the stream takes waits again.
    expect(() => host.native.synchronize()).not.toThrow();
    rmSync(dir, { recursive: true, force: true });
  });
});
