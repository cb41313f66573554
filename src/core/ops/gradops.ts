// cleave's own ops for gradients that ONNX has no op for. They appear only in training graphs
// (domain 'cleave': never imported or exported). Each B-side op (input gradient) is separate from
// its W-side twin (parameter gradient), so zero-bubble schedules can run them apart.
import { CleaveError } from '../errors.js';
import type { Attrs } from '../ir/graph.js';
import { normAxis, stridesOf } from '../ir/shape.js';
import { type Tensor, roundToDtype, sizeOf, tensor } from '../ir/tensor.js';
import { type Window, conv2dGradChannel, padCounts, padEnds, poolAttrs, slide, windowAttrs, windowOf, windowTable } from './conv.js';
import { erf, geluTanhGrad } from './math.js';
import { PAD_MODES, padSource, sliceAxes, sliceStrides } from './movement.js';
import { paramIndex, rmsStats, rowParamFits, rowStats, rowsOf } from './norm.js';
import { type AttrSpec, type OpContext, type OpDef, flagAttr } from './registry.js';
import { elems, float, input, int, ints, moved, perOutput, str } from './util.js';

const shapeAttr: Record<string, AttrSpec> = { shape: { type: 'ints', min: 0 } };
const targetShape = (ctx: OpContext): number[] => [...ints(ctx.attrs, 'shape')!];
const zerosLike = (x: Tensor): Tensor => tensor(x.dtype, x.shape);

function internal(def: Omit<OpDef, 'since' | 'domain'>): OpDef {
  return { since: 13, domain: 'cleave', ...def };
}

// --- GeluGrad ---------------------------------------------------------------------------------

const geluGrad = internal({
  op: 'GeluGrad', category: 'elementwise', arity: [2, 2], attrs: { approximate: { type: 'string', default: 'none', oneOf: ['none', 'tanh'] } },
  infer: (ctx) => [input(ctx, 1)],
  cost: perOutput(14),
  cuda: (dev, [g, x], [out], attrs) => dev.geluGrad(g!, x!, out!, str(attrs, 'approximate') === 'tanh'),
  cpu([g, x], attrs) {
    const tanh = str(attrs, 'approximate') === 'tanh';
    const out = zerosLike(x!);
    for (let i = 0; i < out.data.length; i++) {
      const v = x!.data[i]!;
      let d: number;
      if (tanh) d = geluTanhGrad(v);
      else d = 0.5 * (1 + erf(v / Math.SQRT2)) + (v * Math.exp(-0.5 * v * v)) / Math.sqrt(2 * Math.PI);
      out.data[i] = g!.data[i]! * d;
    }
    return [roundToDtype(out)];
  },
});

// --- LayerNormalization -----------------------------------------------------------------------


const lnAttrs: Record<string, AttrSpec> = { axis: { type: 'int', default: -1 }, epsilon: { type: 'float', default: 1e-5, min: 0 } };

const lastAxisOnly = (rank: number, attrs: Attrs, op: string): void => {
  if (normAxis(int(attrs, 'axis'), rank, op) !== rank - 1) throw new CleaveError(`${op} on CUDA normalizes the last axis only`);
};

const layerNormGradInput = internal({
  op: 'LayerNormalizationGradInput', category: 'norm', arity: [3, 3], attrs: lnAttrs,
  infer: (ctx) => [input(ctx, 1)],
  cost: perOutput(10),
  cuda(dev, [g, x, scale], [dx], attrs) {
    lastAxisOnly(x!.shape.length, attrs, 'LayerNormalizationGradInput');
    dev.layerNormGradInput(g!, x!, scale!, dx!, float(attrs, 'epsilon'));
  },
  cpu([g, x, scale], attrs) {
    const axis = normAxis(int(attrs, 'axis'), x!.shape.length, 'LayerNormalizationGradInput');
    const { inner, outer, mean, inv } = rowStats(x!, axis, float(attrs, 'epsilon'));
    const dx = zerosLike(x!);
    const sl = scale!.data.length;
    const dxh = new Float64Array(inner);
    for (let o = 0; o < outer; o++) {
      let a = 0, b = 0;
      for (let k = 0; k < inner; k++) {
        const i = o * inner + k;
        const xh = (x!.data[i]! - mean[o]!) * inv[o]!;
        dxh[k] = g!.data[i]! * scale!.data[k % sl]!;
        a += dxh[k]!;
        b += dxh[k]! * xh;
      }
      a /= inner;
      b /= inner;
      for (let k = 0; k < inner; k++) {
        const i = o * inner + k;
        const xh = (x!.data[i]! - mean[o]!) * inv[o]!;
        dx.data[i] = inv[o]! * (dxh[k]! - a - xh * b);
      }
    }
    return [roundToDtype(dx)];
  },
});

