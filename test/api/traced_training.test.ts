import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { importOnnx } from '../../compiler/onnx/import.js';
import { init } from '../../src/app/api/smp.js';
import { readPlan } from '../../src/core/plan/io.js';
import '../../src/core/ops/index.js';
import { cli, cliEach } from '../helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'cleave-traced-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const api = JSON.stringify(resolve('dist/src/app/api/index.js'));
const example = resolve('dist/examples/mnist_smp.js');
const modelFile = resolve('dist/examples/mnist_model.js');

const node = (file: string, ...args: string[]) => spawnSync(process.execPath, [file, ...args], { encoding: 'utf8', timeout: 60_000, cwd: dir });
const losses = (out: string) => [...out.matchAll(/^step (\d+) {2}loss ([\d.]+)$/gm)].map((m) => Number(m[2]));

describe('the TypeScript SMP example', () => {
  it('trains on CPU ranks with the partition blocks as written, the loss falling', () => {
    const r = node(example, 'manual', '20');
    expect(r.status, r.stderr).toBe(0);
    const l = losses(r.stdout);
    expect(l).toHaveLength(5);
    expect(l[0]).toBeGreaterThan(2);
    expect(l.at(-1)!).toBeLessThan(0.75 * l[0]!);
    expect(r.stdout).toMatch(/^stage 0 \(pipeline rank 0\): conv1, conv2, pool, dropout1$/m);
    expect(r.stdout).toMatch(/^stage 1 \(pipeline rank 1\): fc1, dropout2, fc2, loss$/m);
  }, 60_000);

  it('trains with automatic partitioning too', () => {
    const r = node(example, 'auto', '20');
    expect(r.status, r.stderr).toBe(0);
    const l = losses(r.stdout);
    expect(l.at(-1)!).toBeLessThan(0.75 * l[0]!);
    expect(r.stdout).toMatch(/^stage 1 \(pipeline rank 1\): .*fc2, loss$/m);
  }, 60_000);
});

