import { CleaveError, SymbolicDimError } from '../errors.js';
import { dtypeFromOnnx, isFloat } from '../ir/dtype.js';
import type { Attrs, ValueType } from '../ir/graph.js';
import { type Dim, type Shape, broadcast, formatShape, normAxis, stridesOf } from '../ir/shape.js';
import { type Tensor, roundToDtype, sizeOf, tensor } from '../ir/tensor.js';
import { Rng } from '../util/random.js';
import { type CudaKernel, type DeviceTensor, type OpContext, type OpDef, flagAttr } from './registry.js';
import { dataMovement, fixInt, input, int, ints, perOutput, sameDtype } from './util.js';

const at = (ctx: OpContext): string => `node '${ctx.node}'`;

/** Copies elements of `x` into a new tensor of `shape`, reading source index `src(outIndex)`. */
function gatherCopy(x: Tensor, shape: readonly number[], src: (idx: number[]) => number): Tensor {
  const out = tensor(x.dtype, shape);
  const n = sizeOf(out);
  const idx = new Array<number>(shape.length).fill(0);
  for (let i = 0; i < n; i++) {
    out.data[i] = x.data[src(idx)]!;
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++idx[d]! < shape[d]!) break;
      idx[d] = 0;
    }
  }
  return out;
}

/** A view as a copy on the device: same elements, another shape. */
const cudaView: CudaKernel = (dev, [x], [out]) => dev.stridedCopy(x!, out!, stridesOf(out!.shape));

const withShape = (x: Tensor, shape: readonly number[]): Tensor => ({ dtype: x.dtype, shape: [...shape], data: x.data.slice() });

// --- Reshape ----------------------------------------------------------------------------------

/** Resolves 0 (copy) and -1 (infer) in a target shape; symbols cancel between input and output. */
export function reshapeTarget(ctx: OpContext, s: Shape, target: readonly number[], allowzero: boolean): Dim[] {
  const out: Dim[] = target.map((t, i) => {
    if (t === 0 && !allowzero) {
      if (i >= s.length) throw new CleaveError(`${at(ctx)}: reshape target ${formatShape(target)} copies dimension ${i} of ${formatShape(s)}, which has none`);
      return s[i]!;
    }
    return t;
  });
  const hole = out.indexOf(-1);
  if (out.filter((d) => d === -1).length > 1) throw new CleaveError(`${at(ctx)}: reshape target ${formatShape(target)} has more than one -1`);
  let inStatic = 1;
  const inSyms: string[] = [];
  for (const d of s) typeof d === 'number' ? (inStatic *= d) : inSyms.push(d);
  let outStatic = 1;
  const outSyms: string[] = [];
  out.forEach((d, i) => {
    if (i === hole) return;
    typeof d === 'number' ? (outStatic *= d) : outSyms.push(d);
  });
  for (const sym of [...outSyms]) {
    const k = inSyms.indexOf(sym);
    if (k < 0) throw new SymbolicDimError(`${at(ctx)}: cannot reshape ${formatShape(s)} to ${formatShape(out)} while '${sym}' is symbolic`);
    inSyms.splice(k, 1);
    outSyms.splice(outSyms.indexOf(sym), 1);
  }
  if (hole >= 0) {
    if (inSyms.length === 1 && inStatic === outStatic) out[hole] = inSyms[0]!;
    else if (inSyms.length) throw new SymbolicDimError(`${at(ctx)}: cannot infer -1 in ${formatShape(target)} from ${formatShape(s)} while '${inSyms[0]}' is symbolic`);
    else if (outStatic === 0 || inStatic % outStatic !== 0) throw new CleaveError(`${at(ctx)}: cannot reshape ${formatShape(s)} (${inStatic} elements) to ${formatShape(target)}`);
    else out[hole] = inStatic / outStatic;
  } else if (inSyms.length || inStatic !== outStatic) {
    if (inSyms.length) throw new SymbolicDimError(`${at(ctx)}: cannot reshape ${formatShape(s)} to ${formatShape(out)} while '${inSyms[0]}' is symbolic`);
    throw new CleaveError(`${at(ctx)}: cannot reshape ${formatShape(s)} (${inStatic} elements) to ${formatShape(out)} (${outStatic} elements)`);
  }
  return out;
}

const reshape: OpDef = {
  op: 'Reshape', since: 13, category: 'movement', arity: [1, 1], view: true,
  attrs: { allowzero: flagAttr(0) },
  lifted: [{ input: 1, attr: 'shape', type: 'ints', sinceInput: 5, min: -1 }],
  infer(ctx) {
    const x = input(ctx, 0);
    const target = ints(ctx.attrs, 'shape');
    if (!target) throw new CleaveError(`${at(ctx)}: Reshape needs a shape`);
    return [{ dtype: x.dtype, shape: reshapeTarget(ctx, x.shape, target, int(ctx.attrs, 'allowzero') === 1) }];
  },
  cost: dataMovement,
  cuda: cudaView,
  cpu([x], attrs) {
    const ctx = { node: 'Reshape', inputs: [x!], numOutputs: 1, attrs, consts: [] };
    return [withShape(x!, reshapeTarget(ctx, x!.shape, ints(attrs, 'shape')!, int(attrs, 'allowzero') === 1) as number[])];
  },
};

