// Universal checkpoints: finding a checkpoint in a --checkpoint-dir (resolveCheckpoint), reading it
// by parameter name (CheckpointReader, checkResume, gatherCheckpoint), resuming under the same plan
// (bit for bit) and under another split, schedule or data-parallel degree (the optimizer state
// moving with its parameter), the data streams (resumeDataSource), and export of a folder.
//
// One unbroken 4-step run of a pp 2 plan (a checkpoint after every step) is the reference of
// everything below; the resumed runs take its step 2.
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { compile } from '../../compiler/compile.js';
import { importOnnx } from '../../compiler/onnx/import.js';
import { type Shard, decodeShard, readManifest, readShard, readShardHeader, shardName, writeManifest, writeShard } from '../../runtime/checkpoint/checkpoint.js';
import {
  type GatheredCheckpoint, announceResume, checkResume, gatherCheckpoint, openCheckpoint, rankTensors, resolveCheckpoint, restartSeed, resumeDataSource,
} from '../../runtime/checkpoint/resume.js';
import { type RunResult, runPlanCpu } from '../../runtime/launch/cpu.js';
import { replicaSource } from '../../runtime/launch/data.js';
import type { RunOptions } from '../../runtime/launch/options.js';
import { Cuda } from '../../runtime/backends/cuda/device.js';
import { CudaRankBackend } from '../../runtime/backends/cuda/rank_backend.js';
import { runOnBackend } from '../../runtime/launch/cuda.js';
import { exportCheckpoint } from '../../src/app/cli/export.js';
import { type Tensor, tensor } from '../../src/core/ir/tensor.js';
import { readPlan, writePlan } from '../../src/core/plan/io.js';
import type { Plan } from '../../src/core/plan/types.js';
import '../../src/core/ops/index.js';
import { cli, cliInProcess } from '../helpers/cli.js';
import { fixturePath } from '../helpers/fixtures.js';
import { HostCuda } from '../helpers/host_cuda.js';

