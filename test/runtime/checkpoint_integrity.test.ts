// Checkpoints are not trusted blindly: each shard carries checksums (of its header and of its bytes)
// and the identity of the run that wrote it (run id, plan checksum, step, rank); the manifest lists
// every shard's checksum. Resume and export refuse, naming the shard, a flipped bit in a weight or a
// moment, a folder mixing two runs' shards, a shard of another step or replaced after the save, and
// a header whose offsets or lengths lie; saves cut short leave no temporary files for long; and
// checkpoints of the previous version still resume, with a warning that they cannot be verified.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { compile } from '../../compiler/compile.js';
import {
  type Manifest, cleanCheckpointDir, decodeShard, planSha256, readManifest, readShard, readShardHeader, shardName, writeManifest, writeShard,
} from '../../runtime/checkpoint/checkpoint.js';
import { checkResume, gatherCheckpoint, openCheckpoint } from '../../runtime/checkpoint/resume.js';
import { type RunResult, runPlanCpu } from '../../runtime/launch/cpu.js';
import type { RunOptions } from '../../runtime/launch/options.js';
import { gatherShardSums, shareIdentity } from '../../runtime/launch/cuda_checkpoint.js';
import { rendezvous } from '../../runtime/launch/rendezvous.js';
import { ControlTransport } from '../../runtime/transport/control.js';
import { exportCheckpoint } from '../../src/app/cli/export.js';
import { temporaryName } from '../../src/core/util/fs.js';
import { readPlan, writePlan } from '../../src/core/plan/io.js';
import '../../src/core/ops/index.js';
import { cli, cliInProcess } from '../helpers/cli.js';
import { fixturePath } from '../helpers/fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'cleave-integrity-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const planFile = join(dir, 'pp2.plan');
writePlan(planFile, compile({ model: fixturePath('gpt'), loss: 'auto', partitions: 2, microbatches: 2, schedule: '1f1b', batch: 2 }).plan);
const plan = readPlan(planFile);
const OPT = { kind: 'adamw' as const, lr: 1e-2 };
const opts = (o: Partial<RunOptions> = {}): RunOptions => ({ planFile, data: { kind: 'default' }, steps: 2, optimizer: OPT, seed: 1, ...o });

const ckA = join(dir, 'ckA'), ckB = join(dir, 'ckB');
const step = (ck: string, n: number): string => join(ck, `step-${n}`);
let unbroken: RunResult;
beforeAll(async () => {
  // Two runs of the same plan, the same data: only their run ids tell their shards apart.
  unbroken = await runPlanCpu(opts({ saveEvery: 1, checkpointDir: ckA, runId: 'run-A' }));
  await runPlanCpu(opts({ saveEvery: 2, checkpointDir: ckB, runId: 'run-B' }));
}, 60_000);

let copies = 0;
/** A copy of a step folder to damage. */
function copy(from: string): string {
  const to = join(dir, `copy-${copies++}`);
  cpSync(from, to, { recursive: true });
  return to;
}

/** A shard file's parts: its header (parsed), where its data region starts. */
function parts(file: string): { bytes: Buffer; header: Record<string, unknown>; base: number } {
  const bytes = readFileSync(file);
  const hl = bytes.readUInt32LE(12);
  return { bytes, header: JSON.parse(bytes.subarray(16, 16 + hl).toString('utf8')) as Record<string, unknown>, base: 16 + hl };
}

/** Flips one bit of the data region at `offset`. */
function flipBit(file: string, offset: number): void {
  const { bytes, base } = parts(file);
  bytes[base + offset]! ^= 0x10;
  writeFileSync(file, bytes);
}

/** Rewrites a shard's header (its own checksum made right again, so that what `edit` broke is what is found). */
function editHeader(file: string, edit: (h: Record<string, any>) => void): void {
  const { bytes, header, base } = parts(file);
  delete header['headerSha256'];
  edit(header);
  const body = JSON.stringify(header);
  const sum = createHash('sha256').update(body).digest('hex');
  const h = Buffer.from(`${body.slice(0, -1)},"headerSha256":"${sum}"}`);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(h.length);
  writeFileSync(file, Buffer.concat([bytes.subarray(0, 12), len, h, bytes.subarray(base)]));
}