// --- Transpose, Flatten, Squeeze, Unsqueeze, Identity -----------------------------------------

function perm(ctx: { node: string }, rank: number, p: readonly number[] | undefined): number[] {
  const q = p ? [...p] : [...Array(rank).keys()].reverse();
  const sorted = [...q].sort((a, b) => a - b);
  if (q.length !== rank || sorted.some((v, i) => v !== i)) throw new CleaveError(`node '${ctx.node}': perm ${formatShape(q)} is not a permutation of ${rank} axes`);
  return q;
}

const transpose: OpDef = {
  op: 'Transpose', since: 13, category: 'movement', arity: [1, 1],
  attrs: { perm: { type: 'ints', optional: true } },
  infer(ctx) {
    const x = input(ctx, 0);
    const p = perm(ctx, x.shape.length, ints(ctx.attrs, 'perm'));
    return [{ dtype: x.dtype, shape: p.map((a) => x.shape[a]!) }];
  },
  cost: dataMovement,
  cuda(dev, [x], [out], attrs) {
    const p = perm({ node: 'Transpose' }, x!.shape.length, ints(attrs, 'perm'));
    const st = stridesOf(x!.shape);
    dev.stridedCopy(x!, out!, p.map((a) => st[a]!));
  },
  cpu([x], attrs) {
    const p = perm({ node: 'Transpose' }, x!.shape.length, ints(attrs, 'perm'));
    const st = stridesOf(x!.shape);
    const outShape = p.map((a) => x!.shape[a]!);
    return [gatherCopy(x!, outShape, (idx) => idx.reduce((o, v, i) => o + v * st[p[i]!]!, 0))];
  },
};

function flattenShape(ctx: OpContext, s: Shape): Dim[] {
  const axis = normAxis(int(ctx.attrs, 'axis'), s.length + 1, at(ctx));
  const prod = (ds: Shape): Dim => {
    const syms = ds.filter((d) => typeof d === 'string');
    const n = ds.reduce<number>((a, d) => a * (typeof d === 'number' ? d : 1), 1);
    if (!syms.length) return n;
    if (syms.length === 1 && n === 1) return syms[0]!;
    throw new SymbolicDimError(`${at(ctx)}: cannot flatten ${formatShape(s)} while '${syms[0]}' is symbolic`);
  };
  return [prod(s.slice(0, axis)), prod(s.slice(axis))];
}

const flatten: OpDef = {
  op: 'Flatten', since: 13, category: 'movement', arity: [1, 1], view: true,
  attrs: { axis: { type: 'int', default: 1 } },
  infer(ctx) {
    const x = input(ctx, 0);
    return [{ dtype: x.dtype, shape: flattenShape(ctx, x.shape) }];
  },
  cost: dataMovement,
  cuda: cudaView,
  cpu([x], attrs) {
    return [withShape(x!, flattenShape({ node: 'Flatten', inputs: [x!], numOutputs: 1, attrs, consts: [] }, x!.shape) as number[])];
  },
};

function squeezeShape(ctx: OpContext, s: Shape): Dim[] {
  const axes = ints(ctx.attrs, 'axes');
  if (!axes) return s.filter((d) => d !== 1);
  const drop = new Set(axes.map((a) => normAxis(a, s.length, at(ctx))));
  for (const a of drop) {
    if (s[a] !== 1 && typeof s[a] === 'number') throw new CleaveError(`${at(ctx)}: cannot squeeze axis ${a} of ${formatShape(s)}: its size is not 1`);
  }
  return s.filter((_, i) => !drop.has(i));
}

function unsqueezeShape(ctx: OpContext, s: Shape): Dim[] {
  const axes = ints(ctx.attrs, 'axes');
  if (!axes) throw new CleaveError(`${at(ctx)}: Unsqueeze needs axes`);
  const rank = s.length + axes.length;
  const ins = new Set(axes.map((a) => normAxis(a, rank, at(ctx))));
  if (ins.size !== axes.length) throw new CleaveError(`${at(ctx)}: Unsqueeze axes ${formatShape(axes)} repeat an axis`);
  const out: Dim[] = [];
  let k = 0;
  for (let i = 0; i < rank; i++) out.push(ins.has(i) ? 1 : s[k++]!);
  return out;
}

function shapeOnly(op: string, fn: (ctx: OpContext, s: Shape) => Dim[], lifted: OpDef['lifted']): OpDef {
  return {
    op, since: 13, category: 'movement', arity: [1, 1], attrs: {}, lifted, view: true,
    infer(ctx) {
      const x = input(ctx, 0);
      return [{ dtype: x.dtype, shape: fn(ctx, x.shape) }];
    },
    cost: dataMovement,
    cuda: cudaView,
    cpu([x], attrs) {
      return [withShape(x!, fn({ node: op, inputs: [x!], numOutputs: 1, attrs, consts: [] }, x!.shape) as number[])];
    },
  };
}

