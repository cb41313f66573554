import { createHash } from 'node:crypto';
import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { planModelPath } from '../../src/core/plan/io.js';
import type { Plan } from '../../src/core/plan/types.js';
import { CleaveError } from '../../src/core/errors.js';
import { ALL_DTYPES, type DType, dtypeBytes } from '../../src/core/ir/dtype.js';
import { type Tensor, tensorFromBytes, tensorToBytes } from '../../src/core/ir/tensor.js';
import { removeStaleTemporaries, writeFileAtomic } from '../../src/core/util/fs.js';
import type { OptimizerState } from '../optim/optimizer.js';

/**
 * Which run wrote a shard: a random id, one per launch and the same on every rank, and the SHA-256
 * of the plan file it ran. Shards of one checkpoint agree on both (a folder mixing two runs' shards
 * is refused); resuming under another plan is fine, so the plan's checksum is not compared with
 * the resuming run's.
 */
export interface RunIdentity { run: string; planSha256: string }

/** What a rank needs to continue exactly where it stopped. */
export interface Shard {
  rank: number;
  /** Steps completed. */
  step: number;
  tensors: Map<string, Tensor>;
  optimizer: OptimizerState;
  /** Generator states: the data source's and Dropout's. */
  rng: { data: number[]; dropout: number };
  /**
   * Where the rank sat in the plan that wrote it (its world's pipeline and data-parallel degrees and
   * its place in them); absent in shards written before resuming under another split existed.
   */
  place?: ShardPlace;
  /** The run that wrote it; absent in shards of earlier versions (and ones written without a run). */
  identity?: RunIdentity;
}

export interface ShardPlace { pp: number; dp: number; ppRank: number; dpRank: number }

/** A shard's header: what it holds, without its bytes. */
export interface ShardHeader {
  /** 2: with checksums (of the header and of the bytes); 1: written before they existed, unverifiable. */
  version: 1 | 2;
  rank: number;
  step: number;
  tensors: { name: string; dtype: DType; shape: number[] }[];
  optimizer: { step: number; buffers: string[] };
  rng: Shard['rng'];
  place?: ShardPlace;
  identity?: RunIdentity;
  /** SHA-256 (hex) of the shard's tensor and optimizer bytes; absent in version 1. */
  sha256?: string;
}

/**
 * A checkpoint's manifest. Version 1 still: what checksums added are fields an earlier cleave
 * ignores (and the shard container is unchanged), so checkpoints written now resume there too.
 */
export interface Manifest {
  format: 'cleave-checkpoint';
  version: 1;
  step: number;
  plan: string;
  model: string;
  world: number;
  /** The writing plan's pipeline and data-parallel degrees (absent in older checkpoints). */
  pp?: number;
  dp?: number;
  shards: string[];
  /** The run that wrote every shard and the SHA-256 of its plan file (absent in older checkpoints). */
  run?: string;
  planSha256?: string;
  /** Each shard's checksum of its bytes (its header's sha256), by file name (absent in older checkpoints). */
  sha256?: Record<string, string>;
}

const MAGIC = 'CLEAVECKPT1\n';
const MAGIC_BYTES = new TextEncoder().encode(MAGIC);
/** The shard header version written now (the header says it; one without says 1). */
export const SHARD_VERSION = 2;

export const sha256 = (...parts: Uint8Array[]): string => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex');
};

/** The SHA-256 (hex) of a plan file's bytes: the plan's identity in the checkpoints its runs write. */
export function planSha256(file: string): string {
  try {
    return sha256(readFileSync(file));
  } catch (e) {
    throw new CleaveError(`${file}: cannot read the plan: ${(e as Error).message}`);
  }
}

/**
 * The model file a checkpoint's manifest names (what export reads the graph from): the run's
 * --weights, else the plan's model as found from the plan's folder (a moved plan finds it there),
 * else the path it was compiled from.
 */
export function checkpointModel(plan: Plan, planFile: string, weights?: string): string {
  if (weights) return resolve(weights);
  try {
    return resolve(planModelPath(plan, planFile));
  } catch {
    return resolve(plan.model.source);
  }
}

export const shardName = (rank: number): string => `rank-${String(rank).padStart(5, '0')}.ckpt`;

