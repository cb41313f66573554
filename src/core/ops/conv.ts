import { CleaveError } from '../errors.js';
import type { Attrs } from '../ir/graph.js';
import { type Dim, formatShape } from '../ir/shape.js';
import { type Tensor, roundToDtype, tensor } from '../ir/tensor.js';
import { type AttrSpec, type OpContext, type OpDef, flagAttr } from './registry.js';
import { elems, input, int, ints, moved, requireFloat, requireRank, str } from './util.js';

const at = (ctx: { node: string }): string => `node '${ctx.node}'`;

/** Geometry of a sliding window over the spatial dims, as ONNX's Conv and pooling define it. */
export interface Window {
  kernel: number[];
  strides: number[];
  dilations: number[];
  padBegin: number[];
  out: number[];
}

export function windowOf(where: string, attrs: Attrs, spatial: readonly number[], kernel: readonly number[], ceilMode: boolean): Window {
  const n = spatial.length;
  const strides = [...(ints(attrs, 'strides') ?? Array(n).fill(1))];
  const dilations = [...(ints(attrs, 'dilations') ?? Array(n).fill(1))];
  if (strides.length !== n || dilations.length !== n || kernel.length !== n) {
    throw new CleaveError(`${where}: kernel ${formatShape(kernel)}, strides and dilations must have ${n} entries for ${n} spatial dims`);
  }
  const autoPad = str(attrs, 'auto_pad');
  const pads = [...(ints(attrs, 'pads') ?? Array(2 * n).fill(0))];
  if (pads.length !== 2 * n) throw new CleaveError(`${where}: pads ${formatShape(pads)} must have ${2 * n} entries`);
  const padBegin: number[] = [];
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const span = (kernel[i]! - 1) * dilations[i]! + 1;
    let o: number;
    if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') {
      o = Math.ceil(spatial[i]! / strides[i]!);
      const total = Math.max(0, (o - 1) * strides[i]! + span - spatial[i]!);
      padBegin.push(autoPad === 'SAME_UPPER' ? Math.floor(total / 2) : Math.ceil(total / 2));
    } else if (autoPad === 'VALID') {
      o = Math.ceil((spatial[i]! - span + 1) / strides[i]!);
      padBegin.push(0);
    } else if (autoPad === 'NOTSET') {
      const padded = spatial[i]! + pads[i]! + pads[i + n]! - span;
      o = (ceilMode ? Math.ceil(padded / strides[i]!) : Math.floor(padded / strides[i]!)) + 1;
      // A window that would start in the end padding is dropped (PyTorch's and ONNX's rule).
      if (ceilMode && (o - 1) * strides[i]! >= spatial[i]! + pads[i]!) o--;
      padBegin.push(pads[i]!);
    } else throw new CleaveError(`${where}: auto_pad '${autoPad}' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID`);
    if (o < 1) throw new CleaveError(`${where}: window ${formatShape(kernel)} does not fit the input's spatial size ${formatShape(spatial)}`);
    out.push(o);
  }
  return { kernel: [...kernel], strides, dilations, padBegin, out };
}

function staticSpatial(ctx: OpContext, s: readonly Dim[]): number[] {
  const sp = s.slice(2);
  if (sp.some((d) => typeof d !== 'number')) throw new CleaveError(`${at(ctx)}: spatial dims of ${formatShape(s)} must be static`);
  return sp as number[];
}

// Strides, dilations and kernel sizes of 0 would make windows of no extent or outputs of infinite
// size (the kernels would loop without end); ONNX requires them positive and pads non-negative.
export const windowAttrs: Record<string, AttrSpec> = {
  auto_pad: { type: 'string', default: 'NOTSET', oneOf: ['NOTSET', 'SAME_UPPER', 'SAME_LOWER', 'VALID'] },
  dilations: { type: 'ints', optional: true, min: 1 },
  pads: { type: 'ints', optional: true, min: 0 },
  strides: { type: 'ints', optional: true, min: 1 },
  kernel_shape: { type: 'ints', optional: true, min: 1 },
};

/** Pooling's attributes: the window's, with a required kernel_shape, and ceil_mode. */
export const poolAttrs: Record<string, AttrSpec> = { ...windowAttrs, kernel_shape: { type: 'ints', min: 1 }, ceil_mode: flagAttr(0) };

