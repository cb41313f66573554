// The three fuzz campaigns (models, plans, checkpoints), their oracle, the outcome table and the
// findings written to disk. Everything is drawn from one seed: case i of a campaign is the same
// mutation on every run with that seed (see prng.ts), so a finding is reproduced by its folder.
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { decodeModel } from '../../src/core/onnx/codec.js';
import { decodePlan } from '../../src/core/plan/io.js';
import type { Plan } from '../../src/core/plan/types.js';
import { type Bounds, execCli, type ExecResult, repoRoot, shellLine } from './exec.js';
import { damageCheckpoint, type CkptLayout } from './mutate_ckpt.js';
import { type BaseModel, mutateModel } from './mutate_model.js';
import { mutatePlan } from './mutate_plan.js';
import { classify, FINDING_OUTCOMES, OUTCOMES, type Outcome, type RunRecord, type Verdict } from './oracle.js';
import { WorkerPool } from './pool.js';
import { Rng } from './prng.js';

export type CampaignName = 'models' | 'plans' | 'checkpoints';
export const CAMPAIGNS: readonly CampaignName[] = ['models', 'plans', 'checkpoints'];

export interface FuzzOptions {
  seed: number;
  models: number;
  plans: number;
  checkpoints: number;
  /** Scratch folder (cases are made and removed here). */
  workDir: string;
  /** Where each finding's folder goes (its files, finding.json, repro.sh); none: findings only in the report. */
  findingsDir?: string;
  /** Share of model cases also run through the CLI as a child process (the rest run in-process only). */
  cliSample: number;
  /** Share of model cases that inspect accepts which are also compiled. */
  compileShare: number;
  /** Cases in flight at once (each runs at most one child process at a time). */
  concurrency: number;
  /** Index of the first case (to split a campaign into chunks). */
  start?: number;
  /** Fewer base plans and checkpoints (set-up time: the in-suite test). */
  quick?: boolean;
  log?: (line: string) => void;
}

/** One command run on one case, and what it meant. */
export interface CommandResult {
  args: string[];
  /** Folder the command ran in (paths in args are relative to it). */
  cwd: string;
  how: 'in-process' | 'child';
  verdict: Verdict;
  ms: number;
  peakRssMb: number;
  output: string;
}

export interface CaseResult {
  campaign: CampaignName;
  index: number;
  family: string;
  desc: string;
  outcome: Outcome;
  commands: CommandResult[];
  /** The finding's folder, where the case's files were kept. */
  kept?: string;
}

export interface FuzzReport {
  seed: number;
  cases: CaseResult[];
  counts: Record<CampaignName, Record<Outcome, number>>;
  findings: CaseResult[];
  seconds: number;
  /** Seconds each campaign took, set-up included. */
  campaignSeconds: Partial<Record<CampaignName, number>>;
  workerStarts: number;
}

const SEVERITY: readonly Outcome[] = ['ok', 'clean', 'unclean', 'internal', 'wrong', 'crash', 'oom', 'hang'];
const worst = (xs: readonly Outcome[]): Outcome => xs.reduce<Outcome>((a, b) => (SEVERITY.indexOf(b) > SEVERITY.indexOf(a) ? b : a), 'ok');

/** A child process for in-process commands, and one for the CLI: both bounded. */
const IN_PROCESS: Bounds = { timeoutMs: 15_000, maxRssMb: 1536, heapMb: 1024 };
const CHILD: Bounds = { timeoutMs: 20_000, maxRssMb: 1536, heapMb: 1024 };
const RUN: Bounds = { timeoutMs: 30_000, maxRssMb: 2048, heapMb: 1024 };

const outputOf = (r: RunRecord): string => {
  const cut = (s: string, n: number): string => (s.length > n ? `${s.slice(0, n)}…` : s);
  return [r.stdout.trim() && `stdout: ${cut(r.stdout.trim(), 1500)}`, r.stderr.trim() && `stderr: ${cut(r.stderr.trim(), 3000)}`, r.threw && `threw: ${cut(r.threw, 2000)}`].filter(Boolean).join('\n');
};

/** Runs at most `n` tasks at once. */
async function parallel<T>(n: number, items: readonly T[], f: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.max(1, n) }, async () => {
    while (next < items.length) await f(items[next++]!);
  }));
}

