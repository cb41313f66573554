import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compile } from '../../compiler/compile.js';
import { writePlan } from '../../src/core/plan/io.js';
import '../../src/core/ops/index.js';

const dir = mkdtempSync(join(tmpdir(), 'cleave-smp-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const plan = join(dir, 'gpt.plan');
writePlan(plan, compile({ model: 'fixtures/gpt.onnx', loss: 'auto', partitions: 2, microbatches: 2, schedule: '1f1b', dp: 2, batch: 4 }).plan);
const api = resolve('dist/src/app/api/index.js');

const node = (file: string, ...args: string[]) => spawnSync(process.execPath, [file, ...args], { encoding: 'utf8', timeout: 60_000 });

describe('the SMP-style API', () => {
  it('runs the example training script on every rank, printing on rank 0', () => {
    const r = node('examples/smp_train.mjs', plan, '10');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^step 1  loss 4\.\d+  grad norm [\d.]+  \(rank 0 of 4: pp 0\/2, dp 0\/2\)$/m);
    expect(r.stdout).toMatch(/^step 10  loss [\d.]+/m);
    expect(r.stdout.match(/rank \d of 4/g)!.every((x) => x === 'rank 0 of 4')).toBe(true);
  }, 60_000);

  it('gives every rank the same step outputs and ranks', () => {
    const script = join(dir, 'ranks.mjs');
    writeFileSync(script, `import * as smp from ${JSON.stringify(api)};
await smp.init({ plan: ${JSON.stringify(plan)} });
const model = new smp.DistributedModel();
const opt = new smp.DistributedOptimizer(model, { kind: 'sgd', lr: 0.1 });
const out = await model.step(model.defaultData().next(model.batchSize));
await opt.step();
console.log(JSON.stringify({ rank: smp.rank(), size: smp.size(), pp: smp.ppRank(), mp: smp.mpRank(), dp: smp.dpRank(), ppSize: smp.ppSize(), dpSize: smp.dpSize(), local: smp.localRank(),
  mean: out.reduceMean(), sum: out.reduceSum(), n: out.concat().length, stack: out.stack().length }));
`);
    const r = node(script);
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l)).sort((a, b) => a.rank - b.rank);
    expect(lines.map((l) => [l.rank, l.pp, l.mp, l.dp, l.local])).toEqual([[0, 0, 0, 0, 0], [1, 1, 1, 0, 1], [2, 0, 0, 1, 2], [3, 1, 1, 1, 3]]);
    // A replica's pipeline shares its losses; the two replicas saw different data.
    expect(lines[0].mean).toBe(lines[1].mean);
    expect(lines[2].mean).toBe(lines[3].mean);
    expect(lines[0].mean).not.toBe(lines[2].mean);
    expect(lines[0].sum).toBeCloseTo(2 * lines[0].mean, 12);
    expect(lines.every((l) => l.size === 4 && l.ppSize === 2 && l.dpSize === 2 && l.n === 2 && l.stack === 2)).toBe(true);
  }, 60_000);

  it('drops a remainder with a warning, or rejects it with strictBatches, and a failing rank stops all', () => {
    const script = join(dir, 'batches.mjs');
    writeFileSync(script, `import * as smp from ${JSON.stringify(api)};
const strict = process.argv[2] === 'strict';
await smp.init({ plan: ${JSON.stringify(plan)}, strictBatches: strict });
const model = new smp.DistributedModel();
const data = model.defaultData();
const out = await model.step(data.next(model.batchSize + 1));
if (smp.rank() === 0) console.log('loss', out.reduceMean().toFixed(4));
`);
    const lenient = node(script);
    expect(lenient.status, lenient.stderr).toBe(0);
    expect(lenient.stderr).toMatch(/warning: batch of 5 samples: dropping the last 1 \(the plan takes 4; strictBatches rejects instead\)/);
    expect(lenient.stdout).toMatch(/loss \d\.\d{4}/);
    const strict = node(script, 'strict');
    expect(strict.status).toBe(1);
    expect(strict.stderr).toMatch(/rank \d failed: the batch has 5 samples; the plan takes 2 microbatches of 2 \(4\)/);
  }, 60_000);
});
