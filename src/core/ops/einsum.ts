// ONNX Einsum (opset 12): what torch.einsum exports. The equation names each operand's axes by
// letters ('bhqd,bhkd->bhqk'); '...' stands for broadcast leading (or middle) axes; without '->'
// the output is the letters used once, in alphabetical order, after the ellipsis axes. A letter
// repeated within one operand (a diagonal, 'ii->i') is refused.
//
// CPU: one loop over every index letter, float64 accumulation, one rounding to the dtype.
// CUDA: composed from device primitives, operands contracted left to right: each pair permuted
// into [batch, free, contracted] by strided copies (skipped where an operand already lies so, or
// transposed the way a GEMM can read it), one batched GEMM, then the result permuted into the
// output; letters only one operand has and the output lacks are summed first (the device's
// reduction). Temporaries come from the device's allocator and are freed before the kernel returns.
import { CleaveError } from '../errors.js';
import type { Value } from '../ir/graph.js';
import { type Dim, type Shape, formatShape, staticShape, stridesOf } from '../ir/shape.js';
import { type Tensor, roundToDtype, tensor } from '../ir/tensor.js';
import type { Cost, CudaDevice, DeviceTensor, GradRule, OpContext, OpDef } from './registry.js';
import { input, moved, sameDtype, str } from './util.js';

/** One operand's (or the output's) subscripts: its letters, and where '...' stands among them (-1: nowhere). */
export interface Subscripts {
  readonly letters: readonly string[];
  readonly ellipsis: number;
}

export interface EinsumEquation {
  readonly inputs: readonly Subscripts[];
  readonly output: Subscripts;
  /** The equation had '->'. */
  readonly explicit: boolean;
}

const LETTER = /^[A-Za-z]$/;

function parseTerm(s: string, what: string, where: string, eq: string): Subscripts {
  const letters: string[] = [];
  let ellipsis = -1;
  for (let i = 0; i < s.length;) {
    if (s[i] === '.') {
      if (s.slice(i, i + 3) !== '...') throw new CleaveError(`${where}: Einsum equation '${eq}': ${what} has a '.' that is not part of '...'`);
      if (ellipsis >= 0) throw new CleaveError(`${where}: Einsum equation '${eq}': ${what} has more than one '...'`);
      ellipsis = letters.length;
      i += 3;
      continue;
    }
    const c = s[i]!;
    if (!LETTER.test(c)) throw new CleaveError(`${where}: Einsum equation '${eq}': bad character '${c}' in ${what} (subscripts are letters a-z, A-Z and '...')`);
    if (letters.includes(c)) {
      throw new CleaveError(`${where}: Einsum equation '${eq}': index '${c}' repeats in ${what}; ` +
        (what === 'the output' ? 'an output index appears once' : 'diagonals (an index repeated within one operand) are not supported'));
    }
    letters.push(c);
    i++;
  }
  return { letters, ellipsis };
}

/**
 * The equation's subscripts (spaces ignored), checked: letters and '...' only, one '->' at most,
 * no index twice in one term, output indices all in some operand, `count` operands where given.
 * `where` names the node in the errors.
 */
export function parseEquation(equation: string, count: number | undefined, where: string): EinsumEquation {
  const eq = equation.replace(/\s+/g, '');
  const parts = eq.split('->');
  if (parts.length > 2) throw new CleaveError(`${where}: Einsum equation '${equation}' has more than one '->'`);
  const terms = parts[0]!.split(',');
  if (count !== undefined && terms.length !== count) {
    throw new CleaveError(`${where}: Einsum equation '${equation}' has ${terms.length} operand${terms.length === 1 ? '' : 's'}, the node has ${count} input${count === 1 ? '' : 's'}`);
  }
  const inputs = terms.map((t, i) => parseTerm(t, `operand ${i}`, where, equation));
  const anyEllipsis = inputs.some((s) => s.ellipsis >= 0);
  if (parts.length === 2) {
    const output = parseTerm(parts[1]!, 'the output', where, equation);
    for (const c of output.letters) {
      if (!inputs.some((s) => s.letters.includes(c))) throw new CleaveError(`${where}: Einsum equation '${equation}': output index '${c}' is in no operand`);
    }
    if (output.ellipsis >= 0 && !anyEllipsis) throw new CleaveError(`${where}: Einsum equation '${equation}': the output has '...' but no operand has`);
    return { inputs, output, explicit: true };
  }
  // Implicit: the letters used exactly once, in alphabetical (character code) order, after '...'.
  const uses = new Map<string, number>();
  for (const s of inputs) for (const c of s.letters) uses.set(c, (uses.get(c) ?? 0) + 1);
  const letters = [...uses].filter(([, n]) => n === 1).map(([c]) => c).sort();
  return { inputs, output: { letters, ellipsis: anyEllipsis ? 0 : -1 }, explicit: false };
}