/** Serializes the in-process worker's commands (it runs one at a time; timeouts start at send). */
class Mutex {
  private tail: Promise<void> = Promise.resolve();
  async run<T>(f: () => Promise<T>): Promise<T> {
    const prev = this.tail;
    let release!: () => void;
    this.tail = new Promise((r) => (release = r));
    await prev;
    try { return await f(); } finally { release(); }
  }
}

/** What a run reported under --json: each step's loss (and per-microbatch losses), whether it summarized, where it started. */
export interface Losses { steps: { step: number; loss: number; losses: unknown }[]; summary: boolean; fromStep: number | undefined }

export class Fuzzer {
  private readonly pool = new WorkerPool(IN_PROCESS);
  private readonly poolLock = new Mutex();
  private readonly root = repoRoot();
  readonly cases: CaseResult[] = [];
  readonly campaignSeconds: Partial<Record<CampaignName, number>> = {};

  constructor(private readonly o: FuzzOptions) {}

  private log(s: string): void { this.o.log?.(s); }

  private async inProcess(args: string[], cwd: string, check?: (r: RunRecord) => string | undefined, bounds = IN_PROCESS): Promise<CommandResult> {
    const r = await this.poolLock.run(() => this.pool.run(args, bounds.timeoutMs, cwd));
    return { args, cwd, how: 'in-process', verdict: classify(r, check && (() => check(r))), ms: r.ms, peakRssMb: r.peakRssMb, output: outputOf(r) };
  }

  private async child(args: string[], cwd: string, check?: (r: ExecResult) => string | undefined, bounds = CHILD): Promise<CommandResult> {
    const r = await execCli(args, bounds, cwd);
    return { args, cwd, how: 'child', verdict: classify(r, check && (() => check(r))), ms: r.ms, peakRssMb: r.peakRssMb, output: outputOf(r) };
  }

  /** An in-process finding is run again through the CLI: what a user would see is what is reported. */
  private async confirmed(c: CommandResult, check?: (r: ExecResult) => string | undefined, bounds = CHILD): Promise<CommandResult[]> {
    if (!FINDING_OUTCOMES.has(c.verdict.outcome)) return [c];
    return [c, await this.child(c.args, c.cwd, check, bounds)];
  }

