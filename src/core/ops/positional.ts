// Position encodings: ONNX RotaryEmbedding (opset 23).
import { CleaveError } from '../errors.js';
import type { Attrs } from '../ir/graph.js';
import { type Dim, type Shape, formatShape } from '../ir/shape.js';
import { type Tensor, roundToDtype, tensor } from '../ir/tensor.js';
import { type OpContext, type OpDef, type RotaryGeometry, flagAttr } from './registry.js';
import { input, int, perOutput, requireFloat } from './util.js';

const at = (ctx: OpContext): string => `node '${ctx.node}'`;

/**
 * How RotaryEmbedding sees x: [B, H, S, D] (rank 4) or [B, S, H·D] (rank 3, num_heads given), as
 * batch, sequence, heads and head size with the strides of each, and the rotated part of a head.
 */
export function rotaryGeometry(shape: readonly number[], attrs: Attrs): RotaryGeometry {
  const interleaved = int(attrs, 'interleaved') === 1;
  const rd = (D: number) => int(attrs, 'rotary_embedding_dim') || D;
  if (shape.length === 4) {
    const [B, H, S, D] = shape as [number, number, number, number];
    return { batch: B, seq: S, heads: H, head: D, strides: [H * S * D, D, S * D], rotary: rd(D), interleaved };
  }
  const [B, S, hidden] = shape as [number, number, number];
  const H = int(attrs, 'num_heads'), D = hidden / H;
  return { batch: B, seq: S, heads: H, head: D, strides: [S * hidden, hidden, D], rotary: rd(D), interleaved };
}

const known = (d: Dim): d is number => typeof d === 'number';

function checkShape(ctx: OpContext, what: string, s: Shape, want: readonly Dim[]): void {
  const ok = s.length === want.length && s.every((d, i) => !known(d) || !known(want[i]!) || d === want[i]);
  if (!ok) throw new CleaveError(`${at(ctx)}: ${what} has shape ${formatShape(s)}; expected ${formatShape(want)}`);
}

const rotary: OpDef = {
  op: 'RotaryEmbedding', since: 23, category: 'elementwise', arity: [3, 4],
  attrs: { interleaved: flagAttr(0), num_heads: { type: 'int', default: 0, min: 0 }, rotary_embedding_dim: { type: 'int', default: 0, min: 0 } },
  infer(ctx) {
    const x = input(ctx, 0);
    requireFloat(ctx, x.dtype);
    const s = x.shape;
    const heads = int(ctx.attrs, 'num_heads');
    let B: Dim, S: Dim, D: Dim;
    if (s.length === 4) {
      [B, , S, D] = s as [Dim, Dim, Dim, Dim];
      if (heads && known(s[1]!) && s[1] !== heads) throw new CleaveError(`${at(ctx)}: num_heads ${heads} does not match the ${s[1]} heads of X ${formatShape(s)} [B, H, S, D]`);
    } else if (s.length === 3) {
      [B, S] = s as [Dim, Dim, Dim];
      if (!heads) throw new CleaveError(`${at(ctx)}: a 3-D X ${formatShape(s)} [B, S, hidden] needs num_heads`);
      const hidden = s[2]!;
      if (!known(hidden)) throw new CleaveError(`${at(ctx)}: the hidden size of X ${formatShape(s)} must be static`);
      if (hidden % heads) throw new CleaveError(`${at(ctx)}: hidden size ${hidden} of X ${formatShape(s)} does not divide into ${heads} heads`);
      D = hidden / heads;
    } else {
      throw new CleaveError(`${at(ctx)}: X has shape ${formatShape(s)}; expected rank 3 [B, S, hidden] or 4 [B, H, S, D]`);
    }
    if (!known(D)) throw new CleaveError(`${at(ctx)}: the head size of X ${formatShape(s)} must be static`);
    const rd = int(ctx.attrs, 'rotary_embedding_dim') || D;
    if (rd % 2 || rd > D) throw new CleaveError(`${at(ctx)}: rotary_embedding_dim ${rd} must be even and at most the head size ${D}`);
    for (const i of [1, 2]) {
      const c = input(ctx, i);
      const what = i === 1 ? 'cos_cache' : 'sin_cache';
      if (c.dtype !== x.dtype) throw new CleaveError(`${at(ctx)}: ${what} is ${c.dtype} but X is ${x.dtype}; they must be one type`);
      const pos = ctx.inputs[3];
      if (pos) checkShape(ctx, what, c.shape, [c.shape[0] ?? 0, rd / 2]);
      else checkShape(ctx, `${what} (without position_ids, [B, S, rotary_embedding_dim / 2])`, c.shape, [B, S, rd / 2]);
    }
    const pos = ctx.inputs[3];
    if (pos) {
      if (pos.dtype !== 'int64') throw new CleaveError(`${at(ctx)}: position_ids must be int64, got ${pos.dtype}`);
      checkShape(ctx, 'position_ids', pos.shape, [B, S]);
    }
    return [x];
  },
  cost: perOutput(3),
  cuda: (dev, [x, cos, sin, pos], [out], attrs) => dev.rotaryEmbedding(x!, cos!, sin!, pos ?? null, out!, rotaryGeometry(x!.shape, attrs)),
  cpu([x, cos, sin, pos], attrs) {
    const t = x!;
    const geo = rotaryGeometry(t.shape, attrs);
    return [roundToDtype(rotate(t, cos!, sin!, pos ?? null, geo))];
  },
};

/** The rotation itself, in float64 (the gradient is the same with −sin). */
export function rotate(x: Tensor, cos: Tensor, sin: Tensor, pos: Tensor | null, geo: RotaryGeometry): Tensor {
  const { batch: B, seq: S, heads: H, strides: [sB, sS, sH], rotary: rd, interleaved } = geo;
  const half = rd / 2;
  const out = tensor(x.dtype, x.shape, x.data);
  const rows = cos.shape[0]!;
  for (let b = 0; b < B; b++) {
    for (let s = 0; s < S; s++) {
      let row = b * S + s;
      if (pos) {
        row = pos.data[b * S + s]!;
        if (row < 0 || row >= rows) throw new CleaveError(`RotaryEmbedding: position id ${row} is out of range for caches of ${rows} positions`);
      }
      for (let h = 0; h < H; h++) {
        const base = b * sB + s * sS + h * sH;
        for (let j = 0; j < half; j++) {
          const c = cos.data[row * half + j]!, sn = sin.data[row * half + j]!;
          const i1 = base + (interleaved ? 2 * j : j), i2 = base + (interleaved ? 2 * j + 1 : j + half);
          const x1 = x.data[i1]!, x2 = x.data[i2]!;
          out.data[i1] = c * x1 - sn * x2;
          out.data[i2] = sn * x1 + c * x2;
        }
      }
    }
  }
  return out;
}

export const POSITIONAL_OPS: OpDef[] = [rotary];