/** The subscripts as an equation writes them. */
export const termString = (s: Subscripts): string =>
  s.ellipsis < 0 ? s.letters.join('') : [...s.letters.slice(0, s.ellipsis), '...', ...s.letters.slice(s.ellipsis)].join('');

/** Each axis's label: its letter, or '.k' for ellipsis axis k of the broadcast ellipsis axes (right-aligned). */
export interface Labelled {
  readonly inputs: readonly (readonly string[])[];
  readonly output: readonly string[];
  /** How many ellipsis axes each operand has. */
  readonly ellipsisDims: readonly number[];
}

function expand(s: Subscripts, e: number, E: number): string[] {
  if (s.ellipsis < 0) return [...s.letters];
  const ell = Array.from({ length: e }, (_, j) => `.${E - e + j}`);
  return [...s.letters.slice(0, s.ellipsis), ...ell, ...s.letters.slice(s.ellipsis)];
}

export function labelAxes(p: EinsumEquation, ranks: readonly number[], where: string, equation: string): Labelled {
  const ellipsisDims = p.inputs.map((s, i) => {
    const r = ranks[i]!, n = s.letters.length;
    if (s.ellipsis < 0 ? r !== n : r < n) {
      throw new CleaveError(`${where}: Einsum equation '${equation}': operand ${i} has rank ${r}, but its subscripts '${termString(s)}' name ${s.ellipsis < 0 ? '' : 'at least '}${n} ax${n === 1 ? 'is' : 'es'}`);
    }
    return s.ellipsis < 0 ? 0 : r - n;
  });
  const E = Math.max(0, ...ellipsisDims);
  return {
    inputs: p.inputs.map((s, i) => expand(s, ellipsisDims[i]!, E)),
    output: expand(p.output, E, E),
    ellipsisDims,
  };
}

/**
 * The size of each label over all operands: one size per letter (a mismatch is an error naming the
 * node, the letter and both shapes), ellipsis axes broadcast (1 against n is n).
 */
function labelSizes(L: Labelled, shapes: readonly Shape[], where: string, equation: string): Map<string, Dim> {
  const sizes = new Map<string, Dim>();
  const from = new Map<string, number>();
  L.inputs.forEach((labels, i) => labels.forEach((l, a) => {
    const d = shapes[i]![a]!;
    const had = sizes.get(l);
    if (had === undefined) { sizes.set(l, d); from.set(l, i); return; }
    if (had === d) return;
    const ell = l.startsWith('.');
    if (ell && had === 1) { sizes.set(l, d); from.set(l, i); return; }
    if (ell && d === 1) return;
    if (typeof had === 'number' && typeof d === 'number') {
      const j = from.get(l)!;
      throw new CleaveError(ell
        ? `${where}: Einsum equation '${equation}': the '...' axes of operand ${j} ${formatShape(shapes[j]!)} and operand ${i} ${formatShape(shapes[i]!)} do not broadcast`
        : `${where}: Einsum equation '${equation}': index '${l}' has size ${had} in operand ${j} ${formatShape(shapes[j]!)} but ${d} in operand ${i} ${formatShape(shapes[i]!)}`);
    }
    // A symbolic size against a static one: the static one.
    if (typeof had !== 'number') { sizes.set(l, d); from.set(l, i); }
  }));
  return sizes;
}

