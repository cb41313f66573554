import { CleaveError } from '../errors.js';
import { type Dim, broadcast, formatShape } from '../ir/shape.js';
import { type Tensor, roundToDtype, tensor } from '../ir/tensor.js';
import type { Attrs } from '../ir/graph.js';
import { geluTanh, geluTanhGrad } from './math.js';
import { type MatMulEpilogue, type OpContext, type OpDef, flagAttr, getOp } from './registry.js';
import { elems, float, input, int, moved, requireDim, requireFloat, requireRank, sameDtype, str } from './util.js';

const at = (ctx: OpContext): string => `node '${ctx.node}'`;

/** NumPy matmul shapes: 1-D operands are promoted and the promoted dim dropped afterwards. */
function matmulShape(ctx: OpContext, a: readonly Dim[], b: readonly Dim[]): { out: Dim[]; m: Dim; k: Dim; n: Dim } {
  if (!a.length || !b.length) throw new CleaveError(`${at(ctx)}: MatMul operands must have rank ≥ 1, got ${formatShape(a)} and ${formatShape(b)}`);
  const A = a.length === 1 ? [1, a[0]!] : a;
  const B = b.length === 1 ? [b[0]!, 1] : b;
  const m = A[A.length - 2]!, k = A[A.length - 1]!, k2 = B[B.length - 2]!, n = B[B.length - 1]!;
  requireDim(ctx, 'inner dimensions of MatMul', k, k2, a, b);
  const batch = broadcast([A.slice(0, -2), B.slice(0, -2)], at(ctx));
  const out = [...batch];
  if (a.length > 1) out.push(m);
  if (b.length > 1) out.push(n);
  return { out, m, k, n };
}

/** C[b] = A[b] · B[b] with batch broadcasting; float64 accumulation. */
function matmulKernel(a: Tensor, b: Tensor): Tensor {
  const A = a.shape.length === 1 ? [1, a.shape[0]!] : a.shape;
  const B = b.shape.length === 1 ? [b.shape[0]!, 1] : b.shape;
  const M = A[A.length - 2]!, K = A[A.length - 1]!, N = B[B.length - 1]!;
  const ctx = { node: 'MatMul', inputs: [], numOutputs: 1, attrs: {}, consts: [] };
  const { out } = matmulShape(ctx, a.shape, b.shape);
  const batch = broadcast([A.slice(0, -2), B.slice(0, -2)], 'MatMul') as number[];
  const res = tensor(a.dtype, out as number[]);
  const nb = batch.reduce((x, y) => x * y, 1);
  const offsetOf = (shape: readonly number[], bi: number): number => {
    // Map a flat batch index to this operand's batch offset (size-1 dims broadcast).
    const bs = shape.slice(0, -2);
    let off = 0, rem = bi, stride = 1;
    const r = batch.length - bs.length;
    const strides: number[] = [];
    for (let i = bs.length - 1; i >= 0; i--) { strides[i] = stride; stride *= bs[i]!; }
    for (let i = batch.length - 1; i >= 0; i--) {
      const idx = rem % batch[i]!;
      rem = Math.floor(rem / batch[i]!);
      const j = i - r;
      if (j >= 0 && bs[j] !== 1) off += idx * strides[j]!;
    }
    return off;
  };
  const row = new Float64Array(N);
  const ad = a.data, bd = b.data, cd = res.data;
  for (let bi = 0; bi < nb; bi++) {
    const ao = offsetOf(A, bi) * M * K, bo = offsetOf(B, bi) * K * N, co = bi * M * N;
    for (let i = 0; i < M; i++) {
      row.fill(0);
      for (let k = 0; k < K; k++) {
        const av = ad[ao + i * K + k]!;
        if (av === 0) continue;
        const base = bo + k * N;
        for (let j = 0; j < N; j++) row[j] += av * bd[base + j]!;
      }
      cd.set(row, co + i * N);
    }
  }
  return roundToDtype(res);
}

