// ONNX GatherND (opset 12's form, unchanged in 13): gathers slices of `data` picked by index tuples,
// the last axis of `indices`, after `batch_dims` leading axes the two share. torch.onnx's dynamo
// exporter (optimize=False) writes it for advanced indexing in HF decoders. Its gradient is cleave's
// own GatherNDGrad (domain 'cleave'): dy scatter-added into zeros of the data's shape, the shape held
// as an attribute as GatherGrad holds it. Indices get no gradient.
import { CleaveError } from '../errors.js';
import type { Attrs, ValueType } from '../ir/graph.js';
import { type Dim, type Shape, formatShape, staticShape } from '../ir/shape.js';
import { type Tensor, roundToDtype, tensor } from '../ir/tensor.js';
import type { AttrSpec, Cost, DeviceTensor, OpContext, OpDef } from './registry.js';
import { dataMovement, elems, input, ints, moved, requireFloat } from './util.js';

const at = (ctx: OpContext): string => `node '${ctx.node}'`;

const batchDimsAttr: Record<string, AttrSpec> = { batch_dims: { type: 'int', default: 0, min: 0 } };

/** The node's batch_dims (a plan node may leave the default out). */
export const batchDimsOf = (attrs: Attrs): number => (attrs['batch_dims'] as number | undefined) ?? 0;

/**
 * GatherND's output shape for data and indices of these shapes, or what is wrong (`where` names the
 * node): data.shape[:b] + indices.shape[b:-1] + data.shape[b + k:], k = indices.shape[-1].
 */
export function gatherNDShape(data: Shape, indices: Shape, b: number, where: string): Dim[] {
  const r = data.length, q = indices.length;
  if (r < 1) throw new CleaveError(`${where}: GatherND needs data of rank 1 or more, got a scalar`);
  if (q < 1) throw new CleaveError(`${where}: GatherND needs indices of rank 1 or more, got a scalar`);
  if (!Number.isInteger(b) || b < 0 || b >= Math.min(q, r)) {
    throw new CleaveError(`${where}: GatherND batch_dims ${b} must be below both ranks (data ${formatShape(data)}, indices ${formatShape(indices)})`);
  }
  const k = indices[q - 1]!;
  if (typeof k !== 'number') throw new CleaveError(`${where}: GatherND needs the last dim of indices (the index tuple's length) static, got '${k}' in ${formatShape(indices)}`);
  if (k < 1 || k > r - b) {
    throw new CleaveError(`${where}: GatherND's index tuples (last dim of indices ${formatShape(indices)}) must have 1 to ${r - b} elements (data rank ${r} less batch_dims ${b}), got ${k}`);
  }
  const batch: Dim[] = [];
  for (let i = 0; i < b; i++) {
    const d = data[i]!, e = indices[i]!;
    if (typeof d === 'number' && typeof e === 'number' && d !== e) {
      throw new CleaveError(`${where}: GatherND's ${b} batch dims differ: data ${formatShape(data)} and indices ${formatShape(indices)} at axis ${i} (${d} vs ${e})`);
    }
    batch.push(typeof d === 'number' ? d : e);
  }
  return [...batch, ...indices.slice(b, q - 1), ...data.slice(b + k)];
}

function requireIndices(ctx: OpContext, i: number): ValueType {
  const t = input(ctx, i);
  if (t.dtype !== 'int64' && t.dtype !== 'int32') throw new CleaveError(`${at(ctx)}: GatherND indices must be int64 (or int32), got ${t.dtype}`);
  return t;
}

/** How the kernels walk a GatherND: batch × tuples × slice elements, each tuple k indices into `dims`. */
export interface GatherNDLayout {
  /** Product of the batch dims. */
  readonly batch: number;
  /** Index tuples per batch entry. */
  readonly tuples: number;
  /** Elements of each gathered slice. */
  readonly slice: number;
  /** Data elements per batch entry. */
  readonly batchStride: number;
  /** Sizes and element strides of the k indexed axes. */
  readonly dims: readonly number[];
  readonly strides: readonly number[];
}

const prod = (s: readonly number[]): number => s.reduce((a, x) => a * x, 1);

export function gatherNDLayout(data: readonly number[], indices: readonly number[], b: number): GatherNDLayout {
  const q = indices.length, k = indices[q - 1]!;
  const dims = data.slice(b, b + k);
  const slice = prod(data.slice(b + k));
  const strides = dims.map((_, j) => prod(data.slice(b + j + 1)));
  return { batch: prod(data.slice(0, b)), tuples: prod(indices.slice(b, q - 1)), slice, batchStride: prod(data.slice(b)), dims, strides };
}

