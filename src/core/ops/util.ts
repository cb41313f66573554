import { CleaveError } from '../errors.js';
import { type DType, dtypeBytes, isFloat } from '../ir/dtype.js';
import type { Attrs, ValueType } from '../ir/graph.js';
import { type Dim, type Shape, broadcast, formatShape, numel, stridesOf } from '../ir/shape.js';
import { type Tensor, roundToDtype, sizeOf, tensor } from '../ir/tensor.js';
import type { Cost, OpContext } from './registry.js';

// --- attributes (already normalized: defaults filled) -----------------------------------------

export const int = (a: Attrs, k: string): number => a[k] as number;
export const float = (a: Attrs, k: string): number => a[k] as number;
export const str = (a: Attrs, k: string): string => a[k] as string;
export const ints = (a: Attrs, k: string): readonly number[] | undefined => a[k] as readonly number[] | undefined;

// --- input checks -----------------------------------------------------------------------------

export function input(ctx: OpContext, i: number): ValueType {
  const v = ctx.inputs[i];
  if (!v) throw new CleaveError(`node '${ctx.node}': input ${i} is required`);
  return v;
}

export function sameDtype(ctx: OpContext, idx: readonly number[]): DType {
  const types = idx.map((i) => input(ctx, i));
  const d = types[0]!.dtype;
  for (const t of types) {
    if (t.dtype !== d) throw new CleaveError(`node '${ctx.node}': inputs have different element types (${types.map((t) => t.dtype).join(' vs ')})`);
  }
  return d;
}

export function requireFloat(ctx: OpContext, d: DType): void {
  if (!isFloat(d)) throw new CleaveError(`node '${ctx.node}': needs a floating-point input, got ${d}`);
}

export function requireRank(ctx: OpContext, i: number, ranks: readonly number[]): Shape {
  const s = input(ctx, i).shape;
  if (!ranks.includes(s.length)) {
    throw new CleaveError(`node '${ctx.node}': input ${i} has shape ${formatShape(s)}; expected rank ${ranks.join(' or ')}`);
  }
  return s;
}

export function requireDim(ctx: OpContext, what: string, a: Dim, b: Dim, sa: Shape, sb: Shape): void {
  if (a !== b && typeof a === 'number' && typeof b === 'number') {
    throw new CleaveError(`node '${ctx.node}': ${what} do not match: ${formatShape(sa)} and ${formatShape(sb)}`);
  }
}

// --- cost -------------------------------------------------------------------------------------

/** Bytes of a value; symbolic dims count as 1, so costs of an unbound graph are per sample. */
export const bytesOf = (t: ValueType | null | undefined): number => (t ? numel(t.shape, 1) * dtypeBytes(t.dtype) : 0);
export const elems = (t: ValueType): number => numel(t.shape, 1);

export function moved(ctx: OpContext, outs: readonly ValueType[]): number {
  let b = 0;
  for (const t of ctx.inputs) b += bytesOf(t);
  for (const t of outs) b += bytesOf(t);
  return b;
}

/** Cost of work proportional to the output size. */
export const perOutput = (flopsPerElement: number) => (ctx: OpContext, outs: readonly ValueType[]): Cost => ({
  flops: flopsPerElement * outs.reduce((a, o) => a + elems(o), 0),
  bytes: moved(ctx, outs),
});

export const dataMovement = perOutput(0);

// --- kernels ----------------------------------------------------------------------------------

/** Broadcast strides: 0 along dims where the tensor has size 1 (or is missing). */
function broadcastStrides(shape: readonly number[], out: readonly number[]): number[] {
  const st = stridesOf(shape);
  const r = out.length - shape.length;
  return out.map((_, i) => (i < r || shape[i - r] === 1 ? 0 : st[i - r]!));
}

/** Applies `f` elementwise over broadcast inputs; results are rounded to `dtype`. */
export function broadcastMap(inputs: readonly Tensor[], dtype: DType, f: (...x: number[]) => number): Tensor {
  const outShape = broadcast(inputs.map((t) => t.shape), 'kernel') as number[];
  const out = tensor(dtype, outShape);
  const n = sizeOf(out);
  const k = inputs.length;
  const o = out.data;
  // Unary and binary ops are most of the work: call `f` with fixed arity, no argument arrays.
  if (k === 1) {
    const a = inputs[0]!.data;
    for (let i = 0; i < n; i++) o[i] = f(a[i]!);
    return roundToDtype(out);
  }
  const strides = inputs.map((t) => broadcastStrides(t.shape, outShape));
  const rank = outShape.length;
  if (k === 2) {
    const a = inputs[0]!.data, b = inputs[1]!.data;
    const sa = strides[0]!, sb = strides[1]!;
    if (sizeOf(inputs[0]!) === n && sizeOf(inputs[1]!) === n) {
      for (let i = 0; i < n; i++) o[i] = f(a[i]!, b[i]!);
      return roundToDtype(out);
    }
    // Walk rows of the innermost dimension; each row has fixed strides.
    const inner = rank ? outShape[rank - 1]! : 1;
    const ia = rank ? sa[rank - 1]! : 0, ib = rank ? sb[rank - 1]! : 0;
    const idx = new Array<number>(rank).fill(0);
    let oa = 0, ob = 0;
    for (let base = 0; base < n; base += inner) {
      for (let j = 0; j < inner; j++) o[base + j] = f(a[oa + j * ia]!, b[ob + j * ib]!);
      for (let d = rank - 2; d >= 0; d--) {
        idx[d]!++;
        oa += sa[d]!;
        ob += sb[d]!;
        if (idx[d]! < outShape[d]!) break;
        oa -= sa[d]! * outShape[d]!;
        ob -= sb[d]! * outShape[d]!;
        idx[d] = 0;
      }
    }
    return roundToDtype(out);
  }
  const datas = inputs.map((t) => t.data);
  const idx = new Array<number>(rank).fill(0);
  const off = new Array<number>(k).fill(0);
  const args = new Array<number>(k);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < k; j++) args[j] = datas[j]![off[j]!]!;
    o[i] = f(...args);
    // Odometer step: carry through the trailing dims, adjusting every input's offset.
    for (let d = rank - 1; d >= 0; d--) {
      idx[d]!++;
      for (let j = 0; j < k; j++) off[j]! += strides[j]![d]!;
      if (idx[d]! < outShape[d]!) break;
      for (let j = 0; j < k; j++) off[j]! -= strides[j]![d]! * outShape[d]!;
      idx[d] = 0;
    }
  }
  return roundToDtype(out);
}

/** Integer results truncate (ONNX integer Div), others pass through. */
export function fixInt(dtype: DType, x: number): number {
  switch (dtype) {
    case 'int32': return Math.trunc(x) | 0;
    case 'int64': case 'int8': case 'uint8': return Math.trunc(x);
    case 'bool': return x ? 1 : 0;
    default: return x;
  }
}