const identity: OpDef = {
  op: 'Identity', since: 13, category: 'movement', arity: [1, 1], attrs: {}, alias: true, view: true,
  infer: (ctx) => [input(ctx, 0)],
  cost: dataMovement,
  cuda: cudaView,
  cpu: ([x]) => [withShape(x!, x!.shape)],
};

// --- Concat, Split ----------------------------------------------------------------------------

const concat: OpDef = {
  op: 'Concat', since: 13, category: 'movement', arity: [1, 1024],
  attrs: { axis: { type: 'int' } },
  infer(ctx) {
    const idx = ctx.inputs.map((_, i) => i);
    const d = sameDtype(ctx, idx);
    const shapes = idx.map((i) => input(ctx, i).shape);
    const s0 = shapes[0]!;
    const axis = normAxis(int(ctx.attrs, 'axis'), s0.length, at(ctx));
    let total: Dim = 0;
    for (const s of shapes) {
      if (s.length !== s0.length || s.some((v, i) => i !== axis && v !== s0[i] && typeof v === 'number' && typeof s0[i] === 'number')) {
        throw new CleaveError(`${at(ctx)}: cannot concatenate ${formatShape(s0)} and ${formatShape(s)} along axis ${axis}`);
      }
      const a = s[axis]!;
      if (typeof a !== 'number' || typeof total !== 'number') {
        if (shapes.length === 1) total = a;
        else throw new SymbolicDimError(`${at(ctx)}: cannot concatenate along symbolic dimension '${a}'`);
      } else total += a;
    }
    const out = [...s0];
    out[axis] = total;
    return [{ dtype: d, shape: out }];
  },
  cost: dataMovement,
  cuda: (dev, ins, [out], attrs) => dev.concat(ins as DeviceTensor[], out!, normAxis(int(attrs, 'axis'), out!.shape.length, 'Concat')),
  cpu(inputs, attrs) {
    const ts = inputs as Tensor[];
    const s0 = ts[0]!.shape;
    const axis = normAxis(int(attrs, 'axis'), s0.length, 'Concat');
    const outer = s0.slice(0, axis).reduce((a, b) => a * b, 1);
    const inner = s0.slice(axis + 1).reduce((a, b) => a * b, 1);
    const shape = [...s0];
    shape[axis] = ts.reduce((a, t) => a + t.shape[axis]!, 0);
    const out = tensor(ts[0]!.dtype, shape);
    if (!out.data.length) return [out];
    let o = 0;
    for (let i = 0; i < outer; i++) {
      for (const t of ts) {
        const chunk = t.shape[axis]! * inner;
        out.data.set(t.data.subarray(i * chunk, (i + 1) * chunk), o);
        o += chunk;
      }
    }
    return [out];
  },
};

function splitSizes(ctx: OpContext, s: Shape): number[] {
  const axis = normAxis(int(ctx.attrs, 'axis'), s.length, at(ctx));
  const dim = s[axis]!;
  const given = ints(ctx.attrs, 'split');
  if (given) {
    if (given.length !== ctx.numOutputs) throw new CleaveError(`${at(ctx)}: split ${formatShape(given)} has ${given.length} parts for ${ctx.numOutputs} outputs`);
    if (typeof dim === 'number' && given.reduce((a, b) => a + b, 0) !== dim) throw new CleaveError(`${at(ctx)}: split ${formatShape(given)} does not add up to dimension ${axis} of ${formatShape(s)}`);
    return [...given];
  }
  if (typeof dim !== 'number') throw new SymbolicDimError(`${at(ctx)}: cannot split symbolic dimension '${dim}'`);
  const n = ctx.attrs['num_outputs'] !== undefined ? int(ctx.attrs, 'num_outputs') : ctx.numOutputs;
  // The parts are the node's outputs: another count would leave outputs undefined or make parts nobody reads.
  if (n !== ctx.numOutputs) throw new CleaveError(`${at(ctx)}: num_outputs ${n} does not match the node's ${ctx.numOutputs} outputs`);
  const part = Math.ceil(dim / n);
  return Array.from({ length: n }, (_, i) => Math.max(0, Math.min(part, dim - i * part)));
}

const split: OpDef = {
  op: 'Split', since: 13, category: 'movement', arity: [1, 1], outputs: [1, 1024],
  attrs: { axis: { type: 'int', default: 0 }, num_outputs: { type: 'int', optional: true, min: 1 } },
  lifted: [{ input: 1, attr: 'split', type: 'ints', sinceInput: 13, min: 0 }],
  infer(ctx) {
    const x = input(ctx, 0);
    const axis = normAxis(int(ctx.attrs, 'axis'), x.shape.length, at(ctx));
    return splitSizes(ctx, x.shape).map((n) => {
      const s = [...x.shape];
      s[axis] = n;
      return { dtype: x.dtype, shape: s };
    });
  },
  cost: dataMovement,
  cuda(dev, [x], outs, attrs) {
    const axis = normAxis(int(attrs, 'axis'), x!.shape.length, 'Split');
    const st = stridesOf(x!.shape);
    let start = 0;
    for (const o of outs) {
      dev.stridedCopy(x!, o, st, start * st[axis]!);
      start += o.shape[axis]!;
    }
  },
  cpu([x], attrs, numOutputs) {
    const t = x!;
    const axis = normAxis(int(attrs, 'axis'), t.shape.length, 'Split');
    const sizes = splitSizes({ node: 'Split', inputs: [t], numOutputs, attrs, consts: [] }, t.shape);
    let start = 0;
    return sizes.map((len) => {
      const shape = [...t.shape];
      shape[axis] = len;
      const st = stridesOf(t.shape);
      const s0 = start;
      start += len;
      return gatherCopy(t, shape, (idx) => idx.reduce((o, v, i) => o + (i === axis ? v + s0 : v) * st[i]!, 0));
    });
  },
};

