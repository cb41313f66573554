// Checkpoints of GPU runs (the CUDA rank backend on the host emulation of the addon): the format CPU
// ranks write, resumed on the GPU or on CPU ranks, and CPU checkpoints resumed on the GPU.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compile } from '../../compiler/compile.js';
import { Cuda } from '../../runtime/backends/cuda/device.js';
import { CudaRankBackend } from '../../runtime/backends/cuda/rank_backend.js';
import { readManifest, readShard } from '../../runtime/checkpoint/checkpoint.js';
import { runPlanCpu } from '../../runtime/launch/cpu.js';
import { planWeights, runOnBackend } from '../../runtime/launch/cuda.js';
import type { RunOptions } from '../../runtime/launch/options.js';
import { prepareJob } from '../../src/app/api/train/job.js';
import { writePlan } from '../../src/core/plan/io.js';
import { fixturePath } from '../helpers/fixtures.js';
import { HostCuda } from '../helpers/host_cuda.js';

const dir = mkdtempSync(join(tmpdir(), 'cleave-gpu-ckpt-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const opt = { kind: 'adamw' as const, lr: 1e-2, weightDecay: 0.1 };
const planFile = join(dir, 'gpt.plan');
const plan = compile({ model: fixturePath('gpt'), loss: 'auto', partitions: 1, microbatches: 2, schedule: '1f1b', batch: 4 }).plan;
writePlan(planFile, plan);
const job = prepareJob({ model: fixturePath('gpt'), loss: 'auto', steps: 4, batch: 4, microbatches: 1, optimizer: opt, seed: 3 });
const batches = Array.from({ length: 4 }, () => job.data.next(4));
const base: RunOptions = { planFile, data: { kind: 'batches', batches }, steps: 4, optimizer: opt };

/** A GPU run (emulated) from the plan's model, or from a checkpoint's shard. */
async function gpu(o: RunOptions): Promise<number[]> {
  const host = new HostCuda();
  const shard = o.resume ? readShard(o.resume, 0) : undefined;
  const backend = new CudaRankBackend(plan, 0, shard?.tensors ?? planWeights(plan), opt, new Cuda(host.native));
  const r = await runOnBackend(backend, o, undefined, shard);
  expect(host.liveBlocks).toBe(0);
  return r.steps.map((s) => s.loss);
}

describe('checkpoints of GPU runs', () => {
  it('resume on the GPU with the losses of an unbroken run, and on CPU ranks within float32 rounding', async () => {
    const straight = await gpu(base);
    const ckpt = join(dir, 'gpu');
    const first = await gpu({ ...base, steps: 2, saveEvery: 2, checkpointDir: ckpt });
    expect(first).toEqual(straight.slice(0, 2));
    const step2 = join(ckpt, 'step-2');
    const m = readManifest(step2);
    expect(m.step).toBe(2);
    expect(m.world).toBe(1);
    // AdamW's moments went to the shard as the CPU optimizer keeps them.
    const shard = readShard(step2, 0);
    expect(shard.optimizer.step).toBe(2);
    expect(Object.keys(shard.optimizer.buffers).length).toBe(plan.values.filter((v) => v.kind === 'param').length);
    expect(await gpu({ ...base, resume: step2 })).toEqual(straight.slice(2));
    const cpu = (await runPlanCpu({ ...base, resume: step2 })).steps.map((s) => s.loss);
    cpu.forEach((l, i) => expect(Math.abs(l - straight[i + 2]!) / l, `CPU step ${i + 3}`).toBeLessThanOrEqual(1e-4));
  }, 60_000);

  it('resume a CPU ranks\' checkpoint on the GPU within float32 rounding', async () => {
    const ckpt = join(dir, 'cpu');
    const cpu = (await runPlanCpu({ ...base, saveEvery: 2, checkpointDir: ckpt })).steps.map((s) => s.loss);
    expect(existsSync(join(ckpt, 'step-2', 'manifest.json'))).toBe(true);
    const resumed = await gpu({ ...base, resume: join(ckpt, 'step-2') });
    resumed.forEach((l, i) => expect(Math.abs(l - cpu[i + 2]!) / l, `GPU step ${i + 3}`).toBeLessThanOrEqual(1e-4));
  }, 60_000);
});