/** Rewrites a shard as the previous version wrote it: no version, run, checksums. */
function toVersion1(file: string): void {
  const { bytes, header, base } = parts(file);
  for (const k of ['version', 'run', 'planSha256', 'data', 'headerSha256']) delete header[k];
  const h = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(4);
  len.writeUInt32LE(h.length);
  writeFileSync(file, Buffer.concat([bytes.subarray(0, 12), len, h, bytes.subarray(base)]));
}

/** What a run said on stderr. */
async function withStderr<T>(f: () => Promise<T>): Promise<{ result: T; stderr: string }> {
  const said: string[] = [];
  const spy = vi.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => (said.push(String(s)), true));
  try {
    return { result: await f(), stderr: said.join('') };
  } finally {
    spy.mockRestore();
  }
}

describe('what a checkpoint records', () => {
  it('each shard: its run, plan checksum, step, rank, place and the checksum of its bytes; the manifest: every shard\'s checksum', () => {
    const m = readManifest(step(ckA, 2));
    expect(m).toMatchObject({ version: 1, step: 2, run: 'run-A', planSha256: planSha256(planFile), shards: [shardName(0), shardName(1)] });
    for (const r of [0, 1]) {
      const file = join(step(ckA, 2), shardName(r));
      const h = readShardHeader(file);
      expect(h).toMatchObject({ version: 2, rank: r, step: 2, identity: { run: 'run-A', planSha256: planSha256(planFile) }, place: { pp: 2, dp: 1, ppRank: r, dpRank: 0 } });
      const { bytes, base } = parts(file);
      expect(h.sha256).toBe(createHash('sha256').update(bytes.subarray(base)).digest('hex'));
      expect(m.sha256![shardName(r)]).toBe(h.sha256);
    }
    // One id per run, the same on every rank; another run, another id.
    expect(readShardHeader(join(step(ckB, 2), shardName(1))).identity!.run).toBe('run-B');
    const generated = join(dir, 'generated');
    return runPlanCpu(opts({ steps: 1, saveEvery: 1, checkpointDir: generated })).then(() => {
      const ids = [0, 1].map((r) => readShardHeader(join(step(generated, 1), shardName(r))).identity!.run);
      expect(ids[0]).toMatch(/^[0-9a-f-]{36}$/);
      expect(ids[1]).toBe(ids[0]);
      expect(readManifest(step(generated, 1)).run).toBe(ids[0]);
    });
  }, 30_000);
});