// --- Slice ------------------------------------------------------------------------------------

interface SliceAxis { axis: number; start: number; step: number; len: number }

/**
 * Where a slice of a dense tensor of `shape` reads it: the element strides and the first element's
 * offset (a strided copy reads the slice from them; SliceGrad writes its gradient back through them).
 */
export function sliceStrides(node: string, attrs: Attrs, shape: readonly number[]): { strides: number[]; base: number } {
  const { axes } = sliceAxes({ node, inputs: [], numOutputs: 1, attrs, consts: [] }, shape);
  const st = stridesOf(shape);
  const strides = [...st];
  let base = 0;
  for (const a of axes) {
    base += a.start * st[a.axis]!;
    strides[a.axis] = a.step * st[a.axis]!;
  }
  return { strides, base };
}

export function sliceAxes(ctx: OpContext, s: Shape): { shape: Dim[]; axes: SliceAxis[] } {
  const starts = ints(ctx.attrs, 'starts');
  const ends = ints(ctx.attrs, 'ends');
  if (!starts || !ends || starts.length !== ends.length) throw new CleaveError(`${at(ctx)}: Slice needs starts and ends of equal length`);
  const axes = ints(ctx.attrs, 'axes') ?? starts.map((_, i) => i);
  const steps = ints(ctx.attrs, 'steps') ?? starts.map(() => 1);
  // One entry per sliced axis in each list, each axis once: else a start or step would be read as undefined.
  if (axes.length !== starts.length || steps.length !== starts.length) {
    throw new CleaveError(`${at(ctx)}: Slice has ${starts.length} starts and ends but ${axes.length} axes and ${steps.length} steps; they must be as many`);
  }
  const seen = new Set<number>();
  const shape = [...s];
  const out: SliceAxis[] = [];
  axes.forEach((a0, i) => {
    const axis = normAxis(a0, s.length, at(ctx));
    if (seen.has(axis)) throw new CleaveError(`${at(ctx)}: Slice axes ${formatShape(axes)} repeat axis ${axis}`);
    seen.add(axis);
    const step = steps[i]!;
    if (step === 0) throw new CleaveError(`${at(ctx)}: Slice step is 0`);
    const dim = s[axis]!;
    let st = starts[i]!;
    let en = ends[i]!;
    if (typeof dim !== 'number') {
      if (st === 0 && step === 1 && en >= 2 ** 31 - 1) return;
      throw new SymbolicDimError(`${at(ctx)}: cannot slice symbolic dimension '${dim}'`);
    }
    if (st < 0) st += dim;
    if (en < 0) en += dim;
    if (step > 0) {
      st = Math.min(Math.max(st, 0), dim);
      en = Math.min(Math.max(en, 0), dim);
    } else {
      st = Math.min(Math.max(st, 0), dim - 1);
      en = Math.min(Math.max(en, -1), dim - 1);
    }
    const len = Math.max(0, Math.ceil((en - st) / step));
    shape[axis] = len;
    out.push({ axis, start: st, step, len });
  });
  return { shape, axes: out };
}

const slice: OpDef = {
  op: 'Slice', since: 13, category: 'movement', arity: [1, 1], attrs: {},
  lifted: [
    { input: 1, attr: 'starts', type: 'ints', sinceInput: 10 },
    { input: 2, attr: 'ends', type: 'ints', sinceInput: 10 },
    { input: 3, attr: 'axes', type: 'ints', sinceInput: 10 },
    { input: 4, attr: 'steps', type: 'ints', sinceInput: 10, nonzero: true },
  ],
  infer(ctx) {
    const x = input(ctx, 0);
    return [{ dtype: x.dtype, shape: sliceAxes(ctx, x.shape).shape }];
  },
  cost: dataMovement,
  cuda(dev, [x], [out], attrs) {
    const { strides, base } = sliceStrides('Slice', attrs, x!.shape);
    dev.stridedCopy(x!, out!, strides, base);
  },
  cpu([x], attrs) {
    const { shape, axes } = sliceAxes({ node: 'Slice', inputs: [x!], numOutputs: 1, attrs, consts: [] }, x!.shape);
    const st = stridesOf(x!.shape);
    const start = x!.shape.map(() => 0);
    const step = x!.shape.map(() => 1);
    for (const a of axes) {
      start[a.axis] = a.start;
      step[a.axis] = a.step;
    }
    return [gatherCopy(x!, shape as number[], (idx) => idx.reduce((o, v, i) => o + (start[i]! + v * step[i]!) * st[i]!, 0))];
  },
};

// --- Gather, GatherElements -------------------------------------------------------------------

