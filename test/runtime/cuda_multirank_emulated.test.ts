// Multi-rank plans on the CUDA rank backend, every rank in this process on its own host emulation
// of the addon, joined by an in-process stand-in for NCCL (test/helpers/host_nccl.ts) and message
// ports for the host numbers: the losses of the CPU ranks for the same plan. The real thing runs in
// test/gpu/multi_gpu.test.ts.
import { afterAll, describe, expect, it } from 'vitest';
import { compile, type CompileOptions } from '../../compiler/compile.js';
import { Cuda } from '../../runtime/backends/cuda/device.js';
import { CudaRankBackend } from '../../runtime/backends/cuda/rank_backend.js';
import type { Feeds } from '../../runtime/executor/backend.js';
import { Executor } from '../../runtime/executor/executor.js';
import { runPlanCpu } from '../../runtime/launch/cpu.js';
import { planWeights } from '../../runtime/launch/cuda.js';
import { rows } from '../../runtime/launch/data.js';
import { prepareJob } from '../../src/app/api/train/job.js';
import { PortTransport, pairwisePorts } from '../../runtime/transport/ports.js';
import { writePlan } from '../../src/core/plan/io.js';
import type { Plan } from '../../src/core/plan/types.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fixturePath } from '../helpers/fixtures.js';
import { HostCuda } from '../helpers/host_cuda.js';
import { HostFabric } from '../helpers/host_nccl.js';

// Launch lists size the arena in step 1, record in step 2 and replay from step 3: two replays.
const STEPS = 4;
const opt = { kind: 'adamw' as const, lr: 1e-2 };

const dir = mkdtempSync(join(tmpdir(), 'cleave-multirank-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/**
 * The plan of these compile options, its batches and the CPU ranks' losses on them: computed once
 * per shape and shared by the tests of that shape (with and without launch lists, with and
 * without the preload), which compare the emulated CUDA ranks against the same reference.
 */
const references = new Map<string, Promise<{ plan: Plan; batches: Feeds[]; cpu: number[] }>>();
function reference(o: Partial<CompileOptions>): Promise<{ plan: Plan; batches: Feeds[]; cpu: number[] }> {
  const key = JSON.stringify(o);
  let r = references.get(key);
  if (!r) {
    r = (async () => {
      const plan = compile({ model: fixturePath('gpt'), loss: 'auto', partitions: 2, microbatches: 2, schedule: '1f1b', batch: 4, ...o } as CompileOptions).plan;
      const planFile = join(dir, `p${references.size}.plan`);
      writePlan(planFile, plan);
      const B = plan.schedule.microbatches * plan.model.microbatchSize, dp = plan.world.dp;
      const job = prepareJob({ model: fixturePath('gpt'), loss: 'auto', steps: STEPS, batch: B * dp, microbatches: 1, optimizer: opt, seed: 2 });
      const batches = Array.from({ length: STEPS }, () => job.data.next(B * dp));
      const cpu = (await runPlanCpu({ planFile, data: { kind: 'batches', batches }, steps: STEPS, optimizer: opt })).steps.map((s) => s.loss);
      return { plan, batches, cpu };
    })();
    references.set(key, r);
  }
  return r;
}

async function compare(o: Partial<CompileOptions>, lists = true, preload = false): Promise<void> {
  const { plan, batches, cpu } = await reference(o);
  const m = plan.schedule.microbatches, mb = plan.model.microbatchSize, B = m * mb;

  const fabric = new HostFabric(plan);
  const ports = pairwisePorts(plan.world.size);
  const hosts = plan.ranks.map(() => new HostCuda());
  const weights = planWeights(plan);
  const ranks = plan.ranks.map((r) => {
    const transport = new PortTransport(r.rank, plan.world.size, new Map(Object.entries(ports[r.rank]!).map(([k, p]) => [Number(k), p])), 30_000);
    const backend = new CudaRankBackend(plan, r.rank, weights, opt, new Cuda(hosts[r.rank]!.native), { comm: fabric.rank(r.rank, hosts[r.rank]!.native), transport });
    backend.launchLists = lists;
    // Lazy module loading's preload: every program once, on zeros for what it would receive.
    if (preload) backend.preloadKernels();
    return { r, backend, exec: new Executor(plan, r.rank, backend, transport) };
  });
  const gpu: number[] = [];
  for (let step = 0; step < STEPS; step++) {
    const out = await Promise.all(ranks.map(async ({ r, exec }) => {
      const batch = rows(batches[step]!, r.dpRank * B, B);
      const feeds: Feeds[] = Array.from({ length: m }, (_, k) => rows(batch, k * mb, mb));
      const { losses } = await exec.trainStep(feeds, { lr: opt.lr });
      return { r, losses };
    }));
    // SMP's reduce_mean: each replica's first pipeline rank holds its losses; replicas averaged.
    const means = out.filter((x) => x.r.ppRank === 0).map((x) => [...x.losses.values()].reduce((a, b) => a + b, 0) / m);
    gpu.push(means.reduce((a, b) => a + b, 0) / means.length);
  }
  for (const { backend } of ranks) {
    // From step 3 every compute instruction was one replay of its recorded list.
    expect(backend.arenaBytes > 0, 'launch lists').toBe(lists);
    expect((hosts[backend.rank]!.calls.get('graphLaunch') ?? 0) > 0, 'lists launched').toBe(lists);
    backend.dispose();
    backend.dev.freeAll();
  }
  for (const p of ports) for (const port of Object.values(p)) port.close();
  for (const h of hosts) expect(h.liveBlocks, 'device memory left allocated').toBe(0);
  cpu.forEach((l, i) => expect(Math.abs(gpu[i]! - l) / l, `step ${i + 1}`).toBeLessThanOrEqual(1e-5));
}

describe('multi-rank plans on the CUDA rank backend (host emulation)', () => {
  it('pp 2 (1f1b) gives the CPU ranks\' losses', () => compare({}), 60_000);
  it('pp 2 (zbv, two stages per rank) gives the CPU ranks\' losses', () => compare({ schedule: 'zbv', virtualStages: 2 }), 60_000);
  it('pp 2 × dp 2 gives the CPU ranks\' losses', () => compare({ dp: 2 }), 60_000);
  it('pp 2 (zbv) node by node, without launch lists, gives them too', () => compare({ schedule: 'zbv', virtualStages: 2 }, false), 60_000);
  it('pp 2 × dp 2 with kernels preloaded first (lazy module loading) gives them too', () => compare({ dp: 2 }, true, true), 60_000);
  it('pp 4 (interleaved, a rank sending to three others) gives the CPU ranks\' losses', () => compare({ partitions: 4, microbatches: 4, batch: 8, schedule: 'interleaved-1f1b', virtualStages: 2 }), 60_000);
});
