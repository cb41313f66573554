// "A CLI that never silently does the wrong thing": cleave run trains with what the plan says,
// plans find their model from anywhere, partition shows what compile builds, every flag and output
// path is checked before any work with the rule named (exit 2), --json everywhere, and runs say
// when the plan was costed for another device. Spawns (`cli`) are kept for what needs the built
// CLI end to end (runs, moved folders, demo); checks that end before any rank starts run `main` in
// process (`cliInProcess`), the same code without a process start.
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { exportCheckpoint } from '../../src/app/cli/export.js';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile, partitionModel } from '../../compiler/compile.js';
import type { ScheduleName } from '../../compiler/cost/memory.js';
import { writeNpy } from '../../runtime/data/npy.js';
import { type CompileFlags, compileOptions } from '../../src/app/cli/compile_flags.js';
import { optimizerForRun, optimizerFromFlags } from '../../src/app/cli/optimizer_flags.js';
import { checkOutputDir, checkOutputFile } from '../../src/app/cli/paths.js';
import { tensor } from '../../src/core/ir/tensor.js';
import '../../src/core/ops/index.js';
import { planModelPath, readPlan } from '../../src/core/plan/io.js';
import { planOptimizer } from '../../src/core/plan/optimizer.js';
import type { Plan } from '../../src/core/plan/types.js';
import { type CliResult, cli, cliInProcess } from '../helpers/cli.js';
import { fixturePath } from '../helpers/fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'cleave-trust-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const MLP = fixturePath('mlp'), GPT = fixturePath('gpt');
const missing = join(dir, 'no-such-folder');
const aFile = join(dir, 'a-file');

/** Plans of the 1,732-parameter MLP (two CPU ranks run two steps in about 0.5 s), compiled once. */
const sgdPlan = join(dir, 'sgd.plan'), adamwPlan = join(dir, 'adamw.plan'), bf16Plan = join(dir, 'bf16.plan');
const MLP_FLAGS = [MLP, '-p', '2', '-m', '2', '--batch', '4'];
let sgdCompile: CliResult;

/** The losses a text-mode run prints on its progress lines, as printed (4 decimals). */
const printedLosses = (out: string): string[] => [...out.matchAll(/^step +\d+\/\d+ +loss ([\d.]+)/gm)].map((m) => m[1]!);
const jsonLines = (out: string): Record<string, any>[] => out.trim().split('\n').map((l) => JSON.parse(l));
/** A refusal: exit 2, nothing on stdout, one line on stderr naming what is wrong. */
function expectRefused(r: CliResult, message: RegExp): void {
  expect(r.code, r.stderr).toBe(2);
  expect(r.stdout).toBe('');
  expect(r.stderr).toMatch(/^cleave: [^\n]+\n$/);
  expect(r.stderr).toMatch(message);
}

beforeAll(async () => {
  writeFileSync(aFile, 'not a folder');
  sgdCompile = await cliInProcess(['compile', ...MLP_FLAGS, '--optimizer', 'sgd', '--lr', '0.5', '-o', sgdPlan, '--json']);
  expect(sgdCompile.code, sgdCompile.stderr).toBe(0);
  for (const [file, extra] of [[adamwPlan, []], [bf16Plan, ['--dtype', 'bf16', '--device', 'cpu']]] as const) {
    const r = await cliInProcess(['compile', ...MLP_FLAGS, ...extra, '-o', file]);
    expect(r.code, r.stderr).toBe(0);
  }
});