const dir = mkdtempSync(join(tmpdir(), 'cleave-resume-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const GPT = fixturePath('gpt');
const OPT = { kind: 'adamw' as const, lr: 1e-2, weightDecay: 0.01 };
const SEED = 3, N = 4, K = 2;
// fp32 weights, float64 gradient sums and optimizer state: another reduction order moves a weight by
// a few float32 ulps at most.
const TOL = 1e-5;

/** Each plan compiled once. Every one takes 4 samples a step (microbatches of 1), so all see the same data. */
function planFile(name: string, o: Omit<Parameters<typeof compile>[0], 'loss'>): { file: string; plan: Plan } {
  const file = join(dir, `${name}.plan`);
  writePlan(file, compile({ loss: 'auto', ...o }).plan);
  return { file, plan: readPlan(file) };
}
const A = planFile('pp2-1f1b', { model: GPT, partitions: 2, microbatches: 4, schedule: '1f1b', batch: 4 });
const P1 = planFile('pp1', { model: GPT, partitions: 1, microbatches: 4, schedule: '1f1b', batch: 4 });
const IL = planFile('pp2-interleaved', { model: GPT, partitions: 2, microbatches: 4, schedule: 'interleaved-1f1b', virtualStages: 2, batch: 4 });
const D = planFile('pp2-dp2', { model: GPT, partitions: 2, microbatches: 2, schedule: '1f1b', dp: 2, batch: 2 });

const opts = (planFile: string, o: Partial<RunOptions> = {}): RunOptions => ({ planFile, data: { kind: 'default' }, steps: N, optimizer: OPT, seed: SEED, returnWeights: true, ...o });

/** Runs once, on first use (tests share the runs; any one of them may run alone). */
function once<T>(f: () => Promise<T>): () => Promise<T> {
  let p: Promise<T> | undefined;
  return () => (p ??= f());
}

/** A run, with what it said on stderr. */
async function withStderr<T>(f: () => Promise<T>): Promise<{ result: T; stderr: string }> {
  const said: string[] = [];
  const spy = vi.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => (said.push(String(s)), true));
  try {
    return { result: await f(), stderr: said.join('') };
  } finally {
    spy.mockRestore();
  }
}

const ckA = join(dir, 'ckA');
const step = (ck: string, n: number): string => join(ck, `step-${n}`);
let unbroken: RunResult;
beforeAll(async () => {
  unbroken = await runPlanCpu(opts(A.file, { saveEvery: 1, checkpointDir: ckA }));
}, 30_000);

/** The stream A's only replica draws: its global batches, step by step. */
function streamA(steps: number): Record<string, Tensor>[] {
  const source = replicaSource(A.plan, opts(A.file), 0)!;
  return Array.from({ length: steps }, () => source.next(4));
}

const bytes = (t: Tensor): Buffer => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
const f64 = (a: Float64Array): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const relErr = (a: Tensor, b: Tensor): number => {
  let d = 0, s = 0;
  for (let i = 0; i < b.data.length; i++) {
    d = Math.max(d, Math.abs(Number(a.data[i]) - Number(b.data[i])));
    s = Math.max(s, Math.abs(Number(b.data[i])));
  }
  return d / (s || 1);
};
/** The largest relative difference of any tensor of `ref`, all of which `got` must have, shape for shape. */
function worst(got: ReadonlyMap<string, Tensor>, ref: ReadonlyMap<string, Tensor>): number {
  expect([...got.keys()].sort()).toEqual([...ref.keys()].sort());
  let w = 0;
  for (const [k, t] of ref) {
    expect(got.get(k)!.shape, k).toEqual(t.shape);
    w = Math.max(w, relErr(got.get(k)!, t));
  }
  return w;
}
const lossesClose = (got: RunResult, ref: RunResult, from: number): void => {
  expect(got.steps.map((s) => s.step)).toEqual(ref.steps.slice(from).map((s) => s.step));
  got.steps.forEach((s, i) => expect(Math.abs(s.loss - ref.steps[from + i]!.loss) / ref.steps[from + i]!.loss, `step ${s.step}`).toBeLessThanOrEqual(TOL));
};

describe('resolveCheckpoint', () => {
  it('takes a step-N folder as it is, and a --checkpoint-dir\'s newest complete step, saying which', () => {
    expect(resolveCheckpoint(step(ckA, 2))).toEqual({ dir: step(ckA, 2), step: 2 });
    expect(resolveCheckpoint(ckA)).toEqual({ dir: step(ckA, 4), step: 4, note: `using ${step(ckA, 4)}, the newest complete of 4 steps found` });
  });

  it('skips newer steps that are incomplete, naming each and what it lacks', () => {
    const ck = join(dir, 'partial');
    for (const n of [1, 2, 3, 4]) cpSync(step(ckA, n), step(ck, n), { recursive: true });
    rmSync(join(step(ck, 4), 'manifest.json')); // died while saving: shards there, no manifest
    rmSync(join(step(ck, 3), shardName(1))); // a shard lost after the save
    mkdirSync(step(ck, 10)); // numbered past 9: sorted by number, not by name
    mkdirSync(join(ck, 'logs'));
    writeFileSync(join(ck, 'step-7'), 'a file, not a step folder');
    const r = resolveCheckpoint(ck);
    expect(r.dir).toBe(step(ck, 2));
    expect(r.step).toBe(2);
    expect(r.note).toBe(`using ${step(ck, 2)}, the newest complete of 5 steps found; skipped step-10 (no manifest.json: the save did not finish), step-4 (no manifest.json: the save did not finish), step-3 (shard rank-00001.ckpt missing)`);
    // Given directly, an incomplete step is an error, not a fallback.
    expect(() => resolveCheckpoint(step(ck, 3))).toThrow(`${step(ck, 3)}: not a complete checkpoint: shard rank-00001.ckpt missing`);
  });

  it('lists every step found and what it lacks when none is complete', () => {
    const ck = join(dir, 'broken');
    cpSync(step(ckA, 1), step(ck, 1), { recursive: true });
    rmSync(join(step(ck, 1), 'manifest.json'));
    cpSync(step(ckA, 2), step(ck, 2), { recursive: true });
    rmSync(join(step(ck, 2), shardName(0)));
    rmSync(join(step(ck, 2), shardName(1)));
    cpSync(step(ckA, 3), step(ck, 3), { recursive: true });
    writeFileSync(join(step(ck, 3), 'manifest.json'), '{"format": "cleave-ch');
    cpSync(step(ckA, 4), step(ck, 4), { recursive: true });
    writeFileSync(join(step(ck, 4), 'manifest.json'), JSON.stringify({ ...readManifest(step(ckA, 4)), version: 7 }));
    expect(() => resolveCheckpoint(ck)).toThrow(
      `${ck}: no complete checkpoint: step-4 (manifest.json: not a cleave checkpoint manifest (version 1)), step-3 (manifest.json: not valid JSON), step-2 (shards rank-00000.ckpt, rank-00001.ckpt missing), step-1 (no manifest.json: the save did not finish)`,
    );
  });

  it('refuses a file, a missing path and a folder of no steps', () => {
    const file = join(dir, 'some.ckpt');
    writeFileSync(file, 'x');
    expect(() => resolveCheckpoint(file)).toThrow(`${file}: is a file; a checkpoint is a folder (step-N with manifest.json, or the --checkpoint-dir holding step-N folders)`);
    expect(() => resolveCheckpoint(join(dir, 'nothing'))).toThrow(`${join(dir, 'nothing')}: no manifest.json; not a complete checkpoint (no such folder)`);
    const empty = join(dir, 'empty');
    mkdirSync(empty);
    expect(() => resolveCheckpoint(empty)).toThrow(`${empty}: no manifest.json; not a complete checkpoint (nor a folder of step-N checkpoints)`);
    const unfinished = join(dir, 'ck-unfinished', 'step-9');
    mkdirSync(unfinished, { recursive: true });
    expect(() => resolveCheckpoint(unfinished)).toThrow(`${unfinished}: no manifest.json; not a complete checkpoint (the save did not finish)`);
  });
});

describe('shards and their readers', () => {
  it('record where their rank sat; headers say what the bytes hold', () => {
    const m = readManifest(step(ckA, 2));
    expect(m).toMatchObject({ step: 2, world: 2, pp: 2, dp: 1, shards: [shardName(0), shardName(1)] });
    for (const r of [0, 1]) {
      const file = join(step(ckA, 2), shardName(r));
      const h = readShardHeader(file);
      const s = decodeShard(readFileSync(file), file);
      expect(h.place).toEqual({ pp: 2, dp: 1, ppRank: A.plan.ranks[r]!.ppRank, dpRank: 0 });
      expect(s.place).toEqual(h.place);
      expect(h).toMatchObject({ rank: r, step: 2, optimizer: { step: 2 } });
      expect(h.tensors).toEqual([...s.tensors].map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape })));
      expect(h.optimizer.buffers.sort()).toEqual(Object.keys(s.optimizer.buffers).sort());
      // Exactly what the rank holds under its plan; AdamW's moments for what it updates.
      expect(h.tensors.map((t) => t.name).sort()).toEqual(rankTensors(A.plan, r).map((t) => t.name).sort());
      expect(h.optimizer.buffers.sort()).toEqual(rankTensors(A.plan, r).filter((t) => t.trainable).map((t) => t.name).sort());
      for (const b of Object.values(s.optimizer.buffers)) expect(Object.keys(b).sort()).toEqual(['exp_avg', 'exp_avg_sq']);
    }
  });

  it('are read once each, on first use, and indexed by the tensors they hold', () => {
    const ck = openCheckpoint(step(ckA, 2));
    expect(ck.optimizerStep).toBe(2);
    expect(ck.places).toEqual(A.plan.ranks.map((r) => ({ pp: 2, dp: 1, ppRank: r.ppRank, dpRank: 0 })));
    // The tied embedding sits on the first and the last pipeline rank.
    const tied = [...ck.holders].filter(([, h]) => h.length > 1).map(([n]) => n);
    expect(tied.length).toBeGreaterThan(0);
    for (const n of tied) expect(ck.holders.get(n)).toEqual([0, 1]);
    expect(ck.read.size).toBe(0);
    const s = ck.shard(1);
    expect(ck.shard(1)).toBe(s);
    expect([...ck.read]).toEqual([1]);
  });

  it('of different steps or optimizer counts are not taken for one checkpoint', () => {
    const ck = join(dir, 'mixed');
    cpSync(step(ckA, 4), ck, { recursive: true });
    cpSync(join(step(ckA, 3), shardName(1)), join(ck, shardName(1)));
    expect(() => openCheckpoint(ck)).toThrow(`${join(ck, shardName(1))}: is of step 3; the manifest says step 4`);
    const s: Shard = readShard(step(ckA, 4), 1);
    writeShard(ck, { ...s, optimizer: { ...s.optimizer, step: 5 } });
    writeManifest(ck, readManifest(step(ckA, 4)));
    expect(() => openCheckpoint(ck)).toThrow(`${join(ck, shardName(1))}: its optimizer has taken 5 steps, ${shardName(0)}'s 4: the shards are not of one checkpoint`);
  });
});

