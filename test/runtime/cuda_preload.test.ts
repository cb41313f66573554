// CudaRankBackend.preloadKernels (lazy CUDA module loading on multi-GPU ranks): running each of a
// rank's programs once on zeros before step 1 launches every kernel a step's instructions launch,
// and changes nothing the run computes. On the host emulation of the addon.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compile } from '../../compiler/compile.js';
import { Cuda } from '../../runtime/backends/cuda/device.js';
import { CudaRankBackend } from '../../runtime/backends/cuda/rank_backend.js';
import { planWeights, runOnBackend } from '../../runtime/launch/cuda.js';
import { prepareJob } from '../../src/app/api/train/job.js';
import { writePlan } from '../../src/core/plan/io.js';
import { fixturePath } from '../helpers/fixtures.js';
import { HostCuda } from '../helpers/host_cuda.js';

const dir = mkdtempSync(join(tmpdir(), 'cleave-preload-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const opt = { kind: 'adamw' as const, lr: 1e-2 };
// What a step launches outside its instructions: the start (gradients zeroed, data uploaded) and
// the optimizer, which runs once every transfer of the step is queued.
const OUTSIDE = new Set(['fill', 'upload', 'download', 'sumsqMulti', 'adamwMulti', 'scale', 'synchronize', 'memInfo', 'info', 'alloc', 'free', 'allocStatic', 'freeStatic']);

function job(model: 'gpt' | 'cnn', policy: 'bf16' | 'fp32') {
  const steps = 3;
  const plan = compile({ model: fixturePath(model), loss: 'auto', partitions: 1, microbatches: 2, schedule: '1f1b', batch: 4, policy }).plan;
  const planFile = join(dir, `${model}.plan`);
  writePlan(planFile, plan);
  const data = prepareJob({ model: fixturePath(model), loss: 'auto', steps, batch: 4, microbatches: 1, optimizer: opt, seed: 3 }).data;
  return { plan, run: { planFile, data: { kind: 'batches' as const, batches: Array.from({ length: steps }, () => data.next(4)) }, steps, optimizer: opt } };
}

describe('preloading a rank\'s kernels', () => {
  for (const [model, policy] of [['gpt', 'bf16'], ['cnn', 'fp32']] as const) {
    it(`${model} (${policy}): step 1's instructions launch no kernel the preload did not, and the run's losses and weights are unchanged`, async () => {
      const { plan, run } = job(model, policy);
      const results = [];
      for (const preload of [false, true]) {
        const host = new HostCuda();
        const backend = new CudaRankBackend(plan, 0, planWeights(plan), opt, new Cuda(host.native));
        backend.launchLists = false;
        let loaded = new Set<string>();
        if (preload) {
          backend.preloadKernels();
          loaded = new Set(host.calls.keys());
          expect(loaded.size).toBeGreaterThan(5);
        }
        let newInStep1: string[] = [];
        const r = await runOnBackend(backend, { ...run, returnWeights: true }, (s) => {
          if (s.step === 1 && preload) newInStep1 = [...host.calls.keys()].filter((k) => !loaded.has(k) && !OUTSIDE.has(k) && !/^(event|stream|graph)/.test(k));
        });
        expect(newInStep1, 'kernels first launched inside step 1').toEqual([]);
        expect(host.liveBlocks, 'device memory left allocated').toBe(0);
        results.push(r);
      }
      const [plain, preloaded] = results;
      expect(preloaded!.steps.map((s) => s.loss)).toEqual(plain!.steps.map((s) => s.loss));
      for (const [k, w] of plain!.weights!) expect(Array.from(preloaded!.weights!.get(k)!.data), k).toEqual(Array.from(w.data));
    }, 60_000);
  }

  it('is refused once a step has run', async () => {
    const { plan, run } = job('gpt', 'bf16');
    const host = new HostCuda();
    const backend = new CudaRankBackend(plan, 0, planWeights(plan), opt, new Cuda(host.native));
    await runOnBackend(backend, { ...run, steps: 1 });
    expect(() => backend.preloadKernels()).toThrow(/kernels are preloaded before the first step/);
  });
});
