import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { planModelPath } from '../../src/plan/io.js';
import type { Plan } from '../../src/plan/types.js';
import { CleaveError } from '../../src/errors.js';
import type { DType } from '../../src/ir/dtype.js';
import { type Tensor, tensorFromBytes, tensorToBytes } from '../../src/ir/tensor.js';
import { writeFileAtomic } from '../../src/util/fs.js';
import type { OptimizerState } from '../optim/optimizer.js';

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
}

export interface ShardPlace { pp: number; dp: number; ppRank: number; dpRank: number }

/** A shard's header: what it holds, without its bytes. */
export interface ShardHeader {
  rank: number;
  step: number;
  tensors: { name: string; dtype: DType; shape: number[] }[];
  optimizer: { step: number; buffers: string[] };
  rng: Shard['rng'];
  place?: ShardPlace;
}

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
}

const MAGIC = 'CLEAVECKPT1\n';
const MAGIC_BYTES = new TextEncoder().encode(MAGIC);
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

/** A shard file: magic, a JSON header (tensors and optimizer buffers as offsets), raw bytes. */
export function encodeShard(s: Shard): Uint8Array {
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
  const header = new TextEncoder().encode(JSON.stringify({ rank: s.rank, step: s.step, tensors, optimizer: { step: s.optimizer.step, buffers }, rng: s.rng, ...(s.place ? { place: s.place } : {}) }));
  const out = new Uint8Array(MAGIC_BYTES.length + 4 + header.length + offset);
  out.set(MAGIC_BYTES);
  new DataView(out.buffer).setUint32(MAGIC_BYTES.length, header.length, true);
  out.set(header, MAGIC_BYTES.length + 4);
  let o = MAGIC_BYTES.length + 4 + header.length;
  for (const p of parts) { out.set(p, o); o += p.byteLength; }
  return out;
}

interface RawHeader {
  rank: number; step: number;
  tensors: { name: string; dtype: DType; shape: number[]; at: [number, number] }[];
  optimizer: { step: number; buffers: Record<string, Record<string, [number, number]>> };
  rng: Shard['rng'];
  place?: ShardPlace;
}

/** The header's length from a shard's first bytes (magic, then a little-endian uint32). */
function headerLength(bytes: Uint8Array, file: string): number {
  if (bytes.length < MAGIC_BYTES.length + 4 || MAGIC_BYTES.some((b, i) => bytes[i] !== b)) throw new CleaveError(`${file}: is not a cleave checkpoint shard`);
  return new DataView(bytes.buffer, bytes.byteOffset).getUint32(MAGIC_BYTES.length, true);
}

function parseHeader(bytes: Uint8Array, file: string): RawHeader {
  try {
    return JSON.parse(new TextDecoder().decode(bytes)) as RawHeader;
  } catch {
    throw new CleaveError(`${file}: the checkpoint header is corrupt`);
  }
}

export function decodeShard(bytes: Uint8Array, file: string): Shard {
  const hl = headerLength(bytes, file);
  const base = MAGIC_BYTES.length + 4 + hl;
  const h = parseHeader(bytes.subarray(MAGIC_BYTES.length + 4, base), file);
  const slice = ([o, n]: [number, number]): Uint8Array => {
    if (base + o + n > bytes.length) throw new CleaveError(`${file}: the checkpoint is truncated`);
    return bytes.subarray(base + o, base + o + n);
  };
  const tensors = new Map(h.tensors.map((t) => [t.name, tensorFromBytes(t.dtype, t.shape, slice(t.at), `${file}: ${t.name}`)]));
  const buffers: OptimizerState['buffers'] = {};
  for (const [p, bufs] of Object.entries(h.optimizer.buffers)) {
    buffers[p] = {};
    // Copy into a fresh buffer: a Node Buffer's slice() is a view of the whole file.
    for (const [k, at] of Object.entries(bufs)) buffers[p]![k] = new Float64Array(new Uint8Array(slice(at)).buffer);
  }
  return { rank: h.rank, step: h.step, tensors, optimizer: { step: h.optimizer.step, buffers }, rng: h.rng, ...(h.place ? { place: h.place } : {}) };
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
    const head = new Uint8Array(MAGIC_BYTES.length + 4);
    const n = readSync(fd, head, 0, head.length, 0);
    const hl = headerLength(head.subarray(0, n), file);
    const body = new Uint8Array(hl);
    if (readSync(fd, body, 0, hl, head.length) !== hl) throw new CleaveError(`${file}: the checkpoint is truncated`);
    const h = parseHeader(body, file);
    return {
      rank: h.rank, step: h.step, tensors: h.tensors.map(({ name, dtype, shape }) => ({ name, dtype, shape })),
      optimizer: { step: h.optimizer.step, buffers: Object.keys(h.optimizer.buffers) }, rng: h.rng, ...(h.place ? { place: h.place } : {}),
    };
  } finally {
    closeSync(fd);
  }
}

export function writeShard(dir: string, s: Shard): string {
  mkdirSync(dir, { recursive: true });
  // A manifest already here is an earlier save's (a run over the same --checkpoint-dir): it goes
  // before this save replaces any of its shards, or a save cut short would leave the folder taken
  // for complete with shards of two runs. This save's manifest comes once every shard is on disk.
  rmSync(join(dir, 'manifest.json'), { force: true });
  const file = join(dir, shardName(s.rank));
  writeFileAtomic(file, encodeShard(s));
  return file;
}

export function writeManifest(dir: string, m: Manifest): void {
  writeFileAtomic(join(dir, 'manifest.json'), JSON.stringify(m, null, 2) + '\n');
}

export function readManifest(dir: string): Manifest {
  const file = join(dir, 'manifest.json');
  if (!existsSync(file)) throw new CleaveError(`${dir}: no manifest.json; not a complete checkpoint`);
  let m: Manifest;
  try {
    m = JSON.parse(readFileSync(file, 'utf8')) as Manifest;
  } catch {
    throw new CleaveError(`${file}: not valid JSON`);
  }
  if (m.format !== 'cleave-checkpoint' || m.version !== 1) throw new CleaveError(`${file}: not a cleave checkpoint manifest (version 1)`);
  return m;
}

export function readShard(dir: string, rank: number): Shard {
  const file = join(dir, shardName(rank));
  if (!existsSync(file)) throw new CleaveError(`${dir}: shard ${shardName(rank)} is missing`);
  const s = decodeShard(readFileSync(file), file);
  if (s.rank !== rank) throw new CleaveError(`${file}: holds rank ${s.rank}, not ${rank}`);
  return s;
}
