import { readFileSync } from 'node:fs';
import { CleaveError } from '../../src/core/errors.js';
import type { DType } from '../../src/core/ir/dtype.js';
import { type Tensor, tensor, tensorFromBytes, tensorToBytes } from '../../src/core/ir/tensor.js';
import { writeFileAtomic } from '../../src/core/util/fs.js';

// NumPy's .npy format, version 1.0–3.0: magic, header length, a Python dict literal, raw data.
const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59];

const DESCR: Record<string, DType> = {
  '<f4': 'float32', '<f8': 'float64', '<f2': 'float16', '<i8': 'int64', '<i4': 'int32',
  '|i1': 'int8', '|u1': 'uint8', '|b1': 'bool',
};
const DESCR_OF = Object.fromEntries(Object.entries(DESCR).map(([k, v]) => [v, k])) as Record<DType, string>;

export function decodeNpy(bytes: Uint8Array, file: string): Tensor {
  if (bytes.length < 10 || MAGIC.some((b, i) => bytes[i] !== b)) throw new CleaveError(`${file}: is not a .npy file (no NUMPY magic)`);
  const major = bytes[6]!;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = major === 1 ? dv.getUint16(8, true) : dv.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  if (start + headerLen > bytes.length) throw new CleaveError(`${file}: .npy header is truncated`);
  const header = new TextDecoder().decode(bytes.subarray(start, start + headerLen));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (!descr || !fortran || shapeText === undefined) throw new CleaveError(`${file}: .npy header is malformed: ${header.trim()}`);
  const dtype = DESCR[descr] ?? (descr === '<u2' ? 'int32' : undefined);
  if (!dtype) throw new CleaveError(`${file}: element type '${descr}' is not supported (use float32, float64, int64, int32, uint8 or bool, little-endian)`);
  if (fortran === 'True') throw new CleaveError(`${file}: Fortran-ordered arrays are not supported (save with np.ascontiguousarray)`);
  const shape = shapeText.split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  const data = bytes.subarray(start + headerLen);
  if (descr === '<u2') {
    const n = shape.reduce((a, b) => a * b, 1);
    if (data.length < 2 * n) throw new CleaveError(`${file}: data is truncated (${data.length} of ${2 * n} bytes)`);
    const out = tensor('int32', shape);
    for (let i = 0; i < n; i++) out.data[i] = data[2 * i]! | (data[2 * i + 1]! << 8);
    return out;
  }
  const need = shape.reduce((a, b) => a * b, 1) * (tensorToBytes(tensor(dtype, [1])).length);
  if (data.length < need) throw new CleaveError(`${file}: data is truncated (${data.length} of ${need} bytes)`);
  return tensorFromBytes(dtype, shape, data.subarray(0, need), file);
}

export function readNpy(file: string): Tensor {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(file);
  } catch {
    throw new CleaveError(`${file}: no such file`);
  }
  return decodeNpy(bytes, file);
}

export function encodeNpy(t: Tensor): Uint8Array {
  const descr = DESCR_OF[t.dtype];
  if (!descr) throw new CleaveError(`cannot write ${t.dtype} as .npy`);
  const shape = t.shape.length === 1 ? `(${t.shape[0]},)` : `(${t.shape.join(', ')})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shape}, }`;
  // Data starts on a 64-byte boundary; the header ends with a newline.
  const pad = 64 - ((10 + header.length + 1) % 64);
  header += ' '.repeat(pad % 64) + '\n';
  const body = tensorToBytes(t);
  const out = new Uint8Array(10 + header.length + body.length);
  out.set(MAGIC);
  out[6] = 1;
  out[7] = 0;
  new DataView(out.buffer).setUint16(8, header.length, true);
  out.set(new TextEncoder().encode(header), 10);
  out.set(body, 10 + header.length);
  return out;
}

export const writeNpy = (file: string, t: Tensor): void => writeFileAtomic(file, encodeNpy(t));