/**
 * A shard file: magic, a little-endian uint32 header length, a JSON header (tensors and optimizer
 * buffers as [offset, length] in the data region), the data region. Since version 2 the header
 * carries the data region's length and SHA-256, and ends with the SHA-256 of the header before it
 * (`,"headerSha256":"…"}`), so that a damaged header is told from a damaged weight; the container
 * is version 1's, which an earlier cleave still reads.
 */
export function encodeShard(s: Shard): Uint8Array {
  return encode(s).bytes;
}

function encode(s: Shard): { bytes: Uint8Array; sha256: string } {
  const parts: Uint8Array[] = [];
  let offset = 0;
  const put = (b: Uint8Array): [number, number] => {
    parts.push(b);
    const at: [number, number] = [offset, b.byteLength];
    offset += b.byteLength;
    return at;
  };
  const tensors = [...s.tensors].map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape, at: put(tensorToBytes(t)) }));
  const buffers: Record<string, Record<string, [number, number]>> = {};
  for (const [p, bufs] of Object.entries(s.optimizer.buffers)) {
    buffers[p] = {};
    for (const [k, b] of Object.entries(bufs)) buffers[p]![k] = put(new Uint8Array(b.buffer, b.byteOffset, b.byteLength).slice());
  }
  const sum = sha256(...parts);
  const body = JSON.stringify({
    version: SHARD_VERSION, rank: s.rank, step: s.step, ...(s.identity ? { run: s.identity.run, planSha256: s.identity.planSha256 } : {}),
    tensors, optimizer: { step: s.optimizer.step, buffers }, rng: s.rng, ...(s.place ? { place: s.place } : {}),
    data: { bytes: offset, sha256: sum },
  });
  const header = new TextEncoder().encode(`${body.slice(0, -1)}${SUM_KEY}${sha256(new TextEncoder().encode(body))}"}`);
  const out = new Uint8Array(MAGIC_BYTES.length + 4 + header.length + offset);
  out.set(MAGIC_BYTES);
  new DataView(out.buffer).setUint32(MAGIC_BYTES.length, header.length, true);
  out.set(header, MAGIC_BYTES.length + 4);
  let o = MAGIC_BYTES.length + 4 + header.length;
  for (const p of parts) { out.set(p, o); o += p.byteLength; }
  return { bytes: out, sha256: sum };
}

/** The header's last field: its checksum of the header before it (as if it ended there). */
const SUM_KEY = ',"headerSha256":"';
const SUM_TAIL = SUM_KEY.length + 64 + 2;

type At = [number, number];
interface RawHeader {
  version: 1 | 2;
  rank: number; step: number;
  tensors: { name: string; dtype: DType; shape: number[]; at: At }[];
  optimizer: { step: number; buffers: Record<string, Record<string, At>> };
  rng: Shard['rng'];
  place?: ShardPlace;
  identity?: RunIdentity;
  /** The data region: its length and checksum (version 2). */
  data?: { bytes: number; sha256: string };
}

/** The header's length from a shard's first bytes (magic, then a little-endian uint32). */
function headerLength(bytes: Uint8Array, file: string): number {
  if (bytes.length < MAGIC_BYTES.length + 4 || MAGIC_BYTES.some((b, i) => bytes[i] !== b)) throw new CleaveError(`${file}: is not a cleave checkpoint shard`);
  return new DataView(bytes.buffer, bytes.byteOffset).getUint32(MAGIC_BYTES.length, true);
}

const damaged = (file: string, what: string): CleaveError => new CleaveError(`${file}: its header is damaged (${what})`);
const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
const count = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) >= 0;
const HEX64 = /^[0-9a-f]{64}$/;

/**
 * The header of a shard whose data region is `dataBytes` long, checked field by field (a damaged
 * header is a CleaveError naming what is wrong, never a TypeError later): its own checksum (version
 * 2), the types, and every [offset, length] inside the data region with the length its dtype and
 * shape need. The data region's checksum is the caller's (decodeShard), once it has the bytes.
 */
