import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compile } from '../../compiler/compile.js';
import { writePlan } from '../../src/core/plan/io.js';
import { type TraceDevice, deviceNote, deviceProfileName, measuredTrace, readMeasured } from '../../src/core/plan/measured.js';
import type { Plan } from '../../src/core/plan/types.js';
import '../../src/core/ops/index.js';
import { PROFILE_NAMES as names } from '../../compiler/cost/profiles.js';
import { cli, cliInProcess } from '../helpers/cli.js';
import { fixturePath } from '../helpers/fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'cleave-measured-device-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const compiled = (device: string): { plan: Plan; file: string } => {
  const plan = compile({ model: fixturePath('gpt'), loss: 'auto', partitions: 2, microbatches: 4, schedule: '1f1b', device }).plan;
  const file = join(dir, `${device}.plan`);
  writePlan(file, plan);
  return { plan, file };
};
const h100 = compiled('h100');
const cpu = compiled('cpu');

let n = 0;
/** A trace as cleave run writes one, where it ran recorded (or not, as older traces). */
function trace(plan: Plan, ranOn?: TraceDevice): string {
  const times = plan.ranks.map((r) => r.instructions.map((i) => [5 + 3 * i.startMs, 5 + 3 * i.endMs] as [number, number]));
  const file = join(dir, `trace${n++}.json`);
  writeFileSync(file, JSON.stringify(measuredTrace(plan, times, [], ranOn)));
  return file;
}
const printed = async (plan: string, t: string, ...args: string[]) => {
  const r = await cliInProcess(['plan', 'print', plan, '--measured', t, ...args]);
  expect(r.code, r.stderr).toBe(0);
  return r.stdout;
};
/** The note, its wrapped lines joined. */
const noteOf = (out: string): string | undefined => {
  const m = /^note: [^]*?(?=\n\n)/m.exec(out);
  return m?.[0].replace(/\n +/g, ' ');
};

