// `--cuda-graph` on the ranks of a multi-rank plan: step 2 is captured whole, sends, receives and
// reductions included, on the streams CudaComm forks onto. The structure of that capture, checked
// against what CUDA requires (test/helpers/capture_check.ts), on the host emulation of the addon
// with NCCL that moves no data; the GPU run, numbers included, is in test/gpu/multi_gpu.test.ts.
import { describe, expect, it } from 'vitest';
import { compile, type CompileOptions } from '../../compiler/compile.js';
import { CudaComm } from '../../runtime/backends/cuda/comm.js';
import { Cuda } from '../../runtime/backends/cuda/device.js';
import { CudaRankBackend } from '../../runtime/backends/cuda/rank_backend.js';
import type { Feeds } from '../../runtime/executor/backend.js';
import { Executor } from '../../runtime/executor/executor.js';
import { planWeights } from '../../runtime/launch/cuda.js';
import { rows } from '../../runtime/launch/data.js';
import { prepareJob } from '../../src/app/api/train/job.js';
import { PortTransport, pairwisePorts } from '../../runtime/transport/ports.js';
import { captureCheckedNccl } from '../helpers/capture_check.js';
import { fixturePath } from '../helpers/fixtures.js';
import { HostCuda } from '../helpers/host_cuda.js';

const opt = { kind: 'adamw' as const, lr: 1e-2 };

async function capture(o: Partial<CompileOptions>): Promise<void> {
  const plan = compile({ model: fixturePath('gpt'), loss: 'auto', partitions: 2, microbatches: 2, schedule: '1f1b', batch: 4, ...o } as CompileOptions).plan;
  const m = plan.schedule.microbatches, mb = plan.model.microbatchSize, B = m * mb;
  const data = prepareJob({ model: fixturePath('gpt'), loss: 'auto', steps: 3, batch: B * plan.world.dp, microbatches: 1, optimizer: opt, seed: 2 }).data;
  const batches = Array.from({ length: 3 }, () => data.next(B * plan.world.dp));
  const ports = pairwisePorts(plan.world.size);
  const weights = planWeights(plan);
  const ranks = plan.ranks.map((r) => {
    const host = new HostCuda();
    const n = captureCheckedNccl(host);
    const transport = new PortTransport(r.rank, plan.world.size, new Map(Object.entries(ports[r.rank]!).map(([k, p]) => [Number(k), p])), 30_000);
    const backend = new CudaRankBackend(plan, r.rank, weights, opt, new Cuda(n), { comm: new CudaComm(n, plan, r.rank, 1n), transport });
    backend.cudaGraph = true;
    return { r, host, backend, exec: new Executor(plan, r.rank, backend, transport) };
  });
  const launches: number[] = [];
  for (let step = 0; step < 3; step++) {
    await Promise.all(ranks.map(async ({ r, exec }) => {
      const batch = rows(batches[step]!, r.dpRank * B, B);
      await exec.trainStep(Array.from({ length: m }, (_, k): Feeds => rows(batch, k * mb, mb)), { lr: opt.lr });
    }));
    launches.push(ranks.reduce((a, x) => a + (x.host.calls.get('graphLaunch') ?? 0), 0));
  }
  // Step 1 eager; step 2 captured and launched once a rank; step 3 only launched.
  expect(launches).toEqual([0, plan.world.size, 2 * plan.world.size]);
  for (const { backend, host } of ranks) {
    backend.dispose();
    backend.dev.freeAll();
    expect(host.liveBlocks, 'device memory left allocated').toBe(0);
  }
  for (const p of ports) for (const port of Object.values(p)) port.close();
}

describe('--cuda-graph on the ranks of a multi-rank plan (capture structure, host emulation)', () => {
  it('pp 2 (zbv: sends, receives and the tied embedding\'s reduction) captures step 2 with every forked stream joined back', () => capture({ schedule: 'zbv', virtualStages: 2 }), 60_000);
  it('pp 1 × dp 2 (bucketed gradient reductions) captures step 2 with every forked stream joined back', () => capture({ partitions: 1, dp: 2 }), 60_000);
});