describe('a damaged shard', () => {
  it('one flipped bit in a weight: refused naming the shard, before any rank starts', () => {
    const ck = copy(step(ckA, 2));
    const file = join(ck, shardName(1));
    const { header } = parts(file);
    const t = (header['tensors'] as { name: string; at: [number, number] }[])[0]!;
    flipBit(file, t.at[0] + 2);
    const why = `${file}: its checksum does not match its bytes (the file is damaged): refusing to resume`;
    expect(() => openCheckpoint(ck).shard(1)).toThrow(why);
    expect(() => gatherCheckpoint(ck, plan, 1)).toThrow(why);
    expect(() => runPlanCpu(opts({ resume: ck, steps: 3 }))).toThrow(why);
    // Another split reads the same shard, and refuses it the same way.
    const p1 = join(dir, 'pp1.plan');
    writePlan(p1, compile({ model: fixturePath('gpt'), loss: 'auto', partitions: 1, microbatches: 2, schedule: '1f1b', batch: 2 }).plan);
    expect(() => gatherCheckpoint(ck, readPlan(p1), 0)).toThrow(why);
  });

  it('one flipped bit in an optimizer moment: refused naming the shard', () => {
    const ck = copy(step(ckA, 2));
    const file = join(ck, shardName(0));
    const { header } = parts(file);
    const buffers = (header['optimizer'] as { buffers: Record<string, Record<string, [number, number]>> }).buffers;
    const moment = Object.values(buffers)[0]!['exp_avg_sq']!;
    flipBit(file, moment[0] + 5);
    expect(() => openCheckpoint(ck).shard(0)).toThrow(`${file}: its checksum does not match its bytes (the file is damaged): refusing to resume`);
    expect(() => decodeShard(readFileSync(file), file)).toThrow(`${file}: its checksum does not match its bytes (the file is damaged)`);
  });

  it('a changed byte in the header: refused by the header\'s own checksum', () => {
    const ck = copy(step(ckA, 2));
    const file = join(ck, shardName(1));
    const bytes = readFileSync(file);
    const at = bytes.indexOf('"dropout":') + '"dropout":'.length;
    bytes[at] = bytes[at] === 0x31 ? 0x32 : 0x31; // another digit: still valid JSON
    writeFileSync(file, bytes);
    expect(() => readShardHeader(file)).toThrow(`${file}: its header's checksum does not match the header (the file is damaged)`);
    expect(() => openCheckpoint(ck)).toThrow(`${file}: its header's checksum does not match the header (the file is damaged): refusing to resume`);
  });

  it('cut short: refused by its length, from the header alone', () => {
    const ck = copy(step(ckA, 2));
    const file = join(ck, shardName(0));
    const { bytes, base } = parts(file);
    const data = bytes.length - base;
    truncateSync(file, bytes.length - 10);
    expect(() => openCheckpoint(ck)).toThrow(`${file}: holds ${data - 10} bytes of data, its header says ${data} (the checkpoint is truncated): refusing to resume`);
  });

  it('export refuses it too, naming the shard, in one line', async () => {
    const ck = copy(step(ckA, 2));
    const file = join(ck, shardName(1));
    flipBit(file, 100);
    const out = join(dir, 'damaged.onnx');
    expect(() => exportCheckpoint(ck, out)).toThrow(`${file}: its checksum does not match its bytes (the file is damaged): refusing to export`);
    const r = await cliInProcess(['export', ck, '-o', out]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain(`${file}: its checksum does not match its bytes (the file is damaged): refusing to export`);
    expect(existsSync(out)).toBe(false);
  });
});

describe('shards of different saves', () => {
  it('two runs into one folder (the second cut short after some of its shards, the first\'s manifest left): refused naming the shard', () => {
    const ck = copy(step(ckA, 2));
    cpSync(join(step(ckB, 2), shardName(1)), join(ck, shardName(1)));
    const why = `${join(ck, shardName(1))}: was written by run run-B, the manifest's by run run-A: the folder mixes shards of two runs (one saved over the other's, cut short): refusing to resume`;
    expect(() => openCheckpoint(ck)).toThrow(why);
    expect(() => checkResume(ck, plan)).toThrow(why);
    expect(() => exportCheckpoint(ck, join(dir, 'mixed.onnx'))).toThrow(why.replace('refusing to resume', 'refusing to export'));
    // Without the manifest's word, the shards must still agree with each other.
    const m = readManifest(ck);
    const { run: _r, planSha256: _p, sha256: _s, ...older } = m;
    writeManifest(ck, older as Manifest);
    expect(() => openCheckpoint(ck)).toThrow(`${join(ck, shardName(1))}: was written by run run-B, ${shardName(0)}'s by run run-A`);
  });

  it('a shard of another plan: refused naming it', () => {
    const ck = copy(step(ckA, 2));
    const s = readShard(ck, 1);
    writeShard(ck, { ...s, identity: { run: 'run-A', planSha256: 'f'.repeat(64) } });
    writeManifest(ck, readManifest(step(ckA, 2)));
    expect(() => openCheckpoint(ck)).toThrow(`${join(ck, shardName(1))}: was written by a run of the plan with checksum ffffffffffff…, the manifest's of ${planSha256(planFile).slice(0, 12)}…: the shards are not of one checkpoint: refusing to resume`);
  });

  it('a shard of another step: refused naming it', () => {
    const ck = copy(step(ckA, 2));
    cpSync(join(step(ckA, 1), shardName(0)), join(ck, shardName(0)));
    expect(() => openCheckpoint(ck)).toThrow(`${join(ck, shardName(0))}: is of step 1; the manifest says step 2: refusing to resume`);
    expect(() => runPlanCpu(opts({ resume: ck, steps: 3 }))).toThrow(/rank-00000\.ckpt: is of step 1; the manifest says step 2: refusing to resume/);
  });

  it('a shard replaced after the save (whole, of the same run): refused by the checksum the manifest lists', () => {
    const ck = copy(step(ckA, 2));
    const s = readShard(ck, 1);
    const [name, t] = [...s.tensors][0]!;
    const data = t.data.slice();
    data[0] = data[0]! + 1;
    s.tensors.set(name, { ...t, data });
    const { sha256 } = writeShard(ck, s);
    writeManifest(ck, readManifest(step(ckA, 2)));
    const listed = readManifest(ck).sha256![shardName(1)]!;
    const why = `${join(ck, shardName(1))}: its checksum ${sha256.slice(0, 12)}… is not the ${listed.slice(0, 12)}… the manifest lists for it: the shard was replaced after the checkpoint was saved: refusing to resume`;
    expect(() => checkResume(ck, plan)).toThrow(why);
    expect(() => gatherCheckpoint(ck, plan, 1)).toThrow(why);
  });
});

describe('a shard header that lies', () => {
  const damaged = (edit: (h: Record<string, any>) => void): { ck: string; file: string } => {
    const ck = copy(step(ckA, 2));
    const file = join(ck, shardName(1));
    editHeader(file, edit);
    return { ck, file };
  };

  it('a negative offset: refused, not read from the header\'s bytes', () => {
    const { ck, file } = damaged((h) => (h['tensors'][0].at[0] = -40));
    const name = parts(file).header['tensors'] as { name: string }[];
    expect(() => readShardHeader(file)).toThrow(`${file}: its header is damaged (tensor '${name[0]!.name}' lies at [-40,`);
    expect(() => openCheckpoint(ck)).toThrow(/: refusing to resume$/);
  });

  it('a length past the end of the data region', () => {
    const { file } = damaged((h) => (h['optimizer'].buffers[Object.keys(h['optimizer'].buffers)[0]!].exp_avg[1] = 1e9));
    expect(() => readShardHeader(file)).toThrow(/its header is damaged \(the optimizer's exp_avg of '.*' lies at bytes \d+…\d+, past the end of the data region \(\d+ bytes\)\)/);
  });

  it('a length other than its dtype and shape need', () => {
    const { file } = damaged((h) => (h['tensors'][1].at[1] -= 4));
    const t = (parts(file).header['tensors'] as { name: string; at: [number, number] }[])[1]!;
    expect(() => readShardHeader(file)).toThrow(`${file}: its header is damaged (tensor '${t.name}' has ${t.at[1]} bytes; it needs ${t.at[1] + 4})`);
  });

  it('fields of the wrong type: a CleaveError naming the field, not a TypeError', () => {
    const cases: [(h: Record<string, any>) => void, string][] = [
      [(h) => (h['rank'] = 'one'), 'rank "one"'],
      [(h) => (h['tensors'][0].shape = 'big'), 'has shape "big"'],
      [(h) => (h['tensors'][0].dtype = 'float128'), 'has dtype "float128"'],
      [(h) => (h['tensors'] = null), 'no tensor list'],
      [(h) => (h['optimizer'] = 3), 'its optimizer state'],
      [(h) => (h['rng'] = { data: 'x' }), 'its generator states'],
      [(h) => (h['data'] = { bytes: -1, sha256: 'x' }), 'its data checksum'],
      [(h) => (h['tensors'][0].at = [1.5, 4]), 'not [offset, length] of whole numbers'],
      [(h) => h['tensors'].push(h['tensors'][0]), 'is listed twice'],
      [(h) => (h['version'] = 1), 'it says version 1 but carries checksums'],
    ];
    for (const [edit, what] of cases) {
      const { file } = damaged(edit);
      let caught: unknown;
      try {
        readShardHeader(file);
      } catch (e) {
        caught = e;
      }
      expect(caught, what).toBeInstanceOf(Error);
      expect((caught as Error).name, what).toBe('CleaveError');
      expect((caught as Error).message, what).toContain(`${file}: its header is damaged (`);
      expect((caught as Error).message, what).toContain(what);
    }
  });

  it('a manifest whose fields are of the wrong type', () => {
    const ck = copy(step(ckA, 2));
    const m = readManifest(ck);
    writeFileSync(join(ck, 'manifest.json'), JSON.stringify({ ...m, sha256: { [shardName(0)]: m.sha256![shardName(0)] } }));
    expect(() => openCheckpoint(ck)).toThrow(`${join(ck, 'manifest.json')}: the manifest is damaged (its shard checksums (one for each shard))`);
    writeFileSync(join(ck, 'manifest.json'), JSON.stringify({ ...m, shards: [1, 2] }));
    expect(() => openCheckpoint(ck)).toThrow('the manifest is damaged (its shard list)');
  });
});

describe('temporary files of saves cut short', () => {
  it('are removed by the next run saving there: those of processes that are gone, not a live one\'s', async () => {
    const ck = join(dir, 'leftovers');
    mkdirSync(step(ck, 1), { recursive: true });
    mkdirSync(step(ck, 7), { recursive: true });
    const gone = spawnSync(process.execPath, ['-e', '']).pid!;
    const stale = [temporaryName(join(step(ck, 1), shardName(1)), gone), temporaryName(join(step(ck, 7), 'manifest.json'), gone)];
    const live = temporaryName(join(step(ck, 7), shardName(0)), process.pid);
    // Not a save's: someone else's files, left alone.
    const others = [temporaryName(join(ck, 'notes.txt'), gone), temporaryName(join(step(ck, 7), 'notes.txt'), gone)];
    for (const f of [...stale, live, ...others]) writeFileSync(f, 'half a shard');
    await runPlanCpu(opts({ steps: 1, saveEvery: 1, checkpointDir: ck }));
    for (const f of stale) expect(existsSync(f), f).toBe(false);
    for (const f of [live, ...others]) expect(existsSync(f), f).toBe(true);
    expect(existsSync(join(step(ck, 1), 'manifest.json'))).toBe(true);
    expect(cleanCheckpointDir(ck)).toEqual([]);
  }, 30_000);
});

describe('checkpoints of the previous version (no checksums, no run id)', () => {
  /** A's step `n` as the previous version wrote it. */
  function older(n: number): string {
    const ck = copy(step(ckA, n));
    for (const r of [0, 1]) toVersion1(join(ck, shardName(r)));
    const { run: _r, planSha256: _p, sha256: _s, ...m } = readManifest(ck);
    writeManifest(ck, m as Manifest);
    return ck;
  }

  it('resume bit for bit, with a warning that they cannot be verified', async () => {
    const ck = older(1);
    expect(readShardHeader(join(ck, shardName(0)))).toMatchObject({ version: 1, step: 1 });
    const warning = `${ck} was written by an earlier cleave, without checksums: its shards cannot be verified (a damaged or mixed checkpoint would go unnoticed); checkpoints written from now on carry them`;
    expect(gatherCheckpoint(ck, plan, 0).warnings).toEqual([warning]);
    const { result, stderr } = await withStderr(() => runPlanCpu(opts({ resume: ck, returnWeights: true })));
    expect(stderr).toBe(`warning: ${warning}\n`);
    expect(result.steps.map((s) => s.losses)).toEqual(unbroken.steps.slice(1).map((s) => s.losses));
    const r = await cliInProcess(['export', ck, '-o', join(dir, 'older.onnx')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe(`warning: ${warning}\n`);
  }, 30_000);

  it('one such shard among verified ones is a mix, refused', () => {
    const ck = copy(step(ckA, 2));
    toVersion1(join(ck, shardName(1)));
    expect(() => openCheckpoint(ck)).toThrow(`${join(ck, shardName(1))}: was written by no recorded run, the manifest's by run run-A`);
  });
});

// A multi-GPU run's ranks are processes of their own: rank 0's run id goes to all of them over the
// control plane, and each rank's shard checksum to rank 0, which writes the manifest. Here the three
// ranks of a world share this process (each its own rendezvous connection over TCP).
describe('the identity of a multi-process run', () => {
  it('is rank 0\'s run id on every rank, with its plan\'s checksum; rank 0 gathers every shard\'s checksum', async () => {
    const world = (rank: number) => ({ rank, worldSize: 3, localRank: rank, masterAddr: '127.0.0.1', masterPort: 29631, source: 'torchrun' as const });
    const rvs = await Promise.all([0, 1, 2].map((r) => rendezvous(world(r), () => new Uint8Array([1]), 10_000)));
    try {
      const ts = rvs.map((rv) => new ControlTransport(rv));
      const ids = await Promise.all(ts.map((t) => shareIdentity(t, { planFile, runId: t.rank === 0 ? 'run-0' : `not-${t.rank}` })));
      expect(ids).toEqual([0, 1, 2].map(() => ({ run: 'run-0', planSha256: planSha256(planFile) })));
      const sums = await Promise.all(ts.map((t) => gatherShardSums(t, 4, `sum of ${t.rank}`)));
      expect(sums).toEqual([['sum of 0', 'sum of 1', 'sum of 2'], undefined, undefined]);
      const generated = await Promise.all(ts.map((t) => shareIdentity(t, { planFile })));
      expect(generated[0]!.run).toMatch(/^[0-9a-f-]{36}$/);
      expect(new Set(generated.map((g) => g.run)).size).toBe(1);
    } finally {
      for (const rv of rvs.slice(1)) rv.close();
      rvs[0]!.close();
    }
  });
});