  private finish(r: Omit<CaseResult, 'outcome'>, dir: string): CaseResult {
    // A confirmed in-process finding takes the CLI's verdict (the in-process runner may differ in
    // what it can see: the CLI's exit handler, a fresh heap).
    const byArgs = new Map<string, CommandResult>();
    for (const c of r.commands) {
      const k = c.args.join('\u0000');
      const prev = byArgs.get(k);
      if (!prev || c.how === 'child') byArgs.set(k, c);
    }
    const outcome = worst([...byArgs.values()].map((c) => c.verdict.outcome));
    const res: CaseResult = { ...r, outcome };
    if (FINDING_OUTCOMES.has(outcome) && this.o.findingsDir) {
      const kept = join(this.o.findingsDir, `${r.campaign}-${String(r.index).padStart(5, '0')}-${outcome}`);
      rmSync(kept, { recursive: true, force: true });
      mkdirSync(this.o.findingsDir, { recursive: true });
      cpSync(dir, kept, { recursive: true, verbatimSymlinks: true });
      res.kept = kept;
      const bin = join(this.root, 'bin', 'cleave.js');
      const bad = [...byArgs.values()].filter((c) => FINDING_OUTCOMES.has(c.verdict.outcome));
      writeFileSync(join(kept, 'finding.json'), JSON.stringify({ ...res, seed: this.o.seed, commands: r.commands.map((c) => ({ ...c, cwd: kept })) }, null, 2) + '\n');
      writeFileSync(join(kept, 'repro.sh'), `#!/bin/sh\n# ${r.campaign} case ${r.index} (seed ${this.o.seed}): ${r.desc}\ncd "$(dirname "$0")"\n${bad.map((c) => `${shellLine(c.args).replace('bin/cleave.js', bin)}   # ${c.verdict.outcome}: ${c.verdict.why.replace(/\n/g, ' ').slice(0, 200)}`).join('\n')}\n`);
    }
    this.cases.push(res);
    if (FINDING_OUTCOMES.has(outcome)) this.log(`  ${r.campaign} #${r.index} ${outcome}: ${r.desc.slice(0, 160)}`);
    return res;
  }

  // --- models ---------------------------------------------------------------------------------

  private modelBases(): BaseModel[] {
    const fx = join(this.root, 'fixtures');
    const names = ['mlp', 'cnn', 'gpt', 'gpt_external', 'torch/torch_mlp', 'torch/torch_cnn', 'torch/torch_gpt'];
    return names.map((n) => {
      const bytes = new Uint8Array(readFileSync(join(fx, `${n}.onnx`)));
      const side = new Map<string, Uint8Array>();
      if (n === 'gpt_external') side.set('gpt_external.onnx.data', new Uint8Array(readFileSync(join(fx, 'gpt_external.onnx.data'))));
      return { name: n.replace('torch/', ''), model: decodeModel(bytes, n), bytes, sideFiles: side };
    });
  }

  async models(): Promise<void> {
    const bases = this.modelBases();
    const work = join(this.o.workDir, 'models');
    mkdirSync(work, { recursive: true });
    const start = this.o.start ?? 0;
    const idx = Array.from({ length: this.o.models }, (_, i) => start + i);
    let done = 0;
    await parallel(this.o.concurrency, idx, async (i) => {
      const r = Rng.forCase(this.o.seed, 'models', i);
      const base = r.pick(bases);
      const c = mutateModel(r, base);
      const dir = join(work, `case-${i}`);
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { recursive: true });
      for (const [name, bytes] of c.files) writeFileSync(join(dir, name), bytes);
      for (const [name, target] of c.links ?? []) { try { symlinkSync(target, join(dir, name)); } catch { /* exists */ } }
      const json = r.chance(0.3);
      const inspectArgs = ['inspect', 'model.onnx', ...(json ? ['--json'] : []), ...(r.chance(0.3) ? ['--batch', String(r.pick([2, 3, 7]))] : []), ...(!json && r.chance(0.1) ? ['--graph'] : [])];
      const inspectOk = (x: RunRecord): string | undefined => {
        if (!x.stdout.trim()) return 'inspect exited 0 and printed nothing';
        if (json) { try { const o = JSON.parse(x.stdout) as { inputs?: unknown }; if (!o.inputs) return 'inspect --json printed an object without inputs'; } catch { return 'inspect --json printed no valid JSON'; } }
        return undefined;
      };
      const commands: CommandResult[] = [];
      const ins = await this.inProcess(inspectArgs, dir, inspectOk);
      commands.push(...(await this.confirmed(ins, inspectOk)));
      const sampled = r.chance(this.o.cliSample);
      if (sampled) commands.push(await this.child(inspectArgs, dir, inspectOk));
      if (r.chance(ins.verdict.outcome === 'ok' ? this.o.compileShare : this.o.compileShare / 6)) {
        const pp = r.pick([1, 2, 2, 3]), m = r.pick([1, 2, 4]);
        const compileArgs = ['compile', 'model.onnx', '-p', String(pp), '-m', String(m), '-o', 'case.plan', ...(r.chance(0.3) ? ['--schedule', r.pick(['gpipe', 'zb-h1', 'zbv', 'auto'])] : []), ...(r.chance(0.2) ? ['--batch', String(m * 2)] : [])];
        const compileOk = (): string | undefined => {
          const f = join(dir, 'case.plan');
          if (!existsSync(f)) return 'compile exited 0 and wrote no plan';
          try { decodePlan(new Uint8Array(readFileSync(f)), f); } catch (e) { return `compile exited 0 and wrote a plan that cannot be read back: ${(e as Error).message}`; }
          return undefined;
        };
        const comp = await this.inProcess(compileArgs, dir, compileOk);
        commands.push(...(await this.confirmed(comp, compileOk)));
        if (sampled) { rmSync(join(dir, 'case.plan'), { force: true }); commands.push(await this.child(compileArgs, dir, compileOk)); }
      }
      this.finish({ campaign: 'models', index: i, family: c.family, desc: c.desc, commands }, dir);
      rmSync(dir, { recursive: true, force: true });
      if (++done % 250 === 0) this.log(`models: ${done}/${idx.length}`);
    });
  }

  // --- plans ----------------------------------------------------------------------------------