describe('cleave run trains with what the plan says', () => {
  let asPlanned: CliResult, explicit: CliResult, adamw: CliResult;
  beforeAll(() => {
    asPlanned = cli(['run', sgdPlan, '--steps', '2', '--save-every', '2', '--checkpoint-dir', join(dir, 'ck')]);
    explicit = cli(['run', adamwPlan, '--steps', '2', '--optimizer', 'sgd', '--lr', '0.5']);
    adamw = cli(['run', adamwPlan, '--steps', '2', '--json']);
  });

  it('runs an SGD plan with SGD at the plan\'s lr: the losses of explicit SGD flags, not an AdamW plan\'s', () => {
    for (const r of [asPlanned, explicit, adamw]) expect(r.code, r.stderr).toBe(0);
    const sgd = printedLosses(asPlanned.stdout);
    expect(sgd).toHaveLength(2);
    // lr 0.5 moves the loss well past the printed precision, so equal printed losses mean equal runs.
    expect(Math.abs(Number(sgd[1]) - Number(sgd[0]))).toBeGreaterThan(1e-3);
    expect(printedLosses(explicit.stdout)).toEqual(sgd);
    const adamwLosses = jsonLines(adamw.stdout).filter((l) => 'step' in l).map((l) => (l['loss'] as number).toFixed(4));
    expect(adamwLosses[0]).toBe(sgd[0]); // the same weights and data before the first update
    expect(adamwLosses[1]).not.toBe(sgd[1]);
  });

  it('names backend, optimizer, lr and precision "as the plan says"; a flag that differs is applied and said', () => {
    expect(asPlanned.stdout).toMatch(/^running .*sgd\.plan: 2 ranks \(2 pipeline × 1 data parallel\), 1f1b, 2 microbatches of 2, cpu backend$/m);
    expect(asPlanned.stdout).toMatch(/^training: sgd \(lr 0\.5\) as the plan says; float32$/m);
    expect(asPlanned.stdout).not.toMatch(/applied/);
    expect(explicit.stdout).toMatch(/^training: sgd \(lr 0\.5\); float32$/m);
    expect(explicit.stdout).toMatch(/^ {2}--optimizer sgd \(the plan has adamw\): applied$/m);
    expect(explicit.stdout).toMatch(/^ {2}--lr 0\.5 \(the plan has 0\.003\): applied$/m);
    const start = jsonLines(adamw.stdout)[0]!['start'];
    expect(start.optimizer).toMatchObject({ kind: 'adamw', lr: 0.003, beta1: 0.9, beta2: 0.999 });
    expect(start.overrides).toEqual([]);
    expect(start.backend).toBe('cpu');
    expect(start.precision).toBe('float32');
  });

  it('applies and lists each flag that differs from the plan, and nothing for a flag that agrees', () => {
    const plan = planOptimizer('adamw', { lr: 0.003, weightDecay: 0.01 });
    expect(optimizerForRun(plan, 'adamw', { lr: '0.003', weightDecay: '0.01' }).changes).toEqual([]);
    const r = optimizerForRun(plan, 'adamw', { lr: '0.01', weightDecay: '0', clip: '1', beta2: '0.95' });
    expect(r.config).toMatchObject({ kind: 'adamw', lr: 0.01, weightDecay: 0, clip: 1, beta1: 0.9, beta2: 0.95 });
    expect(r.changes).toEqual(['--lr 0.01 (the plan has 0.003)', '--weight-decay 0 (the plan has 0.01)', '--beta2 0.95 (the plan has 0.999)', '--clip 1 (the plan has none)']);
    // Less state than the plan holds is fine: SGD (with or without momentum) on an AdamW plan.
    expect(optimizerForRun(plan, 'adamw', { optimizer: 'sgd-momentum' }).config).toMatchObject({ kind: 'sgd', momentum: 0.9, lr: 0.003, weightDecay: 0.01 });
    expect(optimizerForRun(planOptimizer('sgd-momentum'), 'sgd-momentum', { momentum: '0' }).config.momentum).toBe(0);
  });

  it('takes --optimizer as the family compile takes, keeping the plan\'s hyperparameters that apply to it', () => {
    // adam ↔ adamw keep the plan's betas and ε (they were reset to the defaults, unsaid).
    const tuned = planOptimizer('adamw', { lr: 0.01, beta2: 0.95, eps: 1e-6, weightDecay: 0.1, clip: 1 });
    expect(optimizerForRun(tuned, 'adamw', { optimizer: 'adam' })).toEqual({
      config: { ...tuned, kind: 'adam' }, changes: ['--optimizer adam (the plan has adamw)'],
    });
    // sgd has no momentum, as in compile (an sgd-momentum plan's momentum was kept, unsaid).
    const momentum = planOptimizer('sgd-momentum', { momentum: 0.8 });
    expect(optimizerForRun(momentum, 'sgd-momentum', { optimizer: 'sgd' })).toEqual({
      config: { ...momentum, momentum: 0 }, changes: ['--optimizer sgd (the plan has sgd-momentum)'],
    });
    // What ends as the plan has it is no change.
    expect(optimizerForRun(momentum, 'sgd-momentum', { optimizer: 'sgd', momentum: '0.8' })).toEqual({ config: momentum, changes: [] });
    expect(optimizerForRun(momentum, 'sgd-momentum', { optimizer: 'sgd-momentum' })).toEqual({ config: momentum, changes: [] });
    expect(optimizerForRun(momentum, 'sgd-momentum', { optimizer: 'sgd', momentum: '0.5' }).changes).toEqual(['--momentum 0.5 (the plan has 0.8)']);
    expect(optimizerForRun(tuned, 'adamw', { optimizer: 'sgd', momentum: '0.5' }).changes).toEqual(['--optimizer sgd (the plan has adamw)', '--momentum 0.5 (the plan has 0)']);
  });

  it('refuses a flag that cannot apply, and an optimizer whose state the plan has no room for', async () => {
    const adamw = planOptimizer('adamw'), sgd = planOptimizer('sgd'), momentum = planOptimizer('sgd-momentum');
    expect(() => optimizerForRun(adamw, 'adamw', { momentum: '0.9' })).toThrow(/^--momentum applies to sgd; the optimizer is adamw \(from the plan\)$/);
    expect(() => optimizerForRun(sgd, 'sgd', { beta1: '0.8' })).toThrow(/^--beta1 applies to adam and adamw; the optimizer is sgd \(from the plan\)$/);
    expect(() => optimizerForRun(adamw, 'adamw', { optimizer: 'sgd', eps: '1e-6' })).toThrow(/^--eps applies to adam and adamw; the optimizer is sgd$/);
    expect(() => optimizerForRun(sgd, 'sgd', { optimizer: 'adam' })).toThrow(/--optimizer adam: the plan was compiled for sgd, whose memory plan holds no room for adam's state; compile the plan with --optimizer adam/);
    expect(() => optimizerForRun(momentum, 'sgd-momentum', { optimizer: 'adamw' })).toThrow(/compiled for sgd-momentum, whose memory plan holds no room for adamw's state/);
    expect(() => optimizerForRun(sgd, 'sgd', { optimizer: 'sgd-momentum' })).toThrow(/compiled for sgd, whose memory plan holds no room for sgd-momentum's state/);
    expect(() => optimizerForRun(sgd, 'sgd', { momentum: '0.9' })).toThrow(/--momentum 0\.9: the plan was compiled for sgd, whose memory plan holds no momentum buffer; compile the plan with --optimizer sgd-momentum/);
    // From the command line: refused before any rank starts.
    expectRefused(await cliInProcess(['run', sgdPlan, '--optimizer', 'adam']), /--optimizer adam: the plan was compiled for sgd/);
    expectRefused(await cliInProcess(['run', adamwPlan, '--momentum', '0.9']), /--momentum applies to sgd; the optimizer is adamw \(from the plan\)/);
  });

  it('says that a bf16 plan computes float32 on the CPU backend', () => {
    const r = cli(['run', bf16Plan, '--steps', '1']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^training: adamw \(lr 0\.003, β 0\.9\/0\.999, ε 1e-8\) as the plan says; float32 \(the plan's bf16 mixed precision applies on --backend cuda; the CPU backend computes in float32\)$/m);
    // Compiled with --device cpu: no note about another device.
    expect(r.stdout).not.toMatch(/note:|costed for/);
  });

  it('on the CPU backend, says when the plan was costed for h100 and names --device cpu', () => {
    expect(asPlanned.stdout).toMatch(/^note: the plan was costed for h100; this run is on cpu \(CPU ranks\): its predictions are h100's — compile with --device cpu to compare like with like$/m);
    expect(jsonLines(adamw.stdout)[0]!['start'].note).toMatch(/costed for h100; this run is on cpu .* --device cpu/);
  });
});

describe('plans find their model', () => {
  it('relative to the plan when plan and model move together, run from another folder', () => {
    const a = join(dir, 'proj-a'), b = join(dir, 'proj-b');
    mkdirSync(a);
    copyFileSync(MLP, join(a, 'model.onnx'));
    const c = cli(['compile', 'model.onnx', '-p', '1', '-m', '1', '-o', 'p.plan'], a);
    expect(c.code, c.stderr).toBe(0);
    const plan = readPlan(join(a, 'p.plan'));
    expect(plan.model.source).toBe(join(resolve(a), 'model.onnx'));
    expect(plan.model.sourceFromPlan).toBe('model.onnx');
    renameSync(a, b);
    const r = cli(['run', join('proj-b', 'p.plan'), '--steps', '1', '--json', '--save-every', '1', '--checkpoint-dir', 'ck-moved'], dir);
    expect(r.code, r.stderr).toBe(0);
    const lines = jsonLines(r.stdout);
    expect(lines[0]!['start'].weights).toBe(join(resolve(b), 'model.onnx'));
    expect(lines.at(-1)!['summary'].steps).toBe(1);
    // The checkpoint names the model the run found, so it exports after the move too.
    expect(JSON.parse(readFileSync(join(dir, 'ck-moved', 'step-1', 'manifest.json'), 'utf8')).model).toBe(join(resolve(b), 'model.onnx'));
    expect(exportCheckpoint(join(dir, 'ck-moved'), join(dir, 'moved.onnx')).step).toBe(1);
  });

  it('by absolute path when the plan moves alone; a missing model names --weights', async () => {
    const alone = join(dir, 'alone');
    mkdirSync(alone);
    copyFileSync(sgdPlan, join(alone, 'sgd.plan'));
    expect(planModelPath(readPlan(join(alone, 'sgd.plan')), join(alone, 'sgd.plan'))).toBe(resolve(MLP));
    // proj-b's plan without its model: neither beside it nor at proj-a any more.
    copyFileSync(join(dir, 'proj-b', 'p.plan'), join(alone, 'p.plan'));
    const r = await cliInProcess(['run', join(alone, 'p.plan'), '--steps', '1']);
    expectRefused(r, /p\.plan: its model .*proj-a\/model\.onnx is not there any more \(looked at .*alone\/model\.onnx and .*proj-a\/model\.onnx\); give the model with --weights MODEL\.onnx/);
  });
});

describe('cleave partition shows the stages cleave compile builds', () => {
  const stageNames = (plan: Plan) => plan.stages.map((s) => s.forward.map((k) => plan.nodes[k]!.name));

  it('from the CLI: same boundaries, memory, and --batch as samples per step per replica', async () => {
    const p = await cliInProcess(['partition', GPT, '-p', '2', '-m', '4', '--batch', '8', '--json']);
    expect(p.code, p.stderr).toBe(0);
    const part = JSON.parse(p.stdout);
    const planFile = join(dir, 'gpt.plan');
    expect((await cliInProcess(['compile', GPT, '-p', '2', '-m', '4', '--batch', '8', '-o', planFile])).code).toBe(0);
    const plan = readPlan(planFile);
    const names = stageNames(plan);
    expect(part.stages.map((s: any) => [s.nodes, s.first, s.last])).toEqual(names.map((n) => [n.length, n[0], n.at(-1)]));
    for (const s of part.stages) {
      expect(s.memoryBytes.total).toBeGreaterThan(0);
      expect(s.memoryBytes.activations).toBeGreaterThan(0);
    }
    expect([part.microbatches, part.microbatchSize]).toEqual([4, 2]);
    expect(plan.model.microbatchSize).toBe(2);
    const text = await cliInProcess(['partition', GPT, '-p', '2', '-m', '4', '--batch', '8']);
    expect(text.stdout).toMatch(/^auto partition into 2 stages on h100 \(79 GiB per stage\); 4 microbatches of 2$/m);
    const memory = [...text.stdout.matchAll(/^ +\d+ +\d+ +\d+ .*? ([\d.]+ (?:B|KiB|MiB|GiB)) +(?:\d+ \(|—)/gm)].map((m) => m[1]);
    expect(memory).toHaveLength(2);
    for (const m of memory) expect(m).not.toMatch(/^0(\.0+)? /);
  });

  it('for other schedules, weights, devices, precisions, optimizers and rules too; data parallelism keeps the microbatch', () => {
    const base: CompileFlags = { loss: 'auto', partitions: 2, microbatches: 4, batch: 8 };
    const cases: Partial<CompileFlags>[] = [
      { schedule: 'zbv', virtualStages: 2 }, { schedule: 'gpipe', memoryWeight: '0.1', device: 'cpu' },
      { dtype: 'bf16', optimizer: 'sgd' }, { assign: ['/h\\.1/=1'] }, { schedule: 'interleaved-1f1b', virtualStages: 2, partitions: 2 },
    ];
    for (const c of cases) {
      const flags = { ...base, ...c };
      const { partition, microbatch } = partitionModel({ ...compileOptions(GPT, flags, {}, 'partition'), schedule: (c.schedule ?? '1f1b') as ScheduleName });
      const { plan } = compile(compileOptions(GPT, flags));
      expect(partition.stages.map((s) => s.nodes.map((n) => n.name)), JSON.stringify(c)).toEqual(stageNames(plan));
      expect(microbatch).toBe(plan.model.microbatchSize);
    }
    const { plan } = compile(compileOptions(GPT, { ...base, dp: 2 }));
    expect([plan.world.dp, plan.model.microbatchSize]).toEqual([2, 2]);
  });
});

describe('every flag is checked, with one line naming the flag and the rule (exit 2)', () => {
  it('refuses what cannot be meant, before any work', async () => {
    const npy = join(dir, 'x.npy');
    writeNpy(npy, tensor('float32', [2, 16], new Array(32).fill(0)));
    const cases: [string[], RegExp][] = [
      [['run', adamwPlan, '--steps', '2', '--checkpoint-dir', join(dir, 'ck1')], /^cleave: --checkpoint-dir needs --save-every K: how many steps between checkpoints$/m],
      [['run', adamwPlan, '--steps', '2', '--save-every', '1'], /--save-every needs --checkpoint-dir/],
      [['run', adamwPlan, '--steps', '2', '--save-every', '3', '--checkpoint-dir', join(dir, 'ck1')], /--save-every 3 is more than --steps 2: no checkpoint would be written/],
      [['run', adamwPlan, '--momentum', '0.9'], /--momentum applies to sgd; the optimizer is adamw/],
      [['train', MLP, '--momentum', '0.9'], /--momentum applies to sgd; the optimizer is adamw$/m],
      [['compile', ...MLP_FLAGS, '--optimizer', 'adam', '--momentum', '0.9', '-o', join(dir, 'x.plan')], /--momentum applies to sgd; the optimizer is adam$/m],
      [['run', adamwPlan, '--beta1', '2'], /--beta1 must be a number in \[0, 1\), got '2'/],
      [['train', MLP, '--beta1', '2'], /--beta1 must be a number in \[0, 1\), got '2'/],
      [['compile', ...MLP_FLAGS, '--beta1', '2', '-o', join(dir, 'x.plan')], /--beta1 must be a number in \[0, 1\), got '2'/],
      [['train', MLP, '--steps', '2', '--lr', '0.01', '--schedule', 'cosine', '--min-lr', '0.1'], /--min-lr 0\.1 is above --lr 0\.01: the cosine schedule decays from --lr down to --min-lr/],
      [['train', MLP, '--steps', '2', '--min-lr', '0.0001'], /--min-lr is the floor of --schedule cosine; the constant schedule has none/],
      [['train', MLP, '--steps', '2', '--warmup', '3'], /--warmup 3 is longer than the run \(--steps 2\): the rate would never reach --lr 0\.003/],
      [['train', MLP, '--steps', '2', '--output', 'nope'], /--output: the model has no output 'nope' \(outputs: y\)/],
      [['partition', MLP, '-p', '2', '--assign', 'zzz=1'], /--assign 'zzz=1' matches no node of the model \(its node names look like '\/fc0\/Gemm'/],
      [['compile', ...MLP_FLAGS, '--assign', 'zzz=1', '-o', join(dir, 'x.plan')], /--assign 'zzz=1' matches no node of the model/],
      [['inspect', MLP, '--dim', 'seq=3'], /--dim seq: the model's inputs have no dimension named 'seq' \(named dimensions: N\)/],
      [['partition', MLP, '-p', '2', '--memory-weight', '2'], /--memory-weight must be a number in \[0, 1\], got '2'/],
      [['compile', ...MLP_FLAGS, '--memory-weight', '2', '-o', join(dir, 'x.plan')], /--memory-weight must be a number in \[0, 1\], got '2'/],
      [['compile', ...MLP_FLAGS, '--device', 'nonsense', '-o', join(dir, 'x.plan')], /--device must be one of h100, h200, a100, cpu; got 'nonsense'/],
      [['partition', MLP, '-p', '2', '--device', 'nonsense'], /--device must be one of h100, h200, a100, cpu; got 'nonsense'/],
      [['compile', ...MLP_FLAGS, '--default-partition', '1', '-o', join(dir, 'x.plan')], /--default-partition applies when auto partitioning is off: add --no-auto-partition/],
      [['compile', ...MLP_FLAGS, '--placement', 'spread', '-o', join(dir, 'x.plan')], /--placement arranges data-parallel replicas: it needs --dp 2 or more/],
      [['run', adamwPlan, '--backend', 'cuda', '--loss-scale', '1024'], /--loss-scale scales float16 gradients; .*adamw\.plan computes in fp32 \(compile with --dtype fp16 for loss scaling\)/],
      [['run', adamwPlan, '--loss-scale', '1024'], /--loss-scale needs --backend cuda \(and an fp16 plan\)/],
      [['run', adamwPlan, '--cuda-graph'], /--cuda-graph needs --backend cuda/],
      [['train', MLP, '--tokens', 'int32'], /--tokens int32 describes a \.bin token file given with --data$/m],
      [['run', adamwPlan, '--tokens', 'uint16', '--data', dir], /--tokens uint16 describes a \.bin token file given with --data; .* is not one/],
      [['forward', MLP, '--input', `nope=${npy}`], /--input nope: .*mlp\.onnx has no input 'nope' \(its inputs: x\)/],
    ];
    for (const [args, message] of cases) expectRefused(await cliInProcess(args), message);
    expect(existsSync(join(dir, 'ck1'))).toBe(false);
    expect(existsSync(join(dir, 'x.plan'))).toBe(false);
  });

  it('the flag parsers name the flag and the rule', () => {
    expect(() => optimizerFromFlags({ optimizer: 'sgd', beta2: '0.5' })).toThrow(/^--beta2 applies to adam and adamw; the optimizer is sgd$/);
    expect(() => optimizerFromFlags({ lr: '-1' })).toThrow(/^--lr must be a number > 0, got '-1'$/);
    expect(() => optimizerFromFlags({ momentum: '1', optimizer: 'sgd' })).toThrow(/^--momentum must be a number in \[0, 1\), got '1'$/);
    expect(() => optimizerFromFlags({ eps: '' })).toThrow(/^--eps must be a number > 0, got ''$/);
    expect(optimizerFromFlags({ optimizer: 'sgd-momentum', lr: '0.1' })).toMatchObject({ kind: 'sgd', momentum: 0.9, lr: 0.1 });
    const base: CompileFlags = { loss: 'auto', partitions: 2, microbatches: 2 };
    expect(() => compileOptions(MLP, { ...base, memoryWeight: '-0.1' })).toThrow(/--memory-weight must be a number in \[0, 1\], got '-0\.1'/);
    expect(() => compileOptions(MLP, { ...base, defaultPartition: '1' }, { auto_partition: true })).toThrow(/--default-partition applies when auto partitioning is off/);
    expect(compileOptions(MLP, { ...base, autoPartition: false, defaultPartition: '1' }).defaultPartition).toBe(1);
    expect(() => compileOptions(MLP, { ...base, placement: 'cluster' }, { dp: 1 })).toThrow(/--placement arranges data-parallel replicas: it needs --dp 2 or more/);
    expect(compileOptions(MLP, { ...base, placement: 'spread', dp: 2 }).placement).toBe('spread');
  });
});

describe('every output path is checked before any work starts (exit 2, naming the path, nothing written)', () => {
  it('refuses a missing folder, a folder given as a file, and a file in the way of a folder', async () => {
    const outDir = join(dir, 'out-dir');
    mkdirSync(outDir);
    const okTrace = join(dir, 'ok-trace.json');
    const npy = join(dir, 'x2.npy');
    writeNpy(npy, tensor('float32', [2, 16], new Array(32).fill(0)));
    const cases: [string[], RegExp][] = [
      [['train', MLP, '--steps', '50', '-o', join(missing, 'x.onnx')], /^cleave: -o .*no-such-folder\/x\.onnx: the folder .*no-such-folder does not exist$/m],
      [['compile', ...MLP_FLAGS, '-o', outDir], /-o .*out-dir: is a folder; give a file name in it/],
      [['compile', ...MLP_FLAGS, '-o', join(missing, 'p.plan')], /-o .*no-such-folder\/p\.plan: the folder .*no-such-folder does not exist/],
      [['plan', 'print', adamwPlan, '--trace', okTrace, '--svg', join(missing, 'x.svg')], /--svg .*no-such-folder\/x\.svg: the folder .*no-such-folder does not exist/],
      [['plan', 'print', adamwPlan, '--trace', join(missing, 't.json')], /--trace .*no-such-folder\/t\.json: the folder .*no-such-folder does not exist/],
      [['run', adamwPlan, '--steps', '2', '--trace', join(missing, 't.json'), '--save-every', '1', '--checkpoint-dir', join(dir, 'ck2')], /--trace .*no-such-folder\/t\.json: the folder .*no-such-folder does not exist/],
      [['run', adamwPlan, '--steps', '2', '--save-every', '1', '--checkpoint-dir', join(aFile, 'ck')], /--checkpoint-dir .*a-file\/ck: .*a-file is a file, not a folder/],
      [['forward', MLP, '--input', `x=${npy}`, '--out', join(aFile, 'o')], /--out .*a-file\/o: .*a-file is a file, not a folder/],
      [['export', join(dir, 'ck'), '-o', join(missing, 'm.onnx')], /-o .*no-such-folder\/m\.onnx: the folder .*no-such-folder does not exist/],
    ];
    for (const [args, message] of cases) expectRefused(await cliInProcess(args), message);
    expect(readdirSync(outDir)).toEqual([]);
    for (const f of [missing, okTrace, join(dir, 'ck2')]) expect(existsSync(f), f).toBe(false);
    expect(readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('from the built CLI, fails at once: no step trained first', () => {
    const t0 = performance.now();
    const r = cli(['train', MLP, '--steps', '1000', '-o', join(missing, 'x.onnx')]);
    expect(r.code).toBe(2);
    expect(r.stdout).not.toMatch(/step|training/);
    expect(r.stderr).toMatch(/-o .*no-such-folder\/x\.onnx: the folder .*no-such-folder does not exist/);
    expect(performance.now() - t0).toBeLessThan(5000);
  });

  it('the checks: a folder to make may be nested, but not under a file; a file must be writable where it goes', () => {
    expect(() => checkOutputDir('--checkpoint-dir', join(dir, 'new', 'deeper'))).not.toThrow();
    expect(() => checkOutputDir('--out', aFile)).toThrow(/--out .*a-file: is a file, not a folder/);
    expect(() => checkOutputFile('-o', '')).toThrow(/-o: the file name is empty/);
    expect(() => checkOutputFile('-o', join(aFile, 'x.onnx'))).toThrow(/-o .*a-file\/x\.onnx: .*a-file is not a folder/);
    expect(() => checkOutputFile('-o', join(dir, 'fine.onnx'))).not.toThrow();
  });
});

describe('--json', () => {
  it('compile prints one summary object', () => {
    const j = JSON.parse(sgdCompile.stdout);
    expect(sgdCompile.stdout.trim().split('\n')).toHaveLength(1);
    expect(j).toMatchObject({ plan: sgdPlan, parameters: 1732, world: { pp: 2, dp: 1, size: 2 }, microbatchSize: 2, dtypePolicy: 'fp32', optimizer: { kind: 'sgd', lr: 0.5, momentum: 0 } });
    expect(j.stages).toHaveLength(2);
    expect(j.prediction.stepMs).toBeGreaterThan(0);
  });

  it('run prints one object per step between its start and its summary', () => {
    const lines = jsonLines(cli(['run', sgdPlan, '--steps', '2', '--json', '--lr', '0.1']).stdout);
    expect(lines.map((l) => Object.keys(l)[0])).toEqual(['start', 'step', 'step', 'summary']);
    expect(lines[0]!['start'].overrides).toEqual(['--lr 0.1 (the plan has 0.5)']);
    expect(lines.slice(1, 3).map((l) => [l['step'], l['lr'], l['samples']])).toEqual([[1, 0.1, 4], [2, 0.1, 4]]);
    expect(lines[3]!['summary']).toMatchObject({ steps: 2, fromStep: 0, toStep: 2, firstLoss: lines[1]!['loss'], finalLoss: lines[2]!['loss'] });
  });

  it('export prints what it wrote', async () => {
    const out = join(dir, 'exported.onnx');
    const r = await cliInProcess(['export', join(dir, 'ck'), '-o', out, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({ out, checkpoint: join(dir, 'ck', 'step-2'), step: 2 });
    expect(j.tensors).toBeGreaterThan(0);
    expect(j.note).toMatch(/step-2/);
    expect(existsSync(out)).toBe(true);
  });

  it('demo prints one object of what each part found', () => {
    const r = cli(['demo', '--json', '--steps', '2']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim().split('\n')).toHaveLength(1);
    const j = JSON.parse(r.stdout);
    expect(j.inspect.parameters).toBe(28032);
    expect(j.plan).toMatchObject({ world: { pp: 2, dp: 2 }, schedule: 'zb-h1', microbatches: 4 });
    expect(j.run.steps).toBe(2);
    expect(j.export).toEqual({ sameLogits: true });
  });

  it('errors are one JSON object on stdout, exit 2, the message on stderr too', async () => {
    const spawned = cli(['run', sgdPlan, '--optimizer', 'adam', '--json']);
    for (const r of [spawned, await cliInProcess(['compile', ...MLP_FLAGS, '-o', join(missing, 'p.plan'), '--json']), await cliInProcess(['run', sgdPlan, '--bogus', '--json'])]) {
      expect(r.code).toBe(2);
      expect(r.stdout.trim().split('\n')).toHaveLength(1);
      const { error } = JSON.parse(r.stdout) as { error: { message: string; exitCode: number; internal: boolean } };
      expect(error.exitCode).toBe(2);
      expect(error.internal).toBe(false);
      expect(r.stderr).toContain(error.message);
    }
    expect(JSON.parse(spawned.stdout).error.message).toMatch(/^--optimizer adam: the plan was compiled for sgd/);
  });
});