function requireIndices(ctx: OpContext, i: number): ValueType {
  const t = input(ctx, i);
  if (t.dtype !== 'int64' && t.dtype !== 'int32') throw new CleaveError(`${at(ctx)}: indices must be int32 or int64, got ${t.dtype}`);
  return t;
}

function checkIndex(v: number, dim: number, where: string): number {
  const k = v < 0 ? v + dim : v;
  if (k < 0 || k >= dim) throw new CleaveError(`${where}: index ${v} is out of range for a dimension of size ${dim}`);
  return k;
}

const gather: OpDef = {
  op: 'Gather', since: 13, category: 'movement', arity: [2, 2],
  attrs: { axis: { type: 'int', default: 0 } },
  infer(ctx) {
    const x = input(ctx, 0);
    const ind = requireIndices(ctx, 1);
    const axis = normAxis(int(ctx.attrs, 'axis'), x.shape.length, at(ctx));
    return [{ dtype: x.dtype, shape: [...x.shape.slice(0, axis), ...ind.shape, ...x.shape.slice(axis + 1)] }];
  },
  cost: dataMovement,
  cuda: (dev, [x, ind], [out], attrs) => dev.gather(x!, ind!, out!, normAxis(int(attrs, 'axis'), x!.shape.length, 'Gather')),
  cpu([x, ind], attrs) {
    const axis = normAxis(int(attrs, 'axis'), x!.shape.length, 'Gather');
    const outer = x!.shape.slice(0, axis).reduce((a, b) => a * b, 1);
    const inner = x!.shape.slice(axis + 1).reduce((a, b) => a * b, 1);
    const dim = x!.shape[axis]!;
    const ni = sizeOf(ind!);
    const out = tensor(x!.dtype, [...x!.shape.slice(0, axis), ...ind!.shape, ...x!.shape.slice(axis + 1)]);
    if (!out.data.length) return [out];
    for (let o = 0; o < outer; o++) {
      for (let j = 0; j < ni; j++) {
        const k = checkIndex(ind!.data[j]!, dim, 'Gather');
        out.data.set(x!.data.subarray((o * dim + k) * inner, (o * dim + k + 1) * inner), (o * ni + j) * inner);
      }
    }
    return [out];
  },
};

const gatherElements: OpDef = {
  op: 'GatherElements', since: 13, category: 'movement', arity: [2, 2],
  attrs: { axis: { type: 'int', default: 0 } },
  infer(ctx) {
    const x = input(ctx, 0);
    const ind = requireIndices(ctx, 1);
    normAxis(int(ctx.attrs, 'axis'), x.shape.length, at(ctx));
    if (ind.shape.length !== x.shape.length) throw new CleaveError(`${at(ctx)}: indices ${formatShape(ind.shape)} and data ${formatShape(x.shape)} differ in rank`);
    return [{ dtype: x.dtype, shape: ind.shape }];
  },
  cost: dataMovement,
  cuda: (dev, [x, ind], [out], attrs) => dev.gatherElements(x!, ind!, out!, normAxis(int(attrs, 'axis'), x!.shape.length, 'GatherElements')),
  cpu([x, ind], attrs) {
    const axis = normAxis(int(attrs, 'axis'), x!.shape.length, 'GatherElements');
    const st = stridesOf(x!.shape);
    const ist = stridesOf(ind!.shape);
    const dim = x!.shape[axis]!;
    const out = gatherCopy(x!, ind!.shape, (idx) => {
      const flat = idx.reduce((o, v, i) => o + v * ist[i]!, 0);
      const k = checkIndex(ind!.data[flat]!, dim, 'GatherElements');
      return idx.reduce((o, v, i) => o + (i === axis ? k : v) * st[i]!, 0);
    });
    return [out];
  },
};

// --- Expand, Tile, Trilu ----------------------------------------------------------------------

const expand: OpDef = {
  op: 'Expand', since: 13, category: 'movement', arity: [1, 1], attrs: {},
  lifted: [{ input: 1, attr: 'shape', type: 'ints', sinceInput: 8, min: 0 }],
  infer(ctx) {
    const x = input(ctx, 0);
    const shape = ints(ctx.attrs, 'shape');
    if (!shape) throw new CleaveError(`${at(ctx)}: Expand needs a shape`);
    return [{ dtype: x.dtype, shape: broadcast([x.shape, shape], at(ctx)) }];
  },
  cost: dataMovement,
  cuda(dev, [x], [out]) {
    const st = stridesOf(x!.shape), r = out!.shape.length - x!.shape.length;
    dev.stridedCopy(x!, out!, out!.shape.map((_, i) => (i < r || x!.shape[i - r] === 1 ? 0 : st[i - r]!)));
  },
  cpu([x], attrs) {
    const shape = broadcast([x!.shape, ints(attrs, 'shape')!], 'Expand') as number[];
    const zero = tensor(x!.dtype, shape);
    return [roundToDtype(broadcastCopy(x!, zero))];
  },
};

function broadcastCopy(x: Tensor, like: Tensor): Tensor {
  const r = like.shape.length - x.shape.length;
  const st = stridesOf(x.shape);
  return gatherCopy(x, like.shape, (idx) => idx.reduce((o, v, i) => (i < r || x.shape[i - r] === 1 ? o : o + v * st[i - r]!), 0));
}