interface Resolved { p: EinsumEquation; L: Labelled; sizes: Map<string, Dim> }

function resolve(equation: string, shapes: readonly Shape[], where: string): Resolved {
  const p = parseEquation(equation, shapes.length, where);
  const L = labelAxes(p, shapes.map((s) => s.length), where, equation);
  return { p, L, sizes: labelSizes(L, shapes, where, equation) };
}

const at = (ctx: OpContext): string => `node '${ctx.node}'`;
const num = (d: Dim | undefined): number => (typeof d === 'number' ? d : 1);
const prod = (xs: readonly number[]): number => xs.reduce((a, b) => a * b, 1);

function inferOf(ctx: OpContext): Resolved {
  ctx.inputs.forEach((_, i) => input(ctx, i));
  const eq = str(ctx.attrs, 'equation');
  return resolve(eq, ctx.inputs.map((v) => v!.shape), at(ctx));
}

/**
 * FLOPs of the left-to-right contraction the CUDA kernel runs: each pair's product (2 per
 * multiply-add over the letters the pair spans) and the sums of letters one operand has alone.
 */
function einsumFlops({ L, sizes }: Resolved): number {
  const size = (ls: Iterable<string>): number => prod([...ls].map((l) => num(sizes.get(l))));
  const n = L.inputs.length;
  let acc = new Set(L.inputs[0]!);
  let flops = 0;
  const keepAfter = (i: number): Set<string> => new Set([...L.output, ...L.inputs.slice(i + 1).flat()]);
  for (let i = 1; i < n; i++) {
    const other = new Set(L.inputs[i]!), keep = keepAfter(i);
    const trim = (s: Set<string>, o: Set<string>): Set<string> => {
      const t = new Set([...s].filter((l) => o.has(l) || keep.has(l)));
      if (t.size < s.size) flops += size(s);
      return t;
    };
    const a = trim(acc, other), b = trim(other, acc);
    const all = new Set([...a, ...b]);
    flops += 2 * size(all);
    acc = new Set([...all].filter((l) => keep.has(l)));
  }
  const out = new Set(L.output);
  if ([...acc].some((l) => !out.has(l))) flops += size(acc);
  return flops;
}

function einsumCpu(ins: readonly Tensor[], equation: string): Tensor {
  const { L, sizes } = resolve(equation, ins.map((t) => t.shape), 'Einsum');
  const outShape = L.output.map((l) => num(sizes.get(l)));
  const summed = [...new Set(L.inputs.flat())].filter((l) => !L.output.includes(l));
  const order = [...L.output, ...summed];
  const dims = order.map((l) => num(sizes.get(l)));
  // Per operand, the stride of each loop letter (0: absent, or a broadcast ellipsis axis of size 1).
  const strides = ins.map((t, k) => {
    const st = stridesOf(t.shape);
    return order.map((l) => {
      const a = L.inputs[k]!.indexOf(l);
      return a < 0 || (t.shape[a] === 1 && dims[order.indexOf(l)] !== 1) ? 0 : st[a]!;
    });
  });
  const outSt = [...stridesOf(outShape), ...summed.map(() => 0)];
  const acc = new Float64Array(prod(outShape));
  const total = prod(dims);
  if (total > 0) {
    const R = order.length, K = ins.length;
    const idx = new Array<number>(R).fill(0);
    const off = new Array<number>(K).fill(0);
    const data = ins.map((t) => t.data);
    let o = 0;
    for (let n = 0; n < total; n++) {
      let v = 1;
      for (let k = 0; k < K; k++) v *= data[k]![off[k]!]!;
      acc[o] += v;
      for (let d = R - 1; d >= 0; d--) {
        if (++idx[d]! < dims[d]!) {
          o += outSt[d]!;
          for (let k = 0; k < K; k++) off[k] += strides[k]![d]!;
          break;
        }
        idx[d] = 0;
        o -= outSt[d]! * (dims[d]! - 1);
        for (let k = 0; k < K; k++) off[k] -= strides[k]![d]! * (dims[d]! - 1);
      }
    }
  }
  return roundToDtype(tensor(ins[0]!.dtype, outShape, acc));
}

