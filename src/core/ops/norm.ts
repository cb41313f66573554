import { CleaveError } from '../errors.js';
import type { ValueType } from '../ir/graph.js';
import { type Dim, formatShape, normAxis } from '../ir/shape.js';
import { type Tensor, roundToDtype, tensor } from '../ir/tensor.js';
import { type CudaDevice, type DeviceTensor, type OpContext, type OpDef, flagAttr } from './registry.js';
import { float, input, int, perOutput, requireFloat, requireRank, sameDtype } from './util.js';

/**
 * Mean and 1/√(var + ε) of each row over the normalized axes (from `axis` on), in float64: the
 * forward's statistics, and what the gradient ops recompute from x (cheaper than stashing them).
 */
export function rowStats(x: Tensor, axis: number, eps: number): { inner: number; outer: number; mean: Float64Array; inv: Float64Array } {
  const inner = x.shape.slice(axis).reduce((a, b) => a * b, 1);
  const outer = x.data.length / inner;
  const mean = new Float64Array(outer), inv = new Float64Array(outer);
  for (let o = 0; o < outer; o++) {
    let m = 0;
    for (let k = 0; k < inner; k++) m += x.data[o * inner + k]!;
    m /= inner;
    let v = 0;
    for (let k = 0; k < inner; k++) v += (x.data[o * inner + k]! - m) ** 2;
    mean[o] = m;
    inv[o] = 1 / Math.sqrt(v / inner + eps);
  }
  return { inner, outer, mean, inv };
}

const at = (ctx: OpContext): string => `node '${ctx.node}'`;

function checkBroadcastsTo(ctx: OpContext, i: number, target: readonly Dim[]): void {
  const s = ctx.inputs[i]?.shape;
  if (!s) return;
  const ok = s.length <= target.length && s.every((d, k) => d === 1 || d === target[target.length - s.length + k] || typeof d === 'string');
  if (!ok) throw new CleaveError(`${at(ctx)}: input ${i} of shape ${formatShape(s)} does not match the normalized shape ${formatShape(target)}`);
}

const layerNorm: OpDef = {
  op: 'LayerNormalization', since: 17, category: 'norm', arity: [2, 3], outputs: [1, 3],
  attrs: { axis: { type: 'int', default: -1 }, epsilon: { type: 'float', default: 1e-5, min: 0 }, stash_type: { type: 'int', default: 1 } },
  infer(ctx) {
    const x = input(ctx, 0);
    requireFloat(ctx, x.dtype);
    const axis = normAxis(int(ctx.attrs, 'axis'), x.shape.length, at(ctx));
    const normalized = x.shape.slice(axis);
    checkBroadcastsTo(ctx, 1, normalized);
    checkBroadcastsTo(ctx, 2, normalized);
    const stat: ValueType = { dtype: 'float32', shape: x.shape.map((d, i) => (i < axis ? d : 1)) };
    return [x, stat, stat].slice(0, ctx.numOutputs);
  },
  cost: (ctx, outs) => perOutput(8)(ctx, outs.slice(0, 1)),
  cuda(dev, [x, scale, bias], outs, attrs) {
    if (normAxis(int(attrs, 'axis'), x!.shape.length, 'LayerNormalization') !== x!.shape.length - 1 || outs.length > 1) {
      throw new CleaveError('LayerNormalization on CUDA normalizes the last axis and gives Y only');
    }
    dev.layerNorm(x!, scale ?? null, bias ?? null, outs[0]!, float(attrs, 'epsilon'));
  },
  cpu([x, scale, bias], attrs) {
    const t = x!;
    const axis = normAxis(int(attrs, 'axis'), t.shape.length, 'LayerNormalization');
    const eps = float(attrs, 'epsilon');
    const { inner, outer, mean: m, inv: r } = rowStats(t, axis, eps);
    const y = tensor(t.dtype, t.shape);
    const statShape = t.shape.map((d, i) => (i < axis ? d : 1));
    const mean = tensor('float32', statShape);
    const inv = tensor('float32', statShape);
    const pick = (p: Tensor | null, k: number, dflt: number): number => (p ? p.data[p.data.length === inner ? k : k % p.data.length]! : dflt);
    for (let o = 0; o < outer; o++) {
      mean.data[o] = m[o]!;
      inv.data[o] = r[o]!;
      for (let k = 0; k < inner; k++) y.data[o * inner + k] = (t.data[o * inner + k]! - m[o]!) * r[o]! * pick(scale!, k, 1) + pick(bias ?? null, k, 0);
    }
    return [roundToDtype(y), mean, inv];
  },
};

