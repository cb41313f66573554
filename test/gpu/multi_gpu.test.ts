// Multi-GPU runs over NCCL, one process per GPU through `cleave run --gpus N` (skipped without two
// GPUs). Needs the build (dist/) the CLI runs from.
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compile, type CompileOptions } from '../../compiler/compile.js';
import { nativeCuda } from '../../runtime/backends/cuda/native.js';
import { runPlanCpu } from '../../runtime/launch/cpu.js';
import { runPlanCuda } from '../../runtime/launch/cuda.js';
import { readPlan, writePlan } from '../../src/plan/io.js';
import { readMeasured } from '../../src/plan/measured.js';
import { fixturePath } from '../helpers/fixtures.js';

const gpus = nativeCuda()?.info()?.devices ?? 0;
const dir = mkdtempSync(join(tmpdir(), 'cleave-multi-gpu-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const cli = join(process.cwd(), 'bin', 'cleave.js');
const STEPS = 4;
const opt = { kind: 'adamw' as const, lr: 3e-3 };

function planFile(name: string, o: Partial<CompileOptions>): string {
  const file = join(dir, `${name}.plan`);
  writePlan(file, compile({ model: fixturePath('gpt'), loss: 'auto', partitions: 1, microbatches: 4, schedule: '1f1b', batch: 8, ...o } as CompileOptions).plan);
  return file;
}

/** `cleave run --gpus N --json`: the step reports, the exit code, rank 0's output, and how long it took. */
function runGpus(plan: string, n: number, env: Record<string, string> = {}, extra: string[] = []): Promise<{ code: number; losses: number[]; out: string; ms: number }> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [cli, 'run', plan, '--backend', 'cuda', '--gpus', String(n), '--steps', String(STEPS), '--lr', String(opt.lr), '--json', '--log-dir', join(dir, `logs-${Date.now()}`), ...extra],
      { env: { ...process.env, NCCL_NVLS_ENABLE: '0', ...env } });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    child.on('exit', (code) => {
      const losses = out.split('\n').filter((l) => l.startsWith('{')).map((l) => (JSON.parse(l) as { loss: number }).loss);
      resolve({ code: code ?? -1, losses, out, ms: performance.now() - t0 });
    });
  });
}

const single = async (): Promise<number[]> =>
  (await runPlanCuda({ planFile: planFile('single', {}), data: { kind: 'default' }, steps: STEPS, optimizer: opt, seed: 0, launchLists: false })).steps.map((s) => s.loss);

