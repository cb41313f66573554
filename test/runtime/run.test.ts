import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compile } from '../../compiler/compile.js';
import { importOnnx } from '../../compiler/onnx/import.js';
import { runGraph } from '../../runtime/backends/cpu/interpreter.js';
import { runPlanCpu } from '../../runtime/launch/cpu.js';
import { prepareJob } from '../../src/app/api/train/job.js';
import { writePlan } from '../../src/core/plan/io.js';
import '../../src/core/ops/index.js';
import { exportCheckpoint } from '../../src/app/cli/export.js';
import { cli, cliInProcess } from '../helpers/cli.js';
import { maxRelError, runOrt } from '../helpers/ort.js';

const dir = mkdtempSync(join(tmpdir(), 'cleave-run-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const OPT = { kind: 'adamw' as const, lr: 1e-2 };

function planFile(name: string, o: Parameters<typeof compile>[0]): string {
  const f = join(dir, `${name}.plan`);
  writePlan(f, compile(o).plan);
  return f;
}
const gptPlan = planFile('gpt', { model: 'fixtures/gpt.onnx', loss: 'auto', partitions: 2, microbatches: 4, schedule: 'zb-h1', dp: 2, batch: 8 });

/**
 * The uninterrupted 6-step run of the checkpoint tests, run once: it saves at steps 3 and 6 (shards,
 * then the manifest) and returns its final weights, which the resume, export and whole-checkpoint
 * tests each check (one run of the four ranks instead of three).
 */
const straightDir = join(dir, 'ck-straight');
let straightRun: ReturnType<typeof runPlanCpu> | undefined;
const straight6 = () => (straightRun ??= runPlanCpu({ planFile: gptPlan, data: { kind: 'default' }, steps: 6, optimizer: OPT, seed: 3, saveEvery: 3, checkpointDir: straightDir, returnWeights: true }));

describe('checkpoints', () => {
  it('resume with bit-identical losses after a run is killed', async () => {
    const straight = await straight6();
    const ck = join(dir, 'ck');
    // Save at step 3, then die in the middle of step 5 on rank 3.
    await expect(runPlanCpu({ planFile: gptPlan, data: { kind: 'default' }, steps: 6, optimizer: OPT, seed: 3, saveEvery: 3, checkpointDir: ck, failAt: { rank: 3, instruction: 4, step: 5 } }))
      .rejects.toThrow(/rank 3 failed at instruction 4 .*injected failure/);
    expect(existsSync(join(ck, 'step-3', 'manifest.json'))).toBe(true);
    const resumed = await runPlanCpu({ planFile: gptPlan, resume: join(ck, 'step-3'), data: { kind: 'default' }, steps: 6, optimizer: OPT, seed: 3 });
    expect(resumed.steps.map((s) => s.step)).toEqual([4, 5, 6]);
    expect(resumed.steps.map((s) => s.losses)).toEqual(straight.steps.slice(3).map((s) => s.losses));
  }, 60_000);

  it('export to an ONNX model that onnxruntime runs to the trained model\'s outputs', async () => {
    const run = await straight6();
    const out = join(dir, 'trained.onnx');
    exportCheckpoint(join(straightDir, 'step-6'), out);
    // The trained model, run by cleave's reference backend with the weights the ranks ended with.
    const g = importOnnx('fixtures/gpt.onnx', { batch: 2 });
    for (const p of [...g.params(), ...g.states()]) p.data = run.weights!.get(p.name)!;
    const job = prepareJob({ model: 'fixtures/gpt.onnx', loss: 'auto', steps: 1, batch: 2, microbatches: 1, optimizer: OPT, seed: 9 });
    const feeds = { input_ids: job.data.next(2)['input_ids']! };
    const ours = runGraph(g, feeds).get('logits')!;
    const ref = (await runOrt(out, feeds))['logits']!;
    expect(maxRelError(ours, ref)).toBeLessThanOrEqual(1e-5);
    const before = (await runOrt('fixtures/gpt.onnx', feeds))['logits']!;
    expect(maxRelError(before, ref)).toBeGreaterThan(1e-3);
  }, 60_000);

  it('are written whole: shards, then the manifest', async () => {
    await straight6();
    expect(readdirSync(straightDir).sort()).toEqual(['step-3', 'step-6']);
    for (const step of ['step-3', 'step-6']) expect(readdirSync(join(straightDir, step)).sort(), step).toEqual(['manifest.json', 'rank-00000.ckpt', 'rank-00001.ckpt', 'rank-00002.ckpt', 'rank-00003.ckpt']);
    expect(() => exportCheckpoint(join(dir, 'nothing'), join(dir, 'x.onnx'))).toThrow(/nothing: no manifest\.json; not a complete checkpoint/);
  }, 60_000);
});

describe('failures', () => {
  it('stop every rank within 10 s, naming the failing rank and instruction', async () => {
    const p = planFile('fail', { model: 'fixtures/gpt.onnx', loss: 'auto', partitions: 4, microbatches: 4, schedule: '1f1b' });
    const t0 = performance.now();
    await expect(runPlanCpu({ planFile: p, data: { kind: 'default' }, steps: 50, optimizer: OPT, failAt: { rank: 2, instruction: 3 } }))
      .rejects.toThrow(/rank 2 failed at instruction 3 \(\w+ .*\): injected failure/);
    expect(performance.now() - t0).toBeLessThan(10_000);
  }, 30_000);

  it('exit non-zero from the CLI, naming the rank, when a rank cannot get its input', () => {
    const r = cli(['run', gptPlan, '--steps', '2', '--data', join(dir, 'missing.bin')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/rank \d: .*missing\.bin: no such file or folder/);
  });
});

describe('cleave run', () => {
  it('streams progress and writes checkpoints; cleave export gathers one', async () => {
    const ck = join(dir, 'cli-ck');
    const r = cli(['run', gptPlan, '--steps', '4', '--save-every', '2', '--checkpoint-dir', ck]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/running .*gpt\.plan: 4 ranks \(2 pipeline × 2 data parallel\), zb-h1/);
    expect(r.stdout).toMatch(/step 4\/4  loss [\d.]+  [\d.]+ samples\/s  ETA 0\.0 s/);
    expect(r.stdout).toMatch(/checkpoint .*step-4/);
    const resumed = cli(['run', gptPlan, '--steps', '5', '--resume', join(ck, 'step-4')]);
    expect(resumed.stdout).toMatch(/resuming at step 4[\s\S]*step 5\/5/);
    const e = await cliInProcess(['export', join(ck, 'step-4'), '-o', join(dir, 'cli.onnx')]);
    expect(e.stdout).toMatch(/wrote .*cli\.onnx: \d+ tensors at step 4/);
    expect((await cliInProcess(['run', gptPlan, '--steps', '3', '--resume', join(ck, 'step-4')])).stderr).toMatch(/is at step 4 already; ask for more --steps/);
    expect((await cliInProcess(['run', gptPlan, '--backend', 'tpu'])).stderr).toMatch(/--backend must be cpu or cuda; got 'tpu'/);
    expect((await cliInProcess(['run', gptPlan, '--cuda-graph'])).stderr).toMatch(/--cuda-graph needs --backend cuda/);
    expect((await cliInProcess(['run', gptPlan, '--loss-scale', '1024'])).stderr).toMatch(/--loss-scale needs --backend cuda \(and an fp16 plan\)/);
    expect((await cliInProcess(['run', gptPlan, '--backend', 'cuda'])).stderr).toMatch(/has 4 ranks: run it with --gpus 4 on one host/);
  }, 60_000);
});