// --- CUDA --------------------------------------------------------------------------------------

/** What the kernel needs of the device beyond CudaDevice: temporaries (runtime/backends/cuda's Cuda has both). */
interface ScratchDevice extends CudaDevice {
  alloc(dtype: DeviceTensor['dtype'], shape: readonly number[]): DeviceTensor;
  free(t: DeviceTensor): void;
}

function scratchDevice(dev: CudaDevice): ScratchDevice {
  const d = dev as Partial<ScratchDevice>;
  if (typeof d.alloc !== 'function' || typeof d.free !== 'function') throw new CleaveError('Einsum on CUDA needs a device that allocates temporaries (alloc and free)');
  return dev as ScratchDevice;
}

/** A tensor on the device and the label of each axis; `owned` temporaries are the kernel's to free. */
interface Term { readonly t: DeviceTensor; readonly labels: readonly string[]; readonly owned: boolean }

const sameLabels = (a: readonly string[], b: readonly string[]): boolean => a.length === b.length && a.every((l, i) => l === b[i]);

function release(dev: ScratchDevice, x: Term): void {
  if (x.owned) dev.free(x.t);
}

/** The term with labels `drop` summed out (the device's reduction), written into `into` where given. */
function sumOut(dev: ScratchDevice, x: Term, drop: readonly string[], into?: DeviceTensor): Term {
  if (!drop.length) return x;
  const axes = x.labels.flatMap((l, a) => (drop.includes(l) ? [a] : []));
  const labels = x.labels.filter((l) => !drop.includes(l));
  const shape = labels.map((l) => x.t.shape[x.labels.indexOf(l)]!);
  const out = into ?? dev.alloc(x.t.dtype, shape);
  dev.reduce('sum', x.t, { ...out, shape }, axes);
  release(dev, x);
  return { t: out, labels, owned: !into };
}

/**
 * The term with its axes in `order`, each of the size `size` gives (a broadcast axis of size 1
 * read with stride 0): the term itself where it already lies so, else a strided copy (Transpose's
 * kernel), into `into` where given.
 */
function arrange(dev: ScratchDevice, x: Term, order: readonly string[], size: (l: string) => number, into?: DeviceTensor): Term {
  const shape = order.map(size);
  const own = (l: string): number => x.t.shape[x.labels.indexOf(l)]!;
  if (!into && sameLabels(x.labels, order) && order.every((l) => own(l) === size(l))) return x;
  const st = stridesOf(x.t.shape);
  const strides = order.map((l) => {
    const a = x.labels.indexOf(l);
    return x.t.shape[a] === 1 && size(l) !== 1 ? 0 : st[a]!;
  });
  const out = into ?? dev.alloc(x.t.dtype, shape);
  dev.stridedCopy(x.t, { ...out, shape }, strides);
  release(dev, x);
  return { t: out, labels: order, owned: !into };
}

/**
 * a ⊗ b summed over the letters both have and nothing later needs (`keep`: the output's and the
 * later operands' letters): [batch, freeA, freeB] from one batched GEMM, written into `target`
 * where its labels come out in that order.
 */