const matmul: OpDef = {
  op: 'MatMul', since: 13, category: 'linalg', arity: [2, 2], attrs: {},
  infer(ctx) {
    const d = sameDtype(ctx, [0, 1]);
    return [{ dtype: d, shape: matmulShape(ctx, input(ctx, 0).shape, input(ctx, 1).shape).out }];
  },
  cost(ctx, outs) {
    const { k } = matmulShape(ctx, input(ctx, 0).shape, input(ctx, 1).shape);
    return { flops: 2 * elems(outs[0]!) * (typeof k === 'number' ? k : 1), bytes: moved(ctx, outs) };
  },
  cuda: (dev, [a, b], [out]) => dev.matmul(a!, b!, out!),
  cudaAccumulate: (dev, [a, b], acc) => dev.matmul(a!, b!, acc, false, false, 1, 1),
  cpu: ([a, b]) => [matmulKernel(a!, b!)],
};

/** The operand as the product sees it: its last two axes swapped when `trans` says so. */
function swapped(shape: readonly Dim[], trans: boolean): readonly Dim[] {
  return trans ? [...shape.slice(0, -2), shape[shape.length - 1]!, shape[shape.length - 2]!] : shape;
}

function swapLastTensor(x: Tensor): Tensor {
  const r = x.shape.length;
  const M = x.shape[r - 2]!, N = x.shape[r - 1]!;
  const y = tensor(x.dtype, [...x.shape.slice(0, -2), N, M]);
  for (let b = 0, nb = x.data.length / (M * N); b < nb; b++) {
    for (let i = 0; i < M; i++) for (let j = 0; j < N; j++) y.data[b * M * N + j * M + i] = x.data[b * M * N + i * N + j]!;
  }
  return y;
}

function fusedDims(ctx: OpContext): { out: Dim[]; k: Dim } {
  const ta = int(ctx.attrs, 'transA') === 1, tb = int(ctx.attrs, 'transB') === 1;
  const a = input(ctx, 0).shape, b = input(ctx, 1).shape;
  if ((ta && a.length < 2) || (tb && b.length < 2)) {
    throw new CleaveError(`${at(ctx)}: FusedMatMul transposes only operands of rank ≥ 2, got ${formatShape(a)} and ${formatShape(b)}`);
  }
  const { out, k } = matmulShape(ctx, swapped(a, ta), swapped(b, tb));
  return { out, k };
}

/** What FusedMatMul applies to its product, and the input that goes with it (see its comment). */
type Epilogue = '' | 'bias' | 'gelu_bias' | 'dgelu';
const EPILOGUES: readonly Epilogue[] = ['', 'bias', 'gelu_bias', 'dgelu'];

function epilogueOf(ctx: { node: string; attrs: Attrs }): Epilogue {
  const e = str(ctx.attrs, 'epilogue') ?? '';
  if (!(EPILOGUES as readonly string[]).includes(e)) throw new CleaveError(`node '${ctx.node}': FusedMatMul epilogue '${e}' is not one of bias, gelu_bias, dgelu`);
  return e as Epilogue;
}

/**
 * alpha · op(A) · op(B), op swapping the last two axes where transA / transB say, then an epilogue:
 * what a GEMM does in one call. The compiler folds Transposes and scalar Muls into it
 * (compiler/passes/matmul.ts), and the bias Add, GELU-tanh and GELU-tanh gradient that follow a
 * product (compiler/passes/epilogue.ts), after autodiff, so it needs no gradient of its own.
 * Epilogues: `bias` adds input 2 (a vector along the last axis); `gelu_bias` adds it, then applies
 * GELU-tanh, and with a second output writes the biased product there too (what GeluGrad reads);
 * `dgelu` multiplies by GELU-tanh′ of input 2 (the pre-activation).
 */