describe('saves over an earlier run\'s steps', () => {
  it('take the folder\'s manifest away with their first shard: a save cut short is not taken for complete', () => {
    const ck = join(dir, 'rerun');
    for (const n of [3, 4]) cpSync(step(ckA, n), step(ck, n), { recursive: true });
    // A rerun into the same --checkpoint-dir stopped after one rank's shard of step 4.
    writeShard(step(ck, 4), { ...readShard(step(ckA, 3), 0), step: 4 });
    expect(existsSync(join(step(ck, 4), 'manifest.json'))).toBe(false);
    expect(resolveCheckpoint(ck)).toEqual({ dir: step(ck, 3), step: 3, note: `using ${step(ck, 3)}, the newest complete of 2 steps found; skipped step-4 (no manifest.json: the save did not finish)` });
  });
});

describe('checkpoints that do not record where their ranks sat (written before they did)', () => {
  /** A copy of A's step K as it was written then: no place in the shards, no degrees in the manifest. */
  function legacy(name: string, plan: string): string {
    const ck = join(dir, name);
    for (const r of [0, 1]) {
      const { place: _, ...s } = readShard(step(ckA, K), r);
      writeShard(ck, s);
    }
    const { pp: _pp, dp: _dp, ...m } = readManifest(step(ckA, K));
    writeManifest(ck, { ...m, plan });
    return ck;
  }

  it('take the places from the plan that wrote them, while it is there', () => {
    const ck = openCheckpoint(legacy('legacy', A.file));
    expect(ck.headers.every((h) => h.place === undefined)).toBe(true);
    expect(ck.places).toEqual(A.plan.ranks.map((r) => ({ pp: 2, dp: 1, ppRank: r.ppRank, dpRank: 0 })));
    const g = gatherCheckpoint(ck, P1.plan, 0);
    expect(g.notes).toEqual([`${ck.dir} was written under pp 2 × dp 1; this plan is pp 1 × dp 1: each rank gathers its parameters and optimizer state by name from the shards that hold them`]);
    expect(g.warnings).toEqual([]);
    expect(g.rng.data).toEqual(ck.headers[0]!.rng.data);
  });

  it('without it: a world of the same size is taken as the same, another one restarts the data with a warning', () => {
    const ck = openCheckpoint(legacy('legacy-orphan', join(dir, 'gone.plan')));
    expect(ck.places).toBeUndefined();
    const same = gatherCheckpoint(ck, A.plan, 1);
    expect(same).toMatchObject({ exact: true, notes: [], warnings: [], from: [1] });
    const g = gatherCheckpoint(ck, P1.plan, 0);
    expect(g.notes).toEqual([`${ck.dir} was written under 2 ranks; this plan is pp 1 × dp 1: each rank gathers its parameters and optimizer state by name from the shards that hold them`]);
    expect(g.warnings).toEqual([`${ck.dir} was written under a data-parallel degree it does not record and this plan has dp 1: the data streams cannot continue exactly; each replica's starts afresh from the seed at step ${K}`]);
    expect(g.rng.data).toBeUndefined();
    expect(worst(g.tensors, gatherCheckpoint(step(ckA, K), P1.plan, 0).tensors)).toBe(0);
  });
});

