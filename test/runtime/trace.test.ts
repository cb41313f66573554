import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compile } from '../../compiler/compile.js';
import { runPlanCpu } from '../../runtime/launch/cpu.js';
import { measuredPlan, readHostPhases, readMeasured } from '../../src/core/plan/measured.js';
import { writePlan } from '../../src/core/plan/io.js';
import { planTrace } from '../../src/core/plan/visual.js';
import { cli, cliInProcess } from '../helpers/cli.js';
import { fixturePath } from '../helpers/fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'cleave-trace-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const plan = compile({ model: fixturePath('gpt'), loss: 'auto', partitions: 2, microbatches: 4, schedule: '1f1b', dp: 2, batch: 8 }).plan;
const planFile = join(dir, 'gpt.plan');
writePlan(planFile, plan);

describe('measured timelines', () => {
  it('record every instruction of every rank on one clock, in the plan\'s order of each rank', async () => {
    const trace = join(dir, 'run.json');
    await runPlanCpu({ planFile, data: { kind: 'default' }, steps: 2, optimizer: { kind: 'adamw', lr: 1e-3 }, trace });
    const measured = readMeasured(trace, plan);
    expect(measured.ranks.map((r) => r.instructions.length)).toEqual(plan.ranks.map((r) => r.instructions.length));
    for (const r of measured.ranks) {
      for (const ins of r.instructions) {
        expect(ins.endMs).toBeGreaterThanOrEqual(ins.startMs);
        expect(ins.startMs).toBeGreaterThanOrEqual(0);
      }
      // Compute runs in list order on a rank: each starts after the previous one ended.
      const compute = r.instructions.filter((x) => x.kind !== 'SEND' && x.kind !== 'RECV' && x.kind !== 'ALLREDUCE');
      for (let i = 1; i < compute.length; i++) expect(compute[i]!.startMs).toBeGreaterThanOrEqual(compute[i - 1]!.endMs - 1e-6);
    }
    // A stage-1 forward of a microbatch cannot start before stage 0 sent its activation.
    const f0 = measured.ranks[0]!.instructions.find((x) => x.kind === 'FORWARD' && x.mb === 0)!;
    const f1 = measured.ranks.find((r) => r.ppRank === 1 && r.dpRank === 0)!.instructions.find((x) => x.kind === 'FORWARD' && x.mb === 0)!;
    expect(f1.startMs).toBeGreaterThanOrEqual(f0.endMs);
    expect(measured.prediction.stepMs).toBe(Math.max(...measured.ranks.flatMap((r) => r.instructions.map((x) => x.endMs))));
    // Each rank's host phases, on the same clock: issuing spans its instructions, the optimizer
    // phase its update, then the wait and the losses, one after another.
    // Read back on the instructions' clock: the rank's first instruction comes after its host began the step.
    readHostPhases(trace, plan).forEach((h, k) => {
      expect(h.map((x) => x.name)).toEqual(['issue', 'optimizer', 'wait for device', 'losses']);
      expect(Math.min(...measured.ranks[k]!.instructions.map((x) => x.startMs))).toBeGreaterThanOrEqual(h[0]!.start - 1e-3);
    });
    const events = (JSON.parse(readFileSync(trace, 'utf8')) as { traceEvents: { cat?: string; pid: number; tid: number; name: string; ts: number; dur: number }[] }).traceEvents;
    for (const r of measured.ranks) {
      const host = events.filter((e) => e.cat === 'host' && e.pid === r.rank);
      expect(host.map((e) => e.name)).toEqual(['issue', 'optimizer', 'wait for device', 'losses']);
      expect(host.every((e) => e.tid === 2)).toBe(true);
      for (let i = 1; i < host.length; i++) expect(host[i]!.ts).toBeGreaterThanOrEqual(host[i - 1]!.ts + host[i - 1]!.dur - 1);
      const [issue, opt] = [host[0]!, host[1]!];
      const own = events.filter((e) => e.pid === r.rank && e.cat !== 'host' && e.dur !== undefined);
      const update = own.find((e) => e.cat === 'OPTIMIZER_STEP')!;
      for (const e of own) if (e !== update && e.tid === 0) expect(e.ts).toBeGreaterThanOrEqual(issue.ts - 1);
      expect(update.ts).toBeGreaterThanOrEqual(opt.ts - 1);
      expect(update.ts + update.dur).toBeLessThanOrEqual(opt.ts + opt.dur + 1);
    }
  }, 60_000);

  it('print predicted and measured side by side, from the CLI', async () => {
    const trace = join(dir, 'cli.json');
    const r = cli(['run', planFile, '--steps', '2', '--trace', trace]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/wrote the last step's measured timeline to .*cli\.json/);
    const p = await cliInProcess(['plan', 'print', planFile, '--measured', trace]);
    expect(p.code, p.stderr).toBe(0);
    expect(p.stdout).toMatch(/predicted and measured \(one step\)/);
    expect(p.stdout).toMatch(/rank +predicted ms +measured ms +Δ/);
    expect(p.stdout).toMatch(/timeline \(measured\)/);
    expect(p.stdout).toMatch(/step: predicted [\d.]+ ms, measured [\d.]+ ms/);
    // The host's phases per rank, and how long after the host began the step its first instruction ran.
    expect(p.stdout).toMatch(/host phases of the same step \(ms\)\n +rank +issue +optimizer +wait for device +losses +to first instruction/);
    const hostRows = p.stdout.split('host phases of the same step (ms)')[1]!.split('\n').slice(2, 2 + plan.ranks.length);
    expect(hostRows).toHaveLength(plan.ranks.length);
    for (const row of hostRows) {
      const cols = row.trim().split(/ +/).map(Number);
      expect(cols).toHaveLength(6);
      expect(cols.every((x) => Number.isFinite(x) && x >= 0)).toBe(true);
    }
  }, 60_000);

  it('name what is wrong with a trace that does not fit the plan', async () => {
    const notJson = join(dir, 'bad.json');
    writeFileSync(notJson, '{ nope');
    expect(() => readMeasured(notJson, plan)).toThrow(/bad\.json: not a trace cleave run --trace wrote/);
    const predicted = join(dir, 'predicted.json');
    expect((await cliInProcess(['plan', 'print', planFile, '--trace', predicted])).code).toBe(0);
    expect(() => readMeasured(predicted, plan)).toThrow(/predicted\.json: not a measured trace \(write one with cleave run --trace\)/);
    const other = compile({ model: fixturePath('mlp'), loss: 'auto', partitions: 2, microbatches: 2, schedule: '1f1b', batch: 4 }).plan;
    const otherTrace = join(dir, 'other.json');
    const times = other.ranks.map((r) => r.instructions.map((_, i) => [i, i + 0.5] as [number, number]));
    writeFileSync(otherTrace, JSON.stringify(planTrace(measuredPlan(other, times), true)));
    expect(() => readMeasured(otherTrace, plan)).toThrow(/other\.json: measured on model 'mlp', not this plan's 'gpt'/);
    const json = JSON.parse(readFileSync(otherTrace, 'utf8')) as { metadata: { model: string } };
    json.metadata.model = 'gpt';
    writeFileSync(otherTrace, JSON.stringify(json));
    expect(() => readMeasured(otherTrace, plan)).toThrow(/other\.json: rank \d+ has \d+ timed instructions; the plan has \d+/);

  });
});