const fusedMatMul: OpDef = {
  op: 'FusedMatMul', domain: 'cleave', since: 13, category: 'linalg', arity: [2, 3], outputs: [1, 2],
  attrs: {
    transA: flagAttr(0), transB: flagAttr(0), alpha: { type: 'float', default: 1 },
    epilogue: { type: 'string', default: '' },
  },
  validate: (attrs) => {
    const e = attrs['epilogue'] ?? '';
    return (EPILOGUES as readonly unknown[]).includes(e) ? undefined : `FusedMatMul epilogue '${String(e)}' is not one of bias, gelu_bias, dgelu`;
  },
  infer(ctx) {
    const e = epilogueOf(ctx);
    const need = e ? 3 : 2;
    const given = ctx.inputs.filter((x) => x).length;
    if (given !== need) throw new CleaveError(`${at(ctx)}: FusedMatMul${e ? ` with epilogue ${e}` : ''} takes ${need} inputs, got ${given}`);
    const d = sameDtype(ctx, e ? [0, 1, 2] : [0, 1]);
    const { out } = fusedDims(ctx);
    if (ctx.numOutputs === 2 && e !== 'gelu_bias') throw new CleaveError(`${at(ctx)}: only FusedMatMul's gelu_bias epilogue has a second output`);
    if (e) {
      const x = input(ctx, 2).shape;
      const want = e === 'dgelu' ? out : [out[out.length - 1]!];
      if (x.length !== want.length || x.some((v, i) => v !== want[i])) {
        throw new CleaveError(`${at(ctx)}: FusedMatMul's ${e === 'dgelu' ? 'pre-activation' : 'bias'} must be ${formatShape(want)}, got ${formatShape(x)}`);
      }
    }
    return Array.from({ length: ctx.numOutputs }, () => ({ dtype: d, shape: out }));
  },
  cost(ctx, outs) {
    const { k } = fusedDims(ctx);
    const epi = epilogueOf(ctx) === '' ? 0 : 14;
    return { flops: (2 * (typeof k === 'number' ? k : 1) + epi) * elems(outs[0]!), bytes: moved(ctx, outs) };
  },
  cuda: (dev, [a, b, x], outs, attrs) => {
    const e = epilogueOf({ node: 'FusedMatMul', attrs });
    const [ta, tb, alpha] = [int(attrs, 'transA') === 1, int(attrs, 'transB') === 1, float(attrs, 'alpha') ?? 1];
    const out = outs[0]!, preact = outs[1] ?? null;
    if (e === '') return void dev.matmul(a!, b!, out, ta, tb, alpha);
    const spec: MatMulEpilogue = e === 'bias' ? { kind: 'bias', bias: x! } : e === 'gelu_bias' ? { kind: 'gelu-bias', bias: x!, preact } : { kind: 'dgelu', preact: x! };
    if (dev.matmul(a!, b!, out, ta, tb, alpha, 0, spec)) return;
    // cuBLASLt had no fused kernel for these sizes: the ops the compiler fused, as their own kernels.
    const tanh = { approximate: 'tanh' };
    if (e === 'dgelu') return getOp('GeluGrad', 'FusedMatMul').cuda!(dev, [out, x!], [out], tanh);
    const biased = preact ?? out;
    getOp('Add', 'FusedMatMul').cuda!(dev, [biased, x!], [biased], {});
    if (e === 'gelu_bias') getOp('Gelu', 'FusedMatMul').cuda!(dev, [biased], [out], tanh);
  },
  cudaAccumulate: (dev, [a, b], acc, attrs) => {
    if (str(attrs, 'epilogue')) throw new CleaveError('FusedMatMul with an epilogue does not add into an accumulator');
    dev.matmul(a!, b!, acc, int(attrs, 'transA') === 1, int(attrs, 'transB') === 1, float(attrs, 'alpha') ?? 1, 1);
  },
  cpu([a, b, x], attrs, numOutputs) {
    const e = epilogueOf({ node: 'FusedMatMul', attrs });
    const A = int(attrs, 'transA') === 1 ? swapLastTensor(a!) : a!;
    const B = int(attrs, 'transB') === 1 ? swapLastTensor(b!) : b!;
    const y = matmulKernel(A, B);
    const alpha = float(attrs, 'alpha') ?? 1;
    // One rounding to the dtype at the end, as the fused GEMM writes its output once.
    const n = y.shape[y.shape.length - 1] ?? 1;
    const pre = e === 'gelu_bias' && numOutputs === 2 ? tensor(y.dtype, [...y.shape]) : undefined;
    for (let i = 0; i < y.data.length; i++) {
      let v = alpha * y.data[i]!;
      if (e === 'bias' || e === 'gelu_bias') v += x!.data[i % n]!;
      if (pre) pre.data[i] = v;
      if (e === 'gelu_bias') v = geluTanh(v);
      else if (e === 'dgelu') v *= geluTanhGrad(x!.data[i]!);
      y.data[i] = v;
    }
    return pre ? [roundToDtype(y), roundToDtype(pre)] : [roundToDtype(y)];
  },
};