/** Visits every output position and, for each, every in-bounds input position of its window. */
export function slide(w: Window, spatial: readonly number[], visit: (outIdx: number, inIdx: number, kIdx: number) => void): void {
  const n = spatial.length;
  const outCount = w.out.reduce((a, b) => a * b, 1);
  const kCount = w.kernel.reduce((a, b) => a * b, 1);
  const o = new Array<number>(n), k = new Array<number>(n);
  for (let oi = 0; oi < outCount; oi++) {
    let r = oi;
    for (let d = n - 1; d >= 0; d--) { o[d] = r % w.out[d]!; r = Math.floor(r / w.out[d]!); }
    for (let ki = 0; ki < kCount; ki++) {
      let q = ki;
      for (let d = n - 1; d >= 0; d--) { k[d] = q % w.kernel[d]!; q = Math.floor(q / w.kernel[d]!); }
      let flat = 0, inside = true;
      for (let d = 0; d < n; d++) {
        const p = o[d]! * w.strides[d]! - w.padBegin[d]! + k[d]! * w.dilations[d]!;
        if (p < 0 || p >= spatial[d]!) { inside = false; break; }
        flat = flat * spatial[d]! + p;
      }
      if (inside) visit(oi, flat, ki);
    }
  }
}

/** `slide`'s visits as arrays, in its order (by output position, then kernel position). */
export interface WindowTable { outIdx: Int32Array; inIdx: Int32Array; kIdx: Int32Array; length: number }

/** Above this many (output, kernel) pairs the convolution kernels slide instead of building a table. */
const TABLE_LIMIT = 1 << 22;

/**
 * The in-bounds (output, input, kernel) index triples `slide` visits, in the same order, so a kernel
 * loops over them without recomputing the window geometry for every channel; null when the window
 * has more than TABLE_LIMIT pairs (then the caller slides).
 */
export function windowTable(w: Window, spatial: readonly number[]): WindowTable | null {
  const pairs = w.out.reduce((a, b) => a * b, 1) * w.kernel.reduce((a, b) => a * b, 1);
  if (pairs > TABLE_LIMIT) return null;
  const outIdx = new Int32Array(pairs), inIdx = new Int32Array(pairs), kIdx = new Int32Array(pairs);
  let length = 0;
  slide(w, spatial, (oi, ii, ki) => { outIdx[length] = oi; inIdx[length] = ii; kIdx[length] = ki; length++; });
  return { outIdx, inIdx, kIdx, length };
}

/**
 * acc[o] += Σ x[xo + i]·w[wo + k] over one channel's 2-D window pairs, row by row: the pairs `slide`
 * visits, and for each output in the same order (kernel row, then column), so sums round as the
 * table's do; only the geometry is worked out per row instead of per pair.
 */
function conv2dChannel(acc: Float64Array, xd: ArrayLike<number>, xo: number, wd: ArrayLike<number>, wo: number, w: Window, H: number, W: number): void {
  const [OH, OW] = w.out as [number, number], [KH, KW] = w.kernel as [number, number];
  const [sy, sx] = w.strides as [number, number], [dy, dx] = w.dilations as [number, number];
  const [py, px] = w.padBegin as [number, number];
  for (let oy = 0; oy < OH; oy++) {
    const ao = oy * OW;
    for (let ky = 0; ky < KH; ky++) {
      const iy = oy * sy - py + ky * dy;
      if (iy < 0 || iy >= H) continue;
      const xr = xo + iy * W;
      for (let kx = 0; kx < KW; kx++) {
        const wv = wd[wo + ky * KW + kx]!;
        const off = kx * dx - px;
        // Outputs whose input column ox·sx + off lies in [0, W).
        const lo = Math.max(0, Math.ceil(-off / sx)), hi = Math.min(OW - 1, Math.floor((W - 1 - off) / sx));
        for (let ox = lo; ox <= hi; ox++) acc[ao + ox]! += xd[xr + ox * sx + off]! * wv;
      }
    }
  }
}

