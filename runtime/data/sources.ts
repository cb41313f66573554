import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { CleaveError } from '../../src/core/errors.js';
import { isFloat } from '../../src/core/ir/dtype.js';
import type { Value } from '../../src/core/ir/graph.js';
import { type Tensor, tensor } from '../../src/core/ir/tensor.js';
import { Rng } from '../../src/core/util/random.js';
import { readNpy } from './npy.js';

/** Feeds for every input of a training graph (model inputs and labels), one batch at a time. */
export interface DataSource {
  readonly description: string;
  next(batch: number): Record<string, Tensor>;
  /** Position in the data (generator states, cursors), for checkpoints. */
  state(): number[];
  restore(state: readonly number[]): void;
}

const rngState = (rng: Rng): Pick<DataSource, 'state' | 'restore'> => ({
  state: () => [rng.state],
  restore: (s) => { rng.state = s[0]!; },
});

/** What a source must produce: the model's inputs and the loss's labels, with static non-batch dims. */
export interface DataSpec {
  inputs: readonly Value[];
  labels?: Value;
  lossKind: 'output' | 'cross-entropy' | 'mse';
}

const dimsAfterBatch = (v: Value): number[] => v.shape.slice(1).map((d) => {
  if (typeof d !== 'number') throw new CleaveError(`input '${v.name}' has the symbolic dimension '${d}' past the batch; bind it with --dim`);
  return d;
});

/** The one int64 [batch, T] input of a language model, and its vocabulary size from the labels' logits. */
function tokenInput(spec: DataSpec): { input: Value; seq: number } | undefined {
  const ints = spec.inputs.filter((v) => v.dtype === 'int64' || v.dtype === 'int32');
  if (spec.inputs.length !== 1 || ints.length !== 1 || ints[0]!.shape.length !== 2) return undefined;
  if (spec.lossKind !== 'cross-entropy' || !spec.labels || spec.labels.shape.length !== 2) return undefined;
  return { input: ints[0]!, seq: dimsAfterBatch(ints[0]!)[0]! };
}

/**
 * nanoGPT-style token streams: a flat file of uint16 (or int32) ids. A batch is B random windows of
 * T+1 tokens: the first T are the input, the last T the labels (next-token prediction).
 */
export function tokenFile(file: string, spec: DataSpec, opts: { tokenType?: 'uint16' | 'int32'; vocab: number; seed?: number }): DataSource {
  const tok = tokenInput(spec);
  if (!tok) throw new CleaveError(`${file}: a token file feeds models with one int64 [batch, seq] input trained with --loss cross-entropy`);
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch {
    throw new CleaveError(`${file}: no such file`);
  }
  const width = opts.tokenType === 'int32' ? 4 : 2;
  if (bytes.length % width) throw new CleaveError(`${file}: ${bytes.length} bytes is not a whole number of ${opts.tokenType ?? 'uint16'} tokens`);
  const n = bytes.length / width;
  const T = tok.seq;
  if (n < T + 1) throw new CleaveError(`${file}: has ${n} tokens; a sequence needs ${T + 1}`);
  const read = (i: number): number => (width === 2 ? bytes.readUInt16LE(2 * i) : bytes.readInt32LE(4 * i));
  for (let i = 0; i < n; i += Math.max(1, Math.floor(n / 4096))) {
    const t = read(i);
    if (t < 0 || t >= opts.vocab) throw new CleaveError(`${file}: token ${t} at position ${i} is outside the model's vocabulary of ${opts.vocab}`);
  }
  const rng = new Rng(opts.seed ?? 0);
  return {
    ...rngState(rng),
    description: `${file}: ${n.toLocaleString('en-US')} tokens`,
    next(B) {
      const x = tensor(tok.input.dtype, [B, T]), y = tensor('int64', [B, T]);
      for (let b = 0; b < B; b++) {
        const start = rng.int(n - T);
        for (let t = 0; t < T; t++) {
          x.data[b * T + t] = read(start + t);
          y.data[b * T + t] = read(start + t + 1);
        }
      }
      return { [tok.input.name]: x, [spec.labels!.name]: y };
    },
  };
}