/** Visits each (output element block, data offset) pair: dst = first output element of a slice, src its data offset. */
function forSlices(op: string, data: readonly number[], ind: Tensor, b: number, visit: (dst: number, src: number, slice: number) => void): void {
  const l = gatherNDLayout(data, ind.shape, b);
  const k = l.dims.length;
  for (let bt = 0; bt < l.batch; bt++) {
    for (let j = 0; j < l.tuples; j++) {
      const t = bt * l.tuples + j;
      let off = bt * l.batchStride;
      for (let a = 0; a < k; a++) {
        const v = ind.data[t * k + a]!, dim = l.dims[a]!;
        const w = v < 0 ? v + dim : v;
        if (!(w >= 0 && w < dim)) {
          throw new CleaveError(`${op}: index ${v} (tuple ${t}, position ${a}) is out of range for axis ${b + a} of size ${dim} of data [${data.join(', ')}]`);
        }
        off += w * l.strides[a]!;
      }
      visit(t * l.slice, off, l.slice);
    }
  }
}

function gatherNDCpu(x: Tensor, ind: Tensor, b: number): Tensor {
  const shape = gatherNDShape(x.shape, ind.shape, b, 'GatherND') as number[];
  const out = tensor(x.dtype, shape);
  if (!out.data.length) return out;
  forSlices('GatherND', x.shape, ind, b, (dst, src, n) => out.data.set(x.data.subarray(src, src + n), dst));
  return out;
}

function gatherNDGradCpu(dy: Tensor, ind: Tensor, shape: readonly number[], b: number): Tensor {
  const dx = tensor(dy.dtype, shape);
  if (!dx.data.length || !dy.data.length) return dx;
  // Repeated tuples accumulate, in tuple order (float64 sums, rounded once).
  forSlices('GatherNDGrad', shape, ind, b, (dst, src, n) => {
    for (let q = 0; q < n; q++) dx.data[src + q]! += dy.data[dst + q]!;
  });
  return roundToDtype(dx);
}

/** Checks the device kernels' limits: index tuples of at most 6 (the kernels' Shape). */
function deviceTuple(indices: DeviceTensor, what: string): void {
  const k = indices.shape.at(-1) ?? 0;
  if (k > 6) throw new CleaveError(`${what} on CUDA takes index tuples of 6 elements at most, not ${k}`);
}

const gatherND: OpDef = {
  op: 'GatherND', since: 13, category: 'movement', arity: [2, 2], attrs: batchDimsAttr,
  infer(ctx) {
    const x = input(ctx, 0);
    const ind = requireIndices(ctx, 1);
    return [{ dtype: x.dtype, shape: gatherNDShape(x.shape, ind.shape, batchDimsOf(ctx.attrs), at(ctx)) }];
  },
  cost: dataMovement,
  cuda(dev, [x, ind], [out], attrs) {
    deviceTuple(ind!, 'GatherND');
    dev.gatherND(x!, ind!, out!, batchDimsOf(attrs));
  },
  cpu: ([x, ind], attrs) => [gatherNDCpu(x!, ind!, batchDimsOf(attrs))],
  // dData = GatherNDGrad(dy, indices): the data's shape rides along as an attribute (static only).
  grad: (ctx) => {
    const { b, inputs: [x, ind], attrs, gradOutputs: [dy], needsGrad } = ctx;
    if (!dy || !needsGrad[0]) return [null, null];
    const shape = staticShape(x!.shape, `gradient of '${x!.name}'`);
    return [b.op('GatherNDGrad', [dy, ind!], { batch_dims: batchDimsOf(attrs), shape }), null];
  },
};

const gatherNDGrad: OpDef = {
  op: 'GatherNDGrad', since: 13, domain: 'cleave', category: 'movement', arity: [2, 2],
  attrs: { ...batchDimsAttr, shape: { type: 'ints', min: 0 } },
  infer(ctx) {
    const dy = input(ctx, 0);
    requireFloat(ctx, dy.dtype);
    const ind = requireIndices(ctx, 1);
    const shape = [...ints(ctx.attrs, 'shape')!];
    const want = gatherNDShape(shape, ind.shape, batchDimsOf(ctx.attrs), at(ctx));
    const mismatch = want.length !== dy.shape.length || want.some((d, i) => typeof d === 'number' && typeof dy.shape[i] === 'number' && d !== dy.shape[i]);
    if (mismatch) {
      throw new CleaveError(`${at(ctx)}: GatherNDGrad needs dy of GatherND's output shape ${formatShape(want)} (data [${shape.join(', ')}], indices ${formatShape(ind.shape)}), got ${formatShape(dy.shape)}`);
    }
    return [{ dtype: dy.dtype, shape }];
  },
  cost: (ctx, outs): Cost => ({ flops: elems(input(ctx, 0)), bytes: moved(ctx, outs) }),
  cuda(dev, [dy, ind], [out], attrs) {
    deviceTuple(ind!, 'GatherNDGrad');
    dev.gatherNDGrad(dy!, ind!, out!, batchDimsOf(attrs));
  },
  cudaAccumulate(dev, [dy, ind], acc, attrs) {
    deviceTuple(ind!, 'GatherNDGrad');
    dev.gatherNDGrad(dy!, ind!, acc, batchDimsOf(attrs), true);
  },
  cpu: ([dy, ind], attrs) => [gatherNDGradCpu(dy!, ind!, ints(attrs, 'shape')!, batchDimsOf(attrs))],
};

export const GATHERND_OPS: OpDef[] = [gatherND, gatherNDGrad];