const tile: OpDef = {
  op: 'Tile', since: 13, category: 'movement', arity: [1, 1], attrs: {},
  lifted: [{ input: 1, attr: 'repeats', type: 'ints', sinceInput: 6, min: 0 }],
  infer(ctx) {
    const x = input(ctx, 0);
    const reps = ints(ctx.attrs, 'repeats');
    if (!reps) throw new CleaveError(`${at(ctx)}: Tile needs repeats`);
    if (reps.length !== x.shape.length) throw new CleaveError(`${at(ctx)}: repeats ${formatShape(reps)} do not match rank of ${formatShape(x.shape)}`);
    return [{ dtype: x.dtype, shape: x.shape.map((d, i) => (reps[i] === 1 ? d : typeof d === 'number' ? d * reps[i]! : symbolic(ctx, d))) }];
  },
  cost: dataMovement,
  cuda(dev, [x], [out], attrs) {
    // The output read as [r0, d0, r1, d1, …]: its index a·d + k along an axis is (a, k), which
    // reads x at k whatever the repeat a.
    const reps = ints(attrs, 'repeats')!;
    const st = stridesOf(x!.shape);
    const shape = x!.shape.flatMap((d, i) => [reps[i]!, d]);
    dev.stridedCopy(x!, { ...out!, shape }, x!.shape.flatMap((_, i) => [0, st[i]!]));
  },
  cpu([x], attrs) {
    const reps = ints(attrs, 'repeats')!;
    const shape = x!.shape.map((d, i) => d * reps[i]!);
    const st = stridesOf(x!.shape);
    return [gatherCopy(x!, shape, (idx) => idx.reduce((o, v, i) => o + (v % x!.shape[i]!) * st[i]!, 0))];
  },
};

function symbolic(ctx: OpContext, d: string): never {
  throw new SymbolicDimError(`${at(ctx)}: cannot tile symbolic dimension '${d}'`);
}

const trilu: OpDef = {
  op: 'Trilu', since: 14, category: 'movement', arity: [1, 1],
  attrs: { upper: flagAttr(1) },
  lifted: [{ input: 1, attr: 'k', type: 'int', sinceInput: 14 }],
  infer(ctx) {
    const x = input(ctx, 0);
    if (x.shape.length < 2) throw new CleaveError(`${at(ctx)}: Trilu needs rank ≥ 2, got ${formatShape(x.shape)}`);
    return [x];
  },
  cost: perOutput(1),
  cuda: (dev, [x], [out], attrs) => dev.trilu(x!, out!, (attrs['k'] as number | undefined) ?? 0, int(attrs, 'upper') === 1),
  cpu([x], attrs) {
    const t = x!;
    const k = (attrs['k'] as number | undefined) ?? 0;
    const upper = int(attrs, 'upper') === 1;
    const [rows, cols] = t.shape.slice(-2) as [number, number];
    const out = withShape(t, t.shape);
    for (let i = 0; i < out.data.length; i++) {
      const c = i % cols;
      const r = Math.floor(i / cols) % rows;
      const keep = upper ? c - r >= k : c - r <= k;
      if (!keep) out.data[i] = 0;
    }
    return [out];
  },
};

// --- Cast, Dropout ----------------------------------------------------------------------------

const cast: OpDef = {
  op: 'Cast', since: 13, category: 'elementwise', arity: [1, 1],
  attrs: { to: { type: 'dtype' }, saturate: flagAttr(1) },
  infer(ctx) {
    const x = input(ctx, 0);
    return [{ dtype: dtypeFromOnnx(int(ctx.attrs, 'to'), at(ctx)), shape: x.shape }];
  },
  cost: perOutput(1),
  cuda: (dev, [x], [out]) => dev.cast(x!, out!),
  cpu([x], attrs) {
    const to = dtypeFromOnnx(int(attrs, 'to'), 'Cast');
    const out = tensor(to, x!.shape);
    const float = isFloat(to);
    for (let i = 0; i < out.data.length; i++) out.data[i] = float ? x!.data[i]! : fixInt(to, x!.data[i]!);
    return [roundToDtype(out)];
  },
};

/** Cast to the element type of a second input (opset 15): the dynamo exporter's unoptimized spelling of `.to(y.dtype)`. */
const castLike: OpDef = {
  op: 'CastLike', since: 15, category: 'elementwise', arity: [2, 2],
  attrs: { saturate: flagAttr(1) },
  infer(ctx) {
    return [{ dtype: input(ctx, 1).dtype, shape: input(ctx, 0).shape }];
  },
  cost: perOutput(1),
  cuda: (dev, [x], [out]) => dev.cast(x!, out!),
  cpu([x, like]) {
    const to = like!.dtype;
    const out = tensor(to, x!.shape);
    const float = isFloat(to);
    for (let i = 0; i < out.data.length; i++) out.data[i] = float ? x!.data[i]! : fixInt(to, x!.data[i]!);
    return [roundToDtype(out)];
  },
};

/** Masks of Dropout nodes without a seed; its state goes into checkpoints. */
export const dropoutRng = new Rng(0x5eed);