const batchNorm: OpDef = {
  op: 'BatchNormalization', since: 13, category: 'norm', arity: [5, 5], outputs: [1, 3], stateInputs: [3, 4],
  stateUpdates: [[1, 3], [2, 4]],
  training: (attrs) => ({ attrs: { ...attrs, training_mode: 1 }, numOutputs: 3 }),
  attrs: { epsilon: { type: 'float', default: 1e-5, min: 0 }, momentum: { type: 'float', default: 0.9 }, training_mode: flagAttr(0) },
  infer(ctx) {
    const x = requireRank(ctx, 0, [2, 3, 4, 5]);
    requireFloat(ctx, input(ctx, 0).dtype);
    const c = x[1]!;
    for (let i = 1; i < 5; i++) {
      const s = input(ctx, i).shape;
      if (s.length !== 1 || (typeof s[0] === 'number' && typeof c === 'number' && s[0] !== c)) {
        throw new CleaveError(`${at(ctx)}: input ${i} has shape ${formatShape(s)}; expected [${c}] for input ${formatShape(x)}`);
      }
    }
    if (ctx.numOutputs > 1 && !int(ctx.attrs, 'training_mode')) throw new CleaveError(`${at(ctx)}: running statistics outputs need training_mode=1`);
    const stat: ValueType = { dtype: input(ctx, 3).dtype, shape: [c] };
    return [input(ctx, 0), stat, stat].slice(0, ctx.numOutputs);
  },
  cost: (ctx, outs) => perOutput(int(ctx.attrs, 'training_mode') ? 8 : 4)(ctx, outs.slice(0, 1)),
  cuda: (dev, [x, scale, b, rm, rv], [y, runMean, runVar], attrs) =>
    dev.batchNorm(x!, scale!, b!, rm!, rv!, y!, runMean ?? null, runVar ?? null, float(attrs, 'epsilon'), float(attrs, 'momentum'), int(attrs, 'training_mode') === 1),
  cpu([x, scale, b, rm, rv], attrs) {
    const t = x!;
    const C = t.shape[1]!;
    const inner = t.shape.slice(2).reduce((p, q) => p * q, 1);
    const N = t.shape[0]!;
    const eps = float(attrs, 'epsilon');
    const mom = float(attrs, 'momentum');
    const train = int(attrs, 'training_mode') === 1;
    const y = tensor(t.dtype, t.shape);
    const runMean = tensor(rm!.dtype, [C]);
    const runVar = tensor(rv!.dtype, [C]);
    for (let c = 0; c < C; c++) {
      let mean = rm!.data[c]!, variance = rv!.data[c]!;
      if (train) {
        let s = 0;
        for (let n = 0; n < N; n++) for (let k = 0; k < inner; k++) s += t.data[(n * C + c) * inner + k]!;
        mean = s / (N * inner);
        let v = 0;
        for (let n = 0; n < N; n++) for (let k = 0; k < inner; k++) v += (t.data[(n * C + c) * inner + k]! - mean) ** 2;
        variance = v / (N * inner);
        // ONNX: running stats blend with the population (biased) variance.
        runMean.data[c] = rm!.data[c]! * mom + mean * (1 - mom);
        runVar.data[c] = rv!.data[c]! * mom + variance * (1 - mom);
      }
      const r = 1 / Math.sqrt(variance + eps);
      for (let n = 0; n < N; n++) {
        for (let k = 0; k < inner; k++) {
          const i = (n * C + c) * inner + k;
          y.data[i] = (t.data[i]! - mean) * r * scale!.data[c]! + b!.data[c]!;
        }
      }
    }
    return [roundToDtype(y), runMean, runVar];
  },
};