describe('cleave compile of a model written in TypeScript', () => {
  it('traces the module, writes it as ONNX beside the plan, and the plan runs', () => {
    const plan = join(dir, 'mnist.plan');
    const c = cli(['compile', modelFile, '-m', '4', '--batch', '8', '-o', plan]);
    expect(c.code, c.stderr).toBe(0);
    expect(c.stdout).toMatch(/traced .*mnist_model\.js → .*mnist\.onnx \(2 per microbatch; the plan's weights\)/);
    const p = readPlan(plan);
    // The model file's own config: 2 partitions, manual, as its blocks say.
    const stageOf = (prefix: string) => new Set(p.nodes.filter((n) => n.name.startsWith(prefix) && n.phase === 'forward').map((n) => n.stage));
    expect([...stageOf('/conv')]).toEqual([0]);
    expect([...stageOf('/fc')]).toEqual([1]);
    const g = importOnnx(join(dir, 'mnist.onnx'), { batch: 2 });
    expect(g.nodes.find((n) => n.name === '/fc2/Gemm')?.meta.partition).toBe(1);
    expect(g.nodes.find((n) => n.name === '/conv1/Conv')?.meta.partition).toBe(0);
    const r = cli(['run', plan, '--steps', '2', '--json']);
    expect(r.code, r.stderr).toBe(0);
  }, 60_000);

  it('compiles a model written in TypeScript (transpiled as it loads, its .js imports finding .ts files)', () => {
    const layers = join(dir, 'layers.ts');
    writeFileSync(layers, `import { nn } from ${api};\nexport function mlp(width: number): nn.Sequential {\n  return new nn.Sequential(new nn.Linear(4, width), new nn.ReLU(), new nn.Linear(width, 3));\n}\n`);
    const model = join(dir, 'model.ts');
    writeFileSync(model, `import { mlp } from './layers.js';\nconst inputs: Record<string, { dtype: 'float32'; shape: (number | string)[] }> = { x: { dtype: 'float32', shape: ['N', 4] } };\nexport default { model: mlp(8), inputs, loss: { kind: 'cross-entropy' as const } };\n`);
    const r = cli(['compile', model, '-p', '1', '-m', '2', '--batch', '4', '-o', join(dir, 'ts.plan')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/traced .*model\.ts/);
  }, 60_000);

  it('says what to do with a module without a model, or blocks out of order', () => {
    const empty = join(dir, 'empty.mjs');
    writeFileSync(empty, 'export const x = 1;\n');
    const noInputs = join(dir, 'noinputs.mjs');
    writeFileSync(noInputs, `import { nn } from ${api};\nexport default { model: new nn.Linear(2, 2) };\n`);
    const broken = join(dir, 'broken.mjs');
    writeFileSync(broken, 'throw new Error("no weights here");\n');
    // One process of the built CLI for the four refusals (each its own main, in order).
    const [none, emptyOut, noInputsOut, brokenOut] = cliEach([join(dir, 'none.mjs'), empty, noInputs, broken].map((m) => ['compile', m, '-m', '2', '-o', join(dir, 'x.plan')]));
    expect(none!.stderr).toMatch(/none\.mjs: no such file/);
    expect(emptyOut!.stderr).toMatch(/empty\.mjs: the module's default export must be the model and its inputs: export default \{ model: new MyModel\(\)/);
    expect(noInputsOut!.stderr).toMatch(/noinputs\.mjs: the default export names no inputs/);
    expect(brokenOut!.stderr).toMatch(/broken\.mjs:1:7: loading the model module failed: Error: no weights here/);
    const backward = join(dir, 'backward.mjs');
    writeFileSync(backward, `import { nn } from ${api};
class Net extends nn.Module {
  constructor() { super(); nn.partition(1, () => { this.body = new nn.Linear(4, 4); }); nn.partition(0, () => { this.head = new nn.Linear(4, 2); }); }
  forward(x) { return this.head.forward(this.body.forward(x)); }
}
export default () => ({ model: new Net(), inputs: { x: { dtype: 'float32', shape: ['N', 4] } }, loss: 'mse' });
`);
    const b = cli(['compile', backward, '-p', '2', '-m', '2', '-o', join(dir, 'x.plan')]);
    expect(b.code).toBe(2);
    expect(b.stderr).toMatch(/partitions out of order: module 'head' \(partition 0\) uses what module 'body' computes on partition 1 \(node '\/body\/Gemm' → '\/head\/Gemm'\)/);
    expect(existsSync(join(dir, 'x.plan'))).toBe(false);
  }, 60_000);
});

describe('DistributedModel of a traced module', () => {
  it('needs init to choose between a plan and a config', async () => {
    await expect(init({})).rejects.toThrow(/smp\.init\(\) takes either \{ plan \} \(a compiled plan\) or \{ config \}/);
    await expect(init({ plan: 'a.plan', config: {} })).rejects.toThrow(/takes either/);
    await expect(init({ config: { partitions: 2, bogus: 1 } as object })).rejects.toThrow(/init config: unknown parameter 'bogus'/);
  });

  it('exports what it traced, and checks its use and that every rank traced the same model', () => {
    writeFileSync(join(dir, 'smp.json'), JSON.stringify({ partitions: 2, microbatches: 2, auto_partition: false }));
    const script = join(dir, 'errors.mjs');
    writeFileSync(script, `import * as smp from ${api};
const { nn } = smp;
class Net extends nn.Module {
  constructor() { super(); nn.partition(0, () => { this.a = new nn.Linear(4, 8); }); nn.partition(1, () => { this.b = new nn.Linear(8, 3); }); }
  forward(x) { return nn.partition(1, () => this.b.forward(nn.partition(0, () => this.a.forward(x).relu()))); }
}
await smp.init({ config: ${JSON.stringify(join(dir, 'smp.json'))} });
const tried = (f) => { try { f(); return 'ok'; } catch (e) { return e.message; } };
const out = { rank: smp.rank(), pp: smp.ppRank(), dp: smp.dpRank(), size: smp.size() };
out.noModel = tried(() => new smp.DistributedModel());
out.world = tried(() => new smp.DistributedModel(new Net(), { partitions: 3 }));
const model = new smp.DistributedModel(new Net(), { seed: process.argv[2] === 'differ' ? smp.rank() : 7 });
out.second = tried(() => new smp.DistributedModel(new Net()));
out.batchSize = tried(() => model.batchSize);
out.early = tried(() => model.toOnnx('x.onnx'));
const opt = new smp.DistributedOptimizer(model, { kind: 'sgd', lr: 0.1 });
out.optFirst = await opt.step().then(() => 'ok', (e) => e.message);
const x = smp.tensor('float32', [4, 4], Array.from({ length: 16 }, (_, i) => Math.sin(i)));
const labels = smp.tensor('int64', [4], [0, 1, 2, 1]);
try {
  const l1 = (await model.step({ x, labels })).reduceMean();
  await opt.step();
  const l2 = (await model.step({ x, labels })).reduceMean();
  out.fell = l2 < l1;
  out.batch = model.batchSize;
  if (smp.rank() === 0) model.toOnnx('traced.onnx');
} catch (e) { out.step = e.message; }
console.log(JSON.stringify(out));
`);
    const r = node(script);
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l)).sort((a, b) => a.rank - b.rank);
    expect(lines.map((l) => [l.rank, l.pp, l.dp, l.size])).toEqual([[0, 0, 0, 2], [1, 1, 0, 2]]);
    const l = lines[0];
    expect(l.noModel).toMatch(/new DistributedModel\(\) takes its model from a plan; init\(\{ config \}\) was given none/);
    expect(l.world).toMatch(/DistributedModel config asks for 3 partitions × 1 replicas = 3 ranks; init started 2 \(2 × 1\)/);
    expect(l.second).toMatch(/one DistributedModel per script/);
    expect(l.batchSize).toMatch(/the model is traced and compiled on its first step: call step\(batch\) first/);
    expect(l.early).toMatch(/toOnnx: the model is traced on its first step: call step\(batch\) first/);
    expect(l.optFirst).toMatch(/optimizer\.step\(\) before the model's first step/);
    expect(lines.every((x) => x.fell === true && x.batch === 4)).toBe(true);
    const g = importOnnx(join(dir, 'traced.onnx'));
    expect(g.nodes.map((n) => [n.name, n.meta.partition])).toEqual([['/a/Gemm', 0], ['/Relu', 0], ['/b/Gemm', 1]]);
    expect(g.params().map((p) => p.name)).toEqual(['a.weight', 'a.bias', 'b.weight', 'b.bias']);

    const withPlan = join(dir, 'with_plan.mjs');
    writeFileSync(withPlan, `import * as smp from ${api};
await smp.init({ plan: ${JSON.stringify(join(dir, 'mnist.plan'))} });
try { new smp.DistributedModel(new smp.nn.Linear(2, 2)); } catch (e) { if (smp.rank() === 0) console.log(e.message); }
`);
    expect(node(withPlan).stdout).toMatch(/^init\(\{ plan \}\) was given a compiled plan, which holds the model: construct DistributedModel\(\) without one, or init\(\{ config \}\) to trace this one$/m);

    const differ = node(script, 'differ');
    expect(differ.status, differ.stderr).toBe(0);
    expect(differ.stdout.trim().split('\n').map((s) => JSON.parse(s).step)).toEqual([
      expect.stringMatching(/rank \d: the ranks traced different models: their plans or starting weights differ/),
      expect.stringMatching(/rank \d: the ranks traced different models/),
    ]);
  }, 60_000);
});