const layerNormGradParams = internal({
  op: 'LayerNormalizationGradParams', category: 'norm', arity: [2, 2], outputs: [2, 2], attrs: lnAttrs,
  infer(ctx) {
    const x = input(ctx, 1);
    const axis = normAxis(int(ctx.attrs, 'axis'), x.shape.length, `node '${ctx.node}'`);
    const t = { dtype: x.dtype, shape: x.shape.slice(axis) };
    return [t, t];
  },
  cost: (ctx, outs) => ({ flops: 4 * elems(input(ctx, 1)), bytes: moved(ctx, outs) }),
  cuda(dev, [g, x], [ds, db], attrs) {
    lastAxisOnly(x!.shape.length, attrs, 'LayerNormalizationGradParams');
    dev.layerNormGradParams(g!, x!, ds!, db!, float(attrs, 'epsilon'));
  },
  cpu([g, x], attrs) {
    const axis = normAxis(int(attrs, 'axis'), x!.shape.length, 'LayerNormalizationGradParams');
    const { inner, outer, mean, inv } = rowStats(x!, axis, float(attrs, 'epsilon'));
    const shape = x!.shape.slice(axis);
    const ds = new Float64Array(inner), db = new Float64Array(inner);
    for (let o = 0; o < outer; o++) {
      for (let k = 0; k < inner; k++) {
        const i = o * inner + k;
        ds[k]! += g!.data[i]! * (x!.data[i]! - mean[o]!) * inv[o]!;
        db[k]! += g!.data[i]!;
      }
    }
    return [roundToDtype(tensor(x!.dtype, shape, ds)), roundToDtype(tensor(x!.dtype, shape, db))];
  },
});

// --- RMSNormalization ------------------------------------------------------------------------

const rmsAttrs: Record<string, AttrSpec> = { axis: { type: 'int', default: -1 }, epsilon: { type: 'float', default: 1e-5, min: 0 } };

const rmsNormGradInput = internal({
  op: 'RMSNormalizationGradInput', category: 'norm', arity: [3, 3], attrs: rmsAttrs,
  infer: (ctx) => [input(ctx, 1)],
  cost: perOutput(8),
  cuda(dev, [g, x, scale], [dx], attrs) {
    const axis = normAxis(int(attrs, 'axis'), x!.shape.length, 'RMSNormalizationGradInput');
    const norm = x!.shape.slice(axis);
    if (!rowParamFits(scale!.shape, norm)) throw new CleaveError(`RMSNormalizationGradInput on CUDA takes a scale that is the trailing dims of the normalized shape [${norm.join(', ')}], not [${scale!.shape.join(', ')}]`);
    const r = rowsOf(x!.shape, axis);
    dev.rmsNormGradInput({ ...g!, shape: r }, { ...x!, shape: r }, scale!, { ...dx!, shape: r }, float(attrs, 'epsilon'));
  },
  cpu([g, x, scale], attrs) {
    const axis = normAxis(int(attrs, 'axis'), x!.shape.length, 'RMSNormalizationGradInput');
    const { inner, outer, inv } = rmsStats(x!, axis, float(attrs, 'epsilon'));
    const si = paramIndex(scale!.shape, x!.shape.slice(axis));
    const dx = zerosLike(x!);
    for (let o = 0; o < outer; o++) {
      // dx = inv · (g·s − x̂ · mean(g·s·x̂)), x̂ = x · inv.
      let b = 0;
      for (let k = 0; k < inner; k++) b += g!.data[o * inner + k]! * scale!.data[si[k]!]! * x!.data[o * inner + k]! * inv[o]!;
      b /= inner;
      for (let k = 0; k < inner; k++) {
        const i = o * inner + k;
        dx.data[i] = inv[o]! * (g!.data[i]! * scale!.data[si[k]!]! - x!.data[i]! * inv[o]! * b);
      }
    }
    return [roundToDtype(dx)];
  },
});