describe('a plan of the same dp degree', () => {
  it('takes each replica\'s tensors (BatchNorm statistics are its own), moments and data stream from the same old replica', () => {
    const CNN = fixturePath('cnn');
    const old = planFile('cnn-pp2-dp2', { model: CNN, partitions: 2, microbatches: 2, schedule: '1f1b', dp: 2, batch: 2 });
    const now = planFile('cnn-pp1-dp2', { model: CNN, partitions: 1, microbatches: 2, schedule: '1f1b', dp: 2, batch: 2 });
    // Every number of old rank r is its replica's (1 or 2); its data stream's state 100 + its replica.
    const ck = join(dir, 'cnn');
    const filled = (shape: number[], x: number): Tensor => tensor('float32', shape, new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(x));
    for (const r of old.plan.ranks) {
      const own = rankTensors(old.plan, r.rank), x = r.dpRank + 1;
      const buffers = Object.fromEntries(own.filter((t) => t.trainable).map((t) => [t.name, { exp_avg: new Float64Array(filled(t.shape, x).data), exp_avg_sq: new Float64Array(filled(t.shape, x * x).data) }]));
      writeShard(ck, { rank: r.rank, step: 1, tensors: new Map(own.map((t) => [t.name, filled(t.shape, x)])), optimizer: { step: 1, buffers }, rng: { data: [100 + r.dpRank], dropout: 7 }, place: { pp: 2, dp: 2, ppRank: r.ppRank, dpRank: r.dpRank } });
    }
    writeManifest(ck, { format: 'cleave-checkpoint', version: 1, step: 1, plan: old.file, model: CNN, world: 4, pp: 2, dp: 2, shards: old.plan.ranks.map((r) => shardName(r.rank)) });
    const states = now.plan.values.filter((v) => v.kind === 'state').map((v) => v.name);
    expect(states.length).toBeGreaterThan(0);
    for (const r of now.plan.ranks) {
      const g = gatherCheckpoint(ck, now.plan, r.rank), x = r.dpRank + 1;
      expect(g.warnings).toEqual([]);
      expect(g.rng.data).toEqual([100 + r.dpRank]);
      for (const name of states) expect(g.tensors.get(name)!.data[0], name).toBe(x);
      for (const [name, t] of g.tensors) expect(new Set(t.data), name).toEqual(new Set([x]));
      for (const [name, b] of Object.entries(g.optimizer.buffers)) expect([new Set(b['exp_avg']), new Set(b['exp_avg_sq'])], name).toEqual([new Set([x]), new Set([x * x])]);
      expect(g.from.map((h) => old.plan.ranks[h]!.dpRank)).toEqual([r.dpRank, r.dpRank]);
    }
  });
});