function gemmDims(ctx: OpContext): { m: Dim; k: Dim; n: Dim } {
  const a = requireRank(ctx, 0, [2]);
  const b = requireRank(ctx, 1, [2]);
  const ta = int(ctx.attrs, 'transA') === 1, tb = int(ctx.attrs, 'transB') === 1;
  const m = ta ? a[1]! : a[0]!, k = ta ? a[0]! : a[1]!;
  const k2 = tb ? b[1]! : b[0]!, n = tb ? b[0]! : b[1]!;
  requireDim(ctx, 'inner dimensions of Gemm', k, k2, a, b);
  return { m, k, n };
}

const gemm: OpDef = {
  op: 'Gemm', since: 13, category: 'linalg', arity: [2, 3],
  attrs: {
    alpha: { type: 'float', default: 1 }, beta: { type: 'float', default: 1 },
    transA: flagAttr(0), transB: flagAttr(0),
  },
  infer(ctx) {
    const d = sameDtype(ctx, ctx.inputs[2] ? [0, 1, 2] : [0, 1]);
    requireFloat(ctx, d);
    const { m, n } = gemmDims(ctx);
    const c = ctx.inputs[2];
    if (c) broadcast([c.shape, [m, n]], at(ctx));
    return [{ dtype: d, shape: [m, n] }];
  },
  cost(ctx, outs) {
    const { k } = gemmDims(ctx);
    return { flops: (2 * (typeof k === 'number' ? k : 1) + (ctx.inputs[2] ? 1 : 0)) * elems(outs[0]!), bytes: moved(ctx, outs) };
  },
  cuda: (dev, [a, b, c], [out], attrs) =>
    dev.gemm(a!, b!, c ?? null, out!, int(attrs, 'transA') === 1, int(attrs, 'transB') === 1, float(attrs, 'alpha'), float(attrs, 'beta')),
  cpu([a, b, c], attrs) {
    const t = (x: Tensor): Tensor => {
      const [r, q] = x.shape as [number, number];
      const y = tensor(x.dtype, [q, r]);
      for (let i = 0; i < r; i++) for (let j = 0; j < q; j++) y.data[j * r + i] = x.data[i * q + j]!;
      return y;
    };
    const A = int(attrs, 'transA') ? t(a!) : a!;
    const B = int(attrs, 'transB') ? t(b!) : b!;
    const ab = matmulKernel(A, B);
    const alpha = float(attrs, 'alpha'), beta = float(attrs, 'beta');
    const [M, N] = ab.shape as [number, number];
    const out = tensor(ab.dtype, [M, N]);
    for (let i = 0; i < M * N; i++) out.data[i] = alpha * ab.data[i]!;
    if (c) {
      const cs = c.shape;
      for (let i = 0; i < M; i++) {
        for (let j = 0; j < N; j++) {
          const ci = cs.length === 0 ? 0 : cs.length === 1 ? (cs[0] === 1 ? 0 : j) : (cs[0] === 1 ? 0 : i) * cs[1]! + (cs[1] === 1 ? 0 : j);
          out.data[i * N + j] += beta * c.data[ci]!;
        }
      }
    }
    return [roundToDtype(out)];
  },
};

export const LINALG_OPS: OpDef[] = [matmul, gemm, fusedMatMul];