const rmsNormGradParams = internal({
  op: 'RMSNormalizationGradParams', category: 'norm', arity: [2, 2], attrs: rmsAttrs,
  infer(ctx) {
    const x = input(ctx, 1);
    const axis = normAxis(int(ctx.attrs, 'axis'), x.shape.length, `node '${ctx.node}'`);
    return [{ dtype: x.dtype, shape: x.shape.slice(axis) }];
  },
  cost: (ctx, outs) => ({ flops: 3 * elems(input(ctx, 1)), bytes: moved(ctx, outs) }),
  cuda(dev, [g, x], [ds], attrs) {
    const r = rowsOf(x!.shape, normAxis(int(attrs, 'axis'), x!.shape.length, 'RMSNormalizationGradParams'));
    dev.rmsNormGradParams({ ...g!, shape: r }, { ...x!, shape: r }, { ...ds!, shape: [r[1]!] }, float(attrs, 'epsilon'));
  },
  cpu([g, x], attrs) {
    const axis = normAxis(int(attrs, 'axis'), x!.shape.length, 'RMSNormalizationGradParams');
    const { inner, outer, inv } = rmsStats(x!, axis, float(attrs, 'epsilon'));
    const ds = new Float64Array(inner);
    for (let o = 0; o < outer; o++) for (let k = 0; k < inner; k++) ds[k]! += g!.data[o * inner + k]! * x!.data[o * inner + k]! * inv[o]!;
    return [roundToDtype(tensor(x!.dtype, x!.shape.slice(axis), ds))];
  },
});

// --- Pad --------------------------------------------------------------------------------------

const padGrad = internal({
  op: 'PadGrad', category: 'movement', arity: [1, 1],
  attrs: { mode: { type: 'string', default: 'constant', oneOf: PAD_MODES }, pads: { type: 'ints' }, ...shapeAttr },
  infer: (ctx) => [{ dtype: input(ctx, 0).dtype, shape: targetShape(ctx) }],
  cost: perOutput(1),
  cuda: (dev, [g], [dx], attrs) => dev.padGrad(g!, dx!, PAD_MODES.indexOf(str(attrs, 'mode')), ints(attrs, 'pads')!.slice(0, dx!.shape.length)),
  cpu([g], attrs) {
    const shape = ints(attrs, 'shape')!;
    const mode = str(attrs, 'mode');
    const begin = ints(attrs, 'pads')!.slice(0, shape.length);
    const dx = tensor(g!.dtype, shape);
    const st = stridesOf(shape);
    const gs = g!.shape;
    const idx = new Array<number>(gs.length).fill(0);
    for (let i = 0; i < g!.data.length; i++) {
      let off = 0;
      for (let d = 0; d < gs.length && off >= 0; d++) {
        const p = padSource(idx[d]! - begin[d]!, shape[d]!, mode);
        off = p < 0 ? -1 : off + p * st[d]!;
      }
      if (off >= 0) dx.data[off]! += g!.data[i]!;
      for (let d = gs.length - 1; d >= 0; d--) { if (++idx[d]! < gs[d]!) break; idx[d] = 0; }
    }
    return [roundToDtype(dx)];
  },
});

// --- BatchNormalization -----------------------------------------------------------------------

interface ChannelStats { C: number; N: number; inner: number; mean: Float64Array; inv: Float64Array }

function channelStats(x: Tensor, rm: Tensor, rv: Tensor, attrs: Attrs): ChannelStats {
  const C = x.shape[1]!, N = x.shape[0]!;
  const inner = x.shape.slice(2).reduce((a, b) => a * b, 1);
  const eps = float(attrs, 'epsilon');
  const mean = new Float64Array(C), inv = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    let m = rm.data[c]!, v = rv.data[c]!;
    if (int(attrs, 'training_mode')) {
      m = 0;
      for (let n = 0; n < N; n++) for (let k = 0; k < inner; k++) m += x.data[(n * C + c) * inner + k]!;
      m /= N * inner;
      v = 0;
      for (let n = 0; n < N; n++) for (let k = 0; k < inner; k++) v += (x.data[(n * C + c) * inner + k]! - m) ** 2;
      v /= N * inner;
    }
    mean[c] = m;
    inv[c] = 1 / Math.sqrt(v + eps);
  }
  return { C, N, inner, mean, inv };
}