describe('checkResume', () => {
  it('accepts any split of the same model, and names the parameters a checkpoint of another model lacks', () => {
    for (const p of [A, P1, IL, D]) expect(checkResume(step(ckA, 2), p.plan)).toEqual({ step: 2 });
    const mlp = planFile('mlp', { model: fixturePath('mlp'), partitions: 1, microbatches: 1, schedule: '1f1b', batch: 1 });
    const names = [...new Set(rankTensors(mlp.plan, 0).map((t) => t.name))];
    const shown = names.slice(0, 4).map((n) => `'${n}'`).join(', ');
    expect(() => checkResume(step(ckA, 2), mlp.plan)).toThrow(
      `${step(ckA, 2)}: the checkpoint has no tensor for parameters ${shown}, … (${names.length} in all) of this plan's model ${fixturePath('mlp')}; it was written for ${GPT}`,
    );
  });

  it('names the shard and tensor whose shape differs from the plan\'s', () => {
    const ck = join(dir, 'reshaped');
    cpSync(step(ckA, 2), ck, { recursive: true });
    // A tensor only the last pipeline rank holds.
    const name = rankTensors(A.plan, 1).find((t) => !rankTensors(A.plan, 0).some((u) => u.name === t.name) && t.shape.length === 1)!;
    const s = readShard(ck, 1);
    const t = s.tensors.get(name.name)!;
    s.tensors.set(name.name, { ...t, shape: [t.shape[0]! / 2], data: t.data.subarray(0, t.shape[0]! / 2) });
    writeShard(ck, s);
    writeManifest(ck, readManifest(step(ckA, 2)));
    const why = `${join(ck, shardName(1))}: '${name.name}' has shape [${t.shape[0]! / 2}]; the plan expects [${t.shape[0]}]`;
    expect(() => checkResume(ck, A.plan)).toThrow(why);
    expect(() => gatherCheckpoint(ck, P1.plan, 0)).toThrow(why);
  });
});

describe('resuming under the same plan', () => {
  it('continues bit for bit: losses and final weights of the unbroken run', async () => {
    // A --checkpoint-dir whose newest step is K: the run of K steps.
    const ck = join(dir, 'first-k');
    for (let n = 1; n <= K; n++) cpSync(step(ckA, n), step(ck, n), { recursive: true });
    const found = resolveCheckpoint(ck);
    expect(found.step).toBe(K);
    const g = gatherCheckpoint(found.dir, A.plan, 1);
    expect(g).toMatchObject({ exact: true, from: [1], notes: [], warnings: [], step: K });
    const { result, stderr } = await withStderr(() => runPlanCpu(opts(A.file, { resume: found.dir })));
    expect(stderr).toBe('');
    expect(result.steps.map((s) => s.step)).toEqual([3, 4]);
    expect(result.steps.map((s) => s.losses)).toEqual(unbroken.steps.slice(K).map((s) => s.losses));
    expect(result.steps.map((s) => s.gradNorm)).toEqual(unbroken.steps.slice(K).map((s) => s.gradNorm));
    for (const [k, t] of unbroken.weights!) expect(bytes(result.weights!.get(k)!).equals(bytes(t)), k).toBe(true);
  }, 30_000);
});

