import { CleaveError } from '../../../src/core/errors.js';
import type { DType } from '../../../src/core/ir/dtype.js';
import { broadcast, stridesOf } from '../../../src/core/ir/shape.js';
import { type Tensor, bf16ToFloat, floatToBf16, floatToHalf, halfToFloat, tensor } from '../../../src/core/ir/tensor.js';
import { biasStrides } from '../../../src/core/ops/attention.js';
import type { CudaDevice, DeviceTensor, MatMulEpilogue, RotaryGeometry, WindowGeometry } from '../../../src/core/ops/registry.js';
import { type BinaryOp, type CompareOp, type LogicOp, type UnaryOp, nativeCode } from '../../../src/core/ops/native_codes.js';
import { Arena } from './arena.js';
import { collapseDims } from './layout.js';
import { type NativeCuda, requireCuda } from './native.js';

/** Device element codes of the native kernels. */
const CODE: Partial<Record<DType, number>> = { float32: 0, bfloat16: 1, float16: 2 };
/** The cast kernel's codes: the float codes, then the integer and bool types it also converts. */
const CAST_CODE: Partial<Record<DType, number>> = { ...CODE, int64: 3, int32: 4, bool: 5 };
const BYTES: Partial<Record<DType, number>> = { float32: 4, bfloat16: 2, float16: 2, int64: 8, bool: 1, int32: 4 };

const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);
/** Copy kernels move bytes: their code is the element width. */
const COPY_CODE: Record<number, number> = { 4: 0, 2: 1, 8: 2, 1: 3 };

function floatCode(t: DeviceTensor, what: string): number {
  const c = CODE[t.dtype];
  if (c === undefined) throw new CleaveError(`${what} on CUDA takes float32, bfloat16 or float16, not ${t.dtype}`);
  return c;
}