const bnAttrs: Record<string, AttrSpec> = { epsilon: { type: 'float', default: 1e-5, min: 0 }, training_mode: flagAttr(0) };

const batchNormGradInput = internal({
  op: 'BatchNormalizationGradInput', category: 'norm', arity: [5, 5], attrs: bnAttrs,
  infer: (ctx) => [input(ctx, 1)],
  cost: perOutput(8),
  cuda: (dev, [g, x, scale, rm, rv], [dx], attrs) =>
    dev.batchNormGradInput(g!, x!, scale!, rm!, rv!, dx!, float(attrs, 'epsilon'), int(attrs, 'training_mode') === 1),
  cpu([g, x, scale, rm, rv], attrs) {
    const { C, N, inner, mean, inv } = channelStats(x!, rm!, rv!, attrs);
    const dx = zerosLike(x!);
    const train = int(attrs, 'training_mode') === 1;
    const m = N * inner;
    for (let c = 0; c < C; c++) {
      const gam = scale!.data[c]!;
      let sd = 0, sdx = 0;
      if (train) {
        for (let n = 0; n < N; n++) for (let k = 0; k < inner; k++) {
          const i = (n * C + c) * inner + k;
          sd += g!.data[i]! * gam;
          sdx += g!.data[i]! * gam * (x!.data[i]! - mean[c]!) * inv[c]!;
        }
      }
      for (let n = 0; n < N; n++) for (let k = 0; k < inner; k++) {
        const i = (n * C + c) * inner + k;
        const dxh = g!.data[i]! * gam;
        dx.data[i] = train ? (inv[c]! / m) * (m * dxh - sd - (x!.data[i]! - mean[c]!) * inv[c]! * sdx) : dxh * inv[c]!;
      }
    }
    return [roundToDtype(dx)];
  },
});

const batchNormGradParams = internal({
  op: 'BatchNormalizationGradParams', category: 'norm', arity: [4, 4], outputs: [2, 2], attrs: bnAttrs,
  infer(ctx) {
    const x = input(ctx, 1);
    const t = { dtype: x.dtype, shape: [x.shape[1]!] };
    return [t, t];
  },
  cost: (ctx, outs) => ({ flops: 4 * elems(input(ctx, 1)), bytes: moved(ctx, outs) }),
  cuda: (dev, [g, x, rm, rv], [ds, db], attrs) =>
    dev.batchNormGradParams(g!, x!, rm!, rv!, ds!, db!, float(attrs, 'epsilon'), int(attrs, 'training_mode') === 1),
  cpu([g, x, rm, rv], attrs) {
    const { C, N, inner, mean, inv } = channelStats(x!, rm!, rv!, attrs);
    const ds = tensor(x!.dtype, [C]), db = tensor(x!.dtype, [C]);
    for (let c = 0; c < C; c++) {
      let a = 0, b = 0;
      for (let n = 0; n < N; n++) for (let k = 0; k < inner; k++) {
        const i = (n * C + c) * inner + k;
        a += g!.data[i]! * (x!.data[i]! - mean[c]!) * inv[c]!;
        b += g!.data[i]!;
      }
      ds.data[c] = a;
      db.data[c] = b;
    }
    return [roundToDtype(ds), roundToDtype(db)];
  },
});

// --- Conv -------------------------------------------------------------------------------------

const convAttrs: Record<string, AttrSpec> = { ...windowAttrs, group: { type: 'int', default: 1, min: 1 }, ...shapeAttr };

function convGeometry(attrs: Attrs, xShape: readonly number[], wShape: readonly number[]): { win: Window; spatial: number[]; G: number; cg: number; mg: number } {
  const spatial = xShape.slice(2);
  const win = windowOf('Conv', attrs, spatial, ints(attrs, 'kernel_shape') ?? wShape.slice(2), false);
  const G = int(attrs, 'group');
  return { win, spatial, G, cg: xShape[1]! / G, mg: wShape[0]! / G };
}