// The resumed runs of other plans, each from A's step K, each saving after every step.
const ckP1 = join(dir, 'ckP1'), ckD = join(dir, 'ckD');
const onP1 = once(() => withStderr(() => runPlanCpu(opts(P1.file, { resume: step(ckA, K), saveEvery: 1, checkpointDir: ckP1 }))));
const onIL = once(() => withStderr(() => runPlanCpu(opts(IL.file, { resume: step(ckA, K) }))));
// Another dp degree cannot continue the data stream, so this run is given the batches A drew: the
// global batch of each step is the same 4 samples, 2 to each replica.
const onD = once(() => withStderr(() => runPlanCpu(opts(D.file, { resume: step(ckA, K), data: { kind: 'batches', batches: streamA(N) }, saveEvery: 1, checkpointDir: ckD }))));

describe('resuming under another split', () => {
  const gatherNote = (p: Plan): string => `${step(ckA, K)} was written under pp 2 × dp 1; this plan is pp ${p.world.pp} × dp ${p.world.dp}: each rank gathers its parameters and optimizer state by name from the shards that hold them`;

  it('pp 2 → pp 1: the unbroken run\'s losses and weights', async () => {
    const { result, stderr } = await onP1();
    lossesClose(result, unbroken, K);
    expect(worst(result.weights!, unbroken.weights!)).toBeLessThanOrEqual(TOL);
    expect(stderr).toBe(`note: ${gatherNote(P1.plan)}\n`);
    const g = gatherCheckpoint(step(ckA, K), P1.plan, 0);
    expect(g).toMatchObject({ exact: false, from: [0, 1], warnings: [] });
    // The same dp degree: the one stream continues where it stopped.
    expect(g.rng.data).toEqual(readShardHeader(join(step(ckA, K), shardName(0))).rng.data);
  }, 30_000);

  it('1f1b → interleaved 1F1B with 2 virtual stages (the same world): the unbroken run\'s losses and weights', async () => {
    const { result, stderr } = await onIL();
    lossesClose(result, unbroken, K);
    expect(worst(result.weights!, unbroken.weights!)).toBeLessThanOrEqual(TOL);
    expect(stderr).toBe(`note: ${step(ckA, K)} was written under this world (pp 2 × dp 1) with another split of the model over its ranks: each rank gathers its parameters and optimizer state by name from the shards that hold them\n`);
  }, 30_000);

  it('dp 1 → dp 2: the unbroken run\'s losses and weights on the same samples, said once with the warning', async () => {
    const { result, stderr } = await onD();
    lossesClose(result, unbroken, K);
    expect(worst(result.weights!, unbroken.weights!)).toBeLessThanOrEqual(TOL);
    expect(stderr).toBe(`note: ${gatherNote(D.plan)}\nwarning: ${step(ckA, K)} was written under dp 1 and this plan has dp 2: the data streams cannot continue exactly; each replica's starts afresh from the seed at step ${K}\n`);
  }, 30_000);

  it('gathers each new rank\'s tensors and AdamW state, by name, from the old shards that hold them', () => {
    const ck = openCheckpoint(step(ckA, K));
    const old = [0, 1].map((r) => readShard(step(ckA, K), r));
    for (const r of D.plan.ranks) {
      const g: GatheredCheckpoint = gatherCheckpoint(ck, D.plan, r.rank);
      expect(g).toMatchObject({ step: K, exact: false, optimizer: { step: K } });
      expect(g.rng.data).toBeUndefined(); // restarts (resumeDataSource)
      const own = rankTensors(D.plan, r.rank);
      expect([...g.tensors.keys()].sort()).toEqual(own.map((t) => t.name).sort());
      expect(Object.keys(g.optimizer.buffers).sort()).toEqual(own.filter((t) => t.trainable).map((t) => t.name).sort());
      for (const t of own) {
        const holders = ck.holders.get(t.name)!;
        const got = g.tensors.get(t.name)!;
        expect(got.shape).toEqual(t.shape);
        // Every old copy (tied ones too) is the same; the gathered one is it.
        for (const h of holders) expect(bytes(got).equals(bytes(old[h]!.tensors.get(t.name)!)), `${t.name} of old rank ${h}`).toBe(true);
        if (!t.trainable) continue;
        const moments = g.optimizer.buffers[t.name]!;
        for (const h of holders) {
          for (const key of ['exp_avg', 'exp_avg_sq']) expect(f64(moments[key]!).equals(f64(old[h]!.optimizer.buffers[t.name]![key]!)), `${t.name}.${key} of old rank ${h}`).toBe(true);
        }
        expect(moments['exp_avg_sq']!.some((x) => x > 0), t.name).toBe(true); // moved, not fresh
      }
      expect(g.from).toEqual([...new Set(own.map((t) => ck.holders.get(t.name)![0]!))].sort());
    }
    // Both shards were read once for the four ranks.
    expect([...ck.read].sort()).toEqual([0, 1]);
  });

  it('dp 2 → dp 1: pp 2 × dp 2 shards gather into one rank, the replicas\' copies equal', async () => {
    await onD();
    const at = step(ckD, N);
    const ck = openCheckpoint(at);
    expect(ck.manifest).toMatchObject({ world: 4, pp: 2, dp: 2, step: N });
    const g = gatherCheckpoint(ck, P1.plan, 0);
    expect(g.notes).toEqual([`${at} was written under pp 2 × dp 2; this plan is pp 1 × dp 1: each rank gathers its parameters and optimizer state by name from the shards that hold them`]);
    expect(g.warnings).toEqual([`${at} was written under dp 2 and this plan has dp 1: the data streams cannot continue exactly; each replica's starts afresh from the seed at step ${N}`]);
    expect(g.optimizer.step).toBe(N);
    const old = [0, 1, 2, 3].map((r) => readShard(at, r));
    for (const t of rankTensors(P1.plan, 0)) {
      const holders = ck.holders.get(t.name)!;
      expect(new Set(holders.map((h) => ck.places![h]!.dpRank))).toEqual(new Set([0, 1]));
      for (const h of holders) {
        expect(bytes(g.tensors.get(t.name)!).equals(bytes(old[h]!.tensors.get(t.name)!)), `${t.name} of old rank ${h}`).toBe(true);
        if (!t.trainable) continue;
        const [mine, theirs] = [g.optimizer.buffers[t.name]!, old[h]!.optimizer.buffers[t.name]!];
        expect(Object.keys(mine).sort()).toEqual(Object.keys(theirs).sort());
        for (const key of Object.keys(theirs)) expect(f64(mine[key]!).equals(f64(theirs[key]!)), `${t.name}.${key} of old rank ${h}`).toBe(true);
      }
    }
    let said = '';
    announceResume(g, (s) => (said += s));
    expect(said).toBe(`note: ${g.notes[0]}\nwarning: ${g.warnings[0]}\n`);
  }, 30_000);
});

