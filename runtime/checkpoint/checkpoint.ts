import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
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
}

export interface Manifest {
  format: 'cleave-checkpoint';
  version: 1;
  step: number;
  plan: string;
  model: string;
  world: number;
  shards: string[];
}

const MAGIC = 'CLEAVECKPT1\n';
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
  const header = new TextEncoder().encode(JSON.stringify({ rank: s.rank, step: s.step, tensors, optimizer: { step: s.optimizer.step, buffers }, rng: s.rng }));
  const magic = new TextEncoder().encode(MAGIC);
  const out = new Uint8Array(magic.length + 4 + header.length + offset);
  out.set(magic);
  new DataView(out.buffer).setUint32(magic.length, header.length, true);
  out.set(header, magic.length + 4);
  let o = magic.length + 4 + header.length;
  for (const p of parts) { out.set(p, o); o += p.byteLength; }
  return out;
}

export function decodeShard(bytes: Uint8Array, file: string): Shard {
  const magic = new TextEncoder().encode(MAGIC);
  if (bytes.length < magic.length + 4 || magic.some((b, i) => bytes[i] !== b)) throw new CleaveError(`${file}: is not a cleave checkpoint shard`);
  const hl = new DataView(bytes.buffer, bytes.byteOffset).getUint32(magic.length, true);
  const base = magic.length + 4 + hl;
  let h: { rank: number; step: number; tensors: { name: string; dtype: DType; shape: number[]; at: [number, number] }[]; optimizer: { step: number; buffers: Record<string, Record<string, [number, number]>> }; rng: Shard['rng'] };
  try {
    h = JSON.parse(new TextDecoder().decode(bytes.subarray(magic.length + 4, base)));
  } catch {
    throw new CleaveError(`${file}: the checkpoint header is corrupt`);
  }
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
  return { rank: h.rank, step: h.step, tensors, optimizer: { step: h.optimizer.step, buffers }, rng: h.rng };
}

export function writeShard(dir: string, s: Shard): string {
  mkdirSync(dir, { recursive: true });
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