const convGradInput = internal({
  op: 'ConvGradInput', category: 'conv', arity: [2, 2], attrs: convAttrs,
  infer: (ctx) => [{ dtype: input(ctx, 0).dtype, shape: targetShape(ctx) }],
  cost(ctx, outs) {
    const w = input(ctx, 1).shape as number[];
    return { flops: 2 * elems(input(ctx, 0)) * w.slice(1).reduce((a, b) => a * b, 1), bytes: moved(ctx, outs) };
  },
  cuda(dev, [g, w], [dx], attrs) {
    const { win, G } = convGeometry(attrs, dx!.shape, w!.shape);
    dev.convGradInput(g!, w!, dx!, win, G);
  },
  cpu([g, w], attrs) {
    const xShape = ints(attrs, 'shape')!;
    const { win, spatial, cg, mg } = convGeometry(attrs, xShape, w!.shape);
    const [N, Cin] = xShape as [number, number];
    const M = w!.shape[0]!;
    const inSize = spatial.reduce((a, b) => a * b, 1), outSize = win.out.reduce((a, b) => a * b, 1);
    const kSize = w!.shape.slice(2).reduce((a, b) => a * b, 1);
    const dx = tensor(g!.dtype, xShape);
    const acc = new Float64Array(inSize);
    const table = spatial.length === 2 ? null : windowTable(win, spatial);
    const gd = g!.data, wd = w!.data;
    for (let n = 0; n < N; n++) {
      for (let ci = 0; ci < Cin; ci++) {
        acc.fill(0);
        const grp = Math.floor(ci / cg), c = ci % cg;
        for (let mm = 0; mm < mg; mm++) {
          const m = grp * mg + mm;
          const go = (n * M + m) * outSize, wo = (m * cg + c) * kSize;
          if (spatial.length === 2) {
            conv2dGradChannel('input', acc, 0, gd, go, wd, wo, win, spatial[0]!, spatial[1]!);
            continue;
          }
          if (!table) {
            slide(win, spatial, (oi, ii, ki) => { acc[ii]! += gd[go + oi]! * wd[wo + ki]!; });
            continue;
          }
          const { outIdx, inIdx, kIdx, length } = table;
          for (let e = 0; e < length; e++) acc[inIdx[e]!]! += gd[go + outIdx[e]!]! * wd[wo + kIdx[e]!]!;
        }
        dx.data.set(acc, (n * Cin + ci) * inSize);
      }
    }
    return [roundToDtype(dx)];
  },
});

const convGradWeight = internal({
  op: 'ConvGradWeight', category: 'conv', arity: [2, 2], attrs: convAttrs,
  infer: (ctx) => [{ dtype: input(ctx, 0).dtype, shape: targetShape(ctx) }],
  cost(ctx, outs) {
    const w = targetShape(ctx);
    return { flops: 2 * elems(input(ctx, 0)) * w.slice(1).reduce((a, b) => a * b, 1), bytes: moved(ctx, outs) };
  },
  cuda(dev, [g, x], [dw], attrs) {
    const { win, G } = convGeometry(attrs, x!.shape, dw!.shape);
    dev.convGradWeight(g!, x!, dw!, win, G);
  },
  cpu([g, x], attrs) {
    const wShape = ints(attrs, 'shape')!;
    const { win, spatial, cg, mg } = convGeometry(attrs, x!.shape, wShape);
    const [N, Cin] = x!.shape as [number, number];
    const M = wShape[0]!;
    const inSize = spatial.reduce((a, b) => a * b, 1), outSize = win.out.reduce((a, b) => a * b, 1);
    const kSize = wShape.slice(2).reduce((a, b) => a * b, 1);
    const acc = new Float64Array(sizeOf({ shape: wShape }));
    const table = spatial.length === 2 ? null : windowTable(win, spatial);
    const gd = g!.data, xd = x!.data;
    for (let n = 0; n < N; n++) {
      for (let m = 0; m < M; m++) {
        const grp = Math.floor(m / mg);
        const go = (n * M + m) * outSize;
        for (let c = 0; c < cg; c++) {
          const xo = (n * Cin + grp * cg + c) * inSize, wo = (m * cg + c) * kSize;
          if (spatial.length === 2) {
            conv2dGradChannel('weight', acc, wo, gd, go, xd, xo, win, spatial[0]!, spatial[1]!);
            continue;
          }
          if (!table) {
            slide(win, spatial, (oi, ii, ki) => { acc[wo + ki]! += gd[go + oi]! * xd[xo + ii]!; });
            continue;
          }
          const { outIdx, inIdx, kIdx, length } = table;
          for (let e = 0; e < length; e++) acc[wo + kIdx[e]!]! += gd[go + outIdx[e]!]! * xd[xo + inIdx[e]!]!;
        }
      }
    }
    return [roundToDtype(tensor(g!.dtype, wShape, acc))];
  },
});

