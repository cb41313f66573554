import type { AttrValue, Attrs } from '../ir/graph.js';
import { type Tensor, tensor, tensorFromBytes, tensorToBytes } from '../ir/tensor.js';
import type { DType } from '../ir/dtype.js';

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
  const raw = JSON.parse(s) as Record<string, unknown>;
  const out: Attrs = {};
  for (const [k, v] of Object.entries(raw)) {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      const t = v as { dtype: DType; shape: number[]; data: string };
      out[k] = t.shape.reduce((x, y) => x * y, 1) === 0 ? tensor(t.dtype, t.shape) : tensorFromBytes(t.dtype, t.shape, Buffer.from(t.data, 'base64'), `attribute ${k}`);
    } else out[k] = v as AttrValue;
  }
  return out;
}