describe('a GPU rank (host emulation of the CUDA addon)', () => {
  it('resumes a pp 2 CPU checkpoint by name: the unbroken run\'s losses within float32 rounding; its own shard records its place', async () => {
    const host = new HostCuda();
    const gathered = gatherCheckpoint(step(ckA, K), P1.plan, 0);
    const backend = new CudaRankBackend(P1.plan, 0, gathered.tensors, OPT, new Cuda(host.native));
    const ckG = join(dir, 'ckG');
    // runOnBackend gathers o.resume itself: its optimizer state, step and data stream.
    const r = await runOnBackend(backend, opts(P1.file, { resume: step(ckA, K), saveEvery: N, checkpointDir: ckG }));
    expect(host.liveBlocks).toBe(0);
    expect(r.steps.map((s) => s.step)).toEqual([3, 4]);
    r.steps.forEach((s, i) => expect(Math.abs(s.loss - unbroken.steps[K + i]!.loss) / s.loss, `step ${s.step}`).toBeLessThanOrEqual(1e-4));
    expect(readManifest(step(ckG, N))).toMatchObject({ world: 1, pp: 1, dp: 1, step: N });
    const h = readShardHeader(join(step(ckG, N), shardName(0)));
    expect(h).toMatchObject({ step: N, place: { pp: 1, dp: 1, ppRank: 0, dpRank: 0 }, optimizer: { step: N } });
    expect(h.optimizer.buffers.sort()).toEqual(rankTensors(P1.plan, 0).filter((t) => t.trainable).map((t) => t.name).sort());
    // Written in the CPU ranks' format: a pp 2 plan's last rank gathers its part from it.
    expect(checkResume(step(ckG, N), A.plan)).toEqual({ step: N });
    expect([...gatherCheckpoint(step(ckG, N), A.plan, 1).tensors.keys()].sort()).toEqual(rankTensors(A.plan, 1).map((t) => t.name).sort());
  }, 30_000);
});