  /** A run's step losses, read from its --json lines. */
  static losses(stdout: string): Losses {
    const steps: { step: number; loss: number; losses: unknown }[] = [];
    let summary = false, fromStep: number | undefined;
    for (const line of stdout.split('\n')) {
      if (!line.startsWith('{')) continue;
      let o: Record<string, unknown>;
      try { o = JSON.parse(line) as Record<string, unknown>; } catch { continue; }
      if (typeof o['step'] === 'number') steps.push({ step: o['step'], loss: o['loss'] as number, losses: o['losses'] });
      if (o['summary']) summary = true;
      if (o['start']) fromStep = (o['start'] as { fromStep?: number }).fromStep;
    }
    return { steps, summary, fromStep };
  }

  /** Why a run's losses are not the reference's (undefined: they are, exactly). */
  static compareLosses(got: Losses, want: Losses): string | undefined {
    if (!got.summary) return 'exited 0 without its summary';
    if (got.steps.length !== want.steps.length) return `exited 0 with ${got.steps.length} steps reported, the unmutated run ${want.steps.length}`;
    for (let k = 0; k < want.steps.length; k++) {
      const g = got.steps[k]!, w = want.steps[k]!;
      if (g.step !== w.step || g.loss !== w.loss || JSON.stringify(g.losses) !== JSON.stringify(w.losses)) {
        return `exited 0 with other losses: step ${g.step} loss ${g.loss} (${JSON.stringify(g.losses)}), the unmutated run's step ${w.step} loss ${w.loss} (${JSON.stringify(w.losses)})`;
      }
    }
    return undefined;
  }

  /**
   * A set-up command (the unmutated compiles, runs, resumes and exports the cases are checked
   * against), run through the CLI's own `main` in the in-process worker: the same code as a child
   * process without a process start for each of them.
   */
  private async setupCli(args: string[], cwd: string, bounds = RUN): Promise<RunRecord> {
    const r = await this.poolLock.run(() => this.pool.run(args, bounds.timeoutMs, cwd));
    if (r.code !== 0) throw new Error(`fuzz set-up failed: cleave ${args.join(' ')} (in ${cwd}) exited ${r.code}: ${r.stderr}${r.threw ? `\n${r.threw}` : ''}`);
    return r;
  }