// --- pooling ----------------------------------------------------------------------------------

const maxPoolGrad = internal({
  op: 'MaxPoolGrad', category: 'pool', arity: [2, 2],
  attrs: { ...poolAttrs, storage_order: flagAttr(0) },
  infer: (ctx) => [input(ctx, 1)],
  cost: (ctx, outs) => ({ flops: elems(input(ctx, 0)) * ints(ctx.attrs, 'kernel_shape')!.reduce((a, b) => a * b, 1), bytes: moved(ctx, outs) }),
  cuda(dev, [g, x], [dx], attrs) {
    dev.maxPoolGrad(g!, x!, dx!, windowOf('MaxPool', attrs, x!.shape.slice(2), ints(attrs, 'kernel_shape')!, int(attrs, 'ceil_mode') === 1));
  },
  cpu([g, x], attrs) {
    const [N, C] = x!.shape as [number, number];
    const spatial = x!.shape.slice(2);
    const win = windowOf('MaxPool', attrs, spatial, ints(attrs, 'kernel_shape')!, int(attrs, 'ceil_mode') === 1);
    const inSize = spatial.reduce((a, b) => a * b, 1), outSize = win.out.reduce((a, b) => a * b, 1);
    const dx = zerosLike(x!);
    const best = new Float64Array(outSize), arg = new Int32Array(outSize);
    for (let nc = 0; nc < N * C; nc++) {
      best.fill(-Infinity);
      arg.fill(-1);
      const xo = nc * inSize;
      // The same strict '>' as the forward kernel: ties go to the first position.
      slide(win, spatial, (oi, ii) => { if (x!.data[xo + ii]! > best[oi]!) { best[oi] = x!.data[xo + ii]!; arg[oi] = ii; } });
      for (let o = 0; o < outSize; o++) if (arg[o]! >= 0) dx.data[xo + arg[o]!]! += g!.data[nc * outSize + o]!;
    }
    return [roundToDtype(dx)];
  },
});

const averagePoolGrad = internal({
  op: 'AveragePoolGrad', category: 'pool', arity: [1, 1],
  attrs: { ...poolAttrs, count_include_pad: flagAttr(0), ...shapeAttr },
  infer: (ctx) => [{ dtype: input(ctx, 0).dtype, shape: targetShape(ctx) }],
  cost: perOutput(1),
  cuda(dev, [g], [dx], attrs) {
    const win = windowOf('AveragePool', attrs, dx!.shape.slice(2), ints(attrs, 'kernel_shape')!, int(attrs, 'ceil_mode') === 1);
    dev.averagePoolGrad(g!, dx!, win, int(attrs, 'count_include_pad') ? padEnds(attrs, win) : null);
  },
  cpu([g], attrs) {
    const xShape = ints(attrs, 'shape')!;
    const [N, C] = xShape as [number, number];
    const spatial = xShape.slice(2);
    const win = windowOf('AveragePool', attrs, spatial, ints(attrs, 'kernel_shape')!, int(attrs, 'ceil_mode') === 1);
    const inSize = spatial.reduce((a, b) => a * b, 1), outSize = win.out.reduce((a, b) => a * b, 1);
    const counts = int(attrs, 'count_include_pad') ? padCounts(win, spatial, attrs) : null;
    const inside = new Float64Array(outSize);
    slide(win, spatial, (oi) => { inside[oi]!++; });
    const dx = tensor(g!.dtype, xShape);
    for (let nc = 0; nc < N * C; nc++) {
      slide(win, spatial, (oi, ii) => { dx.data[nc * inSize + ii]! += g!.data[nc * outSize + oi]! / (counts ? counts[oi]! : inside[oi]!); });
    }
    return [roundToDtype(dx)];
  },
});

