import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync, realpathSync, statSync } from 'node:fs';
import { isAbsolute, join, normalize, relative } from 'node:path';
import { CleaveError } from '../errors.js';
import { dtypeFromOnnx, dtypeToOnnx } from '../ir/dtype.js';
import type { WeightOrigin } from '../ir/graph.js';
import { type Tensor, bf16ToFloat, elementCount, halfToFloat, tensor, tensorFromBytes, tensorToBytes } from '../ir/tensor.js';
import type { TensorP } from './proto.js';

/** Where external data lives: the model file's folder. */
export interface TensorSource {
  readonly baseDir: string;
  readonly file: string;
}

/** An external data range: the bytes, and where they lie (location relative to the model's folder). */
interface External { bytes: Uint8Array; location: string; offset: number }

/**
 * The real path of an external data file `location` (relative to the model's folder `baseDir`),
 * with its size; refused unless it is a regular file inside that folder.
 */
export function externalDataFile(baseDir: string, location: string, where: string): { real: string; size: number } {
  if (isAbsolute(location) || normalize(location).startsWith('..')) {
    throw new CleaveError(`${where}: external data location '${location}' must be a path inside the model's folder`);
  }
  const path = join(baseDir, location);
  // The name alone cannot tell: a symlink in the model's folder may point anywhere (w.bin →
  // /etc/passwd would load as weights), and a FIFO or a folder is no data file. The real path must
  // lie inside the model's real folder and be a regular file.
  let real: string;
  try {
    real = realpathSync(path);
  } catch {
    throw new CleaveError(`${where}: external data file '${location}' is missing (looked for ${path})`);
  }
  const folder = realpathSync(baseDir);
  const inside = relative(folder, real);
  if (!inside || inside.startsWith('..') || isAbsolute(inside)) {
    throw new CleaveError(`${where}: external data file '${location}' resolves to ${real}, outside the model's folder ${folder}; external data must lie inside it`);
  }
  const st = statSync(real);
  if (!st.isFile()) throw new CleaveError(`${where}: external data file '${location}' (${real}) is not a regular file`);
  return { real, size: st.size };
}

function readExternal(t: TensorP, src: TensorSource, where: string): External {
  const kv = new Map((t.externalData ?? []).map((e) => [e.key ?? '', e.value ?? '']));
  const location = kv.get('location');
  if (!location) throw new CleaveError(`${where}: external data has no location`);
  const { real, size } = externalDataFile(src.baseDir, location, where);
  const offset = Number(kv.get('offset') ?? 0);
  const length = kv.has('length') ? Number(kv.get('length')) : size - offset;
  if (!(Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0 && offset + length <= size)) {
    throw new CleaveError(`${where}: external data [${kv.get('offset') ?? 0}, +${kv.get('length') ?? 'rest'}) lies outside '${location}' (${size} bytes)`);
  }
  const buf = new Uint8Array(length);
  const fd = openSync(real, 'r');
  try {
    readSync(fd, buf, 0, length, offset);
  } finally {
    closeSync(fd);
  }
  return { bytes: buf, location, offset };
}

/** Decodes a TensorProto from raw_data, the typed data fields or external data. */
export function tensorFromProto(t: TensorP, src: TensorSource, what: string): Tensor {
  return decodeTensor(t, src, what).tensor;
}

/**
 * As tensorFromProto, and, for a tensor `wanted` says may be a weight, where its bytes lie: a byte
 * range of an external data file, or of the model file (`rawOffset` finds raw_data there), with
 * their SHA-256; else (values in typed fields, or raw bytes not from the file) the initializer's
 * name. Tensors that can only be constants are not hashed.
 */
export function tensorWithOrigin(t: TensorP, src: TensorSource, what: string, rawOffset: (view: Uint8Array) => number | undefined, wanted: (t: Tensor) => boolean): { tensor: Tensor; origin?: WeightOrigin } {
  const { tensor, external } = decodeTensor(t, src, what);
  return wanted(tensor) ? { tensor, origin: originOf(t, external, rawOffset) } : { tensor };
}

function originOf(t: TensorP, external: External | undefined, rawOffset: (view: Uint8Array) => number | undefined): WeightOrigin {
  if (external) return { kind: 'bytes', file: normalize(external.location), offset: external.offset, length: external.bytes.byteLength, sha256: sha256(external.bytes) };
  const at = t.rawData && t.rawData.byteLength ? rawOffset(t.rawData) : undefined;
  if (at !== undefined) return { kind: 'bytes', file: '', offset: at, length: t.rawData!.byteLength, sha256: sha256(t.rawData!) };
  return { kind: 'initializer', name: t.name ?? '' };
}

function decodeTensor(t: TensorP, src: TensorSource, what: string): { tensor: Tensor; external?: External } {
  const where = `${src.file}: ${what}`;
  const dtype = dtypeFromOnnx(t.dataType ?? 0, where);
  const shape = (t.dims ?? []).map(Number);
  if (shape.some((d) => !(Number.isSafeInteger(d) && d >= 0))) throw new CleaveError(`${where}: has invalid dims [${shape.join(', ')}] (dims must be non-negative integers)`);
  // Dims that claim more elements than the data holds are refused below before anything is
  // allocated; a count no host array can hold is refused here, whatever the data.
  elementCount(dtype, shape, where);
  if (t.dataLocation === 1) {
    const external = readExternal(t, src, where);
    return { tensor: tensorFromBytes(dtype, shape, external.bytes, where), external };
  }
  if (t.rawData && t.rawData.byteLength) return { tensor: tensorFromBytes(dtype, shape, t.rawData, where) };
  const n = shape.reduce((a, b) => a * b, 1);
  let values: ArrayLike<number>;
  switch (dtype) {
    case 'float32': values = t.floatData ?? []; break;
    case 'float64': values = t.doubleData ?? []; break;
    case 'int64': values = t.int64Data ?? []; break;
    // float16/bfloat16 travel as their bit patterns in int32_data.
    case 'float16': values = (t.int32Data ?? []).map(halfToFloat); break;
    case 'bfloat16': values = (t.int32Data ?? []).map(bf16ToFloat); break;
    default: values = t.int32Data ?? [];
  }
  if (values.length !== n) throw new CleaveError(`${where}: ${dtype} tensor of shape [${shape.join(', ')}] needs ${n} values, found ${values.length}`);
  return { tensor: tensor(dtype, shape, values) };
}

export const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

export function tensorToProto(name: string, t: Tensor): TensorP {
  return { name, dims: [...t.shape], dataType: dtypeToOnnx(t.dtype), rawData: tensorToBytes(t) };
}