describe('the device a measured trace ran on', () => {
  it('maps device names to cost profiles, and says where there is none', () => {
    expect(deviceProfileName('NVIDIA H100 80GB HBM3', names)).toBe('h100');
    expect(deviceProfileName('NVIDIA H100 PCIe', names)).toBe('h100');
    expect(deviceProfileName('NVIDIA H100 NVL', names)).toBe('h100');
    expect(deviceProfileName('NVIDIA H200', names)).toBe('h200');
    expect(deviceProfileName('NVIDIA H200 NVL', names)).toBe('h200');
    expect(deviceProfileName('NVIDIA A100-SXM4-80GB', names)).toBe('a100');
    expect(deviceProfileName('NVIDIA A100 80GB PCIe', names)).toBe('a100');
    expect(deviceProfileName('cpu', names)).toBe('cpu');
    expect(deviceProfileName('H100', names)).toBe('h100');
    for (const unknown of ['NVIDIA L4', 'Tesla V100-SXM2-16GB', 'NVIDIA GH200 480GB', 'NVIDIA H800', 'NVIDIA H100 H200', '', '  ']) expect(deviceProfileName(unknown, names), unknown).toBeUndefined();
  });

  it('is written into the trace and read back', () => {
    const t = trace(h100.plan, { backend: 'cuda', device: 'NVIDIA H200' });
    const meta = (JSON.parse(readFileSync(t, 'utf8')) as { metadata: Record<string, unknown> }).metadata;
    expect(meta).toMatchObject({ measured: true, model: 'gpt', backend: 'cuda', device: 'NVIDIA H200' });
    expect(readMeasured(t, h100.plan).ranOn).toEqual({ backend: 'cuda', device: 'NVIDIA H200' });
    const old = trace(h100.plan);
    expect((JSON.parse(readFileSync(old, 'utf8')) as { metadata: Record<string, unknown> }).metadata).not.toHaveProperty('device');
    expect(readMeasured(old, h100.plan).ranOn).toBeUndefined();
    // Called as the runtime does today (three arguments), the trace is as before.
    expect(readMeasured(old, h100.plan).ranks.map((r) => r.instructions.length)).toEqual(h100.plan.ranks.map((r) => r.instructions.length));
  });

  it('refuses a trace whose device field is not one', () => {
    const t = trace(h100.plan);
    const json = JSON.parse(readFileSync(t, 'utf8')) as { metadata: Record<string, unknown> };
    json.metadata.device = 42;
    writeFileSync(t, JSON.stringify(json));
    expect(() => readMeasured(t, h100.plan)).toThrow(/trace\d+\.json: the trace's device \(\{"device":42\}\) is not a backend cpu or cuda with a device name/);
    json.metadata.device = 'cpu';
    json.metadata.backend = 'tpu';
    writeFileSync(t, JSON.stringify(json));
    expect(() => readMeasured(t, h100.plan)).toThrow(/is not a backend cpu or cuda/);
  });

  it('prints a note when the plan was costed for another device than the trace ran on', async () => {
    const out = await printed(h100.file, trace(h100.plan, { backend: 'cpu', device: 'cpu' }));
    expect(noteOf(out)).toBe("note: the plan was costed for h100; this trace ran on cpu (CPU ranks): its predictions are h100's — compile with --device cpu to compare like with like");
    // It comes with the comparison, before the table.
    expect(out.indexOf('note: ')).toBeGreaterThan(out.indexOf('predicted and measured (one step)'));
    expect(out.indexOf('note: ')).toBeLessThan(out.indexOf('rank  predicted ms'));
    const a100 = noteOf(await printed(h100.file, trace(h100.plan, { backend: 'cuda', device: 'NVIDIA A100-SXM4-80GB' })));
    expect(a100).toBe("note: the plan was costed for h100; this trace ran on NVIDIA A100-SXM4-80GB (a100): its predictions are h100's — compile with --device a100 to compare like with like");
    const cpuPlanOnGpu = noteOf(await printed(cpu.file, trace(cpu.plan, { backend: 'cuda', device: 'NVIDIA H100 80GB HBM3' })));
    expect(cpuPlanOnGpu).toMatch(/costed for cpu; this trace ran on NVIDIA H100 80GB HBM3 \(h100\): .* compile with --device h100 /);
  });

  it('says plainly when the device has no cost profile', async () => {
    const note = noteOf(await printed(h100.file, trace(h100.plan, { backend: 'cuda', device: 'NVIDIA L4' })));
    expect(note).toBe("note: the plan was costed for h100; this trace ran on NVIDIA L4, a device cleave has no cost profile for (it has h100, h200, a100, cpu): its predictions are h100's, not this device's — to predict for it, measure its op times with cleave profile and compile with --profile");
    expect(deviceNote(h100.plan, { backend: 'cuda', device: 'NVIDIA GH200 480GB' }, names)).toMatch(/no cost profile/);
  });

  it('prints no note where the devices match or the trace does not say', async () => {
    for (const [plan, ranOn] of [[cpu, { backend: 'cpu', device: 'cpu' }], [h100, { backend: 'cuda', device: 'NVIDIA H100 80GB HBM3' }], [h100, undefined]] as const) {
      const out = await printed(plan.file, trace(plan.plan, ranOn));
      expect(out).toMatch(/predicted and measured \(one step\)\n +rank +predicted ms +measured ms/);
      expect(out).not.toMatch(/note:|costed for|ran on/);
    }
    expect(deviceNote(h100.plan, undefined, names)).toBeUndefined();
  });

  it('prints nothing wrong for a trace cleave run wrote before traces recorded the device', async () => {
    const t = join(dir, 'run.json');
    const r = cli(['run', cpu.file, '--steps', '2', '--trace', t]);
    expect(r.code, r.stderr).toBe(0);
    for (const plan of [cpu, h100]) {
      const out = await printed(plan.file, t);
      expect(out).toMatch(/timeline \(measured\)/);
      expect(out).toMatch(/step: predicted [\d.]+ ms, measured [\d.]+ ms/);
      // Whether or not the runtime records where it ran, what it prints is true: no note unless it does.
      const meta = (JSON.parse(readFileSync(t, 'utf8')) as { metadata: { device?: string } }).metadata;
      if (meta.device === undefined) expect(out).not.toContain('note:');
      else if (plan === cpu) expect(out).not.toContain('note:');
      else expect(noteOf(out)).toMatch(/costed for h100; this trace ran on cpu/);
    }
  }, 60_000);

  it('wraps the note to the width', async () => {
    const out = await printed(h100.file, trace(h100.plan, { backend: 'cuda', device: 'NVIDIA L4' }), '--width', '40');
    expect(Math.max(...out.split('\n').map((l) => [...l].length))).toBeLessThanOrEqual(40);
    expect(noteOf(out)).toMatch(/^note: the plan was costed for h100; this trace ran on NVIDIA L4/);
  });
});