function contract(dev: ScratchDevice, a0: Term, b0: Term, keep: ReadonlySet<string>, target?: { t: DeviceTensor; labels: readonly string[] }): Term {
  const a = sumOut(dev, a0, a0.labels.filter((l) => !b0.labels.includes(l) && !keep.has(l)));
  const b = sumOut(dev, b0, b0.labels.filter((l) => !a0.labels.includes(l) && !keep.has(l)));
  const inB = (l: string): boolean => b.labels.includes(l);
  const batch = a.labels.filter((l) => inB(l) && keep.has(l));
  const contr = a.labels.filter((l) => inB(l) && !keep.has(l));
  const freeA = a.labels.filter((l) => !inB(l));
  const freeB = b.labels.filter((l) => !a.labels.includes(l));
  const sizeIn = (x: Term, l: string): number => { const i = x.labels.indexOf(l); return i < 0 ? 1 : x.t.shape[i]!; };
  // Shared letters take the larger size (a broadcast ellipsis axis); free ones keep their own.
  const size = (l: string): number => Math.max(sizeIn(a, l), sizeIn(b, l));
  const lies = (x: Term, order: readonly string[]): boolean => sameLabels(x.labels, order) && order.every((l) => sizeIn(x, l) === size(l));
  const Bt = prod(batch.map(size)), M = prod(freeA.map(size)), K = prod(contr.map(size)), N = prod(freeB.map(size));
  const transA = !lies(a, [...batch, ...freeA, ...contr]) && lies(a, [...batch, ...contr, ...freeA]);
  const transB = !lies(b, [...batch, ...contr, ...freeB]) && lies(b, [...batch, ...freeB, ...contr]);
  const A = arrange(dev, a, transA ? [...batch, ...contr, ...freeA] : [...batch, ...freeA, ...contr], size);
  const B = arrange(dev, b, transB ? [...batch, ...freeB, ...contr] : [...batch, ...contr, ...freeB], size);
  const labels = [...batch, ...freeA, ...freeB];
  const shape = labels.map(size);
  const direct = target && sameLabels(target.labels, labels) && target.t.shape.every((d, i) => d === shape[i]);
  const out = direct ? target.t : dev.alloc(A.t.dtype, shape);
  if (Bt * M * N > 0) {
    if (K === 0) dev.fill(out, 0);
    else {
      dev.matmul({ ...A.t, shape: transA ? [Bt, K, M] : [Bt, M, K] }, { ...B.t, shape: transB ? [Bt, N, K] : [Bt, K, N] },
        { ...out, shape: [Bt, M, N] }, transA, transB);
    }
  }
  release(dev, A);
  release(dev, B);
  return { t: out, labels, owned: !direct };
}

function einsumCuda(dev0: CudaDevice, ins: readonly DeviceTensor[], out: DeviceTensor, equation: string): void {
  const dev = scratchDevice(dev0);
  const { L } = resolve(equation, ins.map((t) => t.shape), 'Einsum');
  if (out.shape.some((d) => d === 0)) return;
  const terms: Term[] = ins.map((t, i) => ({ t, labels: L.inputs[i]!, owned: false }));
  const target = { t: out, labels: L.output };
  let acc = terms[0]!;
  try {
    for (let i = 1; i < terms.length; i++) {
      const keep = new Set([...L.output, ...L.inputs.slice(i + 1).flat()]);
      acc = contract(dev, acc, terms[i]!, keep, i === terms.length - 1 ? target : undefined);
    }
    if (acc.t === out) return;
    const drop = acc.labels.filter((l) => !L.output.includes(l));
    const kept = acc.labels.filter((l) => !drop.includes(l));
    // Sum straight into the output where the kept axes already come in its order.
    if (drop.length && sameLabels(kept, L.output)) return void (acc = sumOut(dev, acc, drop, out));
    acc = sumOut(dev, acc, drop);
    acc = arrange(dev, acc, L.output, (l) => acc.t.shape[acc.labels.indexOf(l)]!, out);
  } finally {
    release(dev, acc);
  }
}

// --- gradient ----------------------------------------------------------------------------------

const shapeOf = (v: Value): number[] => staticShape(v.shape, `gradient of '${v.name}'`);

/**
 * dL/dx_i is an Einsum of the output's gradient with the other operands, whose output subscripts
 * are operand i's. Letters of operand i that neither the output nor another operand has were summed
 * in the forward: the gradient is broadcast back along them (Reshape to size 1, Expand). Ellipsis
 * axes operand i broadcast (size 1, or missing) are summed back (ReduceSum).
 */