// --- Gather, GatherElements, Slice: scatter the gradient back -----------------------------------

const gatherGrad = internal({
  op: 'GatherGrad', category: 'movement', arity: [2, 2], attrs: { axis: { type: 'int', default: 0 }, ...shapeAttr },
  infer: (ctx) => [{ dtype: input(ctx, 0).dtype, shape: targetShape(ctx) }],
  cost: (ctx, outs) => ({ flops: elems(input(ctx, 0)), bytes: moved(ctx, outs) }),
  cuda: (dev, [g, ind], [out], attrs) => dev.scatterAdd(g!, ind!, out!, normAxis(int(attrs, 'axis'), out!.shape.length, 'GatherGrad')),
  cudaAccumulate: (dev, [g, ind], acc, attrs) => dev.scatterAdd(g!, ind!, acc, normAxis(int(attrs, 'axis'), acc.shape.length, 'GatherGrad'), true),
  cpu([g, ind], attrs) {
    const shape = ints(attrs, 'shape')!;
    const axis = normAxis(int(attrs, 'axis'), shape.length, 'GatherGrad');
    const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
    const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
    const dim = shape[axis]!;
    const ni = ind!.data.length;
    const dx = tensor(g!.dtype, shape);
    // An empty result has nothing to scatter: its outer dims alone could be 2^31 rows of nothing.
    if (!dx.data.length || !g!.data.length) return [dx];
    for (let o = 0; o < outer; o++) {
      for (let j = 0; j < ni; j++) {
        const raw = ind!.data[j]!;
        const k = raw < 0 ? raw + dim : raw;
        const src = (o * ni + j) * inner, dst = (o * dim + k) * inner;
        for (let q = 0; q < inner; q++) dx.data[dst + q]! += g!.data[src + q]!;
      }
    }
    return [roundToDtype(dx)];
  },
});

const gatherElementsGrad = internal({
  op: 'GatherElementsGrad', category: 'movement', arity: [2, 2], attrs: { axis: { type: 'int', default: 0 }, ...shapeAttr },
  infer: (ctx) => [{ dtype: input(ctx, 0).dtype, shape: targetShape(ctx) }],
  cost: (ctx, outs) => ({ flops: elems(input(ctx, 0)), bytes: moved(ctx, outs) }),
  cuda: (dev, [g, ind], [out], attrs) => dev.scatterElementsAdd(g!, ind!, out!, normAxis(int(attrs, 'axis'), out!.shape.length, 'GatherElementsGrad')),
  cpu([g, ind], attrs) {
    const shape = ints(attrs, 'shape')!;
    const axis = normAxis(int(attrs, 'axis'), shape.length, 'GatherElementsGrad');
    const st = stridesOf(shape), ist = stridesOf(ind!.shape);
    const dx = tensor(g!.dtype, shape);
    for (let i = 0; i < ind!.data.length; i++) {
      let off = 0, rem = i;
      for (let d = 0; d < shape.length; d++) {
        const v = Math.floor(rem / ist[d]!);
        rem -= v * ist[d]!;
        const raw = ind!.data[i]!;
        off += (d === axis ? (raw < 0 ? raw + shape[d]! : raw) : v) * st[d]!;
      }
      dx.data[off]! += g!.data[i]!;
    }
    return [roundToDtype(dx)];
  },
});

