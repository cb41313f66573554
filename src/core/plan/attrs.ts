import type { AttrValue, Attrs } from '../ir/graph.js';
import { type Tensor, tensor, tensorFromBytes, tensorToBytes } from '../ir/tensor.js';
import type { DType } from '../ir/dtype.js';
import { CleaveError } from '../errors.js';

/** Attributes as JSON for the plan; tensors as {dtype, shape, data: base64}. */
export function attrsToJson(a: Attrs): string {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(a)) {
    out[k] = typeof v === 'object' && !Array.isArray(v)
      ? { dtype: (v as Tensor).dtype, shape: (v as Tensor).shape, data: Buffer.from(tensorToBytes(v as Tensor)).toString('base64') }
      : v;
  }
  return JSON.stringify(out);
}

export function attrsFromJson(s: string): Attrs {
  const raw: unknown = JSON.parse(s);
  // attrsToJson writes one object: anything else (an array, null, a number) is no node's attributes.
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new CleaveError(`attributes must be a JSON object, got ${Array.isArray(raw) ? 'an array' : raw === null ? 'null' : typeof raw}`);
  const out: Attrs = {};
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      const t = v as { dtype?: unknown; shape?: unknown; data?: unknown };
      if (typeof t.dtype !== 'string' || !Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0) || typeof t.data !== 'string') {
        throw new CleaveError(`attribute '${k}' is an object but not a tensor {dtype, shape, data}`);
      }
      const shape = t.shape as number[], dtype = t.dtype as DType;
      out[k] = shape.reduce((x, y) => x * y, 1) === 0 ? tensor(dtype, shape) : tensorFromBytes(dtype, shape, Buffer.from(t.data, 'base64'), `attribute ${k}`);
    } else out[k] = v as AttrValue;
  }
  return out;
}