/**
 * The gradient kernels' 2-D loops, row by row over one channel pair (output channel m, input
 * channel c), visiting for each accumulated entry the pairs `slide` visits in its order:
 * ConvGradWeight's dw[k] sums over outputs in order; ConvGradInput's dx[i] over outputs in order,
 * which is kernel columns from the last (for one output row and kernel row, a later output column
 * reads input column i through an earlier kernel column).
 */
export function conv2dGradChannel(kind: 'input' | 'weight', acc: Float64Array, ao: number, gd: ArrayLike<number>, go: number, od: ArrayLike<number>, oo: number, w: Window, H: number, W: number): void {
  const [OH, OW] = w.out as [number, number], [KH, KW] = w.kernel as [number, number];
  const [sy, sx] = w.strides as [number, number], [dy, dx] = w.dilations as [number, number];
  const [py, px] = w.padBegin as [number, number];
  for (let oy = 0; oy < OH; oy++) {
    const gr = go + oy * OW;
    for (let ky = 0; ky < KH; ky++) {
      const iy = oy * sy - py + ky * dy;
      if (iy < 0 || iy >= H) continue;
      const xr = iy * W;
      if (kind === 'weight') {
        // acc = dw of (m, c) at ao; od = x, oo its channel's offset.
        for (let kx = 0; kx < KW; kx++) {
          const off = kx * dx - px;
          const lo = Math.max(0, Math.ceil(-off / sx)), hi = Math.min(OW - 1, Math.floor((W - 1 - off) / sx));
          const k = ao + ky * KW + kx;
          let s = acc[k]!;
          for (let ox = lo; ox <= hi; ox++) s += gd[gr + ox]! * od[oo + xr + ox * sx + off]!;
          acc[k] = s;
        }
      } else {
        // acc = dx of channel c at ao; od = w, oo the offset of its (m, c) kernel.
        for (let kx = KW - 1; kx >= 0; kx--) {
          const wv = od[oo + ky * KW + kx]!;
          const off = kx * dx - px;
          const lo = Math.max(0, Math.ceil(-off / sx)), hi = Math.min(OW - 1, Math.floor((W - 1 - off) / sx));
          for (let ox = lo; ox <= hi; ox++) acc[ao + xr + ox * sx + off]! += gd[gr + ox]! * wv;
        }
      }
    }
  }
}