describe.runIf(gpus >= 2)('multi-GPU runs over NCCL (2 GPUs)', () => {
  it('every schedule at pp 2 reproduces the single-GPU losses (float32 ≤ 1e-4)', async () => {
    const want = await single();
    for (const [schedule, v] of [['gpipe', 1], ['1f1b', 1], ['zb-h1', 1], ['interleaved-1f1b', 2], ['zbv', 2]] as const) {
      const plan = planFile(`pp2-${schedule}`, { partitions: 2, schedule, virtualStages: v });
      const r = await runGpus(plan, 2);
      expect(r.code, `${schedule}: ${r.out}`).toBe(0);
      expect(r.losses).toHaveLength(STEPS);
      want.forEach((l, i) => expect(Math.abs(r.losses[i]! - l) / l, `${schedule} step ${i + 1}`).toBeLessThanOrEqual(1e-4));
    }
  }, 300_000);

  it('pp 1 × dp 2 gives the CPU ranks\' losses for the same plan (float32 ≤ 1e-4)', async () => {
    const plan = planFile('dp2', { partitions: 1, dp: 2 });
    const cpu = (await runPlanCpu({ planFile: plan, data: { kind: 'default' }, steps: STEPS, optimizer: opt, seed: 0 })).steps.map((s) => s.loss);
    const r = await runGpus(plan, 2);
    expect(r.code, r.out).toBe(0);
    cpu.forEach((l, i) => expect(Math.abs(r.losses[i]! - l) / l, `step ${i + 1}`).toBeLessThanOrEqual(1e-4));
  }, 120_000);

  it('--cuda-graph captures each rank\'s whole step, transfers and reductions included, with the CPU ranks\' losses (pp 2 zbv, pp 1 × dp 2)', async () => {
    for (const [name, o] of [['graph-zbv', { partitions: 2, schedule: 'zbv', virtualStages: 2 }], ['graph-dp2', { partitions: 1, dp: 2 }]] as const) {
      const plan = planFile(name, o);
      const cpu = (await runPlanCpu({ planFile: plan, data: { kind: 'default' }, steps: STEPS, optimizer: opt, seed: 0 })).steps.map((s) => s.loss);
      const r = await runGpus(plan, 2, {}, ['--cuda-graph']);
      expect(r.code, `${name}: ${r.out}`).toBe(0);
      cpu.forEach((l, i) => expect(Math.abs(r.losses[i]! - l) / l, `${name} step ${i + 1}`).toBeLessThanOrEqual(1e-4));
    }
  }, 240_000);

  it('checkpoints of a pp 2 run resume on 2 GPUs with the unbroken run\'s losses, and on CPU ranks', async () => {
    const plan = planFile('ckpt', { partitions: 2 });
    // The unbroken run also writes its last step's device timeline (CUDA events, rank 0 gathers).
    const trace = join(dir, 'pp2-trace.json');
    const straight = await runGpus(plan, 2, {}, ['--trace', trace]);
    expect(straight.code, straight.out).toBe(0);
    const measured = readMeasured(trace, readPlan(plan));
    for (const r of measured.ranks) {
      expect(r.instructions.some((x) => x.kind === 'SEND' && x.endMs > x.startMs) || r.instructions.some((x) => x.kind === 'RECV' && x.endMs > x.startMs)).toBe(true);
      for (const x of r.instructions) expect(x.endMs).toBeGreaterThanOrEqual(x.startMs);
    }
    const ckpt = join(dir, 'ckpt');
    const first = await runGpus(plan, 2, {}, ['--save-every', '2', '--checkpoint-dir', ckpt]);
    expect(first.code, first.out).toBe(0);
    const resumed = await runGpus(plan, 2, {}, ['--resume', join(ckpt, 'step-2')]);
    expect(resumed.code, resumed.out).toBe(0);
    expect(resumed.losses).toHaveLength(2);
    resumed.losses.forEach((l, i) => expect(Math.abs(l - straight.losses[i + 2]!) / l, `GPU step ${i + 3}`).toBeLessThanOrEqual(1e-6));
    const cpu = (await runPlanCpu({ planFile: plan, data: { kind: 'default' }, steps: STEPS, optimizer: opt, seed: 0, resume: join(ckpt, 'step-2') })).steps.map((s) => s.loss);
    cpu.forEach((l, i) => expect(Math.abs(l - straight.losses[i + 2]!) / l, `CPU step ${i + 3}`).toBeLessThanOrEqual(1e-4));
  }, 240_000);

  it('a rank that fails stops every rank within 30 s, naming it, with no process left', async () => {
    const plan = planFile('fault', { partitions: 2 });
    const r = await runGpus(plan, 2, { CLEAVE_FAIL_AT: '1:2:3' });
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/rank 1/);
    expect(r.out).toMatch(/injected failure/);
    expect(r.ms).toBeLessThan(30_000 + 20_000);
    // No rank process outlives the launch (each rank runs `cleave.js run <plan>`).
    const alive = readdirSync('/proc').filter((p) => /^\d+$/.test(p)).filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(plan);
      } catch {
        return false;
      }
    });
    expect(alive).toEqual([]);
  }, 120_000);
});

describe.runIf(gpus >= 4)('multi-GPU runs over NCCL (4 GPUs)', () => {
  it('every schedule at pp 4, and at pp 2 × dp 2, gives the CPU ranks\' losses for the same plan (float32 ≤ 1e-4)', async () => {
    const SCHEDULES = [['gpipe', 1], ['1f1b', 1], ['zb-h1', 1], ['interleaved-1f1b', 2], ['zbv', 2]] as const;
    for (const [partitions, dp] of [[4, 1], [2, 2]] as const) {
      for (const [schedule, v] of SCHEDULES) {
        const name = `pp${partitions}dp${dp}-${schedule}`;
        const plan = planFile(name, { partitions, dp, schedule, virtualStages: v });
        const cpu = (await runPlanCpu({ planFile: plan, data: { kind: 'default' }, steps: STEPS, optimizer: opt, seed: 0 })).steps.map((s) => s.loss);
        const r = await runGpus(plan, partitions * dp);
        expect(r.code, `${name}: ${r.out}`).toBe(0);
        cpu.forEach((l, i) => expect(Math.abs(r.losses[i]! - l) / l, `${name} step ${i + 1}`).toBeLessThanOrEqual(1e-4));
      }
    }
  }, 600_000);

  it('with lazy module loading, the ranks preload their kernels and the interleaved pp 4 plan (which deadlocked lazily) runs, with the CPU ranks\' losses', async () => {
    const plan = planFile('pp4-lazy', { partitions: 4, schedule: 'interleaved-1f1b', virtualStages: 2 });
    const cpu = (await runPlanCpu({ planFile: plan, data: { kind: 'default' }, steps: STEPS, optimizer: opt, seed: 0 })).steps.map((s) => s.loss);
    const r = await runGpus(plan, 4, { CUDA_MODULE_LOADING: 'LAZY' }, ['--timeout', '30']);
    expect(r.code, r.out).toBe(0);
    cpu.forEach((l, i) => expect(Math.abs(r.losses[i]! - l) / l, `step ${i + 1}`).toBeLessThanOrEqual(1e-4));
  }, 120_000);
});
