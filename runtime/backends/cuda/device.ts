import { CleaveError } from '../../../src/errors.js';
import type { DType } from '../../../src/ir/dtype.js';
import { broadcast, stridesOf } from '../../../src/ir/shape.js';
import { type Tensor, bf16ToFloat, floatToBf16, tensor } from '../../../src/ir/tensor.js';
import type { CudaDevice, DeviceTensor } from '../../../src/ops/registry.js';
import { collapseDims } from './layout.js';
import { type NativeCuda, requireCuda } from './native.js';

/** Device element codes of the native kernels. */
const CODE: Partial<Record<DType, number>> = { float32: 0, bfloat16: 1 };
const BYTES: Partial<Record<DType, number>> = { float32: 4, bfloat16: 2, int64: 8, bool: 1, int32: 4 };

const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);
/** Copy kernels move bytes: their code is the element width. */
const COPY_CODE: Record<number, number> = { 4: 0, 2: 1, 8: 2, 1: 3 };

function floatCode(t: DeviceTensor, what: string): number {
  const c = CODE[t.dtype];
  if (c === undefined) throw new CleaveError(`${what} on CUDA takes float32 or bfloat16, not ${t.dtype}`);
  return c;
}

/** Strides with which a tensor of `shape` is read at each index of `out` (0 where it broadcasts). */
function broadcastStrides(shape: readonly number[], out: readonly number[]): number[] {
  const st = stridesOf(shape);
  const r = out.length - shape.length;
  return out.map((_, i) => (i < r || shape[i - r] === 1 ? 0 : st[i - r]!));
}