function parseHeader(bytes: Uint8Array, file: string, dataBytes: number): RawHeader {
  const text = new TextDecoder().decode(bytes);
  let x: unknown;
  try {
    x = JSON.parse(text);
  } catch {
    throw new CleaveError(`${file}: the checkpoint header is corrupt`);
  }
  if (!isObject(x)) throw damaged(file, 'not an object');
  const version = x['version'] ?? 1;
  if (version !== 1 && version !== 2) throw new CleaveError(`${file}: a shard of version ${JSON.stringify(version)}; this cleave reads versions 1 and 2`);
  // A version 2 header damaged into saying 1 must not escape its checksum.
  if (version === 1 && ('headerSha256' in x || 'data' in x)) throw damaged(file, 'it says version 1 but carries checksums');
  let data: RawHeader['data'];
  if (version === 2) {
    // The checksum covers the header as if it ended before its last field.
    const tail = text.slice(-SUM_TAIL);
    if (!tail.startsWith(SUM_KEY) || !tail.endsWith('"}') || typeof x['headerSha256'] !== 'string') throw damaged(file, 'its checksum is not its last field');
    const body = new TextEncoder().encode(`${text.slice(0, -SUM_TAIL)}}`);
    if (sha256(body) !== x['headerSha256']) throw new CleaveError(`${file}: its header's checksum does not match the header (the file is damaged)`);
    const d = x['data'];
    if (!isObject(d) || !count(d['bytes']) || typeof d['sha256'] !== 'string' || !HEX64.test(d['sha256'])) throw damaged(file, 'its data checksum');
    data = { bytes: d['bytes'], sha256: d['sha256'] };
    // A cut-short file says so, before its offsets are found to point past its end.
    if (data.bytes !== dataBytes) {
      throw new CleaveError(`${file}: holds ${dataBytes} bytes of data, its header says ${data.bytes} (${dataBytes < data.bytes ? 'the checkpoint is truncated' : 'the file is damaged'})`);
    }
  }
  const { rank, step, tensors, optimizer, rng, place } = x;
  if (!count(rank)) throw damaged(file, `rank ${JSON.stringify(rank)}`);
  if (!count(step)) throw damaged(file, `step ${JSON.stringify(step)}`);
  const region = (at: unknown, what: string, need?: number): At => {
    if (!Array.isArray(at) || at.length !== 2 || !count(at[0]) || !count(at[1])) throw damaged(file, `${what} lies at ${JSON.stringify(at)}, not [offset, length] of whole numbers`);
    const [o, n] = at as At;
    if (o + n > dataBytes) throw damaged(file, `${what} lies at bytes ${o}…${o + n}, past the end of the data region (${dataBytes} bytes)`);
    if (need !== undefined && n !== need) throw damaged(file, `${what} has ${n} bytes; it needs ${need}`);
    return [o, n];
  };
  if (!Array.isArray(tensors)) throw damaged(file, 'no tensor list');
  const names = new Set<string>();
  const ts = tensors.map((t: unknown, i) => {
    if (!isObject(t) || typeof t['name'] !== 'string') throw damaged(file, `tensor ${i} has no name`);
    const name = t['name'];
    if (names.has(name)) throw damaged(file, `tensor '${name}' is listed twice`);
    names.add(name);
    const dtype = t['dtype'] as DType;
    if (!ALL_DTYPES.includes(dtype)) throw damaged(file, `tensor '${name}' has dtype ${JSON.stringify(t['dtype'])}`);
    const shape = t['shape'];
    if (!Array.isArray(shape) || !shape.every(count)) throw damaged(file, `tensor '${name}' has shape ${JSON.stringify(shape)}`);
    const need = (shape as number[]).reduce((a, b) => a * b, dtypeBytes(dtype));
    if (!Number.isSafeInteger(need)) throw damaged(file, `tensor '${name}' has shape ${JSON.stringify(shape)}`);
    return { name, dtype, shape: shape as number[], at: region(t['at'], `tensor '${name}'`, need) };
  });
  if (!isObject(optimizer) || !count(optimizer['step']) || !isObject(optimizer['buffers'])) throw damaged(file, 'its optimizer state');
  const buffers: Record<string, Record<string, At>> = {};
  for (const [p, bufs] of Object.entries(optimizer['buffers'])) {
    if (!isObject(bufs)) throw damaged(file, `the optimizer's buffers of '${p}'`);
    buffers[p] = {};
    for (const [k, at] of Object.entries(bufs)) {
      const r = region(at, `the optimizer's ${k} of '${p}'`);
      if (r[1] % 8) throw damaged(file, `the optimizer's ${k} of '${p}' has ${r[1]} bytes, not whole float64s`);
      buffers[p]![k] = r;
    }
  }
  if (!isObject(rng) || !Array.isArray(rng['data']) || !rng['data'].every((v) => typeof v === 'number') || typeof rng['dropout'] !== 'number') throw damaged(file, 'its generator states');
  if (place !== undefined && !(isObject(place) && ['pp', 'dp', 'ppRank', 'dpRank'].every((k) => count(place[k])))) throw damaged(file, `its place ${JSON.stringify(place)}`);
  const h: RawHeader = { version, rank, step, tensors: ts, optimizer: { step: optimizer['step'], buffers }, rng: rng as Shard['rng'], ...(place ? { place: place as unknown as ShardPlace } : {}) };
  if (version === 2) {
    const { run, planSha256: plan } = x;
    if (run !== undefined || plan !== undefined) {
      if (typeof run !== 'string' || !run || typeof plan !== 'string' || !HEX64.test(plan)) throw damaged(file, 'its run identity');
      h.identity = { run, planSha256: plan };
    }
    h.data = data;
  }
  return h;
}

