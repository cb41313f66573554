// Launch lists on the CUDA rank backend, on the host emulation of the addon: step 1 sizes the step
// arena, step 2 records each instruction into it, later steps replay the recordings.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compile } from '../../compiler/compile.js';
import { writeOnnx } from '../../compiler/onnx/export.js';
import { Arena } from '../../runtime/backends/cuda/arena.js';
import { Cuda } from '../../runtime/backends/cuda/device.js';
import { CudaRankBackend } from '../../runtime/backends/cuda/rank_backend.js';
import { planWeights, runOnBackend } from '../../runtime/launch/cuda.js';
import { prepareJob } from '../../src/app/api/train/job.js';
import { ModelBuilder } from '../../src/core/ir/builder.js';
import { CleaveError } from '../../src/core/errors.js';
import { writePlan } from '../../src/core/plan/io.js';
import { readMeasured } from '../../src/core/plan/measured.js';
import { fixturePath } from '../helpers/fixtures.js';
import { HostCuda } from '../helpers/host_cuda.js';

const dir = mkdtempSync(join(tmpdir(), 'cleave-lists-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const opt = { kind: 'adamw' as const, lr: 1e-2 };

function gptRun(steps: number) {
  const job = prepareJob({ model: fixturePath('gpt'), loss: 'auto', steps, batch: 4, microbatches: 1, optimizer: opt, seed: 5 });
  const planFile = join(dir, 'gpt.plan');
  const plan = compile({ model: fixturePath('gpt'), loss: 'auto', partitions: 1, microbatches: 2, schedule: '1f1b', batch: 4, policy: 'bf16' }).plan;
  writePlan(planFile, plan);
  return { plan, run: { planFile, data: { kind: 'batches' as const, batches: Array.from({ length: steps }, () => job.data.next(4)) }, steps, optimizer: opt } };
}

describe('launch lists (host emulation)', () => {
  it('replays each instruction\'s recording from step 3 with the losses of nodes enqueued one by one, and no GEMM enqueued from JavaScript', async () => {
    const { plan, run } = gptRun(4);
    const results: { losses: number[]; gemms: number[] }[] = [];
    for (const lists of [false, true]) {
      const host = new HostCuda();
      const backend = new CudaRankBackend(plan, 0, planWeights(plan), opt, new Cuda(host.native));
      backend.launchLists = lists;
      const gemms: number[] = [];
      let recorded = 0;
      const r = await runOnBackend(backend, run, () => {
        gemms.push(host.calls.get('gemm') ?? 0);
        recorded = backend['lists'].size;
      });
      results.push({ losses: r.steps.map((s) => s.loss), gemms });
      if (lists) {
        // One recording per compute instruction (forward and backward of 2 microbatches), in an
        // arena that the peak counts.
        expect(recorded).toBe(4);
        expect(backend.arenaBytes).toBeGreaterThan(0);
        expect(r.peakBytes).toBeGreaterThanOrEqual(backend.arenaBytes + backend.workspaceBytes);
      }
      expect(host.liveBlocks, `lists ${lists}: device memory left allocated`).toBe(0);
    }
    const [eager, listed] = results;
    // The same kernels in the same order on the same data: the same numbers.
    expect(listed!.losses).toEqual(eager!.losses);
    expect(listed!.losses[3]).toBeLessThan(listed!.losses[0]!);
    // Eager steps enqueue every GEMM from JavaScript; replayed steps (3 and 4) none.
    const perStep = (g: number[]) => g.map((x, i) => x - (g[i - 1] ?? 0));
    const e = perStep(eager!.gemms), l = perStep(listed!.gemms);
    expect(e[3]).toBeGreaterThan(10);
    expect(l[0]).toBe(e[0]);
    expect(l[1]).toBe(e[1]);
    expect(l[2]).toBe(0);
    expect(l[3]).toBe(0);
  }, 60_000);

  it('keeps plans with random ops eager (a replay would repeat their draws), with the same losses', async () => {
    const b = new ModelBuilder('drop', { opset: 17, seed: 2 });
    const x = b.input('x', 'float32', [4, 8]);
    const h = b.op('MatMul', [x, b.param('w1', [8, 8], { normal: 0.3 })]);
    const [d] = b.ops('Dropout', [h, b.scalar(0.25)], {}, 1);
    b.output(b.op('MatMul', [d!, b.param('w2', [8, 4], { normal: 0.3 })]), 'y');
    const model = join(dir, 'drop.onnx');
    writeOnnx(b.finish(), model);
    const planFile = join(dir, 'drop.plan');
    const plan = compile({ model, loss: { kind: 'mse' }, partitions: 1, microbatches: 2, schedule: '1f1b', batch: 8 }).plan;
    writePlan(planFile, plan);
    expect(plan.nodes.some((n) => n.op === 'Dropout')).toBe(true);
    const job = prepareJob({ model, loss: { kind: 'mse' }, steps: 3, batch: 8, microbatches: 2, optimizer: opt, seed: 1 });
    const run = { planFile, data: { kind: 'batches' as const, batches: Array.from({ length: 3 }, () => job.data.next(8)) }, steps: 3, optimizer: opt };
    const host = new HostCuda();
    const backend = new CudaRankBackend(plan, 0, planWeights(plan), opt, new Cuda(host.native));
    const before = host.calls.get('graphBegin') ?? 0;
    const r = await runOnBackend(backend, run);
    expect(host.calls.get('graphBegin') ?? 0).toBe(before);
    expect(backend.arenaBytes).toBe(0);
    expect(r.steps.every((s) => Number.isFinite(s.loss))).toBe(true);
    expect(host.liveBlocks).toBe(0);
  });

  it('goes back to enqueueing node by node when profiling starts after warm-up steps, with the same losses', async () => {
    const { plan, run } = gptRun(4);
    const losses: number[][] = [];
    for (const profileFrom of [0, 1, 2, 3]) {
      const host = new HostCuda();
      const backend = new CudaRankBackend(plan, 0, planWeights(plan), opt, new Cuda(host.native));
      backend.launchLists = profileFrom > 0;
      // Profiling from step profileFrom + 1: during sizing, after recording, after a replay.
      const r = await runOnBackend(backend, run, (x) => { if (x.step === profileFrom) backend.profiling = true; });
      losses.push(r.steps.map((x) => x.loss));
      if (profileFrom > 0) {
        expect(backend.profile.size).toBeGreaterThan(0);
        // Each node's time comes from the events around it on the device (here: emulated ticks).
        for (const [sig, x] of backend.profile) expect(x.ms / x.count, sig).toBeGreaterThan(0);
      }
      expect(host.liveBlocks, `profiling from step ${profileFrom + 1}: device memory left allocated`).toBe(0);
      expect(host.liveEvents, `profiling from step ${profileFrom + 1}: events left`).toBe(0);
    }
    for (const l of losses.slice(1)) expect(l).toEqual(losses[0]);
  }, 60_000);

  it('times each instruction on the device with events (a measured trace), through replayed lists too', async () => {
    const { plan, run } = gptRun(3);
    const host = new HostCuda();
    const backend = new CudaRankBackend(plan, 0, planWeights(plan), opt, new Cuda(host.native));
    const trace = join(dir, 'gpu-trace.json');
    await runOnBackend(backend, { ...run, trace });
    expect(host.liveEvents, 'events left').toBe(0);
    const measured = readMeasured(trace, plan);
    const list = measured.ranks[0]!.instructions;
    const computes = list.filter((x) => x.kind === 'FORWARD' || x.kind === 'BACKWARD');
    expect(computes.length).toBe(4);
    // Every instruction has a span, in the rank's order, the optimizer last.
    for (const x of list) expect(x.endMs).toBeGreaterThanOrEqual(x.startMs);
    for (let i = 1; i < list.length; i++) expect(list[i]!.startMs).toBeGreaterThanOrEqual(list[i - 1]!.endMs - 1e-9);
    expect(list.at(-1)!.kind).toBe('OPTIMIZER_STEP');
    expect(list.at(-1)!.endMs).toBeGreaterThan(list.at(-1)!.startMs);
  });

  it('refuses a trace of a whole-step CUDA graph, which hides the instructions', async () => {
    const { plan, run } = gptRun(2);
    const host = new HostCuda();
    const backend = new CudaRankBackend(plan, 0, planWeights(plan), opt, new Cuda(host.native));
    backend.cudaGraph = true;
    await expect(runOnBackend(backend, { ...run, trace: join(dir, 'no.json'), cudaGraph: true })).rejects.toThrow(/--trace times instructions one by one, which a whole-step CUDA graph hides/);
    expect(host.liveBlocks).toBe(0);
  });

  it('reports a kernel that fails while step 2 records, ends the recording and frees everything', async () => {
    class Flaky extends HostCuda {
      armed = false;
      override gemm(...args: Parameters<HostCuda['gemm']>): boolean {
        if (this.armed) throw new Error('CUBLAS_STATUS_EXECUTION_FAILED');
        return super.gemm(...args);
      }
    }
    const { plan, run } = gptRun(3);
    const host = new Flaky();
    const backend = new CudaRankBackend(plan, 0, planWeights(plan), opt, new Cuda(host.native));
    await expect(runOnBackend(backend, run, (r) => { if (r.step === 1) host.armed = true; })).rejects.toThrow(/CUBLAS_STATUS_EXECUTION_FAILED/);
    expect(host.liveBlocks).toBe(0);
    // The recording was ended: the stream takes waits again.
    expect(() => host.native.synchronize()).not.toThrow();
  });
});

describe('the step arena', () => {
  it('places blocks first-fit on 256 bytes, reuses and merges freed ranges, and gives the same offsets for the same sequence', () => {
    const seq = (a: Arena) => {
      const x = a.alloc(100), y = a.alloc(300), z = a.alloc(256);
      a.free(y);
      const w = a.alloc(200); // fits y's hole
      a.free(x);
      a.free(w); // x's and w's holes merge with each other
      const v = a.alloc(512); // now fits where x and y were
      return [x, y, z, w, v];
    };
    const a = new Arena();
    expect(seq(a)).toEqual([0, 256, 768, 256, 0]);
    expect(a.high).toBe(1024);
    expect(a.live).toBe(2);
    a.reset();
    expect(seq(a)).toEqual([0, 256, 768, 256, 0]);
  });

  it('names what does not fit, and refuses to free what it did not hand out', () => {
    const a = new Arena(1024);
    a.alloc(1000);
    expect(() => a.alloc(1)).toThrow(CleaveError);
    expect(() => a.alloc(1)).toThrow(/the step arena \(1024 bytes\) has no room for 1 bytes/);
    expect(() => a.free(512)).toThrow(/arena offset 512 is not an allocated block/);
  });
});