const conv: OpDef = {
  op: 'Conv', since: 13, category: 'conv', arity: [2, 3],
  attrs: { ...windowAttrs, group: { type: 'int', default: 1, min: 1 } },
  infer(ctx) {
    const x = requireRank(ctx, 0, [3, 4, 5]);
    const w = requireRank(ctx, 1, [x.length]);
    requireFloat(ctx, input(ctx, 0).dtype);
    const g = int(ctx.attrs, 'group');
    const [cin, cout] = [x[1]!, w[0]!];
    if (typeof cin === 'number' && typeof w[1] === 'number' && w[1] * g !== cin) {
      throw new CleaveError(`${at(ctx)}: weight ${formatShape(w)} with group ${g} expects ${(w[1] as number) * g} input channels, input ${formatShape(x)} has ${cin}`);
    }
    if (typeof cout === 'number' && cout % g) throw new CleaveError(`${at(ctx)}: ${cout} output channels do not divide into ${g} groups`);
    const b = ctx.inputs[2];
    if (b && (b.shape.length !== 1 || b.shape[0] !== cout)) throw new CleaveError(`${at(ctx)}: bias ${formatShape(b.shape)} does not match ${cout} output channels`);
    const kernel = ints(ctx.attrs, 'kernel_shape') ?? (w.slice(2) as number[]);
    // The kernels index the weight by its own spatial dims: a kernel_shape that differs would read past it.
    if (kernel.length !== w.length - 2 || kernel.some((k, i) => typeof w[i + 2] === 'number' && w[i + 2] !== k)) {
      throw new CleaveError(`${at(ctx)}: kernel_shape ${formatShape(kernel)} does not match the weight ${formatShape(w)}`);
    }
    const win = windowOf(at(ctx), ctx.attrs, staticSpatial(ctx, x), kernel, false);
    return [{ dtype: input(ctx, 0).dtype, shape: [x[0]!, cout, ...win.out] }];
  },
  cost(ctx, outs) {
    const w = input(ctx, 1).shape as number[];
    const perOut = 2 * w.slice(1).reduce((a, b) => a * b, 1) + (ctx.inputs[2] ? 1 : 0);
    return { flops: perOut * elems(outs[0]!), bytes: moved(ctx, outs) };
  },
  cuda(dev, [x, w, b], [y], attrs) {
    const win = windowOf('Conv', attrs, x!.shape.slice(2), ints(attrs, 'kernel_shape') ?? w!.shape.slice(2), false);
    dev.conv(x!, w!, b ?? null, y!, win, int(attrs, 'group'));
  },
  cpu([x, w, b], attrs) {
    const [N, C] = x!.shape as [number, number];
    const spatial = x!.shape.slice(2);
    const M = w!.shape[0]!;
    const G = int(attrs, 'group');
    const cg = C / G, mg = M / G;
    const kernel = w!.shape.slice(2);
    const win = windowOf('Conv', attrs, spatial, ints(attrs, 'kernel_shape') ?? kernel, false);
    const inSize = spatial.reduce((a, c) => a * c, 1), outSize = win.out.reduce((a, c) => a * c, 1);
    const kSize = kernel.reduce((a, c) => a * c, 1);
    const y = tensor(x!.dtype, [N, M, ...win.out]);
    const acc = new Float64Array(outSize);
    const table = spatial.length === 2 ? null : windowTable(win, spatial);
    const xd = x!.data, wd = w!.data;
    for (let n = 0; n < N; n++) {
      for (let m = 0; m < M; m++) {
        acc.fill(b ? b.data[m]! : 0);
        const g = Math.floor(m / mg);
        for (let c = 0; c < cg; c++) {
          const xo = (n * C + g * cg + c) * inSize, wo = (m * cg + c) * kSize;
          if (spatial.length === 2) {
            conv2dChannel(acc, xd, xo, wd, wo, win, spatial[0]!, spatial[1]!);
            continue;
          }
          if (!table) {
            slide(win, spatial, (oi, ii, ki) => { acc[oi]! += xd[xo + ii]! * wd[wo + ki]!; });
            continue;
          }
          const { outIdx, inIdx, kIdx, length } = table;
          for (let e = 0; e < length; e++) acc[outIdx[e]!]! += xd[xo + inIdx[e]!]! * wd[wo + kIdx[e]!]!;
        }
        y.data.set(acc, (n * M + m) * outSize);
      }
    }
    return [roundToDtype(y)];
  },
};

function poolDef(op: 'MaxPool' | 'AveragePool'): OpDef {
  const max = op === 'MaxPool';
  return {
    op, since: 13, category: 'pool', arity: [1, 1], outputs: max ? [1, 2] : [1, 1],
    attrs: max
      ? { ...poolAttrs, storage_order: flagAttr(0) }
      : { ...poolAttrs, count_include_pad: flagAttr(0) },
    infer(ctx) {
      const x = requireRank(ctx, 0, [3, 4, 5]);
      requireFloat(ctx, input(ctx, 0).dtype);
      const win = windowOf(at(ctx), ctx.attrs, staticSpatial(ctx, x), ints(ctx.attrs, 'kernel_shape')!, int(ctx.attrs, 'ceil_mode') === 1);
      const shape = [x[0]!, x[1]!, ...win.out];
      return [{ dtype: input(ctx, 0).dtype, shape }, { dtype: 'int64' as const, shape }].slice(0, ctx.numOutputs);
    },
    cost(ctx, outs) {
      const k = ints(ctx.attrs, 'kernel_shape')!.reduce((a, b) => a * b, 1);
      return { flops: k * elems(outs[0]!), bytes: moved(ctx, outs) };
    },
    cuda(dev, [x], [y, indices], attrs) {
      const win = windowOf(op, attrs, x!.shape.slice(2), ints(attrs, 'kernel_shape')!, int(attrs, 'ceil_mode') === 1);
      if (max) dev.maxPool(x!, y!, indices ?? null, win);
      else dev.averagePool(x!, y!, win, int(attrs, 'count_include_pad') === 1 ? padEnds(attrs, win) : null);
    },
    cpu([x], attrs) {
      const [N, C] = x!.shape as [number, number];
      const spatial = x!.shape.slice(2);
      const win = windowOf(op, attrs, spatial, ints(attrs, 'kernel_shape')!, int(attrs, 'ceil_mode') === 1);
      const inSize = spatial.reduce((a, c) => a * c, 1), outSize = win.out.reduce((a, c) => a * c, 1);
      const y = tensor(x!.dtype, [N, C, ...win.out]);
      const idx = tensor('int64', y.shape);
      const acc = new Float64Array(outSize), cnt = new Float64Array(outSize), arg = new Float64Array(outSize);
      const includePad = !max && int(attrs, 'count_include_pad') === 1;
      // With count_include_pad the divisor is the window clipped to the padded input, not the kernel size.
      const padded = includePad ? padCounts(win, spatial, attrs) : null;
      for (let nc = 0; nc < N * C; nc++) {
        acc.fill(max ? -Infinity : 0);
        cnt.fill(0);
        const xo = nc * inSize;
        slide(win, spatial, (oi, ii) => {
          const v = x!.data[xo + ii]!;
          if (max) { if (v > acc[oi]!) { acc[oi] = v; arg[oi] = xo + ii; } } else { acc[oi]! += v; cnt[oi]!++; }
        });
        for (let o = 0; o < outSize; o++) {
          y.data[nc * outSize + o] = max ? acc[o]! : acc[o]! / (padded ? padded[o]! : cnt[o]!);
          idx.data[nc * outSize + o] = arg[o]!;
        }
      }
      return max ? [roundToDtype(y), idx] : [roundToDtype(y)];
    },
  };
}