const einsumGrad: GradRule = (ctx) => {
  const { b, inputs, gradOutputs: [g], attrs, node } = ctx;
  const equation = str(attrs, 'equation');
  const where = `node '${node}'`;
  const p = parseEquation(equation, inputs.length, where);
  const L = labelAxes(p, inputs.map((v) => v!.shape.length), where, equation);
  const outSub = termString(p.output);
  return inputs.map((x, i) => {
    if (!ctx.needsGrad[i] || !g) return null;
    const mine = p.inputs[i]!;
    const others = p.inputs.filter((_, k) => k !== i);
    const elsewhere = new Set([...p.output.letters, ...others.flatMap((s) => s.letters)]);
    const absent = mine.letters.filter((l) => !elsewhere.has(l));
    const e = L.ellipsisDims[i]!;
    if (e > 0 && p.output.ellipsis < 0) {
      throw new CleaveError(`${where}: the gradient of Einsum '${equation}' for input ${i}: its '...' axes are summed out of the output, which cleave does not differentiate yet`);
    }
    const keepEllipsis = mine.ellipsis >= 0 && p.output.ellipsis >= 0;
    const letters = mine.letters.filter((l) => !absent.includes(l));
    const ellAt = keepEllipsis ? letters.length - mine.letters.slice(mine.ellipsis).filter((l) => !absent.includes(l)).length : -1;
    const gradSub: Subscripts = { letters, ellipsis: ellAt };
    const eq = `${[outSub, ...others.map(termString)].join(',')}->${termString(gradSub)}`;
    const identity = others.length === 0 && outSub === termString(gradSub);
    let r = identity ? g : b.op('Einsum', [g, ...inputs.filter((_, k) => k !== i) as Value[]], { equation: eq });
    const xs = shapeOf(x!), rs = shapeOf(r);
    // r's axes: operand i's letters less the absent ones, with the ellipsis spanning Er axes.
    const Er = rs.length - letters.length;
    const reduce: number[] = [];
    if (keepEllipsis) {
      for (let j = 0; j < Er; j++) {
        const axis = ellAt + j, xi = j - (Er - e);
        if (xi < 0 || (xs[mine.ellipsis + xi] === 1 && rs[axis] !== 1)) reduce.push(axis);
      }
    }
    if (reduce.length) r = b.op('ReduceSum', [r], { axes: reduce, keepdims: 1 });
    // Operand i's shape with its absent letters' axes of size 1; then Expand back over them.
    const absentAxes = new Set(L.inputs[i]!.flatMap((l, a) => (absent.includes(l) ? [a] : [])));
    const keepShape = xs.map((d, a) => (absentAxes.has(a) ? 1 : d));
    const now = shapeOf(r);
    if (now.length !== keepShape.length || now.some((d, a) => d !== keepShape[a])) r = b.op('Reshape', [r], { shape: keepShape });
    if (absentAxes.size) r = b.op('Expand', [r], { shape: xs });
    return r;
  });
};

const einsum: OpDef = {
  op: 'Einsum', since: 12, category: 'linalg', arity: [1, 64],
  attrs: { equation: { type: 'string' } },
  validate(attrs) {
    try {
      parseEquation(String(attrs['equation']), undefined, 'Einsum');
      return undefined;
    } catch (e) {
      return (e as Error).message.replace(/^Einsum: /, '');
    }
  },
  infer(ctx) {
    const d = sameDtype(ctx, ctx.inputs.map((_, i) => i));
    if (d === 'bool') throw new CleaveError(`${at(ctx)}: Einsum takes numeric operands, got bool`);
    const { L, sizes } = inferOf(ctx);
    return [{ dtype: d, shape: L.output.map((l) => sizes.get(l)!) }];
  },
  cost(ctx, outs): Cost {
    return { flops: einsumFlops(inferOf(ctx)), bytes: moved(ctx, outs) };
  },
  grad: einsumGrad,
  cuda: (dev, ins, [out], attrs) => einsumCuda(dev, ins as DeviceTensor[], out!, str(attrs, 'equation')),
  cpu: (ins, attrs) => [einsumCpu(ins as Tensor[], str(attrs, 'equation'))],
};

export const EINSUM_OPS: OpDef[] = [einsum];