/** A host tensor's bytes as the device stores them in dtype `as`. */
export function hostBytes(t: Tensor, as: DType = t.dtype): ArrayBufferView {
  if (as === 'bfloat16') return Uint16Array.from(t.data, (x) => floatToBf16(x));
  if (as === 'float32') return Float32Array.from(t.data);
  if (as === 'int64') return BigInt64Array.from(t.data, (x) => BigInt(x));
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

  alloc(dtype: DType, shape: readonly number[]): DeviceTensor {
    const b = BYTES[dtype];
    if (b === undefined) throw new CleaveError(`CUDA tensors of ${dtype} are not supported yet`);
    const ptr = this.n.alloc(Math.max(1, numel(shape) * b));
    this.live.set(ptr, 1);
    return { ptr, dtype, shape: [...shape] };
  }

  /**
   * The same bytes under another shape (Reshape, Flatten, Squeeze, Identity: every tensor here is
   * dense and row-major, so these need no copy). The memory goes when the last of its tensors is freed.
   */
  view(t: DeviceTensor, shape: readonly number[]): DeviceTensor {
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
      this.n.free(t.ptr);
    }
  }

  /** Allocations still held: what a leak check compares before and after. */
  get allocations(): number {
    return this.live.size;
  }

  freeAll(): void {
    for (const p of this.live.keys()) this.n.free(p);
    this.live.clear();
  }

  /** Host tensor → device; float32 data becomes bfloat16 when `as` asks for it. */
  upload(t: Tensor, as: DType = t.dtype): DeviceTensor {
    const d = this.alloc(as, t.shape);
    this.n.upload(d.ptr, hostBytes(t, as));
    return d;
  }

  /** Addresses of the live allocations (to tell, after a capture, which the graph made). */
  livePointers(): Set<bigint> {
    return new Set(this.live.keys());
  }

  /** Stops tracking allocations a captured CUDA graph now owns (it frees them at its next launch). */
  forgetPointers(ptrs: Iterable<bigint>): void {
    for (const p of ptrs) this.live.delete(p);
  }

  /**
   * Stops tracking a tensor whose memory now belongs to a captured CUDA graph (the graph frees it
   * at its next launch): freeAll must not free it.
   */
  forget(t: DeviceTensor): void {
    this.live.delete(t.ptr);
    this.freed.add(t);
  }

  /** Device → host (waits for the queued work); bfloat16 comes back as float32 values. */
  download(d: DeviceTensor): Tensor {
    const buf = this.n.download(d.ptr, numel(d.shape) * BYTES[d.dtype]!);
    switch (d.dtype) {
      case 'float32': return tensor('float32', d.shape, new Float32Array(buf));
      case 'bfloat16': return tensor('bfloat16', d.shape, Array.from(new Uint16Array(buf), bf16ToFloat));
      case 'int64': return tensor('int64', d.shape, Array.from(new BigInt64Array(buf), Number));
      case 'int32': return tensor('int32', d.shape, new Int32Array(buf));
      case 'bool': return tensor('bool', d.shape, new Uint8Array(buf));
      default: throw new CleaveError(`cannot download ${d.dtype}`);
    }
  }

  unary(code: number, x: DeviceTensor, out: DeviceTensor, alpha = 0, beta = 0): void {
    this.n.unary(code, floatCode(x, 'unary op'), x.ptr, out.ptr, numel(out.shape), alpha, beta);
  }

  binary(code: number, a: DeviceTensor, b: DeviceTensor, out: DeviceTensor): void {
    const { dims, strides: [sa, sb] } = collapseDims(out.shape, [broadcastStrides(a.shape, out.shape), broadcastStrides(b.shape, out.shape)]);
    this.n.binary(code, floatCode(out, 'binary op'), a.ptr, b.ptr, out.ptr, dims, sa!, sb!);
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
  matmul(a: DeviceTensor, b: DeviceTensor, out: DeviceTensor, transA = false, transB = false, alpha = 1): void {
    if (a.shape.length < 2 || b.shape.length < 2) throw new CleaveError('MatMul with 1-D operands does not run on CUDA yet');
    const M = transA ? a.shape.at(-1)! : a.shape.at(-2)!, K = transA ? a.shape.at(-2)! : a.shape.at(-1)!;
    const N = transB ? b.shape.at(-2)! : b.shape.at(-1)!;
    const batchA = numel(a.shape.slice(0, -2)), batchB = numel(b.shape.slice(0, -2));
    const batch = numel(out.shape.slice(0, -2));
    const ok = (x: number) => x === batch || x === 1;
    if (!ok(batchA) || !ok(batchB) || broadcast([a.shape.slice(0, -2), b.shape.slice(0, -2)], 'MatMul').length !== out.shape.length - 2) {
      throw new CleaveError(`MatMul of [${a.shape}] and [${b.shape}]: this batch broadcast does not run on CUDA yet`);
    }
    // An unbatched operand of a batched product is one matrix with rows of all batches when it is A.
    if (batchA === batch && batchB === 1 && !transA && batch > 1) {
      this.n.gemm(floatCode(out, 'MatMul'), transB, false, N, M * batch, K, alpha, b.ptr, transB ? K : N, 0, a.ptr, K, 0, 0, out.ptr, N, 0, 1);
      return;
    }
    this.n.gemm(floatCode(out, 'MatMul'), transB, transA, N, M, K, alpha,
      b.ptr, transB ? K : N, batchB === 1 ? 0 : K * N, a.ptr, transA ? M : K, batchA === 1 ? 0 : M * K, 0, out.ptr, N, M * N, batch);
  }

  stridedCopy(x: DeviceTensor, out: DeviceTensor, strides: readonly number[], base = 0): void {
    const code = COPY_CODE[BYTES[x.dtype] ?? 0];
    if (code === undefined) throw new CleaveError(`copies of ${x.dtype} do not run on CUDA yet`);
    const { dims, strides: [st] } = collapseDims(out.shape, [strides]);
    this.n.stridedCopy(code, x.ptr, out.ptr, dims, st!, base);
  }

  gather(data: DeviceTensor, indices: DeviceTensor, out: DeviceTensor, axis: number): void {
    if (indices.dtype !== 'int64') throw new CleaveError('Gather on CUDA takes int64 indices');
    const outer = numel(data.shape.slice(0, axis)), inner = numel(data.shape.slice(axis + 1));
    this.n.gather(floatCode(data, 'Gather'), data.ptr, indices.ptr, out.ptr, outer, data.shape[axis]!, numel(indices.shape), inner);
  }

  cast(x: DeviceTensor, out: DeviceTensor): void {
    this.n.cast(floatCode(x, 'Cast'), floatCode(out, 'Cast'), x.ptr, out.ptr, numel(x.shape));
  }

  geluGrad(g: DeviceTensor, x: DeviceTensor, out: DeviceTensor, tanh: boolean): void {
    this.n.geluGrad(floatCode(x, 'GeluGrad'), g.ptr, x.ptr, out.ptr, numel(x.shape), tanh);
  }

  concat(inputs: readonly DeviceTensor[], out: DeviceTensor, axis: number): void {
    const ost = stridesOf(out.shape);
    let at = 0;
    for (const x of inputs) {
      const { dims, strides: [si, so] } = collapseDims(x.shape, [stridesOf(x.shape), ost]);
      this.n.copyRegion(COPY_CODE[BYTES[out.dtype] ?? 0]!, x.ptr, out.ptr, dims, si!, so!, 0, at * ost[axis]!);
      at += x.shape[axis]!;
    }
  }

  sum(inputs: readonly DeviceTensor[], out: DeviceTensor): void {
    // Left to right, as the CPU kernel: (a + b) + c …
    this.binary(0, inputs[0]!, inputs[1] ?? inputs[0]!, out);
    if (inputs.length === 1) this.stridedCopy(inputs[0]!, out, stridesOf(out.shape));
    for (const x of inputs.slice(2)) this.binary(0, out, x, out);
  }

  reduce(op: 'sum' | 'mean' | 'max', x: DeviceTensor, out: DeviceTensor, axes: readonly number[]): void {
    const st = stridesOf(x.shape);
    const keep = x.shape.map((_, i) => i).filter((i) => !axes.includes(i));
    // Kept and reduced axes collapse separately: each group keeps its own index order.
    const outer = collapseDims(keep.map((i) => x.shape[i]!), [keep.map((i) => st[i]!)]);
    const red = collapseDims(axes.map((i) => x.shape[i]!), [axes.map((i) => st[i]!)]);
    this.n.reduce({ sum: 0, mean: 1, max: 2 }[op], floatCode(x, 'reduction'), x.ptr, out.ptr, outer.dims, outer.strides[0]!, red.dims, red.strides[0]!);
  }

  compare(code: number, a: DeviceTensor, b: DeviceTensor, out: DeviceTensor): void {
    const { dims, strides: [sa, sb] } = collapseDims(out.shape, [broadcastStrides(a.shape, out.shape), broadcastStrides(b.shape, out.shape)]);
    this.n.compare(code, floatCode(a, 'comparison'), a.ptr, b.ptr, out.ptr, dims, sa!, sb!);
  }

  scatterAdd(g: DeviceTensor, indices: DeviceTensor, out: DeviceTensor, axis: number): void {
    const outer = numel(out.shape.slice(0, axis)), inner = numel(out.shape.slice(axis + 1));
    // Atomic adds go to a float32 buffer, cast once into the output's dtype.
    const acc = out.dtype === 'float32' ? out : this.alloc('float32', out.shape);
    this.n.fill(0, acc.ptr, numel(out.shape), 0);
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

  /** Shapes of a fused attention's q, k, v ([B, T, H·Dh], all alike) and lse ([B, H, T] float32). */
  private attentionDims(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, lse: DeviceTensor, heads: number): [number, number, number] {
    const [B, T, D] = q.shape as [number, number, number];
    const same = (t: DeviceTensor) => t.shape.length === 3 && t.shape.every((d, i) => d === q.shape[i]) && t.dtype === q.dtype;
    if (q.shape.length !== 3 || !same(k) || !same(v) || D % heads) throw new CleaveError(`fused attention on CUDA takes q, k, v of one shape [B, T, H·Dh]; got [${q.shape}], [${k.shape}], [${v.shape}] with ${heads} heads`);
    if (lse.dtype !== 'float32') throw new CleaveError(`fused attention's log-sum-exp is float32 on CUDA, not ${lse.dtype}`);
    return [B, T, D];
  }

  attention(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, out: DeviceTensor, lse: DeviceTensor, heads: number, scale: number, causal: boolean): void {
    const [B, T, D] = this.attentionDims(q, k, v, lse, heads);
    this.n.attentionForward(floatCode(q, 'FusedAttention'), q.ptr, k.ptr, v.ptr, T * D, D, out.ptr, lse.ptr, B, T, heads, D / heads, scale, causal);
  }

  attentionGrad(dout: DeviceTensor, q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, out: DeviceTensor, lse: DeviceTensor,
    dq: DeviceTensor, dk: DeviceTensor, dv: DeviceTensor, heads: number, scale: number, causal: boolean): void {
    const [B, T, D] = this.attentionDims(q, k, v, lse, heads);
    this.n.attentionBackward(floatCode(q, 'FusedAttentionGrad'), q.ptr, k.ptr, v.ptr, T * D, D, out.ptr, dout.ptr, lse.ptr, dq.ptr, dk.ptr, dv.ptr,
      B, T, heads, D / heads, scale, causal);
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
    if (mean) this.binary(3, total, count, f32);
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
}