export function decodeShard(bytes: Uint8Array, file: string): Shard {
  const hl = headerLength(bytes, file);
  const base = MAGIC_BYTES.length + 4 + hl;
  if (base > bytes.length) throw new CleaveError(`${file}: the checkpoint is truncated`);
  const data = bytes.subarray(base);
  const h = parseHeader(bytes.subarray(MAGIC_BYTES.length + 4, base), file, data.length);
  // Before any tensor is made of them: one flipped bit in a weight or a moment is refused here.
  if (h.data && sha256(data) !== h.data.sha256) throw new CleaveError(`${file}: its checksum does not match its bytes (the file is damaged)`);
  const slice = ([o, n]: At): Uint8Array => data.subarray(o, o + n);
  const tensors = new Map(h.tensors.map((t) => [t.name, tensorFromBytes(t.dtype, t.shape, slice(t.at), `${file}: ${t.name}`)]));
  const buffers: OptimizerState['buffers'] = {};
  for (const [p, bufs] of Object.entries(h.optimizer.buffers)) {
    buffers[p] = {};
    // Copy into a fresh buffer: a Node Buffer's slice() is a view of the whole file.
    for (const [k, at] of Object.entries(bufs)) buffers[p]![k] = new Float64Array(new Uint8Array(slice(at)).buffer);
  }
  return {
    rank: h.rank, step: h.step, tensors, optimizer: { step: h.optimizer.step, buffers }, rng: h.rng,
    ...(h.place ? { place: h.place } : {}), ...(h.identity ? { identity: h.identity } : {}),
  };
}

/** Reads only a shard's header (what it holds, not the bytes): a few kilobytes of a large file. */
export function readShardHeader(file: string): ShardHeader {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    throw new CleaveError(`${file}: no such shard`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new CleaveError(`${file}: is not a file (a shard is a file a save wrote)`);
    const size = st.size;
    const head = new Uint8Array(MAGIC_BYTES.length + 4);
    const n = readSync(fd, head, 0, head.length, 0);
    const hl = headerLength(head.subarray(0, n), file);
    if (head.length + hl > size) throw new CleaveError(`${file}: the checkpoint is truncated`);
    const body = new Uint8Array(hl);
    if (readSync(fd, body, 0, hl, head.length) !== hl) throw new CleaveError(`${file}: the checkpoint is truncated`);
    const dataBytes = size - head.length - hl;
    const h = parseHeader(body, file, dataBytes);
    return {
      version: h.version, rank: h.rank, step: h.step, tensors: h.tensors.map(({ name, dtype, shape }) => ({ name, dtype, shape })),
      optimizer: { step: h.optimizer.step, buffers: Object.keys(h.optimizer.buffers) }, rng: h.rng, ...(h.place ? { place: h.place } : {}),
      ...(h.identity ? { identity: h.identity } : {}), ...(h.data ? { sha256: h.data.sha256 } : {}),
    };
  } finally {
    closeSync(fd);
  }
}

/** Writes rank `s.rank`'s shard into `dir`; returns its file and the checksum of its bytes (for the manifest). */
export function writeShard(dir: string, s: Shard): { file: string; sha256: string } {
  mkdirSync(dir, { recursive: true });
  // A manifest already here is an earlier save's (a run over the same --checkpoint-dir): it goes
  // before this save replaces any of its shards, or a save cut short would leave the folder taken
  // for complete with shards of two runs. This save's manifest comes once every shard is on disk.
  rmSync(join(dir, 'manifest.json'), { force: true });
  const file = join(dir, shardName(s.rank));
  const { bytes, sha256: sum } = encode(s);
  writeFileAtomic(file, bytes);
  return { file, sha256: sum };
}

