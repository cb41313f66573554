import { describe, expect, it } from 'vitest';
import type { Attrs } from '../../src/core/ir/graph.js';
import { type Tensor, roundToDtype, tensor } from '../../src/core/ir/tensor.js';
import { slide, windowOf } from '../../src/core/ops/conv.js';
import { getOp } from '../../src/core/ops/index.js';
import { Rng } from '../../src/core/util/random.js';

// The CPU kernels of Conv, ConvGradInput and ConvGradWeight loop over a precomputed window table
// (1-D, 3-D) or row by row (2-D) instead of calling `slide` for every channel pair. They must give
// bit for bit what the per-pair `slide` loops gave (the same sums in the same order): the references
// below are those loops as they were.

interface Geometry { name: string; x: number[]; w: number[]; strides: number[]; dilations: number[]; pads: number[]; group: number }

const GEOMETRIES: Geometry[] = [
  { name: '2-D 7×7 stride 2 pad 3 (ResNet stem)', x: [2, 3, 11, 9], w: [4, 3, 7, 7], strides: [2, 2], dilations: [1, 1], pads: [3, 3, 3, 3], group: 1 },
  { name: '2-D 3×3 pad 1', x: [2, 4, 6, 5], w: [3, 4, 3, 3], strides: [1, 1], dilations: [1, 1], pads: [1, 1, 1, 1], group: 1 },
  { name: '2-D 1×1 stride 2 (downsample)', x: [1, 4, 5, 6], w: [6, 4, 1, 1], strides: [2, 2], dilations: [1, 1], pads: [0, 0, 0, 0], group: 1 },
  { name: '2-D uneven strides, dilations and pads, groups', x: [2, 4, 9, 8], w: [6, 2, 3, 2], strides: [2, 3], dilations: [2, 1], pads: [1, 0, 2, 3], group: 2 },
  { name: '2-D depthwise 5×5 dilation 2 stride 3', x: [1, 3, 10, 11], w: [3, 1, 5, 5], strides: [3, 3], dilations: [2, 2], pads: [4, 2, 1, 4], group: 3 },
  { name: '1-D', x: [2, 3, 13], w: [4, 3, 3], strides: [2], dilations: [2], pads: [1, 2], group: 1 },
  { name: '3-D', x: [1, 2, 4, 5, 3], w: [3, 2, 2, 3, 2], strides: [1, 2, 1], dilations: [1, 1, 2], pads: [1, 0, 1, 0, 1, 1], group: 1 },
];

const attrsOf = (g: Geometry): Attrs => ({ auto_pad: 'NOTSET', strides: g.strides, dilations: g.dilations, pads: g.pads, group: g.group });

function random(rng: Rng, dtype: 'float32' | 'float64', shape: number[]): Tensor {
  const t = tensor(dtype, shape);
  for (let i = 0; i < t.data.length; i++) t.data[i] = rng.normal();
  return roundToDtype(t);
}

/** The three kernels' former loops: `slide` per channel pair, in their order. */
function references(g: Geometry, x: Tensor, w: Tensor, b: Tensor, dy: Tensor): { y: Float64Array; dx: Float64Array; dw: Float64Array } {
  const [N, C] = g.x as [number, number];
  const M = g.w[0]!, G = g.group, cg = C / G, mg = M / G;
  const spatial = g.x.slice(2);
  const win = windowOf('Conv', attrsOf(g), spatial, g.w.slice(2), false);
  const inSize = spatial.reduce((p, q) => p * q, 1), outSize = win.out.reduce((p, q) => p * q, 1);
  const kSize = g.w.slice(2).reduce((p, q) => p * q, 1);
  const y = new Float64Array(N * M * outSize), dx = new Float64Array(N * C * inSize), dw = new Float64Array(w.data.length);
  const acc = new Float64Array(outSize), accIn = new Float64Array(inSize);
  for (let n = 0; n < N; n++) {
    for (let m = 0; m < M; m++) {
      acc.fill(b.data[m]!);
      const grp = Math.floor(m / mg);
      for (let c = 0; c < cg; c++) {
        const xo = (n * C + grp * cg + c) * inSize, wo = (m * cg + c) * kSize;
        slide(win, spatial, (oi, ii, ki) => { acc[oi]! += x.data[xo + ii]! * w.data[wo + ki]!; });
      }
      y.set(acc, (n * M + m) * outSize);
    }
    for (let ci = 0; ci < C; ci++) {
      accIn.fill(0);
      const grp = Math.floor(ci / cg), c = ci % cg;
      for (let mm = 0; mm < mg; mm++) {
        const m = grp * mg + mm;
        const go = (n * M + m) * outSize, wo = (m * cg + c) * kSize;
        slide(win, spatial, (oi, ii, ki) => { accIn[ii]! += dy.data[go + oi]! * w.data[wo + ki]!; });
      }
      dx.set(accIn, (n * C + ci) * inSize);
    }
    for (let m = 0; m < M; m++) {
      const grp = Math.floor(m / mg), go = (n * M + m) * outSize;
      for (let c = 0; c < cg; c++) {
        const xo = (n * C + grp * cg + c) * inSize, wo = (m * cg + c) * kSize;
        slide(win, spatial, (oi, ii, ki) => { dw[wo + ki]! += dy.data[go + oi]! * x.data[xo + ii]!; });
      }
    }
  }
  return { y, dx, dw };
}

describe('Conv CPU kernels (window table, 2-D rows)', () => {
  describe.each(GEOMETRIES)('$name', (g) => {
    it.each(['float32', 'float64'] as const)('%s: Conv, ConvGradInput and ConvGradWeight give the per-pair sums bit for bit', (dtype) => {
      const rng = new Rng(11);
      const x = random(rng, dtype, g.x), w = random(rng, dtype, g.w), b = random(rng, dtype, [g.w[0]!]);
      const attrs = attrsOf(g);
      const [y] = getOp('Conv', 'conv').cpu!([x, w, b], attrs, 1) as [Tensor];
      const dy = random(rng, dtype, y.shape);
      const ref = references(g, x, w, b, dy);
      const round = (a: Float64Array): number[] => [...roundToDtype(tensor(dtype, [a.length], a)).data];
      expect([...y.data]).toEqual(round(ref.y));
      const [dx] = getOp('ConvGradInput', 'dx').cpu!([dy, w], { ...attrs, shape: g.x }, 1) as [Tensor];
      expect(dx.shape).toEqual(g.x);
      expect([...dx.data]).toEqual(round(ref.dx));
      const [dw] = getOp('ConvGradWeight', 'dw').cpu!([dy, x], { ...attrs, shape: g.w }, 1) as [Tensor];
      expect(dw.shape).toEqual(g.w);
      expect([...dw.data]).toEqual(round(ref.dw));
    });
  });
});