  async plans(): Promise<void> {
    const work = join(this.o.workDir, 'plans');
    mkdirSync(work, { recursive: true });
    const fx = (n: string): string => join(this.root, 'fixtures', `${n}.onnx`);
    const specs = [
      { name: 'mlp-1f1b-pp2', weight: 3, args: [fx('mlp'), '-p', '2', '-m', '2'] },
      { name: 'mlp-zbh1-pp2', weight: 2, args: [fx('mlp'), '-p', '2', '-m', '4', '--schedule', 'zb-h1'] },
      { name: 'mlp-pp2-dp2', weight: 2, args: [fx('mlp'), '-p', '2', '-m', '2', '--dp', '2'] },
      { name: 'gpt-pp2', weight: 2, args: [fx('gpt'), '-p', '2', '-m', '2'] },
    ].filter((s) => !this.o.quick || s.name === 'mlp-1f1b-pp2' || s.name === 'mlp-pp2-dp2');
    const runArgs = (plan: string): string[] => ['run', plan, '--steps', '2', '--timeout', '5', '--json', '--seed', '0'];
    const bases: (typeof specs[number] & { file: string; bytes: Uint8Array; plan: Plan; want: Losses })[] = [];
    for (const s of specs) {
      const file = join(work, `${s.name}.plan`);
      await this.setupCli(['compile', ...s.args, '-o', file], work);
      const a = Fuzzer.losses((await this.setupCli(runArgs(file), work)).stdout);
      const b = Fuzzer.losses((await this.setupCli(runArgs(file), work)).stdout);
      const nondet = Fuzzer.compareLosses(b, a);
      if (nondet) throw new Error(`fuzz set-up: two runs of ${file} differ (${nondet}); the loss oracle needs a deterministic run`);
      const bytes = new Uint8Array(readFileSync(file));
      bases.push({ ...s, file, bytes, plan: decodePlan(bytes, file), want: a });
    }
    const others = [fx('cnn'), fx('gpt'), fx('mlp'), join(this.root, 'fixtures', 'torch', 'torch_mlp.onnx')];
    const start = this.o.start ?? 0;
    const idx = Array.from({ length: this.o.plans }, (_, i) => start + i);
    let done = 0;
    await parallel(this.o.concurrency, idx, async (i) => {
      const r = Rng.forCase(this.o.seed, 'plans', i);
      const base = r.weighted(bases.map((b) => [b.weight, b] as const));
      const c = mutatePlan(r, base.plan as Plan, base.bytes, others.filter((o) => o !== base.args[0]));
      const dir = join(work, `case-${i}`);
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'case.plan'), c.bytes);
      const rank = r.int(base.plan.ranks.length + 1);
      const printArgs = ['plan', 'print', 'case.plan', ...r.weighted<string[]>([[4, []], [2, ['--json']], [2, ['--rank', String(rank)]], [1, ['--svg', 'out.svg']], [1, ['--trace', 'out.json']], [1, ['--width', '40']]])];
      const printOk = (x: RunRecord): string | undefined => (x.stdout.trim() || printArgs.length > 3 ? undefined : 'plan print exited 0 and printed nothing');
      const commands: CommandResult[] = [];
      const pr = await this.inProcess(printArgs, dir, printOk);
      commands.push(...(await this.confirmed(pr, printOk)));
      if (r.chance(0.1)) commands.push(await this.child(printArgs, dir, printOk));
      const runOk = (x: RunRecord): string | undefined => Fuzzer.compareLosses(Fuzzer.losses(x.stdout), base.want);
      commands.push(await this.child(runArgs('case.plan'), dir, runOk, RUN));
      this.finish({ campaign: 'plans', index: i, family: `${c.family}`, desc: `${base.name}: ${c.desc}`, commands }, dir);
      rmSync(dir, { recursive: true, force: true });
      if (++done % 50 === 0) this.log(`plans: ${done}/${idx.length}`);
    });
  }

  // --- checkpoints ----------------------------------------------------------------------------

  async checkpoints(): Promise<void> {
    const work = join(this.o.workDir, 'checkpoints');
    rmSync(work, { recursive: true, force: true });
    mkdirSync(work, { recursive: true });
    const fx = (n: string): string => join(this.root, 'fixtures', `${n}.onnx`);
    const STEPS = 3;
    const specs = [
      { name: 'mlp-pp2', weight: 3, ranks: 2, args: [fx('mlp'), '-p', '2', '-m', '2'] },
      { name: 'mlp-pp2-dp2', weight: 1, ranks: 4, args: [fx('mlp'), '-p', '2', '-m', '2', '--dp', '2'] },
    ].filter((s) => !this.o.quick || s.name === 'mlp-pp2');
    const bases: (typeof specs[number] & { dir: string; resumed: Map<number, Losses>; exported: Map<number, Buffer>; layout: CkptLayout })[] = [];
    for (const s of specs) {
      const dir = join(work, s.name);
      mkdirSync(dir, { recursive: true });
      await this.setupCli(['compile', ...s.args, '-o', 'plan.plan'], dir);
      await this.setupCli(['run', 'plan.plan', '--steps', String(STEPS), '--save-every', '1', '--checkpoint-dir', 'ck', '--json', '--seed', '0'], dir);
      await this.setupCli(['run', 'plan.plan', '--steps', String(STEPS), '--save-every', '1', '--checkpoint-dir', 'other', '--json', '--seed', '1'], dir);
      const resumed = new Map<number, Losses>();
      const exported = new Map<number, Buffer>();
      for (let s2 = 1; s2 <= STEPS; s2++) {
        resumed.set(s2, Fuzzer.losses((await this.setupCli(['run', 'plan.plan', '--resume', `ck/step-${s2}`, '--steps', String(STEPS + 1), '--json', '--timeout', '5'], dir)).stdout));
        await this.setupCli(['export', `ck/step-${s2}`, '-o', `export-${s2}.onnx`], dir);
        exported.set(s2, readFileSync(join(dir, `export-${s2}.onnx`)));
      }
      const again = Fuzzer.losses((await this.setupCli(['run', 'plan.plan', '--resume', 'ck', '--steps', String(STEPS + 1), '--json', '--timeout', '5'], dir)).stdout);
      const nondet = Fuzzer.compareLosses(again, resumed.get(STEPS)!);
      if (nondet) throw new Error(`fuzz set-up: resuming ${dir}/ck twice differs (${nondet})`);
      bases.push({ ...s, dir, resumed, exported, layout: { steps: [1, 2, 3], ranks: s.ranks } });
    }
    const start = this.o.start ?? 0;
    const idx = Array.from({ length: this.o.checkpoints }, (_, i) => start + i);
    await parallel(this.o.concurrency, idx, async (i) => {
      const r = Rng.forCase(this.o.seed, 'checkpoints', i);
      const base = r.weighted(bases.map((b) => [b.weight, b] as const));
      const dir = join(work, `case-${i}`);
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { recursive: true });
      cpSync(join(base.dir, 'ck'), join(dir, 'ck'), { recursive: true });
      cpSync(join(base.dir, 'plan.plan'), join(dir, 'plan.plan'));
      const c = damageCheckpoint(r, join(dir, 'ck'), base.layout, join(base.dir, 'other'));
      const target = c.target === 'dir' ? 'ck' : `ck/step-${c.step}`;
      const runOk = (x: RunRecord): string | undefined => {
        const got = Fuzzer.losses(x.stdout);
        const want = got.fromStep !== undefined ? base.resumed.get(got.fromStep) : undefined;
        if (!want) return `resumed at step ${got.fromStep}, which no undamaged checkpoint is at`;
        const why = Fuzzer.compareLosses(got, want);
        return why && `resumed at step ${got.fromStep} and ${why.replace('the unmutated run', 'the undamaged resume')}`;
      };
      const exportOk = (x: RunRecord): string | undefined => {
        let step: number | undefined;
        try { step = (JSON.parse(x.stdout.trim().split('\n').at(-1)!) as { step?: number }).step; } catch { return 'export --json exited 0 without its JSON line'; }
        const want = step !== undefined ? base.exported.get(step) : undefined;
        const out = join(dir, 'out.onnx');
        if (!existsSync(out)) return 'export exited 0 and wrote no model';
        if (!want) return `export exited 0 from step ${step}, which no undamaged checkpoint is at`;
        return readFileSync(out).equals(want) ? undefined : `export exited 0 from step ${step} with a model that differs from the undamaged checkpoint's export`;
      };
      const commands: CommandResult[] = [];
      commands.push(await this.child(['run', 'plan.plan', '--resume', target, '--steps', String(STEPS + 1), '--json', '--timeout', '5'], dir, runOk, RUN));
      commands.push(await this.child(['export', target, '-o', 'out.onnx', '--json'], dir, exportOk));
      this.finish({ campaign: 'checkpoints', index: i, family: c.family, desc: `${base.name}: ${c.desc} (resumed from ${target})`, commands }, dir);
      rmSync(dir, { recursive: true, force: true });
    });
  }

  close(): void {
    this.pool.close();
  }

  report(seconds: number): FuzzReport {
    const counts = Object.fromEntries(CAMPAIGNS.map((c) => [c, Object.fromEntries(OUTCOMES.map((o) => [o, 0]))])) as FuzzReport['counts'];
    for (const c of this.cases) counts[c.campaign][c.outcome]++;
    return { seed: this.o.seed, cases: this.cases, counts, findings: this.cases.filter((c) => FINDING_OUTCOMES.has(c.outcome)), seconds, campaignSeconds: this.campaignSeconds, workerStarts: this.pool.starts };
  }
}