describe('data streams of a resumed run', () => {
  const sameBatch = (a: Record<string, Tensor>, b: Record<string, Tensor>): boolean => Object.keys(b).every((k) => bytes(a[k]!).equals(bytes(b[k]!)));

  it('continue where the dp degree is the same, and restart from a seed moved by the step where it is not', () => {
    const o = opts(A.file);
    const drawn = streamA(K + 1);
    const same = gatherCheckpoint(step(ckA, K), P1.plan, 0);
    expect(sameBatch(resumeDataSource(P1.plan, o, 0, same)!.next(4), drawn[K]!)).toBe(true);
    const other = gatherCheckpoint(step(ckA, K), D.plan, 0);
    expect(restartSeed(SEED, K)).toBe(SEED + K * 1_000_003);
    for (const d of [0, 1]) {
      const restarted = resumeDataSource(D.plan, o, d, other)!.next(2);
      expect(sameBatch(restarted, replicaSource(D.plan, { ...o, seed: restartSeed(SEED, K) }, d)!.next(2))).toBe(true);
      expect(sameBatch(restarted, replicaSource(D.plan, o, d)!.next(2))).toBe(false);
    }
  });
});

describe('export', () => {
  /** A written model's weights, by name. */
  const onnxWeights = (file: string): Map<string, Tensor> => {
    const g = importOnnx(file, { batch: 1 });
    return new Map([...g.params(), ...g.states()].map((v) => [v.name, v.data!]));
  };

  it('of a --checkpoint-dir writes its newest step\'s weights', () => {
    const out = join(dir, 'a.onnx');
    const r = exportCheckpoint(ckA, out);
    expect(r).toEqual({ dir: step(ckA, N), step: N, tensors: unbroken.weights!.size, note: `using ${step(ckA, N)}, the newest complete of 4 steps found` });
    const w = onnxWeights(out);
    for (const [k, t] of unbroken.weights!) expect(bytes(w.get(k)!).equals(bytes(t)), k).toBe(true);
  });

  it('of pp 2 × dp 2 shards gives the model pp 1 gives', async () => {
    await Promise.all([onP1(), onD()]);
    const d = join(dir, 'd.onnx'), p = join(dir, 'p1.onnx');
    expect(exportCheckpoint(ckD, d).step).toBe(N);
    expect(exportCheckpoint(ckP1, p).step).toBe(N);
    expect(worst(onnxWeights(d), onnxWeights(p))).toBeLessThanOrEqual(TOL);
    expect(worst(onnxWeights(p), unbroken.weights!)).toBeLessThanOrEqual(TOL);
  }, 30_000);
});

describe('the CLI', () => {
  it('export DIR --json says what it wrote, from which step; -o is checked before anything is read', async () => {
    const out = join(dir, 'cli.onnx');
    const r = await cliInProcess(['export', ckA, '-o', out, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ out, checkpoint: step(ckA, N), step: N, tensors: unbroken.weights!.size, note: `using ${step(ckA, N)}, the newest complete of 4 steps found` });
    exportCheckpoint(step(ckA, N), join(dir, 'same.onnx'));
    expect(readFileSync(out).equals(readFileSync(join(dir, 'same.onnx')))).toBe(true);
    // A checkpoint that is not there: the error is -o's, so it came first.
    const bad = await cliInProcess(['export', join(dir, 'no-checkpoint'), '-o', '/nonexistent/x.onnx', '--json']);
    expect(bad.code).toBe(2);
    expect(JSON.parse(bad.stdout)).toMatchObject({ error: { message: '-o /nonexistent/x.onnx: the folder /nonexistent does not exist', exitCode: 2 } });
    expect(existsSync('/nonexistent')).toBe(false);
  });

  it('run --resume DIR says the step it takes and runs a plan of another split; a checkpoint at --steps is refused', async () => {
    const r = cli(['run', P1.file, '--resume', ckA, '--steps', String(N + 1), '--seed', String(SEED)]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`resuming at step ${N}`);
    expect(r.stdout).toContain(`note: using ${step(ckA, N)}, the newest complete of 4 steps found\n`);
    expect(r.stdout).toMatch(new RegExp(`step ${N + 1}/${N + 1}  loss [\\d.]+`));
    expect(r.stdout).toMatch(/in 1 steps/);
    expect(r.stderr).toContain(`note: ${step(ckA, N)} was written with plan ${A.file}\n`);
    expect(r.stderr).toContain(`note: ${step(ckA, N)} was written under pp 2 × dp 1; this plan is pp 1 × dp 1: each rank gathers`);
    const at = await cliInProcess(['run', A.file, '--resume', ckA, '--steps', String(N)]);
    expect(at.code).toBe(2);
    expect(at.stderr).toContain(`${step(ckA, N)} is at step ${N} already; ask for more --steps`);
  }, 30_000);
});