const sliceGrad = internal({
  op: 'SliceGrad', category: 'movement', arity: [1, 1],
  attrs: { starts: { type: 'ints' }, ends: { type: 'ints' }, axes: { type: 'ints', optional: true }, steps: { type: 'ints', optional: true, nonzero: true }, ...shapeAttr },
  infer: (ctx) => [{ dtype: input(ctx, 0).dtype, shape: targetShape(ctx) }],
  cost: perOutput(0),
  cuda(dev, [g], [dx], attrs) {
    // Zeros, then g copied into the slice's positions: Slice's strides and base, written instead of read.
    const { strides, base } = sliceStrides('SliceGrad', attrs, dx!.shape);
    dev.fill(dx!, 0);
    dev.copyRegion(g!, dx!, g!.shape, stridesOf(g!.shape), strides, 0, base);
  },
  cpu([g], attrs) {
    const shape = ints(attrs, 'shape')!;
    const { axes } = sliceAxes({ node: 'SliceGrad', inputs: [], numOutputs: 1, attrs, consts: [] }, shape);
    const start = shape.map(() => 0), step = shape.map(() => 1);
    for (const a of axes) { start[a.axis] = a.start; step[a.axis] = a.step; }
    const st = stridesOf(shape);
    const dx = tensor(g!.dtype, shape);
    const gs = g!.shape;
    const idx = new Array<number>(gs.length).fill(0);
    for (let i = 0; i < g!.data.length; i++) {
      let off = 0;
      for (let d = 0; d < gs.length; d++) off += (start[d]! + idx[d]! * step[d]!) * st[d]!;
      dx.data[off] = g!.data[i]!;
      for (let d = gs.length - 1; d >= 0; d--) { if (++idx[d]! < gs[d]!) break; idx[d] = 0; }
    }
    return [dx];
  },
});

// --- SoftmaxCrossEntropyLoss ------------------------------------------------------------------

const sceGrad = internal({
  op: 'SoftmaxCrossEntropyLossGrad', category: 'loss', arity: [3, 4],
  attrs: { ignore_index: { type: 'int', optional: true }, reduction: { type: 'string', default: 'mean', oneOf: ['mean', 'sum', 'none'] } },
  infer: (ctx) => [input(ctx, 1)],
  cost: (ctx, outs) => ({ flops: 6 * elems(input(ctx, 1)), bytes: moved(ctx, outs) }),
  cuda(dev, [dl, s, l, w], [out], attrs) {
    const red = str(attrs, 'reduction');
    if (w || red === 'none' || s!.shape.length !== 2) throw new CleaveError('SoftmaxCrossEntropyLossGrad on CUDA takes [rows, classes] scores, no weights, mean or sum');
    dev.crossEntropyGrad(dl!, s!, l!, out!, red === 'mean', attrs['ignore_index'] as number | undefined);
  },
  cpu([dl, s, l, w], attrs) {
    const N = s!.shape[0]!, Cn = s!.shape[1]!;
    const inner = s!.shape.slice(2).reduce((a, b) => a * b, 1);
    const ignore = attrs['ignore_index'] as number | undefined;
    const red = str(attrs, 'reduction');
    let wsum = 0;
    for (let i = 0; i < l!.data.length; i++) if (l!.data[i] !== ignore) wsum += w ? w.data[l!.data[i]!]! : 1;
    const ds = zerosLike(s!);
    for (let n = 0; n < N; n++) {
      for (let i = 0; i < inner; i++) {
        const y = l!.data[n * inner + i]!;
        if (y === ignore) continue;
        if (y < 0 || y >= Cn) throw new CleaveError(`SoftmaxCrossEntropyLossGrad: label ${y} is out of range for ${Cn} classes`);
        const wy = w ? w.data[y]! : 1;
        const up = red === 'none' ? dl!.data[n * inner + i]! : red === 'sum' ? dl!.data[0]! : wsum ? dl!.data[0]! / wsum : 0;
        let mx = -Infinity;
        for (let c = 0; c < Cn; c++) mx = Math.max(mx, s!.data[(n * Cn + c) * inner + i]!);
        let sum = 0;
        for (let c = 0; c < Cn; c++) sum += Math.exp(s!.data[(n * Cn + c) * inner + i]! - mx);
        for (let c = 0; c < Cn; c++) {
          const p = Math.exp(s!.data[(n * Cn + c) * inner + i]! - mx) / sum;
          ds.data[(n * Cn + c) * inner + i] = (p - (c === y ? 1 : 0)) * wy * up;
        }
      }
    }
    return [roundToDtype(ds)];
  },
});

export const GRAD_OPS: OpDef[] = [
  geluGrad, layerNormGradInput, layerNormGradParams, rmsNormGradInput, rmsNormGradParams, padGrad, batchNormGradInput, batchNormGradParams,
  convGradInput, convGradWeight, maxPoolGrad, averagePoolGrad, gatherGrad, gatherElementsGrad, sliceGrad, sceGrad,
];