const dropout: OpDef = {
  op: 'Dropout', since: 13, category: 'random', arity: [1, 1], outputs: [1, 2], noFold: true,
  training: (attrs) => ({ attrs: { ...attrs, training_mode: 1 }, numOutputs: 2 }),
  attrs: { seed: { type: 'int', optional: true } },
  lifted: [
    { input: 1, attr: 'ratio', type: 'float', sinceInput: 12 },
    { input: 2, attr: 'training_mode', type: 'bool', sinceInput: 12 },
  ],
  infer(ctx) {
    const x = input(ctx, 0);
    const r = (ctx.attrs['ratio'] as number | undefined) ?? 0.5;
    if (!(r >= 0 && r < 1)) throw new CleaveError(`${at(ctx)}: dropout ratio ${r} is not in [0, 1)`);
    const outs: ValueType[] = [{ dtype: x.dtype, shape: x.shape }];
    if (ctx.numOutputs > 1) outs.push({ dtype: 'bool', shape: x.shape });
    return outs;
  },
  cost: perOutput(2),
  cuda(dev, [x], [y, mask], attrs) {
    const ratio = (attrs['ratio'] as number | undefined) ?? 0.5;
    if (!attrs['training_mode'] || ratio === 0) {
      // Ratio 0 keeps every element and scales by 1: the CPU kernel's copy, drawing nothing.
      dev.dropout(x!, y!, mask ?? null, 0, 0);
      return;
    }
    // The same draws as the CPU kernel's: element i takes draw i+1 from the generator's state.
    const rng = attrs['seed'] !== undefined ? new Rng(attrs['seed'] as number) : dropoutRng;
    const state = rng.state;
    rng.skip(sizeOf(x!));
    dev.dropout(x!, y!, mask ?? null, ratio, state);
  },
  cpu([x], attrs) {
    const mask = tensor('bool', x!.shape);
    mask.data.fill(1);
    const ratio = (attrs['ratio'] as number | undefined) ?? 0.5;
    if (!attrs['training_mode'] || ratio === 0) return [withShape(x!, x!.shape), mask];
    // A node's seed fixes its masks; without one, masks differ on every call, as in training.
    const rng = attrs['seed'] !== undefined ? new Rng(attrs['seed'] as number) : dropoutRng;
    const y = tensor(x!.dtype, x!.shape);
    const scale = 1 / (1 - ratio);
    for (let i = 0; i < y.data.length; i++) {
      const keep = rng.next() >= ratio;
      mask.data[i] = keep ? 1 : 0;
      y.data[i] = keep ? x!.data[i]! * scale : 0;
    }
    return [roundToDtype(y), mask];
  },
};

// --- Pad, CumSum -----------------------------------------------------------------------------

/** Pad's modes, in the order of the CUDA kernels' codes. */
export const PAD_MODES = ['constant', 'reflect', 'edge'];

/** The input coordinate output coordinate p − begin reads along a dim of n (−1: the constant). */
export function padSource(p: number, n: number, mode: string): number {
  if (p >= 0 && p < n) return p;
  if (mode === 'constant' || n === 0) return -1;
  if (mode === 'edge') return p < 0 ? 0 : n - 1;
  return p < 0 ? -p : 2 * (n - 1) - p;
}

/** Leading and trailing pads of every dim, from `pads` over `axes` (all dims when absent). */
export function padsOf(ctx: { node: string; attrs: Attrs }, rank: number): { begin: number[]; end: number[] } {
  const pads = ints(ctx.attrs, 'pads');
  if (!pads) throw new CleaveError(`node '${ctx.node}': Pad needs pads`);
  const axes = (ints(ctx.attrs, 'axes') ?? [...Array(rank).keys()]).map((a) => normAxis(a, rank, `node '${ctx.node}'`));
  if (new Set(axes).size !== axes.length) throw new CleaveError(`node '${ctx.node}': Pad axes ${formatShape(ints(ctx.attrs, 'axes')!)} repeat an axis`);
  if (pads.length !== 2 * axes.length) {
    throw new CleaveError(`node '${ctx.node}': Pad has ${pads.length} pads for ${axes.length} axes of an input of rank ${rank}; it needs two per axis (${2 * axes.length})`);
  }
  const begin = new Array<number>(rank).fill(0), end = new Array<number>(rank).fill(0);
  axes.forEach((a, i) => { begin[a] = pads[i]!; end[a] = pads[i + axes.length]!; });
  return { begin, end };
}

function padShape(ctx: OpContext, s: Shape): Dim[] {
  const { begin, end } = padsOf(ctx, s.length);
  const mode = (ctx.attrs['mode'] as string | undefined) ?? 'constant';
  return s.map((d, i) => {
    const b = begin[i]!, e = end[i]!;
    if (!b && !e) return d;
    if (typeof d !== 'number') throw new SymbolicDimError(`${at(ctx)}: cannot pad symbolic dimension '${d}'`);
    if (d + b + e < 0) throw new CleaveError(`${at(ctx)}: pads ${b} and ${e} of dimension ${i} of ${formatShape(s)} leave a negative size ${d + b + e}`);
    if (mode === 'reflect' && (b > d - 1 || e > d - 1)) {
      throw new CleaveError(`${at(ctx)}: reflect pads ${b} and ${e} of dimension ${i} of ${formatShape(s)} must be less than its size ${d}`);
    }
    if (mode === 'edge' && d === 0 && (b > 0 || e > 0)) throw new CleaveError(`${at(ctx)}: edge pads of dimension ${i} of ${formatShape(s)} have no edge to repeat`);
    return d + b + e;
  });
}

