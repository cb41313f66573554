// `cleave profile` on a machine without a GPU, and the signatures its profiles are keyed by.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compile } from '../../compiler/compile.js';
import { costModel, opSignature, planNodeSignature } from '../../compiler/cost/model.js';
import { deviceProfile } from '../../compiler/cost/profiles.js';
import { cudaAvailable } from '../../runtime/backends/cuda/native.js';
import { attrsFromJson } from '../../src/core/plan/attrs.js';
import { writePlan } from '../../src/core/plan/io.js';
import { cli, cliInProcess } from '../helpers/cli.js';
import { fixturePath } from '../helpers/fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'cleave-profile-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('profile signatures', () => {
  it('a plan node has the signature of its training-graph node, so measured times reach the partitioner', () => {
    const { plan, training } = compile({ model: fixturePath('gpt'), loss: 'auto', partitions: 1, microbatches: 2, schedule: '1f1b', batch: 4 });
    const byName = new Map(training.graph.nodes.map((n) => [n.name, n]));
    let matched = 0;
    for (const n of plan.nodes) {
      const t = byName.get(n.name);
      if (!t) continue; // optimizer-side nodes the plan adds have no training-graph twin
      expect(planNodeSignature(plan, n, attrsFromJson(n.attrs)), n.name).toBe(opSignature(t));
      matched++;
    }
    expect(matched).toBeGreaterThan(plan.nodes.length / 2);
    // And the cost model takes a measured time under that key over its estimate.
    const mm = training.graph.nodes.find((n) => n.op === 'MatMul' || n.op === 'FusedMatMul')!;
    const measured = costModel(deviceProfile('h100'), 'fp32', { entries: { [opSignature(mm)]: 7.5 } });
    expect(measured.nodeTime(mm)).toBeCloseTo(7.5e-3, 12);
    expect(costModel(deviceProfile('h100'), 'fp32').nodeTime(mm)).not.toBeCloseTo(7.5e-3, 6);
  });
});

describe('cleave profile (errors)', () => {
  const plan = join(dir, 'gpt.plan');
  const two = join(dir, 'gpt2.plan');
  writePlan(plan, compile({ model: fixturePath('gpt'), loss: 'auto', partitions: 1, microbatches: 2, schedule: '1f1b', batch: 4 }).plan);
  writePlan(two, compile({ model: fixturePath('gpt'), loss: 'auto', partitions: 2, microbatches: 2, schedule: '1f1b', batch: 4 }).plan);

  it('needs --out', async () => {
    const r = await cliInProcess(['profile', plan]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/--out/);
  });

  it('names a missing output folder before any GPU work', async () => {
    const r = await cliInProcess(['profile', plan, '--out', join(dir, 'no', 'such', 'p.json')]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/--out .*p\.json: folder .* does not exist/);
  });

  it('refuses a folder as --out, and a negative --warmup', async () => {
    expect((await cliInProcess(['profile', plan, '--out', dir])).stderr).toMatch(/is a folder; give a file name/);
    expect((await cliInProcess(['profile', plan, '--out', join(dir, 'p.json'), '--warmup', '-1'])).stderr).toMatch(/--warmup must be a whole number ≥ 0, got '-1'/);
  });

  it.skipIf(cudaAvailable())('says a GPU is needed, and writes nothing', () => {
    const out = join(dir, 'p.json');
    const r = cli(['profile', plan, '--out', out]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/CUDA addon is not built|no CUDA device is visible/);
    expect(existsSync(out)).toBe(false);
  });

  it('refuses a plan of several ranks, naming it', async () => {
    const r = await cliInProcess(['profile', two, '--out', join(dir, 'p2.json')]);
    expect(r.stderr).toMatch(/gpt2\.plan: cleave profile measures one-rank plans .* 2 ranks/);
  });

  it('reports an unreadable plan file by name', async () => {
    const bad = join(dir, 'bad.plan');
    writeFileSync(bad, 'not a plan');
    const r = await cliInProcess(['profile', bad, '--out', join(dir, 'p3.json')]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/bad\.plan/);
    expect(existsSync(join(dir, 'p3.json'))).toBe(false);
  });
});