// --- RMSNormalization, InstanceNormalization, GroupNormalization ------------------------------

/** ONNX element type codes a stash_type may name: float, float16, double, bfloat16 (cleave computes in float32 or wider). */
const STASH_TYPES = [1, 10, 11, 16];

/**
 * Where element k of a normalized row reads a parameter of `shape` that broadcasts to the
 * normalized shape `norm` (trailing-aligned, size-1 dims repeat): its offset for each k.
 */
export function paramIndex(shape: readonly number[], norm: readonly number[]): Int32Array {
  const inner = norm.reduce((a, b) => a * b, 1);
  const out = new Int32Array(inner);
  const r = norm.length - shape.length;
  const st = shape.map(() => 0);
  for (let d = shape.length - 1, s = 1; d >= 0; d--) { st[d] = shape[d] === 1 ? 0 : s; s *= shape[d]!; }
  for (let k = 0; k < inner; k++) {
    let rem = k, off = 0;
    for (let d = norm.length - 1; d >= 0; d--) {
      const i = rem % norm[d]!;
      rem = Math.floor(rem / norm[d]!);
      if (d >= r) off += i * st[d - r]!;
    }
    out[k] = off;
  }
  return out;
}

/** 1/√(mean(x²) + ε) of each row over the normalized axes (from `axis` on), in float64. */
export function rmsStats(x: Tensor, axis: number, eps: number): { inner: number; outer: number; inv: Float64Array } {
  const inner = x.shape.slice(axis).reduce((a, b) => a * b, 1);
  const outer = inner ? x.data.length / inner : 0;
  const inv = new Float64Array(outer);
  for (let o = 0; o < outer; o++) {
    let s = 0;
    for (let k = 0; k < inner; k++) s += x.data[o * inner + k]! ** 2;
    inv[o] = 1 / Math.sqrt(s / inner + eps);
  }
  return { inner, outer, inv };
}

/**
 * A CUDA kernel reads a parameter at j mod its size over a row: right where the parameter, less its
 * leading 1s, is the normalized shape's trailing dims (a [D] scale of [S, D] rows), wrong otherwise.
 */
export function rowParamFits(param: readonly number[], norm: readonly number[]): boolean {
  let p = [...param];
  while (p.length && p[0] === 1) p = p.slice(1);
  const tail = norm.slice(norm.length - p.length);
  return p.length <= norm.length && p.every((d, i) => d === tail[i]);
}

