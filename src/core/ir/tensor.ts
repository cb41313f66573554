import { CleaveError } from '../errors.js';
import { type DType, dtypeBytes } from './dtype.js';
import { formatShape } from './shape.js';

/**
 * Host storage. int64 lives in a Float64Array: indices and shapes never pass 2^53, and plain numbers
 * keep every kernel free of BigInt. float16/bfloat16 are held widened in a Float32Array.
 */
export type TypedArray = Float32Array | Float64Array | Int32Array | Int8Array | Uint8Array;

export interface Tensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly data: TypedArray;
}

export function storage(dtype: DType, n: number): TypedArray {
  switch (dtype) {
    case 'float32': case 'float16': case 'bfloat16': return new Float32Array(n);
    case 'float64': case 'int64': return new Float64Array(n);
    case 'int32': return new Int32Array(n);
    case 'int8': return new Int8Array(n);
    case 'uint8': case 'bool': return new Uint8Array(n);
  }
}

/** Bytes one element takes in host storage (float16 and bfloat16 are held widened, int64 as a double). */
export const hostElementBytes = (dtype: DType): number => storage(dtype, 0).BYTES_PER_ELEMENT;

/** V8's limit on a typed array's length in Node 20 (buffer.constants.MAX_LENGTH): 2^32 elements. */
export const MAX_HOST_ELEMENTS = 2 ** 32;

/**
 * Elements of a tensor of `shape`, refusing shapes no host array can hold (negative or fractional
 * dims, counts past 2^32): a CleaveError instead of `Invalid typed array length` or an allocation
 * that takes the machine's memory.
 */
export function elementCount(dtype: DType, shape: readonly number[], where?: string): number {
  const n = shape.reduce((a, b) => a * b, 1);
  if (!shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new CleaveError(`${where ? `${where}: ` : ''}a tensor cannot have the shape ${formatShape(shape)} (dims must be non-negative integers)`);
  }
  if (!(n <= MAX_HOST_ELEMENTS)) {
    throw new CleaveError(`${where ? `${where}: ` : ''}a ${dtype} tensor of shape ${formatShape(shape)} has ${n} elements, more than a host tensor holds (2^32)`);
  }
  // A zero dim empties the tensor, but kernels still walk its other dims ([2^31, 0] is 2^31 empty rows).
  if (n === 0 && !(shape.reduce((a, b) => a * (b || 1), 1) <= MAX_HOST_ELEMENTS)) {
    throw new CleaveError(`${where ? `${where}: ` : ''}a ${dtype} tensor of shape ${formatShape(shape)} is empty, but its other dims span more than a host tensor holds (2^32)`);
  }
  return n;
}

export function tensor(dtype: DType, shape: readonly number[], values?: ArrayLike<number>): Tensor {
  const n = elementCount(dtype, shape);
  const data = storage(dtype, n);
  if (values) {
    if (values.length !== n) throw new CleaveError(`tensor of shape ${formatShape(shape)} needs ${n} values, got ${values.length}`);
    data.set(values);
  }
  return { dtype, shape: [...shape], data };
}

export const sizeOf = (t: { shape: readonly number[] }): number => t.shape.reduce((a, b) => a * b, 1);

// --- half precision ---------------------------------------------------------------------------

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

export function floatToHalf(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
  return sign | h;
}

export function bf16ToFloat(h: number): number {
  u32[0] = h << 16;
  return f32[0]!;
}

export function floatToBf16(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  if (Number.isNaN(x)) return 0x7fc0;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

// --- little-endian byte images (ONNX raw_data, .npy, external data) ---------------------------

const INT64_MAX = 9223372036854775807n;
const INT64_MIN = -9223372036854775808n;

export function tensorFromBytes(dtype: DType, shape: readonly number[], bytes: Uint8Array, where: string): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const need = n * dtypeBytes(dtype);
  // Dims that claim more elements than the bytes hold are refused before anything is allocated.
  if (bytes.byteLength !== need || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new CleaveError(`${where}: ${dtype} tensor of shape ${formatShape(shape)} needs ${need} bytes of data, found ${bytes.byteLength}`);
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const t = tensor(dtype, shape);
  const d = t.data;
  for (let i = 0; i < n; i++) {
    switch (dtype) {
      case 'float32': d[i] = dv.getFloat32(i * 4, true); break;
      case 'float64': d[i] = dv.getFloat64(i * 8, true); break;
      case 'float16': d[i] = halfToFloat(dv.getUint16(i * 2, true)); break;
      case 'bfloat16': d[i] = bf16ToFloat(dv.getUint16(i * 2, true)); break;
      case 'int64': d[i] = Number(dv.getBigInt64(i * 8, true)); break;
      case 'int32': d[i] = dv.getInt32(i * 4, true); break;
      case 'int8': d[i] = dv.getInt8(i); break;
      case 'uint8': d[i] = dv.getUint8(i); break;
      case 'bool': d[i] = dv.getUint8(i) ? 1 : 0; break;
    }
  }
  return t;
}

export function tensorToBytes(t: Tensor): Uint8Array {
  const n = t.data.length;
  const out = new Uint8Array(n * dtypeBytes(t.dtype));
  const dv = new DataView(out.buffer);
  const d = t.data;
  for (let i = 0; i < n; i++) {
    const x = d[i]!;
    switch (t.dtype) {
      case 'float32': dv.setFloat32(i * 4, x, true); break;
      case 'float64': dv.setFloat64(i * 8, x, true); break;
      case 'float16': dv.setUint16(i * 2, floatToHalf(x), true); break;
      case 'bfloat16': dv.setUint16(i * 2, floatToBf16(x), true); break;
      case 'int64': {
        // Saturate: 2^63 - 1 read into a double rounds up to 2^63.
        let b = BigInt(Math.trunc(x));
        if (b > INT64_MAX) b = INT64_MAX;
        if (b < INT64_MIN) b = INT64_MIN;
        dv.setBigInt64(i * 8, b, true);
        break;
      }
      case 'int32': dv.setInt32(i * 4, x, true); break;
      case 'int8': dv.setInt8(i, x); break;
      case 'uint8': case 'bool': dv.setUint8(i, x); break;
    }
  }
  return out;
}

/** Rounds float values to what the dtype can hold (for float16/bfloat16 held widened). */
export function roundToDtype(t: Tensor): Tensor {
  if (t.dtype === 'float16') for (let i = 0; i < t.data.length; i++) t.data[i] = halfToFloat(floatToHalf(t.data[i]!));
  if (t.dtype === 'bfloat16') for (let i = 0; i < t.data.length; i++) t.data[i] = bf16ToFloat(floatToBf16(t.data[i]!));
  return t;
}