/** A folder with one NAME.npy per input (and labels), all with the same number of samples; batches go in order and wrap. */
export function npyFolder(dir: string, spec: DataSpec, shard = 0, shards = 1): DataSource {
  const wanted = [...spec.inputs, ...(spec.labels ? [spec.labels] : [])];
  const arrays = new Map<string, Tensor>();
  let files: string[];
  try {
    files = readdirSync(dir);
  } catch {
    throw new CleaveError(`${dir}: no such folder`);
  }
  for (const v of wanted) {
    const f = files.find((x) => x === `${v.name}.npy`);
    if (!f) throw new CleaveError(`${dir}: has no ${v.name}.npy for input '${v.name}' (${v.type})`);
    const t = readNpy(join(dir, f));
    const want = dimsAfterBatch(v);
    if (t.dtype !== v.dtype || t.shape.length !== want.length + 1 || want.some((d, i) => d !== t.shape[i + 1])) {
      throw new CleaveError(`${join(dir, f)}: is ${t.dtype}[${t.shape.join(', ')}]; input '${v.name}' needs ${v.dtype}[samples, ${want.join(', ')}]`);
    }
    arrays.set(v.name, t);
  }
  const counts = [...arrays.values()].map((t) => t.shape[0]!);
  if (new Set(counts).size > 1) throw new CleaveError(`${dir}: arrays have different sample counts (${[...arrays].map(([k, t]) => `${k}: ${t.shape[0]}`).join(', ')})`);
  const total = counts[0]!;
  // Replica `shard` of `shards` reads samples shard, shard + shards, …: its own slice of the data.
  const rows = Array.from({ length: Math.ceil((total - shard) / shards) }, (_, i) => shard + i * shards).filter((r) => r < total);
  if (!rows.length) throw new CleaveError(`${dir}: ${total} samples leave none for data-parallel replica ${shard} of ${shards}`);
  const n = rows.length;
  let cursor = 0;
  return {
    state: () => [cursor],
    restore: (s) => { cursor = s[0]!; },
    description: `${dir}: ${n.toLocaleString('en-US')} samples`,
    next(B) {
      const out: Record<string, Tensor> = {};
      for (const [name, t] of arrays) {
        const row = t.data.length / n;
        const b = tensor(t.dtype, [B, ...t.shape.slice(1)]);
        for (let i = 0; i < B; i++) {
          const r = rows[(cursor + i) % n]!;
          b.data.set(t.data.subarray(r * row, (r + 1) * row), i * row);
        }
        out[name] = b;
      }
      cursor = (cursor + B) % n;
      return out;
    },
  };
}

/** A file or folder given with --data: a .bin token stream or a folder of .npy arrays. */
export function openData(path: string, spec: DataSpec, opts: { tokenType?: 'uint16' | 'int32'; vocab: number; seed?: number; shard?: number; shards?: number }): DataSource {
  let dir = false;
  try {
    dir = statSync(path).isDirectory();
  } catch {
    throw new CleaveError(`${path}: no such file or folder`);
  }
  if (dir) return npyFolder(path, spec, opts.shard, opts.shards);
  if (path.endsWith('.bin')) return tokenFile(path, spec, opts);
  throw new CleaveError(`${path}: --data takes a .bin token file or a folder of .npy arrays`);
}

/**
 * The bundled default tasks. Language models get arithmetic sequences mod the vocabulary
 * (x_t = a + t·d, with random a and d): from two tokens on, every next token is predictable, so the
 * loss falls within seconds. Other models learn a fixed random teacher: a projection of the inputs
 * that gives the targets (mse) or, by its argmax, the classes (cross-entropy).
 */
export function defaultTask(spec: DataSpec, opts: { vocab: number; classes?: number; seed?: number }): DataSource {
  const rng = new Rng(opts.seed ?? 0);
  const tok = tokenInput(spec);
  if (tok) {
    const V = opts.vocab, T = tok.seq;
    return {
      ...rngState(rng),
      description: `arithmetic sequences mod ${V} (bundled default task)`,
      next(B) {
        const x = tensor(tok.input.dtype, [B, T]), y = tensor('int64', [B, T]);
        for (let b = 0; b < B; b++) {
          const a = rng.int(V), d = 1 + rng.int(Math.min(7, V - 1));
          for (let t = 0; t < T; t++) {
            x.data[b * T + t] = (a + t * d) % V;
            y.data[b * T + t] = (a + (t + 1) * d) % V;
          }
        }
        return { [tok.input.name]: x, [spec.labels!.name]: y };
      },
    };
  }
  if (spec.inputs.some((v) => !isFloat(v.dtype))) {
    throw new CleaveError(`no bundled task fits inputs ${spec.inputs.map((v) => `${v.name}: ${v.type}`).join(', ')}; give --data`);
  }
  const teacher = new Rng((opts.seed ?? 0) + 1);
  const inSize = spec.inputs.reduce((a, v) => a + dimsAfterBatch(v).reduce((p, q) => p * q, 1), 0);
  const labels = spec.labels;
  const outSize = !labels ? 0 : spec.lossKind === 'cross-entropy' ? opts.classes ?? 2 : dimsAfterBatch(labels).reduce((p, q) => p * q, 1);
  const W = Float64Array.from({ length: inSize * Math.max(1, outSize) }, () => teacher.normal() / Math.sqrt(inSize));
  return {
    ...rngState(rng),
    description: `random teacher (bundled default task)`,
    next(B) {
      const out: Record<string, Tensor> = {};
      const flat = new Float64Array(B * inSize);
      let off = 0;
      for (const v of spec.inputs) {
        const row = dimsAfterBatch(v).reduce((p, q) => p * q, 1);
        const t = tensor(v.dtype, [B, ...dimsAfterBatch(v)]);
        for (let b = 0; b < B; b++) for (let i = 0; i < row; i++) flat[b * inSize + off + i] = t.data[b * row + i] = rng.normal();
        out[v.name] = t;
        off += row;
      }
      if (labels) {
        const y = tensor(labels.dtype, [B, ...dimsAfterBatch(labels)]);
        for (let b = 0; b < B; b++) {
          const proj = Array.from({ length: outSize }, (_, o) => {
            let s = 0;
            for (let i = 0; i < inSize; i++) s += flat[b * inSize + i]! * W[i * outSize + o]!;
            return s;
          });
          if (spec.lossKind === 'cross-entropy') y.data[b] = proj.indexOf(Math.max(...proj));
          else y.data.set(proj, b * outSize);
        }
        out[labels.name] = y;
      }
      return out;
    },
  };
}
