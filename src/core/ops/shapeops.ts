import { CleaveError, SymbolicDimError } from '../errors.js';
import { isFloat } from '../ir/dtype.js';
import { type ValueType } from '../ir/graph.js';
import { type Tensor, tensor } from '../ir/tensor.js';
import type { OpContext, OpDef } from './registry.js';
import { dataMovement, input, int, ints, float } from './util.js';

const at = (ctx: OpContext): string => `node '${ctx.node}'`;

function shapeRange(ctx: OpContext, rank: number): [number, number] {
  const clamp = (v: number): number => Math.min(Math.max(v < 0 ? v + rank : v, 0), rank);
  const start = clamp((ctx.attrs['start'] as number | undefined) ?? 0);
  const end = clamp((ctx.attrs['end'] as number | undefined) ?? rank);
  return [start, Math.max(start, end)];
}

const shape: OpDef = {
  op: 'Shape', since: 13, category: 'shape', arity: [1, 1],
  attrs: { start: { type: 'int', optional: true }, end: { type: 'int', optional: true } },
  infer(ctx) {
    const [s, e] = shapeRange(ctx, input(ctx, 0).shape.length);
    return [{ dtype: 'int64', shape: [e - s] }];
  },
  cost: () => ({ flops: 0, bytes: 0 }),
  foldFromTypes(ctx) {
    const x = input(ctx, 0);
    const [s, e] = shapeRange(ctx, x.shape.length);
    const dims = x.shape.slice(s, e);
    if (dims.some((d) => typeof d !== 'number')) return undefined;
    return [tensor('int64', [dims.length], dims as number[])];
  },
  // Kernels see static shapes: the answer is the folded one, uploaded on CUDA.
  cpu: ([x], attrs) => shape.foldFromTypes!(typesOf('Shape', x!, attrs))!,
  cudaHostSync: true,
  cuda: (dev, [x], [out], attrs) => dev.write(out!, shape.foldFromTypes!(typesOf('Shape', x!, attrs))![0]!),
};

const size: OpDef = {
  op: 'Size', since: 13, category: 'shape', arity: [1, 1], attrs: {},
  infer: () => [{ dtype: 'int64', shape: [] }],
  cost: () => ({ flops: 0, bytes: 0 }),
  foldFromTypes(ctx) {
    const s = input(ctx, 0).shape;
    if (s.some((d) => typeof d !== 'number')) return undefined;
    return [tensor('int64', [], [s.reduce<number>((a, b) => a * (b as number), 1)])];
  },
  cpu: ([x], attrs) => size.foldFromTypes!(typesOf('Size', x!, attrs))!,
  cudaHostSync: true,
  cuda: (dev, [x], [out], attrs) => dev.write(out!, size.foldFromTypes!(typesOf('Size', x!, attrs))![0]!),
};

/** What foldFromTypes sees of a node with one input of known shape (a host or device tensor). */
function typesOf(op: string, x: { dtype: ValueType['dtype']; shape: readonly number[] }, attrs: OpContext['attrs']): OpContext {
  return { node: op, inputs: [{ dtype: x.dtype, shape: x.shape }], numOutputs: 1, attrs, consts: [] };
}

const CONSTANT_VALUES = ['value', 'value_float', 'value_floats', 'value_int', 'value_ints'];

function constantValue(ctx: { node: string; attrs: OpContext['attrs'] }): Tensor {
  const a = ctx.attrs;
  const given = CONSTANT_VALUES.filter((k) => a[k] !== undefined);
  if (given.length > 1) throw new CleaveError(`node '${ctx.node}': Constant has ${given.length} value attributes (${given.join(', ')}); it takes exactly one`);
  if (a['value'] !== undefined) return a['value'] as Tensor;
  if (a['value_float'] !== undefined) return tensor('float32', [], [float(a, 'value_float')]);
  if (a['value_int'] !== undefined) return tensor('int64', [], [int(a, 'value_int')]);
  if (a['value_floats'] !== undefined) { const v = ints(a, 'value_floats')!; return tensor('float32', [v.length], v); }
  if (a['value_ints'] !== undefined) { const v = ints(a, 'value_ints')!; return tensor('int64', [v.length], v); }
  throw new CleaveError(`node '${ctx.node}': Constant has no value attribute cleave supports (value, value_float(s), value_int(s))`);
}