const rmsNorm: OpDef = {
  op: 'RMSNormalization', since: 23, category: 'norm', arity: [2, 2],
  attrs: { axis: { type: 'int', default: -1 }, epsilon: { type: 'float', default: 1e-5, min: 0 }, stash_type: { type: 'int', default: 1, oneOf: STASH_TYPES } },
  infer(ctx) {
    const x = input(ctx, 0);
    requireFloat(ctx, x.dtype);
    if (x.shape.length < 1) throw new CleaveError(`${at(ctx)}: RMSNormalization needs an input of rank ≥ 1, got a scalar`);
    const s = input(ctx, 1);
    if (s.dtype !== x.dtype) throw new CleaveError(`${at(ctx)}: scale is ${s.dtype} but X is ${x.dtype}; they must be one type`);
    const axis = normAxis(int(ctx.attrs, 'axis'), x.shape.length, at(ctx));
    checkBroadcastsTo(ctx, 1, x.shape.slice(axis));
    return [x];
  },
  cost: perOutput(4),
  cuda(dev, [x, scale], [y], attrs) {
    const axis = normAxis(int(attrs, 'axis'), x!.shape.length, 'RMSNormalization');
    const norm = x!.shape.slice(axis);
    if (!rowParamFits(scale!.shape, norm)) throw new CleaveError(`RMSNormalization on CUDA takes a scale that is the trailing dims of the normalized shape [${norm.join(', ')}], not [${scale!.shape.join(', ')}]`);
    const rows2 = rowsOf(x!.shape, axis);
    dev.rmsNorm({ ...x!, shape: rows2 }, scale!, { ...y!, shape: rows2 }, float(attrs, 'epsilon'));
  },
  cpu([x, scale], attrs) {
    const t = x!;
    const axis = normAxis(int(attrs, 'axis'), t.shape.length, 'RMSNormalization');
    const { inner, outer, inv } = rmsStats(t, axis, float(attrs, 'epsilon'));
    const si = paramIndex(scale!.shape, t.shape.slice(axis));
    const y = tensor(t.dtype, t.shape);
    for (let o = 0; o < outer; o++) {
      for (let k = 0; k < inner; k++) y.data[o * inner + k] = t.data[o * inner + k]! * inv[o]! * scale!.data[si[k]!]!;
    }
    return [roundToDtype(y)];
  },
};

/** A shape as [rows, cols] with cols the elements from `axis` on. */
export const rowsOf = (shape: readonly number[], axis: number): number[] => {
  const cols = shape.slice(axis).reduce((a, b) => a * b, 1);
  return [cols ? shape.reduce((a, b) => a * b, 1) / cols : 0, cols];
};

/**
 * x [N, C, …] normalized over each group of C/G channels and the spatial dims (InstanceNorm: one
 * channel a group), then scaled and shifted per channel (`perChannel`) or per group.
 */
function groupNormCpu(x: Tensor, scale: Tensor, bias: Tensor, G: number, eps: number, perChannel: boolean): Tensor {
  const [N, C] = x.shape as [number, number];
  const S = x.shape.slice(2).reduce((a, b) => a * b, 1);
  const cg = C / G, len = cg * S;
  const y = tensor(x.dtype, x.shape);
  for (let n = 0; n < N; n++) {
    for (let g = 0; g < G; g++) {
      const base = (n * G + g) * len;
      let m = 0;
      for (let k = 0; k < len; k++) m += x.data[base + k]!;
      m /= len;
      let v = 0;
      for (let k = 0; k < len; k++) v += (x.data[base + k]! - m) ** 2;
      const inv = 1 / Math.sqrt(v / len + eps);
      for (let k = 0; k < len; k++) {
        const p = perChannel ? g * cg + Math.floor(k / S) : g;
        y.data[base + k] = (x.data[base + k]! - m) * inv * scale.data[p]! + bias.data[p]!;
      }
    }
  }
  return roundToDtype(y);
}

/** Checks a per-channel (or, where allowed, per-group) parameter of a [N, C, …] normalization. */
function checkChannelParam(ctx: OpContext, i: number, C: Dim, G: Dim | undefined, x: readonly Dim[]): void {
  const s = input(ctx, i).shape;
  const what = i === 1 ? 'scale' : 'bias';
  const fits = (n: Dim | undefined): boolean => n !== undefined && (typeof n === 'string' || typeof s[0] === 'string' || s[0] === n);
  if (s.length !== 1 || !(fits(C) || fits(G))) {
    const want = G !== undefined && G !== C ? `[${C}] (one per channel) or [${G}] (one per group, opset 18)` : `[${C}]`;
    throw new CleaveError(`${at(ctx)}: ${what} has shape ${formatShape(s)}; expected ${want} for input ${formatShape(x)}`);
  }
}