export function writeManifest(dir: string, m: Manifest): void {
  writeFileAtomic(join(dir, 'manifest.json'), JSON.stringify(m, null, 2) + '\n');
}

/** A manifest for `plan`'s shards of `step` in `dir`, with the run's identity and each shard's checksum. */
export function manifestFor(plan: Plan, planFile: string, step: number, identity: RunIdentity, sums: readonly string[], weights?: string): Manifest {
  const shards = plan.ranks.map((r) => shardName(r.rank));
  return {
    format: 'cleave-checkpoint', version: 1, step, plan: resolve(planFile), model: checkpointModel(plan, planFile, weights), world: plan.world.size,
    pp: plan.world.pp, dp: plan.world.dp, shards, run: identity.run, planSha256: identity.planSha256,
    sha256: Object.fromEntries(shards.map((name, r) => [name, sums[r]!])),
  };
}

export function readManifest(dir: string): Manifest {
  const file = join(dir, 'manifest.json');
  if (!existsSync(file)) throw new CleaveError(`${dir}: no manifest.json; not a complete checkpoint`);
  if (!statSync(file).isFile()) throw new CleaveError(`${file}: is not a file; not a complete checkpoint`);
  let m: Manifest;
  try {
    m = JSON.parse(readFileSync(file, 'utf8')) as Manifest;
  } catch {
    throw new CleaveError(`${file}: not valid JSON`);
  }
  if (!isObject(m) || m.format !== 'cleave-checkpoint' || m.version !== 1) throw new CleaveError(`${file}: not a cleave checkpoint manifest (version 1)`);
  const bad = (what: string): CleaveError => new CleaveError(`${file}: the manifest is damaged (${what})`);
  if (!count(m.step)) throw bad(`step ${JSON.stringify(m.step)}`);
  if (!count(m.world)) throw bad(`world ${JSON.stringify(m.world)}`);
  if (!Array.isArray(m.shards) || !m.shards.every((s) => typeof s === 'string' && /^[\w.-]+$/.test(s))) throw bad('its shard list');
  if (typeof m.plan !== 'string' || typeof m.model !== 'string') throw bad('its plan or model');
  if (m.run !== undefined && typeof m.run !== 'string') throw bad('its run id');
  if (m.planSha256 !== undefined && !(typeof m.planSha256 === 'string' && HEX64.test(m.planSha256))) throw bad("its plan's checksum");
  if (m.sha256 !== undefined && !(isObject(m.sha256) && m.shards.every((s) => typeof m.sha256![s] === 'string' && HEX64.test(m.sha256![s]!)))) throw bad('its shard checksums (one for each shard)');
  return m;
}

export function readShard(dir: string, rank: number): Shard {
  const file = join(dir, shardName(rank));
  if (!existsSync(file)) throw new CleaveError(`${dir}: shard ${shardName(rank)} is missing`);
  if (!statSync(file).isFile()) throw new CleaveError(`${file}: is not a file (a shard is a file a save wrote)`);
  const s = decodeShard(readFileSync(file), file);
  if (s.rank !== rank) throw new CleaveError(`${file}: holds rank ${s.rank}, not ${rank}`);
  return s;
}

const STEP_DIR = /^step-\d+$/;
/** What a save writes into a step folder (and so, through temporary files, may leave half-written). */
const SAVED = /^(rank-\d+\.ckpt|manifest\.json)$/;

/**
 * Removes what saves cut short left in a --checkpoint-dir: its step-N folders' temporary shard and
 * manifest files of processes that are gone. Run before a run's first save there. Returns the
 * files removed.
 */
export function cleanCheckpointDir(dir: string): string[] {
  let names: string[] = [];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    if (!STEP_DIR.test(name)) continue;
    const sub = join(dir, name);
    try {
      if (statSync(sub).isDirectory()) removed.push(...removeStaleTemporaries(sub, (f) => SAVED.test(f)));
    } catch {
      // Gone meanwhile: nothing to clean.
    }
  }
  return removed;
}