const constant: OpDef = {
  op: 'Constant', since: 13, category: 'shape', arity: [0, 0],
  attrs: {
    value: { type: 'tensor', optional: true },
    value_float: { type: 'float', optional: true },
    value_floats: { type: 'floats', optional: true },
    value_int: { type: 'int', optional: true },
    value_ints: { type: 'ints', optional: true },
  },
  infer(ctx) {
    const t = constantValue(ctx);
    return [{ dtype: t.dtype, shape: t.shape }];
  },
  cost: () => ({ flops: 0, bytes: 0 }),
  cpu: (_, attrs) => [constantValue({ node: 'Constant', attrs })],
  cudaHostSync: true,
  cuda: (dev, _, [out], attrs) => dev.write(out!, constantValue({ node: 'Constant', attrs })),
};

const constantOfShape: OpDef = {
  op: 'ConstantOfShape', since: 13, category: 'shape', arity: [0, 0],
  attrs: { value: { type: 'tensor', optional: true } },
  lifted: [{ input: 0, attr: 'shape', type: 'ints', sinceInput: 9, min: 0 }],
  infer(ctx) {
    const v = ctx.attrs['value'] as Tensor | undefined;
    const s = ints(ctx.attrs, 'shape');
    if (!s) throw new CleaveError(`${at(ctx)}: ConstantOfShape needs a shape`);
    if (v && v.data.length !== 1) throw new CleaveError(`${at(ctx)}: ConstantOfShape value must have one element`);
    return [{ dtype: v?.dtype ?? 'float32', shape: [...s] }];
  },
  cost: dataMovement,
  cudaHostSync: true,
  cuda(dev, _, [out], attrs) {
    const v = attrs['value'] as Tensor | undefined;
    // Float outputs fill on the device; others (int64, bool) are small index tensors, uploaded.
    if (isFloat(out!.dtype)) dev.fill(out!, v ? v.data[0]! : 0);
    else dev.write(out!, constantOfShape.cpu!([], attrs, 1)[0]!);
  },
  cpu(_, attrs) {
    const v = attrs['value'] as Tensor | undefined;
    const out = tensor(v?.dtype ?? 'float32', ints(attrs, 'shape')!);
    out.data.fill(v ? v.data[0]! : 0);
    return [out];
  },
};

function rangeCount(start: number, limit: number, delta: number, where: string): number {
  if (delta === 0) throw new CleaveError(`${where}: Range delta is 0`);
  // NaN or infinite bounds give no length at all (an endless loop, or a tensor of NaN elements).
  if (![start, limit, delta].every(Number.isFinite)) throw new CleaveError(`${where}: Range start ${start}, limit ${limit} and delta ${delta} must be finite`);
  const n = Math.max(0, Math.ceil((limit - start) / delta));
  if (!Number.isSafeInteger(n)) throw new CleaveError(`${where}: Range from ${start} to ${limit} by ${delta} has ${n} elements, more than a tensor can hold`);
  return n;
}

const range: OpDef = {
  op: 'Range', since: 13, category: 'shape', arity: [3, 3], attrs: {},
  infer(ctx) {
    const t = input(ctx, 0);
    const [s, l, d] = ctx.consts;
    for (const [i, c] of [s, l, d].entries()) {
      if (c && c.data.length !== 1) throw new CleaveError(`${at(ctx)}: Range's ${['start', 'limit', 'delta'][i]} must be a scalar, got shape [${c.shape.join(', ')}]`);
    }
    if (!s || !l || !d) throw new SymbolicDimError(`${at(ctx)}: Range's length depends on values that are not constant (fix dynamic dims with --batch or --dim)`);
    const out: ValueType = { dtype: t.dtype, shape: [rangeCount(s.data[0]!, l.data[0]!, d.data[0]!, at(ctx))] };
    return [out];
  },
  cost: dataMovement,
  cudaHostSync: true,
  cuda(dev, [s, , d], [out]) {
    // The length is static (the output's); start and delta come back to the host, a few bytes.
    const start = dev.download(s!).data[0]!, delta = dev.download(d!).data[0]!;
    const n = out!.shape[0]!;
    dev.write(out!, tensor('float64', [n], Array.from({ length: n }, (_, i) => start + i * delta)));
  },
  cpu([s, l, d]) {
    const start = s!.data[0]!;
    const delta = d!.data[0]!;
    const n = rangeCount(start, l!.data[0]!, delta, 'Range');
    const out = tensor(s!.dtype, [n]);
    for (let i = 0; i < n; i++) out.data[i] = start + i * delta;
    return [out];
  },
};

export const SHAPE_OPS: OpDef[] = [shape, size, constant, constantOfShape, range];