const instanceNorm: OpDef = {
  op: 'InstanceNormalization', since: 13, category: 'norm', arity: [3, 3],
  attrs: { epsilon: { type: 'float', default: 1e-5, min: 0 } },
  infer(ctx) {
    const x = input(ctx, 0);
    requireFloat(ctx, x.dtype);
    if (x.shape.length < 3) throw new CleaveError(`${at(ctx)}: InstanceNormalization needs an input [N, C, D1, …] of rank ≥ 3, got ${formatShape(x.shape)}`);
    sameDtype(ctx, [0, 1, 2]);
    checkChannelParam(ctx, 1, x.shape[1]!, undefined, x.shape);
    checkChannelParam(ctx, 2, x.shape[1]!, undefined, x.shape);
    return [x];
  },
  cost: perOutput(8),
  cuda: (dev, [x, scale, bias], [y], attrs) => groupNormCuda(dev, x!, scale!, bias!, y!, x!.shape[1]!, float(attrs, 'epsilon')),
  cpu: ([x, scale, bias], attrs) => [groupNormCpu(x!, scale!, bias!, x!.shape[1]!, float(attrs, 'epsilon'), true)],
};

const groupNorm: OpDef = {
  op: 'GroupNormalization', since: 18, category: 'norm', arity: [3, 3],
  attrs: { epsilon: { type: 'float', default: 1e-5, min: 0 }, num_groups: { type: 'int', min: 1 }, stash_type: { type: 'int', default: 1, oneOf: STASH_TYPES } },
  infer(ctx) {
    const x = input(ctx, 0);
    requireFloat(ctx, x.dtype);
    if (x.shape.length < 2) throw new CleaveError(`${at(ctx)}: GroupNormalization needs an input [N, C, …] of rank ≥ 2, got ${formatShape(x.shape)}`);
    sameDtype(ctx, [0, 1, 2]);
    const G = int(ctx.attrs, 'num_groups');
    const C = x.shape[1]!;
    if (typeof C === 'number' && C % G) throw new CleaveError(`${at(ctx)}: ${C} channels of ${formatShape(x.shape)} do not divide into num_groups ${G}`);
    checkChannelParam(ctx, 1, C, G, x.shape);
    checkChannelParam(ctx, 2, C, G, x.shape);
    const s = input(ctx, 1).shape[0], b = input(ctx, 2).shape[0];
    if (typeof s === 'number' && typeof b === 'number' && s !== b) throw new CleaveError(`${at(ctx)}: scale [${s}] and bias [${b}] differ in size`);
    return [x];
  },
  cost: perOutput(8),
  cuda: (dev, [x, scale, bias], [y], attrs) => groupNormCuda(dev, x!, scale!, bias!, y!, int(attrs, 'num_groups'), float(attrs, 'epsilon')),
  cpu([x, scale, bias], attrs) {
    const C = x!.shape[1]!;
    return [groupNormCpu(x!, scale!, bias!, int(attrs, 'num_groups'), float(attrs, 'epsilon'), scale!.shape[0] === C)];
  },
};

/**
 * Group (and instance) normalization on CUDA: LayerNorm's row kernel over rows of one group
 * ([N·G, C/G·S]), then the scale and shift broadcast per channel or per group.
 */
function groupNormCuda(dev: CudaDevice, x: DeviceTensor, scale: DeviceTensor, bias: DeviceTensor, y: DeviceTensor, G: number, eps: number): void {
  const [N, C] = x.shape as [number, number];
  const S = x.shape.slice(2).reduce((a, b) => a * b, 1);
  const cg = C / G;
  dev.layerNorm({ ...x, shape: [N * G, cg * S] }, null, null, { ...y, shape: [N * G, cg * S] }, eps);
  const y4 = { ...y, shape: [N, G, cg, S] };
  const pshape = scale.shape[0] === C ? [G, cg, 1] : [G, 1, 1];
  dev.binary('mul', y4, { ...scale, shape: pshape }, y4);
  dev.binary('add', y4, { ...bias, shape: pshape }, y4);
}

export const NORM_OPS: OpDef[] = [layerNorm, batchNorm, rmsNorm, instanceNorm, groupNorm];