/** Runs the campaigns asked for (a count of 0 skips one) and reports. */
export async function fuzz(o: FuzzOptions): Promise<FuzzReport> {
  const t0 = performance.now();
  mkdirSync(o.workDir, { recursive: true });
  const f = new Fuzzer({ ...o, workDir: resolve(o.workDir), ...(o.findingsDir ? { findingsDir: resolve(o.findingsDir) } : {}) });
  try {
    for (const c of CAMPAIGNS) {
      if (!(o[c] > 0)) continue;
      const t = performance.now();
      await f[c]();
      f.campaignSeconds[c] = (performance.now() - t) / 1000;
    }
  } finally {
    f.close();
  }
  return f.report((performance.now() - t0) / 1000);
}

/** The outcome table: one row per campaign, one column per outcome class, aligned. */
export function outcomeTable(counts: FuzzReport['counts']): string {
  const head = ['campaign', ...OUTCOMES, 'total', 'findings'];
  const rows = CAMPAIGNS.map((c) => {
    const n = counts[c];
    const total = OUTCOMES.reduce((a, o) => a + n[o], 0);
    return [c, ...OUTCOMES.map((o) => String(n[o])), String(total), String(OUTCOMES.filter((o) => FINDING_OUTCOMES.has(o)).reduce((a, o) => a + n[o], 0))];
  });
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]): string => r.map((x, i) => (i === 0 ? x.padEnd(w[i]!) : x.padStart(w[i]!))).join('  ');
  return [line(head), line(w.map((n) => '-'.repeat(n))), ...rows.map(line)].join('\n');
}