/** The trailing pads count_include_pad's divisor reaches to (padCounts's: the pads attribute, whatever auto_pad says). */
export function padEnds(attrs: Attrs, win: Window): number[] {
  const n = win.kernel.length;
  return (ints(attrs, 'pads') ?? Array<number>(2 * n).fill(0)).slice(n);
}

export function padCounts(win: Window, spatial: readonly number[], attrs: Attrs): number[] {
  const n = spatial.length;
  const pads = ints(attrs, 'pads') ?? Array(2 * n).fill(0);
  const counts: number[] = [];
  const total = win.out.reduce((a, b) => a * b, 1);
  for (let oi = 0; oi < total; oi++) {
    let r = oi, c = 1;
    for (let d = n - 1; d >= 0; d--) {
      const o = r % win.out[d]!;
      r = Math.floor(r / win.out[d]!);
      const start = o * win.strides[d]! - win.padBegin[d]!;
      const end = Math.min(start + (win.kernel[d]! - 1) * win.dilations[d]! + 1, spatial[d]! + pads[d + n]!);
      c *= Math.ceil((end - Math.max(start, -win.padBegin[d]!)) / win.dilations[d]!);
    }
    counts.push(c);
  }
  return counts;
}

const globalAveragePool: OpDef = {
  op: 'GlobalAveragePool', since: 13, category: 'pool', arity: [1, 1], attrs: {},
  infer(ctx) {
    const x = requireRank(ctx, 0, [3, 4, 5]);
    requireFloat(ctx, input(ctx, 0).dtype);
    return [{ dtype: input(ctx, 0).dtype, shape: [x[0]!, x[1]!, ...x.slice(2).map(() => 1)] }];
  },
  cost: (ctx, outs) => ({ flops: elems(input(ctx, 0)), bytes: moved(ctx, outs) }),
  cuda: (dev, [x], [y]) => dev.reduce('mean', x!, y!, x!.shape.map((_, i) => i).slice(2)),
  cpu([x]) {
    const [N, C] = x!.shape as [number, number];
    const inner = x!.data.length / (N * C);
    const y = tensor(x!.dtype, [N, C, ...x!.shape.slice(2).map(() => 1)]);
    for (let i = 0; i < N * C; i++) {
      let s = 0;
      for (let k = 0; k < inner; k++) s += x!.data[i * inner + k]!;
      y.data[i] = s / inner;
    }
    return [roundToDtype(y)];
  },
};

export const CONV_OPS: OpDef[] = [conv, poolDef('MaxPool'), poolDef('AveragePool'), globalAveragePool];
