import ort from 'onnxruntime-node';
import type { DType } from '../../src/core/ir/dtype.js';
import { type Tensor, tensor } from '../../src/core/ir/tensor.js';

const ORT_TYPE: Partial<Record<DType, ort.Tensor.Type>> = {
  float32: 'float32', float64: 'float64', int64: 'int64', int32: 'int32', bool: 'bool', int8: 'int8', uint8: 'uint8',
};

export function toOrt(t: Tensor): ort.Tensor {
  const type = ORT_TYPE[t.dtype];
  if (!type) throw new Error(`no ORT feed for ${t.dtype}`);
  let data: ort.Tensor.DataType;
  switch (type) {
    case 'float32': data = Float32Array.from(t.data); break;
    case 'float64': data = Float64Array.from(t.data); break;
    case 'int64': data = BigInt64Array.from(Array.from(t.data, (x) => BigInt(x))); break;
    case 'int32': data = Int32Array.from(t.data); break;
    case 'bool': data = Uint8Array.from(t.data); break;
    default: data = Int8Array.from(t.data);
  }
  return new ort.Tensor(type, data, [...t.shape]);
}

export function fromOrt(t: ort.Tensor): Tensor {
  const dtype = (Object.entries(ORT_TYPE).find(([, v]) => v === t.type)?.[0] ?? 'float32') as DType;
  const vals = Array.from(t.data as ArrayLike<number | bigint>, (x) => Number(x));
  return tensor(dtype, t.dims.map(Number), vals);
}

/** Runs a model (file path or bytes) in onnxruntime-node; outputs keyed by name. */
export async function runOrt(model: string | Uint8Array, feeds: Record<string, Tensor>): Promise<Record<string, Tensor>> {
  const session = typeof model === 'string' ? await ort.InferenceSession.create(model) : await ort.InferenceSession.create(model);
  const inputs: Record<string, ort.Tensor> = {};
  for (const [k, v] of Object.entries(feeds)) inputs[k] = toOrt(v);
  const out = await session.run(inputs);
  const res: Record<string, Tensor> = {};
  for (const [k, v] of Object.entries(out)) res[k] = fromOrt(v);
  await session.release();
  return res;
}

export { maxRelError } from './compare.js';