/** A finding's message with its particulars (numbers, names, paths) taken out: findings of one bug group together. */
export function signature(c: CaseResult): string {
  const bad = c.commands.filter((x) => x.verdict.outcome === c.outcome).at(-1) ?? c.commands[0]!;
  const norm = (s: string): string => s
    .replace(/\/[^\s'",:)]+/g, 'PATH').replace(/'[^']*'/g, "'…'").replace(/-?\d+(\.\d+)?(e[+-]?\d+)?|-?Infinity|NaN/g, 'N').replace(/\[[^\]]*\]/g, '[…]').replace(/\s+/g, ' ');
  const cmd = `${bad.args[0]}${bad.args[0] === 'plan' ? ' print' : ''}`;
  // A wrong result says only that the losses differ: what was mutated tells such findings apart.
  if (c.outcome === 'wrong') return `wrong | ${cmd} | ${c.family}: ${norm(c.desc.replace(/^[\w-]+: /, '')).slice(0, 120)}`;
  if (bad.verdict.why.startsWith('more than one message')) return `${c.outcome} | ${cmd} | more than one message (a name from the file with a line break in it?)`;
  return `${c.outcome} | ${cmd} | ${norm(bad.verdict.why).slice(0, 140)}`;
}

/** Control characters (names from bit-flipped files) written visibly, so the Markdown stays text. */
const visible = (s: string): string => s.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\ufffd]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`);

/** The findings as Markdown, grouped by kind and by signature, each group with examples. */
export function findingsMarkdown(rep: FuzzReport, examples = 3): string {
  const groups = new Map<string, CaseResult[]>();
  for (const f of rep.findings) {
    const k = `${f.campaign} :: ${signature(f)}`;
    const list = groups.get(k) ?? [];
    list.push(f);
    groups.set(k, list);
  }
  const bin = join(repoRoot(), 'bin', 'cleave.js');
  const order = [...groups.entries()].sort((a, b) => SEVERITY.indexOf(b[1][0]!.outcome) - SEVERITY.indexOf(a[1][0]!.outcome) || b[1].length - a[1].length);
  const out: string[] = [`# Fuzz findings (seed ${rep.seed})`, '', '```', outcomeTable(rep.counts), '```', '', `${rep.findings.length} findings in ${groups.size} groups; ${rep.cases.length} cases in ${rep.seconds.toFixed(0)} s.`, ''];
  let kind = '';
  for (const [k, list] of order) {
    const outcome = list[0]!.outcome;
    if (outcome !== kind) { out.push(`## ${outcome}`, ''); kind = outcome; }
    out.push(`### ${k} — ${list.length} case${list.length > 1 ? 's' : ''}`, '', `Families: ${[...new Set(list.map((c) => c.family))].join(', ')}. Cases: ${list.slice(0, 20).map((c) => `${c.campaign} #${c.index}`).join(', ')}${list.length > 20 ? ', …' : ''}`, '');
    for (const c of list.slice(0, examples)) {
      const bad = c.commands.filter((x) => FINDING_OUTCOMES.has(x.verdict.outcome));
      out.push(`- **${c.campaign} #${c.index}** (${c.family}): ${c.desc}`);
      if (c.kept) out.push(`  - kept: \`${c.kept}\` (repro.sh)`);
      for (const x of bad) {
        out.push(`  - ${x.how}: \`cd ${c.kept ?? x.cwd} && ${shellLine(x.args).replace('bin/cleave.js', bin)}\` → **${x.verdict.outcome}**: ${x.verdict.why.replace(/\n/g, ' ').slice(0, 400)}`);
        out.push('', '    ```', ...x.output.split('\n').slice(0, 14).map((l) => `    ${l.slice(0, 300)}`), '    ```', '');
      }
    }
  }
  return visible(out.join('\n')) + '\n';
}