/** Strides with which a tensor of `shape` is read at each index of `out` (0 where it broadcasts). */
function broadcastStrides(shape: readonly number[], out: readonly number[]): number[] {
  const st = stridesOf(shape);
  const r = out.length - shape.length;
  return out.map((_, i) => (i < r || shape[i - r] === 1 ? 0 : st[i - r]!));
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Integers as int64, written word by word: converting each through a BigInt took about 10 ms a
 * step for a GPT batch's token ids and labels (65,536 of them), time the rank's first kernel waited.
 */
export function int64Array(data: ArrayLike<number>): BigInt64Array {
  const out = new BigInt64Array(data.length);
  if (!LITTLE_ENDIAN) return BigInt64Array.from(data as ArrayLike<number>, (x) => BigInt(x));
  const words = new Int32Array(out.buffer);
  for (let i = 0; i < data.length; i++) {
    const x = data[i]!;
    // BigInt(x) says what is wrong with a fraction or NaN.
    if (!Number.isSafeInteger(x)) out[i] = BigInt(x);
    const hi = Math.floor(x / 4294967296);
    words[2 * i] = (x - hi * 4294967296) | 0;
    words[2 * i + 1] = hi;
  }
  return out;
}

/** A host tensor's bytes as the device stores them in dtype `as`. */
export function hostBytes(t: Tensor, as: DType = t.dtype): ArrayBufferView {
  if (as === 'bfloat16') return Uint16Array.from(t.data, (x) => floatToBf16(x));
  // float16 ends at ±65504: a finite constant beyond it (a −1e9 mask fill) is held at the limit
  // rather than becoming infinite, so 0 · fill stays 0.
  if (as === 'float16') return Uint16Array.from(t.data, (x) => floatToHalf(Number.isFinite(x) ? Math.max(-65504, Math.min(65504, x)) : x));
  if (as === 'float32') return Float32Array.from(t.data);
  if (as === 'int64') return int64Array(t.data);
  if (as === 'int32') return Int32Array.from(t.data);
  if (as === 'bool') return Uint8Array.from(t.data, (x) => (x ? 1 : 0));
  throw new CleaveError(`cannot upload ${t.dtype} as ${as}`);
}

/** Bytes of one element of a device tensor of `dtype`. */
export const deviceBytes = (dtype: DType): number => {
  const b = BYTES[dtype];
  if (b === undefined) throw new CleaveError(`CUDA tensors of ${dtype} are not supported yet`);
  return b;
};

/**
 * The CUDA device as registry kernels see it: tensors in device memory (one allocation each here;
 * the plan's arena is the next step) and the native kernels. Work is queued on one stream.
 */
export class Cuda implements CudaDevice {
  readonly n: NativeCuda;
  /** Live allocations and how many tensors (the allocation and its views) still refer to each. */
  private readonly live = new Map<bigint, number>();
  private readonly freed = new WeakSet<DeviceTensor>();

  constructor(n?: NativeCuda) {
    this.n = n ?? requireCuda();
  }

  /**
   * The step arena (launch lists): while `arenaOpen`, tensors are placed by a deterministic
   * allocator, into the block at `base`, or (sizing, no base) from the pool while the allocator
   * only measures how big that block must be.
   */
  private arena: { a: Arena; base: bigint | undefined } | undefined;
  /** Arena offset of each live tensor allocation the arena placed (or sized). */
  private readonly arenaAt = new Map<bigint, number>();
  arenaOpen = false;
  /**
   * Memory another stream may still read (a multi-rank run's send in flight): where this says so,
   * a freed allocation is held back until `releaseHeld` finds it done.
   */
  holdFree: ((ptr: bigint) => boolean) | undefined;
  private held: bigint[] = [];

  /** Releases the held allocations `done` says no stream reads any more (all of them without `done`). */
  releaseHeld(done?: (ptr: bigint) => boolean): void {
    const go = done ? this.held.filter(done) : this.held;
    this.held = done ? this.held.filter((p) => !go.includes(p)) : [];
    for (const p of go) this.release(p);
  }

  /** Starts measuring: allocations while open still come from the pool. */
  sizeArena(): void {
    this.endArena();
    this.arena = { a: new Arena(), base: undefined };
  }

  /** The bytes the arena needs for what it has seen (sizing) or used. */
  get arenaHigh(): number {
    return this.arena?.a.high ?? 0;
  }

  /** Places allocations made while open in [base, base + capacity) from now on. */
  useArena(base: bigint, capacity: number): void {
    this.endArena();
    this.arena = { a: new Arena(capacity), base };
  }

  /** Forgets the arena and its tensors (its block is the caller's to free). */
  endArena(): void {
    if (this.arena?.base !== undefined) {
      for (const p of this.arenaAt.keys()) this.live.delete(p);
      // Held memory in the block (a send's, under launch lists) goes with it.
      this.held = this.held.filter((p) => !this.arenaAt.has(p));
    }
    this.arenaAt.clear();
    this.arena = undefined;
    this.arenaOpen = false;
  }

  alloc(dtype: DType, shape: readonly number[]): DeviceTensor {
    const bytes = Math.max(1, numel(shape) * deviceBytes(dtype));
    const a = this.arenaOpen ? this.arena : undefined;
    const off = a?.a.alloc(bytes);
    const ptr = a?.base !== undefined ? a.base + BigInt(off!) : this.n.alloc(bytes);
    if (off !== undefined) this.arenaAt.set(ptr, off);
    this.live.set(ptr, 1);
    return { ptr, dtype, shape: [...shape] };
  }

  /**
   * The same bytes under another shape (Reshape, Flatten, Squeeze, Identity: every tensor here is
   * dense and row-major, so these need no copy). The memory goes when the last of its tensors is freed.
   */
  view(t: DeviceTensor, shape: readonly number[]): DeviceTensor {
    if (this.external.has(t.ptr)) {
      if (numel(shape) !== numel(t.shape)) throw new CleaveError(`cannot view [${t.shape.join(', ')}] as [${shape.join(', ')}]`);
      return { ptr: t.ptr, dtype: t.dtype, shape: [...shape] };
    }
    const refs = this.live.get(t.ptr);
    if (refs === undefined) throw new CleaveError('a view of a freed CUDA tensor');
    if (numel(shape) !== numel(t.shape)) throw new CleaveError(`cannot view [${t.shape.join(', ')}] as [${shape.join(', ')}]`);
    this.live.set(t.ptr, refs + 1);
    return { ptr: t.ptr, dtype: t.dtype, shape: [...shape] };
  }

  free(t: DeviceTensor): void {
    // Freeing a tensor twice is harmless, as before views: only its first free drops a reference.
    if (this.freed.has(t)) return;
    this.freed.add(t);
    const refs = this.live.get(t.ptr);
    if (refs === undefined) return;
    if (refs > 1) this.live.set(t.ptr, refs - 1);
    else {
      this.live.delete(t.ptr);
      if (this.holdFree?.(t.ptr)) this.held.push(t.ptr);
      else this.release(t.ptr);
    }
  }

  /** Memory of a tensor nothing refers to any more back to the arena or the pool. */
  private release(ptr: bigint): void {
    const off = this.arenaAt.get(ptr);
    if (off !== undefined) {
      this.arenaAt.delete(ptr);
      this.arena!.a.free(off);
      if (this.arena!.base !== undefined) return;
    }
    this.n.free(ptr);
  }

  /** Allocations still held: what a leak check compares before and after. */
  get allocations(): number {
    return this.live.size;
  }

  freeAll(): void {
    this.releaseHeld();
    this.endArena();
    for (const p of this.live.keys()) this.n.free(p);
    this.live.clear();
  }

  /** Host tensor → device; float32 data becomes bfloat16 or float16 when `as` asks for it. */
  upload(t: Tensor, as: DType = t.dtype): DeviceTensor {
    const d = this.alloc(as, t.shape);
    this.n.upload(d.ptr, hostBytes(t, as));
    return d;
  }

  /**
   * Memory this object does not own (a captured step's feed buffers): views of it are plain
   * aliases and freeing them does nothing; its owner frees it.
   */
  readonly external = new Set<bigint>();

  /** Addresses of the live allocations (to tell, after a capture, which the graph made). */
  livePointers(): Set<bigint> {
    return new Set(this.live.keys());
  }

  /** Stops tracking allocations a captured CUDA graph now owns (it frees them at its next launch). */
  forgetPointers(ptrs: Iterable<bigint>): void {
    for (const p of ptrs) this.live.delete(p);
  }

  /** Device → host (waits for the queued work); bfloat16 comes back as float32 values. */
  download(d: DeviceTensor): Tensor {
    const buf = this.n.download(d.ptr, numel(d.shape) * BYTES[d.dtype]!);
    switch (d.dtype) {
      case 'float32': return tensor('float32', d.shape, new Float32Array(buf));
      case 'bfloat16': return tensor('bfloat16', d.shape, Array.from(new Uint16Array(buf), bf16ToFloat));
      case 'float16': return tensor('float16', d.shape, Array.from(new Uint16Array(buf), halfToFloat));
      case 'int64': return tensor('int64', d.shape, Array.from(new BigInt64Array(buf), Number));
      case 'int32': return tensor('int32', d.shape, new Int32Array(buf));
      case 'bool': return tensor('bool', d.shape, new Uint8Array(buf));
      default: throw new CleaveError(`cannot download ${d.dtype}`);
    }
  }

  unary(op: UnaryOp, x: DeviceTensor, out: DeviceTensor, alpha = 0, beta = 0): void {
    this.n.unary(nativeCode('unary', op), floatCode(x, 'unary op'), x.ptr, out.ptr, numel(out.shape), alpha, beta);
  }

  binary(op: BinaryOp, a: DeviceTensor, b: DeviceTensor, out: DeviceTensor): void {
    const { dims, strides: [sa, sb] } = collapseDims(out.shape, [broadcastStrides(a.shape, out.shape), broadcastStrides(b.shape, out.shape)]);
    this.n.binary(nativeCode('binary', op), floatCode(out, 'binary op'), a.ptr, b.ptr, out.ptr, dims, sa!, sb!);
  }

  where(c: DeviceTensor, x: DeviceTensor, y: DeviceTensor, out: DeviceTensor): void {
    const s = (t: DeviceTensor) => broadcastStrides(t.shape, out.shape);
    const { dims, strides: [sc, sx, sy] } = collapseDims(out.shape, [s(c), s(x), s(y)]);
    this.n.where(floatCode(out, 'Where'), c.ptr, x.ptr, y.ptr, out.ptr, dims, sc!, sx!, sy!);
  }

  softmax(x: DeviceTensor, out: DeviceTensor, log: boolean): void {
    const cols = x.shape.at(-1) ?? 1;
    this.n.softmax(floatCode(x, 'Softmax'), x.ptr, out.ptr, numel(x.shape) / cols, cols, log);
  }

  layerNorm(x: DeviceTensor, scale: DeviceTensor | null, bias: DeviceTensor | null, out: DeviceTensor, epsilon: number): void {
    const cols = x.shape.at(-1) ?? 1;
    this.n.layernorm(floatCode(x, 'LayerNormalization'), x.ptr, scale?.ptr ?? 0n, bias?.ptr ?? 0n, out.ptr, numel(x.shape) / cols, cols,
      scale ? numel(scale.shape) : 1, bias ? numel(bias.shape) : 1, epsilon);
  }

  /**
   * Row-major batched C = A·B through cuBLAS (column-major): C' = B'·A' with the operands swapped.
   * Batch dims: equal, or one side unbatched (stride 0).
   */
  matmul(a: DeviceTensor, b: DeviceTensor, out: DeviceTensor, transA = false, transB = false, alpha = 1, beta = 0, epilogue?: MatMulEpilogue): boolean {
    if (a.dtype !== b.dtype) throw new CleaveError(`MatMul on CUDA takes operands of one dtype, got ${a.dtype} and ${b.dtype}`);
    // out may be a float32 accumulator (beta = 1) under 16-bit operands.
    const ab = floatCode(a, 'MatMul'), c = floatCode(out, 'MatMul');
    if (a.shape.length < 2 || b.shape.length < 2) throw new CleaveError('MatMul with 1-D operands does not run on CUDA yet');
    const M = transA ? a.shape.at(-1)! : a.shape.at(-2)!, K = transA ? a.shape.at(-2)! : a.shape.at(-1)!;
    const N = transB ? b.shape.at(-2)! : b.shape.at(-1)!;
    const batchA = numel(a.shape.slice(0, -2)), batchB = numel(b.shape.slice(0, -2));
    const batch = numel(out.shape.slice(0, -2));
    const ok = (x: number) => x === batch || x === 1;
    if (!ok(batchA) || !ok(batchB) || broadcast([a.shape.slice(0, -2), b.shape.slice(0, -2)], 'MatMul').length !== out.shape.length - 2) {
      throw new CleaveError(`MatMul of [${a.shape}] and [${b.shape}]: this batch broadcast does not run on CUDA yet`);
    }
    // Where the fallback leaves the plain product (registry.ts: MatMulEpilogue).
    const target = epilogue?.kind === 'gelu-bias' && epilogue.preact ? epilogue.preact.ptr : out.ptr;
    // An unbatched operand of a batched product is one matrix with rows of all batches when it is A.
    const rows = batch === 1 || (batchA === batch && batchB === 1 && !transA);
    if (rows) {
      const m = M * batch;
      if (epilogue && beta === 0 && c === ab && this.fused(ab, transB, transA, N, m, K, alpha, b.ptr, transB ? K : N, a.ptr, transA ? M : K, out.ptr, epilogue)) return true;
      this.n.gemm(ab, transB, transA, N, m, K, alpha, b.ptr, transB ? K : N, 0, a.ptr, transA ? M : K, 0, beta, epilogue ? target : out.ptr, N, 0, 1, c);
      return !epilogue;
    }
    this.n.gemm(ab, transB, transA, N, M, K, alpha,
      b.ptr, transB ? K : N, batchB === 1 ? 0 : K * N, a.ptr, transA ? M : K, batchA === 1 ? 0 : M * K, beta, epilogue ? target : out.ptr, N, M * N, batch, c);
    return !epilogue;
  }

  /** One column-major GEMM with a cuBLASLt epilogue (rows of the product are its columns); false where cuBLASLt has none. */
  private fused(dt: number, ta: boolean, tb: boolean, m: number, n: number, k: number, alpha: number, A: bigint, lda: number, B: bigint, ldb: number,
    D: bigint, e: MatMulEpilogue): boolean {
    // cuBLASLt reads the bias and the pre-activation in D's type: anything else runs unfused.
    const extra = e.kind === 'bias' ? [e.bias] : e.kind === 'gelu-bias' ? [e.bias, ...(e.preact ? [e.preact] : [])] : [e.preact];
    if (extra.some((t) => floatCode(t, 'MatMul epilogue') !== dt)) return false;
    const [code, bias, aux] = e.kind === 'bias' ? [1, e.bias.ptr, 0n] : e.kind === 'gelu-bias' ? [2, e.bias.ptr, e.preact?.ptr ?? 0n] : [3, 0n, e.preact.ptr];
    return this.n.gemm(dt, ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, 0, D, m, 0, 1, dt, code, bias, aux, m);
  }

  stridedCopy(x: DeviceTensor, out: DeviceTensor, strides: readonly number[], base = 0): void {
    const { dims, strides: [st] } = collapseDims(out.shape, [strides]);
    this.n.stridedCopy(copyCode(x), x.ptr, out.ptr, dims, st!, base);
  }

  gather(data: DeviceTensor, indices: DeviceTensor, out: DeviceTensor, axis: number): void {
    if (indices.dtype !== 'int64') throw new CleaveError('Gather on CUDA takes int64 indices');
    const outer = numel(data.shape.slice(0, axis)), inner = numel(data.shape.slice(axis + 1));
    this.n.gather(floatCode(data, 'Gather'), data.ptr, indices.ptr, out.ptr, outer, data.shape[axis]!, numel(indices.shape), inner);
  }

  cast(x: DeviceTensor, out: DeviceTensor): void {
    const code = (t: DeviceTensor): number => {
      const c = CAST_CODE[t.dtype];
      if (c === undefined) throw new CleaveError(`Cast from ${x.dtype} to ${out.dtype} does not run on CUDA yet (it casts float32, bfloat16, float16, int64, int32 and bool)`);
      return c;
    };
    this.n.cast(code(x), code(out), x.ptr, out.ptr, numel(x.shape));
  }

  geluGrad(g: DeviceTensor, x: DeviceTensor, out: DeviceTensor, tanh: boolean): void {
    this.n.geluGrad(floatCode(x, 'GeluGrad'), g.ptr, x.ptr, out.ptr, numel(x.shape), tanh);
  }

  concat(inputs: readonly DeviceTensor[], out: DeviceTensor, axis: number): void {
    const ost = stridesOf(out.shape);
    let at = 0;
    for (const x of inputs) {
      const { dims, strides: [si, so] } = collapseDims(x.shape, [stridesOf(x.shape), ost]);
      this.n.copyRegion(copyCode(out), x.ptr, out.ptr, dims, si!, so!, 0, at * ost[axis]!);
      at += x.shape[axis]!;
    }
  }

  sum(inputs: readonly DeviceTensor[], out: DeviceTensor): void {
    // Left to right, as the CPU kernel: (a + b) + c …
    this.binary('add', inputs[0]!, inputs[1] ?? inputs[0]!, out);
    if (inputs.length === 1) this.stridedCopy(inputs[0]!, out, stridesOf(out.shape));
    for (const x of inputs.slice(2)) this.binary('add', out, x, out);
  }

  reduce(op: 'sum' | 'mean' | 'max' | 'min', x: DeviceTensor, out: DeviceTensor, axes: readonly number[]): void {
    // The minimum is the negated maximum of the negation: exact, with no kernel of its own.
    if (op === 'min') {
      const neg = this.alloc(x.dtype, x.shape);
      this.unary('neg', x, neg);
      this.reduce('max', neg, out, axes);
      this.unary('neg', out, out);
      this.free(neg);
      return;
    }
    const st = stridesOf(x.shape);
    const keep = x.shape.map((_, i) => i).filter((i) => !axes.includes(i));
    // Kept and reduced axes collapse separately: each group keeps its own index order.
    const outer = collapseDims(keep.map((i) => x.shape[i]!), [keep.map((i) => st[i]!)]);
    const red = collapseDims(axes.map((i) => x.shape[i]!), [axes.map((i) => st[i]!)]);
    this.n.reduce(nativeCode('reduce', op), floatCode(x, 'reduction'), x.ptr, out.ptr, outer.dims, outer.strides[0]!, red.dims, red.strides[0]!);
  }

  compare(op: CompareOp, a: DeviceTensor, b: DeviceTensor, out: DeviceTensor): void {
    const { dims, strides: [sa, sb] } = collapseDims(out.shape, [broadcastStrides(a.shape, out.shape), broadcastStrides(b.shape, out.shape)]);
    this.n.compare(nativeCode('compare', op), floatCode(a, 'comparison'), a.ptr, b.ptr, out.ptr, dims, sa!, sb!);
  }

  scatterAdd(g: DeviceTensor, indices: DeviceTensor, out: DeviceTensor, axis: number, accumulate = false): void {
    const outer = numel(out.shape.slice(0, axis)), inner = numel(out.shape.slice(axis + 1));
    if (accumulate && out.dtype !== 'float32') throw new CleaveError(`GatherGrad accumulates into float32 on CUDA, not ${out.dtype}`);
    // Atomic adds go to a float32 buffer, cast once into the output's dtype.
    const acc = out.dtype === 'float32' ? out : this.alloc('float32', out.shape);
    if (!accumulate) this.n.fill(0, acc.ptr, numel(out.shape), 0);
    this.n.scatterAdd(floatCode(g, 'GatherGrad'), g.ptr, indices.ptr, acc.ptr, outer, out.shape[axis]!, numel(indices.shape), inner);
    if (acc !== out) {
      this.cast(acc, out);
      this.free(acc);
    }
  }

  layerNormGradInput(g: DeviceTensor, x: DeviceTensor, scale: DeviceTensor, dx: DeviceTensor, epsilon: number): void {
    const cols = x.shape.at(-1)!;
    this.n.layernormGradInput(floatCode(x, 'LayerNormalizationGradInput'), g.ptr, x.ptr, scale.ptr, dx.ptr, numel(x.shape) / cols, cols, numel(scale.shape), epsilon);
  }

  layerNormGradParams(g: DeviceTensor, x: DeviceTensor, dscale: DeviceTensor, dbias: DeviceTensor, epsilon: number): void {
    const cols = x.shape.at(-1)!;
    this.n.layernormGradParams(floatCode(x, 'LayerNormalizationGradParams'), g.ptr, x.ptr, dscale.ptr, dbias.ptr, numel(x.shape) / cols, cols, epsilon);
  }

  /** Shapes of a fused attention's q [B, Tq, H·Dh], k and v ([B, Tk, Hkv·Dh], alike), lse ([B, H, Tq] float32) and bias. */
  private attentionDims(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, lse: DeviceTensor, heads: number, kvHeads: number, bias: DeviceTensor | null): { B: number; T: number; Tk: number; D: number; Dk: number; bias: bigint; bB: number; bH: number } {
    const [B, T, D] = q.shape as [number, number, number];
    const Tk = k.shape[1]!, Dk = (D / heads) * kvHeads;
    const kvLike = (t: DeviceTensor) => t.shape.length === 3 && t.shape[0] === B && t.shape[1] === Tk && t.shape[2] === Dk && t.dtype === q.dtype;
    if (q.shape.length !== 3 || D % heads || !(kvHeads >= 1) || heads % kvHeads || !kvLike(k) || !kvLike(v)) {
      throw new CleaveError(`fused attention on CUDA takes q [B, Tq, H·Dh] and k, v [B, Tk, Hkv·Dh] of one type; got [${q.shape}], [${k.shape}], [${v.shape}] with ${heads} heads and ${kvHeads} key/value heads`);
    }
    if (lse.dtype !== 'float32') throw new CleaveError(`fused attention's log-sum-exp is float32 on CUDA, not ${lse.dtype}`);
    if (!bias) return { B, T, Tk, D, Dk, bias: 0n, bB: 0, bH: 0 };
    const [Bb, Hb, Tq2, Tk2] = bias.shape;
    if (bias.shape.length !== 4 || bias.dtype !== q.dtype || (Bb !== 1 && Bb !== B) || (Hb !== 1 && Hb !== heads) || Tq2 !== T || Tk2 !== Tk) {
      throw new CleaveError(`fused attention on CUDA takes a bias [${B} or 1, ${heads} or 1, ${T}, ${Tk}] of q's type; got ${bias.dtype}[${bias.shape}]`);
    }
    return { B, T, Tk, D, Dk, bias: bias.ptr, ...biasStrides(bias.shape as number[]) };
  }

  attention(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, out: DeviceTensor, lse: DeviceTensor, heads: number, kvHeads: number, scale: number, causal: boolean, window: number, bias: DeviceTensor | null): void {
    const a = this.attentionDims(q, k, v, lse, heads, kvHeads, bias);
    this.n.attentionForward(floatCode(q, 'FusedAttention'), q.ptr, k.ptr, v.ptr, a.T * a.D, a.D, a.Tk * a.Dk, a.Dk, out.ptr, lse.ptr, a.B, a.T, heads, kvHeads, a.D / heads, scale, causal, window,
      a.Tk, a.bias, a.bB, a.bH);
  }

  attentionGrad(dout: DeviceTensor, q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, out: DeviceTensor, lse: DeviceTensor,
    dq: DeviceTensor, dk: DeviceTensor, dv: DeviceTensor, heads: number, kvHeads: number, scale: number, causal: boolean, window: number,
    bias: DeviceTensor | null, dscores: DeviceTensor | null): void {
    const a = this.attentionDims(q, k, v, lse, heads, kvHeads, bias);
    if (!bias !== !dscores) throw new CleaveError('fused attention gradient on CUDA: a bias and its dscores output go together');
    this.n.attentionBackward(floatCode(q, 'FusedAttentionGrad'), q.ptr, k.ptr, v.ptr, a.T * a.D, a.D, a.Tk * a.Dk, a.Dk, out.ptr, dout.ptr, lse.ptr, dq.ptr, dk.ptr, dv.ptr,
      a.B, a.T, heads, kvHeads, a.D / heads, scale, causal, window, a.Tk, a.bias, a.bB, a.bH, dscores?.ptr ?? 0n);
  }

  /** Per-row losses and weights in float32, then their sum (and the count for a mean). */
  private rowLosses(scores: DeviceTensor, labels: DeviceTensor, ignore: number | undefined): { loss: DeviceTensor; weight: DeviceTensor; rows: number; cols: number } {
    const [rows, cols] = scores.shape as [number, number];
    const loss = this.alloc('float32', [rows]), weight = this.alloc('float32', [rows]);
    this.n.sceForward(floatCode(scores, 'SoftmaxCrossEntropyLoss'), scores.ptr, labels.ptr, loss.ptr, weight.ptr, rows, cols, ignore ?? -(2 ** 52));
    return { loss, weight, rows, cols };
  }

  crossEntropy(scores: DeviceTensor, labels: DeviceTensor, out: DeviceTensor, mean: boolean, ignore: number | undefined): void {
    const { loss, weight } = this.rowLosses(scores, labels, ignore);
    const total = this.alloc('float32', []), count = this.alloc('float32', []);
    this.reduce('sum', loss, total, [0]);
    this.reduce('sum', weight, count, [0]);
    const f32 = out.dtype === 'float32' ? out : this.alloc('float32', []);
    if (mean) this.binary('div', total, count, f32);
    else this.stridedCopy(total, f32, []);
    if (f32 !== out) this.cast(f32, out);
    for (const t of [loss, weight, total, count, ...(f32 !== out ? [f32] : [])]) this.free(t);
  }

  crossEntropyGrad(dloss: DeviceTensor, scores: DeviceTensor, labels: DeviceTensor, out: DeviceTensor, mean: boolean, ignore: number | undefined): void {
    const { loss, weight, rows, cols } = this.rowLosses(scores, labels, ignore);
    const count = this.alloc('float32', []);
    this.reduce('sum', weight, count, [0]);
    const up = dloss.dtype === 'float32' ? dloss : this.alloc('float32', []);
    if (up !== dloss) this.cast(dloss, up);
    this.n.sceBackward(floatCode(scores, 'SoftmaxCrossEntropyLossGrad'), scores.ptr, labels.ptr, up.ptr, count.ptr, out.ptr, rows, cols, ignore ?? -(2 ** 52), mean);
    for (const t of [loss, weight, count, ...(up !== dloss ? [up] : [])]) this.free(t);
  }

  // --- kernels_extra.cu: the remaining ops -------------------------------------------------------

  write(out: DeviceTensor, t: Tensor): void {
    if (numel(t.shape) !== numel(out.shape)) throw new CleaveError(`cannot write [${t.shape}] into a CUDA tensor of [${out.shape}]`);
    this.n.upload(out.ptr, hostBytes(t, out.dtype));
  }

  fill(out: DeviceTensor, value: number): void {
    this.n.fill(floatCode(out, 'fill'), out.ptr, numel(out.shape), value);
  }

  copyRegion(x: DeviceTensor, out: DeviceTensor, dims: readonly number[], inStrides: readonly number[], outStrides: readonly number[], inBase = 0, outBase = 0): void {
    const { dims: d, strides: [si, so] } = collapseDims(dims, [inStrides, outStrides]);
    this.n.copyRegion(copyCode(x), x.ptr, out.ptr, d, si!, so!, inBase, outBase);
  }

  logic(op: LogicOp, a: DeviceTensor, b: DeviceTensor | null, out: DeviceTensor): void {
    if ([a, b ?? a, out].some((t) => t.dtype !== 'bool')) throw new CleaveError('bool logic on CUDA takes bool tensors');
    const sb = b ? broadcastStrides(b.shape, out.shape) : out.shape.map(() => 0);
    const { dims, strides: [ca, cb] } = collapseDims(out.shape, [broadcastStrides(a.shape, out.shape), sb]);
    this.n.logic(nativeCode('logic', op), a.ptr, b?.ptr ?? 0n, out.ptr, dims, ca!, cb!);
  }

  isNaN(x: DeviceTensor, out: DeviceTensor): void {
    this.n.isNaN(floatCode(x, 'IsNaN'), x.ptr, out.ptr, numel(x.shape));
  }

  /**
   * How GatherElements and its gradient address a tensor of `shape` from each position of the
   * indices: its strides with the axis's left out (that coordinate comes from the index), and the axis's stride.
   */
  private elementsLayout(shape: readonly number[], indices: DeviceTensor, axis: number, what: string): { dims: number[]; strides: number[]; axisStride: number; axisDim: number } {
    if (indices.dtype !== 'int64') throw new CleaveError(`${what} on CUDA takes int64 indices, not ${indices.dtype}`);
    // Beyond the data's extent an index position would address another row's elements.
    if (indices.shape.length !== shape.length || indices.shape.some((d, i) => i !== axis && d > shape[i]!)) {
      throw new CleaveError(`${what}: indices [${indices.shape}] do not fit data [${shape}] outside axis ${axis}`);
    }
    const st = stridesOf(shape);
    return { dims: [...indices.shape], strides: st.map((s, d) => (d === axis ? 0 : s)), axisStride: st[axis]!, axisDim: shape[axis]! };
  }

  gatherElements(data: DeviceTensor, indices: DeviceTensor, out: DeviceTensor, axis: number): void {
    const l = this.elementsLayout(data.shape, indices, axis, 'GatherElements');
    this.n.gatherElements(copyCode(data), data.ptr, indices.ptr, out.ptr, l.dims, l.strides, l.axisStride, l.axisDim);
  }

  scatterElementsAdd(g: DeviceTensor, indices: DeviceTensor, out: DeviceTensor, axis: number): void {
    const l = this.elementsLayout(out.shape, indices, axis, 'GatherElementsGrad');
    // Atomic adds go to a float32 buffer, cast once into the output's dtype (as scatterAdd).
    const acc = out.dtype === 'float32' ? out : this.alloc('float32', out.shape);
    this.n.fill(0, acc.ptr, numel(out.shape), 0);
    this.n.scatterElementsAdd(floatCode(g, 'GatherElementsGrad'), g.ptr, indices.ptr, acc.ptr, l.dims, l.strides, l.axisStride, l.axisDim);
    if (acc !== out) {
      this.cast(acc, out);
      this.free(acc);
    }
  }

  trilu(x: DeviceTensor, out: DeviceTensor, k: number, upper: boolean): void {
    this.n.trilu(copyCode(x), x.ptr, out.ptr, numel(x.shape), x.shape.at(-2)!, x.shape.at(-1)!, k, upper);
  }

  dropout(x: DeviceTensor, y: DeviceTensor, mask: DeviceTensor | null, ratio: number, state: number): void {
    // A draw h / 2³² is ≥ ratio exactly when the 32-bit h is ≥ ⌈ratio · 2³²⌉ (a product exact in doubles).
    const threshold = Math.ceil(ratio * 2 ** 32);
    this.n.dropout(sameFloat([x, y], 'Dropout'), x.ptr, y.ptr, mask?.ptr ?? 0n, numel(x.shape), state >>> 0, threshold, 1 / (1 - ratio));
  }

  gemm(a: DeviceTensor, b: DeviceTensor, c: DeviceTensor | null, out: DeviceTensor, transA: boolean, transB: boolean, alpha: number, beta: number): void {
    if (a.shape.length !== 2 || b.shape.length !== 2) throw new CleaveError(`Gemm on CUDA takes matrices, not [${a.shape}] and [${b.shape}]`);
    const withC = c !== null && beta !== 0;
    const dt = sameFloat(withC ? [a, b, c, out] : [a, b, out], 'Gemm');
    const [M, N] = out.shape as [number, number];
    const K = transA ? a.shape[0]! : a.shape[1]!;
    // A Linear layer's bias (C a row of N, beta 1): cuBLASLt's bias epilogue, no copy.
    const row = withC && beta === 1 && c.shape.at(-1) === N && numel(c.shape) === N;
    if (row && this.fused(dt, transB, transA, N, M, K, alpha, b.ptr, transB ? K : N, a.ptr, transA ? M : K, out.ptr, { kind: 'bias', bias: c })) return;
    // cuBLAS adds beta·C onto its output in place: C goes there first, broadcast.
    if (withC) this.stridedCopy(c, out, broadcastStrides(c.shape, out.shape));
    this.gemmRows(dt, a.ptr, b.ptr, out.ptr, M, N, K, transA, transB, alpha, withC ? beta : 0, 1, 0, 0, 0);
  }

  /**
   * Row-major C = alpha·op(A)·op(B) + beta·C, op(A) [M, K] and op(B) [K, N], for `batch` triples at
   * element strides sA, sB, sC: cuBLAS (column-major) computes Cᵀ = op(B)ᵀ·op(A)ᵀ, as matmul does.
   */
  private gemmRows(dt: number, a: bigint, b: bigint, c: bigint, M: number, N: number, K: number, transA: boolean, transB: boolean,
    alpha: number, beta: number, batch: number, sA: number, sB: number, sC: number): void {
    this.n.gemm(dt, transB, transA, N, M, K, alpha, b, transB ? K : N, sB, a, transA ? M : K, sA, beta, c, N, sC, batch);
  }

  /** Per-channel mean and variance (float32 [C]) of the batch (training) or the running statistics. */
  private channelStats(x: DeviceTensor, runMean: DeviceTensor, runVar: DeviceTensor, training: boolean): [DeviceTensor, DeviceTensor] {
    const [N, C, inner] = bnDims(x);
    const mean = this.alloc('float32', [C]), variance = this.alloc('float32', [C]);
    if (training) this.n.bnStats(floatCode(x, 'BatchNormalization'), x.ptr, mean.ptr, variance.ptr, N, C, inner);
    else {
      this.cast(runMean, mean);
      this.cast(runVar, variance);
    }
    return [mean, variance];
  }

  /** Per-channel Σ g and Σ g·x̂ (float32 [C]). */
  private channelGradSums(g: DeviceTensor, x: DeviceTensor, mean: DeviceTensor, variance: DeviceTensor, epsilon: number): [DeviceTensor, DeviceTensor] {
    const [N, C, inner] = bnDims(x);
    const sumG = this.alloc('float32', [C]), sumGX = this.alloc('float32', [C]);
    this.n.bnGradSums(sameFloat([g, x], 'BatchNormalization gradient'), g.ptr, x.ptr, mean.ptr, variance.ptr, sumG.ptr, sumGX.ptr, N, C, inner, epsilon);
    return [sumG, sumGX];
  }

  batchNorm(x: DeviceTensor, scale: DeviceTensor, bias: DeviceTensor, runMean: DeviceTensor, runVar: DeviceTensor, y: DeviceTensor,
    runMeanOut: DeviceTensor | null, runVarOut: DeviceTensor | null, epsilon: number, momentum: number, training: boolean): void {
    const dt = sameFloat([x, scale, bias, y], 'BatchNormalization');
    const [N, C, inner] = bnDims(x);
    const [mean, variance] = this.channelStats(x, runMean, runVar, training);
    try {
      this.n.bnForward(dt, x.ptr, scale.ptr, bias.ptr, mean.ptr, variance.ptr, y.ptr, N, C, inner, epsilon);
      if (training && (runMeanOut || runVarOut)) {
        const st = sameFloat([runMean, runVar, ...(runMeanOut ? [runMeanOut] : []), ...(runVarOut ? [runVarOut] : [])], 'BatchNormalization running statistics');
        this.n.bnRunning(st, runMean.ptr, runVar.ptr, mean.ptr, variance.ptr, runMeanOut?.ptr ?? 0n, runVarOut?.ptr ?? 0n, C, momentum);
      }
    } finally {
      this.free(mean);
      this.free(variance);
    }
  }

  batchNormGradInput(g: DeviceTensor, x: DeviceTensor, scale: DeviceTensor, runMean: DeviceTensor, runVar: DeviceTensor, dx: DeviceTensor,
    epsilon: number, training: boolean): void {
    const dt = sameFloat([g, x, scale, dx], 'BatchNormalizationGradInput');
    const [N, C, inner] = bnDims(x);
    const stats = this.channelStats(x, runMean, runVar, training);
    const temps = [...stats];
    try {
      // Only batch statistics depend on x, adding the terms through the mean and variance.
      const sums = training ? this.channelGradSums(g, x, stats[0], stats[1], epsilon) : null;
      if (sums) temps.push(...sums);
      this.n.bnGradInput(dt, g.ptr, x.ptr, scale.ptr, stats[0].ptr, stats[1].ptr, sums?.[0].ptr ?? 0n, sums?.[1].ptr ?? 0n, dx.ptr, N, C, inner, epsilon, training);
    } finally {
      for (const t of temps) this.free(t);
    }
  }

  batchNormGradParams(g: DeviceTensor, x: DeviceTensor, runMean: DeviceTensor, runVar: DeviceTensor, dscale: DeviceTensor, dbias: DeviceTensor,
    epsilon: number, training: boolean): void {
    const stats = this.channelStats(x, runMean, runVar, training);
    const temps = [...stats];
    try {
      const [sumG, sumGX] = this.channelGradSums(g, x, stats[0], stats[1], epsilon);
      temps.push(sumG, sumGX);
      this.cast(sumGX, dscale);
      this.cast(sumG, dbias);
    } finally {
      for (const t of temps) this.free(t);
    }
  }

  /**
   * Elements of convolution columns ([C·K, images·O]) built at once: a large batch is convolved in
   * chunks of images rather than needing its whole im2col (512 MiB of float32; tests lower it).
   */
  columnLimit = 2 ** 27;

  /** Convolution sizes, and how many images a chunk takes (columnLimit). */
  private convDims(xShape: readonly number[], wShape: readonly number[], win: WindowGeometry, groups: number): ConvDims {
    const [N, C] = xShape as [number, number];
    const M = wShape[0]!, G = groups;
    const K = numel(win.kernel), O = numel(win.out), S = numel(xShape.slice(2));
    if (C % G || M % G || wShape[1]! * G !== C || numel(wShape.slice(2)) !== K) {
      throw new CleaveError(`Conv on CUDA: weight [${wShape}] with ${G} groups does not fit input [${xShape}] and kernel [${win.kernel}]`);
    }
    const nb = Math.max(1, Math.min(N, Math.floor(this.columnLimit / Math.max(1, C * K * O))));
    return { N, C, M, G, cg: C / G, mg: M / G, K, O, S, nb, geo: window3(xShape.slice(2), win, null) };
  }

  /**
   * Runs `body` over chunks of at most `d.nb` images, with an im2col buffer [C·K, nb·O] and, when a
   * chunk holds several images, a buffer [M, nb, O] where their outputs or gradients sit side by
   * side as the GEMMs write or read them.
   */
  private convChunks(dtype: DType, d: ConvDims, body: (n0: number, b: number, col: DeviceTensor, side: DeviceTensor | null) => void): void {
    const col = this.alloc(dtype, [d.C * d.K, d.nb * d.O]);
    const side = d.nb > 1 ? this.alloc(dtype, [d.M, d.nb, d.O]) : null;
    try {
      for (let n0 = 0; n0 < d.N; n0 += d.nb) body(n0, Math.min(d.nb, d.N - n0), col, side);
    } finally {
      this.free(col);
      if (side) this.free(side);
    }
  }

  /** A chunk's gradient at `src` ([b, M, O]) as the GEMMs read it, [M, b·O]: copied into `side`, or `src` for one image. */
  private gradSideBySide(src: bigint, dtype: DType, side: DeviceTensor | null, b: number, M: number, O: number): bigint {
    if (!side) return src;
    this.stridedCopy({ ptr: src, dtype, shape: [b, M, O] }, { ptr: side.ptr, dtype, shape: [M, b, O] }, [O, M * O, 1]);
    return side.ptr;
  }

  conv(x: DeviceTensor, w: DeviceTensor, bias: DeviceTensor | null, out: DeviceTensor, win: WindowGeometry, groups: number): void {
    const dt = sameFloat(bias ? [x, w, bias, out] : [x, w, out], 'Conv');
    const d = this.convDims(x.shape, w.shape, win, groups);
    const { C, M, G, cg, mg, K, O, S, geo } = d;
    const e = deviceBytes(x.dtype);
    this.convChunks(x.dtype, d, (n0, b, col, outT) => {
      const dst = elementAt(out.ptr, n0 * M * O, e);
      this.n.im2col(copyCode(x), elementAt(x.ptr, n0 * C * S, e), col.ptr, b, C, geo);
      // Group g: [mg, b·O] = w_g [mg, cg·K] · col_g [cg·K, b·O]; several images come out as [M, b, O].
      this.gemmRows(dt, w.ptr, col.ptr, outT?.ptr ?? dst, mg, b * O, cg * K, false, false, 1, 0, G, mg * cg * K, cg * K * b * O, mg * b * O);
      if (outT) this.stridedCopy({ ptr: outT.ptr, dtype: out.dtype, shape: [M, b, O] }, { ptr: dst, dtype: out.dtype, shape: [b, M, O] }, [O, b * O, 1]);
    });
    if (bias) this.binary('add', out, { ptr: bias.ptr, dtype: bias.dtype, shape: [M, ...win.out.map(() => 1)] }, out);
  }

  convGradInput(g: DeviceTensor, w: DeviceTensor, dx: DeviceTensor, win: WindowGeometry, groups: number): void {
    const dt = sameFloat([g, w, dx], 'ConvGradInput');
    const d = this.convDims(dx.shape, w.shape, win, groups);
    const { C, M, G, cg, mg, K, O, S, geo } = d;
    const e = deviceBytes(g.dtype);
    this.convChunks(g.dtype, d, (n0, b, col, gT) => {
      const gs = this.gradSideBySide(elementAt(g.ptr, n0 * M * O, e), g.dtype, gT, b, M, O);
      // Group g: col_g [cg·K, b·O] = w_gᵀ [cg·K, mg] · g_g [mg, b·O].
      this.gemmRows(dt, w.ptr, gs, col.ptr, cg * K, b * O, mg, true, false, 1, 0, G, mg * cg * K, mg * b * O, cg * K * b * O);
      this.n.col2im(dt, col.ptr, elementAt(dx.ptr, n0 * C * S, e), b, C, geo);
    });
  }

  convGradWeight(g: DeviceTensor, x: DeviceTensor, dw: DeviceTensor, win: WindowGeometry, groups: number): void {
    const dt = sameFloat([g, x, dw], 'ConvGradWeight');
    const d = this.convDims(x.shape, dw.shape, win, groups);
    const { C, M, G, cg, mg, K, O, S, geo } = d;
    const e = deviceBytes(x.dtype);
    this.convChunks(x.dtype, d, (n0, b, col, gT) => {
      this.n.im2col(copyCode(x), elementAt(x.ptr, n0 * C * S, e), col.ptr, b, C, geo);
      const gs = this.gradSideBySide(elementAt(g.ptr, n0 * M * O, e), g.dtype, gT, b, M, O);
      // Group g: dw_g [mg, cg·K] (+)= g_g [mg, b·O] · col_gᵀ [b·O, cg·K]; chunks after the first accumulate.
      this.gemmRows(dt, gs, col.ptr, dw.ptr, mg, cg * K, b * O, false, true, 1, n0 === 0 ? 0 : 1, G, mg * b * O, cg * K * b * O, mg * cg * K);
    });
  }

  maxPool(x: DeviceTensor, y: DeviceTensor, indices: DeviceTensor | null, win: WindowGeometry): void {
    if (indices && indices.dtype !== 'int64') throw new CleaveError(`MaxPool's indices on CUDA are int64, not ${indices.dtype}`);
    this.n.maxPool(sameFloat([x, y], 'MaxPool'), x.ptr, y.ptr, indices?.ptr ?? 0n, x.shape[0]! * x.shape[1]!, window3(x.shape.slice(2), win, null));
  }

  maxPoolGrad(g: DeviceTensor, x: DeviceTensor, dx: DeviceTensor, win: WindowGeometry): void {
    this.n.maxPoolGrad(sameFloat([g, x, dx], 'MaxPoolGrad'), g.ptr, x.ptr, dx.ptr, x.shape[0]! * x.shape[1]!, window3(x.shape.slice(2), win, null));
  }

  averagePool(x: DeviceTensor, y: DeviceTensor, win: WindowGeometry, padEnd: readonly number[] | null): void {
    this.n.avgPool(sameFloat([x, y], 'AveragePool'), x.ptr, y.ptr, x.shape[0]! * x.shape[1]!, window3(x.shape.slice(2), win, padEnd), padEnd !== null);
  }

  averagePoolGrad(g: DeviceTensor, dx: DeviceTensor, win: WindowGeometry, padEnd: readonly number[] | null): void {
    this.n.avgPoolGrad(sameFloat([g, dx], 'AveragePoolGrad'), g.ptr, dx.ptr, dx.shape[0]! * dx.shape[1]!, window3(dx.shape.slice(2), win, padEnd), padEnd !== null);
  }

  rmsNorm(x: DeviceTensor, scale: DeviceTensor, out: DeviceTensor, epsilon: number): void {
    const [rows, cols] = x.shape as [number, number];
    this.n.rmsnorm(sameFloat([x, scale, out], 'RMSNormalization'), x.ptr, scale.ptr, out.ptr, rows, cols, numel(scale.shape), epsilon);
  }

  rmsNormGradInput(g: DeviceTensor, x: DeviceTensor, scale: DeviceTensor, dx: DeviceTensor, epsilon: number): void {
    const [rows, cols] = x.shape as [number, number];
    this.n.rmsnormGradInput(sameFloat([g, x, scale, dx], 'RMSNormalizationGradInput'), g.ptr, x.ptr, scale.ptr, dx.ptr, rows, cols, numel(scale.shape), epsilon);
  }

  rmsNormGradParams(g: DeviceTensor, x: DeviceTensor, dscale: DeviceTensor, epsilon: number): void {
    const [rows, cols] = x.shape as [number, number];
    this.n.rmsnormGradParams(sameFloat([g, x, dscale], 'RMSNormalizationGradParams'), g.ptr, x.ptr, dscale.ptr, rows, cols, epsilon);
  }

  rotaryEmbedding(x: DeviceTensor, cos: DeviceTensor, sin: DeviceTensor, positions: DeviceTensor | null, out: DeviceTensor, geo: RotaryGeometry): void {
    if (positions && positions.dtype !== 'int64') throw new CleaveError(`RotaryEmbedding on CUDA takes int64 position_ids, not ${positions.dtype}`);
    const [sB, sS, sH] = geo.strides;
    const cacheRows = positions ? cos.shape[0]! : geo.batch * geo.seq;
    this.n.rotary(sameFloat([x, cos, sin, out], 'RotaryEmbedding'), x.ptr, cos.ptr, sin.ptr, positions?.ptr ?? 0n, out.ptr, geo.batch, geo.seq, geo.heads, geo.head,
      sB, sS, sH, geo.rotary, geo.interleaved, cacheRows);
  }

  cumSum(x: DeviceTensor, out: DeviceTensor, axis: number, exclusive: boolean, reverse: boolean): void {
    this.n.cumsum(sameFloat([x, out], 'CumSum'), x.ptr, out.ptr, numel(x.shape.slice(0, axis)), x.shape[axis]!, numel(x.shape.slice(axis + 1)), exclusive, reverse);
  }

  pad(x: DeviceTensor, out: DeviceTensor, mode: number, begin: readonly number[], value: number): void {
    if (out.shape.length > 6) throw new CleaveError('Pad on CUDA takes tensors of rank 6 at most');
    this.n.pad(sameFloat([x, out], 'Pad'), x.ptr, out.ptr, [...out.shape], [...x.shape], [...begin], mode, value);
  }

  padGrad(g: DeviceTensor, dx: DeviceTensor, mode: number, begin: readonly number[]): void {
    if (g.shape.length > 6) throw new CleaveError('PadGrad on CUDA takes tensors of rank 6 at most');
    const dt = sameFloat([g, dx], 'PadGrad');
    // Atomic adds go to a float32 buffer, cast once into the output's dtype (as scatterAdd).
    const acc = dx.dtype === 'float32' ? dx : this.alloc('float32', dx.shape);
    this.n.fill(0, acc.ptr, numel(dx.shape), 0);
    this.n.padGrad(dt, g.ptr, acc.ptr, [...g.shape], [...dx.shape], [...begin], mode);
    if (acc !== dx) {
      this.cast(acc, dx);
      this.free(acc);
    }
  }

  gatedUnit(gate: DeviceTensor, up: DeviceTensor, out: DeviceTensor, activation: number): void {
    const n = sameElements([gate, up, out], 'GatedUnit');
    this.n.gatedUnit(sameFloat([gate, up, out], 'GatedUnit'), gate.ptr, up.ptr, out.ptr, n, gatedCode(activation));
  }

  gatedUnitGrad(dy: DeviceTensor, gate: DeviceTensor, up: DeviceTensor, dgate: DeviceTensor, dup: DeviceTensor, activation: number): void {
    const n = sameElements([dy, gate, up, dgate, dup], 'GatedUnitGrad');
    this.n.gatedUnitGrad(sameFloat([dy, gate, up, dgate, dup], 'GatedUnitGrad'), dy.ptr, gate.ptr, up.ptr, dgate.ptr, dup.ptr, n, gatedCode(activation));
  }

  /** GatherND's walk over data of `shape`: batch × tuples × slice, each tuple indexing k axes (k ≤ 6). */
  private gatherNDWalk(shape: readonly number[], indices: DeviceTensor, batchDims: number, what: string) {
    if (indices.dtype !== 'int64' && indices.dtype !== 'int32') throw new CleaveError(`${what} on CUDA takes int64 or int32 indices, not ${indices.dtype}`);
    const q = indices.shape.length, k = indices.shape[q - 1] ?? 0, b = batchDims;
    if (q < 1 || b >= Math.min(q, shape.length) || k < 1 || k > shape.length - b || indices.shape.slice(0, b).some((d, i) => d !== shape[i])) {
      throw new CleaveError(`${what}: indices [${indices.shape.join(', ')}] do not index data [${shape.join(', ')}] with batch_dims ${b}`);
    }
    if (k > 6) throw new CleaveError(`${what} on CUDA takes index tuples of 6 elements at most, not ${k}`);
    const st = stridesOf(shape);
    return {
      batch: numel(shape.slice(0, b)), tuples: numel(indices.shape.slice(b, q - 1)), slice: numel(shape.slice(b + k)), batchStride: numel(shape.slice(b)),
      dims: shape.slice(b, b + k), strides: st.slice(b, b + k), idx32: indices.dtype === 'int32',
    };
  }

  gatherND(data: DeviceTensor, indices: DeviceTensor, out: DeviceTensor, batchDims: number): void {
    const w = this.gatherNDWalk(data.shape, indices, batchDims, 'GatherND');
    this.n.gatherND(copyCode(data), data.ptr, indices.ptr, w.idx32, out.ptr, w.batch, w.tuples, w.slice, w.batchStride, w.dims, w.strides);
  }

  gatherNDGrad(dy: DeviceTensor, indices: DeviceTensor, out: DeviceTensor, batchDims: number, accumulate = false): void {
    const w = this.gatherNDWalk(out.shape, indices, batchDims, 'GatherNDGrad');
    if (accumulate && out.dtype !== 'float32') throw new CleaveError(`GatherNDGrad accumulates into float32 on CUDA, not ${out.dtype}`);
    // Atomic adds go to a float32 buffer, cast once into the output's dtype (as scatterAdd, whose
    // atomics make GatherGrad's sums order-dependent too: repeated tuples may sum in any order).
    const acc = out.dtype === 'float32' ? out : this.alloc('float32', out.shape);
    if (!accumulate) this.n.fill(0, acc.ptr, numel(out.shape), 0);
    this.n.gatherNDAdd(floatCode(dy, 'GatherNDGrad'), dy.ptr, indices.ptr, w.idx32, acc.ptr, w.batch, w.tuples, w.slice, w.batchStride, w.dims, w.strides);
    if (acc !== out) {
      this.cast(acc, out);
      this.free(acc);
    }
  }
}

/** The element count of tensors an elementwise kernel reads and writes as one shape. */
function sameElements(ts: readonly DeviceTensor[], what: string): number {
  const n = numel(ts[0]!.shape);
  if (ts.some((t) => numel(t.shape) !== n)) throw new CleaveError(`${what} on CUDA takes tensors of one shape, not ${ts.map((t) => `[${t.shape.join(', ')}]`).join(', ')}`);
  return n;
}

/** A GatedUnit activation code the kernels know: 0 silu, 1 gelu_tanh, 2 gelu. */
function gatedCode(activation: number): number {
  if (activation !== 0 && activation !== 1 && activation !== 2) throw new CleaveError(`GatedUnit on CUDA takes activation code 0 (silu), 1 (gelu_tanh) or 2 (gelu), not ${activation}`);
  return activation;
}

interface ConvDims {
  N: number; C: number; M: number; G: number; cg: number; mg: number;
  /** Kernel taps, output and input positions per image and channel. */
  K: number; O: number; S: number;
  /** Images per chunk. */
  nb: number;
  geo: number[];
}

/** The copy kernels' code of a tensor's element width. */
function copyCode(t: DeviceTensor): number {
  const code = COPY_CODE[BYTES[t.dtype] ?? 0];
  if (code === undefined) throw new CleaveError(`copies of ${t.dtype} do not run on CUDA yet`);
  return code;
}

/** The float dtype code of tensors a kernel reads as one type (a graph computes in one precision). */
function sameFloat(ts: readonly DeviceTensor[], what: string): number {
  const code = floatCode(ts[0]!, what);
  if (ts.some((t) => t.dtype !== ts[0]!.dtype)) throw new CleaveError(`${what} on CUDA takes tensors of one float type, not ${ts.map((t) => t.dtype).join(', ')}`);
  return code;
}

/** Address of element `i` of a buffer at `ptr` with elements of `bytes` bytes. */
const elementAt = (ptr: bigint, i: number, bytes: number): bigint => ptr + BigInt(i * bytes);

/** BatchNorm's view of x [N, C, …]: N, C and the elements of a channel per sample. */
const bnDims = (x: DeviceTensor): [number, number, number] => [x.shape[0]!, x.shape[1]!, numel(x.shape.slice(2))];

/**
 * The native kernels' window (native/src/kernels_extra.cuh, Window3): three spatial dims, 1-D and
 * 2-D windows led by unit dims; 21 numbers, three each of input size, kernel, output size, stride,
 * leading pad, dilation, trailing pad.
 */
export function window3(spatial: readonly number[], win: WindowGeometry, padEnd: readonly number[] | null): number[] {
  const lead = 3 - spatial.length;
  if (lead < 0 || lead > 2) throw new CleaveError(`windows over ${spatial.length} spatial dims do not run on CUDA (1 to 3 do)`);
  const led = (xs: readonly number[], unit: number): number[] => [...Array<number>(lead).fill(unit), ...xs];
  return [
    ...led(spatial, 1), ...led(win.kernel, 1), ...led(win.out, 1), ...led(win.strides, 1),
    ...led(win.padBegin, 0), ...led(win.dilations, 1), ...led(padEnd ?? spatial.map(() => 0), 0),
  ];
}