const pad: OpDef = {
  op: 'Pad', since: 13, category: 'movement', arity: [1, 1],
  attrs: { mode: { type: 'string', default: 'constant', oneOf: PAD_MODES } },
  lifted: [
    { input: 1, attr: 'pads', type: 'ints', sinceInput: 11 },
    { input: 2, attr: 'constant_value', type: 'float', sinceInput: 11, like: 0 },
    { input: 3, attr: 'axes', type: 'ints', sinceInput: 18 },
  ],
  infer(ctx) {
    const x = input(ctx, 0);
    return [{ dtype: x.dtype, shape: padShape(ctx, x.shape) }];
  },
  cost: dataMovement,
  cuda(dev, [x], [out], attrs) {
    const { begin } = padsOf({ node: 'Pad', attrs }, x!.shape.length);
    dev.pad(x!, out!, PAD_MODES.indexOf(attrs['mode'] as string), begin, (attrs['constant_value'] as number | undefined) ?? 0);
  },
  cpu([x], attrs) {
    const t = x!;
    const ctx = { node: 'Pad', inputs: [t], numOutputs: 1, attrs, consts: [] };
    const shape = padShape(ctx, t.shape) as number[];
    const { begin } = padsOf(ctx, t.shape.length);
    const mode = attrs['mode'] as string;
    const value = fixInt(t.dtype, (attrs['constant_value'] as number | undefined) ?? 0);
    const st = stridesOf(t.shape);
    const out = tensor(t.dtype, shape);
    const idx = new Array<number>(shape.length).fill(0);
    for (let i = 0; i < out.data.length; i++) {
      let off = 0;
      for (let d = 0; d < shape.length && off >= 0; d++) {
        const p = padSource(idx[d]! - begin[d]!, t.shape[d]!, mode);
        off = p < 0 ? -1 : off + p * st[d]!;
      }
      out.data[i] = off >= 0 ? t.data[off]! : value;
      for (let d = shape.length - 1; d >= 0; d--) { if (++idx[d]! < shape[d]!) break; idx[d] = 0; }
    }
    return [roundToDtype(out)];
  },
};

const cumSum: OpDef = {
  op: 'CumSum', since: 13, category: 'reduce', arity: [1, 1],
  attrs: { exclusive: flagAttr(0), reverse: flagAttr(0) },
  lifted: [{ input: 1, attr: 'axis', type: 'int', sinceInput: 11 }],
  infer(ctx) {
    const x = input(ctx, 0);
    if (x.dtype === 'bool') throw new CleaveError(`${at(ctx)}: does not take bool inputs`);
    if (ctx.attrs['axis'] === undefined) throw new CleaveError(`${at(ctx)}: CumSum needs an axis`);
    normAxis(int(ctx.attrs, 'axis'), x.shape.length, at(ctx));
    return [x];
  },
  cost: perOutput(1),
  cuda: (dev, [x], [out], attrs) =>
    dev.cumSum(x!, out!, normAxis(int(attrs, 'axis'), x!.shape.length, 'CumSum'), int(attrs, 'exclusive') === 1, int(attrs, 'reverse') === 1),
  cpu([x], attrs) {
    const t = x!;
    const axis = normAxis(int(attrs, 'axis'), t.shape.length, 'CumSum');
    const exclusive = int(attrs, 'exclusive') === 1, reverse = int(attrs, 'reverse') === 1;
    const dim = t.shape[axis]!;
    const inner = t.shape.slice(axis + 1).reduce((a, b) => a * b, 1);
    const outer = t.shape.slice(0, axis).reduce((a, b) => a * b, 1);
    const out = tensor(t.dtype, t.shape);
    for (let o = 0; o < outer; o++) {
      for (let q = 0; q < inner; q++) {
        let acc = 0;
        for (let j = 0; j < dim; j++) {
          const i = (o * dim + (reverse ? dim - 1 - j : j)) * inner + q;
          if (exclusive) { out.data[i] = fixInt(t.dtype, acc); acc += t.data[i]!; } else { acc += t.data[i]!; out.data[i] = fixInt(t.dtype, acc); }
        }
      }
    }
    return [roundToDtype(out)];
  },
};

export const MOVEMENT_OPS: OpDef[] = [
  reshape, transpose, flatten,
  shapeOnly('Squeeze', squeezeShape, [{ input: 1, attr: 'axes', type: 'ints', sinceInput: 13 }]),
  shapeOnly('Unsqueeze', unsqueezeShape, [{ input: 1, attr: 'axes', type: 'ints', sinceInput: 13 }]),
  identity, concat, split, slice, gather, gatherElements, expand, tile, trilu, cast, castLike, dropout, pad, cumSum,
];
